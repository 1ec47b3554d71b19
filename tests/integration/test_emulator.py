"""The API emulator, exercised through the real ``kubernetes`` client (and kopf at the end).

Every test here uses the ``apiserver`` fixture: they test the stand-in itself and are skipped with ``--e2e``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import kopf
import kubernetes.client
import kubernetes.watch
import pytest
import yaml
from kopf._core.intents.registries import SmartOperatorRegistry  # not re-exported by kopf 1.45
from kopf.testing import KopfRunner
from kubernetes.client import ApiException

from tests.emulator.apiserver import ApiServer
from tests.emulator.client import Kube
from tests.emulator.e2e import E2E_CONTEXT_ENV, check_e2e_context

GROUP, VERSION, PLURAL = "llmfleet.io", "v1alpha1", "llmservices"
API = f"{GROUP}/{VERSION}"


def llmservice(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "LLMService",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "hf://org/model"}, "engine": {"kind": "vllm"}, **spec},
    }


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data,
    }


def deployment(
    name: str, labels: dict[str, str], replicas: int = 1, image: str = "nginx:1.27"
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def test_create_sets_system_fields_and_conflicts_on_duplicates(apiserver: ApiServer, kube: Kube) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube.api_client)
    data, status, _ = custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, kube.namespace, PLURAL, llmservice("chat")
    )
    assert status == 201
    meta = data["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == kube.namespace

    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, llmservice("chat"))
    assert info.value.status == 409
    assert '"reason":"AlreadyExists"' in info.value.body.replace(" ", "")

    fetched = custom.get_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, "chat")
    assert fetched["metadata"]["uid"] == meta["uid"]
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, "absent")
    assert missing.value.status == 404
    with pytest.raises(ApiException) as no_namespace:
        kube.create(configmap("x"), namespace="no-such-namespace")
    assert no_namespace.value.status == 404


def test_list_with_label_selectors_and_namespaces(apiserver: ApiServer, kube: Kube) -> None:
    kube.create(configmap("a", {"app": "a", "tier": "web"}))
    kube.create(configmap("b", {"app": "b"}))
    kube.create(configmap("c", {"app": "c", "tier": "db"}))
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{kube.namespace}-other"}})
    kube.create(configmap("a", {"app": "a"}), namespace=f"{kube.namespace}-other")

    def names(selector: str) -> list[str]:
        return [o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", label_selector=selector)]

    assert names("app=a") == ["a"]
    assert names("app!=a") == ["b", "c"]
    assert names("app in (a,c)") == ["a", "c"]
    assert names("app notin (a,c)") == ["b"]
    assert names("tier") == ["a", "c"]
    assert names("!tier") == ["b"]
    assert names("app in (a,b),tier") == ["a"]
    core = kubernetes.client.CoreV1Api(kube.api_client)
    everywhere = core.list_config_map_for_all_namespaces(label_selector="app=a")
    assert sorted(i.metadata.namespace for i in everywhere.items) == [
        kube.namespace,
        f"{kube.namespace}-other",
    ]
    by_field = kube.list("v1", "ConfigMap", field_selector="metadata.name=b")
    assert [o["metadata"]["name"] for o in by_field] == ["b"]


def test_put_replaces_and_rejects_a_stale_resource_version(apiserver: ApiServer, kube: Kube) -> None:
    created = kube.create(configmap("cfg", key="1"))
    updated = kube.replace({**created, "data": {"key": "2"}})
    assert updated["data"] == {"key": "2"} and rv(updated) > rv(created)
    with pytest.raises(ApiException) as info:
        kube.replace({**created, "data": {"key": "3"}})  # carries the old resourceVersion
    assert info.value.status == 409
    assert kube.get("v1", "ConfigMap", "cfg")["data"] == {"key": "2"}
    assert apiserver.writes[("update", "configmaps")] == 1  # rejected requests are not counted


def test_status_subresource_and_generation_rules(apiserver: ApiServer, kube: Kube) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube.api_client)
    body = llmservice("chat")
    body["status"] = {"phase": "Ignored"}
    created = kube.create(body)
    assert "status" not in created  # status is dropped on create when there is a status subresource

    args = (GROUP, VERSION, kube.namespace, PLURAL, "chat")
    status_write = custom.patch_namespaced_custom_object_status(
        *args, {"status": {"phase": "Ready"}, "spec": {"model": {"uri": "hf://changed"}}}
    )
    assert status_write["status"] == {"phase": "Ready"}
    assert status_write["spec"] == created["spec"]  # spec changes through /status are ignored
    assert status_write["metadata"]["generation"] == 1  # status writes do not bump the generation

    spec_write = custom.patch_namespaced_custom_object(
        *args, {"spec": {"replicas": {"min": 2}}, "status": {"phase": "Hacked"}}
    )
    assert spec_write["status"] == {"phase": "Ready"}  # status changes through the main resource are ignored
    assert spec_write["metadata"]["generation"] == 2

    labelled = custom.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"team": "ml"}}})
    assert labelled["metadata"]["generation"] == 2  # metadata-only changes keep the generation
    assert rv(labelled) > rv(spec_write)

    same = custom.patch_namespaced_custom_object(*args, {"spec": {"replicas": {"min": 2}}})
    assert rv(same) == rv(labelled)  # a patch that changes nothing is not a write
    assert apiserver.count_writes("patch", "llmservices", changed=False) == 1


def test_custom_resources_follow_their_crd_schema(apiserver: ApiServer, kube: Kube) -> None:
    body = llmservice("chat")
    body["spec"]["notInTheSchema"] = {"x": 1}
    created = kube.create(body)
    assert "notInTheSchema" not in created["spec"]  # pruned, as by kube-apiserver
    assert created["spec"]["engine"]["warmup"] is True  # a schema default

    written = kube.patch_status(API, "LLMService", "chat", {"phase": "Ready", "undeclared": "dropped"})
    assert written["status"]["phase"] == "Ready" and "undeclared" not in written["status"]
    unchanged = kube.patch_status(API, "LLMService", "chat", {"undeclared": "again"})
    assert rv(unchanged) == rv(written)  # writing only undeclared fields changes nothing

    for bad in ({"engine": {"kind": "no-such-engine"}}, {"replicas": {"min": "one"}}):
        with pytest.raises(ApiException) as info:
            kube.patch(API, "LLMService", "chat", {"spec": bad})
        assert info.value.status == 422 and '"reason": "Invalid"' in info.value.body
    with pytest.raises(ApiException) as missing:
        kube.create({"apiVersion": API, "kind": "LLMService", "metadata": {"name": "empty"}, "spec": {}})
    assert missing.value.status == 422 and "spec.model: Required value" in missing.value.body

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    kube.create(crd)  # a CRD created at runtime is served right away, discovery included
    assert {"name": "v1", "groupVersion": "example.com/v1"}.items() <= (
        kube.request("GET", "/apis/example.com")["preferredVersion"] | {"name": "v1"}
    ).items()
    widget = kube.create(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"a": 1}}
    )
    assert widget["spec"] == {"a": 1}


def test_server_side_apply_noop_removal_and_conflicts(apiserver: ApiServer, kube: Kube) -> None:
    desired = deployment("web", {"app": "web", "tier": "frontend"})
    first = kube.apply(desired, field_manager="llmfleet")
    again = kube.apply(desired, field_manager="llmfleet")
    assert rv(again) == rv(first)  # re-applying the same config is a no-op
    assert apiserver.count_writes("apply", "deployments", changed=False) == 1
    managers = {(e["manager"], e["operation"]) for e in again["metadata"]["managedFields"]}
    assert managers == {("llmfleet", "Apply")}

    # Someone else adds a label; the operator then drops "tier" from its applied config.
    kube.patch(
        "apps/v1", "Deployment", "web", {"metadata": {"labels": {"owner": "alice"}}}, field_manager="alice"
    )
    smaller = deployment("web", {"app": "web"})
    applied = kube.apply(smaller, field_manager="llmfleet")
    assert applied["metadata"]["labels"] == {"app": "web", "owner": "alice"}
    assert applied["metadata"]["generation"] == 1  # only metadata changed

    # A field owned by another manager with a different value conflicts unless forced.
    kube.patch("apps/v1", "Deployment", "web", {"spec": {"replicas": 5}}, field_manager="hpa")
    with pytest.raises(ApiException) as info:
        kube.apply(smaller, field_manager="llmfleet", force=False)
    assert info.value.status == 409 and "replicas" in info.value.body
    forced = kube.apply(smaller, field_manager="llmfleet", force=True)
    assert forced["spec"]["replicas"] == 1 and forced["metadata"]["generation"] == 3

    # Dropping a container from the config removes it (keyed list), the other one stays untouched.
    two = deployment("web", {"app": "web"})
    two["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    assert len(kube.apply(two, field_manager="llmfleet")["spec"]["template"]["spec"]["containers"]) == 2
    one = kube.apply(smaller, field_manager="llmfleet")
    assert [c["name"] for c in one["spec"]["template"]["spec"]["containers"]] == ["main"]

    with pytest.raises(ApiException) as no_manager:
        kube.request(
            "PATCH",
            kube.resource("apps/v1", "Deployment").url(kube.namespace, "web"),
            smaller,
            content_type="application/apply-patch+yaml",
        )
    assert no_manager.value.status == 422


def test_server_side_defaults_are_filled_in_and_not_owned_by_appliers(
    apiserver: ApiServer, kube: Kube
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }
    applied = kube.apply(service, field_manager="llmfleet")
    assert applied["spec"]["type"] == "ClusterIP" and applied["spec"]["clusterIP"].startswith("10.96.")
    assert applied["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]
    assert (
        kube.apply(service, field_manager="llmfleet")["metadata"]["resourceVersion"]
        == (applied["metadata"]["resourceVersion"])
    )
    owned = applied["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    assert "f:clusterIP" not in owned and "f:type" not in owned  # defaults belong to nobody

    secret = kube.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    )
    assert secret["type"] == "Opaque" and secret["data"] == {"k": "dg=="} and "stringData" not in secret

    created = kube.create(deployment("web", {"app": "web"}))
    assert created["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": "25%"}
    assert created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_strategic_merge_and_json_patch(apiserver: ApiServer, kube: Kube) -> None:
    kube.create(deployment("web", {"app": "web"}))
    apps = kubernetes.client.AppsV1Api(kube.api_client)
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}}}
    patched = apps.patch_namespaced_deployment("web", kube.namespace, sidecar)  # strategic merge by default
    assert [c.name for c in patched.spec.template.spec.containers] == ["main", "sidecar"]
    image = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.28"}]}}}}
    patched = apps.patch_namespaced_deployment("web", kube.namespace, image)
    assert [c.image for c in patched.spec.template.spec.containers] == ["nginx:1.28", "busybox"]

    kube.create(llmservice("chat"))
    with pytest.raises(ApiException) as info:
        kube.patch(API, "LLMService", "chat", {"spec": {}}, type="strategic")
    assert info.value.status == 415  # custom resources do not support strategic merge

    current = kube.get("v1", "Namespace", kube.namespace)
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/labels/x", "value": "y"},
    ]
    with pytest.raises(ApiException) as stale:
        kube.patch("v1", "Namespace", kube.namespace, ops, type="json")
    assert stale.value.status == 422  # kopf relies on this for its optimistic concurrency
    ops[0]["value"] = current["metadata"]["resourceVersion"]
    assert kube.patch("v1", "Namespace", kube.namespace, ops, type="json")["metadata"]["labels"]["x"] == "y"


def test_watch_resumes_from_a_resource_version(apiserver: ApiServer, kube: Kube) -> None:
    core = kubernetes.client.CoreV1Api(kube.api_client)
    kube.create(configmap("before"))
    listed = core.list_namespaced_config_map(kube.namespace)
    since = listed.metadata.resource_version
    kube.create(configmap("after", {"watched": "yes"}))
    kube.patch("v1", "ConfigMap", "before", {"data": {"k": "v"}})
    kube.delete("v1", "ConfigMap", "after")

    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        core.list_namespaced_config_map, kube.namespace, resource_version=since, timeout_seconds=2
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            watch.stop()
    assert seen == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]

    selected = []
    for event in watch.stream(
        core.list_namespaced_config_map,
        kube.namespace,
        label_selector="watched=yes",
        resource_version=since,
        timeout_seconds=1,
    ):
        selected.append((event["type"], event["object"].metadata.name))
    assert selected == [("ADDED", "after"), ("DELETED", "after")]  # ends by the server-side timeout

    since = core.list_namespaced_config_map(kube.namespace).metadata.resource_version
    kube.patch("v1", "ConfigMap", "before", {"metadata": {"labels": {"watched": "yes"}}})
    kube.patch("v1", "ConfigMap", "before", {"metadata": {"labels": {"watched": "no"}}})
    moved = [
        (e["type"], e["object"].metadata.name)
        for e in watch.stream(
            core.list_namespaced_config_map,
            kube.namespace,
            label_selector="watched=yes",
            resource_version=since,
            timeout_seconds=1,
        )
    ]
    assert moved == [("ADDED", "before"), ("DELETED", "before")]  # moving in and out of the selector


def test_watch_bookmarks_and_expired_versions(apiserver: ApiServer, kube: Kube) -> None:
    apiserver.bookmark_interval = 0.2
    path = kube.resource("v1", "ConfigMap").url(kube.namespace)
    query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "2", "resourceVersion": "0"}
    response = kube.api_client.call_api(
        *kube.api_client.param_serialize(
            "GET", path, query_params=list(query.items()), auth_settings=["BearerToken"]
        )
    )
    assert b'"type": "BOOKMARK"' in response.read()

    apiserver.store.compacted_rv = apiserver.store.rv  # as if etcd had compacted the history
    core = kubernetes.client.CoreV1Api(kube.api_client)
    with pytest.raises(ApiException) as info:  # the client turns the in-stream ERROR event into an exception
        list(
            kubernetes.watch.Watch().stream(
                core.list_namespaced_config_map, kube.namespace, resource_version="1", timeout_seconds=1
            )
        )
    assert info.value.status == 410


def test_finalizers_hold_deletion_until_removed(apiserver: ApiServer, kube: Kube) -> None:
    body = configmap("held")
    body["metadata"]["finalizers"] = ["llmfleet.io/finalizer"]
    kube.create(body)
    kube.delete("v1", "ConfigMap", "held")
    marked = kube.get("v1", "ConfigMap", "held")
    assert marked["metadata"]["deletionTimestamp"]
    stored = apiserver.object("v1", "ConfigMap", kube.namespace, "held")
    assert stored is not None and stored["metadata"]["finalizers"] == ["llmfleet.io/finalizer"]
    with pytest.raises(ApiException) as info:
        kube.patch(
            "v1", "ConfigMap", "held", {"metadata": {"finalizers": ["llmfleet.io/finalizer", "other/x"]}}
        )
    assert info.value.status == 422  # no new finalizers on an object being deleted
    kube.patch("v1", "ConfigMap", "held", {"metadata": {"finalizers": None}})
    assert kube.get_or_none("v1", "ConfigMap", "held") is None


def test_garbage_collection_follows_owner_references(apiserver: ApiServer, kube: Kube) -> None:
    owner = kube.create(llmservice("chat"))
    other = kube.create(configmap("other-owner"))

    def owned(name: str, *owners: dict[str, Any]) -> dict[str, Any]:
        child = configmap(name)
        child["metadata"]["ownerReferences"] = [
            {
                "apiVersion": o["apiVersion"],
                "kind": o["kind"],
                "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"],
                "controller": i == 0,
                "blockOwnerDeletion": True,
            }
            for i, o in enumerate(owners)
        ]
        return kube.create(child)

    owned("child", owner)
    grandchild_owner = owned("child-with-kids", owner)
    owned("grandchild", grandchild_owner)
    owned("shared", owner, other)
    kube.delete(API, "LLMService", "chat")
    kube.wait_gone("v1", "ConfigMap", "child")
    kube.wait_gone("v1", "ConfigMap", "grandchild")
    shared = kube.wait_for("v1", "ConfigMap", "shared", lambda o: len(o["metadata"]["ownerReferences"]) == 1)
    assert shared["metadata"]["ownerReferences"][0]["name"] == "other-owner"

    owned("orphan", other)
    kube.delete("v1", "ConfigMap", "other-owner", propagation="Orphan")
    kube.wait_gone("v1", "ConfigMap", "other-owner")
    orphan = kube.wait_for("v1", "ConfigMap", "orphan", lambda o: not o["metadata"].get("ownerReferences"))
    assert orphan["metadata"]["name"] == "orphan"
    assert kube.get_or_none("v1", "ConfigMap", "shared") is not None

    parent = kube.create(llmservice("foreground"))
    owned("foreground-child", parent)
    kube.delete(API, "LLMService", "foreground", propagation="Foreground")
    kube.wait_gone("v1", "ConfigMap", "foreground-child")
    kube.wait_gone(API, "LLMService", "foreground")  # the owner goes after its dependents


def test_deleting_a_namespace_deletes_its_contents(apiserver: ApiServer, kube: Kube) -> None:
    name = f"{kube.namespace}-doomed"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube.create(configmap("inside"), namespace=name)
    kube.delete("v1", "Namespace", name)
    kube.wait_gone("v1", "ConfigMap", "inside", namespace=name)
    kube.wait_gone("v1", "Namespace", name)


def test_fault_injection(apiserver: ApiServer, kube: Kube) -> None:
    kube.create(configmap("cfg"))
    path = kube.resource("v1", "ConfigMap").url(kube.namespace, "cfg")
    apiserver.inject("GET", path, 500, count=2)
    apiserver.inject("PATCH", f"{kube.resource('v1', 'ConfigMap').url(kube.namespace)}/*", 429, retry_after=1)
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            kube.get("v1", "ConfigMap", "cfg")
        assert info.value.status == 500
    assert kube.get("v1", "ConfigMap", "cfg")["metadata"]["name"] == "cfg"
    with pytest.raises(ApiException) as throttled:
        kube.patch("v1", "ConfigMap", "cfg", {"data": {"a": "b"}})
    assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "1"
    assert apiserver.pending_faults() == 0
    assert apiserver.count_writes("patch", "configmaps") == 0  # the faulted request never reached the store
    kube.patch("v1", "ConfigMap", "cfg", {"data": {"a": "b"}})
    assert apiserver.writes[("patch", "configmaps")] == 1


def test_discovery_lists_the_operator_kinds(apiserver: ApiServer, kube: Kube) -> None:
    groups = {g["name"] for g in kube.request("GET", "/apis")["groups"]}
    assert {
        "llmfleet.io",
        "apps",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "coordination.k8s.io",
        "kopf.dev",
    } <= groups
    names = {r["name"] for r in kube.request("GET", "/apis/llmfleet.io/v1alpha1")["resources"]}
    assert names == {"llmservices", "llmservices/status"}
    core = {r["name"] for r in kube.request("GET", "/api/v1")["resources"]}
    assert {"services", "configmaps", "secrets", "events", "pods", "namespaces"} <= core


def test_e2e_guard_refuses_a_non_kind_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://prod.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "prod",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.delenv(E2E_CONTEXT_ENV, raising=False)
    with pytest.raises(pytest.exit.Exception):
        check_e2e_context(path)
    monkeypatch.setenv(E2E_CONTEXT_ENV, "prod")
    assert check_e2e_context(path) == "prod"


def resumed_watches(apiserver: ApiServer) -> list[Any]:
    """Watch requests on LLMServices that continue from a known resourceVersion."""
    return [
        r
        for r in apiserver.requests
        if r.url.path.endswith(f"/{PLURAL}")
        and r.params.get("watch") == "true"
        and r.params.get("resourceVersion")
    ]


def test_kopf_operator_end_to_end(apiserver: ApiServer, kube: Kube) -> None:
    registry = SmartOperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = "llmfleet.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmfleet.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="llmfleet.io")
    settings.watching.server_timeout = 10
    released = threading.Event()

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def on_create(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        kopf.info(body, reason="Seen", message="the emulator delivered the object")
        patch.status["phase"] = "Progressing"  # must satisfy the CRD schema: the emulator validates
        patch.status["model"] = spec["model"]["uri"]

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(**_: Any) -> None:
        released.set()

    args = ["run", "--standalone", "--namespace", kube.namespace]
    with KopfRunner(args, registry=registry, settings=settings, timeout=30) as runner:
        kube.create(llmservice("chat"))
        seen = kube.wait_for(
            API, "LLMService", "chat", lambda o: o.get("status", {}).get("phase") == "Progressing"
        )
        assert seen["status"]["model"] == "hf://org/model"
        assert "llmfleet.io/finalizer" in seen["metadata"]["finalizers"]
        assert seen["metadata"]["generation"] == 1  # kopf's annotations and finalizers are metadata
        watches_before = len(resumed_watches(apiserver))
        apiserver.close_watches()  # kopf must resume its watch from the last resourceVersion
        kube.create(llmservice("chat-2"))
        kube.wait_for(
            API, "LLMService", "chat-2", lambda o: o.get("status", {}).get("phase") == "Progressing"
        )
        assert len(resumed_watches(apiserver)) > watches_before
        kube.delete(API, "LLMService", "chat-2")
        kube.delete(API, "LLMService", "chat")
        kube.wait_gone(API, "LLMService", "chat")
        kube.wait_gone(API, "LLMService", "chat-2")
    assert runner.exit_code == 0 and runner.exception is None
    assert released.is_set()
    events = kube.list("v1", "Event", field_selector="involvedObject.name=chat")
    assert "Seen" in {e["reason"] for e in events}  # kopf posted an Event (with generateName)
