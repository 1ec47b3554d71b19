"""URL parsing and the discovery documents (``/api``, ``/apis``, ``/apis/<group>[/<version>]``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.emulator.resources import ResourceRegistry, ResourceType

SUBRESOURCE_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_route(path: str) -> Route | None:
    """Split a resource URL; None for anything that is not a resource URL (e.g. discovery)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) == 3 and group == "" and rest[2] in ("status", "finalize"):
        return Route(group, version, "namespaces", None, rest[1], rest[2])
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Route(group, version, rest[0], namespace, name, subresource)


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_groups(registry: ResourceRegistry) -> dict[str, Any]:
    groups = [_group_doc(g, vs) for g, vs in sorted(registry.groups().items()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: ResourceRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _resource_doc(rt: ResourceType) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
            "shortNames": list(rt.short_names),
            "categories": list(rt.categories),
        }
    ]
    for sub in sorted(rt.subresources):
        kind = "Scale" if sub == "scale" else rt.kind
        docs.append(
            {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": list(SUBRESOURCE_VERBS),
            }
        )
    return docs


def api_resources(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    resources = [rt for rt in registry.all() if rt.group == group and rt.version == version]
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [doc for rt in resources for doc in _resource_doc(rt)],
    }
