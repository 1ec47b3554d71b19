"""The rendered nginx.conf and haproxy.cfg, run by the real binaries, proven with traffic.

Every test renders the config the operator would put in the ``<name>-lb`` ConfigMap for a set
of real ``llmfleet sim-server`` backends on loopback, starts nginx or haproxy with it and
drives it with an aiohttp client. Which backend served a request is read from the
``X-Sim-Server`` header and from the backends' own counters (``llmfleet_sim_requests_*``,
``vllm:num_requests_running``); nothing asserts on wall-clock durations, only on counts,
placements and orderings that hold however slow a loaded machine is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import llmclient
from tests.support.llmclient import Outcome
from tests.support.loadbalancer import (
    ENGINES,
    Backend,
    Balancer,
    endpoints,
    load_balancer,
    metric_sum,
    parse_metrics,
    service_spec,
    start_backends,
    supervised_balancer,
)
from tests.support.process import wait_until

pytestmark = [pytest.mark.realservers, pytest.mark.slow]

# A token every 40 ms: a 400-token "long" request holds its backend for 16 s (tests close it
# early), a 1-token "short" request is over in one engine step.
STEP = 0.04
LONG = 400
SESSION = "X-Session-ID"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    """Three sim-servers shared by the tests that do not kill or reconfigure their backends."""
    with start_backends(
        tmp_path_factory.mktemp("fleet"), ["a", "b", "c"], decode_base_seconds=STEP
    ) as backends:
        yield backends


def in_flight(backend: Backend) -> float:
    server = backend.server
    return server.metric("vllm:num_requests_running") + server.metric("vllm:num_requests_waiting")


def wait_idle(backends: Sequence[Backend]) -> None:
    """Wait until no backend has work left from an earlier test (closed streams abort promptly)."""
    wait_until(lambda: all(in_flight(b) == 0 for b in backends), timeout=30, what="idle backends")


def received(backends: Sequence[Backend]) -> dict[str, float]:
    return {b.name: b.server.metric("llmfleet_sim_requests_received_total") for b in backends}


class Streams:
    """Long streams held open until ``close()``; ``servers`` lists who serves each, once it started."""

    def __init__(self, client: aiohttp.ClientSession, url: str) -> None:
        self.client, self.url = client, url
        self.tasks: list[asyncio.Task[Outcome]] = []
        self.servers: list[str | None] = []

    async def open(self, count: int = 1, headers: dict[str, str] | None = None,
                   max_tokens: int = LONG) -> list[str | None]:  # fmt: skip
        """Open ``count`` streams at once and wait for each one's first token; return their backends."""
        started = [asyncio.Event() for _ in range(count)]
        slots = list(range(len(self.servers), len(self.servers) + count))
        self.servers.extend([None] * count)

        def first_token(slot: int, event: asyncio.Event) -> Callable[[Outcome], Awaitable[None]]:
            async def record(outcome: Outcome) -> None:
                self.servers[slot] = outcome.server
                event.set()

            return record

        for slot, event in zip(slots, started, strict=True):
            task = asyncio.create_task(llmclient.stream_completion(
                self.client, self.url, max_tokens, headers=headers, on_first_token=first_token(slot, event)))  # fmt: skip
            task.add_done_callback(functools.partial(_set, event))  # ended without a first token
            self.tasks.append(task)
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), timeout=60)
        for slot in slots:
            assert self.servers[slot] is not None, (
                f"stream {slot} ended before its first token: {self.tasks[slot]}"
            )
        return [self.servers[slot] for slot in slots]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _set(event: asyncio.Event, _task: object) -> None:
    event.set()


@contextlib.asynccontextmanager
async def held_streams(client: aiohttp.ClientSession, url: str) -> AsyncIterator[Streams]:
    streams = Streams(client, url)
    try:
        yield streams
    finally:
        await streams.close()


