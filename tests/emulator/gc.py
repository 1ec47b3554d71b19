"""The built-in controllers that a real cluster runs and that the operator relies on.

* Garbage collection: an object whose owners (``ownerReferences[].uid``) are all gone is deleted in
  the background; dangling references next to a live owner are removed. ``Orphan`` and
  ``Foreground`` propagation are honoured through the ``orphan``/``foregroundDeletion`` finalizers.
* Namespace deletion: a terminating namespace's contents are deleted, then the namespace itself.

It runs asynchronously (scheduled on the event loop after a deletion), as the real one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.emulator.store import Obj, Store


def collect_garbage(store: Store) -> None:
    """Run until nothing changes (each pass may unblock the next)."""
    for _ in range(100):
        if not _one_pass(store):
            return


def _one_pass(store: Store) -> bool:
    with store.lock:
        snapshot = list(store.objects.items())
        alive = {obj["metadata"]["uid"] for _, obj in snapshot}
        changed = False
        for (rkey, namespace, name), obj in snapshot:
            rt = next(r for r in store.registry.all() if r.key == rkey)
            meta = obj["metadata"]
            if (rkey, namespace, name) not in store.objects:
                continue
            deleting = bool(meta.get("deletionTimestamp"))
            finalizers = meta.get("finalizers") or []
            if deleting and "orphan" in finalizers:
                _release_dependents(store, meta["uid"], snapshot)
                store.system_update(rt, obj, lambda o: _drop_finalizer(o, "orphan"))
                changed = True
                continue
            if deleting and "foregroundDeletion" in finalizers:
                dependents = [d for _, d in snapshot if _owned_by(d, meta["uid"])]
                for dependent in dependents:
                    changed |= _delete(store, dependent)
                if not dependents:
                    store.system_update(rt, obj, lambda o: _drop_finalizer(o, "foregroundDeletion"))
                    changed = True
                continue
            if deleting and rt.kind == "Namespace":
                contents = [o for (_, ns, _), o in store.objects.items() if ns == name]
                for item in contents:
                    changed |= _delete(store, item)
                if not contents:
                    store.system_update(rt, obj, lambda o: o["spec"].update(finalizers=[]))
                    changed = True
                continue
            refs = meta.get("ownerReferences") or []
            if not refs:
                continue
            live = [ref for ref in refs if ref.get("uid") in alive]
            if not live:
                changed |= _delete(store, obj)
            elif len(live) < len(refs):
                store.system_update(rt, obj, _set_owners(live))
                changed = True
        return changed


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _set_owners(refs: list[Any]) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        obj["metadata"]["ownerReferences"] = refs

    return mutate


def _drop_finalizer(obj: Obj, finalizer: str) -> None:
    obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]


def _release_dependents(store: Store, uid: str, snapshot: list[tuple[Any, Obj]]) -> None:
    for _, dependent in snapshot:
        if _owned_by(dependent, uid):
            rt = store.registry.by_kind(dependent["apiVersion"], dependent["kind"])
            refs = [r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") != uid]
            store.system_update(rt, dependent, _set_owners(refs))


def _delete(store: Store, obj: Obj) -> bool:
    if obj["metadata"].get("deletionTimestamp"):
        return False
    rt = store.registry.by_kind(obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    if store.find(rt, meta.get("namespace"), meta["name"]) is None:
        return False
    store.delete(rt, meta.get("namespace"), meta["name"], {"propagationPolicy": "Background"})
    return True
