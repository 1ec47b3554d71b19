"""The object store: resource versions, generations, status separation, finalizers, watch events.

All mutations run on the emulator's event loop thread; readers on other threads (tests) take the
lock and get copies. Stored dicts are never mutated in place: every write stores a new dict, so
watch events can share them.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.emulator.defaults import apply_defaults
from tests.emulator.errors import ApiError, conflict, not_found
from tests.emulator.fields import track_update
from tests.emulator.resources import ResourceRegistry, ResourceType
from tests.emulator.schema import process, resources_from_crd, schema_for
from tests.emulator.selectors import Predicate

Key = tuple[str, str | None, str]  # (resource key, namespace, name)
Obj = dict[str, Any]

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    rv: int
    rkey: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)  # hashed by identity
class Watcher:
    rkey: str
    namespace: str | None
    matches: Predicate
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def translate(self, event: Event) -> tuple[str, Obj] | None:
        """The event as this watcher sees it (selector changes turn into ADDED/DELETED)."""
        if event.rkey != self.rkey:
            return None
        if self.namespace is not None and event.obj.get("metadata", {}).get("namespace") != self.namespace:
            return None
        new_ok = self.matches(event.obj)
        if event.type != "MODIFIED" or event.old is None:
            return (event.type, event.obj) if new_ok else None
        old_ok = self.matches(event.old)
        if new_ok:
            return ("MODIFIED" if old_ok else "ADDED"), event.obj
        return ("DELETED", event.obj) if old_ok else None


def _strip_volatile(obj: Obj) -> Obj:
    """The object without resourceVersion and managedFields times: what "nothing changed" compares."""
    result = copy.deepcopy(obj)
    meta = result.get("metadata", {})
    meta.pop("resourceVersion", None)
    for entry in meta.get("managedFields") or []:
        entry.pop("time", None)
    return result


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self, registry: ResourceRegistry, history: int = 100_000) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        self.objects: dict[Key, Obj] = {}
        self.rv = 0
        self.log: deque[Event] = deque()
        self.history = history
        self.compacted_rv = 0  # events up to this RV are no longer available to watches
        self.watchers: set[Watcher] = set()
        self.on_deleted: Callable[[], None] = lambda: None  # hook: schedule garbage collection
        for name in SYSTEM_NAMESPACES:
            self.create(
                self.registry.by_kind("v1", "Namespace"),
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                manager="system",
            )

    # --- reading -------------------------------------------------------------------------

    def key(self, rt: ResourceType, namespace: str | None, name: str) -> Key:
        return rt.key, namespace if rt.namespaced else None, name

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get(self.key(rt, namespace, name))
            if obj is None:
                raise not_found(rt.kind, rt.plural, rt.group, name)
            return obj

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self.lock:
            return self.objects.get(self.key(rt, namespace, name))

    def select(self, rt: ResourceType, namespace: str | None, matches: Predicate) -> tuple[list[Obj], int]:
        with self.lock:
            items = [
                obj
                for (rkey, ns, _), obj in sorted(
                    self.objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])
                )
                if rkey == rt.key and (namespace is None or ns == namespace) and matches(obj)
            ]
            return items, self.rv

    # --- watching ------------------------------------------------------------------------

    def subscribe(self, watcher: Watcher, since: int | None) -> tuple[list[tuple[str, Obj]], int]:
        """Register a watcher; returns the backlog (events after ``since``, or the current state) and the RV."""
        with self.lock:
            if since is None:
                items = [
                    obj
                    for (rkey, ns, _), obj in self.objects.items()
                    if rkey == watcher.rkey
                    and (watcher.namespace is None or ns == watcher.namespace)
                    and watcher.matches(obj)
                ]
                self.watchers.add(watcher)
                return [("ADDED", obj) for obj in items], self.rv
            if since < self.compacted_rv:
                raise ApiError(
                    410, f"too old resource version: {since} ({self.compacted_rv})", reason="Expired"
                )
            backlog = []
            for event in self.log:
                if event.rv > since:
                    seen = watcher.translate(event)
                    if seen is not None:
                        backlog.append(seen)
            self.watchers.add(watcher)
            return backlog, self.rv

    def unsubscribe(self, watcher: Watcher) -> None:
        with self.lock:
            self.watchers.discard(watcher)

    def _emit(self, event: Event) -> None:
        self.log.append(event)
        while len(self.log) > self.history:
            self.compacted_rv = self.log.popleft().rv
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(event)

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    # --- writing -------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Obj,
        manager: str,
        dry_run: bool = False,
        prepared: bool = False,
    ) -> Obj:
        """Create an object; ``prepared`` means managedFields were already computed (apply-create)."""
        with self.lock:
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            if rt.namespaced:
                if namespace is None:
                    raise ApiError(400, "the namespace of the object is required for a namespaced resource")
                if meta.get("namespace", namespace) != namespace:
                    raise ApiError(
                        400,
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                ns_obj = self.find(self.registry.by_kind("v1", "Namespace"), None, namespace)
                if ns_obj is None:
                    raise not_found("Namespace", "namespaces", "", namespace)
                if ns_obj["metadata"].get("deletionTimestamp"):
                    raise ApiError(
                        403,
                        f"unable to create new content in namespace {namespace} because it is being terminated",
                    )
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(
                    secrets.choice(_SUFFIX_ALPHABET) for _ in range(5)
                )
            name = meta.get("name") or ""
            if not name or len(name) > 253 or not _NAME_RE.match(name):
                raise ApiError(
                    422,
                    f'{rt.kind} "{name}" is invalid: metadata.name: Invalid value: {name!r}: '
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                )
            key = self.key(rt, namespace, name)
            if key in self.objects:
                resource = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
                raise ApiError(
                    409,
                    f'{resource} "{name}" already exists',
                    reason="AlreadyExists",
                    details={"name": name, "group": rt.group, "kind": rt.plural},
                )
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            for system in (
                "uid",
                "resourceVersion",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                meta.pop(system, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            if rt.generation:
                meta["generation"] = 1
            if rt.has_status:
                obj.pop("status", None)
            if rt.builtin:
                apply_defaults(obj)
            obj = self._structural(rt, obj)
            meta = obj["metadata"]
            if rt.kind == "Namespace":
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            if not prepared:
                meta.pop("managedFields", None)
                track_update(None, obj, manager, None, rt.has_status)
            if dry_run:
                return obj
            meta["resourceVersion"] = str(self._next_rv())
            self.objects[key] = obj
            self._emit(Event(self.rv, rt.key, "ADDED", obj))
            if rt.kind == "CustomResourceDefinition":
                for served in resources_from_crd(obj):
                    self.registry.add(served)
            return obj

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        candidate: Obj,
        *,
        subresource: str | None,
        manager: str | None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Store ``candidate`` as the new state of an existing object; returns (object, changed).

        ``manager`` None means that managedFields in ``candidate`` are already final (apply).
        """
        with self.lock:
            old = self.get(rt, namespace, name)
            new = self._structural(rt, self._normalize(rt, old, copy.deepcopy(candidate), subresource))
            if manager is not None:
                track_update(old, new, manager, subresource, rt.has_status)
            if _strip_volatile(new) == _strip_volatile(old):
                return old, False
            if dry_run:
                return new, True
            self._commit(rt, old, new)
            return self.objects.get(self.key(rt, namespace, name), new), True

    def _normalize(self, rt: ResourceType, old: Obj, new: Obj, subresource: str | None) -> Obj:
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if rt.namespaced and meta.get("namespace", old_meta["namespace"]) != old_meta["namespace"]:
            raise ApiError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            if "managedFields" in meta:
                result["metadata"]["managedFields"] = meta["managedFields"]
            return result
        if rt.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        if rt.builtin:
            apply_defaults(new, old)
        for system in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if system in old_meta:
                meta[system] = old_meta[system]
            else:
                meta.pop(system, None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    f"metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                    f"is being deleted, found new finalizers {sorted(added)!r}",
                )
        if rt.generation and _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        return new

    def _structural(self, rt: ResourceType, obj: Obj) -> Obj:
        """Prune, default and validate a custom resource by its stored CRD's schema (if any)."""
        if rt.builtin:
            return obj
        crd = self.objects.get(("customresourcedefinitions.apiextensions.k8s.io", None, rt.key))
        schema = schema_for(crd, rt.version)
        if schema is None:
            return obj
        result, errors = process(obj, schema)
        if errors:
            name = obj.get("metadata", {}).get("name", "")
            raise ApiError(
                422,
                f'{rt.kind}.{rt.group} "{name}" is invalid: [{", ".join(errors)}]',
                details={
                    "name": name,
                    "group": rt.group,
                    "kind": rt.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": e} for e in errors],
                },
            )
        return result

    def _commit(self, rt: ResourceType, old: Obj, new: Obj) -> None:
        meta = new["metadata"]
        meta["resourceVersion"] = str(self._next_rv())
        key = self.key(rt, meta.get("namespace"), meta["name"])
        self.objects[key] = new
        self._emit(Event(self.rv, rt.key, "MODIFIED", new, old))
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not self._pending_namespace(new):
            self._remove(rt, key)

    def _pending_namespace(self, obj: Obj) -> bool:
        return obj.get("kind") == "Namespace" and bool((obj.get("spec") or {}).get("finalizers"))

    def _remove(self, rt: ResourceType, key: Key) -> Obj:
        obj = copy.deepcopy(self.objects.pop(key))
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit(Event(self.rv, rt.key, "DELETED", obj))
        self.on_deleted()
        return obj

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, options: Obj, dry_run: bool = False
    ) -> tuple[Obj, bool]:
        """Delete (or mark for deletion); returns (object, gone)."""
        with self.lock:
            old = self.get(rt, namespace, name)
            meta = old["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise conflict(
                    rt.plural, rt.group, name, "Precondition failed: UID in precondition does not match"
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(
                    rt.plural,
                    rt.group,
                    name,
                    "Precondition failed: ResourceVersion in precondition does not match",
                )
            if meta.get("deletionTimestamp"):
                return old, False
            policy = options.get("propagationPolicy") or (
                "Orphan" if options.get("orphanDependents") else None
            )
            finalizers = list(meta.get("finalizers") or [])
            gc_finalizer = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(policy or "")
            if gc_finalizer and gc_finalizer not in finalizers:
                finalizers.append(gc_finalizer)
            if dry_run:
                return old, not finalizers and not self._pending_namespace(old)
            if not finalizers and not self._pending_namespace(old):
                return self._remove(rt, self.key(rt, namespace, name)), True
            new = copy.deepcopy(old)
            new["metadata"].update(
                deletionTimestamp=now_iso(), deletionGracePeriodSeconds=0, finalizers=finalizers
            )
            if rt.kind == "Namespace":
                new["status"] = {"phase": "Terminating"}
            self._commit(rt, old, new)
            self.on_deleted()
            return self.objects.get(self.key(rt, namespace, name), new), False

    def system_update(self, rt: ResourceType, obj: Obj, mutate: Callable[[Obj], None]) -> None:
        """A change made by a built-in controller (garbage collector, namespace controller)."""
        with self.lock:
            key = self.key(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            old = self.objects.get(key)
            if old is None:
                return
            new = copy.deepcopy(old)
            mutate(new)
            if new != old:
                self._commit(rt, old, new)
