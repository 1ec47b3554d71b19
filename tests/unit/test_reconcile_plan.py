"""The reconcile's pure plan, as a table: (spec, what the cluster holds) -> (apply, delete, create, status).

A "converged" cluster is built by taking what the plan applies from scratch and adding what a
real API server adds (uid, resourceVersion, managedFields, defaults), so the tests also prove
that server-side additions never make the operator re-apply (the zero-writes promise).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmfleet.kube import ApiRejected, ApiRetry, backoff, map_error
from llmfleet.reconcile import HASH_ANNOTATION, Observed, Plan, contains, execute, plan, ready_endpoints
from llmfleet.render import Endpoint, child_key
from llmfleet.validation import validate_service
from tests.specs import minimal, service

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"
UID = "uid-chat"


def llms(generation: int = 1, **overrides: Any) -> Obj:
    obj = service(minimal("llamacpp", **{"replicas": {"min": 1, "max": 3}, **overrides}))
    obj["metadata"].update(uid=UID, generation=generation)
    return obj


def plan_for(obj: Obj, observed: Observed, now: str = NOW) -> Plan:
    return plan(obj, validate_service(obj), observed, now=now)


def as_server_stores(manifest: Obj, n: int) -> Obj:
    """What the API server returns for an applied manifest: extra metadata and defaults."""
    live = copy.deepcopy(manifest)
    meta = live["metadata"]
    meta.update(uid=f"child-{n}", resourceVersion=str(100 + n), creationTimestamp=NOW, generation=1)
    meta["managedFields"] = [{"manager": "llmfleet", "operation": "Apply"}]
    if live["kind"] == "Deployment":
        live["spec"].setdefault("replicas", 1)
        live["spec"]["revisionHistoryLimit"] = 10
        for container in live["spec"]["template"]["spec"]["containers"]:
            container["terminationMessagePath"] = "/dev/termination-log"
            container["imagePullPolicy"] = "IfNotPresent"
        live["status"] = {"observedGeneration": 1}
    if live["kind"] == "Service":
        live["spec"]["clusterIP"] = "10.0.0.10"
        live["spec"]["sessionAffinity"] = "None"
    return live


def converged(obj: Obj, endpoints: tuple[Endpoint, ...] = ()) -> Observed:
    """The cluster right after a pass from scratch: every child, as the server stores it."""
    first = plan_for(obj, Observed({}, endpoints))
    live = [as_server_stores(m, n) for n, m in enumerate(first.apply)]
    live += [as_server_stores(s.manifest, 50 + n) for n, s in enumerate(first.create_secrets)]
    return Observed({child_key(m): m for m in live}, endpoints)


def with_status(obj: Obj, observed: Observed) -> Obj:
    """``obj`` after the status that a pass over ``observed`` writes."""
    written = plan_for(obj, observed).status
    assert written is not None
    return {**obj, "status": written}


def keys(manifests: list[Obj]) -> set[tuple[str, str]]:
    return {(m["kind"], m["metadata"]["name"]) for m in manifests}


CACHE_KEYS = {
    ("ConfigMap", "chat-cache"),
    ("Service", "chat-cache"),
    ("Deployment", "chat-cache"),
    ("Service", "chat-lb"),
    ("Deployment", "chat-gateway"),
    ("NetworkPolicy", "chat-cache"),
    ("NetworkPolicy", "chat-lb"),
    ("Secret", "chat-cache-auth"),
}


def test_from_scratch_applies_every_child_and_creates_the_cache_secret() -> None:
    todo = plan_for(llms(cache={"enabled": True}), Observed({}, ()))
    assert keys(todo.apply) == {
        ("Service", "chat-model"),
        ("Deployment", "chat-model"),
        ("PodDisruptionBudget", "chat-model"),
        ("HorizontalPodAutoscaler", "chat"),
        ("ConfigMap", "chat-lb"),
        ("Deployment", "chat-lb"),
        ("Service", "chat"),
    } | (CACHE_KEYS - {("Secret", "chat-cache-auth")})
    assert [s.manifest["metadata"]["name"] for s in todo.create_secrets] == ["chat-cache-auth"]
    assert todo.delete == []
    assert todo.status is not None and todo.status["observedGeneration"] == 1
    for manifest in [*todo.apply, *(s.manifest for s in todo.create_secrets)]:
        meta = manifest["metadata"]
        assert meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "llmfleet"
        assert meta["labels"]["llmfleet.io/service"] == "chat"
    assert all(HASH_ANNOTATION in m["metadata"]["annotations"] for m in todo.apply)


def test_converged_cluster_means_no_writes_at_all() -> None:
    obj = llms(cache={"enabled": True})
    observed = converged(obj)
    todo = plan_for(with_status(obj, observed), observed, now=LATER)
    assert (todo.apply, todo.delete, todo.create_secrets, todo.status, todo.events) == ([], [], [], None, [])
    assert todo.writes == 0


def _edit_image(observed: Observed) -> Observed:
    children = dict(observed.children)
    key = ("apps/v1", "Deployment", "chat-model")
    dep = copy.deepcopy(children[key])
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    children[key] = dep
    return Observed(children, observed.endpoints)


def _drop(observed: Observed, *drop: tuple[str, str, str]) -> Observed:
    return Observed({k: v for k, v in observed.children.items() if k not in drop}, observed.endpoints)


def _foreign_owner(observed: Observed) -> Observed:
    children = dict(observed.children)
    stray = copy.deepcopy(children[("v1", "Service", "chat-model")])
    stray["metadata"]["name"] = "chat-extra"
    stray["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    children[("v1", "Service", "chat-extra")] = stray
    return Observed(children, observed.endpoints)


@pytest.mark.parametrize(
    ("case", "spec_change", "cluster_change", "applied", "deleted", "secrets"),
    [
        ("hand-edited image", {}, _edit_image, {("Deployment", "chat-model")}, set(), []),
        (
            "deleted Deployment",
            {},
            lambda o: _drop(o, ("apps/v1", "Deployment", "chat-lb")),
            {("Deployment", "chat-lb")},
            set(),
            [],
        ),
        (
            "deleted Secret",
            {},
            lambda o: _drop(o, ("v1", "Secret", "chat-cache-auth")),
            set(),
            set(),
            ["chat-cache-auth"],
        ),
        # the balancer stops trusting X-Forwarded-For from a gateway that is gone: its config changes too
        (
            "cache disabled",
            {"cache": {"enabled": False}},
            None,
            {("Service", "chat"), ("ConfigMap", "chat-lb")},
            CACHE_KEYS,
            [],
        ),
        (
            "balancer replicas",
            {"loadBalancer": {"replicas": 3}},
            None,
            {("Deployment", "chat-lb"), ("Deployment", "chat-gateway")},
            set(),
            [],
        ),
        (
            "own password secret",
            {"cache": {"enabled": True, "passwordSecretRef": {"name": "mine"}}},
            None,
            {("Deployment", "chat-cache"), ("Deployment", "chat-gateway")},
            {("Secret", "chat-cache-auth")},
            [],
        ),
        ("foreign owner is left alone", {}, _foreign_owner, set(), set(), []),
    ],
)
def test_plan_table(
    case: str, spec_change: Obj, cluster_change: Any, applied: set[Any], deleted: set[Any], secrets: list[str]
) -> None:
    obj = llms(cache={"enabled": True})
    observed = converged(obj)
    if cluster_change is not None:
        observed = cluster_change(observed)
    changed = llms(generation=2, **{"cache": {"enabled": True}, **spec_change}) if spec_change else obj
    todo = plan_for({**changed, "status": with_status(obj, converged(obj))["status"]}, observed, now=LATER)
    assert keys(todo.apply) == applied, case
    assert keys(todo.delete) == deleted, case
    assert [s.manifest["metadata"]["name"] for s in todo.create_secrets] == secrets, case


def test_spec_update_moves_observed_generation() -> None:
    obj = llms()
    observed = converged(obj)
    updated = {
        **llms(generation=2, loadBalancer={"replicas": 2}),
        "status": with_status(obj, observed)["status"],
    }
    todo = plan_for(updated, observed, now=LATER)
    assert todo.status is not None and todo.status["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in todo.status["conditions"])


def test_a_dropped_field_is_reapplied_through_the_hash() -> None:
    """min == max removes the HPA and puts replicas on the Deployment; containment alone would miss removals."""
    obj = llms()
    observed = converged(obj)
    fixed = llms(generation=2, replicas={"min": 2, "max": 2})
    todo = plan_for(fixed, observed)
    assert ("Deployment", "chat-model") in keys(todo.apply)
    assert ("HorizontalPodAutoscaler", "chat") in keys(todo.delete)


def test_endpoint_change_rewrites_only_the_balancer_config() -> None:
    obj = llms()
    before = converged(obj, (Endpoint("10.0.0.1", 8080, "pod-a"),))
    after = Observed(
        before.children, (Endpoint("10.0.0.1", 8080, "pod-a"), Endpoint("10.0.0.2", 8080, "pod-b"))
    )
    todo = plan_for({**obj, "status": with_status(obj, before)["status"]}, after, now=LATER)
    assert keys(todo.apply) == {("ConfigMap", "chat-lb")}
    assert "10.0.0.2:8080" in todo.apply[0]["data"]["nginx.conf"]


@pytest.mark.parametrize(
    ("have", "want", "expected"),
    [
        ({"a": 1, "extra": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({}, {"nodeSelector": {}}, True),
        ({"m": "4096Mi"}, {"m": "4Gi"}, True),
        ({"m": "4Gi"}, {"m": "5Gi"}, False),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, False),
        ({"l": [{"a": 1, "d": 0}]}, {"l": [{"a": 1}]}, True),
        ({"b": 1}, {"b": True}, False),
        ({"n": "http"}, {"n": "https"}, False),
    ],
)
def test_contains(have: Obj, want: Obj, expected: bool) -> None:
    assert contains(have, want) is expected


def test_ready_endpoints_take_ready_addresses_on_the_http_port() -> None:
    slices = [
        {
            "ports": [{"name": "metrics", "port": 9000}, {"name": "http", "port": 8080}],
            "endpoints": [
                {
                    "addresses": ["10.0.0.2"],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": "b"},
                },
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": True, "terminating": True}},
                {"addresses": ["10.0.0.1"], "conditions": {}, "targetRef": {"kind": "Pod", "name": "a"}},
            ],
        },
        {"ports": [{"name": "other", "port": 1}], "endpoints": [{"addresses": ["10.9.9.9"]}]},
    ]
    assert ready_endpoints(slices) == (Endpoint("10.0.0.1", 8080, "a"), Endpoint("10.0.0.2", 8080, "b"))


def test_events_only_when_a_condition_becomes_or_stops_being_true() -> None:
    obj = llms()
    observed = converged(obj, (Endpoint("10.0.0.1", 8080, "a"),))
    children = dict(observed.children)
    for name in ("chat-model", "chat-lb"):
        dep = copy.deepcopy(children["apps/v1", "Deployment", name])
        dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}
        children["apps/v1", "Deployment", name] = dep
    ready = Observed(children, observed.endpoints)
    came_up = plan_for(with_status(obj, observed), ready, now=LATER)
    assert {(e.type, e.reason) for e in came_up.events} == {
        ("Normal", "AllComponentsReady"),
        ("Normal", "ReplicasReady"),
        ("Normal", "LoadBalancerReady"),
    }
    went_down = plan_for({**obj, "status": came_up.status}, observed, now=LATER)
    assert {(e.type, e.reason) for e in went_down.events} == {
        ("Warning", "ModelUnavailable"),
        ("Warning", "NoReplicasReady"),
        ("Warning", "LoadBalancerNotReady"),
    }


@pytest.mark.parametrize(
    ("status", "retry_after", "kind", "delay"),
    [
        (409, None, "conflict", 1.5),
        (429, "7", "throttled", 7.0),
        (429, None, "throttled", 5.0),
        (500, None, "server", 2.0),
        (503, None, "server", 2.0),
    ],
)
def test_transient_api_errors_are_retried(
    status: int, retry_after: str | None, kind: str, delay: float
) -> None:
    error = map_error(status, b'{"message": "boom"}', "apply Deployment x", retry_after)
    assert isinstance(error, ApiRetry) and error.kind == kind and error.delay == delay
    assert "boom" in str(error)


@pytest.mark.parametrize("status", [400, 403, 422])
def test_invalid_requests_are_permanent_with_the_servers_message(status: int) -> None:
    error = map_error(status, b'{"message": "spec.replicas: Invalid value"}', "apply Deployment x")
    assert isinstance(error, ApiRejected) and error.status == status
    assert "apply Deployment x" in str(error) and "spec.replicas: Invalid value" in str(error)
    assert ("ServiceAccount" in str(error)) is (status == 403)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 5.0) for n in range(3)] == [5.0, 10.0, 20.0]
    assert backoff(30, 5.0) == 120.0


class RecordingKube:
    """Records calls; rejects applies of the named kinds like an API server enforcing immutability."""

    def __init__(self, reject: set[str]) -> None:
        self.reject = reject
        self.calls: list[tuple[str, str]] = []

    def create_secret_once(self, manifest: Obj, key: str) -> bool:
        self.calls.append(("create", manifest["metadata"]["name"]))
        return True

    def apply(self, manifest: Obj) -> Obj:
        if manifest["kind"] in self.reject:
            raise ApiRejected(f"apply {manifest['kind']}: field is immutable", status=422)
        self.calls.append(("apply", manifest["kind"]))
        return manifest

    def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None, uid: str | None = None
    ) -> None:
        self.calls.append(("delete", kind))

    def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        self.calls.append(("status", name))

    def post_event(self, owner: Obj, event_type: str, reason: str, message: str) -> None:
        self.calls.append(("event", reason))


def test_execute_orders_writes_and_does_not_let_one_rejection_block_the_rest() -> None:
    obj = llms(
        cache={"enabled": True},
        model={"uri": "hf://org/model-GGUF/model.Q4_K_M.gguf", "cache": {"size": "2Gi"}},
    )
    todo = plan_for(obj, Observed({}, ()))
    kube = RecordingKube(reject={"PersistentVolumeClaim"})
    with pytest.raises(ApiRejected, match="immutable"):
        execute(kube, obj, todo)  # type: ignore[arg-type]
    verbs = [verb for verb, _ in kube.calls]
    assert verbs[0] == "create"  # the Secret before the pods that mount it
    assert verbs.count("apply") == len(todo.apply) - 1  # everything but the rejected claim
    assert verbs.index("status") > max(i for i, v in enumerate(verbs) if v == "apply")
