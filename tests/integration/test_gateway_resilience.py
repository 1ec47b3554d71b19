"""Redis frozen, killed, or never there: every request still succeeds, through the upstream."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_helpers import GatewayProcess, chat, gateway, redis_server, sse_events
from tests.support.process import free_port, http_ok
from tests.support.simserver import sim_server

pytestmark = pytest.mark.realservers


async def traffic(client: httpx.AsyncClient, gw: GatewayProcess, count: int) -> list[httpx.Response]:
    """A mix of repeated (cacheable) and streamed requests, four at a time."""
    semaphore = asyncio.Semaphore(4)

    async def one(i: int) -> httpx.Response:
        body = chat(f"resilience: question {i % 5}", stream=i % 2 == 1)
        async with semaphore:
            return await client.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def assert_all_served(responses: list[httpx.Response]) -> None:
    assert [r.status_code for r in responses] == [200] * len(responses)
    for response in responses:
        if response.headers["content-type"].startswith("text/event-stream"):
            sse_events(response.content)
        else:
            assert response.json()["choices"]


async def test_redis_frozen_then_killed_fails_no_request(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path) as redis,
        sim_server(tmp_path, id="a", decode_base_seconds=0.002) as sim,
        gateway(
            tmp_path, sim.url, redis.url, "--redis-timeout-ms", "100", "--breaker-reset-seconds", "1"
        ) as gw,
    ):
        async with httpx.AsyncClient() as client:
            assert_all_served(await traffic(client, gw, 20))
            repeat = await client.post(f"{gw.url}/v1/chat/completions", json=chat("resilience: question 0"))
            assert repeat.headers["X-LLMFleet-Cache"] == "hit"  # the cache works before the trouble

            redis.process.signal(signal.SIGSTOP)  # slow: Redis accepts, never answers
            try:
                frozen = await traffic(client, gw, 20)
            finally:
                redis.process.signal(signal.SIGCONT)
            assert_all_served(frozen)
            assert gw.metric("llmfleet_gateway_redis_errors_total") >= 1

            redis.process.kill()  # down: connections refused
            killed = await traffic(client, gw, 30)
            assert_all_served(killed)
            assert {r.headers["X-LLMFleet-Cache"] for r in killed} == {"miss"}
            assert http_ok(f"{gw.admin_url}/readyz")
            assert gw.metric("llmfleet_gateway_redis_up") == 0


async def test_gateway_starts_and_serves_without_redis(tmp_path: Path) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with sim_server(tmp_path, id="a") as sim, gateway(tmp_path, sim.url, nobody) as gw:
        assert http_ok(f"{gw.admin_url}/readyz")
        async with httpx.AsyncClient() as client:
            responses = await traffic(client, gw, 12)
        assert_all_served(responses)


async def test_cache_comes_back_with_redis(tmp_path: Path) -> None:
    port = free_port()
    with (
        sim_server(tmp_path, id="a") as sim,
        redis_server(tmp_path, port=port) as redis,
        gateway(tmp_path, sim.url, redis.url, "--breaker-reset-seconds", "0.2") as gw,
    ):
        redis.process.kill()
        async with httpx.AsyncClient() as client:
            assert_all_served(await traffic(client, gw, 8))
            with redis_server(tmp_path, port=port):
                body = chat("resilience: after the restart")
                # the breaker lets a probe through after its cool-down; retry until it closed again
                statuses = []
                for _ in range(50):
                    response = await client.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30)
                    statuses.append(response.headers["X-LLMFleet-Cache"])
                    if statuses[-1] == "hit":
                        break
                    await asyncio.sleep(0.1)
                assert statuses[-1] == "hit", statuses


async def test_response_cut_by_an_upstream_crash_is_neither_completed_nor_cached(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path) as redis,
        sim_server(tmp_path, id="a", crash_after_requests=1, stall_after_tokens=2, stall_seconds=3600) as sim,
        gateway(tmp_path, sim.url, redis.url) as gw,
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            body = chat("crash: a stream that will be cut", max_tokens=10, stream=True)
            received = b""
            with pytest.raises(httpx.HTTPError):  # the client sees a broken body, not a short one
                async with client.stream("POST", f"{gw.url}/v1/chat/completions", json=body) as stream:
                    assert stream.status_code == 200
                    async for chunk in stream.aiter_raw():
                        if not received:  # the first event is out and the stream stalls: crash the server
                            crash = await client.post(
                                f"{gw.url}/v1/chat/completions", json=chat("crash: trigger")
                            )
                            assert crash.status_code == 502
                        received += chunk
            assert received.startswith(b"data: ")
            assert b"[DONE]" not in received
        assert gw.metric("llmfleet_gateway_cache_stores_total", result="stored") == 0
        assert gw.metric("llmfleet_gateway_cache_entries") == 0
