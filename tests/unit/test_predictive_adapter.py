"""The operator's predictive adapter: interval gating, failure handling, and the floor reaching the HPA."""

from __future__ import annotations

from typing import Any

from llmfleet.predictive import NOT_CONFIGURED, LivePredictor, demand_sources
from llmfleet.reconcile import Observed, plan
from llmfleet.scaling.metrics import FleetMetrics, MetricsUnavailable
from llmfleet.validation import validate_service
from tests.specs import minimal, service

URL = "http://prometheus.monitoring:9090"


def llms(url: str | None = URL) -> dict[str, Any]:
    predictive: dict[str, Any] = {"enabled": True, "intervalSeconds": 60, "requestsPerSecondPerReplica": 2.0}
    if url:
        predictive["prometheusUrl"] = url
    obj = service(minimal("vllm", replicas={"min": 1, "max": 10}, autoscaling={"predictive": predictive}))
    obj["metadata"].update(uid="u", generation=1)
    return obj


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def busy_fleet(url: str, service: Any, now: float) -> FleetMetrics:
    return FleetMetrics(
        at=now,
        step_s=60.0,
        rate_history=tuple([10.0] * 120),
        request_rate=10.0,
        queue_depth=0.0,
        running=8.0,
        ttft_p95_s=0.2,
    )


def test_a_busy_fleet_raises_the_floor_and_the_hpa_follows() -> None:
    calls: list[str] = []

    def fetch(url: str, service: Any, now: float) -> FleetMetrics:
        calls.append(url)
        return busy_fleet(url, service, now)

    clock = Clock()
    predictor = LivePredictor(fetch=fetch, clock=clock)
    obj = llms()
    svc = validate_service(obj)
    outcome = predictor(svc, None, 1)
    assert outcome is not None and outcome.floor is not None and 5 <= outcome.floor <= 10
    assert (outcome.condition.status, outcome.condition.reason) == ("True", "ForecastApplied")
    assert outcome.status is not None and outcome.status.recommended_replicas == outcome.floor
    assert calls == [URL]

    clock.now += 30  # within intervalSeconds: the same answer, no query
    assert predictor(svc, None, 1) is outcome and calls == [URL]
    clock.now += 31
    assert predictor(svc, None, 1) is not outcome and calls == [URL, URL]

    todo = plan(obj, svc, Observed({}, ()), predictive=outcome, now="2026-01-01T00:00:00Z")
    hpa = next(m for m in todo.apply if m["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == outcome.floor
    assert todo.status is not None and todo.status["predictive"]["recommendedReplicas"] == outcome.floor
    assert ("Normal", "PredictiveFloorChanged") in {(e.type, e.reason) for e in todo.events}


def test_unreachable_prometheus_holds_the_last_floor() -> None:
    def down(url: str, service: Any, now: float) -> FleetMetrics:
        raise MetricsUnavailable("ConnectionError: refused")

    svc = validate_service(llms())
    outcome = LivePredictor(fetch=down, clock=Clock())(svc, {"recommendedReplicas": 4}, 4)
    assert outcome is not None and outcome.floor == 4
    assert (outcome.condition.status, outcome.condition.reason) == ("False", "PrometheusUnavailable")
    assert "predictive.prometheusUrl" in outcome.condition.message


def test_no_prometheus_anywhere_says_how_to_configure_one() -> None:
    svc = validate_service(llms(url=None))
    outcome = LivePredictor(None, fetch=busy_fleet, clock=Clock())(svc, None, 1)
    assert outcome is not None and outcome.floor is None
    assert (outcome.condition.status, outcome.condition.reason) == ("False", NOT_CONFIGURED)
    assert "--prometheus-url" in outcome.condition.message
    defaulted = LivePredictor(URL, fetch=busy_fleet, clock=Clock())(svc, None, 1)
    assert defaulted is not None and defaulted.condition.reason == "ForecastApplied"


def test_demand_is_read_closest_to_the_engines_first() -> None:
    def sources(**overrides: Any) -> list[tuple[str, str]]:
        return demand_sources(validate_service(service(minimal("vllm", **overrides), name="chat")))

    assert sources(loadBalancer={"engine": "haproxy"}) == [("haproxy", 'namespace="ml",service="chat"')]
    assert sources(loadBalancer={"engine": "nginx"}, cache={"enabled": True}) == [
        ("nginx", 'namespace="ml",service="chat-lb"'),  # nginx exports no counter: skipped
        ("gateway", 'namespace="ml",service="chat"'),
    ]