async def short(client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> str:
    outcome = await llmclient.complete(client, url, max_tokens=1, headers=headers)
    assert outcome.ok, outcome
    assert outcome.server is not None
    return outcome.server


async def long_short_pattern(client: aiohttp.ClientSession, url: str, streams: Streams,
                             rounds: int, shorts: int) -> list[str | None]:  # fmt: skip
    """Per round: one long stream (held open), then ``shorts`` short requests, all one after another.

    Round-robin hands out backends in a fixed cycle whatever their load, so with ``shorts + 1``
    backends every long stream lands on the same one; least-conn sends each long stream to a
    backend without one.
    """
    longs = []
    for _ in range(rounds):
        longs += await streams.open(1)
        for _ in range(shorts):
            await short(client, url)
    return longs


# -- strategies ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_round_robin_cycles_through_backends_whatever_their_load(
    engine: str, fleet: list[Backend], tmp_path: Path
) -> None:
    wait_idle(fleet)
    with load_balancer(tmp_path, service_spec(engine, "round-robin"), fleet) as lb:
        async with llmclient.session() as client:
            order = [await short(client, lb.url) for _ in range(12)]
            async with held_streams(client, lb.url) as streams:
                longs = await long_short_pattern(client, lb.url, streams, rounds=4, shorts=2)
    # Sequential requests visit every backend in a fixed cycle.
    assert sorted(set(order[:3])) == ["a", "b", "c"], order
    assert all(order[i] == order[i % 3] for i in range(12)), order
    assert collections.Counter(order) == {"a": 4, "b": 4, "c": 4}
    # ... and the cycle ignores load: every 3rd request is a long one, so one backend gets them all.
    assert len(set(longs)) == 1, longs


@pytest.mark.parametrize("engine", ENGINES)
async def test_least_conn_spreads_concurrent_long_requests_evenly(
    engine: str, fleet: list[Backend], tmp_path: Path
) -> None:
    wait_idle(fleet)
    with load_balancer(tmp_path, service_spec(engine, "least-conn"), fleet) as lb:
        async with llmclient.session() as client, held_streams(client, lb.url) as streams:
            # The workload that round-robin piles onto one backend (test above) is spread here.
            longs = await long_short_pattern(client, lb.url, streams, rounds=3, shorts=2)
            assert sorted(longs) == ["a", "b", "c"], longs  # type: ignore[type-var]
            # 9 more long streams at once: the balancer fills the backends evenly.
            await streams.open(9)
            placed = collections.Counter(streams.servers)
            running = {b.name: b.server.metric("vllm:num_requests_running") for b in fleet}
    assert placed == {"a": 4, "b": 4, "c": 4}, placed
    assert running == {"a": 4, "b": 4, "c": 4}, running  # the backends' own view agrees


@pytest.mark.parametrize("engine", ENGINES)
async def test_session_affinity_pins_each_session_to_one_backend(
    engine: str, fleet: list[Backend], tmp_path: Path
) -> None:
    wait_idle(fleet)
    sessions = [f"user-{i}" for i in range(30)]
    with load_balancer(tmp_path, service_spec(engine, "session-affinity"), fleet) as lb:
        async with llmclient.session() as client:
            seen: dict[str, set[str]] = collections.defaultdict(set)
            for _ in range(3):
                for sid in sessions:
                    seen[sid].add(await short(client, lb.url, {SESSION: sid}))
            anonymous = [await short(client, lb.url) for _ in range(30)]
    assert all(len(backends) == 1 for backends in seen.values()), dict(seen)
    homes = collections.Counter(next(iter(b)) for b in seen.values())
    assert len(homes) == 3, homes  # 30 sessions hash onto all three backends
    # Requests without the header are not all hashed to one backend.
    assert len(set(anonymous)) >= 2, anonymous


