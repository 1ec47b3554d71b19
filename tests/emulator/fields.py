"""Field ownership (``metadata.managedFields``) and server-side apply.

Field paths are tuples of FieldsV1 path elements: ``f:<field>``, ``k:<json keys>`` for an item of a
keyed list, and ``v:<json value>`` for a member of a set-list. Ownership is tracked per
(manager, operation, subresource) as Kubernetes does; the apply algorithm follows structured-merge-diff
in the parts that matter to controllers:

* applying a config merges it into the live object (keyed lists merge by key, other lists are atomic);
* a field owned by another manager with a different value is a conflict (409) unless ``force``;
* fields the same manager applied before but no longer applies are removed unless someone else owns them;
* re-applying the same config changes nothing (the caller then skips the write and the RV bump).
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from tests.emulator.merge import SET_LISTS, canonical, list_keys, strategic_merge

Path = tuple[str, ...]
MISSING: Any = object()

# Identity and system-maintained fields: never owned, never applied.
SYSTEM_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "generateName",
    }
)


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        lines = [
            f"conflict with {manager!r}: {'.'.join(p.split(':', 1)[1] for p in path)}"
            for manager, path in conflicts
        ]
        super().__init__(f"Apply failed with {len(conflicts)} conflict(s): {'; '.join(lines)}")


def _key_element(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "k:" + canonical({key: item.get(key) for key in keys})


def field_paths(value: Any, path: Path = (), name: str | None = None) -> set[Path]:
    """All owned-able paths of a value: leaves, keyed-list items, and set members."""
    out: set[Path] = set()
    if isinstance(value, dict):
        if not value and path:
            out.add(path)
        for key, sub in value.items():
            out |= field_paths(sub, (*path, f"f:{key}"), key)
    elif isinstance(value, list):
        keys = list_keys(name, value)
        if not value:
            out.add(path)
        elif name in SET_LISTS and all(not isinstance(v, dict | list) for v in value):
            out |= {(*path, "v:" + canonical(v)) for v in value}
        elif keys is not None:
            for item in value:
                item_path = (*path, _key_element(item, keys))
                out.add(item_path)
                out |= field_paths(item, item_path)
        else:
            out.add(path)
    elif path:
        out.add(path)
    return out


def object_paths(obj: dict[str, Any], subresource: str | None, has_status: bool) -> set[Path]:
    """The paths of an object relevant to writes through the main resource or the status subresource."""
    paths = set()
    for path in field_paths(obj):
        top = path[0]
        if top in ("f:apiVersion", "f:kind"):
            continue
        if top == "f:metadata" and (len(path) < 2 or path[1][2:] in SYSTEM_METADATA):
            continue
        if has_status and (top == "f:status") != (subresource == "status"):
            continue
        paths.add(path)
    return paths


def get_at(obj: Any, path: Path) -> Any:
    node = obj
    for element in path:
        kind, _, raw = element.partition(":")
        if kind == "f" and isinstance(node, dict) and raw in node:
            node = node[raw]
        elif kind == "k" and isinstance(node, list):
            wanted = json.loads(raw)
            node = next(
                (i for i in node if isinstance(i, dict) and all(i.get(k) == v for k, v in wanted.items())),
                MISSING,
            )
        elif kind == "v" and isinstance(node, list):
            value = json.loads(raw)
            node = value if value in node else MISSING
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def remove_at(obj: dict[str, Any], path: Path) -> None:
    """Remove the element at a path, then prune containers left empty by the removal."""
    chain: list[Any] = [obj]
    for element in path[:-1]:
        node = get_at(chain[-1], (element,))
        if node is MISSING:
            return
        chain.append(node)
    _remove_element(chain[-1], path[-1])
    for depth in range(len(chain) - 1, 1, -1):  # never prune the object itself or a top-level section
        if chain[depth] in ({}, []):
            _remove_element(chain[depth - 1], path[depth - 1])
        else:
            break


def _remove_element(container: Any, element: str) -> None:
    kind, _, raw = element.partition(":")
    if kind == "f" and isinstance(container, dict):
        container.pop(raw, None)
    elif kind in ("k", "v") and isinstance(container, list):
        target = get_at(container, (element,))
        if target is not MISSING:
            container.remove(target)


def encode_fields(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:  # a path that is also a prefix of other paths is marked with "."
        node = tree
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return tree


def decode_fields(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for element, sub in tree.items():
        if element == ".":
            paths.add(prefix)
            continue
        path = (*prefix, element)
        if sub:
            paths |= decode_fields(sub, path)
        else:
            paths.add(path)
    return paths


@dataclass
class Entry:
    manager: str
    operation: str  # Apply | Update
    subresource: str | None
    api_version: str
    time: str
    paths: set[Path] = field(default_factory=set)

    @property
    def ident(self) -> tuple[str, str, str | None]:
        return self.manager, self.operation, self.subresource


def load_entries(obj: dict[str, Any]) -> list[Entry]:
    return [
        Entry(
            raw.get("manager", ""),
            raw.get("operation", "Update"),
            raw.get("subresource"),
            raw.get("apiVersion", ""),
            raw.get("time", ""),
            decode_fields(raw.get("fieldsV1") or {}),
        )
        for raw in (obj.get("metadata") or {}).get("managedFields") or []
    ]


def dump_entries(entries: list[Entry]) -> list[dict[str, Any]]:
    result = []
    for entry in entries:
        if not entry.paths:
            continue
        raw: dict[str, Any] = {
            "manager": entry.manager,
            "operation": entry.operation,
            "apiVersion": entry.api_version,
            "time": entry.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields(entry.paths),
        }
        if entry.subresource:
            raw["subresource"] = entry.subresource
        result.append(raw)
    return result


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(entries: list[Entry], ident: tuple[str, str, str | None], api_version: str) -> Entry:
    for entry in entries:
        if entry.ident == ident:
            return entry
    entry = Entry(ident[0], ident[1], ident[2], api_version, _now())
    entries.append(entry)
    return entry


def track_update(
    old: dict[str, Any] | None, new: dict[str, Any], manager: str, subresource: str | None, has_status: bool
) -> None:
    """Record a non-apply write (create, update, patch) by ``manager`` in ``new``'s managedFields."""
    entries = load_entries(old) if old is not None else []
    old_paths = object_paths(old, subresource, has_status) if old is not None else set()
    new_paths = object_paths(new, subresource, has_status)
    changed = {p for p in new_paths if p not in old_paths or get_at(old, p) != get_at(new, p)}
    removed = old_paths - new_paths
    for entry in entries:
        entry.paths -= changed
        entry.paths = {p for p in entry.paths if not any(p[: len(r)] == r for r in removed)}
    if changed:
        mine = _entry(entries, (manager, "Update", subresource), new.get("apiVersion", ""))
        mine.paths |= changed
        mine.time = _now()
    new.setdefault("metadata", {})["managedFields"] = dump_entries(entries)


