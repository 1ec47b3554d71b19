"""Run a simulated OpenAI-compatible model server that queues, batches and fails like a real one.

Load balancers, the caching gateway and the autoscaler need backends that behave like vLLM or
llama.cpp under load (queueing behind a batch limit, TTFT that grows with prompt length and
queue, inter-token latency that grows with batch size, the engines' Prometheus metrics) without
a GPU. One shared engine step loop per process (llmfleet.sim.engine) produces the tokens; the
HTTP handlers only wait on it, so an idle or slow stream costs no CPU and eight instances fit on
a laptop. Fault flags (errors, stalls, crashes, slow startup) exercise retries and readiness.
See docs/sim-server.md.

This module is the HTTP layer (aiohttp, imported only when the server runs, so ``--help`` is
fast); the flags are in llmfleet.sim.server_options, the metrics in llmfleet.sim.server_metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from llmfleet.sim.engine import Engine, EngineConfig, RequestRejected, Sequence
from llmfleet.sim.openai_api import EventStream, GenerationRequest, completion_body, parse_request
from llmfleet.sim.server_options import add_arguments, engine_config

if TYPE_CHECKING:
    from aiohttp import web

    from llmfleet.sim.server_metrics import SimMetrics

__all__ = ["SimServer", "add_arguments", "main", "serve"]


# Generated text: token i of a request is one of these words (ASCII, JSON-safe, leading space).
class _Waiter:
    """Where a handler waits for its sequence; ``each_token`` streams wake per step, others at the end."""

    __slots__ = ("each_token", "future")

    def __init__(self, each_token: bool) -> None:
        self.each_token = each_token
        self.future: asyncio.Future[None] | None = None


class SimServer:
    """One simulated engine behind the OpenAI HTTP API."""

    def __init__(self, args: argparse.Namespace, config: EngineConfig) -> None:
        from llmfleet.sim.server_metrics import SimMetrics

        self.args = args
        self.server_id: str = args.id
        self.model: str = args.served_model_name
        self.engine = Engine(config, seed=args.seed)
        self.metrics: SimMetrics = SimMetrics(
            self.engine, self.model, self.server_id, llamacpp=args.metrics_flavor == "llamacpp"
        )
        self.fault_rng = random.Random(f"faults-{args.seed}")
        self.waiters: dict[int, _Waiter] = {}
        self.loop = asyncio.get_running_loop()
        self.ready_at: float = self.loop.time() + args.startup_delay_seconds
        self._wakeup: asyncio.Future[None] | None = None
        self._engine_task: asyncio.Task[None] | None = None

    # -- the engine loop ------------------------------------------------------------------

    def start(self) -> None:
        self._engine_task = self.loop.create_task(self._run_engine())
        self._engine_task.add_done_callback(self._engine_died)

    def _engine_died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            traceback.print_exception(task.exception())
            os._exit(1)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run_engine(self) -> None:
        """Step while there is work, sleeping through each step's modelled duration; idle waits."""
        engine, loop = self.engine, self.loop
        while True:
            duration = engine.start_step(loop.time())
            if duration is None:
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            await asyncio.sleep(duration)
            report = engine.finish_step(loop.time())
            self.metrics.record_step(report)
            for seq in report.advanced:
                waiter = self.waiters.get(seq.seq_id)
                if waiter is None or waiter.future is None or waiter.future.done():
                    continue
                if waiter.each_token or seq.finished:
                    waiter.future.set_result(None)

    async def _wait(self, seq: Sequence, waiter: _Waiter, seen: int) -> None:
        """Return once ``seq`` has more than ``seen`` tokens (or, for non-streams, has finished)."""
        while not seq.finished and (seq.generated <= seen or not waiter.each_token):
            waiter.future = self.loop.create_future()
            await waiter.future
            waiter.future = None

    # -- HTTP -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_response_prepare.append(self._tag_response)
        return app

    async def _tag_response(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Sim-Server"] = self.server_id

    def starting(self) -> bool:
        return self.loop.time() < self.ready_at

    def _error(self, status: int, message: str, kind: str) -> web.Response:
        from aiohttp import web

        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return web.json_response(body, status=status)

    async def health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.starting():
            return self._error(503, "Loading model", "unavailable_error")
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.starting():
            return self._error(503, "Loading model", "unavailable_error")
        card = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "llmfleet-sim",
            "root": self.model,
            "parent": None,
            "max_model_len": self.engine.config.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def metrics_page(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client import generate_latest

        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        metrics, args = self.metrics, self.args
        metrics.received += 1
        if args.crash_after_requests is not None and metrics.received > args.crash_after_requests:
            print(
                f"sim-server {self.server_id}: exiting on request {metrics.received} "
                f"(--crash-after-requests {args.crash_after_requests})",
                flush=True,
            )
            os._exit(3)
        if self.starting():
            metrics.failed["starting"] += 1
            return self._error(503, "Loading model", "unavailable_error")
        try:
            parsed = parse_request(
                await request.json(), chat, args.default_max_tokens, self.engine.config.max_model_len
            )
        except ValueError as error:
            metrics.failed["rejected"] += 1
            return self._error(400, str(error), "BadRequestError")
        if parsed.model is not None and parsed.model != self.model:
            metrics.failed["not_found"] += 1
            return self._error(404, f"The model `{parsed.model}` does not exist.", "NotFoundError")
        if args.error_rate > 0 and self.fault_rng.random() < args.error_rate:
            metrics.failed["injected_error"] += 1
            return self._error(500, "injected error (--error-rate)", "InternalServerError")
        try:
            seq = self.engine.add(
                parsed.prompt_tokens, parsed.max_tokens, self.loop.time(), parsed.ignore_eos
            )
        except RequestRejected as error:
            metrics.failed["rejected"] += 1
            return self._error(400, str(error), "BadRequestError")
        self._wake()
        waiter = self.waiters[seq.seq_id] = _Waiter(each_token=parsed.stream)
        served = False
        try:
            if parsed.stream:
                response = await self._stream(request, seq, waiter, parsed, chat)
            else:
                response = await self._complete(seq, waiter, chat)
            served = True
            metrics.served += 1
            return response
        finally:  # the client went away (the handler is cancelled) or the write failed
            del self.waiters[seq.seq_id]
            if not seq.finished:
                self.engine.abort(seq, self.loop.time())
            if not served:
                metrics.failed["aborted"] += 1

    async def _stall(self, seq: Sequence, delivered: int) -> bool:
        """Stall (``--stall-after-tokens``) when the client has that many tokens and more are coming."""
        stall_at = self.args.stall_after_tokens
        if stall_at is None or delivered != stall_at or seq.output_tokens <= stall_at:
            return False
        await asyncio.sleep(self.args.stall_seconds)
        return True

    async def _stream(
        self, request: web.Request, seq: Sequence, waiter: _Waiter, parsed: GenerationRequest, chat: bool
    ) -> web.StreamResponse:
        """Write each token's event when the engine step that made it ends."""
        from aiohttp import web

        events = EventStream(seq, chat, self.model, self.server_id, parsed.include_usage)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        if self.metrics.llamacpp:
            headers["X-Accel-Buffering"] = "no"  # llama-server sends it; vLLM does not
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        sent, stall_at, stalled = 0, self.args.stall_after_tokens, False
        while sent < seq.output_tokens:
            await self._wait(seq, waiter, sent)
            upto = seq.generated
            if stall_at is not None and not stalled:
                upto = min(upto, max(stall_at, sent))  # nothing beyond the stall point before the stall
            if upto > sent:
                await response.write(events.tokens(sent, upto).encode())
            sent = upto
            if not stalled:
                stalled = await self._stall(seq, sent)
        await response.write(events.end().encode())
        await response.write_eof()
        return response

    async def _complete(self, seq: Sequence, waiter: _Waiter, chat: bool) -> web.Response:
        from aiohttp import web

        await self._wait(seq, waiter, 0)
        if self.args.stall_after_tokens is not None:
            await self._stall(seq, self.args.stall_after_tokens)
        return web.json_response(completion_body(seq, chat, self.model, self.server_id))


async def serve(args: argparse.Namespace, config: EngineConfig) -> None:
    """Listen until SIGTERM or SIGINT, then let in-flight requests finish briefly."""
    from aiohttp import web

    server = SimServer(args, config)
    runner_options: dict[str, Any] = {} if args.access_log else {"access_log": None}
    runner = web.AppRunner(
        server.app(),
        handler_cancellation=True,
        shutdown_timeout=args.shutdown_timeout_seconds,
        **runner_options,
    )
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    server.start()
    print(
        f"llmfleet sim-server {server.server_id}: serving {server.model} on http://{args.host}:{args.port}",
        flush=True,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        server.loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(args: argparse.Namespace) -> int:
    try:
        config = engine_config(args)
    except ValueError as error:
        print(f"llmfleet sim-server: {error}", file=sys.stderr)
        return 2
    if getattr(args, "id", None) is None:
        args.id = f"{socket.gethostname()}:{args.port}"
    try:
        asyncio.run(serve(args, config))
    except OSError as error:  # the port is taken, the address is not ours
        print(f"llmfleet sim-server: {error}", file=sys.stderr)
        return 1
    return 0
