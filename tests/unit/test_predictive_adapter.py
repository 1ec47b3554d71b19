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

    lb = 'namespace="ml",app_kubernetes_io_instance="chat",app_kubernetes_io_component="lb"'
    gateway = 'namespace="ml",app_kubernetes_io_instance="chat",app_kubernetes_io_component="gateway"'
    assert sources(loadBalancer={"engine": "haproxy"}) == [("haproxy", lb)]
    # nginx exports no counter (fetch skips it); the caching gateway in front of it does
    assert sources(loadBalancer={"engine": "nginx"}, cache={"enabled": True}) == [
        ("nginx", lb),
        ("gateway", gateway),
    ]


def test_demand_selectors_match_the_rendered_pods_as_a_pod_scrape_labels_them() -> None:
    """The kubernetes-pods job maps each pod label to a Prometheus label (labelmap: every
    character outside [a-zA-Z0-9_] becomes '_'); each selector must match exactly one of the
    rendered, scrape-annotated Deployments: the one that counts that demand."""
    import re

    from llmfleet.render import render_children
    from llmfleet.render.common import RenderContext

    obj = validate_service(
        service(minimal("vllm", loadBalancer={"engine": "haproxy"}, cache={"enabled": True}))
    )
    scraped = {
        m["metadata"]["name"]: {
            "namespace": obj.namespace,
            **{
                re.sub("[^a-zA-Z0-9_]", "_", k): v
                for k, v in m["spec"]["template"]["metadata"]["labels"].items()
            },
        }
        for m in render_children(obj.spec, RenderContext(name=obj.name, namespace=obj.namespace))
        if m["kind"] == "Deployment"
        and m["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/scrape") == "true"
    }
    found = {}
    for source, sel in demand_sources(obj):
        wanted = {key: value.strip('"') for key, value in (pair.split("=", 1) for pair in sel.split(","))}
        found[source] = [name for name, labels in scraped.items() if wanted.items() <= labels.items()]
    assert found == {"haproxy": ["chat-lb"], "gateway": ["chat-gateway"]}