@pytest.mark.parametrize(
    ("engine", "cap"),
    [("nginx", None), ("nginx", 2), ("haproxy", None)],
    ids=["nginx", "nginx-cap2", "haproxy"],
)
async def test_session_affinity_moves_a_session_only_beyond_the_backend_bound(
    engine: str, cap: int | None, fleet: list[Backend], tmp_path: Path
) -> None:
    """Six concurrent long streams of one session.

    haproxy bounds the load (``hash-balance-factor 125``): once the session's backend carries more
    than 125% of the average, the next stream goes elsewhere. nginx's consistent hash has no
    bound: all six stay home, unless ``maxConcurrencyPerReplica`` (``max_conns``) is set, which
    nginx's hash honours by walking on to the next backend on the ring.
    """
    wait_idle(fleet)
    extra: dict[str, Any] = {"maxConcurrencyPerReplica": cap} if cap else {}
    with load_balancer(tmp_path, service_spec(engine, "session-affinity", **extra), fleet) as lb:
        async with llmclient.session() as client:
            home = await short(client, lb.url, {SESSION: "heavy"})
            async with held_streams(client, lb.url) as streams:
                for _ in range(6):  # one after another, so each placement sees the previous ones
                    await streams.open(1, headers={SESSION: "heavy"})
                placed = collections.Counter(streams.servers)
            wait_idle(fleet)
            back_home = await short(client, lb.url, {SESSION: "heavy"})
    assert back_home == home, "once the load is gone the session is served by its own backend again"
    if engine == "nginx" and cap is None:
        assert placed == {home: 6}, placed
    elif engine == "nginx":
        assert placed[home] == cap, placed
        assert sum(placed.values()) == 6
    else:
        assert 1 <= placed[home] < 6, placed
        assert len(placed) >= 2, placed


@pytest.mark.parametrize("engine", ENGINES)
async def test_session_moves_only_when_its_backend_is_down(engine: str, tmp_path: Path) -> None:
    sessions = [f"user-{i}" for i in range(24)]
    with start_backends(tmp_path, ["a", "b", "c"], decode_base_seconds=STEP) as backends:
        by_name = {b.name: b for b in backends}
        with load_balancer(tmp_path, service_spec(engine, "session-affinity"), backends) as lb:
            async with llmclient.session() as client:

                async def placement() -> dict[str, str]:
                    return {sid: await short(client, lb.url, {SESSION: sid}) for sid in sessions}

                before = await placement()
                victim = collections.Counter(before.values()).most_common(1)[0][0]
                by_name[victim].server.process.kill()
                after_kill = await placement()  # every request succeeds (asserted in short())
                if engine == "haproxy":  # let its health check take the backend out of the ring
                    wait_until(lambda: haproxy_server_up(lb, victim) == 0, timeout=30, what=f"{victim} down")
                settled = await placement()
                again = await placement()
    moved = {sid for sid, home in before.items() if home == victim}
    assert moved, before
    for sid in sessions:
        if sid in moved:
            assert after_kill[sid] != victim and settled[sid] != victim
            assert again[sid] == settled[sid], "a moved session is pinned to its new backend"
        else:
            assert after_kill[sid] == settled[sid] == again[sid] == before[sid], (
                f"{sid} moved although its backend {before[sid]} is up"
            )


