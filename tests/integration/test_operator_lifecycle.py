"""The real operator (kopf) against the API emulator, or a kind cluster with ``--e2e``.

Each test gets a fresh namespace and its own operator watching only that namespace. Tests that
need emulator extras (write counts, writing a Deployment's status that a real cluster's
controllers would overwrite) take the ``apiserver`` fixture and are skipped with ``--e2e``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulator.apiserver import ApiServer
from tests.emulator.client import Kube
from tests.integration.operator_harness import (
    LLMS,
    children,
    condition,
    has_condition,
    llmservice,
    names,
    running_operator,
    set_deployment_ready,
    wait_for_passes,
    wait_until,
    write_endpoint_slice,
)

BASE_CHILDREN = {
    ("Service", "chat-model"),
    ("Deployment", "chat-model"),
    ("PodDisruptionBudget", "chat-model"),
    ("HorizontalPodAutoscaler", "chat"),
    ("ConfigMap", "chat-lb"),
    ("Deployment", "chat-lb"),
    ("Service", "chat"),
}
CACHE_CHILDREN = {
    ("ConfigMap", "chat-cache"),
    ("Service", "chat-cache"),
    ("Deployment", "chat-cache"),
    ("Service", "chat-lb"),
    ("Deployment", "chat-gateway"),
    ("NetworkPolicy", "chat-cache"),
    ("NetworkPolicy", "chat-lb"),
    ("Secret", "chat-cache-auth"),
}


@pytest.fixture()
def operator(kube: Kube) -> Iterator[None]:
    with running_operator(kube, drift_interval=2.0):
        yield


def create(kube: Kube, cache: bool = False) -> None:
    kube.create(llmservice("chat", cache=cache), namespace=kube.namespace)


def test_create_makes_every_child_with_owner_references_and_labels(kube: Kube, operator: None) -> None:
    create(kube, cache=True)
    wait_until(lambda: names(children(kube, "chat")) == BASE_CHILDREN | CACHE_CHILDREN, "every child")
    owner = kube.get(*LLMS, "chat")
    for child in children(kube, "chat"):
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
            ("LLMService", "chat", owner["metadata"]["uid"], True)
        ], child["metadata"]["name"]
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "chat"
        assert labels["app.kubernetes.io/part-of"] == "llmfleet"
    obj = kube.wait_for(*LLMS, "chat", lambda o: (o.get("status") or {}).get("observedGeneration") == 1)
    status = obj["status"]
    assert status["endpoint"] == f"http://chat.{kube.namespace}.svc:80"
    assert status["model"] == "qwen"
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "ModelAvailable",
        "LoadBalancerAvailable",
        "CacheAvailable",
        "Autoscaling",
    }
    assert "llmfleet.io/finalizer" in obj["metadata"]["finalizers"]


def test_spec_update_updates_children_and_observed_generation(kube: Kube, operator: None) -> None:
    create(kube)
    kube.wait_for("apps/v1", "Deployment", "chat-lb", lambda d: d["spec"]["replicas"] == 1)
    kube.patch(*LLMS, "chat", {"spec": {"loadBalancer": {"replicas": 2}, "replicas": {"min": 2, "max": 2}}})
    kube.wait_for("apps/v1", "Deployment", "chat-lb", lambda d: d["spec"]["replicas"] == 2)
    # min == max: no HPA any more, the Deployment carries the replica count itself.
    kube.wait_for("apps/v1", "Deployment", "chat-model", lambda d: d["spec"].get("replicas") == 2)
    kube.wait_gone("autoscaling/v2", "HorizontalPodAutoscaler", "chat")
    obj = kube.wait_for(*LLMS, "chat", lambda o: (o.get("status") or {}).get("observedGeneration") == 2)
    assert condition(obj, "Autoscaling")["reason"] == "FixedReplicas"  # type: ignore[index]


def test_noop_resync_sends_zero_writes(apiserver: ApiServer, kube: Kube, operator: None) -> None:
    create(kube, cache=True)
    wait_until(lambda: names(children(kube, "chat")) == BASE_CHILDREN | CACHE_CHILDREN, "every child")
    kube.wait_for(*LLMS, "chat", lambda o: (o.get("status") or {}).get("observedGeneration") == 1)
    wait_for_passes(2, "timer")  # let the creation's child events settle
    apiserver.reset_counters()
    wait_for_passes(2, "timer")
    assert apiserver.count_writes() == 0, apiserver.write_log


def test_child_deleted_or_edited_by_hand_is_restored(kube: Kube, operator: None) -> None:
    create(kube)
    model = kube.wait_for("apps/v1", "Deployment", "chat-model", lambda d: True)
    image = model["spec"]["template"]["spec"]["containers"][0]["image"]

    kube.delete("apps/v1", "Deployment", "chat-model")
    kube.wait_for(
        "apps/v1", "Deployment", "chat-model", lambda d: d["metadata"]["uid"] != model["metadata"]["uid"]
    )

    kube.patch(
        "apps/v1",
        "Deployment",
        "chat-model",
        {"spec": {"template": {"spec": {"containers": [{"name": "engine", "image": "hand/edited:1"}]}}}},
        type="strategic",
    )
    kube.wait_for(
        "apps/v1",
        "Deployment",
        "chat-model",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"] == image,
    )

    config = kube.get("v1", "ConfigMap", "chat-lb")
    kube.patch("v1", "ConfigMap", "chat-lb", {"data": {"nginx.conf": "# broken by hand\n"}})
    kube.wait_for(
        "v1", "ConfigMap", "chat-lb", lambda c: c["data"]["nginx.conf"] == config["data"]["nginx.conf"]
    )


def test_cache_disabled_removes_its_children(kube: Kube, operator: None) -> None:
    create(kube, cache=True)
    wait_until(lambda: names(children(kube, "chat")) >= CACHE_CHILDREN, "the cache children")
    kube.patch(*LLMS, "chat", {"spec": {"cache": {"enabled": False}}})
    wait_until(lambda: names(children(kube, "chat")) == BASE_CHILDREN, "only the base children")
    public = kube.get("v1", "Service", "chat")
    assert public["spec"]["selector"]["app.kubernetes.io/component"] == "lb"


def test_child_status_drives_conditions_printer_fields_and_the_balancer(
    apiserver: ApiServer, kube: Kube
) -> None:
    # No drift timer within the test: only the watches on Deployments and EndpointSlices can move the status.
    with running_operator(kube, drift_interval=600):
        _child_status_scenario(kube)


def _child_status_scenario(kube: Kube) -> None:
    create(kube)
    kube.wait_for(*LLMS, "chat", has_condition("ModelAvailable", "False"))
    set_deployment_ready(kube, "chat-model", ready=2, desired=2)
    set_deployment_ready(kube, "chat-lb", ready=1)
    obj = kube.wait_for(*LLMS, "chat", has_condition("LoadBalancerAvailable", "False", "NoReadyEndpoints"))
    assert obj["status"]["replicas"]["display"] == "2/2"

    write_endpoint_slice(kube, "chat-model", [("10.1.0.1", True), ("10.1.0.2", True), ("10.1.0.3", False)])
    obj = kube.wait_for(*LLMS, "chat", has_condition("Ready", "True", "AllComponentsReady"))
    assert obj["status"]["phase"] == "Ready"
    conf = kube.get("v1", "ConfigMap", "chat-lb")["data"]["nginx.conf"]
    assert "10.1.0.1:8080" in conf and "10.1.0.2:8080" in conf and "10.1.0.3" not in conf
    ready_since = condition(obj, "Ready")["lastTransitionTime"]  # type: ignore[index]

    write_endpoint_slice(kube, "chat-model", [("10.1.0.2", True)])
    kube.wait_for("v1", "ConfigMap", "chat-lb", lambda c: "10.1.0.1" not in c["data"]["nginx.conf"])
    obj = kube.get(*LLMS, "chat")
    assert condition(obj, "Ready")["lastTransitionTime"] == ready_since  # type: ignore[index]

    set_deployment_ready(kube, "chat-model", ready=0, desired=2)
    obj = kube.wait_for(*LLMS, "chat", has_condition("Ready", "False", "ModelUnavailable"))
    assert obj["status"]["replicas"]["display"] == "0/2"
    reasons = {(e["type"], e["reason"]) for e in kube.list("v1", "Event")}
    assert ("Normal", "AllComponentsReady") in reasons and ("Warning", "ModelUnavailable") in reasons


def test_invalid_spec_is_reported_without_a_crash_loop(kube: Kube, operator: None) -> None:
    bad = llmservice("chat", engine={"kind": "vllm"}, resources={"gpu": {"count": 3}})
    kube.create(bad, namespace=kube.namespace)
    obj = kube.wait_for(*LLMS, "chat", has_condition("Ready", "False", "InvalidSpec"))
    assert "resources.gpu.count" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert obj["status"]["phase"] == "Failed"
    wait_for_passes(1, "timer")  # kopf records the handler's failure in its annotations once
    settled = kube.get(*LLMS, "chat")["metadata"]["resourceVersion"]
    wait_for_passes(2, "timer")
    assert children(kube, "chat") == []
    assert kube.get(*LLMS, "chat")["metadata"]["resourceVersion"] == settled  # no write, no retry loop

    kube.patch(*LLMS, "chat", {"spec": {"resources": {"gpu": {"count": 2}}}})
    kube.wait_for(*LLMS, "chat", lambda o: condition(o, "Ready")["reason"] != "InvalidSpec")  # type: ignore[index]
    kube.wait_for("apps/v1", "Deployment", "chat-model", lambda d: True)


def test_deleted_object_is_let_go(request: pytest.FixtureRequest, kube: Kube, operator: None) -> None:
    create(kube, cache=True)
    kube.wait_for(*LLMS, "chat", lambda o: "llmfleet.io/finalizer" in o["metadata"].get("finalizers", []))
    wait_until(lambda: len(children(kube, "chat")) == len(BASE_CHILDREN | CACHE_CHILDREN), "every child")
    kube.delete(*LLMS, "chat")
    kube.wait_gone(*LLMS, "chat", timeout=30)  # the finalizer was released
    wait_until(lambda: children(kube, "chat") == [], "garbage collection of the children")


def test_predictive_scaling_reports_an_unreachable_prometheus(kube: Kube, operator: None) -> None:
    predictive = {
        "enabled": True,
        "prometheusUrl": "http://127.0.0.1:9",
        "intervalSeconds": 15,
        "horizonSeconds": 60,
    }
    kube.create(llmservice("chat", autoscaling={"predictive": predictive}), namespace=kube.namespace)
    obj = kube.wait_for(*LLMS, "chat", has_condition("PredictiveScaling", "False", "PrometheusUnavailable"))
    assert "prometheusUrl" in condition(obj, "PredictiveScaling")["message"]  # type: ignore[index]
    assert obj["status"]["predictive"]["recommendedReplicas"] == 1  # held at replicas.min
    kube.wait_for(
        "autoscaling/v2", "HorizontalPodAutoscaler", "chat", lambda h: h["spec"]["minReplicas"] == 1
    )
