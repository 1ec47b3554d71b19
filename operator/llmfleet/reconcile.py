"""One level-based reconcile for every trigger: observe, plan (pure), execute (short).

Create, resume, spec update, the drift timer and child events all call :func:`reconcile`; it
never asks *what changed*, only *what should exist* given the spec and what the cluster holds
now. So a restart in the middle of a pass, a hand edit, a lost event or a retried conflict all
end the same way: the next pass converges.

:func:`plan` is the decision, KubeAI ``calculatePodPlan`` style: desired children from the
renderers, each compared with its live object, and only the differing ones applied. Each
desired manifest carries a hash of itself (``llmfleet.io/applied-hash``) and must be contained
in the live object: the hash catches a field the new manifest dropped (server-side apply then
removes it), containment catches a hand edit of a field we own. A pass that finds nothing to
change sends no write at all, not even a no-op apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from llmfleet.api import ConditionType, LLMService
from llmfleet.kube import ApiRejected, Kube, Obj
from llmfleet.quantity import is_quantity, parse_quantity
from llmfleet.render import Endpoint, RenderContext, child_key, render_children
from llmfleet.render.cache import password_secret
from llmfleet.render.common import checksum, metadata
from llmfleet.render.lb import endpoints_from_addresses
from llmfleet.status import (
    TRUE,
    ChildKey,
    Cond,
    PredictiveOutcome,
    Reason,
    deployment_state,
    desired_status,
    invalid_status,
    status_changed,
    transitions,
)
from llmfleet.validation import InvalidService, validate_service

logger = logging.getLogger(__name__)

HASH_ANNOTATION = "llmfleet.io/applied-hash"

# The predictive-scaling seam (llmfleet.predictive.LivePredictor in production): given the
# validated service, its previous status.predictive and the model's ready replicas, the latest
# recommendation, or None to keep the previous floor. Called from a worker thread: may block.
Predictor = Callable[[LLMService, Obj | None, int], PredictiveOutcome | None]


def no_predictor(service: LLMService, previous: Obj | None, ready: int) -> PredictiveOutcome | None:
    """Used when no recommender is wired in: says so in the PredictiveScaling condition."""
    return PredictiveOutcome(
        floor=None,
        status=None,
        condition=Cond(
            ConditionType.PREDICTIVE_SCALING,
            "Unknown",
            Reason.PREDICTIVE_UNAVAILABLE,
            "This operator build has no predictive recommender; the HPA scales on queue depth alone.",
        ),
    )


class InvalidSpecError(kopf.PermanentError):
    """The object breaks a rule the CRD schema cannot express; status already says which."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"invalid LLMService: {'; '.join(problems)}")
        self.problems = problems


@dataclass(frozen=True)
class Observed:
    """The cluster as one pass saw it: our children by (apiVersion, kind, name), ready endpoints."""

    children: Mapping[ChildKey, Obj]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class SecretToCreate:
    manifest: Obj
    key: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    create_secrets: list[SecretToCreate] = field(default_factory=list)
    apply: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    status: Obj | None = None  # None: unchanged, nothing to write
    events: list[Event] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.create_secrets) + len(self.apply) + len(self.delete) + (self.status is not None)


# --- comparison --------------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def contains(have: Any, want: Any) -> bool:
    """Whether the live value ``have`` already holds everything in the desired value ``want``.

    Extra keys in ``have`` are defaults and other managers' fields; lists must match item by
    item; empty desired values match absent ones (the server drops them); quantities compare by
    value ("1Gi" == "1024Mi"), as the server may normalise them.
    """
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(
            (_empty(value) and _empty(have.get(key))) or (key in have and contains(have[key], value))
            for key, value in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(contains, have, want))
    if isinstance(want, str) and isinstance(have, str):
        return want == have or (
            is_quantity(want) and is_quantity(have) and parse_quantity(want) == parse_quantity(have)
        )
    return bool(have == want) and isinstance(have, bool) == isinstance(want, bool)


def with_hash(manifest: Obj) -> Obj:
    """The manifest with ``llmfleet.io/applied-hash`` set to a hash of everything else."""
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), HASH_ANNOTATION: checksum(manifest)[:32]}
    return {**manifest, "metadata": meta}


