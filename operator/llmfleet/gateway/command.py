"""Run the caching gateway: an OpenAI-compatible proxy with a Redis response cache.

Every flag can also be set from the environment as LLMFLEET_GATEWAY_<FLAG> (``--ttl-seconds`` is
``LLMFLEET_GATEWAY_TTL_SECONDS``; booleans take 1/true/yes); flags win over the environment. The
Redis password is read from REDIS_PASSWORD only, never from a flag, so it stays out of ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

ENV_PREFIX = "LLMFLEET_GATEWAY_"
_TRUE = {"1", "true", "yes", "on"}


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _flag(parser: argparse.ArgumentParser, flag: str, kind: type, default: Any, help_text: str) -> None:
    raw = os.environ.get(_env_name(flag))
    value = default
    if raw is not None:
        try:
            value = kind(raw)
        except ValueError:
            # e.g. LLMFLEET_GATEWAY_PORT=tcp://10.0.0.7:80, injected by Kubernetes for a Service
            # named llmfleet-gateway: not ours, so it must not stop the gateway from starting.
            print(f"ignoring {_env_name(flag)}={raw!r}: not a valid {kind.__name__}", file=sys.stderr)
    parser.add_argument(flag, type=kind, default=value, help=f"{help_text} [env {_env_name(flag)}]")


def _switch(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    raw = os.environ.get(_env_name(flag), "")
    parser.add_argument(
        flag,
        action="store_true",
        default=raw.strip().lower() in _TRUE,
        help=f"{help_text} [env {_env_name(flag)}]",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "--host", str, "0.0.0.0", "address to listen on (proxy and metrics)")
    _flag(parser, "--port", int, 8080, "proxy port: every path is forwarded to --upstream")
    _flag(parser, "--metrics-port", int, 9091, "port of /metrics, /healthz and /readyz")
    _flag(parser, "--upstream", str, "http://127.0.0.1:8000", "base URL of the load balancer")
    _flag(
        parser,
        "--redis-url",
        str,
        "redis://127.0.0.1:6379/0",
        "Redis holding the cache (password: REDIS_PASSWORD)",
    )
    _flag(parser, "--ttl-seconds", int, 3600, "lifetime of a cached response")
    _flag(
        parser,
        "--tenant-header",
        str,
        "X-Tenant-ID",
        "request header naming the tenant; part of every cache key, with Authorization",
    )
    _flag(parser, "--max-cached-bytes", int, 1 << 20, "responses larger than this are not cached")
    _switch(parser, "--semantic", "also answer paraphrases from the cache (loads all-MiniLM-L6-v2)")
    _flag(
        parser, "--semantic-threshold", float, 0.92, "cosine similarity at or above which a paraphrase hits"
    )
    _flag(
        parser,
        "--semantic-max-entries",
        int,
        512,
        "embeddings kept per tenant/model/parameters scope (random eviction beyond)",
    )
    _flag(parser, "--semantic-threads", int, 1, "torch threads of the embedding model")
    _flag(
        parser,
        "--semantic-max-pending",
        int,
        8,
        "embeddings waiting at most; beyond, requests skip the semantic cache",
    )
    _switch(
        parser,
        "--cache-nondeterministic",
        "cache sampled requests too (by default only temperature 0 or a seed)",
    )
    _flag(
        parser,
        "--redis-timeout-ms",
        int,
        100,
        "deadline of one Redis operation; past it the request passes through",
    )
    _flag(parser, "--breaker-failures", int, 3, "consecutive Redis failures that open the circuit breaker")
    _flag(
        parser, "--breaker-reset-seconds", float, 5.0, "how long the open breaker skips Redis before a probe"
    )
    _flag(parser, "--upstream-connect-timeout-seconds", float, 5.0, "connect timeout to the upstream")
    _flag(parser, "--upstream-read-timeout-seconds", float, 600.0, "read timeout between upstream bytes")
    _flag(
        parser,
        "--shutdown-timeout-seconds",
        float,
        25.0,
        "on SIGTERM, how long in-flight requests may finish (keep below the pod's grace period)",
    )
    _flag(parser, "--log-level", str, "INFO", "DEBUG, INFO, WARNING or ERROR")


def config_from_args(args: argparse.Namespace) -> Any:
    from llmfleet.gateway.config import GatewayConfig

    return GatewayConfig(
        upstream=args.upstream,
        redis_url=args.redis_url,
        redis_password=os.environ.get("REDIS_PASSWORD") or None,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        ttl_seconds=args.ttl_seconds,
        tenant_header=args.tenant_header,
        max_cached_bytes=args.max_cached_bytes,
        cache_nondeterministic=args.cache_nondeterministic,
        semantic=args.semantic,
        semantic_threshold=args.semantic_threshold,
        semantic_max_entries=args.semantic_max_entries,
        semantic_threads=args.semantic_threads,
        semantic_max_pending=args.semantic_max_pending,
        redis_timeout_seconds=args.redis_timeout_ms / 1000,
        breaker_failures=args.breaker_failures,
        breaker_reset_seconds=args.breaker_reset_seconds,
        upstream_connect_timeout_seconds=args.upstream_connect_timeout_seconds,
        upstream_read_timeout_seconds=args.upstream_read_timeout_seconds,
        shutdown_timeout_seconds=args.shutdown_timeout_seconds,
    )


def main(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from llmfleet.gateway.server import serve_forever

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    asyncio.run(serve_forever(config_from_args(args)))
    return 0
