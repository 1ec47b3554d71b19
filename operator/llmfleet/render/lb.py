"""The load-balancer tier: nginx.conf / haproxy.cfg from jinja2, its ConfigMap, Deployment, Services.

The config is rendered from the spec *and* the ready model endpoints, so the balancer itself
does least-conn, hashing and per-replica caps over real pods instead of over one Service VIP.
The LB pod runs a small supervisor (``run.sh`` in the ConfigMap) that watches the mounted config
and reloads in place (nginx HUP, haproxy master-worker USR2) after a syntax check: endpoint
changes never restart the pod and never cut an open stream (old workers drain for up to
``timeouts.readSeconds``). Only a change of the supervisor script itself rolls the pods,
through the checksum annotation.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from llmfleet.api import EngineKind, LbEngine, LLMServiceSpec
from llmfleet.render.common import (
    CHECKSUM_ANNOTATION,
    Endpoint,
    Manifest,
    RenderContext,
    checksum,
    deployment,
    http_probe,
    metadata,
    restricted_security_context,
    selector_labels,
)
from llmfleet.render.engines import engine_container, resolve_model

COMPONENT = "lb"
LISTEN_PORT = 8080
STATUS_PORT = 8081
CONFIG_DIR = "/etc/llmfleet"
CONFIG_FILE = {LbEngine.NGINX: "nginx.conf", LbEngine.HAPROXY: "haproxy.cfg"}
LB_UID = {LbEngine.NGINX: 101, LbEngine.HAPROXY: 99}

# llama.cpp's server closes the connection after a streamed response while announcing
# keep-alive; a balancer that reuses that connection writes into a closed socket. No upstream
# connection reuse for it (docs/real-engine.md).
NO_UPSTREAM_KEEPALIVE = frozenset({EngineKind.LLAMACPP})

# How the supervisor (templates/run.sh.j2) drives each balancer: start it in the foreground,
# check a new config, reload gracefully (nginx HUP; haproxy master-worker USR2) and stop
# gracefully on pod termination (nginx QUIT and haproxy USR1 let open streams finish).
_SUPERVISOR = {
    LbEngine.NGINX: {
        "start": 'nginx -c "$conf"',
        "check": 'nginx -t -q -c "$conf"',
        "check_name": "nginx -t",
        "reload_signal": "HUP",
        "stop_signal": "QUIT",
    },
    LbEngine.HAPROXY: {
        "start": 'haproxy -W -db -f "$conf"',
        "check": 'haproxy -c -q -f "$conf"',
        "check_name": "haproxy -c",
        "reload_signal": "USR2",
        "stop_signal": "USR1",
    },
}


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("llmfleet.render", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,  # haproxy rejects a config without a final newline
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def lb_name(ctx: RenderContext) -> str:
    return f"{ctx.name}-lb"


def config_text(
    spec: LLMServiceSpec,
    ctx: RenderContext,
    *,
    runtime_dir: str = "/tmp",
    listen_address: str = "",
    listen_port: int = LISTEN_PORT,
    status_port: int = STATUS_PORT,
    access_log: str = "/dev/stdout",
) -> str:
    """The nginx.conf or haproxy.cfg text for the spec and ``ctx.endpoints`` (pure).

    The listen address (empty: every interface, as in the pod), ports, runtime directory and
    access log are parameters so tests can run the very same config on loopback with the real
    binaries.
    """
    lb = spec.load_balancer
    plan = engine_container(spec, ctx, resolve_model(spec, ctx))
    header = lb.session_header or ""
    values: dict[str, Any] = {
        "name": ctx.name,
        "namespace": ctx.namespace,
        "strategy": str(lb.strategy),
        "session_header": header,
        "session_var": header.lower().replace("-", "_"),
        "servers": list(ctx.endpoints or ()),
        "cap": spec.concurrency_cap(),
        "timeouts": lb.timeouts,
        "rate_limit": lb.rate_limit,
        "trust_forwarded": spec.cache.enabled,
        "upstream_keepalive": spec.engine.kind not in NO_UPSTREAM_KEEPALIVE,
        "health_path": plan.health_path,
        "runtime_dir": runtime_dir,
        "listen_address": listen_address,
        "listen_port": listen_port,
        "status_port": status_port,
        "access_log": access_log,
    }
    return _templates().get_template(f"{CONFIG_FILE[LbEngine(lb.engine)]}.j2").render(**values)


def supervisor_script(engine: LbEngine) -> str:
    values = {**_SUPERVISOR[engine], "name": str(engine), "dir": CONFIG_DIR, "file": CONFIG_FILE[engine]}
    return _templates().get_template("run.sh.j2").render(**values)


def lb_configmap(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest:
    engine = LbEngine(spec.load_balancer.engine)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ctx, lb_name(ctx), COMPONENT, str(engine)),
        "data": {CONFIG_FILE[engine]: config_text(spec, ctx), "run.sh": supervisor_script(engine)},
    }


def lb_deployment(spec: LLMServiceSpec, ctx: RenderContext) -> Manifest:
    lb = spec.load_balancer
    engine = LbEngine(lb.engine)
    uid = LB_UID[engine]
    container: Manifest = {
        "name": str(engine),
        "image": ctx.image(str(engine)),
        "command": ["sh", f"{CONFIG_DIR}/run.sh"],
        "ports": [
            {"name": "http", "containerPort": LISTEN_PORT, "protocol": "TCP"},
            {"name": "status", "containerPort": STATUS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": http_probe("/healthz", "status", period=5, failures=2),
        "livenessProbe": http_probe("/healthz", "status", period=10, failures=3),
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": restricted_security_context(uid, read_only_root=True),
    }
    annotations = {CHECKSUM_ANNOTATION: checksum(supervisor_script(engine))}
    if engine == LbEngine.HAPROXY:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(STATUS_PORT),
                "prometheus.io/path": "/metrics",
            }
        )
    return deployment(
        ctx,
        lb_name(ctx),
        COMPONENT,
        str(engine),
        uid=uid,
        replicas=lb.replicas,
        annotations=annotations,
        pod={
            # Open streams may take up to readSeconds; give the drain that long.
            "terminationGracePeriodSeconds": lb.timeouts.read_seconds + 5,
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": lb_name(ctx), "defaultMode": 0o555}},
                {"name": "tmp", "emptyDir": {}},
            ],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": selector_labels(ctx, COMPONENT)},
                }
            ],
        },
    )


def service(
    ctx: RenderContext,
    name: str,
    component: str,
    app: str,
    target_component: str,
    service_type: str = "ClusterIP",
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, name, component, app),
        "spec": {
            "type": service_type,
            "selector": selector_labels(ctx, target_component),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def endpoints_from_addresses(addresses: list[tuple[str, int, str]]) -> tuple[Endpoint, ...]:
    """Sorted, de-duplicated endpoints, so the same replicas always render the same config."""
    return tuple(
        sorted(
            {Endpoint(address=a, port=p, name=n) for a, p, n in addresses}, key=lambda e: (e.address, e.port)
        )
    )