def up_to_date(desired: Obj, live: Obj | None) -> bool:
    return live is not None and contains(live, desired)


def _owned_by(obj: Obj, uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


# --- observe ---------------------------------------------------------------------------------


def ready_endpoints(slices: list[Obj], port_name: str = "http") -> tuple[Endpoint, ...]:
    """Ready, non-terminating addresses of EndpointSlices, on the port named ``port_name``."""
    found: list[tuple[str, int, str]] = []
    for eps in slices:
        port = next((p.get("port") for p in eps.get("ports") or [] if p.get("name") == port_name), None)
        if port is None:
            continue
        for endpoint in eps.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            # EndpointSlice API: a nil "ready" means unknown and consumers should treat it as ready.
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            target = endpoint.get("targetRef") or {}
            pod = str(target.get("name", "")) if target.get("kind", "Pod") == "Pod" else ""
            for address in endpoint.get("addresses") or []:
                found.append((str(address), int(port), pod))
    return endpoints_from_addresses(found)


def observe(kube: Kube, namespace: str, name: str) -> Observed:
    children = {child_key(obj): obj for obj in kube.list_children(namespace, name)}
    slices = kube.endpoint_slices(namespace, f"{name}-model")
    return Observed(children=children, endpoints=ready_endpoints(slices))


# --- plan ------------------------------------------------------------------------------------


def _owner(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion", "llmfleet.io/v1alpha1"),
        "kind": obj.get("kind", "LLMService"),
        "metadata": {"name": meta.get("name"), "uid": meta.get("uid")},
    }


def _events(previous: list[Obj], current: list[Obj]) -> list[Event]:
    """Events when a condition becomes True (Normal) or stops being True (Warning).

    Bring-up (NotCreated -> NoReplicasReady -> ...) and Unknown states are not news: the Events
    an admin sees are "became available" and "lost it", with the condition's reason and message.
    """
    before = {c.get("type"): c.get("status") for c in previous}
    events = []
    for cond in transitions(previous, current):
        if cond["reason"] in (Reason.CACHE_DISABLED, Reason.FIXED_REPLICAS):
            continue
        if cond["status"] == TRUE:
            events.append(Event("Normal", cond["reason"], f"{cond['type']} is True: {cond['message']}"))
        elif before.get(cond["type"]) == TRUE:
            events.append(
                Event("Warning", cond["reason"], f"{cond['type']} is {cond['status']}: {cond['message']}")
            )
    return events


def plan(
    obj: Obj,
    service: LLMService,
    observed: Observed,
    *,
    predictive: PredictiveOutcome | None = None,
    images: Mapping[str, str] | None = None,
    now: str = "",
) -> Plan:
    """What to create, apply, delete and write as status for ``obj`` given ``observed`` (pure)."""
    name, namespace, spec = service.name, service.namespace, service.spec
    uid = str((obj.get("metadata") or {}).get("uid", ""))
    ctx = RenderContext(
        name,
        namespace,
        owner=_owner(obj),
        endpoints=observed.endpoints,
        predictive_floor=predictive.floor if predictive else None,
        images=dict(images or {}),
    )
    desired = [with_hash(m) for m in render_children(spec, ctx)]
    wanted = {child_key(m) for m in desired}
    secrets: list[SecretToCreate] = []
    if spec.cache.enabled and spec.cache.password_secret_ref is None:
        secret_name, key = password_secret(spec, ctx)
        secret_key = ("v1", "Secret", secret_name)
        wanted.add(secret_key)
        if secret_key not in observed.children:
            manifest = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata(ctx, secret_name, "cache", "redis"),
            }
            secrets.append(SecretToCreate(manifest, key))
    apply = [m for m in desired if not up_to_date(m, observed.children.get(child_key(m)))]
    delete = [
        live for key, live in sorted(observed.children.items()) if key not in wanted and _owned_by(live, uid)
    ]
    previous = obj.get("status") or {}
    status = desired_status(service, observed.children, len(observed.endpoints), predictive, previous, now)
    events = _events(previous.get("conditions") or [], status["conditions"])
    old_floor = (previous.get("predictive") or {}).get("recommendedReplicas")
    new_floor = (status.get("predictive") or {}).get("recommendedReplicas")
    if new_floor is not None and new_floor != old_floor:
        reason = (status["predictive"] or {}).get("reason", "")
        events.append(
            Event("Normal", "PredictiveFloorChanged", f"HPA minReplicas {old_floor} -> {new_floor}: {reason}")
        )
    return Plan(
        create_secrets=secrets,
        apply=apply,
        delete=delete,
        status=status if status_changed(previous, status) else None,
        events=events,
    )


