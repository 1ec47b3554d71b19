"""The live predictive scaler against a real Prometheus scraping real sim-servers.

Two sim-servers (vLLM metric names, 2 sequence slots, ~0.5 s per request: ~4 req/s each) get
an open-loop load rising from 1 to 12 req/s. Every 2 s the test does what the operator's
reconcile does: ``metrics.fetch`` through prometheus-api-client, then ``live.recommend``.
Asserted: the floor rises above the 2 running replicas before the servers' waiting queue
builds (the forecast saw the rate climbing), and once Prometheus is stopped the next
recommendation holds that floor with ``PredictiveScaling`` False. Order of events only, no
durations.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llmfleet.render.common import Endpoint
from llmfleet.scaling import live
from llmfleet.scaling.live import LiveConfig, LiveState, recommend
from llmfleet.scaling.metrics import MetricsUnavailable, connect, fetch, pod_selector, selector
from tests.support.loadbalancer import load_balancer, service_spec
from tests.support.process import wait_until
from tests.support.prometheus import run_prometheus, scalar
from tests.support.simserver import SimServer, sim_server

pytestmark = [pytest.mark.realservers, pytest.mark.slow, pytest.mark.timeout(300)]

SELECTOR = selector("test", "chat-model")
# haproxy's request rate at its lowest over the last 10 s: steady once every 10 s window is full
HAPROXY_RATE = 'min_over_time(sum(rate(haproxy_frontend_http_requests_total{proxy="llm"}[10s]))[10s:1s])'
LB_POD_LABELS = {"app_kubernetes_io_instance": "chat", "app_kubernetes_io_component": "lb"}
PER_REPLICA_RPS = 4.0  # 2 slots / (10 tokens * 0.05 s)
CONFIG = LiveConfig(
    min_replicas=1, max_replicas=10, capacity_rps=PER_REPLICA_RPS, headroom=0.2, horizon_s=30, interval_s=2
)


class RisingLoad:
    """Open-loop arrivals at a rate rising linearly from ``start`` to ``end`` req/s."""

    def __init__(self, urls: list[str], start: float, end: float, seconds: float) -> None:
        self.urls, self.start, self.end, self.seconds = urls, start, end, seconds
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=64)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []
        self.statuses: list[int] = []

    def rate(self, elapsed: float) -> float:
        return self.start + (self.end - self.start) * min(elapsed / self.seconds, 1.0)

    def _send(self, url: str) -> None:
        body = {"model": "sim-model", "prompt": "hello", "max_tokens": 10}
        try:
            self.statuses.append(httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code)
        except httpx.HTTPError as error:
            self.errors.append(repr(error))

    def _run(self) -> None:
        began, n = time.monotonic(), 0
        while not self.stop.is_set():
            self.pool.submit(self._send, self.urls[n % len(self.urls)])
            n += 1
            self.stop.wait(1.0 / self.rate(time.monotonic() - began))

    def __enter__(self) -> RisingLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)


def waiting(servers: list[SimServer]) -> float:
    return sum(s.metric("vllm:num_requests_waiting") for s in servers)


def test_floor_rises_before_the_queue_builds_and_holds_without_prometheus(tmp_path: Path) -> None:
    flags = {"max_num_seqs": 2, "decode_base_seconds": 0.05, "decode_per_seq_seconds": 0.0}
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(sim_server(tmp_path, id=f"s{i}", **flags)) for i in range(2)]
        prom = stack.enter_context(contextlib.ExitStack())
        url = prom.enter_context(
            run_prometheus(
                tmp_path, [s.port for s in servers], labels={"namespace": "test", "service": "chat-model"}
            )
        )
        client = connect(url, timeout_s=5)
        wait_until(
            lambda: bool(client.custom_query("sum(up) == 2")), 60, interval=0.5, what="both targets up"
        )
        state: LiveState | None = None
        raised_at = queue_at = None
        floors: list[tuple[float, int, str]] = []
        with RisingLoad([s.url for s in servers], start=1.0, end=12.0, seconds=60.0):
            began = time.monotonic()
            while time.monotonic() - began < 90 and (raised_at is None or queue_at is None):
                if queue_at is None and waiting(servers) >= 3:
                    queue_at = time.monotonic()
                now = time.time()
                metrics = fetch(
                    client, "vllm", SELECTOR, now=now, lookback_s=600, step_s=2, rate_window="10s"
                )
                rec = recommend(CONFIG, metrics, state, now, ready_replicas=2)
                state = rec.state
                floors.append((time.monotonic() - began, rec.replicas, rec.reason))
                if raised_at is None and rec.healthy and rec.replicas > 2:
                    raised_at = time.monotonic()
                time.sleep(1.0)
        assert raised_at is not None, f"the floor never rose above 2: {floors[-5:]}"
        assert queue_at is not None, "the load never exceeded two replicas: the test proves nothing"
        assert raised_at < queue_at, f"queue built first: {floors}"
        assert state is not None
        held = state.floor
        prom.close()  # Prometheus stops
        try:
            down = fetch(client, "vllm", SELECTOR, now=time.time(), lookback_s=600, step_s=2)
        except MetricsUnavailable as error:
            rec = recommend(CONFIG, error, state, time.time(), ready_replicas=2)
        else:
            pytest.fail(f"Prometheus answered after being stopped: {down}")
        assert (rec.replicas, rec.healthy, rec.condition_reason) == (held, False, live.PROMETHEUS_UNAVAILABLE)
        assert rec.reason.startswith(f"holding floor {held}")


def test_demand_is_read_at_a_balancer_that_fails_fast(tmp_path: Path) -> None:
    """haproxy with a 200 ms queue in front of two sim-servers (~4 req/s each) gets 16 req/s:
    it turns about half away with 503, which the engines never count. ``fetch`` with the balancer
    reads the 16 req/s at haproxy's frontend and the ~8 req/s served at the engines; the floor
    asks for the demand, not for what the saturated fleet managed to serve."""
    flags = {"max_num_seqs": 2, "decode_base_seconds": 0.05, "decode_per_seq_seconds": 0.0}
    spec = service_spec("haproxy", "least-conn", maxConcurrencyPerReplica=2, timeouts={"queueSeconds": 0.2})
    assert spec.balancer_fails_fast()
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(sim_server(tmp_path, id=f"s{i}", **flags)) for i in range(2)]
        lb = stack.enter_context(
            load_balancer(
                tmp_path, spec, [Endpoint("127.0.0.1", s.port, f"s{i}") for i, s in enumerate(servers)]
            )
        )
        url = stack.enter_context(
            run_prometheus(
                tmp_path,
                [s.port for s in servers],
                labels={"namespace": "test", "service": "chat-model"},
                # as the kubernetes-pods job labels the balancer pods (their labels, labelmap'd)
                more_jobs=[("lb", [lb.status_port], {"namespace": "test", **LB_POD_LABELS})],
            )
        )
        client = connect(url, timeout_s=5)
        wait_until(lambda: bool(client.custom_query("sum(up) == 3")), 60, interval=0.5, what="targets up")
        lb_selector = pod_selector("test", "chat", "lb")
        with RisingLoad([lb.url], start=16.0, end=16.0, seconds=1.0) as load:
            wait_until(
                lambda: scalar(client, HAPROXY_RATE) > 13 and load.statuses.count(503) > 20,
                60,
                interval=1.0,
                what="haproxy counting a steady ~16 req/s and turning some away",
            )
            now = time.time()
            through_lb = fetch(
                client, "vllm", SELECTOR, now=now, lookback_s=120, step_s=2, rate_window="10s",
                demand_sources=[("haproxy", lb_selector)],
            )  # fmt: skip
            engine_only = fetch(
                client, "vllm", SELECTOR, now=now, lookback_s=120, step_s=2, rate_window="10s"
            )
            unscraped = fetch(
                client, "vllm", SELECTOR, now=now, lookback_s=120, step_s=2, rate_window="10s",
                demand_sources=[("haproxy", pod_selector("test", "not-scraped", "lb"))],
            )  # fmt: skip
        rejected = load.statuses.count(503) / max(len(load.statuses), 1)
    assert 0.25 < rejected < 0.75, load.statuses  # the test is about a fleet short of capacity
    assert through_lb.demand_source == "haproxy"
    assert through_lb.request_rate is not None and through_lb.served_rate is not None
    assert through_lb.request_rate > 13.0  # what clients sent
    assert through_lb.served_rate < 9.0  # what two replicas of ~4 req/s could take
    assert through_lb.rejected_rate is not None and through_lb.rejected_rate > 4.0  # its 503s
    assert engine_only.demand_source == "engine" and engine_only.request_rate is not None
    assert engine_only.request_rate < 9.0
    assert unscraped.demand_source == "engine"  # no haproxy series: the engines' counter, not nothing
    assert unscraped.rate_history and max(unscraped.rate_history) < 9.5
    config = LiveConfig(min_replicas=1, max_replicas=100, capacity_rps=PER_REPLICA_RPS, headroom=0.0,
                        horizon_s=30, interval_s=2, burst_quantile=None, fails_fast=True)  # fmt: skip
    floor = recommend(config, through_lb, None, now, ready_replicas=2)
    blind = recommend(config, engine_only, None, now, ready_replicas=2)
    # the load ramped up inside the history, so both forecasts extrapolate; the demand is twice as high
    assert floor.replicas > blind.replicas, (floor.reason, blind.reason)
    assert "demand from haproxy" in floor.reason
    assert "rejections are not counted" in blind.reason
