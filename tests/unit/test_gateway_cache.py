"""The pure parts of the Redis side: breaker, entry format, storability, nearest neighbour."""

from __future__ import annotations

import numpy as np

from llmfleet.gateway.cache import CachedResponse, CircuitBreaker, ResponseCache, stream_complete
from llmfleet.gateway.semantic import best_match


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, reset_seconds=5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.closed
    breaker.success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert not breaker.closed
    assert not breaker.allow()
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow()  # one probe
    assert not breaker.allow()  # and only one
    breaker.failure()  # the probe failed: open again for a full cool-down
    clock.now = 9.0
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.closed and breaker.allow()


def test_an_abandoned_probe_does_not_keep_the_breaker_open_forever() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_seconds=1, clock=clock)
    breaker.failure()
    clock.now = 1.0
    assert breaker.allow()  # the probe ...
    breaker.abandon()  # ... was cancelled with its request
    assert breaker.allow()  # so another call probes


def test_stream_complete_needs_the_done_event() -> None:
    assert stream_complete(b'data: {"a":1}\n\ndata: [DONE]\n\n')
    assert stream_complete(b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n')
    assert not stream_complete(b'data: {"a":1}\n\n')
    assert not stream_complete(b'data: {"a":1}\n\ndata: [DONE]\n\ndata: {"b":2}\n\n')
    assert not stream_complete(b"")


def test_cached_response_round_trip() -> None:
    response = CachedResponse(200, "text/event-stream", b"data: x\n\nline\nbreaks\n")
    assert CachedResponse.decode(response.encode()) == response
    assert CachedResponse.decode(b"garbage") is None
    assert CachedResponse.decode(b'{"status": 200}\nbody') is None


def test_only_complete_successful_small_responses_are_storable() -> None:
    cache = ResponseCache(redis=None, ttl_seconds=60, max_bytes=40, metrics=None)  # type: ignore[arg-type]
    assert cache.storable(200, False, b'{"ok": true}') is None
    assert cache.storable(500, False, b'{"error": 1}') == "upstream_error"
    assert cache.storable(429, False, b"{}") == "upstream_error"
    assert cache.storable(200, False, b"x" * 41) == "oversize"
    assert cache.storable(200, True, b"data: {}\n\n") == "incomplete_stream"
    assert cache.storable(200, True, b"data: {}\n\ndata: [DONE]\n\n") is None


def test_best_match_is_the_nearest_unit_vector() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries: dict[bytes | str, bytes | str] = {f"k{i}".encode(): v.tobytes() for i, v in enumerate(vectors)}
    entries[b"wrong-dimensions"] = np.ones(4, dtype=np.float32).tobytes()
    query = vectors[7] + 0.01 * rng.normal(size=8).astype(np.float32)
    query = (query / np.linalg.norm(query)).astype(np.float32)
    match = best_match(entries, query)
    assert match is not None
    assert match[0] == "k7"
    assert 0.99 < match[1] <= 1.0001
    assert best_match({}, query) is None


async def test_cancelled_redis_call_frees_the_probe() -> None:
    import asyncio

    from llmfleet.gateway.cache import ResilientRedis
    from llmfleet.gateway.metrics import GatewayMetrics

    clock = Clock()
    breaker = CircuitBreaker(threshold=1, reset_seconds=1, clock=clock)
    redis = ResilientRedis("redis://127.0.0.1:1/0", None, 60, breaker, GatewayMetrics())  # never connects
    breaker.failure()
    clock.now = 1.0
    started = asyncio.Event()

    async def hangs(_: object) -> None:
        started.set()
        await asyncio.Event().wait()

    probe = asyncio.create_task(redis.call("get", hangs))
    await started.wait()
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    assert breaker.allow()
    await redis.close()