# --- execute ---------------------------------------------------------------------------------


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def execute(kube: Kube, obj: Obj, todo: Plan) -> None:
    """Carry out a plan in a safe order: Secrets before the pods that mount them, applies in render
    order (config before workloads), deletions after, status and Events last.

    A child the API server rejects for good (say, an immutable PVC field) does not hold the
    others back: the rest is applied, then the rejection is raised. A transient failure stops the
    pass at once; the retry converges from wherever it stopped.
    """
    meta = obj["metadata"]
    rejected: list[ApiRejected] = []
    for secret in todo.create_secrets:
        kube.create_secret_once(secret.manifest, secret.key)
    for manifest in todo.apply:
        try:
            kube.apply(manifest)
        except ApiRejected as e:
            rejected.append(e)
            continue
        logger.info("applied %s %s", manifest["kind"], manifest["metadata"]["name"])
    for live in todo.delete:
        m = live["metadata"]
        kube.delete(live["apiVersion"], live["kind"], m["name"], m.get("namespace"), m.get("uid"))
        logger.info("deleted %s %s (no longer wanted)", live["kind"], m["name"])
    if todo.status is not None:
        kube.patch_status(meta.get("namespace") or "default", meta["name"], todo.status)
    for event in todo.events:
        kube.post_event(obj, event.type, event.reason, event.message)
    if rejected:  # kopf logs it and posts it as a Warning Event on the LLMService
        raise ApiRejected("; ".join(str(e) for e in rejected), status=rejected[0].status)


@dataclass(frozen=True)
class Outcome:
    applied: int
    deleted: int
    status_written: bool


def reconcile(
    kube: Kube,
    obj: Obj,
    *,
    predictor: Predictor = no_predictor,
    images: Mapping[str, str] | None = None,
) -> Outcome:
    """Bring the children and status of one LLMService in line with its spec (blocking)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Outcome(0, 0, False)  # garbage collection removes the children
    try:
        service = validate_service(obj)
    except InvalidService as e:
        problems = [str(p) for p in e.problems]
        status = invalid_status(obj, problems, now_rfc3339())
        if status_changed(obj.get("status"), status):
            kube.patch_status(meta.get("namespace") or "default", meta["name"], status)
            kube.post_event(obj, "Warning", Reason.INVALID_SPEC, "; ".join(problems))
        raise InvalidSpecError(problems) from e
    observed = observe(kube, service.namespace, service.name)
    predictive = None
    if service.spec.autoscaling.predictive.enabled:
        previous = (obj.get("status") or {}).get("predictive")
        model = observed.children.get(("apps/v1", "Deployment", f"{service.name}-model"))
        predictive = predictor(service, previous, deployment_state(model).ready) or _keep_floor(previous)
    todo = plan(obj, service, observed, predictive=predictive, images=images, now=now_rfc3339())
    execute(kube, obj, todo)
    return Outcome(len(todo.apply) + len(todo.create_secrets), len(todo.delete), todo.status is not None)


def _keep_floor(previous: Obj | None) -> PredictiveOutcome | None:
    """Between two recommendations, the floor stays where the last one put it."""
    if not previous:
        return None
    floor = previous.get("recommendedReplicas")
    return PredictiveOutcome(
        floor=int(floor) if floor is not None else None,
        status=None,
        condition=Cond(
            ConditionType.PREDICTIVE_SCALING, TRUE, Reason.FLOOR_APPLIED, str(previous.get("reason", ""))
        ),
    )
