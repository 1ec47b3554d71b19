"""The gateway's settings, one immutable object built by the CLI (or by tests and the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    upstream: str  # the load balancer, e.g. http://chat-lb:80
    redis_url: str  # e.g. redis://chat-cache:6379/0
    redis_password: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_port: int = 9091
    ttl_seconds: int = 3600
    tenant_header: str = "X-Tenant-ID"
    max_cached_bytes: int = 1 << 20
    cache_nondeterministic: bool = False
    semantic: bool = False
    semantic_threshold: float = 0.92
    semantic_max_entries: int = 512
    semantic_threads: int = 1
    semantic_max_pending: int = 8
    redis_timeout_seconds: float = 0.1
    breaker_failures: int = 3
    breaker_reset_seconds: float = 5.0
    upstream_connect_timeout_seconds: float = 5.0
    upstream_read_timeout_seconds: float = 600.0
    shutdown_timeout_seconds: float = 25.0
