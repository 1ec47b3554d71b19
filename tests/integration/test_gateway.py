"""The gateway as deployed: real ``llmfleet gateway``, real redis-server, real sim-server backends.

Upstream calls are counted by the sim-server itself (``llmfleet_sim_requests_received_total``
increments when a request arrives, so it is settled once the client has its answer), and a
cached answer is recognised by its response id: the sim-server numbers every response it makes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.gateway_helpers import (
    GatewayProcess,
    RedisServer,
    chat,
    gateway,
    redis_server,
    sse_events,
)
from tests.support.process import http_ok, wait_until
from tests.support.simserver import SimServer, sim_server

pytestmark = pytest.mark.realservers

RECEIVED = "llmfleet_sim_requests_received_total"
MAX_CACHED_BYTES = 4096


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, SimServer, GatewayProcess]]:
    tmp = tmp_path_factory.mktemp("gateway")
    with (
        redis_server(tmp) as redis,
        sim_server(tmp, id="a", decode_base_seconds=0.01) as sim,
        gateway(tmp, sim.url, redis.url, "--max-cached-bytes", str(MAX_CACHED_BYTES)) as gw,
    ):
        yield redis, sim, gw


@pytest.fixture
def sim(servers: tuple[RedisServer, SimServer, GatewayProcess]) -> SimServer:
    return servers[1]


@pytest.fixture
def gw(servers: tuple[RedisServer, SimServer, GatewayProcess]) -> GatewayProcess:
    return servers[2]


async def post(
    client: httpx.AsyncClient, gw: GatewayProcess, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers or {}, timeout=30)


def response_id(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        return str(json.loads(sse_events(response.content)[0])["id"])
    return str(response.json()["id"])


async def test_hit_and_miss_across_parameters(sim: SimServer, gw: GatewayProcess) -> None:
    async with httpx.AsyncClient() as client:
        before = sim.metric(RECEIVED)
        first = await post(client, gw, chat("hit-miss: name three rivers"))
        again = await post(client, gw, chat("hit-miss: name three rivers"))
        same_meaning = await post(
            client, gw, chat("hit-miss: name three rivers", temperature=0.0, top_p=1, n=1)
        )
        assert [r.status_code for r in (first, again, same_meaning)] == [200, 200, 200]
        assert first.headers["X-LLMFleet-Cache"] == "miss"
        assert again.headers["X-LLMFleet-Cache"] == same_meaning.headers["X-LLMFleet-Cache"] == "hit"
        assert again.content == same_meaning.content == first.content
        assert sim.metric(RECEIVED) - before == 1

        variants = [
            chat("hit-miss: name three rivers", max_tokens=9),
            chat("hit-miss: name three rivers", seed=7),
            chat("hit-miss: name three rivers", stop=["."]),
            chat("hit-miss: name three lakes"),
        ]
        results = [await post(client, gw, body) for body in variants]
        assert [r.headers["X-LLMFleet-Cache"] for r in results] == ["miss"] * 4
        assert len({response_id(r) for r in [first, *results]}) == 5
        assert sim.metric(RECEIVED) - before == 5


async def test_nondeterministic_and_opted_out_requests_bypass(sim: SimServer, gw: GatewayProcess) -> None:
    async with httpx.AsyncClient() as client:
        before = sim.metric(RECEIVED)
        sampled = [await post(client, gw, chat("bypass: sampled", temperature=0.7)) for _ in range(2)]
        assert [r.headers["X-LLMFleet-Cache"] for r in sampled] == ["bypass", "bypass"]
        seeded = [await post(client, gw, chat("bypass: sampled", temperature=0.7, seed=1)) for _ in range(2)]
        assert [r.headers["X-LLMFleet-Cache"] for r in seeded] == ["miss", "hit"]

        body = chat("bypass: opt-out")
        assert (await post(client, gw, body)).headers["X-LLMFleet-Cache"] == "miss"
        opted_out = [
            await post(client, gw, body, {"X-LLMFleet-Cache": "bypass"}),
            await post(client, gw, body, {"Cache-Control": "no-store"}),
        ]
        assert [r.headers["X-LLMFleet-Cache"] for r in opted_out] == ["bypass", "bypass"]
        no_cache = await post(client, gw, body, {"Cache-Control": "no-cache"})
        assert no_cache.headers["X-LLMFleet-Cache"] == "miss"  # fresh answer, and it replaces the entry
        refreshed = await post(client, gw, body)
        assert refreshed.headers["X-LLMFleet-Cache"] == "hit"
        assert response_id(refreshed) == response_id(no_cache)
        assert sim.metric(RECEIVED) - before == 2 + 1 + 1 + 2 + 1


async def test_tenants_never_share_an_entry(sim: SimServer, gw: GatewayProcess) -> None:
    body = chat("tenants: what is our revenue?")
    callers = [
        {"Authorization": "Bearer key-a"},
        {"Authorization": "Bearer key-b"},
        {"X-Tenant-ID": "team-a"},
        {"X-Tenant-ID": "team-b"},
    ]
    async with httpx.AsyncClient() as client:
        before = sim.metric(RECEIVED)
        firsts = [await post(client, gw, body, h) for h in callers]
        seconds = [await post(client, gw, body, h) for h in callers]
    assert [r.headers["X-LLMFleet-Cache"] for r in firsts] == ["miss"] * 4
    assert [r.headers["X-LLMFleet-Cache"] for r in seconds] == ["hit"] * 4
    assert len({response_id(r) for r in firsts}) == 4
    assert [response_id(r) for r in seconds] == [response_id(r) for r in firsts]
    assert sim.metric(RECEIVED) - before == 4


async def test_streamed_response_is_replayed_byte_for_byte(sim: SimServer, gw: GatewayProcess) -> None:
    body = chat("sse: count to five", max_tokens=6, stream=True)
    async with httpx.AsyncClient() as client:
        before = sim.metric(RECEIVED)
        live = await post(client, gw, body)
        replay = await post(client, gw, body)
        as_json = await post(client, gw, {**body, "stream": False})
    assert live.headers["X-LLMFleet-Cache"] == "miss"
    assert replay.headers["X-LLMFleet-Cache"] == "hit"
    assert replay.headers["content-type"].startswith("text/event-stream")
    assert replay.content == live.content
    events = sse_events(replay.content)
    assert len(events) >= 3
    # a streamed entry is never served to a non-streaming request
    assert as_json.headers["X-LLMFleet-Cache"] == "miss"
    assert as_json.headers["content-type"].startswith("application/json")
    assert sim.metric(RECEIVED) - before == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_concurrent_identical_requests_make_one_upstream_call(
    sim: SimServer, gw: GatewayProcess, stream: bool
) -> None:
    body = chat(f"coalesce: a long story, stream={stream}", max_tokens=40, stream=stream)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32)) as client:
        before = sim.metric(RECEIVED)
        responses = await asyncio.gather(*(post(client, gw, body) for _ in range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    assert len({r.content for r in responses}) == 1
    assert sim.metric(RECEIVED) - before == 1
    # one request made the call; every other one joined it or (arriving after it was stored) hit
    leaders = [
        r
        for r in responses
        if r.headers["X-LLMFleet-Cache"] == "miss" and "X-LLMFleet-Coalesced" not in r.headers
    ]
    followers = [r for r in responses if r.headers.get("X-LLMFleet-Coalesced") == "1"]
    hits = [r for r in responses if r.headers["X-LLMFleet-Cache"] == "hit"]
    assert (len(leaders), len(followers) + len(hits)) == (1, 11)


async def test_oversize_responses_are_served_but_not_cached(sim: SimServer, gw: GatewayProcess) -> None:
    body = chat("oversize: a very long answer", max_tokens=64, stream=True)
    async with httpx.AsyncClient() as client:
        before = sim.metric(RECEIVED)
        responses = [await post(client, gw, body) for _ in range(2)]
    assert all(len(r.content) > MAX_CACHED_BYTES for r in responses)
    assert [r.headers["X-LLMFleet-Cache"] for r in responses] == ["miss", "miss"]
    sse_events(responses[1].content)
    assert sim.metric(RECEIVED) - before == 2
    assert gw.metric("llmfleet_gateway_cache_stores_total", result="oversize") >= 2


def test_other_paths_pass_through_and_admin_endpoints(sim: SimServer, gw: GatewayProcess) -> None:
    models = httpx.get(f"{gw.url}/v1/models", timeout=10)
    assert models.status_code == 200
    assert models.json()["data"][0]["id"] == "sim-model"
    assert "X-LLMFleet-Cache" not in models.headers
    assert httpx.get(f"{gw.url}/health", timeout=10).status_code == 200
    assert http_ok(f"{gw.admin_url}/healthz") and http_ok(f"{gw.admin_url}/readyz")
    text = gw.metrics_text()
    for name in (
        "llmfleet_gateway_requests_total",
        "llmfleet_gateway_cache_lookups_total",
        "llmfleet_gateway_upstream_latency_seconds_bucket",
        "llmfleet_gateway_upstream_ttft_seconds_bucket",
        "llmfleet_gateway_inflight_requests",
        "llmfleet_gateway_queued_requests",
        "llmfleet_gateway_cache_entries",
        "llmfleet_gateway_cache_memory_bytes",
    ):
        assert name in text, name
    assert gw.metric("llmfleet_gateway_cache_entries") >= 1


async def test_upstream_errors_are_passed_on_and_never_cached(tmp_path: Path, servers: Any) -> None:
    redis = servers[0]
    with (
        sim_server(tmp_path, id="broken", error_rate=1.0) as broken,
        gateway(tmp_path, broken.url, redis.url) as gw,
    ):
        async with httpx.AsyncClient() as client:
            responses = [await post(client, gw, chat("errors: anything")) for _ in range(3)]
        assert [r.status_code for r in responses] == [500] * 3
        assert [r.headers["X-LLMFleet-Cache"] for r in responses] == ["miss"] * 3
        assert broken.metric(RECEIVED) == 3
        assert gw.metric("llmfleet_gateway_cache_stores_total", result="upstream_error") == 3


async def test_redis_password_comes_from_the_environment(tmp_path: Path, sim: SimServer) -> None:
    body = chat("password: who may read the cache?")
    with redis_server(tmp_path, password="s3cret") as redis:
        with gateway(tmp_path, sim.url, redis.url, env={"REDIS_PASSWORD": "s3cret"}) as gw:
            async with httpx.AsyncClient() as client:
                outcomes = [(await post(client, gw, body)).headers["X-LLMFleet-Cache"] for _ in range(2)]
            assert outcomes == ["miss", "hit"]
        with gateway(tmp_path, sim.url, redis.url, env={"REDIS_PASSWORD": "wrong"}) as gw:
            async with httpx.AsyncClient() as client:
                responses = [await post(client, gw, body) for _ in range(2)]
            # a rejected password is a Redis failure like any other: served, uncached
            assert [r.status_code for r in responses] == [200, 200]
            assert [r.headers["X-LLMFleet-Cache"] for r in responses] == ["miss", "miss"]


@pytest.mark.parametrize("temperature", [0, 0.7], ids=["cacheable", "pass-through"])
async def test_streams_are_not_buffered(tmp_path: Path, servers: Any, temperature: float) -> None:
    """The upstream stalls after two tokens for an hour: the first events must arrive anyway."""
    redis = servers[0]
    with (
        sim_server(tmp_path, id="stalling", stall_after_tokens=2, stall_seconds=3600) as stalling,
        gateway(tmp_path, stalling.url, redis.url) as gw,
    ):
        body = chat("buffering: stream me", max_tokens=10, stream=True, temperature=temperature)
        timeout = httpx.Timeout(30, read=20)  # guard only: an unbuffered stream answers at once
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("POST", f"{gw.url}/v1/chat/completions", json=body) as stream,
        ):
            received = b""
            async for chunk in stream.aiter_raw():
                received += chunk
                if received.count(b'"content"') >= 3:  # role event + two tokens, then the stall
                    break
        assert received.startswith(b"data: ")
        assert b"[DONE]" not in received
        if temperature:  # a pass-through follows its client: hanging up stops the upstream request
            wait_until(
                lambda: stalling.metric("vllm:num_requests_running") == 0, 10, what="upstream released"
            )
