"""Status decisions from observed children: conditions, reasons, phase, printer fields, transition times."""

from __future__ import annotations

from typing import Any

import pytest

from llmfleet.api import LLMService
from llmfleet.status import (
    Cond,
    Reason,
    deployment_state,
    desired_status,
    invalid_status,
    merge_conditions,
    status_changed,
)
from llmfleet.validation import validate_service
from tests.specs import minimal, service

Obj = dict[str, Any]
NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"


def svc(**overrides: Any) -> LLMService:
    obj = service(minimal("llamacpp", **overrides))
    obj["metadata"]["generation"] = 4
    return validate_service(obj)


def deployment(
    name: str,
    ready: int = 1,
    desired: int = 1,
    *,
    generation: int = 1,
    observed: int = 1,
    conditions: list[Obj] | None = None,
) -> tuple[tuple[str, str, str], Obj]:
    return ("apps/v1", "Deployment", name), {
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": ready,
            "conditions": conditions or [],
        },
    }


def hpa(conditions: list[Obj] | None = None, current: int | None = 2) -> tuple[tuple[str, str, str], Obj]:
    status: Obj = {"conditions": conditions or []}
    if current is not None:
        status.update(currentReplicas=current, desiredReplicas=current)
    return ("autoscaling/v2", "HorizontalPodAutoscaler", "chat"), {
        "metadata": {"name": "chat"},
        "status": status,
    }


