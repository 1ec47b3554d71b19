"""A small asyncio OpenAI-completions client for load-balancer tests and the data-plane benchmark.

One aiohttp session drives hundreds of concurrent streams on one core. Every call returns an
``Outcome`` instead of raising, so a test or benchmark can count failures (status, cut
stream, connection error) next to successes, and see which backend answered (``X-Sim-Server``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict

PROMPT = "Summarise why a load balancer in front of model servers should not buffer streams."


@dataclass
class Outcome:
    """What one request got. ``ttft``/``total`` are seconds from sending the request."""

    status: int | None = None
    server: str | None = None
    tokens: int = 0
    done: bool = False
    error: str | None = None
    ttft: float | None = None
    total: float = 0.0
    started: float = 0.0
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and self.error is None


def session(
    limit: int = 0, local_address: str | None = None, timeout: float = 120.0, fresh_connections: bool = False
) -> aiohttp.ClientSession:
    """A client session with ``limit`` connections (0: unbounded), optionally from a given source address.

    ``fresh_connections`` opens a new connection per request (no client keep-alive), for checks
    where an idle keep-alive connection closed by a reloading balancer must not count as a failure.
    """
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=0, force_close=fresh_connections,
        local_addr=(local_address, 0) if local_address else None,
    )  # fmt: skip
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), auto_decompress=False
    )


async def stream_completion(
    client: aiohttp.ClientSession,
    url: str,
    max_tokens: int,
    headers: Mapping[str, str] | None = None,
    prompt: str = PROMPT,
    on_first_token: Callable[[Outcome], Awaitable[None]] | None = None,
    stop_after_tokens: int | None = None,
) -> Outcome:
    """POST a streaming ``/v1/completions`` and read the SSE stream to ``[DONE]``.

    ``on_first_token`` runs (awaited, the stream paused) as soon as the first token event
    arrives. ``stop_after_tokens`` closes the stream early (the client walks away).
    """
    body = {"model": "sim-model", "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True}  # fmt: skip
    outcome = Outcome(started=time.monotonic())
    start = outcome.started
    try:
        async with client.post(f"{url}/v1/completions", json=body, headers=dict(headers or {})) as response:
            outcome.status = response.status
            outcome.server = response.headers.get("X-Sim-Server")
            outcome.headers = CIMultiDict(response.headers)
            if response.status != 200:
                outcome.body = await response.read()
                outcome.total = time.monotonic() - start
                return outcome
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                if line.startswith(b"data: [DONE]"):
                    outcome.done = True
                    continue
                if b'"choices":[]' in line:
                    continue  # the usage chunk
                outcome.tokens += 1
                if outcome.tokens == 1:
                    outcome.ttft = time.monotonic() - start
                    if on_first_token is not None:
                        await on_first_token(outcome)
                if stop_after_tokens is not None and outcome.tokens >= stop_after_tokens:
                    break
            if not outcome.done and stop_after_tokens is None:
                outcome.error = "stream ended before [DONE]"
    except (TimeoutError, aiohttp.ClientError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.total = time.monotonic() - start
    return outcome


async def complete(
    client: aiohttp.ClientSession, url: str, max_tokens: int = 1, headers: Mapping[str, str] | None = None
) -> Outcome:
    """POST a non-streaming ``/v1/completions``; ``done`` when a full JSON answer came back."""
    body = {"model": "sim-model", "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True}
    outcome = Outcome(started=time.monotonic())
    try:
        async with client.post(f"{url}/v1/completions", json=body, headers=dict(headers or {})) as response:
            outcome.status = response.status
            outcome.server = response.headers.get("X-Sim-Server")
            outcome.headers = CIMultiDict(response.headers)
            outcome.body = await response.read()
            outcome.done = response.status == 200 and b'"choices"' in outcome.body
            outcome.tokens = max_tokens if outcome.done else 0
    except (TimeoutError, aiohttp.ClientError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.total = time.monotonic() - outcome.started
    return outcome


async def scrape(client: aiohttp.ClientSession, url: str) -> str:
    """A /metrics page (sim-server or haproxy), without blocking the event loop."""
    async with client.get(url) as response:
        response.raise_for_status()
        return await response.text()
