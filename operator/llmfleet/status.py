"""What an LLMService's status says, decided from observed children alone (pure, no I/O).

Each condition answers one admin question ("are model replicas serving?", "does the balancer
have somewhere to send traffic?") with a CamelCase reason from the constants below and a
message that says what to look at next. ``Ready`` is the conjunction of the conditions that
gate traffic (model, balancer, and the cache when enabled); ``Autoscaling`` and
``PredictiveScaling`` only degrade the phase, because a fleet without working autoscaling still
serves. ``lastTransitionTime`` moves only when a condition's status flips, so a changing
message never looks like an outage in ``kubectl describe``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmfleet.api import ConditionType, LLMService, Phase, PredictiveStatus
from llmfleet.render.common import RenderContext
from llmfleet.render.model import has_hpa, hpa_floor

Obj = dict[str, Any]
ChildKey = tuple[str, str, str]
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class Reason:
    """Condition reasons (CamelCase, stable: alerts and scripts match on them)."""

    READY = "AllComponentsReady"
    INVALID_SPEC = "InvalidSpec"
    MODEL_UNAVAILABLE = "ModelUnavailable"
    LB_UNAVAILABLE = "LoadBalancerUnavailable"
    CACHE_UNAVAILABLE = "CacheUnavailable"
    NOT_CREATED = "NotCreated"
    REPLICAS_READY = "ReplicasReady"
    ROLLING_OUT = "RollingOut"
    PARTIALLY_READY = "ReplicasPartiallyReady"
    NO_REPLICAS_READY = "NoReplicasReady"
    PROGRESS_DEADLINE = "ProgressDeadlineExceeded"
    REPLICA_FAILURE = "ReplicaFailure"
    LB_READY = "LoadBalancerReady"
    LB_NOT_READY = "LoadBalancerNotReady"
    NO_ENDPOINTS = "NoReadyEndpoints"
    CACHE_READY = "CacheReady"
    CACHE_DISABLED = "CacheDisabled"
    REDIS_NOT_READY = "RedisNotReady"
    GATEWAY_NOT_READY = "GatewayNotReady"
    HPA_ACTIVE = "HPAActive"
    HPA_PENDING = "HPAPending"
    HPA_CANNOT_SCALE = "HPAUnableToScale"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    FIXED_REPLICAS = "FixedReplicas"
    PREDICTIVE_UNAVAILABLE = "PredictorUnavailable"
    FLOOR_APPLIED = "FloorApplied"


@dataclass(frozen=True)
class Cond:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class PredictiveOutcome:
    """The predictive scaler's answer for one service, as the reconcile hands it to the status."""

    floor: int | None
    status: PredictiveStatus | None
    condition: Cond


@dataclass(frozen=True)
class DeploymentState:
    exists: bool
    desired: int
    ready: int
    rolled_out: bool
    failure: tuple[str, str] | None  # (reason, message) from the Deployment's own conditions


def deployment_state(dep: Obj | None) -> DeploymentState:
    if dep is None:
        return DeploymentState(False, 0, 0, False, None)
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    desired = int(spec.get("replicas", status.get("replicas", 1)))
    ready = int(status.get("readyReplicas") or 0)
    generation = int((dep.get("metadata") or {}).get("generation") or 0)
    rolled_out = (
        int(status.get("observedGeneration") or 0) >= generation
        and int(status.get("updatedReplicas") or 0) >= desired
    )
    failure = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failure = (Reason.PROGRESS_DEADLINE, str(cond.get("message", "")))
        elif cond.get("type") == "ReplicaFailure" and cond.get("status") == TRUE:
            failure = (Reason.REPLICA_FAILURE, str(cond.get("message", "")))
    return DeploymentState(True, desired, ready, rolled_out, failure)


def _pods_hint(service: LLMService, component: str) -> str:
    return (
        f"kubectl -n {service.namespace} describe pods -l "
        f"app.kubernetes.io/instance={service.name},app.kubernetes.io/component={component}"
    )


def _not_created(kind: ConditionType, child: str) -> Cond:
    return Cond(kind, FALSE, Reason.NOT_CREATED, f"{child} does not exist yet; the operator is creating it.")


def model_condition(service: LLMService, dep: DeploymentState) -> Cond:
    kind = ConditionType.MODEL_AVAILABLE
    name = f"{service.name}-model"
    if not dep.exists:
        return _not_created(kind, f"Deployment {name}")
    if dep.ready == 0:
        if dep.failure is not None:
            reason, detail = dep.failure
            return Cond(
                kind,
                FALSE,
                reason,
                f"Deployment {name}: {detail}. Check events with: {_pods_hint(service, 'model')}",
            )
        return Cond(
            kind,
            FALSE,
            Reason.NO_REPLICAS_READY,
            f"0 of {dep.desired} model replicas are ready; they may be pulling the image, waiting for a GPU "
            f"or downloading the model. Check: {_pods_hint(service, 'model')}",
        )
    if dep.ready < dep.desired:
        return Cond(
            kind,
            TRUE,
            Reason.PARTIALLY_READY,
            f"{dep.ready} of {dep.desired} model replicas are ready; the rest are starting or failing. "
            f"Check: {_pods_hint(service, 'model')}",
        )
    if not dep.rolled_out:
        return Cond(
            kind, TRUE, Reason.ROLLING_OUT, f"{dep.ready} replicas serve while a new version rolls out."
        )
    return Cond(kind, TRUE, Reason.REPLICAS_READY, f"{dep.ready} of {dep.desired} model replicas are ready.")


