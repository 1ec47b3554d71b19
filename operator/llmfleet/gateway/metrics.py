"""Prometheus metrics of the gateway, on their own registry so several gateways fit one process.

Names follow ``llmfleet_gateway_*``. ``inflight_requests`` and ``queued_requests`` are the two
the predictive scaler may read next to the engines' own queue depth: a request is queued from
its arrival until its first byte comes back from upstream (or from a coalesced peer).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Every metric the gateway exports, registered on ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmfleet_gateway_requests",
            "Requests handled, by route and cache outcome (hit, miss, bypass, uncacheable reason).",
            ["route", "cache"],
            registry=r,
        )
        self.lookups = Counter(
            "llmfleet_gateway_cache_lookups",
            "Cache lookups by type (exact, semantic) and result (hit, miss; semantic also skipped, error).",
            ["type", "result"],
            registry=r,
        )
        self.stores = Counter(
            "llmfleet_gateway_cache_stores",
            "Responses offered to the cache, by result (stored, upstream_error, oversize, "
            "incomplete_stream, redis_error).",
            ["type", "result"],
            registry=r,
        )
        self.coalesced = Counter(
            "llmfleet_gateway_coalesced_requests",
            "Requests answered by joining an identical request already in flight.",
            registry=r,
        )
        self.upstream_requests = Counter(
            "llmfleet_gateway_upstream_requests",
            "Requests sent upstream, by HTTP status (or 'error' when no response came back).",
            ["status"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "llmfleet_gateway_upstream_latency_seconds",
            "Upstream request duration, from sending it to the last body byte.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_ttft = Histogram(
            "llmfleet_gateway_upstream_ttft_seconds",
            "Time from sending a request upstream to its first body byte (the first token of a stream).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmfleet_gateway_ttft_seconds",
            "Time from a request's arrival to its first body byte sent to the client, by cache outcome.",
            ["cache"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "llmfleet_gateway_inflight_requests", "Requests being handled by the gateway.", registry=r
        )
        self.queued = Gauge(
            "llmfleet_gateway_queued_requests",
            "Requests waiting for their first upstream byte (including coalesced followers).",
            registry=r,
        )
        self.cache_entries = Gauge(
            "llmfleet_gateway_cache_entries", "Keys in the cache's Redis database.", registry=r
        )
        self.cache_memory_bytes = Gauge(
            "llmfleet_gateway_cache_memory_bytes",
            "Memory used by the cache's Redis (INFO used_memory).",
            registry=r,
        )
        self.redis_up = Gauge(
            "llmfleet_gateway_redis_up", "1 while the Redis circuit breaker is closed, else 0.", registry=r
        )
        self.redis_errors = Counter(
            "llmfleet_gateway_redis_errors",
            "Redis operations that failed or timed out (each one a pass-through, never a failed request).",
            ["operation"],
            registry=r,
        )
        self.redis_skipped = Counter(
            "llmfleet_gateway_redis_skipped",
            "Redis operations skipped because the circuit breaker was open.",
            registry=r,
        )
        self.semantic_seconds = Histogram(
            "llmfleet_gateway_semantic_embed_seconds",
            "Time to embed one prompt for the semantic cache.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