def conds(status: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def healthy(**extra: Obj) -> dict[tuple[str, str, str], Obj]:
    return dict([deployment("chat-model", 2, 2), deployment("chat-lb", 1, 1), *extra.items()])  # type: ignore[list-item]


def test_printer_fields_and_a_ready_service() -> None:
    status = desired_status(svc(replicas={"min": 2, "max": 2}), healthy(), 2, None, None, NOW)
    assert status["model"] == "chat"
    assert status["endpoint"] == "http://chat.ml.svc:80"
    assert status["replicas"] == {"desired": 2, "ready": 2, "display": "2/2"}
    assert status["observedGeneration"] == 4
    assert status["phase"] == "Ready"
    assert conds(status) == {
        "Ready": ("True", Reason.READY),
        "ModelAvailable": ("True", Reason.REPLICAS_READY),
        "LoadBalancerAvailable": ("True", Reason.LB_READY),
        "CacheAvailable": ("False", Reason.CACHE_DISABLED),
        "Autoscaling": ("False", Reason.FIXED_REPLICAS),
    }


@pytest.mark.parametrize(
    ("children", "endpoints", "phase", "ready_reason", "model_reason"),
    [
        ({}, 0, "Pending", Reason.MODEL_UNAVAILABLE, Reason.NOT_CREATED),
        (
            dict([deployment("chat-model", 0, 2), deployment("chat-lb", 1)]),
            0,
            "Progressing",
            Reason.MODEL_UNAVAILABLE,
            Reason.NO_REPLICAS_READY,
        ),
        (
            dict(
                [
                    deployment(
                        "chat-model",
                        0,
                        2,
                        conditions=[
                            {
                                "type": "Progressing",
                                "status": "False",
                                "reason": "ProgressDeadlineExceeded",
                                "message": "timed out",
                            }
                        ],
                    ),
                    deployment("chat-lb", 1),
                ]
            ),
            0,
            "Degraded",
            Reason.MODEL_UNAVAILABLE,
            Reason.PROGRESS_DEADLINE,
        ),
        (
            dict([deployment("chat-model", 1, 2), deployment("chat-lb", 1)]),
            1,
            "Degraded",
            Reason.READY,
            Reason.PARTIALLY_READY,
        ),
        (
            dict([deployment("chat-model", 2, 2, generation=2, observed=1), deployment("chat-lb", 1)]),
            2,
            "Ready",
            Reason.READY,
            Reason.ROLLING_OUT,
        ),
        (healthy(), 0, "Progressing", Reason.LB_UNAVAILABLE, Reason.REPLICAS_READY),
        (
            dict([deployment("chat-model", 2, 2), deployment("chat-lb", 0)]),
            2,
            "Progressing",
            Reason.LB_UNAVAILABLE,
            Reason.REPLICAS_READY,
        ),
    ],
)
def test_phase_and_reasons(
    children: dict[Any, Obj], endpoints: int, phase: str, ready_reason: str, model_reason: str
) -> None:
    status = desired_status(svc(replicas={"min": 2, "max": 2}), children, endpoints, None, None, NOW)
    assert status["phase"] == phase
    assert conds(status)["Ready"][1] == ready_reason
    assert conds(status)["ModelAvailable"][1] == model_reason


def test_messages_tell_the_admin_where_to_look() -> None:
    status = desired_status(
        svc(), dict([deployment("chat-model", 0, 1), deployment("chat-lb", 1)]), 0, None, None, NOW
    )
    model = next(c for c in status["conditions"] if c["type"] == "ModelAvailable")
    assert (
        "kubectl -n ml describe pods -l app.kubernetes.io/instance=chat,app.kubernetes.io/component=model"
        in model["message"]
    )
    lb = next(c for c in status["conditions"] if c["type"] == "LoadBalancerAvailable")
    assert lb["reason"] == Reason.NO_ENDPOINTS and "503" in lb["message"]


@pytest.mark.parametrize(
    ("redis", "gateway", "reason", "ready"),
    [
        (None, None, Reason.NOT_CREATED, "False"),
        (0, 1, Reason.REDIS_NOT_READY, "False"),
        (1, 0, Reason.GATEWAY_NOT_READY, "False"),
        (1, 2, Reason.CACHE_READY, "True"),
    ],
)
def test_cache_gates_ready_only_when_enabled(
    redis: int | None, gateway: int | None, reason: str, ready: str
) -> None:
    children = healthy()
    if redis is not None and gateway is not None:
        children.update(dict([deployment("chat-cache", redis), deployment("chat-gateway", gateway, 2)]))
    status = desired_status(svc(cache={"enabled": True}), children, 2, None, None, NOW)
    assert conds(status)["CacheAvailable"] == ("True" if reason == Reason.CACHE_READY else "False", reason)
    assert conds(status)["Ready"][0] == ready


@pytest.mark.parametrize(
    ("hpa_child", "status", "reason", "phase"),
    [
        (None, "False", Reason.NOT_CREATED, "Degraded"),
        (hpa(current=None), "Unknown", Reason.HPA_PENDING, "Ready"),
        (
            hpa([{"type": "ScalingActive", "status": "False", "message": "no metrics returned"}]),
            "False",
            Reason.METRICS_UNAVAILABLE,
            "Degraded",
        ),
        (
            hpa([{"type": "AbleToScale", "status": "False", "message": "quota"}]),
            "False",
            Reason.HPA_CANNOT_SCALE,
            "Degraded",
        ),
        (hpa([{"type": "ScalingActive", "status": "True"}]), "True", Reason.HPA_ACTIVE, "Ready"),
    ],
)
def test_autoscaling_condition(hpa_child: Any, status: str, reason: str, phase: str) -> None:
    children = healthy()
    if hpa_child is not None:
        children[hpa_child[0]] = hpa_child[1]
    result = desired_status(svc(replicas={"min": 2, "max": 5}), children, 2, None, None, NOW)
    assert conds(result)["Autoscaling"] == (status, reason)
    assert result["phase"] == phase
    if reason == Reason.METRICS_UNAVAILABLE:
        assert "llmfleet_queue_depth" in next(
            c["message"] for c in result["conditions"] if c["type"] == "Autoscaling"
        )


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    first = merge_conditions([], [Cond("Ready", "False", "A", "one")], 1, NOW)
    same = merge_conditions(first, [Cond("Ready", "False", "B", "other message")], 2, LATER)
    assert (
        same[0]["lastTransitionTime"] == NOW
        and same[0]["reason"] == "B"
        and same[0]["observedGeneration"] == 2
    )
    flipped = merge_conditions(same, [Cond("Ready", "True", "C", "ok")], 2, LATER)
    assert flipped[0]["lastTransitionTime"] == LATER


def test_unchanged_status_is_not_written_again() -> None:
    first = desired_status(svc(), healthy(), 2, None, None, NOW)
    again = desired_status(svc(), healthy(), 2, None, first, LATER)
    assert again == first
    assert not status_changed(first, again)
    moved = desired_status(
        svc(), dict([deployment("chat-model", 0), deployment("chat-lb", 1)]), 2, None, first, LATER
    )
    assert status_changed(first, moved)


def test_invalid_spec_status_keeps_other_conditions() -> None:
    obj: Obj = {
        "metadata": {"name": "chat", "generation": 3},
        "status": {
            "conditions": [
                {
                    "type": "ModelAvailable",
                    "status": "True",
                    "reason": "ReplicasReady",
                    "message": "",
                    "lastTransitionTime": NOW,
                }
            ]
        },
    }
    status = invalid_status(obj, ["spec.replicas: min must be <= max"], LATER)
    assert status["phase"] == "Failed" and status["observedGeneration"] == 3
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", Reason.INVALID_SPEC)
    assert "spec.replicas: min must be <= max" in ready["message"]
    assert [c["type"] for c in status["conditions"]] == ["Ready", "ModelAvailable"]


def test_deployment_state_without_status() -> None:
    state = deployment_state({"metadata": {"generation": 1}, "spec": {"replicas": 3}})
    assert (state.exists, state.desired, state.ready, state.rolled_out) == (True, 3, 0, False)
    assert not deployment_state(None).exists