def lb_condition(service: LLMService, dep: DeploymentState, endpoints: int) -> Cond:
    kind = ConditionType.LOAD_BALANCER_AVAILABLE
    engine = str(service.spec.load_balancer.engine)
    name = f"{service.name}-lb"
    if not dep.exists:
        return _not_created(kind, f"Deployment {name}")
    if dep.ready == 0:
        return Cond(
            kind,
            FALSE,
            Reason.LB_NOT_READY,
            f"No {engine} pod of {name} is ready. Check: {_pods_hint(service, 'lb')}",
        )
    if endpoints == 0:
        return Cond(
            kind,
            FALSE,
            Reason.NO_ENDPOINTS,
            f"{engine} is up but has no ready model replica to route to; it answers 503 until ModelAvailable is True.",
        )
    return Cond(
        kind,
        TRUE,
        Reason.LB_READY,
        f"{dep.ready} {engine} pod(s) route to {endpoints} ready model replica(s).",
    )


def cache_condition(service: LLMService, redis: DeploymentState, gateway: DeploymentState) -> Cond:
    kind = ConditionType.CACHE_AVAILABLE
    if not service.spec.cache.enabled:
        return Cond(
            kind,
            FALSE,
            Reason.CACHE_DISABLED,
            "cache.enabled is false: requests go straight to the load balancer.",
        )
    if not redis.exists or not gateway.exists:
        return Cond(
            kind,
            FALSE,
            Reason.NOT_CREATED,
            "The Redis cache or the caching gateway does not exist yet; the operator is creating them.",
        )
    if redis.ready == 0:
        return Cond(
            kind, FALSE, Reason.REDIS_NOT_READY, f"Redis is not ready. Check: {_pods_hint(service, 'cache')}"
        )
    if gateway.ready == 0:
        return Cond(
            kind,
            FALSE,
            Reason.GATEWAY_NOT_READY,
            f"No caching gateway pod is ready. Check: {_pods_hint(service, 'gateway')}",
        )
    return Cond(kind, TRUE, Reason.CACHE_READY, f"Redis and {gateway.ready} gateway pod(s) are ready.")


def autoscaling_condition(service: LLMService, hpa: Obj | None, floor: int) -> Cond:
    kind = ConditionType.AUTOSCALING
    spec = service.spec
    if not has_hpa(spec):
        return Cond(
            kind,
            FALSE,
            Reason.FIXED_REPLICAS,
            f"replicas.max equals replicas.min ({spec.replicas.min}): fixed size, no HPA. Set replicas.max higher to autoscale on queue depth.",
        )
    if hpa is None:
        return _not_created(kind, f"HorizontalPodAutoscaler {service.name}")
    for cond in (hpa.get("status") or {}).get("conditions") or []:
        if cond.get("status") != FALSE:
            continue
        if cond.get("type") == "ScalingActive":
            return Cond(
                kind,
                FALSE,
                Reason.METRICS_UNAVAILABLE,
                f"The HPA cannot read the queue-depth metric ({cond.get('message', '')}); install a custom-metrics "
                "adapter (e.g. prometheus-adapter) that serves llmfleet_queue_depth. See docs/operator.md.",
            )
        if cond.get("type") == "AbleToScale":
            return Cond(
                kind, FALSE, Reason.HPA_CANNOT_SCALE, f"The HPA cannot scale: {cond.get('message', '')}"
            )
    status = hpa.get("status") or {}
    if "currentReplicas" not in status and "desiredReplicas" not in status:
        return Cond(
            kind,
            UNKNOWN,
            Reason.HPA_PENDING,
            "The HPA has not reported yet (is the HPA controller running?).",
        )
    return Cond(
        kind,
        TRUE,
        Reason.HPA_ACTIVE,
        f"Scaling between {floor} and {spec.replicas.upper} replicas on queue depth "
        f"(target {spec.autoscaling.target_queue_depth} waiting per replica); now {status.get('currentReplicas', 0)}.",
    )


