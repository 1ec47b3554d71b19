"""Shared pieces of every child manifest: names, labels, owner references, checksums, images.

Selectors use only ``app.kubernetes.io/instance`` and ``app.kubernetes.io/component`` because
Deployment selectors are immutable: a label that can change (the engine, a version) in a
selector would make an ordinary spec update impossible to apply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from llmfleet import FIELD_MANAGER, GROUP, KIND, VERSION, __version__

Manifest = dict[str, Any]

# Pinned images, one place. Each tag was chosen for a known flag set; see docs/engines.md.
# llama.cpp b11312 is the commit hack/build-llama-server.sh builds, so the real-engine tests run
# the very flags this image gets.
DEFAULT_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:v0.11.0",
    "tgi": "ghcr.io/huggingface/text-generation-inference:3.3.6",
    "sglang": "lmsysorg/sglang:v0.5.3-cu126",
    "llamacpp": "ghcr.io/ggml-org/llama.cpp:server-b11312",
    "llamacpp-cuda": "ghcr.io/ggml-org/llama.cpp:server-cuda-b11312",
    "ollama": "ollama/ollama:0.12.3",
    "nginx": "nginxinc/nginx-unprivileged:1.27.2-alpine",
    "haproxy": "haproxy:2.9.11-alpine",
    "redis": "redis:7.4.1-alpine",
    "aws-cli": "amazon/aws-cli:2.17.50",
    "llmfleet": f"ghcr.io/llmfleet/llmfleet:{__version__}",
}

CHECKSUM_ANNOTATION = f"{GROUP}/config-checksum"
SERVICE_LABEL = f"{GROUP}/service"


@dataclass(frozen=True)
class Endpoint:
    """A ready model replica as the load balancer addresses it."""

    address: str
    port: int
    name: str = ""  # pod name, used as the server name in configs

    @property
    def server_name(self) -> str:
        return self.name or f"{self.address.replace('.', '-').replace(':', '-')}-{self.port}"


@dataclass(frozen=True)
class RenderContext:
    """Everything besides the spec that decides the children.

    ``endpoints=None`` means "not observed" (offline rendering): the balancer config then has no
    replicas and answers 503 until the operator renders it with the ready endpoints.
    """

    name: str
    namespace: str = "default"
    owner: Manifest | None = None  # the LLMService object (needs apiVersion, kind, metadata.name/uid)
    endpoints: tuple[Endpoint, ...] | None = None
    predictive_floor: int | None = None
    images: dict[str, str] = field(default_factory=dict)
    cluster_domain: str = "cluster.local"

    def image(self, key: str) -> str:
        return self.images.get(key) or DEFAULT_IMAGES[key]

    def dns(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.{self.cluster_domain}"


def selector_labels(ctx: RenderContext, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": ctx.name, "app.kubernetes.io/component": component}


def labels(ctx: RenderContext, component: str, app: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": app,
        **selector_labels(ctx, component),
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "app.kubernetes.io/part-of": "llmfleet",
        "app.kubernetes.io/version": __version__,
        SERVICE_LABEL: ctx.name,
    }


def owner_references(ctx: RenderContext) -> list[Manifest]:
    if ctx.owner is None:
        return []
    meta = ctx.owner.get("metadata", {})
    return [
        {
            "apiVersion": ctx.owner.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": ctx.owner.get("kind", KIND),
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def metadata(ctx: RenderContext, name: str, component: str, app: str, **extra: Any) -> Manifest:
    meta: Manifest = {"name": name, "namespace": ctx.namespace, "labels": labels(ctx, component, app)}
    refs = owner_references(ctx)
    if refs:
        meta["ownerReferences"] = refs
    meta.update(extra)
    return meta


def deployment(
    ctx: RenderContext,
    name: str,
    component: str,
    app: str,
    *,
    uid: int,
    pod: Manifest,
    replicas: int | None,
    annotations: dict[str, str] | None = None,
    strategy: Manifest | None = None,
) -> Manifest:
    """A Deployment of one component: selector, template labels and the restricted pod security
    context every child shares; ``pod`` adds containers, volumes and the rest of the pod spec.

    ``replicas=None`` leaves the field out (the HPA owns it under server-side apply).
    """
    spec: Manifest = {}
    if replicas is not None:
        spec["replicas"] = replicas
    if strategy is not None:
        spec["strategy"] = strategy
    spec["selector"] = {"matchLabels": selector_labels(ctx, component)}
    spec["template"] = {
        "metadata": {"labels": labels(ctx, component, app), "annotations": annotations or {}},
        "spec": {"securityContext": pod_security_context(uid), "enableServiceLinks": False, **pod},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, name, component, app),
        "spec": spec,
    }


def checksum(*payloads: Any) -> str:
    """A stable sha256 over JSON-serialisable payloads (for pod-template annotations)."""
    digest = hashlib.sha256()
    for payload in payloads:
        digest.update(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def restricted_security_context(uid: int, read_only_root: bool) -> Manifest:
    """The container part of the Pod Security Standard "restricted" profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(uid: int) -> Manifest:
    return {"runAsNonRoot": True, "fsGroup": uid, "seccompProfile": {"type": "RuntimeDefault"}}


def http_probe(
    path: str, port: str, period: int, failures: int, timeout: int = 5, initial: int = 0
) -> Manifest:
    probe: Manifest = {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe
