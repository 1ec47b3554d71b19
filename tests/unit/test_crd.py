"""The CRD is generated from the models, structural, and checks what the models check.

Golden test: regenerating the CRD must reproduce the committed file byte for byte. The samples
validate against the CRD's own openAPIV3Schema (jsonschema), and the CEL rules are evaluated
with a real CEL interpreter (cel-python) after applying the schema's defaults the way the API
server does, so a rule that is wrong or never fires fails here rather than in a cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from llmfleet.crd import DEFAULT_OUTPUT, build_crd, crd_yaml
from tests.specs import ROOT, SAMPLES, load_sample, minimal, service

CRD_FILE = ROOT / DEFAULT_OUTPUT


def schema() -> dict[str, Any]:
    result: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "stale CRD: run `llmfleet crd`"


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, prop in node.get("properties", {}).items():
        out += _walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    for path, node in _walk(schema()):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"):
            assert banned not in node, f"{path} uses {banned}"
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path.endswith(("tolerations[]", ".affinity", ".valueFrom")), f"{path} is free-form"


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    undocumented = [
        p
        for p, n in _walk(schema()["properties"]["spec"], "spec")
        if not n.get("description") and not p.endswith(("[]", "{}"))
    ]
    assert undocumented == []


def test_crd_names_columns_and_subresources() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    names = crd["spec"]["names"]
    assert (names["plural"], names["shortNames"], names["categories"]) == (
        "llmservices",
        ["llms"],
        ["llmfleet"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Model", "Engine", "Ready", "Endpoint", "Age"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == [
        "type"
    ]
    assert "type" in conditions["items"]["required"]


def _apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it, before validation."""
    if isinstance(value, dict) and "properties" in node:
        for name, prop in node["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = _apply_defaults(prop, value[name])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value = [_apply_defaults(node["items"], item) for item in value]
    return value


def _cel_failures(node: dict[str, Any], value: Any, env: celpy.Environment) -> list[str]:
    failures = []
    for rule in node.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            failures.append(rule["message"])
    if isinstance(value, dict):
        for name, prop in node.get("properties", {}).items():
            if name in value:
                failures += _cel_failures(prop, value[name], env)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            failures += _cel_failures(node["items"], item, env)
    return failures


def admit(obj: dict[str, Any]) -> list[str]:
    """What the API server would say about ``obj``: schema errors, then CEL rule messages."""
    root = schema()
    obj = _apply_defaults(root, copy.deepcopy(obj))
    errors = [e.message for e in jsonschema.Draft4Validator(_as_draft4(root)).iter_errors(obj)]
    return errors or _cel_failures(root, obj, celpy.Environment())


def _as_draft4(node: Any) -> Any:
    """OpenAPI v3.0 keywords jsonschema does not know are dropped (x-kubernetes-*)."""
    if isinstance(node, dict):
        return {k: _as_draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [_as_draft4(v) for v in node]
    return node


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_samples_are_admitted_by_the_crd(path: Path) -> None:
    assert admit(load_sample(path)) == []


# Mistakes the API server itself must reject (schema or CEL), with the message users will see.
REJECTED_BY_API_SERVER = [
    ("min-above-max", minimal("vllm", replicas={"min": 3, "max": 2}), "replicas.min must be <= replicas.max"),
    (
        "affinity-without-header",
        minimal("vllm", loadBalancer={"strategy": "session-affinity"}),
        "sessionHeader is required",
    ),
    (
        "product-without-gpu",
        minimal("llamacpp", resources={"gpu": {"count": 0, "product": "NVIDIA-L4"}}),
        "gpu.product needs gpu.count > 0",
    ),
    ("vllm-on-cpu", minimal("vllm", resources={"gpu": {"count": 0}}), "need resources.gpu.count >= 1"),
    (
        "vllm-without-resources",
        {"model": {"uri": "hf://a/b"}, "engine": {"kind": "vllm"}},
        "need resources.gpu.count >= 1",
    ),
    (
        "llamacpp-quantization",
        minimal("llamacpp", engine={"kind": "llamacpp", "tuning": {"quantization": "gptq"}}),
        "quantization must be none",
    ),
    (
        "ollama-autoscaling",
        minimal("ollama", replicas={"min": 1, "max": 2}),
        "replicas.max must equal replicas.min",
    ),
    (
        "semantic-without-cache",
        minimal("vllm", cache={"semantic": {"enabled": True}}),
        "cache.semantic.enabled needs cache.enabled",
    ),
    (
        "horizon-below-interval",
        minimal("vllm", autoscaling={"predictive": {"horizonSeconds": 60, "intervalSeconds": 120}}),
        "horizonSeconds must be >= intervalSeconds",
    ),
    ("bad-enum", minimal("vllm", loadBalancer={"strategy": "random"}), "is not one of"),
    ("bad-quantity", minimal("vllm", resources={"gpu": {"count": 1}, "cpu": "eight"}), "does not match"),
]


@pytest.mark.parametrize(
    ("spec", "fragment"), [c[1:] for c in REJECTED_BY_API_SERVER], ids=[c[0] for c in REJECTED_BY_API_SERVER]
)
def test_api_server_rejects_mistakes_before_the_operator_sees_them(
    spec: dict[str, Any], fragment: str
) -> None:
    messages = admit(service(spec))
    assert any(fragment in m for m in messages), messages


@pytest.mark.parametrize("engine", ["vllm", "tgi", "sglang", "llamacpp", "ollama"])
def test_minimal_specs_pass_every_cel_rule(engine: str) -> None:
    assert admit(service(minimal(engine))) == []
