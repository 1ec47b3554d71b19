"""Server-side defaulting for the built-in kinds the operator writes (a subset of the real defaulters).

A real API server fills these in, so live objects differ from what a client sent. Emulating the
common ones catches reconcilers that compare desired manifests with live objects field by field
(they would write on every resync against a real cluster) while the emulator would hide it.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]

_cluster_ips: Iterator[int] = itertools.count(10)


def _allocate_ip() -> str:
    n = next(_cluster_ips)
    return f"10.96.{n // 250}.{n % 250 + 1}"


def _container(container: Obj) -> None:
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
    container.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                probe.setdefault(key, value)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(container, dict):
            _container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)


def _deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", "25%")
        strategy["rollingUpdate"].setdefault("maxSurge", "25%")
    pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def _service(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] != "ExternalName":
        old_spec = (old or {}).get("spec") or {}
        if "clusterIP" not in spec:  # allocated once, kept across updates
            spec["clusterIP"] = old_spec.get("clusterIP") or _allocate_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def apply_defaults(obj: Obj, old: Obj | None = None) -> None:
    """Fill in defaults in place (on create and on every update through the main resource)."""
    kind = obj.get("kind")
    if kind == "Deployment":
        _deployment(obj)
    elif kind == "StatefulSet":
        pod_spec(obj.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {}))
    elif kind == "Pod":
        pod_spec(obj.setdefault("spec", {}))
    elif kind == "Service":
        _service(obj, old)
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}  # write-only: merged into data, base64-encoded
        if string_data:
            data = obj.setdefault("data", {})
            data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()})
