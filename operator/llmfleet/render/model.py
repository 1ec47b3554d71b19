"""The model tier: engine Deployment, its Service, cache claim, disruption budget and HPA.

When the HPA owns the replica count (``replicas.max > replicas.min``) the Deployment manifest
carries no ``replicas`` field at all: with server-side apply, a field we send is a field we
own, and the operator would fight the HPA on every reconcile.
"""

from __future__ import annotations

from llmfleet.api import LLMServiceSpec
from llmfleet.quantity import bytes_to_quantity
from llmfleet.render.common import (
    Manifest,
    RenderContext,
    deployment,
    http_probe,
    metadata,
    restricted_security_context,
    selector_labels,
)
from llmfleet.render.engines import CACHE_DIR, HTTP_PORT, EngineContainer, engine_container, resolve_model

COMPONENT = "model"
QUEUE_METRIC = "llmfleet_queue_depth"
INFLIGHT_METRIC = "llmfleet_inflight_requests"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def model_name(ctx: RenderContext) -> str:
    return f"{ctx.name}-model"


def hpa_floor(spec: LLMServiceSpec, ctx: RenderContext) -> int:
    """The HPA's minReplicas: the spec's minimum, raised by the predictive scaler, never above max."""
    floor = max(spec.replicas.min, ctx.predictive_floor or 0)
    return min(floor, spec.replicas.upper)


def _resources(spec: LLMServiceSpec) -> Manifest:
    res = spec.resources
    amounts: dict[str, str] = {}
    if res.cpu:
        amounts["cpu"] = res.cpu
    if res.memory:
        amounts["memory"] = res.memory
    limits = dict(amounts)
    if res.gpu.count:
        limits[GPU_RESOURCE] = str(res.gpu.count)
    out: Manifest = {}
    if amounts:
        out["requests"] = amounts
    if limits:
        out["limits"] = limits
    return out


def _shm_size(spec: LLMServiceSpec) -> str | None:
    if spec.resources.shared_memory:
        return spec.resources.shared_memory
    if spec.resources.gpu.count:
        return bytes_to_quantity(2 * 2**30 * spec.resources.gpu.count)
    return None


def _scheduling(spec: LLMServiceSpec) -> Manifest:
    sched = spec.scheduling
    pod: Manifest = {}
    node_selector = dict(sched.node_selector)
    if spec.resources.gpu.product:
        node_selector[GPU_PRODUCT_LABEL] = spec.resources.gpu.product
    if node_selector:
        pod["nodeSelector"] = node_selector
    tolerations = list(sched.tolerations)
    if spec.resources.gpu.count and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod["tolerations"] = tolerations
    if sched.affinity:
        pod["affinity"] = sched.affinity
    if sched.priority_class_name:
        pod["priorityClassName"] = sched.priority_class_name
    return pod


def _container(spec: LLMServiceSpec, plan: EngineContainer, mounts: list[Manifest]) -> Manifest:
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}, *plan.extra_ports]
    container: Manifest = {
        "name": "engine",
        "image": plan.image,
        "command": plan.command,
        "args": plan.args,
        "env": plan.env,
        "ports": ports,
        # Downloads of big weights can take long: the startup probe allows 30 minutes.
        "startupProbe": http_probe(plan.health_path, "http", period=10, failures=180),
        "readinessProbe": http_probe(plan.health_path, "http", period=5, failures=3),
        "livenessProbe": http_probe(plan.health_path, "http", period=15, failures=4, timeout=10),
        "volumeMounts": mounts,
        "securityContext": restricted_security_context(plan.run_as_user, plan.read_only_root),
    }
    lifecycle: Manifest = {"preStop": {"exec": {"command": ["sleep", "15"]}}}
    if plan.post_start:
        lifecycle["postStart"] = {"exec": {"command": plan.post_start}}
    container["lifecycle"] = lifecycle
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    return container


