"""The gateway's HTTP side: an aiohttp server in front of the load balancer, httpx behind it.

Everything that is not a cacheable request is streamed through chunk by chunk, in both
directions, without buffering. A cacheable request (see ``keys``) is answered from Redis when
it can be, otherwise joins or starts a coalesced upstream call (see ``coalesce``) whose response
is streamed to every waiting client as it arrives and stored when it is complete, successful
and small enough. No failure of Redis or of the embedding step fails a request: they only turn
hits into misses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
from aiohttp import web

from llmfleet.gateway.cache import CachedResponse, CircuitBreaker, ResilientRedis, ResponseCache
from llmfleet.gateway.coalesce import Coalescer, Flight, FlightAborted, Head, Subscription
from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.headers import response_headers, upstream_request_headers
from llmfleet.gateway.keys import CACHE_HEADER, CACHEABLE_PATHS, CacheableRequest, classify
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.semantic import Embedder, SemanticCache, SemanticIndex, Vector

log = logging.getLogger(__name__)

COALESCED_HEADER = "X-LLMFleet-Coalesced"
CACHE_TYPE_HEADER = "X-LLMFleet-Cache-Type"


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "gateway_error", "code": status}}).encode()


class Gateway:
    """Caching reverse proxy; ``proxy_app()`` is the aiohttp application that serves clients."""

    def __init__(
        self, config: GatewayConfig, metrics: GatewayMetrics | None = None, embedder: Embedder | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        self.embedder = embedder
        self.ready = False
        self.upstream = config.upstream.rstrip("/")
        self.coalescer = Coalescer(record_limit=config.max_cached_bytes)
        self._client: httpx.AsyncClient | None = None
        self._redis: ResilientRedis | None = None
        self._cache: ResponseCache | None = None
        self._semantic: SemanticCache | None = None

    async def start(self) -> None:
        timeout = httpx.Timeout(
            connect=self.config.upstream_connect_timeout_seconds,
            read=self.config.upstream_read_timeout_seconds,
            write=self.config.upstream_read_timeout_seconds,
            pool=self.config.upstream_connect_timeout_seconds,
        )
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_reset_seconds)
        self._redis = ResilientRedis(
            self.config.redis_url,
            self.config.redis_password,
            self.config.redis_timeout_seconds,
            breaker,
            self.metrics,
        )
        self._cache = ResponseCache(
            self._redis, self.config.ttl_seconds, self.config.max_cached_bytes, self.metrics
        )
        if self.embedder is not None:
            index = SemanticIndex(
                self._redis,
                self.config.semantic_threshold,
                self.config.ttl_seconds,
                self.config.semantic_max_entries,
            )
            self._semantic = SemanticCache(
                self.embedder, index, self._cache, self.config.semantic_max_pending, self.metrics
            )

    async def close(self) -> None:
        self.ready = False
        if self._client is not None:
            await self._client.aclose()
        if self._redis is not None:
            await self._redis.close()
        if self._semantic is not None:
            self._semantic.close()

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "Gateway.start() was not awaited"
        return self._client

    @property
    def cache(self) -> ResponseCache:
        assert self._cache is not None, "Gateway.start() was not awaited"
        return self._cache

    def proxy_app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def refresh_cache_size(self) -> None:
        if self._cache is not None:
            await self._cache.refresh_size()

    # -- request handling --
    async def handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        self.metrics.inflight.inc()
        try:
            if request.method == "POST" and request.path in CACHEABLE_PATHS:
                body = await request.read()
                decision = classify(
                    request.path,
                    request.headers,
                    body,
                    self.config.tenant_header,
                    self.config.cache_nondeterministic,
                )
                if isinstance(decision, CacheableRequest):
                    return await self._cacheable(request, body, decision, arrived)
                self.metrics.requests.labels(route=request.path, cache=decision.reason).inc()
                return await self._pass_through(request, body, arrived, "bypass")
            self.metrics.requests.labels(route="other", cache="path").inc()
            stream = request.content.iter_any() if request.body_exists else None
            return await self._pass_through(request, stream, arrived, None)
        finally:
            self.metrics.inflight.dec()

    def _url(self, request: web.Request) -> str:
        return self.upstream + str(request.rel_url)

    async def _pass_through(
        self,
        request: web.Request,
        content: bytes | AsyncIterator[bytes] | None,
        arrived: float,
        cache_label: str | None,
    ) -> web.StreamResponse:
        """Stream the request to the upstream and its response back, untouched and unbuffered."""
        m = self.metrics
        headers = upstream_request_headers(
            request.headers.items(), request.remote, keep_length=not isinstance(content, bytes)
        )
        sent = time.perf_counter()
        m.queued.inc()
        queued = True
        try:
            upstream_request = self.client.build_request(
                request.method, self._url(request), headers=headers, content=content
            )
            upstream = await self.client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            m.queued.dec()
            m.upstream_requests.labels(status="error").inc()
            log.warning("upstream unreachable: %r", exc)
            return web.Response(
                status=502,
                body=_error_body(502, f"upstream unreachable: {exc!r}"),
                content_type="application/json",
            )
        m.upstream_requests.labels(status=str(upstream.status_code)).inc()
        response = web.StreamResponse(status=upstream.status_code)
        for key, value in response_headers(upstream.headers.multi_items(), decoded=False):
            response.headers.add(key, value)
        if cache_label is not None:
            response.headers[CACHE_HEADER] = cache_label
        try:
            await response.prepare(request)
            async for chunk in upstream.aiter_raw():
                if queued:
                    queued = False
                    m.queued.dec()
                    m.upstream_ttft.labels(route=request.path if cache_label else "other").observe(
                        time.perf_counter() - sent
                    )
                    m.ttft.labels(cache=cache_label or "none").observe(time.perf_counter() - arrived)
                await response.write(chunk)
            await response.write_eof()
        except httpx.HTTPError as exc:
            log.warning("upstream response broke off: %r", exc)
            self._abort(request)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            if queued:
                m.queued.dec()
            await upstream.aclose()
            m.upstream_latency.labels(route=request.path if cache_label else "other").observe(
                time.perf_counter() - sent
            )
        return response

    @staticmethod
    def _abort(request: web.Request) -> None:
        """Cut the client connection so a broken body cannot pass for a complete one."""
        if request.transport is not None:
            request.transport.close()

    async def _cacheable(
        self, request: web.Request, body: bytes, decision: CacheableRequest, arrived: float
    ) -> web.StreamResponse:
        m = self.metrics
        vector: Vector | None = None
        if decision.read:
            cached = await self.cache.get(decision.exact_key)
            m.lookups.labels(type="exact", result="hit" if cached else "miss").inc()
            if cached is not None:
                return await self._replay(request, cached, "exact", arrived)
        if (
            self._semantic is not None
            and decision.semantic_text is not None
            and decision.semantic_scope is not None
            and self._redis is not None
            and self._redis.breaker.closed  # no point embedding for a cache that is down
        ):
            vector = await self._semantic.embed(decision.semantic_text)
            if vector is not None and decision.read:
                cached = await self._semantic.lookup(decision.semantic_scope, vector)
                m.lookups.labels(type="semantic", result="hit" if cached else "miss").inc()
                if cached is not None:
                    return await self._replay(request, cached, "semantic", arrived)
        m.requests.labels(route=decision.path, cache="miss").inc()
        subscription = self.coalescer.join(decision.exact_key) if decision.read else None
        coalesced = subscription is not None
        if subscription is None:
            headers = upstream_request_headers(
                request.headers.items(), request.remote, keep_length=False, identity=True
            )
            method, url = request.method, self._url(request)

            async def fetch(flight: Flight) -> None:
                await self._fetch(flight, method, url, headers, body, decision, vector)

            subscription = self.coalescer.start(decision.exact_key, fetch)
        else:
            m.coalesced.inc()
        return await self._stream_flight(request, subscription, coalesced, arrived)

    async def _replay(
        self, request: web.Request, cached: CachedResponse, kind: str, arrived: float
    ) -> web.StreamResponse:
        self.metrics.requests.labels(route=request.path, cache="hit").inc()
        response = web.StreamResponse(
            status=cached.status,
            headers={
                "Content-Type": cached.content_type,
                CACHE_HEADER: "hit",
                CACHE_TYPE_HEADER: kind,
            },
        )
        response.content_length = len(cached.body)
        try:
            await response.prepare(request)
            self.metrics.ttft.labels(cache="hit").observe(time.perf_counter() - arrived)
            await response.write(cached.body)
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response

    async def _stream_flight(
        self, request: web.Request, subscription: Subscription, coalesced: bool, arrived: float
    ) -> web.StreamResponse:
        """Send a (possibly shared) upstream response to this client as it arrives."""
        m = self.metrics
        m.queued.inc()
        queued = True
        try:
            try:
                head = await subscription.head()
            except FlightAborted as exc:
                return web.Response(
                    status=502, body=_error_body(502, str(exc)), content_type="application/json"
                )
            response = web.StreamResponse(status=head.status)
            for key, value in head.headers:
                response.headers.add(key, value)
            response.headers[CACHE_HEADER] = "miss"
            if coalesced:
                response.headers[COALESCED_HEADER] = "1"
            await response.prepare(request)
            async for chunk in subscription.chunks():
                if queued:
                    queued = False
                    m.queued.dec()
                    m.ttft.labels(cache="miss").observe(time.perf_counter() - arrived)
                await response.write(chunk)
            await response.write_eof()
        except FlightAborted as exc:
            log.warning("%s", exc)
            self._abort(request)
        except ConnectionResetError:
            pass
        finally:
            if queued:
                m.queued.dec()
            subscription.close()
        return response

    async def _fetch(
        self,
        flight: Flight,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        decision: CacheableRequest,
        vector: Vector | None,
    ) -> None:
        """The upstream call of a flight, then the cache write of its complete response."""
        m = self.metrics
        sent = time.perf_counter()
        try:
            async with self.client.stream(method, url, headers=headers, content=body) as upstream:
                m.upstream_requests.labels(status=str(upstream.status_code)).inc()
                flight.start(
                    Head(
                        upstream.status_code,
                        tuple(response_headers(upstream.headers.multi_items(), decoded=True)),
                    )
                )
                first = True
                async for chunk in upstream.aiter_bytes():
                    if first:
                        first = False
                        m.upstream_ttft.labels(route=decision.path).observe(time.perf_counter() - sent)
                    flight.publish(chunk)
        except httpx.HTTPError as exc:
            if flight.head is not None:
                flight.finish(exc)
                return
            m.upstream_requests.labels(status="error").inc()
            log.warning("upstream unreachable: %r", exc)
            flight.start(Head(502, (("Content-Type", "application/json"),)))
            flight.publish(_error_body(502, f"upstream unreachable: {exc!r}"))
        m.upstream_latency.labels(route=decision.path).observe(time.perf_counter() - sent)
        flight.finish()
        if decision.write and flight.head is not None:
            await self._store(flight, flight.head, decision, vector)

    async def _store(
        self, flight: Flight, head: Head, decision: CacheableRequest, vector: Vector | None
    ) -> None:
        recording = flight.recording()
        reason = (
            "oversize" if recording is None else self.cache.storable(head.status, decision.stream, recording)
        )
        if reason is not None or recording is None:
            self.metrics.stores.labels(type="exact", result=reason).inc()
            return
        content_type = dict((k.lower(), v) for k, v in head.headers).get("content-type", "application/json")
        stored = await self.cache.put(
            decision.exact_key, CachedResponse(head.status, content_type, recording)
        )
        self.metrics.stores.labels(type="exact", result="stored" if stored else "redis_error").inc()
        if (
            stored
            and vector is not None
            and self._semantic is not None
            and decision.semantic_scope is not None
        ):
            added = await self._semantic.index.add(decision.semantic_scope, vector, decision.exact_key)
            self.metrics.stores.labels(type="semantic", result="stored" if added else "redis_error").inc()
