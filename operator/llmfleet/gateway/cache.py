"""The Redis side of the exact cache, built so that Redis can never fail a request.

Every Redis call has a short deadline; a failure or a timeout counts toward a circuit breaker
which, once open, skips Redis altogether for a cool-down (no request pays the timeout again),
then lets one probe through. A cache that is down is a cache that misses: the gateway passes
the request through, and the caller only notices higher latency.

Stored entries are the response as the upstream sent it (status 200 only), prefixed with one
line of JSON metadata. A streamed response is stored only when it ended with the OpenAI
``data: [DONE]`` event, so a replay is always a complete, valid SSE stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llmfleet.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

SSE_DONE = b"data: [DONE]"


class CircuitBreaker:
    """Closed -> (``threshold`` consecutive failures) -> open for ``reset_seconds`` -> one probe."""

    def __init__(self, threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def closed(self) -> bool:
        return self._opened_at is None

    def allow(self) -> bool:
        """May a call go to Redis now? In the open state, only one probe after the cool-down."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self.reset_seconds:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def abandon(self) -> None:
        """A call ended with neither answer (its request was cancelled): free the probe slot."""
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False


def stream_complete(body: bytes) -> bool:
    """True when an SSE body ends with the ``[DONE]`` event (what a finished OpenAI stream sends)."""
    events = [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    return bool(events) and events[-1].strip() == SSE_DONE


@dataclass(frozen=True)
class CachedResponse:
    """A stored upstream answer: enough to replay it byte for byte."""

    status: int
    content_type: str
    body: bytes

    def encode(self) -> bytes:
        meta = json.dumps({"status": self.status, "content_type": self.content_type}).encode()
        return meta + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> CachedResponse | None:
        meta_line, sep, body = raw.partition(b"\n")
        if not sep:
            return None
        try:
            meta = json.loads(meta_line)
            return cls(status=int(meta["status"]), content_type=str(meta["content_type"]), body=body)
        except (ValueError, KeyError, TypeError):
            return None


class ResilientRedis:
    """A Redis client whose calls return ``None`` instead of raising or hanging."""

    def __init__(
        self,
        url: str,
        password: str | None,
        timeout_seconds: float,
        breaker: CircuitBreaker,
        metrics: GatewayMetrics,
    ) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            password=password or None,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.timeout_seconds = timeout_seconds
        self.breaker = breaker
        self.metrics = metrics
        self.metrics.redis_up.set(1)

    async def call(self, operation: str, make: Callable[[aioredis.Redis], Awaitable[T]]) -> T | None:
        """Run one Redis operation within the deadline; ``None`` if skipped, failed or late."""
        if not self.breaker.allow():
            self.metrics.redis_skipped.inc()
            return None
        try:
            result = await asyncio.wait_for(make(self.client), self.timeout_seconds)
        except asyncio.CancelledError:
            self.breaker.abandon()  # a client hung up mid-probe: the next call may probe
            raise
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.metrics.redis_errors.labels(operation=operation).inc()
            log.warning("redis %s failed (%s): passing through", operation, type(exc).__name__)
            self.metrics.redis_up.set(1 if self.breaker.closed else 0)
            return None
        self.breaker.success()
        self.metrics.redis_up.set(1)
        return result

    async def close(self) -> None:
        await self.client.aclose()


class ResponseCache:
    """Exact-match response cache: one Redis string per key, expiring after the TTL."""

    def __init__(self, redis: ResilientRedis, ttl_seconds: int, max_bytes: int, metrics: GatewayMetrics):
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def get(self, key: str) -> CachedResponse | None:
        raw = await self.redis.call("get", lambda r: r.get(key))
        if not isinstance(raw, bytes):
            return None
        return CachedResponse.decode(raw)

    def storable(self, status: int, stream: bool, body: bytes) -> str | None:
        """Why a response must not be stored (a metric label), or None if it may be."""
        if status != 200:
            return "upstream_error"
        if len(body) > self.max_bytes:
            return "oversize"
        if stream and not stream_complete(body):
            return "incomplete_stream"
        return None

    async def put(self, key: str, response: CachedResponse) -> bool:
        result = await self.redis.call("set", lambda r: r.set(key, response.encode(), ex=self.ttl_seconds))
        return result is not None

    async def refresh_size(self) -> None:
        """Update the cache-size gauges from Redis (entries in the DB, memory used)."""
        entries = await self.redis.call("dbsize", lambda r: r.dbsize())
        memory: Any = await self.redis.call("info", lambda r: r.info("memory"))
        if isinstance(entries, int):
            self.metrics.cache_entries.set(entries)
        if isinstance(memory, dict) and "used_memory" in memory:
            self.metrics.cache_memory_bytes.set(float(memory["used_memory"]))
