"""The Helm chart: it lints and renders with Helm 3 and Helm 4, what it renders is valid
Kubernetes, its RBAC is exactly what the operator calls, and its generated parts are current.

Helm comes from ``hack/get-helm.sh`` (cached in ``$LLMFLEET_CACHE/helm/{3,4}/helm``, or
``$LLMFLEET_HELM3`` / ``$LLMFLEET_HELM4``). Every test that needs Helm takes the ``helm``
fixture, which FAILS (never skips) with the command to run when a binary is missing: a chart
that was never rendered must not pass CI.

Rendered objects validate offline with kubernetes-validate (strict: unknown fields are errors)
against Kubernetes 1.29 and 1.33. The kopf peering objects, which no upstream schema knows,
validate against the openAPIV3Schema of the CRD the chart ships for them.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmfleet.crd import build_crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmfleet"
OPERATOR_SRC = ROOT / "operator" / "llmfleet"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")
HELM_MAJORS = (3, 4)
RELEASE = "llmfleet"
NAMESPACE = "llmfleet-system"


def _load_hack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_install", ROOT / "hack" / "generate_install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_install = _load_hack_module()

# --- what the operator calls -------------------------------------------------------------
#
# The operator's API calls happen in operator/llmfleet/kube.py (reads, server-side apply,
# deletes, status patches, Events) and in kopf underneath handlers.py (watches, finalizer and
# progress patches, peering keep-alives, Events). Keep this table in step with them: the chart
# must grant exactly this, nothing more (least privilege) and nothing less (a 403 at run time).
# The tests at the end of the RBAC section re-derive what they can from that code.
# (apiGroup, resource) -> verbs.
#   get     Kube.get: handlers.py reads the LLMService it is about to reconcile
#   list    Kube.list / list_children / endpoint_slices, and the first step of every kopf watch
#   watch   kopf: LLMServices (create/update/resume/timer/delete), Deployments and
#           EndpointSlices (kopf.on.event in handlers.py)
#   create  server-side apply of an absent object is authorized as create; Kube.create_secret_once
#           and Kube.post_event POST; kopf posts core/v1 Events
#   patch   Kube.apply (application/apply-patch+yaml), Kube.patch_status (merge patch of
#           /status); kopf patches finalizers and progress annotations of LLMServices
#   delete  Kube.delete: children no longer wanted (e.g. the cache when it is disabled)
# No PUT anywhere (no "update"), no events.k8s.io (kopf and Kube.post_event use core/v1).
CHILD_VERBS = frozenset({"list", "create", "patch", "delete"})
WATCHED_CHILD_VERBS = CHILD_VERBS | {"watch"}
OPERATOR_API_CALLS: dict[tuple[str, str], frozenset[str]] = {
    ("llmfleet.io", "llmservices"): frozenset({"get", "list", "watch", "patch"}),
    ("llmfleet.io", "llmservices/status"): frozenset({"patch"}),
    ("apps", "deployments"): WATCHED_CHILD_VERBS,
    ("", "services"): CHILD_VERBS,
    ("", "configmaps"): CHILD_VERBS,
    ("", "secrets"): CHILD_VERBS,
    ("", "persistentvolumeclaims"): CHILD_VERBS,
    ("autoscaling", "horizontalpodautoscalers"): CHILD_VERBS,
    ("policy", "poddisruptionbudgets"): CHILD_VERBS,
    ("networking.k8s.io", "networkpolicies"): CHILD_VERBS,
    ("discovery.k8s.io", "endpointslices"): frozenset({"list", "watch"}),
    ("", "events"): frozenset({"create"}),
}
# kopf itself: CRD observation (kopf/_core/reactor/observation.py resource_observer), always.
KOPF_CRD_CALLS = {("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"})}
# kopf's namespace observer lists and watches namespaces only when it is NOT cluster-wide
# (namespace_observer: `if not clusterwide`), to match the served namespaces.
KOPF_NAMESPACE_CALLS = {("", "namespaces"): frozenset({"list", "watch"})}
PEERING_VERBS = frozenset({"get", "list", "watch", "patch"})
KOPF_CLUSTER_PEERING_CALLS = {("kopf.dev", "clusterkopfpeerings"): PEERING_VERBS}
KOPF_NAMESPACED_PEERING_CALLS = {("kopf.dev", "kopfpeerings"): PEERING_VERBS}

Rules = dict[tuple[str, str], frozenset[str]]

# --- value sets ------------------------------------------------------------------------------

NAMESPACED_VALUES: dict[str, Any] = {"watchNamespaces": ["team-a", "team-b"]}
EVERYTHING_VALUES: dict[str, Any] = {
    "nameOverride": "fleet",
    "image": {
        "repository": "registry.example.com/llmfleet",
        "digest": "sha256:" + "a" * 64,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "replicaCount": 1,
    "peering": {"enabled": True, "name": "llmfleet-prod", "create": True},
    "crds": {"enabled": True},
    "operator": {
        "prometheusUrl": "http://prometheus.monitoring:9090",
        "images": {
            "vllm": "registry.example.com/vllm:v1",
            "llmfleet": "registry.example.com/llmfleet:semantic",
        },
        "extraArgs": ["--verbose"],
        "env": [{"name": "TZ", "value": "UTC"}],
    },
    "health": {"port": 8081},
    "metrics": {
        "port": 9100,
        "podAnnotations": True,
        "service": {"enabled": True, "port": 9100, "annotations": {"a": "b"}},
    },
    "serviceAccount": {
        "create": True,
        "name": "fleet-operator",
        "annotations": {"iam.example.com/role": "x"},
    },
    "rbac": {"create": True},
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "podAnnotations": {"example.com/team": "ml"},
    "podLabels": {"example.com/tier": "control"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "control", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "fleet"}},
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "fleet"}},
        }
    ],
    "priorityClassName": "system-cluster-critical",
    "terminationGracePeriodSeconds": 60,
}
NOTHING_OPTIONAL_VALUES: dict[str, Any] = {
    "crds": {"enabled": False},
    "peering": {"enabled": False},
    "rbac": {"create": False},
    "serviceAccount": {"create": False, "name": "existing"},
    "metrics": {"podAnnotations": False},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": NAMESPACED_VALUES,
    "everything": EVERYTHING_VALUES,
    "everything-namespaced": {**EVERYTHING_VALUES, **NAMESPACED_VALUES},
    "nothing-optional": NOTHING_OPTIONAL_VALUES,
}

# --- helm ----------------------------------------------------------------------------------


@functools.cache
def _helm_path(major: int) -> str:
    try:
        path: str = generate_install.helm_binary(major)
    except SystemExit as exc:
        pytest.fail(f"chart tests: {exc}")
    version = subprocess.run([path, "version", "--template", "{{.Version}}"], capture_output=True, text=True)
    if version.returncode != 0 or not version.stdout.startswith(f"v{major}."):
        pytest.fail(
            f"{path} is not Helm {major} ({version.stdout or version.stderr!r}); run hack/get-helm.sh"
        )
    return path


@pytest.fixture(params=HELM_MAJORS, ids=lambda major: f"helm{major}")
def helm(request: pytest.FixtureRequest) -> str:
    """Path of a Helm binary, once for Helm 3 and once for Helm 4; fails when it is missing."""
    return _helm_path(request.param)


def _run_helm(
    helm: str, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [helm, *args]
    if values:
        # JSON is YAML: a values file without temp files or quoting worries.
        command += ["--values", "/dev/stdin"]
    return subprocess.run(command, input=json.dumps(values or {}), capture_output=True, text=True, cwd=ROOT)


@functools.cache
def _render_cached(helm: str, value_set: str) -> tuple[dict[str, Any], ...]:
    result = _run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--include-crds",
        values=VALUE_SETS[value_set],
    )
    assert result.returncode == 0, f"helm template ({value_set}) failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(helm: str, value_set: str) -> list[dict[str, Any]]:
    """The rendered objects; a copy, so a test may change them without touching the cache."""
    return copy.deepcopy(list(_render_cached(helm, value_set)))


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


# --- lint and render -------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm: str, value_set: str) -> None:
    result = _run_helm(helm, "lint", "--strict", str(CHART), values=VALUE_SETS[value_set])
    assert result.returncode == 0, f"helm lint --strict ({value_set}):\n{result.stdout}\n{result.stderr}"
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm3_and_helm4_render_the_same_objects(value_set: str) -> None:
    assert render(_helm_path(3), value_set) == render(_helm_path(4), value_set)


def test_default_render_is_the_documented_set_of_objects(helm: str) -> None:
    assert kinds(render(helm, "default")) == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",  # clusterkopfpeerings.kopf.dev
        "CustomResourceDefinition",  # kopfpeerings.kopf.dev
        "CustomResourceDefinition",  # llmservices.llmfleet.io
        "Deployment",
        "ServiceAccount",
    ]


def test_everything_on_renders_every_optional_object(helm: str) -> None:
    objects = render(helm, "everything")
    for kind in ("Service", "ClusterKopfPeering"):
        only(objects, kind)
    namespaced = render(helm, "everything-namespaced")
    assert sorted(o["metadata"]["namespace"] for o in namespaced if o["kind"] == "KopfPeering") == [
        "team-a",
        "team-b",
    ]


def test_optional_objects_can_all_be_turned_off(helm: str) -> None:
    objects = render(helm, "nothing-optional")
    # The kopf peering CRDs remain: they come from crds/ (skip them with --skip-crds).
    assert kinds(objects) == ["CustomResourceDefinition", "CustomResourceDefinition", "Deployment"]
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"} == {
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    skipped = _run_helm(helm, "template", RELEASE, str(CHART), "--skip-crds", values=NOTHING_OPTIONAL_VALUES)
    assert skipped.returncode == 0, skipped.stderr
    assert [d["kind"] for d in yaml.safe_load_all(skipped.stdout) if d] == ["Deployment"]
    pod = only(objects, "Deployment")["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "existing"
    assert "annotations" not in pod["metadata"]


# --- every object is valid Kubernetes ------------------------------------------------------


def _custom_resource_schemas(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every CRD among the rendered objects."""
    schemas = {}
    for crd in (o for o in objects if o["kind"] == "CustomResourceDefinition"):
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_object_validates(helm: str, value_set: str, k8s_version: str) -> None:
    objects = render(helm, value_set)
    custom = _custom_resource_schemas(objects)
    errors = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        key = (obj["apiVersion"], obj["kind"])
        if key in custom:
            try:
                jsonschema.validate(obj, custom[key])
            except jsonschema.ValidationError as exc:
                errors.append(f"{where}: {exc.message}")
            continue
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where} at {'/'.join(map(str, exc.absolute_path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(
                f"{where}: {key} is neither a Kubernetes {k8s_version} kind nor a CRD of this chart"
            )
    assert not errors, "\n".join(errors)


def test_namespaced_objects_carry_the_release_namespace(helm: str) -> None:
    for obj in render(helm, "default"):
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


# --- the operator Deployment -----------------------------------------------------------------


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def test_default_operator_arguments(helm: str) -> None:
    assert _container(render(helm, "default"))["args"] == [
        "run",
        "--all-namespaces",
        "--liveness-endpoint=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
        "--peering=llmfleet",
    ]


def test_namespaced_and_everything_arguments(helm: str) -> None:
    args = _container(render(helm, "everything-namespaced"))["args"]
    assert args == [
        "run",
        "--namespace=team-a",
        "--namespace=team-b",
        "--liveness-endpoint=http://0.0.0.0:8081/healthz",
        "--metrics-port=9100",
        "--peering=llmfleet-prod",
        "--prometheus-url=http://prometheus.monitoring:9090",
        "--image=llmfleet=registry.example.com/llmfleet:semantic",
        "--image=vllm=registry.example.com/vllm:v1",
        "--verbose",
    ]
    assert "--standalone" in _container(render(helm, "nothing-optional"))["args"]


def _runner_parser() -> Any:
    if not (OPERATOR_SRC / "runner.py").exists():
        pytest.fail(
            "operator/llmfleet/runner.py (llmfleet run) is missing: the chart's flags cannot be checked"
        )
    from llmfleet.cli import command_parser

    parser, _ = command_parser("run")
    return parser


@pytest.mark.parametrize("value_set", ["default", "namespaced", "nothing-optional"])
def test_llmfleet_run_accepts_the_chart_arguments(helm: str, value_set: str) -> None:
    """The contract with runner.py: the arguments the chart passes parse as `llmfleet run` flags."""
    args = _container(render(helm, value_set))["args"]
    assert args[0] == "run"
    parser = _runner_parser()
    try:
        parser.parse_args(args[1:])
    except SystemExit:
        pytest.fail(f"`llmfleet run` rejects the chart's arguments {args[1:]}")


def test_probes_use_kopfs_liveness_endpoint(helm: str) -> None:
    container = _container(render(helm, "everything"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--liveness-endpoint=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    assert f"--metrics-port={ports['metrics']}" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe


def test_prometheus_annotations_name_the_metrics_port(helm: str) -> None:
    objects = render(helm, "everything")
    annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9100"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["example.com/team"] == "ml"
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_restricted_security_context_and_no_default_resources(helm: str) -> None:
    objects = render(helm, "default")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = _container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532  # the Dockerfile's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert "resources" not in container


def test_selector_labels_never_carry_a_version(helm: str) -> None:
    for value_set in ("default", "everything"):
        objects = render(helm, value_set)
        deployment = only(objects, "Deployment")
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        for service in (o for o in objects if o["kind"] == "Service"):
            assert service["spec"]["selector"] == selector


def test_operator_pod_is_replaced_not_rolled(helm: str) -> None:
    for value_set in VALUE_SETS:
        assert only(render(helm, value_set), "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_standby_replicas_elect_a_leader_by_random_priority(helm: str) -> None:
    result = _run_helm(helm, "template", RELEASE, str(CHART), values={"replicaCount": 3})
    assert result.returncode == 0, result.stderr
    deployment = only([d for d in yaml.safe_load_all(result.stdout) if d], "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--priority=random" in args and "--peering=llmfleet" in args


def test_several_replicas_without_peering_are_refused_with_the_reason(helm: str) -> None:
    result = _run_helm(
        helm, "template", RELEASE, str(CHART), values={"replicaCount": 2, "peering": {"enabled": False}}
    )
    assert result.returncode != 0
    assert "replicaCount above 1 needs peering.enabled" in result.stderr


def test_image_defaults_to_the_app_version_and_the_renderers_image(helm: str) -> None:
    from llmfleet.render.common import DEFAULT_IMAGES

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = _container(render(helm, "default"))["image"]
    assert image == f"ghcr.io/llmfleet/llmfleet:{chart['appVersion']}"
    # The operator and the gateways it renders run the same image.
    assert image == DEFAULT_IMAGES["llmfleet"]
    assert (
        _container(render(helm, "everything"))["image"] == "registry.example.com/llmfleet@sha256:" + "a" * 64
    )


# --- RBAC: exactly what the operator calls -------------------------------------------------


def _rules(role: dict[str, Any]) -> Rules:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert not rule.get("resourceNames"), "resourceNames are not used by this chart"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource) and "*" not in rule["verbs"], f"wildcard in {rule}"
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in out.items()}


def _bound_to_service_account(binding: dict[str, Any], role: dict[str, Any], sa: dict[str, Any]) -> None:
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]


def test_cluster_wide_rbac_is_exactly_the_operator_calls(helm: str) -> None:
    objects = render(helm, "default")
    role = only(objects, "ClusterRole")
    assert _rules(role) == {**OPERATOR_API_CALLS, **KOPF_CRD_CALLS, **KOPF_CLUSTER_PEERING_CALLS}
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    _bound_to_service_account(only(objects, "ClusterRoleBinding"), role, only(objects, "ServiceAccount"))


def test_namespaced_rbac_is_exactly_the_operator_calls_in_each_namespace(helm: str) -> None:
    objects = render(helm, "namespaced")
    sa = only(objects, "ServiceAccount")
    cluster_role = only(objects, "ClusterRole")
    assert _rules(cluster_role) == {**KOPF_CRD_CALLS, **KOPF_NAMESPACE_CALLS}
    _bound_to_service_account(only(objects, "ClusterRoleBinding"), cluster_role, sa)
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]
    for namespace, role in roles.items():
        assert _rules(role) == {**OPERATOR_API_CALLS, **KOPF_NAMESPACED_PEERING_CALLS}, namespace
        _bound_to_service_account(bindings[namespace], role, sa)


def test_standalone_operator_gets_no_peering_rights(helm: str) -> None:
    result = _run_helm(helm, "template", RELEASE, str(CHART), values={"peering": {"enabled": False}})
    assert result.returncode == 0, result.stderr
    role = only([d for d in yaml.safe_load_all(result.stdout) if d], "ClusterRole")
    assert _rules(role) == {**OPERATOR_API_CALLS, **KOPF_CRD_CALLS}


def _plural_of(api_version: str, kind: str) -> tuple[str, str]:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    plural = kind.lower() + ("es" if kind.endswith(("s", "ch")) else "s")
    plural = re.sub(r"ys$", "ies", plural) if kind.endswith("y") else plural
    return group, plural


def _rendered_children() -> Iterator[dict[str, Any]]:
    for sample in SAMPLES:
        result = subprocess.run(
            [sys.executable, "-m", "llmfleet.cli", "render", "-f", str(sample)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        yield from (doc for doc in yaml.safe_load_all(result.stdout) if doc)


def test_every_kind_the_renderers_produce_is_writable() -> None:
    """What the reconcile applies is what `llmfleet render` prints; each kind needs the child verbs."""
    seen = set()
    for child in _rendered_children():
        key = _plural_of(child["apiVersion"], child["kind"])
        seen.add(key)
        assert OPERATOR_API_CALLS.get(key, frozenset()) >= CHILD_VERBS, f"{key} cannot be applied and pruned"
    assert ("apps", "deployments") in seen and ("", "services") in seen


def test_every_resource_kube_py_touches_is_granted() -> None:
    """operator/llmfleet/kube.py declares the resources it reads and writes; each must be granted."""
    if not (OPERATOR_SRC / "kube.py").exists():
        pytest.fail("operator/llmfleet/kube.py is missing: it is where the operator's API calls happen")
    import llmfleet.kube as kube

    resources = [*kube.CHILD_RESOURCES, kube.LLMSERVICE, kube.EVENT, kube.ENDPOINT_SLICE]
    for res in resources:
        group = res.api_version.rsplit("/", 1)[0] if "/" in res.api_version else ""
        assert (group, res.plural) in OPERATOR_API_CALLS, f"{res.kind} ({group}/{res.plural}) is not granted"
        assert _plural_of(res.api_version, res.kind) == (group, res.plural), "plural rule of this test"
    for res in kube.CHILD_RESOURCES:
        group = res.api_version.rsplit("/", 1)[0] if "/" in res.api_version else ""
        assert OPERATOR_API_CALLS[group, res.plural] >= CHILD_VERBS, res.kind


HTTP_METHOD_VERBS = {
    "GET": {"get", "list"},
    "POST": {"create"},
    "PATCH": {"patch", "create"},
    "DELETE": {"delete"},
}


def test_kube_py_uses_no_request_the_chart_does_not_grant() -> None:
    """kube.py's HTTP methods map onto the granted verbs; a PUT (verb update) would need a grant."""
    if not (OPERATOR_SRC / "kube.py").exists():
        pytest.fail("operator/llmfleet/kube.py is missing: it is where the operator's API calls happen")
    methods: set[str] = set()
    for node in ast.walk(ast.parse((OPERATOR_SRC / "kube.py").read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_request"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            methods.add(node.args[0].value)
    assert methods, "found no self._request(METHOD, ...) calls in kube.py: update this test"
    unknown = methods - set(HTTP_METHOD_VERBS)
    assert not unknown, (
        f"kube.py sends {unknown}: grant the verb (PUT -> update) in the chart and OPERATOR_API_CALLS"
    )
    granted = set().union(*OPERATOR_API_CALLS.values()) - {"watch"}
    assert granted <= set().union(*(HTTP_METHOD_VERBS[m] for m in methods)), "a verb no request needs"


def _kopf_registered_resources(source: str) -> set[str]:
    """Plurals named in kopf registrations (``@kopf.on.event("apps", "v1", "deployments")``)."""
    plurals = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        if not func.startswith(("kopf.on.", "kopf.timer", "kopf.daemon", "kopf.index")):
            continue
        positional = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        keyword = [
            k.value.value for k in node.keywords if k.arg == "plural" and isinstance(k.value, ast.Constant)
        ]
        if positional or keyword:
            plurals.add(str((positional or keyword)[-1]))
    return plurals


def test_watch_is_granted_exactly_for_what_kopf_watches() -> None:
    if not (OPERATOR_SRC / "handlers.py").exists():
        pytest.fail("operator/llmfleet/handlers.py is missing: the kopf registrations decide what is watched")
    watched = _kopf_registered_resources((OPERATOR_SRC / "handlers.py").read_text())
    assert "deployments" in watched, "the scan found no kopf.on.event registrations: update this test"
    # The LLMService handlers register through **llms (group, version, plural of llmfleet.io).
    watched.add("llmservices")
    granted_watch = {resource for (_, resource), verbs in OPERATOR_API_CALLS.items() if "watch" in verbs}
    assert granted_watch == watched
    for (_, resource), verbs in OPERATOR_API_CALLS.items():
        if resource in watched:
            assert "list" in verbs, f"kopf lists {resource} before watching it"


# Every resource (plural) and kind name an operator module could name in a call or a kopf
# registration. A string literal in the operator's API modules equal to one of these must be
# granted. Cheap, but it catches "watched Pods in handlers.py, forgot the chart".
KNOWN_RESOURCES: dict[str, tuple[str, str]] = {
    "pods": ("", "pods"),
    "nodes": ("", "nodes"),
    "namespaces": ("", "namespaces"),
    "endpoints": ("", "endpoints"),
    "serviceaccounts": ("", "serviceaccounts"),
    "persistentvolumes": ("", "persistentvolumes"),
    "replicasets": ("apps", "replicasets"),
    "statefulsets": ("apps", "statefulsets"),
    "daemonsets": ("apps", "daemonsets"),
    "jobs": ("batch", "jobs"),
    "cronjobs": ("batch", "cronjobs"),
    "ingresses": ("networking.k8s.io", "ingresses"),
    "leases": ("coordination.k8s.io", "leases"),
    "servicemonitors": ("monitoring.coreos.com", "servicemonitors"),
    **{resource: (group, resource) for group, resource in OPERATOR_API_CALLS},
}
KNOWN_KINDS = {
    "Pod": "pods",
    "Node": "nodes",
    "Namespace": "namespaces",
    "Endpoints": "endpoints",
    "ServiceAccount": "serviceaccounts",
    "PersistentVolume": "persistentvolumes",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Job": "jobs",
    "CronJob": "cronjobs",
    "Ingress": "ingresses",
    "Lease": "leases",
    "ServiceMonitor": "servicemonitors",
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
    "EndpointSlice": "endpointslices",
    "Event": "events",
    "LLMService": "llmservices",
}
API_MODULES = ("kube.py", "handlers.py", "reconcile.py", "runner.py", "status.py")


DICT_ACCESS = frozenset({"get", "pop", "setdefault", "__getitem__"})


def _call_arguments(source: str) -> set[str]:
    """String literals passed to calls (API calls, Resource(...), kopf registrations).

    Dict access (``obj.get("endpoints")``), comparisons and docstrings are left out: they name
    fields of objects already read, not resources the operator asks the API server for.
    """
    literals = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr in DICT_ACCESS:
            continue
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                literals.add(arg.value)
    return literals


def test_every_resource_named_in_the_operator_code_is_granted() -> None:
    present = [name for name in API_MODULES if (OPERATOR_SRC / name).exists()]
    assert "kube.py" in present, (
        "operator/llmfleet/kube.py is missing: it is where the operator's API calls happen"
    )
    assert {"Deployment", "deployments"} <= _call_arguments((OPERATOR_SRC / "kube.py").read_text()), (
        "scan finds nothing"
    )
    granted = {resource for _, resource in OPERATOR_API_CALLS}
    missing = []
    for name in present:
        for literal in _call_arguments((OPERATOR_SRC / name).read_text()):
            plural = KNOWN_KINDS.get(literal) or (literal if literal in KNOWN_RESOURCES else None)
            if plural and plural not in granted:
                missing.append(f"{name}: {literal!r} ({KNOWN_RESOURCES.get(plural, ('?', plural))})")
    assert not missing, "named in the operator but not granted by the chart:\n" + "\n".join(sorted(missing))


# --- CRDs ------------------------------------------------------------------------------------


def test_chart_crd_is_the_generated_crd(helm: str) -> None:
    crd = only(render(helm, "default"), "CustomResourceDefinition", "llmservices.llmfleet.io")
    annotations = crd["metadata"].pop("annotations")
    assert annotations == {"helm.sh/resource-policy": "keep"}
    assert crd == build_crd()


def test_chart_crd_template_is_current() -> None:
    expected = generate_install.chart_crd_template(generate_install.crd_text())
    assert generate_install.CHART_CRD.read_text() == expected, "stale chart CRD: run hack/generate_install.py"


def test_chart_crd_is_gated_by_crds_enabled(helm: str) -> None:
    names = {
        o["metadata"]["name"]
        for o in render(helm, "nothing-optional")
        if o["kind"] == "CustomResourceDefinition"
    }
    assert "llmservices.llmfleet.io" not in names


def test_peering_crds_serve_the_kinds_kopf_peers_through(helm: str) -> None:
    objects = render(helm, "default")
    served = {
        (crd["spec"]["group"], crd["spec"]["names"]["plural"], crd["spec"]["scope"])
        for crd in objects
        if crd["kind"] == "CustomResourceDefinition"
    }
    assert ("kopf.dev", "clusterkopfpeerings", "Cluster") in served
    assert ("kopf.dev", "kopfpeerings", "Namespaced") in served
    peering = only(objects, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert f"--peering={peering['metadata']['name']}" in _container(objects)["args"]


# --- manifests/install.yaml ----------------------------------------------------------------


def test_install_yaml_is_current() -> None:
    expected = generate_install.install_yaml(_helm_path(3))
    assert generate_install.INSTALL.read_text() == expected, (
        "stale manifests/install.yaml: run hack/generate_install.py"
    )


def test_install_yaml_starts_with_its_namespace() -> None:
    docs = [d for d in yaml.safe_load_all(generate_install.INSTALL.read_text()) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == NAMESPACE
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for k8s_version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(docs[0], k8s_version, strict=True)


# --- values and their schema -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicaCount=abc", "replicaCount"),
        ("replicas=2", "replicas"),  # not a value of this chart: additionalProperties false
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
        ("operator.images.unknown=x", "unknown"),
    ],
)
def test_schema_rejects_bad_values(helm: str, setting: str, complaint: str) -> None:
    result = _run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_values_match_their_schema() -> None:
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    for name, values in VALUE_SETS.items():
        merged = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
        assert not list(jsonschema.Draft7Validator(schema).iter_errors(merged)), name


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _value_lines() -> Iterator[tuple[str, str, bool]]:
    """(dotted key path, the key's own line, whether a comment line sits right above it)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        above = lines[index - 1].strip() if index else ""
        yield ".".join(key for _, key in stack), line, above.startswith("#")


def _schema_node(path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = _schema()
    for key in path.split("."):
        if node is None or key not in node.get("properties", {}):
            return None
        node = node["properties"][key]
    return node


def test_every_value_is_commented_and_camel_case() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=values.schema.json"
    uncommented = []
    for path, line, commented in _value_lines():
        node = _schema_node(path)
        if node is None:
            continue  # inside a free-form default (securityContext fields): the parent is commented
        is_group = "properties" in node
        if not is_group and not commented:
            uncommented.append(line.strip())
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", path.rsplit(".", 1)[-1]), f"{path} is not camelCase"
    assert not uncommented, "values without a comment above them: " + ", ".join(uncommented)


def test_every_schema_property_is_described() -> None:
    def walk(node: dict[str, Any], path: str) -> Iterator[str]:
        for name, prop in node.get("properties", {}).items():
            if "properties" not in prop and not prop.get("description"):
                yield f"{path}{name}"
            yield from walk(prop, f"{path}{name}.")

    assert not list(walk(_schema(), ""))


# --- docs ------------------------------------------------------------------------------------


def test_documented_prometheus_adapter_rules_cover_every_engine_queue_gauge() -> None:
    """docs/install.md ships the prometheus-adapter rules behind the HPA's Pods metrics."""
    from llmfleet.render.model import INFLIGHT_METRIC, QUEUE_METRIC

    text = (ROOT / "docs" / "install.md").read_text()
    blocks = [
        yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "seriesQuery" in b
    ]
    assert len(blocks) == 1, "expected one prometheus-adapter values block in docs/install.md"
    rules = {rule["name"]["as"]: rule for rule in blocks[0]["rules"]["custom"]}
    queue = {
        "vllm:num_requests_waiting",
        "tgi_queue_size",
        "sglang:num_queue_reqs",
        "llamacpp:requests_deferred",
    }
    running = {
        "vllm:num_requests_running",
        "tgi_batch_current_size",
        "sglang:num_running_reqs",
        "llamacpp:requests_processing",
    }
    # metric -> (series that announce it, series summed into it)
    expected = {QUEUE_METRIC: (queue, queue), INFLIGHT_METRIC: (running, running | queue)}
    assert set(rules) == set(expected)
    for metric, (announced, summed) in expected.items():
        rule = rules[metric]
        for query, gauges in ((rule["seriesQuery"], announced), (rule["metricsQuery"], summed)):
            names = re.search(r'__name__=~"([^"]+)"', query)
            assert names is not None and set(names.group(1).split("|")) == gauges, query
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        assert rule["name"]["matches"] == ".*"
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
    # The HPA asks for exactly these metrics, as Pods metrics.
    hpas = [c for c in _rendered_children() if c["kind"] == "HorizontalPodAutoscaler"]
    assert hpas and all(h["spec"]["metrics"][0]["pods"]["metric"]["name"] == QUEUE_METRIC for h in hpas)
    assert all(m["pods"]["metric"]["name"] in expected for h in hpas for m in h["spec"]["metrics"])


# --- the image the chart runs --------------------------------------------------------------


def test_dockerfile_runs_as_the_user_the_pods_expect(helm: str) -> None:
    from llmfleet.render.cache import GATEWAY_UID

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 65532:65532$", dockerfile, flags=re.M)
    pod = only(render(helm, "default"), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 65532 == GATEWAY_UID
    assert 'ENTRYPOINT ["llmfleet"]' in dockerfile and 'CMD ["run"]' in dockerfile
    # The final stage is the last FROM; it copies the virtual environment and installs nothing.
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=build /opt/llmfleet /opt/llmfleet" in final_stage
    assert not re.search(r"^RUN ", final_stage, flags=re.M), "the final stage must not install anything"
    assert "ARG WITH_SEMANTIC=false" in dockerfile and "torch==${TORCH_VERSION}" in dockerfile
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert dockerignore[dockerignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!operator/"]


@pytest.mark.parametrize("value_set", ["default", "namespaced"])
def test_notes_tell_how_to_apply_a_sample_and_list_llms(value_set: str, tmp_path: Path) -> None:
    """NOTES.txt as `helm install` prints it: Helm 4's client-side dry run needs no cluster
    (Helm 3's still contacts one, and `helm template` never renders NOTES.txt)."""
    helm = _helm_path(4)
    result = subprocess.run(
        [
            helm,
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            "--values",
            "/dev/stdin",
        ],
        input=json.dumps(VALUE_SETS[value_set]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("\nNOTES:\n", 1)[1]
    assert "kubectl apply -f manifests/samples/llamacpp-cpu.yaml" in notes
    assert "kubectl get llms" in notes
    assert f"rollout status deployment/{RELEASE}" in notes
    if value_set == "namespaced":
        assert "It serves LLMServices in: team-a, team-b." in notes
        assert 'The sample is in namespace "default"' in notes
    else:
        assert "It serves LLMServices in every namespace." in notes