def server_side_apply(
    old: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    force: bool,
    subresource: str | None,
    has_status: bool,
) -> dict[str, Any]:
    """Apply ``config`` as ``manager``; returns the new object (managedFields included)."""
    base: dict[str, Any] = copy.deepcopy(old) if old is not None else {}
    entries = load_entries(base)
    applied = object_paths(config, subresource, has_status)
    ident = (manager, "Apply", subresource)
    mine = next((e for e in entries if e.ident == ident), None)
    previous = set(mine.paths) if mine else set()

    conflicts: list[tuple[str, Path]] = []
    for entry in entries:
        if entry.ident == ident:
            continue
        for path in applied & entry.paths:
            if path[-1][0] in "kv":
                continue  # owning an item or a set member never conflicts, only its values do
            if get_at(base, path) != get_at(config, path):
                conflicts.append((entry.manager, path))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for manager_name, path in conflicts:
        for entry in entries:
            if entry.manager == manager_name and entry.ident != ident:
                entry.paths.discard(path)

    scoped = _scope(config, subresource, has_status)
    new: dict[str, Any] = strategic_merge(base, scoped)
    others = set().union(*(e.paths for e in entries if e.ident != ident)) if entries else set()
    keep = applied | others
    for path in sorted(previous - keep, key=len):  # parents first: their children go with them
        if any(len(p) > len(path) and p[: len(path)] == path for p in keep):
            continue  # someone still owns something inside it
        if _is_item_key(path):
            continue  # an item's key fields live and die with the item
        remove_at(new, path)

    mine = _entry(entries, ident, config.get("apiVersion", ""))
    mine.time = _now()  # the store ignores times when it decides whether anything changed
    mine.paths = applied
    new.setdefault("metadata", {})["managedFields"] = dump_entries(entries)
    return new


def _is_item_key(path: Path) -> bool:
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _scope(config: dict[str, Any], subresource: str | None, has_status: bool) -> dict[str, Any]:
    """Drop what an apply through this endpoint may not set: system metadata, and status (or non-status)."""
    result = {}
    for key, value in config.items():
        if key in ("apiVersion", "kind"):
            continue
        if has_status and (key == "status") != (subresource == "status") and key != "metadata":
            continue
        if key == "metadata":
            if has_status and subresource == "status":
                continue
            value = {k: v for k, v in (value or {}).items() if k not in SYSTEM_METADATA}
        result[key] = copy.deepcopy(value)
    return result