def haproxy_server_up(lb: Balancer, server: str) -> float:
    return metric_sum(lb.haproxy_metrics(), "haproxy_server_status", proxy="model", server=server,
                      state="UP")  # fmt: skip


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_streaming_is_not_buffered(engine: str, fleet: list[Backend], tmp_path: Path) -> None:
    """The client holds the first token while the backend is still generating the same response."""
    wait_idle(fleet)
    by_name = {b.name: b for b in fleet}
    with load_balancer(tmp_path, service_spec(engine, "least-conn"), fleet) as lb:
        served_before = {b.name: b.server.metric("llmfleet_sim_requests_served_total") for b in fleet}
        seen_at_first_token: dict[str, float] = {}

        async def on_first(outcome: Outcome) -> None:
            assert outcome.server is not None
            backend = by_name[outcome.server]
            async with aiohttp.ClientSession() as scraper:
                samples = parse_metrics(await llmclient.scrape(scraper, f"{backend.url}/metrics"))
            seen_at_first_token["running"] = metric_sum(samples, "vllm:num_requests_running")
            seen_at_first_token["served"] = (
                metric_sum(samples, "llmfleet_sim_requests_served_total") - served_before[backend.name]
            )
            seen_at_first_token["generated"] = metric_sum(samples, "vllm:generation_tokens_total")

        async with llmclient.session() as client:
            outcome = await llmclient.stream_completion(client, lb.url, 40, on_first_token=on_first)
        generated_after = by_name[outcome.server or ""].server.metric("vllm:generation_tokens_total")
    assert outcome.ok and outcome.tokens == 40, outcome
    assert "content-length" not in outcome.headers
    # When the first event reached the client the backend had not finished the response: the
    # balancer passed the event on instead of collecting the stream.
    assert seen_at_first_token["running"] == 1, seen_at_first_token
    assert seen_at_first_token["served"] == 0, seen_at_first_token
    assert generated_after - seen_at_first_token["generated"] >= 20, (seen_at_first_token, generated_after)
    assert outcome.ttft is not None
    print(f"{engine}: first token after {outcome.ttft:.3f}s of a {outcome.total:.3f}s stream")


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_backend_killed_mid_run(
    engine: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Backend ``a`` exits at once on its 7th request, cutting whatever it is serving.

    Accounting, per backend, against the client's requests: no request was counted by two
    backends, every request ``a`` had received and not finished failed (a POST that reached
    it was never re-sent), and the only other failures are requests no backend counted: the
    few already written into ``a``'s socket when it died. Requests the balancer could not
    connect with were moved to another backend (haproxy reports them as redispatches).
    """
    requests, concurrency, crash_after = 60, 12, 6
    with start_backends(tmp_path, ["b", "c"], decode_base_seconds=0.03) as survivors, start_backends(
        tmp_path, ["a"], decode_base_seconds=0.03, crash_after_requests=crash_after
    ) as (victim,):  # fmt: skip
        backends = [victim, *survivors]
        with load_balancer(tmp_path, service_spec(engine, "least-conn"), backends) as lb:
            async with llmclient.session() as client:
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(requests):
                    queue.put_nowait(i)
                outcomes: list[Outcome] = []

                async def worker() -> None:
                    while not queue.empty():
                        queue.get_nowait()
                        outcomes.append(await llmclient.stream_completion(client, lb.url, 15))

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            victim.server.process.proc.wait(timeout=10)
            assert victim.server.process.proc.returncode == 3, victim.server.process.log()[-2000:]
            got = received(survivors)
            retried = lb.retries_after_failed_connect(
                victim.server.port
            )  # reported: nginx usually marks it failed first
    got[victim.name] = crash_after + 1  # it served 6 and died on receiving the 7th
    failed = [o for o in outcomes if not o.ok]
    ok_from_victim = sum(1 for o in outcomes if o.ok and o.server == victim.name)
    rate = len(failed) / requests
    record_property("failure_rate", rate)
    print(f"{engine}: {len(failed)}/{requests} failed ({rate:.1%}); received per backend {got}; "
          f"retried after connect failures: {retried}; failures: "
          f"{collections.Counter(o.error or str(o.status) for o in failed)}")  # fmt: skip
    uncounted = requests - int(sum(got.values()))
    assert len(outcomes) == requests
    assert uncounted >= 0, f"more requests reached the backends than the client sent: {got}"
    # Every request the victim had received and not finished failed: none was re-sent elsewhere.
    assert len(failed) >= got[victim.name] - ok_from_victim, got
    # The ledger closes: the other failures are exactly the requests no backend counted, the
    # few the balancer had written into the victim's socket, unread, at the instant it died
    # (sent, so they must not be re-sent either). A request the balancer could not even
    # connect with was moved to another backend and did not fail.
    assert len(failed) == got[victim.name] - ok_from_victim + uncounted, got
    assert 1 <= len(failed) <= concurrency
    assert all(o.status in (502, 503) or o.error for o in failed)


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_rate_limit_answers_429_per_client_beyond_the_rate(
    engine: str, fleet: list[Backend], tmp_path: Path
) -> None:
    rate, burst, flood_seconds = 5, 5, 2.5
    wait_idle(fleet)
    spec = service_spec(engine, "least-conn", rateLimit={"requestsPerSecond": rate, "burst": burst})
    with load_balancer(tmp_path, spec, fleet) as lb:
        before = received(fleet)
        flood: list[Outcome] = []
        other: list[Outcome] = []
        async with llmclient.session() as client_a, llmclient.session(local_address="127.0.0.2") as client_b:
            started = time.monotonic()

            async def flooder() -> None:  # ~100 requests/s together: 20 times the rate, for 2.5 s
                while time.monotonic() - started < flood_seconds and len(flood) < 400:
                    flood.append(await llmclient.complete(client_a, lb.url))
                    await asyncio.sleep(0.02)

            async def polite() -> None:  # another client address, well within its own limit
                for _ in range(3):
                    other.append(await llmclient.complete(client_b, lb.url))

            await asyncio.gather(*(flooder() for _ in range(2)), polite())
            elapsed = time.monotonic() - started
        after = received(fleet)
    accepted = [o for o in flood if o.status == 200]
    limited = [o for o in flood if o.status == 429]
    print(f"{engine}: client A sent {len(flood)} in {elapsed:.2f}s: {len(accepted)} accepted, "
          f"{len(limited)} got 429; client B {[o.status for o in other]}")  # fmt: skip
    assert len(accepted) + len(limited) == len(flood), collections.Counter(o.status for o in flood)
    assert limited, "a client far above its rate was never limited"
    assert all(o.headers.get("Retry-After") == "1" for o in limited)
    assert all(json.loads(o.body)["error"]["code"] == 429 for o in limited)
    # Never more than the rate plus the burst in any second ...
    assert len(accepted) <= (rate + burst) * math.ceil(elapsed + 1), len(accepted)
    if engine == "nginx":  # a token bucket: the burst once, then the rate
        assert len(accepted) <= 1 + burst + rate * (elapsed + 0.5), len(accepted)
    # ... and the limited client is still served at its rate: rejected requests do not count
    # against it (more than one second's allowance got through a flood of over two seconds).
    assert len(accepted) > rate + burst, len(accepted)
    # Other clients are limited separately.
    assert [o.status for o in other] == [200, 200, 200]
    # Rejected requests never reached a backend.
    assert sum(after.values()) - sum(before.values()) == len(accepted) + len(other)


@pytest.mark.parametrize("engine", ENGINES)
async def test_rate_limit_behind_the_gateway_is_per_forwarded_client(
    engine: str, fleet: list[Backend], tmp_path: Path
) -> None:
    """With the caching gateway in front every request comes from the gateway's address; the
    limit applies to the end client the gateway appends to ``X-Forwarded-For``."""
    wait_idle(fleet)
    spec = service_spec(engine, "least-conn", cache=True, rateLimit={"requestsPerSecond": 3, "burst": 2})
    flooder_ip, other_ip = (
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Forwarded-For": "198.51.100.1, 203.0.113.8"},
    )
    with load_balancer(tmp_path, spec, fleet) as lb:
        async with llmclient.session() as gateway:
            flood = [await llmclient.complete(gateway, lb.url, headers=flooder_ip) for _ in range(30)]
            other = [await llmclient.complete(gateway, lb.url, headers=other_ip) for _ in range(2)]
    statuses = collections.Counter(o.status for o in flood)
    assert statuses[429] >= 1 and statuses[200] >= 1, statuses
    assert statuses[200] + statuses[429] == len(flood), statuses
    assert [o.status for o in other] == [200, 200], (
        "another end client behind the same gateway is not limited"
    )


@pytest.mark.parametrize("engine", ENGINES)
async def test_concurrency_cap_per_replica(engine: str, fleet: list[Backend], tmp_path: Path) -> None:
    """18 concurrent streams, 3 backends, ``maxConcurrencyPerReplica: 3``.

    haproxy queues the excess (``maxconn`` + ``timeout queue``) and serves everything without a
    backend ever holding more than 3; nginx OSS has no upstream queue: ``max_conns`` protects
    the backends just as well, but the excess is answered 503 with ``Retry-After`` at once.
    """
    cap, streams = 3, 18
    wait_idle(fleet)
    spec = service_spec(engine, "least-conn", maxConcurrencyPerReplica=cap)
    with load_balancer(tmp_path, spec, fleet) as lb:
        before = received(fleet)
        peak = dict.fromkeys((b.name for b in fleet), 0.0)
        async with llmclient.session() as client:
            tasks = [
                asyncio.create_task(llmclient.stream_completion(client, lb.url, 25)) for _ in range(streams)
            ]
            while not all(t.done() for t in tasks):  # sample every backend's own count throughout
                for backend in fleet:
                    samples = parse_metrics(await llmclient.scrape(client, f"{backend.url}/metrics"))
                    load = metric_sum(samples, "vllm:num_requests_running") + metric_sum(
                        samples, "vllm:num_requests_waiting"
                    )
                    peak[backend.name] = max(peak[backend.name], load)
                await asyncio.sleep(0.02)
            outcomes = [t.result() for t in tasks]
        after = received(fleet)
        haproxy = lb.haproxy_metrics() if engine == "haproxy" else {}
    ok = [o for o in outcomes if o.ok]
    print(f"{engine}: peak in flight per backend {peak}; {len(ok)} served, "
          f"{collections.Counter(o.status for o in outcomes if not o.ok)} not")  # fmt: skip
    assert max(peak.values()) <= cap, peak
    assert max(peak.values()) >= 1, "the sampler never saw the load"
    assert sum(after.values()) - sum(before.values()) == len(ok), "only admitted requests reach a backend"
    if engine == "haproxy":
        assert len(ok) == streams, [o for o in outcomes if not o.ok][:2]
        assert metric_sum(haproxy, "haproxy_backend_max_queue", proxy="model") >= 1, (
            "nothing waited in the queue"
        )
        for backend in fleet:
            assert (
                metric_sum(haproxy, "haproxy_server_max_sessions", proxy="model", server=backend.name) <= cap
            )
    else:
        refused = [o for o in outcomes if o.status == 503]
        assert len(ok) + len(refused) == streams
        assert refused, "nginx cannot queue: the requests beyond the cap must be refused"
        assert len(ok) >= cap * len(fleet)
        assert all(o.headers.get("Retry-After") == "1" for o in refused)
        assert all(json.loads(o.body)["error"]["code"] == 503 for o in refused)


# -- reloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_reload_with_changed_backends_drops_no_stream(engine: str, tmp_path: Path) -> None:
    """The LB pod's run.sh picks up a config with backend ``a`` replaced by ``c``.

    Streams open on ``a`` and ``b`` finish in full, requests made throughout the reload all
    succeed, new requests go to ``b`` and ``c`` only; a broken config is rejected and the
    balancer keeps serving with the old one.
    """
    tokens = 100
    with start_backends(tmp_path, ["a", "b", "c"], decode_base_seconds=STEP) as backends:
        a, b, c = backends
        with supervised_balancer(tmp_path, service_spec(engine, "round-robin"), [a, b]) as lb:
            async with (
                llmclient.session() as client,
                # Requests around a reload each use a new connection: an idle keep-alive
                # connection that the old worker closes just as a request is written to it is
                # reset (ordinary keep-alive behaviour, see docs/dataplane.md), not a dropped request.
                llmclient.session(fresh_connections=True) as fresh,
            ):
                streams = Streams(client, lb.url)
                placed = await streams.open(4, max_tokens=tokens)
                assert sorted(placed) == ["a", "a", "b", "b"], placed  # type: ignore[type-var]
                trickle: list[Outcome] = []
                stop = asyncio.Event()

                async def keep_asking() -> None:
                    while not stop.is_set() and len(trickle) < 300:
                        trickle.append(await llmclient.complete(fresh, lb.url))

                asker = asyncio.create_task(keep_asking())
                assert await asyncio.to_thread(lb.update, endpoints([b, c])) == "reloaded"

                async def reaches_c() -> None:
                    while await short(fresh, lb.url) != "c":
                        pass

                await asyncio.wait_for(reaches_c(), timeout=30)
                after_reload = [await short(fresh, lb.url) for _ in range(6)]
                broken = "this is not a config\n"
                assert await asyncio.to_thread(lb.update, endpoints([a]), broken) == "rejected"
                after_rejected = [await short(fresh, lb.url) for _ in range(4)]
                stop.set()
                await asyncio.wait_for(asker, timeout=30)
                finished = await asyncio.wait_for(asyncio.gather(*streams.tasks), timeout=60)
    assert all(o.ok and o.tokens == tokens for o in finished), finished
    assert sorted(o.server for o in finished) == ["a", "a", "b", "b"]  # type: ignore[type-var]
    assert trickle and all(o.ok for o in trickle), [o for o in trickle if not o.ok][:3]
    assert set(after_reload) == {"b", "c"}, after_reload
    assert set(after_rejected) == {"b", "c"}, after_rejected
    print(f"{engine}: {len(trickle)} requests during the reload, all served; 4 streams finished in full")


@pytest.mark.parametrize("engine", ENGINES)
async def test_no_ready_replica_answers_503_with_retry_after(engine: str, tmp_path: Path) -> None:
    """Rendered before any model replica is ready (no endpoints): a clear 503, not a hang or a 502."""
    with load_balancer(tmp_path, service_spec(engine, "least-conn"), []) as lb:
        async with llmclient.session() as client:
            outcome = await llmclient.complete(client, lb.url)
    assert outcome.status == 503, outcome
    assert outcome.headers.get("Retry-After") == "1"
    assert json.loads(outcome.body)["error"]["type"] == "service_unavailable"


async def test_haproxy_queue_timeout_answers_503_with_retry_after(
    fleet: list[Backend], tmp_path: Path
) -> None:
    """haproxy's queue is bounded in time: past ``timeouts.queueSeconds`` (here 500 ms, a fraction
    of a second as failing fast within a TTFT SLO needs) a waiting request gets 503."""
    wait_idle(fleet[:2])
    spec = service_spec("haproxy", "least-conn", maxConcurrencyPerReplica=1, timeouts={"queueSeconds": 0.5})
    with load_balancer(tmp_path, spec, fleet[:2]) as lb:
        async with llmclient.session() as client:
            # Two 100-token streams (4 s) take both slots; two more, sent once they hold them,
            # wait longer than 0.5 s.
            holders = [
                asyncio.create_task(llmclient.stream_completion(client, lb.url, 100)) for _ in range(2)
            ]
            await asyncio.sleep(0.5)
            waiters = await asyncio.gather(
                *(llmclient.stream_completion(client, lb.url, 100) for _ in range(2))
            )
            outcomes = [*await asyncio.gather(*holders), *waiters]
    served = [o for o in outcomes if o.ok]
    timed_out = [o for o in outcomes if o.status == 503]
    assert len(served) == 2 and len(timed_out) == 2, [(o.status, o.server, o.ttft, o.total) for o in outcomes]
    assert all(o.headers.get("Retry-After") == "1" for o in timed_out)
    assert all(json.loads(o.body)["error"]["code"] == 503 for o in timed_out)
    # turned away after the queue timeout, not when a holder's 4 s stream freed a slot
    assert all(o.total < 3.0 for o in timed_out), [o.total for o in timed_out]


async def test_haproxy_serves_first_attempts_before_retries(fleet: list[Backend], tmp_path: Path) -> None:
    """A retry (``x-stainless-retry-count`` > 0, as OpenAI's SDKs send it) that waits for a busy
    replica is served after a first attempt that arrived later: when the fleet is saturated the
    retry is late anyway, the first attempt can still meet its TTFT SLO."""
    wait_idle(fleet[:1])
    spec = service_spec("haproxy", "least-conn", maxConcurrencyPerReplica=1, timeouts={"queueSeconds": 10})
    with load_balancer(tmp_path, spec, fleet[:1]) as lb:
        async with llmclient.session() as client:
            holder = asyncio.create_task(llmclient.stream_completion(client, lb.url, 50))  # 2 s
            await asyncio.sleep(0.5)
            retry = asyncio.create_task(
                llmclient.stream_completion(client, lb.url, 5, headers={"X-Stainless-Retry-Count": "1"})
            )
            await asyncio.sleep(0.3)  # the retry is queued first
            first = asyncio.create_task(
                llmclient.stream_completion(client, lb.url, 5, headers={"X-Stainless-Retry-Count": "0"})
            )
            outcomes = await asyncio.gather(holder, retry, first)
    assert all(o.ok for o in outcomes), outcomes
    _, late, early = outcomes
    assert late.ttft is not None and early.ttft is not None
    # the first attempt got the slot when the holder finished; the retry only after it
    assert early.started + early.ttft < late.started + late.ttft, (early, late)


async def test_haproxy_cap_holds_for_requests_arriving_together(fleet: list[Backend], tmp_path: Path) -> None:
    """Two requests at once, two backends at ``maxConcurrencyPerReplica: 1``: one each, every time.

    With ``nbthread 2`` haproxy put both on one backend in 6 of 40 such pairs (both streams
    running at once, ``haproxy_server_max_sessions`` 2 against a limit of 1).
    """
    wait_idle(fleet[:2])
    spec = service_spec("haproxy", "least-conn", maxConcurrencyPerReplica=1, timeouts={"queueSeconds": 5})
    with load_balancer(tmp_path, spec, fleet[:2]) as lb:
        async with llmclient.session() as client:
            pairs = [
                await asyncio.gather(*(llmclient.stream_completion(client, lb.url, 5) for _ in range(2)))
                for _ in range(40)
            ]
        haproxy = lb.haproxy_metrics()
    assert all(o.ok for pair in pairs for o in pair)
    shared = [[(o.server, o.total) for o in pair] for pair in pairs if pair[0].server == pair[1].server]
    # a pair on one backend is fine only if the second waited for the first (5 tokens apart)
    overlapping = [p for p in shared if abs(p[0][1] - p[1][1]) < 4 * STEP]
    assert not overlapping, overlapping
    for backend in fleet[:2]:
        assert metric_sum(haproxy, "haproxy_server_max_sessions", proxy="model", server=backend.name) <= 1


@pytest.mark.parametrize("engine", ENGINES)
async def test_lb_pod_termination_finishes_open_streams(
    engine: str, fleet: list[Backend], tmp_path: Path
) -> None:
    """SIGTERM to run.sh (what the kubelet sends the LB container): open streams still finish.

    The script asks the balancer for a graceful stop (nginx QUIT, haproxy master USR1), waits
    for it and exits 0; the pod's termination grace period is ``readSeconds`` + 5 for this.
    """
    wait_idle(fleet)
    tokens = 60
    with supervised_balancer(tmp_path, service_spec(engine, "least-conn"), fleet) as lb:
        async with llmclient.session() as client:
            streams = Streams(client, lb.url)
            await streams.open(3, max_tokens=tokens)
            os.kill(lb.process.pid, signal.SIGTERM)  # the script only, as the kubelet does (PID 1)
            finished = await asyncio.wait_for(asyncio.gather(*streams.tasks), timeout=60)
        exit_code = await asyncio.to_thread(lb.process.proc.wait, 30)
        async with llmclient.session() as late_client:
            refused = await llmclient.complete(late_client, lb.url)
    assert all(o.ok and o.tokens == tokens for o in finished), finished
    assert exit_code == 0, lb.log()[-2000:]
    assert refused.status is None and refused.error, "the balancer stopped listening"
