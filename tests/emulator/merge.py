"""Patch semantics: JSON merge patch, JSON patch, strategic merge patch, and the apply merge.

Strategic merge needs per-field knowledge (``patchMergeKey``/``patchStrategy`` in the Go types).
The emulator approximates it with a table keyed by the list field's name, which covers the
fields of the built-in kinds the operator writes (pod templates, services, metadata, conditions).
Lists not in the table are atomic (replaced as a whole), as for custom resources without
``x-kubernetes-list-type`` markers.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

# List field name -> the keys identifying an item (``patchMergeKey`` / ``x-kubernetes-list-map-keys``).
LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "resourceClaims": ("name",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
}
# Lists of scalars merged as sets (``patchStrategy: merge`` on a primitive list).
SET_LISTS: frozenset[str] = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch cannot be applied (HTTP 422 for failed JSON-patch tests, 400 for malformed patches)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def list_keys(field: str | None, items: list[Any]) -> tuple[str, ...] | None:
    """The merge keys of a list field, or None if the list is atomic."""
    if field is None or not items or not all(isinstance(item, dict) for item in items):
        return None
    if field == "ports":  # container ports vs. service ports
        return ("containerPort",) if any("containerPort" in item for item in items) else ("port",)
    return LIST_MAP_KEYS.get(field)


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(item.get(key) for key in keys)


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902; a failed ``test`` op is a 422 (kopf relies on it for optimistic concurrency)."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations", status=400)
    try:
        result: dict[str, Any] = jsonpatch.apply_patch(target, ops, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the JSON patch test failed: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise PatchError(f"the JSON patch cannot be applied: {e}") from e
    return result


def strategic_merge(target: Any, patch: Any, field: str | None = None) -> Any:
    """Strategic merge patch (also used to merge applied configurations into live objects).

    Supports null deletion, keyed list merging, set-lists, ``$patch: replace|delete``,
    ``$deleteFromPrimitiveList/<field>`` and ``$retainKeys``; ``$setElementOrder`` is ignored.
    """
    if not isinstance(patch, dict):
        if isinstance(patch, list):
            return _merge_list(target if isinstance(target, list) else [], patch, field)
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return None
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [item for item in result[name] if item not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        merged = strategic_merge(result.get(key), value, key)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def _merge_list(current: list[Any], patch: list[Any], field: str | None) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in SET_LISTS and all(not isinstance(item, dict | list) for item in patch):
        return list(current) + [item for item in patch if item not in current]
    plain = [item for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    keys = list_keys(field, list(current) + plain)
    if keys is None:
        return copy.deepcopy(plain)
    result = copy.deepcopy(current)
    for item in patch:
        key = item_key(item, keys)
        index = next((i for i, old in enumerate(result) if item_key(old, keys) == key), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge({}, item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


def canonical(value: Any) -> str:
    """A stable text form for equality checks and FieldsV1 keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
