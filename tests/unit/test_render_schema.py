"""Every rendered child is a valid Kubernetes object, for the samples and for random valid specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from llmfleet.render import Endpoint, RenderContext, render_children
from llmfleet.validation import validate_service
from tests.specs import SAMPLES, load_sample, service, valid_specs
from tests.support.k8s_schema import KUBERNETES_VERSIONS, validation_errors

OWNER = {
    "apiVersion": "llmfleet.io/v1alpha1",
    "kind": "LLMService",
    "metadata": {"name": "chat", "uid": "0b7c3c52-8a8f-4f61-9d1e-3b1e3a2c9f00"},
}
ENDPOINTS = (Endpoint("10.0.0.11", 8000, "chat-model-abc"), Endpoint("10.0.0.12", 8000, "chat-model-def"))


def _errors(obj: dict[str, Any], endpoints: tuple[Endpoint, ...] | None) -> list[str]:
    svc = validate_service(obj)
    ctx = RenderContext(
        name=svc.name,
        namespace=svc.namespace,
        owner={**OWNER, "metadata": {**OWNER["metadata"], "name": svc.name}},
        endpoints=endpoints,
        predictive_floor=3,
    )
    children = render_children(svc.spec, ctx)
    assert children, "nothing rendered"
    return [e for m in children for v in KUBERNETES_VERSIONS if (e := validation_errors(m, v))]


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
@pytest.mark.parametrize("endpoints", [None, ENDPOINTS], ids=["offline", "with-endpoints"])
def test_sample_children_validate_against_kubernetes_schemas(
    path: Path, endpoints: tuple[Endpoint, ...] | None
) -> None:
    assert _errors(load_sample(path), endpoints) == []


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(spec=valid_specs())
def test_random_valid_specs_render_valid_kubernetes_objects(spec: dict[str, Any]) -> None:
    assert _errors(service(spec), ENDPOINTS) == []


def test_the_validator_catches_a_broken_manifest() -> None:
    """Guard against a validator that accepts everything."""
    svc = validate_service(load_sample(SAMPLES[0]))
    deployment = next(
        m for m in render_children(svc.spec, RenderContext(name=svc.name)) if m["kind"] == "Deployment"
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    deployment["spec"]["unknownField"] = 1
    assert validation_errors(deployment, "1.33.0") is not None