def ready_condition(gates: list[Cond]) -> Cond:
    failing = [c for c in gates if c.status != TRUE]
    if not failing:
        return Cond(
            ConditionType.READY,
            TRUE,
            Reason.READY,
            "The endpoint serves: model replicas, balancer and cache are ready.",
        )
    first = failing[0]
    reason = {
        ConditionType.MODEL_AVAILABLE: Reason.MODEL_UNAVAILABLE,
        ConditionType.LOAD_BALANCER_AVAILABLE: Reason.LB_UNAVAILABLE,
        ConditionType.CACHE_AVAILABLE: Reason.CACHE_UNAVAILABLE,
    }[ConditionType(first.type)]
    return Cond(
        ConditionType.READY,
        FALSE,
        reason,
        f"{first.type} is {first.status} ({first.reason}): {first.message}",
    )


def phase_of(ready: Cond, model: Cond, extras: list[Cond]) -> Phase:
    if ready.status == TRUE:
        degraded = model.reason == Reason.PARTIALLY_READY or any(c.status == FALSE for c in extras)
        return Phase.DEGRADED if degraded else Phase.READY
    if model.reason == Reason.NOT_CREATED:
        return Phase.PENDING
    if model.reason in (Reason.PROGRESS_DEADLINE, Reason.REPLICA_FAILURE):
        return Phase.DEGRADED
    return Phase.PROGRESSING


def merge_conditions(previous: list[Obj], current: list[Cond], generation: int | None, now: str) -> list[Obj]:
    """metav1.Conditions in ``current``'s order; lastTransitionTime kept while the status holds."""
    before = {c.get("type"): c for c in previous}
    merged: list[Obj] = []
    for cond in current:
        old = before.get(cond.type)
        moved = old is None or old.get("status") != cond.status or not old.get("lastTransitionTime")
        entry: Obj = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": now if moved else old["lastTransitionTime"],  # type: ignore[index]
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def desired_status(
    service: LLMService,
    children: Mapping[ChildKey, Obj],
    endpoints: int,
    predictive: PredictiveOutcome | None,
    previous: Obj | None,
    now: str,
) -> Obj:
    """The full status object for a valid service (the API's camelCase shape)."""
    name = service.name
    previous = previous or {}

    def dep(suffix: str) -> DeploymentState:
        return deployment_state(children.get(("apps/v1", "Deployment", f"{name}{suffix}")))

    model_dep = dep("-model")
    model = model_condition(service, model_dep)
    lb = lb_condition(service, dep("-lb"), endpoints)
    cache = cache_condition(service, dep("-cache"), dep("-gateway"))
    floor = hpa_floor(
        service.spec, RenderContext(name, predictive_floor=predictive.floor if predictive else None)
    )
    hpa = children.get(("autoscaling/v2", "HorizontalPodAutoscaler", name))
    scaling = autoscaling_condition(service, hpa, floor)
    gates = [model, lb] + ([cache] if service.spec.cache.enabled else [])
    ready = ready_condition(gates)
    extras = [scaling] if has_hpa(service.spec) else []
    conditions = [ready, model, lb, cache, scaling]
    if predictive is not None:
        conditions.append(predictive.condition)
        extras.append(predictive.condition)
    generation = service.metadata.get("generation")
    desired = model_dep.desired if model_dep.exists else floor
    status: Obj = {
        "observedGeneration": generation,
        "phase": str(phase_of(ready, model, extras)),
        "model": service.spec.served_model_name(name),
        "replicas": {"desired": desired, "ready": model_dep.ready, "display": f"{model_dep.ready}/{desired}"},
        "endpoint": f"http://{name}.{service.namespace}.svc:80",
        "conditions": merge_conditions(previous.get("conditions") or [], conditions, generation, now),
        "predictive": None,
    }
    if predictive is not None and predictive.status is not None:
        status["predictive"] = predictive.status.to_api()
    elif predictive is not None:
        status["predictive"] = previous.get("predictive")
    return status


def invalid_status(obj: Obj, problems: list[str], now: str) -> Obj:
    """Status for an object the operator cannot act on: Ready=False/InvalidSpec, phase Failed.

    Only the fields it can know are set; the rest of the previous status stays (a merge patch).
    """
    previous = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    message = "Fix the spec and re-apply: " + "; ".join(problems)
    ready = Cond(ConditionType.READY, FALSE, Reason.INVALID_SPEC, message)
    others = [c for c in previous.get("conditions") or [] if c.get("type") != ConditionType.READY]
    conditions = merge_conditions(previous.get("conditions") or [], [ready], generation, now) + others
    return {"observedGeneration": generation, "phase": str(Phase.FAILED), "conditions": conditions}


def status_changed(previous: Obj | None, desired: Obj) -> bool:
    """Whether writing ``desired`` would change anything (keys absent in both count as equal)."""
    previous = previous or {}
    return any(previous.get(key) != value for key, value in desired.items())


def transitions(previous: list[Obj], current: list[Obj]) -> list[Obj]:
    """Conditions whose status changed (or appeared), for Events."""
    before = {c.get("type"): c.get("status") for c in previous}
    return [c for c in current if before.get(c["type"]) != c["status"]]
