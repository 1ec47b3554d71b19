"""Run a gateway: the admin (health, metrics) listener first, the proxy listener once ready.

The admin port comes up before the embedding model loads, so a liveness probe passes during a
slow start while readiness waits for the proxy; the proxy listener only opens when everything it
needs is loaded. Redis is never waited for: the gateway starts and serves without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmfleet.gateway.config import GatewayConfig
from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.proxy import Gateway
from llmfleet.gateway.semantic import Embedder

log = logging.getLogger(__name__)


@dataclass
class RunningGateway:
    gateway: Gateway
    port: int
    metrics_port: int


def admin_app(gateway: Gateway) -> web.Application:
    """Liveness, readiness and metrics, on their own port."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        # Redis is deliberately not checked: without it the gateway passes requests through.
        return web.Response(text="ready\n") if gateway.ready else web.Response(status=503, text="starting\n")

    async def metrics(request: web.Request) -> web.Response:
        await gateway.refresh_cache_size()
        body = generate_latest(gateway.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


def load_default_embedder(config: GatewayConfig, metrics: GatewayMetrics) -> Embedder:
    from llmfleet.gateway.semantic import MiniLMEmbedder

    return MiniLMEmbedder(metrics, threads=config.semantic_threads)


@contextlib.asynccontextmanager
async def running_gateway(
    config: GatewayConfig,
    embedder_factory: Callable[[GatewayConfig, GatewayMetrics], Embedder] | None = None,
) -> AsyncIterator[RunningGateway]:
    """Serve ``config`` until the block exits; ports 0 pick free ports (see the yielded object)."""
    metrics = GatewayMetrics()
    gateway = Gateway(config, metrics)
    admin = web.AppRunner(admin_app(gateway), access_log=None, handle_signals=False)
    # handler_cancellation: a client that hangs up cancels its handler, which closes the upstream
    # request of a pass-through (the engine stops generating) and leaves a coalesced call.
    proxy = web.AppRunner(
        gateway.proxy_app(), access_log=None, handle_signals=False, handler_cancellation=True
    )
    await admin.setup()
    try:
        await web.TCPSite(admin, config.host, config.metrics_port).start()
        if config.semantic:
            factory = embedder_factory or load_default_embedder
            gateway.embedder = await asyncio.to_thread(factory, config, metrics)
        await gateway.start()
        await proxy.setup()
        site = web.TCPSite(
            proxy, config.host, config.port, backlog=1024, shutdown_timeout=config.shutdown_timeout_seconds
        )
        await site.start()
        gateway.ready = True
        log.info(
            "gateway ready on %s:%d -> %s (metrics on :%d)",
            config.host,
            _bound_port(proxy),
            config.upstream,
            _bound_port(admin),
        )
        yield RunningGateway(gateway, _bound_port(proxy), _bound_port(admin))
    finally:
        gateway.ready = False
        await proxy.cleanup()
        await gateway.close()
        await admin.cleanup()


async def serve_forever(config: GatewayConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and finish gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_gateway(config):
        await stop.wait()
    log.info("gateway stopped")