def model_deployment(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest:
    loc = resolve_model(spec, ctx)
    plan = engine_container(spec, ctx, loc)
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Manifest] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "model-cache", "mountPath": CACHE_DIR},
    ]
    if spec.model.cache:
        volumes.append(
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": f"{ctx.name}-model-cache"}}
        )
    else:
        volumes.append({"name": "model-cache", "emptyDir": {}})
    shm = _shm_size(spec)
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    volumes += list(loc.volumes)
    mounts += list(loc.mounts)
    annotations = {}
    if plan.metrics_port:
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(plan.metrics_port),
            "prometheus.io/path": plan.metrics_path,
        }
    pod_spec: Manifest = {
        "terminationGracePeriodSeconds": 60,
        "containers": [_container(spec, plan, mounts)],
        "volumes": volumes,
        **_scheduling(spec),
    }
    if loc.init_containers:
        pod_spec["initContainers"] = list(loc.init_containers)
    return deployment(
        ctx,
        model_name(ctx),
        COMPONENT,
        str(spec.engine.kind),
        uid=plan.run_as_user,
        replicas=None if has_hpa(spec) else spec.replicas.min,
        # GPUs are scarce: add one new replica before removing an old one, never go below.
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        annotations=annotations,
        pod=pod_spec,
    )


def model_service(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest:
    plan = engine_container(spec, ctx, resolve_model(spec, ctx))
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    annotations = {}
    if plan.metrics_port:
        if plan.metrics_port != HTTP_PORT:
            ports.append(
                {"name": "metrics", "port": plan.metrics_port, "targetPort": "metrics", "protocol": "TCP"}
            )
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(plan.metrics_port),
            "prometheus.io/path": plan.metrics_path,
        }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, model_name(ctx), COMPONENT, str(spec.engine.kind), annotations=annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ctx, COMPONENT),
            "ports": ports,
            # The balancer must see replicas only when they are ready; no proxy to unready pods.
            "publishNotReadyAddresses": False,
        },
    }


def model_cache_claim(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest | None:
    cache = spec.model.cache
    if cache is None:
        return None
    claim: Manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(ctx, f"{ctx.name}-model-cache", COMPONENT, str(spec.engine.kind)),
        "spec": {"accessModes": [cache.access_mode], "resources": {"requests": {"storage": cache.size}}},
    }
    if cache.storage_class_name:
        claim["spec"]["storageClassName"] = cache.storage_class_name
    return claim


def has_hpa(spec: LLMServiceSpec) -> bool:
    return spec.replicas.upper > spec.replicas.min


def model_pdb(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest | None:
    if spec.replicas.upper <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, model_name(ctx), COMPONENT, str(spec.engine.kind)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ctx, COMPONENT)}},
    }


def _pods_metric(name: str, average: int) -> Manifest:
    # Served by prometheus-adapter from each engine's own gauges (docs/install.md).
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(average)}},
    }


def hpa_metrics(spec: LLMServiceSpec) -> list[Manifest]:
    """Queue depth per replica, and in-flight requests per replica when a target is set.

    With several metrics the HPA takes the largest recommendation, so in-flight scales up early
    while the queue target still catches a saturated fleet.
    """
    auto = spec.autoscaling
    metrics = [_pods_metric(QUEUE_METRIC, auto.target_queue_depth)]
    if auto.target_in_flight_per_replica is not None:
        metrics.append(_pods_metric(INFLIGHT_METRIC, auto.target_in_flight_per_replica))
    return metrics


def model_hpa(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest | None:
    if not has_hpa(spec):
        return None
    auto = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(ctx, ctx.name, "autoscaler", "llmfleet"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": model_name(ctx)},
            "minReplicas": hpa_floor(spec, ctx),
            "maxReplicas": spec.replicas.upper,
            "metrics": hpa_metrics(spec),
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": auto.scale_up.stabilization_window_seconds,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Pods", "value": auto.scale_up.pods_per_minute, "periodSeconds": 60}
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": auto.scale_down.stabilization_window_seconds,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": auto.scale_down.percent_per_minute, "periodSeconds": 60}
                    ],
                },
            },
        },
    }
