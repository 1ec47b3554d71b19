"""Live path: PromQL per engine, metrics parsing with a fake client, recommend()'s safety rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmfleet.scaling import live
from llmfleet.scaling.live import LiveConfig, LiveState, recommend
from llmfleet.scaling.metrics import ENGINES, FleetMetrics, MetricsUnavailable, fetch, queries_for, selector

CFG = LiveConfig(
    min_replicas=2, max_replicas=30, capacity_rps=5.0, headroom=0.2, horizon_s=600, ttft_slo_s=1.0
)
NOW = 1_700_000_000.0


def metrics(history: list[float] | np.ndarray, queue: float = 0.0, ttft: float = 0.2) -> FleetMetrics:
    history = tuple(float(x) for x in history)
    return FleetMetrics(
        at=NOW,
        step_s=60.0,
        rate_history=history,
        request_rate=history[-1] if history else None,
        queue_depth=queue,
        running=10.0,
        ttft_p95_s=ttft,
    )


def test_every_engine_has_queries_or_says_what_is_missing() -> None:
    for name, q in ENGINES.items():
        for signal in ("request_rate", "queue_depth", "ttft_p95"):
            if getattr(q, signal) is None:
                assert any(u.startswith((signal, "all")) for u in q.unavailable), (name, signal)
    vllm = queries_for("vllm", selector("ml", "chat-model"))
    assert vllm.queue_depth == 'sum(vllm:num_requests_waiting{namespace="ml",service="chat-model"})'
    assert vllm.ttft_p95 is not None and "vllm:time_to_first_token_seconds_bucket" in vllm.ttft_p95
    assert queries_for("tgi", "x").queue_depth == "sum(tgi_queue_size{x})"
    assert queries_for("llamacpp", "x").queue_depth == "sum(llamacpp:requests_deferred{x})"
    with pytest.raises(ValueError):
        queries_for("triton", "x")


class FakePrometheus:
    def __init__(self, rate: float = 12.0, fail: bool = False) -> None:
        self.rate, self.fail = rate, fail
        self.range_calls: list[tuple[str, datetime, datetime, str]] = []

    def custom_query_range(
        self, query: str, start_time: datetime, end_time: datetime, step: str, timeout: int
    ) -> list[dict[str, Any]]:
        if self.fail:
            raise ConnectionError("connection refused")
        self.range_calls.append((query, start_time, end_time, step))
        t0, t1 = start_time.timestamp(), end_time.timestamp()
        return [{"metric": {}, "values": [[t, str(self.rate)] for t in np.arange(t0, t1 + 1, 60.0)]}]

    def custom_query(self, query: str, params: dict[str, Any], timeout: int) -> list[dict[str, Any]]:
        if "waiting" in query:
            return [{"metric": {}, "value": [params["time"], "7"]}]
        if "histogram_quantile" in query:
            return [{"metric": {}, "value": [params["time"], "NaN"]}]  # no traffic in the window
        return [{"metric": {}, "value": [params["time"], str(self.rate)]}]


def test_fetch_chunks_long_ranges_and_parses_values() -> None:
    client = FakePrometheus()
    result = fetch(client, "vllm", 'job="x"', now=NOW, lookback_s=8 * 86400)
    assert len(client.range_calls) == 3  # 11,520 points > 10,000 per query, then the burst series
    query, start, end, step = client.range_calls[-1]
    assert query == 'sum(rate(vllm:request_success_total{job="x"}[30s]))' and step == "15s"
    assert (end - start).total_seconds() == 1800 - 15
    assert result.burst_step_s == 15.0 and result.burst_history[0] == 12.0
    assert len(result.rate_history) == 8 * 1440
    assert result.rate_history[-1] == 12.0 and result.request_rate == 12.0
    assert result.queue_depth == 7.0
    assert result.ttft_p95_s is None  # NaN quantile -> unknown, not a breach
    assert result.at % 60 == 0


def test_fetch_raises_metrics_unavailable_when_prometheus_is_down() -> None:
    with pytest.raises(MetricsUnavailable, match="connection refused"):
        fetch(FakePrometheus(fail=True), "vllm", "x", now=NOW)


def test_fetch_for_an_engine_without_metrics_does_not_query() -> None:
    result = fetch(FakePrometheus(fail=True), "ollama", "x", now=NOW)
    assert result.rate_history == () and result.request_rate is None


def test_recommend_forecasts_and_converts_to_replicas() -> None:
    rec = recommend(CFG, metrics(np.full(120, 20.0)), None, NOW, ready_replicas=5)
    assert rec.healthy and rec.condition_reason == live.FORECAST_APPLIED
    assert rec.replicas == 5  # 20 req/s, flat history (band 1.0): 20 * 1.2 / 5 = 4.8 -> 5
    assert rec.forecast_rps == pytest.approx(20.0, rel=0.05)
    assert rec.reason.startswith("floor 5: forecast 20 req/s")


def test_recommend_clamps_to_min_and_max() -> None:
    assert recommend(CFG, metrics(np.full(120, 0.5)), None, NOW, 2).replicas == 2
    assert recommend(CFG, metrics(np.full(120, 900.0)), None, NOW, 2).replicas == 30


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        (MetricsUnavailable("ConnectionError: refused"), live.PROMETHEUS_UNAVAILABLE),
        (None, live.PROMETHEUS_UNAVAILABLE),
        (FleetMetrics(NOW, 60.0, (), None, None, None, None), live.NO_METRICS),
        (
            FleetMetrics(NOW, 60.0, (), None, 3.0, 1.0, None, ("request_rate: none",)),
            live.METRICS_UNSUPPORTED,
        ),
        (metrics([5.0, 5.0]), live.NO_METRICS),  # too little history
    ],
)
def test_without_usable_metrics_the_last_floor_is_held(observed: Any, reason: str) -> None:
    previous = LiveState(floor=9)
    rec = recommend(CFG, observed, previous, NOW, ready_replicas=9)
    assert (rec.replicas, rec.healthy, rec.condition_reason) == (9, False, reason)
    assert rec.reason.startswith("holding floor 9")
    first = recommend(CFG, observed, None, NOW, ready_replicas=0)
    assert first.replicas == CFG.min_replicas  # never below replicas.min, even with nothing known


def test_held_floor_is_clamped_to_a_changed_spec() -> None:
    rec = recommend(CFG, MetricsUnavailable("down"), LiveState(floor=50), NOW, 9)
    assert rec.replicas == 30
    rec = recommend(LiveConfig(min_replicas=12, capacity_rps=5.0), None, LiveState(floor=3), NOW, 3)
    assert rec.replicas == 12


def test_capacity_is_learned_from_a_saturated_fleet() -> None:
    config = LiveConfig(min_replicas=1, max_replicas=100, headroom=0.0, ttft_slo_s=1.0)
    assert (
        recommend(config, metrics(np.full(60, 0.0)), None, NOW, 4).condition_reason == live.CAPACITY_UNKNOWN
    )
    # 40 req/s on 4 replicas with a deep queue: one replica serves ~10 req/s
    saturated = recommend(config, metrics(np.full(60, 40.0), queue=200.0), None, NOW, 4)
    assert saturated.state.learned_capacity_rps == pytest.approx(10.0)
    assert saturated.replicas >= 5  # 40 req/s + draining 200 waiting needs more than 4
    # an unsaturated fleet only raises the lower bound
    calm = recommend(config, metrics(np.full(60, 12.0)), saturated.state, NOW + 60, 4)
    assert calm.state.learned_capacity_rps == pytest.approx(10.0)
    assert calm.state.capacity_lower_bound_rps == pytest.approx(3.0)


def test_state_round_trip_lowers_the_floor_only_after_sustained_slack() -> None:
    rec = recommend(CFG, metrics(np.full(120, 100.0)), None, NOW, 24)
    high = rec.replicas
    floors = []
    state = rec.state
    for i in range(1, 15):
        rec = recommend(CFG, metrics(np.full(120, 20.0)), state, NOW + 60 * i, high)
        state = rec.state
        floors.append(rec.replicas)
    assert floors[0] == high  # not at once
    assert floors[-1] < high  # but eventually
    assert floors == sorted(floors, reverse=True)


def test_status_payload_and_resume_after_restart() -> None:
    rec = recommend(CFG, metrics(np.full(120, 20.0)), None, NOW, ready_replicas=5)
    status = rec.status("2026-01-01T00:00:00Z")
    assert status == {
        "forecastRequestsPerSecond": 20.0,
        "recommendedReplicas": 5,
        "reason": rec.reason,
        "updatedAt": "2026-01-01T00:00:00Z",
    }
    resumed = recommend(CFG, metrics(np.full(120, 20.0)), LiveState.resume(12), NOW, ready_replicas=12)
    assert resumed.replicas == 12  # the restored floor holds: no window of evidence yet
    assert LiveState.resume(None).floor == 0


def test_config_from_the_api_spec() -> None:
    yaml = pytest.importorskip("yaml")
    from llmfleet import api

    sample = Path(__file__).parents[2] / "manifests" / "samples" / "vllm-1gpu-cached.yaml"
    if not sample.exists():
        pytest.skip("sample manifest not present")
    spec = api.LLMServiceSpec.model_validate(yaml.safe_load(sample.read_text())["spec"])
    config = LiveConfig.from_spec(spec)
    assert config.min_replicas == spec.replicas.min
    # nginx with a concurrency cap fails fast; the sample leaves the margins to their defaults
    assert spec.balancer_fails_fast() and spec.autoscaling.predictive.headroom is None
    assert (config.headroom, config.band_quantile) == (live.FAIL_FAST_MARGINS.headroom, 0.8)
    rec = recommend(spec, MetricsUnavailable("down"), None, NOW, ready_replicas=1)
    api.PredictiveStatus.model_validate(rec.status("2026-01-01T00:00:00Z"))


def test_recommend_provisions_for_observed_sub_minute_bursts() -> None:
    history = np.full(120, 20.0)
    steady = replace_burst(metrics(history), np.full(120, 20.0))
    # same 20 req/s per minute, but all of it in one 15 s step of each minute
    bursty = replace_burst(metrics(history), np.tile([80.0, 0.0, 0.0, 0.0], 30))
    calm = recommend(CFG, steady, None, NOW, ready_replicas=5)
    burst = recommend(CFG, bursty, None, NOW, ready_replicas=5)
    assert calm.replicas == 5 and "burst x1.00" in calm.reason
    assert burst.replicas > 2 * calm.replicas
    no_burst = recommend(replace(CFG, burst_quantile=None), bursty, None, NOW, ready_replicas=5)
    assert no_burst.replicas == 5  # the linear rule, as before


def replace_burst(m: FleetMetrics, per_step_rate: np.ndarray) -> FleetMetrics:
    return replace(m, burst_history=tuple(float(x) for x in per_step_rate), burst_step_s=15.0)


def test_fetch_reads_demand_at_haproxy_and_falls_back_to_the_engines() -> None:
    class TwoCounters(FakePrometheus):
        """haproxy received 20 req/s and answered 6 with 503; the engines completed 14."""

        def __init__(self, haproxy_scraped: bool) -> None:
            super().__init__(rate=14.0)
            self.haproxy_scraped = haproxy_scraped

        def value(self, query: str) -> float | None:
            if "haproxy_frontend_http_responses_total" in query:
                return 6.0 if self.haproxy_scraped else None
            if "haproxy_frontend_http_requests_total" in query:
                return 20.0 if self.haproxy_scraped else None
            return self.rate

        def custom_query_range(
            self, query: str, start_time: datetime, end_time: datetime, step: str, timeout: int
        ) -> list[dict[str, Any]]:
            value = self.value(query)
            return [] if value is None else [{"metric": {}, "values": [[start_time.timestamp(), str(value)]]}]

        def custom_query(self, query: str, params: dict[str, Any], timeout: int) -> list[dict[str, Any]]:
            value = self.value(query) if "waiting" not in query else 0.0
            return [] if value is None else [{"metric": {}, "value": [params["time"], str(value)]}]

    lb = ("haproxy", selector("ml", "chat"))
    seen = fetch(TwoCounters(True), "vllm", selector("ml", "chat-model"), now=NOW, demand_sources=[lb])
    assert (seen.demand_source, seen.request_rate, seen.served_rate, seen.rejected_rate) == (
        "haproxy",
        20.0,
        14.0,
        6.0,
    )
    assert seen.rate_history[0] == 20.0 and seen.burst_history[0] == 20.0
    blind = fetch(TwoCounters(False), "vllm", selector("ml", "chat-model"), now=NOW, demand_sources=[lb])
    assert (blind.demand_source, blind.request_rate, blind.served_rate, blind.rejected_rate) == (
        "engine",
        14.0,
        14.0,
        None,
    )
    no_counter = [("nginx", "y")]  # nginx exports no request counter
    nginx = fetch(TwoCounters(True), "vllm", "x", now=NOW, demand_sources=no_counter)
    assert nginx.demand_source == "engine" and nginx.request_rate == 14.0


def test_fetch_reads_demand_at_the_caching_gateway_in_front_of_nginx() -> None:
    class Gateway(FakePrometheus):
        """The gateway sent 20 req/s upstream, 5 of them answered 503; the engines completed 15."""

        def custom_query_range(
            self, query: str, start_time: datetime, end_time: datetime, step: str, timeout: int
        ) -> list[dict[str, Any]]:
            rate = 20.0 if "llmfleet_gateway_upstream_requests_total" in query else 15.0
            return [{"metric": {}, "values": [[start_time.timestamp(), str(rate)]]}]

        def custom_query(self, query: str, params: dict[str, Any], timeout: int) -> list[dict[str, Any]]:
            if 'status=~"5..|error"' in query:
                value = 5.0
            elif "llmfleet_gateway_upstream_requests_total" in query:
                value = 20.0
            else:
                value = 15.0
            return [{"metric": {}, "value": [params["time"], str(value)]}]

    sources = [("nginx", selector("ml", "chat-lb")), ("gateway", selector("ml", "chat"))]
    seen = fetch(Gateway(), "vllm", selector("ml", "chat-model"), now=NOW, demand_sources=sources)
    assert (seen.demand_source, seen.request_rate, seen.served_rate, seen.rejected_rate) == (
        "gateway",
        20.0,
        15.0,
        5.0,
    )


def test_a_balancer_turning_requests_away_raises_the_floor_to_the_demand() -> None:
    config = replace(CFG, headroom=0.0, burst_quantile=None, fails_fast=True, band_quantile=0.8)
    quiet = replace(metrics(np.full(120, 20.0)), demand_source="haproxy", served_rate=20.0, rejected_rate=0.0)
    # the level jumped to 40 req/s within the last minute: the history does not show it yet
    jumped = replace(quiet, request_rate=40.0, served_rate=25.0, rejected_rate=15.0)
    calm = recommend(config, quiet, None, NOW, ready_replicas=5)
    raised = recommend(config, jumped, None, NOW, ready_replicas=5)
    assert calm.replicas == 4  # 20 req/s at 5 per replica
    assert raised.replicas == 8  # the 40 req/s received, not the 25 served
    assert "balancer turning away 15 req/s (37.5%) of 40" in raised.reason
    assert "demand from haproxy (rejected requests included)" in raised.reason
    # capacity is learned from what was served, never from the demand turned away
    learned = recommend(replace(config, capacity_rps=None), jumped, None, NOW, ready_replicas=5)
    assert learned.state.capacity_lower_bound_rps == pytest.approx(25.0 / 5)


@pytest.mark.parametrize(
    ("load_balancer", "slo_ms", "fails_fast"),
    [
        ({"engine": "nginx"}, None, False),  # no cap: the engines queue everything
        ({"engine": "nginx", "maxConcurrencyPerReplica": 64}, None, True),  # nginx has no queue
        ({"engine": "haproxy", "maxConcurrencyPerReplica": 64}, None, False),  # 30 s queue
        (
            {"engine": "haproxy", "maxConcurrencyPerReplica": 64, "timeouts": {"queueSeconds": 0.5}},
            None,
            True,
        ),
        (
            {"engine": "haproxy", "maxConcurrencyPerReplica": 64, "timeouts": {"queueSeconds": 0.5}},
            400,
            False,
        ),
        ({"engine": "haproxy", "maxConcurrencyPerReplica": 64, "timeouts": {"queueSeconds": 2}}, 3000, True),
    ],
)
def test_failing_fast_picks_the_margins_that_suit_it(
    load_balancer: dict[str, Any], slo_ms: int | None, fails_fast: bool
) -> None:
    from llmfleet import api
    from tests.specs import minimal

    overrides: dict[str, Any] = {"loadBalancer": load_balancer}
    if slo_ms is not None:
        overrides["slo"] = {"ttftP95Ms": slo_ms}
    spec = api.LLMServiceSpec.model_validate(minimal("vllm", **overrides))
    assert spec.balancer_fails_fast() is fails_fast
    config = LiveConfig.from_spec(spec)
    margins = live.FAIL_FAST_MARGINS if fails_fast else live.QUEUEING_MARGINS
    assert (config.headroom, config.burst_quantile, config.band_quantile) == (
        margins.headroom,
        margins.burst_quantile,
        margins.band_quantile,
    )
    chosen = minimal("vllm", **overrides, autoscaling={"predictive": {"headroom": 0.3, "bandQuantile": 0.95}})
    explicit = LiveConfig.from_spec(api.LLMServiceSpec.model_validate(chosen))
    assert (explicit.headroom, explicit.band_quantile) == (0.3, 0.95)  # what the user set wins
