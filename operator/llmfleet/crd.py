"""Generate the LLMService CustomResourceDefinition from the pydantic models in ``api.py``.

The CRD is never edited by hand: ``llmfleet crd`` writes ``crds/llmservices.llmfleet.io.yaml``
and a golden test fails when the committed file and the models drift. Pydantic emits JSON
Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema, so this module inlines
``$ref``s, turns ``Optional[X]`` (``anyOf [X, null]``) into plain ``X``, drops titles, rewrites
numeric ``exclusiveMinimum`` into the v3.0 boolean form and keeps ``x-kubernetes-*`` extensions
(CEL rules, list-map keys, preserve-unknown-fields where a free-form Kubernetes type is embedded).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from llmfleet import GROUP, KIND, PLURAL, VERSION
from llmfleet.api import LLMServiceSpec, LLMServiceStatus

CRD_NAME = f"{PLURAL}.{GROUP}"
DEFAULT_OUTPUT = Path("crds") / f"{CRD_NAME}.yaml"

_DROP = {"title"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs and normalise one schema node (recursively)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node['anyOf']}")
        merged = {**variants[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        if merged.get("default", "absent") is None:
            del merged["default"]
        return _resolve(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas forbid it beside properties; the API server prunes unknown fields
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = _resolve(value, defs)
    if out.get("x-kubernetes-preserve-unknown-fields"):
        # A free-form embedded Kubernetes object: keep only what is meaningful for it.
        out = {
            k: v
            for k, v in out.items()
            if k in ("type", "description", "x-kubernetes-preserve-unknown-fields")
        }
        out["type"] = "object"
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if (
        out.get("type") == "array"
        and "items" in out
        and out["items"].get("x-kubernetes-preserve-unknown-fields")
    ):
        out["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return out


def structural_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3.0 schema of a pydantic model, as Kubernetes wants it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


def _strip_defaults_of_required(node: Any) -> None:
    """Objects with required fields get no ``default: {}``: the API server would fail to apply it."""
    if not isinstance(node, dict):
        return
    for prop in node.get("properties", {}).values():
        _strip_defaults_of_required(prop)
        if (
            isinstance(prop, dict)
            and prop.get("type") == "object"
            and "default" in prop
            and prop.get("required")
        ):
            del prop["default"]
    if isinstance(node.get("items"), dict):
        _strip_defaults_of_required(node["items"])


def build_crd() -> dict[str, Any]:
    spec_schema = structural_schema(LLMServiceSpec)
    status_schema = structural_schema(LLMServiceStatus)
    for schema in (spec_schema, status_schema):
        _strip_defaults_of_required(schema)
    spec_schema["description"] = (
        "Desired state of the served model: engine, resources, load balancer, cache and autoscaling."
    )
    status_schema["description"] = "Observed state, written by the operator."
    root = {
        "type": "object",
        "description": "LLMService is a served large language model: model-server replicas behind an NGINX or HAProxy load balancer, an optional Redis response cache, and an HPA whose floor a predictive scaler raises ahead of load.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this object: llmfleet.io/v1alpha1.",
            },
            "kind": {"type": "string", "description": "Kind of this object: LLMService."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "llmfleet", "app.kubernetes.io/part-of": "llmfleet"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["llms"],
                "categories": ["llmfleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Model",
                            "type": "string",
                            "jsonPath": ".status.model",
                            "description": "Model name clients send.",
                        },
                        {
                            "name": "Engine",
                            "type": "string",
                            "jsonPath": ".spec.engine.kind",
                            "description": "Model server.",
                        },
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": ".status.replicas.display",
                            "description": "Ready/desired model replicas.",
                        },
                        {
                            "name": "Endpoint",
                            "type": "string",
                            "jsonPath": ".status.endpoint",
                            "description": "In-cluster OpenAI-compatible URL.",
                        },
                        {
                            "name": "Phase",
                            "type": "string",
                            "jsonPath": ".status.phase",
                            "priority": 1,
                            "description": "Summary state.",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `llmfleet crd` from operator/llmfleet/api.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", default=str(DEFAULT_OUTPUT), help="file to write; '-' for standard output"
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write: exit 1 when the file differs from the models"
    )


def main(args: argparse.Namespace) -> int:
    text = crd_yaml()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run `llmfleet crd -o {path}`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    return 0
