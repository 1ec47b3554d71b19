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
import json
import os
import random
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmfleet.sim.engine import (
    Engine,
    EngineConfig,
    RequestRejected,
    Sequence,
    count_chat_tokens,
    count_text_tokens,
)
from llmfleet.sim.server_options import add_arguments, engine_config

if TYPE_CHECKING:
    from aiohttp import web

    from llmfleet.sim.server_metrics import SimMetrics

__all__ = ["SimServer", "add_arguments", "main", "serve"]

# Generated text: token i of a request is one of these words (ASCII, JSON-safe, leading space).
_GENERATED_TEXT = (
    "the model said that a fleet of servers can answer more requests when the load balancer "
    "spreads them well and the queue stays short so every user sees the first token soon "
    "while batches grow and each step takes longer than before under heavy traffic today"
)
WORDS = tuple(" " + word for word in _GENERATED_TEXT.split(" "))
_TOKEN_MARK = "\x00token\x00"


def _dumps(value: Any) -> str:
    """Compact JSON, as vLLM's pydantic models serialize."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class GenerationRequest:
    """The parts of a completions or chat request that the simulator acts on."""

    model: str | None
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool


def _positive_int(body: dict[str, Any], *keys: str, default: int) -> int:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
        return value
    return default


def parse_request(body: Any, chat: bool, default_max_tokens: int) -> GenerationRequest:
    """Validate an OpenAI request body; raises ValueError with the message for a 400."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    if body.get("n") not in (None, 1):
        raise ValueError("the simulator serves n=1 only")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError("messages must be a non-empty list of objects")
        texts = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            texts.append(content if isinstance(content, str) else "")
        prompt_tokens = count_chat_tokens(texts)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            prompt_tokens = count_text_tokens(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_tokens = len(prompt)  # token ids
        else:
            raise ValueError("prompt must be a string or a list of token ids (one prompt per request)")
    options = body.get("stream_options") or {}
    model = body.get("model")
    return GenerationRequest(
        model=model if isinstance(model, str) else None,
        prompt_tokens=max(1, prompt_tokens),
        max_tokens=_positive_int(body, "max_tokens", "max_completion_tokens", default=default_max_tokens),
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


def _text(seq: Sequence, start: int, stop: int) -> list[str]:
    return [WORDS[(seq.seq_id * 7 + i) % len(WORDS)] for i in range(start, stop)]


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
            "id": self.model, "object": "model", "created": int(time.time()), "owned_by": "llmfleet-sim",
            "root": self.model, "parent": None, "max_model_len": self.engine.config.max_model_len,
        }  # fmt: skip
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
            print(f"sim-server {self.server_id}: exiting on request {metrics.received} "
                  f"(--crash-after-requests {args.crash_after_requests})", flush=True)  # fmt: skip
            os._exit(3)
        if self.starting():
            metrics.failed["starting"] += 1
            return self._error(503, "Loading model", "unavailable_error")
        try:
            parsed = parse_request(await request.json(), chat, args.default_max_tokens)
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
                response = await self._complete(seq, waiter, parsed, chat)
            served = True
            metrics.served += 1
            return response
        finally:  # the client went away (the handler is cancelled) or the write failed
            del self.waiters[seq.seq_id]
            if not seq.finished:
                self.engine.abort(seq, self.loop.time())
            if not served:
                metrics.failed["aborted"] += 1

    def _envelope(self, chat: bool, seq: Sequence) -> dict[str, Any]:
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{self.server_id}-{seq.seq_id}",
            "object": ("chat.completion.chunk" if chat else "text_completion"),
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": self.server_id,
        }

    @staticmethod
    def _usage(seq: Sequence) -> dict[str, int]:
        return {"prompt_tokens": seq.prompt_tokens, "completion_tokens": seq.generated,
                "total_tokens": seq.prompt_tokens + seq.generated}  # fmt: skip

    async def _stall(self, seq: Sequence, delivered: int) -> bool:
        """Stall (``--stall-after-tokens``) when the client has that many tokens and more are coming."""
        stall_at = self.args.stall_after_tokens
        if stall_at is None or delivered != stall_at or seq.output_tokens <= stall_at:
            return False
        await asyncio.sleep(self.args.stall_seconds)
        return True

    async def _stream(self, request: web.Request, seq: Sequence, waiter: _Waiter,
                      parsed: GenerationRequest, chat: bool) -> web.StreamResponse:  # fmt: skip
        """Server-sent events as vLLM sends them: one chunk per token, usage chunk, ``[DONE]``."""
        from aiohttp import web

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        envelope = self._envelope(chat, seq)
        if chat:
            choice: dict[str, Any] = {"index": 0, "delta": {"content": _TOKEN_MARK}, "logprobs": None,
                                      "finish_reason": None}  # fmt: skip
        else:
            choice = {
                "index": 0,
                "text": _TOKEN_MARK,
                "logprobs": None,
                "finish_reason": None,
                "stop_reason": None,
            }
        usage_field: dict[str, Any] = {"usage": None} if parsed.include_usage else {}
        prefix, suffix = ("data: " + _dumps({**envelope, "choices": [choice], **usage_field})).split(
            _dumps(_TOKEN_MARK)
        )
        suffix += "\n\n"

        def event(payload: dict[str, Any]) -> str:
            return f"data: {_dumps({**envelope, **payload, **usage_field})}\n\n"

        sent, stall_at = 0, self.args.stall_after_tokens
        stalled = False
        while sent < seq.output_tokens:
            await self._wait(seq, waiter, sent)
            upto = seq.generated if stalled or stall_at is None else min(seq.generated, max(stall_at, sent))
            parts = []
            if chat and sent == 0 and upto > 0:
                role = {**choice, "delta": {"role": "assistant", "content": ""}}
                parts.append(event({"choices": [role]}))
            words = _text(seq, sent, upto)
            last = upto == seq.output_tokens
            for word in words[:-1] if last else words:
                parts.append(f'{prefix}"{word}"{suffix}')
            if last:
                final = {**choice, "finish_reason": seq.finish_reason}
                final.update({"delta": {"content": words[-1]}} if chat else {"text": words[-1]})
                parts.append(event({"choices": [final]}))
            if parts:
                await response.write("".join(parts).encode())
            sent = upto
            if not stalled:
                stalled = await self._stall(seq, sent)
        tail = [f"data: {_dumps({**envelope, 'choices': [], 'usage': self._usage(seq)})}\n\n"] if (
            parsed.include_usage
        ) else []  # fmt: skip
        tail.append("data: [DONE]\n\n")
        await response.write("".join(tail).encode())
        await response.write_eof()
        return response

    async def _complete(self, seq: Sequence, waiter: _Waiter, parsed: GenerationRequest,
                        chat: bool) -> web.Response:  # fmt: skip
        from aiohttp import web

        await self._wait(seq, waiter, 0)
        if self.args.stall_after_tokens is not None:
            await self._stall(seq, self.args.stall_after_tokens)
        text = "".join(_text(seq, 0, seq.generated))
        envelope = self._envelope(chat, seq)
        if chat:
            envelope["object"] = "chat.completion"
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": seq.finish_reason}  # fmt: skip
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": seq.finish_reason,
                      "stop_reason": None}  # fmt: skip
        return web.json_response({**envelope, "choices": [choice], "usage": self._usage(seq)})


async def serve(args: argparse.Namespace, config: EngineConfig) -> None:
    """Listen until SIGTERM or SIGINT, then let in-flight requests finish briefly."""
    from aiohttp import web

    server = SimServer(args, config)
    runner_options: dict[str, Any] = {} if args.access_log else {"access_log": None}
    runner = web.AppRunner(server.app(), handler_cancellation=True,
                           shutdown_timeout=args.shutdown_timeout_seconds, **runner_options)  # fmt: skip
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    server.start()
    print(f"llmfleet sim-server {server.server_id}: serving {server.model} on http://{args.host}:{args.port}",
          flush=True)  # fmt: skip
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
    asyncio.run(serve(args, config))
    return 0
