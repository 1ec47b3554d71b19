"""The resource types served by the emulator (and known to the thin test client).

The same table drives discovery (``/api``, ``/apis``, ``/apis/<group>/<version>``), URL routing,
and the test client's kind -> URL mapping, so it also works against a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    builtin: bool = True  # built-in kinds accept strategic-merge patches; custom resources do not
    generation: bool = True  # whether metadata.generation is maintained for this kind
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def key(self) -> str:
        """A stable identity of the resource type: ``plural.group`` (``pods`` for the core group)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def url(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


_STATUS = frozenset({"status"})
_SCALE_STATUS = frozenset({"status", "scale"})

DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    # llmfleet's own custom resource
    ResourceType(
        "llmfleet.io",
        "v1alpha1",
        "llmservices",
        "LLMService",
        subresources=_STATUS,
        short_names=("llms",),
        categories=("llmfleet",),
        builtin=False,
    ),
    # core/v1
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        subresources=_STATUS,
        short_names=("ns",),
        generation=False,
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        subresources=_STATUS,
        short_names=("svc",),
        categories=("all",),
        generation=False,
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",), generation=False),
    ResourceType("", "v1", "secrets", "Secret", generation=False),
    ResourceType("", "v1", "events", "Event", short_names=("ev",), generation=False),
    ResourceType("", "v1", "pods", "Pod", subresources=_STATUS, short_names=("po",), categories=("all",)),
    ResourceType("", "v1", "endpoints", "Endpoints", short_names=("ep",), generation=False),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",), generation=False),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        subresources=_STATUS,
        short_names=("pvc",),
        generation=False,
    ),
    # apps/v1
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        subresources=_SCALE_STATUS,
        short_names=("deploy",),
        categories=("all",),
    ),
    ResourceType(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        subresources=_SCALE_STATUS,
        short_names=("sts",),
        categories=("all",),
    ),
    # autoscaling/v2
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        subresources=_STATUS,
        short_names=("hpa",),
        categories=("all",),
    ),
    # policy/v1
    ResourceType(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        subresources=_STATUS,
        short_names=("pdb",),
    ),
    # networking.k8s.io/v1
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    # discovery.k8s.io/v1
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", generation=False),
    # events.k8s.io/v1
    ResourceType("events.k8s.io", "v1", "events", "Event", short_names=("ev",), generation=False),
    # coordination.k8s.io/v1
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", generation=False),
    # apiextensions.k8s.io/v1 (kopf observes CRDs when it is allowed to)
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        subresources=_STATUS,
        short_names=("crd", "crds"),
    ),
    # kopf's peering resources
    ResourceType("kopf.dev", "v1", "kopfpeerings", "KopfPeering", builtin=False),
    ResourceType(
        "kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False, builtin=False
    ),
)


class ResourceRegistry:
    """Resource types by group/version/plural and by apiVersion/kind."""

    def __init__(self, resources: Iterable[ResourceType] = DEFAULT_RESOURCES) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        for resource in resources:
            self.add(resource)

    def add(self, resource: ResourceType) -> None:
        self._by_path[resource.group, resource.version, resource.plural] = resource
        self._by_kind[resource.api_version, resource.kind] = resource

    def all(self) -> list[ResourceType]:
        return list(self._by_path.values())

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType:
        try:
            return self._by_kind[api_version, kind]
        except KeyError:
            raise LookupError(f"Unknown resource type: {api_version} {kind}") from None

    def groups(self) -> dict[str, list[str]]:
        """Group -> versions (the core group is the empty string)."""
        result: dict[str, list[str]] = {}
        for resource in self._by_path.values():
            versions = result.setdefault(resource.group, [])
            if resource.version not in versions:
                versions.append(resource.version)
        return result
