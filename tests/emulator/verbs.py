"""The REST verbs on resources: get, list, create, update (PUT), patch (4 kinds), delete, deletecollection."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

from tests.emulator.discovery import Route
from tests.emulator.errors import ApiError, conflict
from tests.emulator.fields import ApplyConflict, server_side_apply
from tests.emulator.merge import PatchError, json_merge_patch, json_patch, strategic_merge
from tests.emulator.resources import ResourceType
from tests.emulator.selectors import Predicate, SelectorError, field_selector, label_selector
from tests.emulator.store import Obj, Store

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class Call:
    """One parsed resource request."""

    rt: ResourceType
    route: Route
    params: dict[str, str]
    content_type: str
    manager: str
    body: Any

    @property
    def namespace(self) -> str | None:
        return self.route.namespace if self.rt.namespaced else None

    @property
    def name(self) -> str:
        assert self.route.name is not None
        return self.route.name

    @property
    def dry_run(self) -> bool:
        return "dryRun" in self.params


@dataclass(frozen=True)
class Outcome:
    status: int
    payload: Any
    verb: str | None = None  # for the write log: create/update/patch/apply/delete/deletecollection
    changed: bool = False


def selector(params: dict[str, str]) -> Predicate:
    try:
        by_label, by_field = (
            label_selector(params.get("labelSelector")),
            field_selector(params.get("fieldSelector")),
        )
    except SelectorError as e:
        raise ApiError(400, f"unable to parse requirement: {e}") from e
    return lambda obj: by_label(obj) and by_field(obj)


def get(store: Store, call: Call) -> Outcome:
    obj = store.get(call.rt, call.namespace, call.name)
    if call.route.subresource not in (None, "status"):
        raise ApiError(404, f"the server could not find the requested resource ({call.route.subresource})")
    return Outcome(200, obj)


def list_(store: Store, call: Call) -> Outcome:
    items, rv = store.select(call.rt, call.route.namespace, selector(call.params))
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    start = 0
    if call.params.get("continue"):
        try:
            token = json.loads(base64.urlsafe_b64decode(call.params["continue"]))
            start = next((i for i, o in enumerate(items) if _sort_key(o) > tuple(token["after"])), len(items))
        except (ValueError, KeyError, TypeError) as e:
            raise ApiError(400, "invalid continue token") from e
    limit = int(call.params.get("limit") or 0)
    page = items[start : start + limit] if limit > 0 else items[start:]
    if limit > 0 and start + limit < len(items):
        token = {"after": list(_sort_key(page[-1]))}
        meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
        meta["remainingItemCount"] = len(items) - start - limit
    return Outcome(
        200,
        {"apiVersion": call.rt.api_version, "kind": f"{call.rt.kind}List", "metadata": meta, "items": page},
    )


def _sort_key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"].get("namespace") or "", obj["metadata"]["name"]


def _require_dict(body: Any) -> Obj:
    if not isinstance(body, dict):
        kind = "a JSON string (double-encoded?)" if isinstance(body, str) else type(body).__name__
        raise ApiError(400, f"the request body must be a JSON object, not {kind}")
    return body


def _check_rv(call: Call, body: Any, current: Obj) -> None:
    wanted = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("resourceVersion")
    if wanted and str(wanted) != current["metadata"]["resourceVersion"]:
        raise conflict(
            call.rt.plural,
            call.rt.group,
            call.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )


def create(store: Store, call: Call) -> Outcome:
    body = _require_dict(call.body)
    if call.route.name is not None or call.route.subresource:
        raise ApiError(405, "POST is only allowed on collections")
    obj = store.create(call.rt, call.route.namespace, body, call.manager, dry_run=call.dry_run)
    return Outcome(201, obj, "create", changed=True)


def update(store: Store, call: Call) -> Outcome:
    body = _require_dict(call.body)
    current = store.get(call.rt, call.namespace, call.name)
    if not (body.get("metadata") or {}).get("resourceVersion") and not call.rt.builtin:
        raise ApiError(
            422,
            f'{call.rt.kind}.{call.rt.group} "{call.name}" is invalid: metadata.resourceVersion: '
            "Invalid value: 0x0: must be specified for an update",
        )
    _check_rv(call, body, current)
    obj, changed = store.update(
        call.rt,
        call.namespace,
        call.name,
        body,
        subresource=call.route.subresource,
        manager=call.manager,
        dry_run=call.dry_run,
    )
    return Outcome(200, obj, "update", changed)


def patch(store: Store, call: Call) -> Outcome:
    ctype = call.content_type
    if ctype == APPLY:
        return _apply(store, call)
    current = store.get(call.rt, call.namespace, call.name)
    try:
        if ctype == MERGE:
            candidate = json_merge_patch(current, _require_dict(call.body))
        elif ctype == JSON_PATCH:
            candidate = json_patch(current, call.body)
        elif ctype == STRATEGIC:
            if not call.rt.builtin:
                raise ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {JSON_PATCH}, {MERGE}, {APPLY}",
                )
            candidate = strategic_merge(current, _require_dict(call.body))
        else:
            raise ApiError(415, f"the body of the request was in an unknown format: {ctype!r}")
    except PatchError as e:
        raise ApiError(e.status, str(e)) from e
    if ctype != JSON_PATCH:
        _check_rv(call, call.body, current)
    if not isinstance(candidate, dict):
        raise ApiError(422, "the patch produced a non-object")
    obj, changed = store.update(
        call.rt,
        call.namespace,
        call.name,
        candidate,
        subresource=call.route.subresource,
        manager=call.manager,
        dry_run=call.dry_run,
    )
    return Outcome(200, obj, "patch", changed)


def _apply(store: Store, call: Call) -> Outcome:
    config = _require_dict(call.body)
    if "fieldManager" not in call.params:
        raise ApiError(
            422,
            "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: is required for apply patch",
        )
    meta = config.get("metadata") or {}
    if meta.get("name", call.name) != call.name:
        raise ApiError(400, "the name of the object does not match the name on the URL")
    if not config.get("apiVersion") or not config.get("kind"):
        raise ApiError(400, "apiVersion and kind are required in an applied configuration")
    force = call.params.get("force", "").lower() in ("true", "1")
    current = store.find(call.rt, call.namespace, call.name)
    has_status = call.rt.has_status
    try:
        if current is None:
            if call.route.subresource:
                raise ApiError(404, f'{call.rt.plural} "{call.name}" not found')
            new = server_side_apply(None, config, call.manager, force, None, has_status)
            new["metadata"]["name"] = call.name
            obj = store.create(
                call.rt, call.route.namespace, new, call.manager, dry_run=call.dry_run, prepared=True
            )
            return Outcome(201, obj, "apply", changed=True)
        _check_rv(call, config, current)
        new = server_side_apply(current, config, call.manager, force, call.route.subresource, has_status)
    except ApplyConflict as e:
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{m}"',
                "field": ".".join(p.split(":", 1)[1] for p in path),
            }
            for m, path in e.conflicts
        ]
        raise ApiError(
            409,
            str(e),
            reason="Conflict",
            details={"name": call.name, "group": call.rt.group, "kind": call.rt.plural, "causes": causes},
        ) from e
    obj, changed = store.update(
        call.rt,
        call.namespace,
        call.name,
        new,
        subresource=call.route.subresource,
        manager=None,
        dry_run=call.dry_run,
    )
    return Outcome(200, obj, "apply", changed)


def _delete_options(call: Call) -> Obj:
    if call.body is not None and not isinstance(call.body, dict):
        _require_dict(call.body)  # a real server cannot decode DeleteOptions from anything else: 400
    options = copy.deepcopy(call.body) if isinstance(call.body, dict) else {}
    for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
        if key in call.params:
            options.setdefault(
                key, call.params[key] if key != "orphanDependents" else call.params[key] == "true"
            )
    return options


def delete(store: Store, call: Call) -> Outcome:
    obj, gone = store.delete(call.rt, call.namespace, call.name, _delete_options(call), dry_run=call.dry_run)
    if not gone:
        return Outcome(200, obj, "delete", changed=True)
    meta = obj["metadata"]
    status = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta["name"], "group": call.rt.group, "kind": call.rt.plural, "uid": meta["uid"]},
    }
    return Outcome(200, obj if call.rt.kind == "Pod" else status, "delete", changed=True)


def delete_collection(store: Store, call: Call) -> Outcome:
    items, _ = store.select(call.rt, call.route.namespace, selector(call.params))
    options = _delete_options(call)
    for obj in items:
        store.delete(
            call.rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], options, dry_run=call.dry_run
        )
    return Outcome(
        200,
        {"apiVersion": call.rt.api_version, "kind": f"{call.rt.kind}List", "metadata": {}, "items": items},
        "deletecollection",
        changed=bool(items),
    )
