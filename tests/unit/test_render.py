"""Renderer table tests: what each engine and each load-balancer strategy turns into."""

from __future__ import annotations

from typing import Any

import pytest

from llmfleet.render import Endpoint, RenderContext, render_children
from llmfleet.render.common import CHECKSUM_ANNOTATION
from llmfleet.render.lb import config_text
from llmfleet.validation import validate_service
from tests.specs import minimal, service

OWNER = {
    "apiVersion": "llmfleet.io/v1alpha1",
    "kind": "LLMService",
    "metadata": {"name": "chat", "uid": "uid-1"},
}


def render(spec: dict[str, Any], **ctx: Any) -> dict[tuple[str, str], dict[str, Any]]:
    svc = validate_service(service(spec))
    context = RenderContext(name="chat", namespace="ml", owner=OWNER, **ctx)
    return {(m["kind"], m["metadata"]["name"]): m for m in render_children(svc.spec, context)}


def engine_container(children: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = children[("Deployment", "chat-model")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


TUNING = {"maxConcurrentSequences": 32, "contextLength": 4096, "prefixCaching": True}

# engine -> (command prefix, {flag: expected value}, health path)
ENGINE_TABLE: dict[str, tuple[list[str], dict[str, str], str]] = {
    "vllm": (
        ["vllm", "serve"],
        {
            "--max-num-seqs": "32",
            "--max-model-len": "4096",
            "--tensor-parallel-size": "2",
            "--served-model-name": "chat",
            "--port": "8000",
        },
        "/health",
    ),
    "tgi": (
        ["text-generation-launcher"],
        {
            "--max-concurrent-requests": "32",
            "--max-total-tokens": "4096",
            "--max-input-tokens": "4095",
            "--num-shard": "2",
            "--port": "8000",
        },
        "/health",
    ),
    "sglang": (
        ["python3"],
        {"--max-running-requests": "32", "--context-length": "4096", "--tp": "2", "--port": "8000"},
        "/health",
    ),
    "llamacpp": (
        ["/app/llama-server"],
        {
            "--parallel": "32",
            "--ctx-size": str(4096 * 32),
            "--port": "8000",
            "--alias": "chat",
            "--cache-reuse": "256",
        },
        "/health",
    ),
}


@pytest.mark.parametrize("engine", sorted(ENGINE_TABLE))
def test_engine_flags_probes_and_ports(engine: str) -> None:
    gpus = {"gpu": {"count": 2}} if engine != "llamacpp" else {"gpu": {"count": 0}}
    children = render(minimal(engine, engine={"kind": engine, "tuning": TUNING}, resources=gpus))
    command, flags, health = ENGINE_TABLE[engine]
    container = engine_container(children)
    assert container["command"] == command
    for name, value in flags.items():
        assert flag(container["args"], name) == value, (name, container["args"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": health, "port": "http"}
    assert container["ports"][0] == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_user_args_come_last_and_user_env_wins() -> None:
    spec = minimal(
        "vllm",
        engine={"kind": "vllm", "args": ["--max-num-seqs", "7"], "env": [{"name": "HF_HOME", "value": "/x"}]},
    )
    container = engine_container(render(spec))
    assert container["args"][-2:] == ["--max-num-seqs", "7"]
    assert [e for e in container["env"] if e["name"] == "HF_HOME"] == [{"name": "HF_HOME", "value": "/x"}]


def test_tgi_exposes_its_separate_metrics_port_on_service_and_pod() -> None:
    children = render(minimal("tgi"))
    ports = {p["name"]: p["port"] for p in children[("Service", "chat-model")]["spec"]["ports"]}
    assert ports == {"http": 8000, "metrics": 9000}
    annotations = children[("Deployment", "chat-model")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9000"


def test_ollama_pulls_and_aliases_the_model_and_has_no_metrics() -> None:
    children = render(minimal("ollama"))
    container = engine_container(children)
    script = container["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert "ollama pull registry.ollama.ai/library/llama3.2:1b" in script and "ollama cp" in script
    assert "prometheus.io/scrape" not in children[("Service", "chat-model")]["metadata"].get(
        "annotations", {}
    )


def test_gpu_limits_product_selection_tolerations_and_shm() -> None:
    spec = minimal(
        "vllm",
        resources={
            "gpu": {"count": 4, "product": "NVIDIA-H100-80GB-HBM3"},
            "memory": "256Gi",
            "sharedMemory": "32Gi",
        },
    )
    deployment = render(spec)[("Deployment", "chat-model")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_cpu_service_has_no_gpu_and_no_gpu_toleration() -> None:
    pod = render(minimal("llamacpp", resources={"cpu": "4"}))[("Deployment", "chat-model")]["spec"][
        "template"
    ]["spec"]
    assert "nvidia.com/gpu" not in str(pod)
    assert flag(pod["containers"][0]["args"], "--threads") == "4"


@pytest.mark.parametrize(
    ("uri", "expect_init", "model_arg"),
    [
        ("hf://org/m-GGUF/m.Q4.gguf", None, ("--hf-file", "m.Q4.gguf")),
        ("pvc://models/llama/m.gguf", None, ("--model", "/models/models/llama/m.gguf")),
        ("s3://bucket/llama/m.gguf", "amazon/aws-cli", ("--model", "/models-cache/s3/bucket/llama/m.gguf")),
        ("oci://ghcr.io/acme/m:1", "ghcr.io/acme/m:1", ("--model", "/models-cache/oci/ghcr.io-acme-m-1")),
    ],
)
def test_model_sources(uri: str, expect_init: str | None, model_arg: tuple[str, str]) -> None:
    pod = render(minimal("llamacpp", model={"uri": uri}))[("Deployment", "chat-model")]["spec"]["template"][
        "spec"
    ]
    inits = pod.get("initContainers", [])
    assert inits[0]["image"].startswith(expect_init) if expect_init else inits == []
    assert flag(pod["containers"][0]["args"], model_arg[0]) == model_arg[1]


def test_model_cache_claim_is_mounted() -> None:
    children = render(
        minimal("vllm", model={"uri": "hf://org/m", "cache": {"size": "100Gi", "storageClassName": "fast"}})
    )
    claim = children[("PersistentVolumeClaim", "chat-model-cache")]
    assert (
        claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
        and claim["spec"]["storageClassName"] == "fast"
    )
    volumes = children[("Deployment", "chat-model")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "chat-model-cache"}} in volumes


def test_every_child_has_standard_labels_and_owner_reference() -> None:
    children = render(minimal("vllm", cache={"enabled": True}, replicas={"min": 2, "max": 4}))
    for (kind, name), manifest in children.items():
        labels = manifest["metadata"]["labels"]
        for key in ("name", "instance", "component", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (kind, name, key)
        assert labels["app.kubernetes.io/managed-by"] == "llmfleet"
        ref = manifest["metadata"]["ownerReferences"]
        assert ref == [
            {
                "apiVersion": "llmfleet.io/v1alpha1",
                "kind": "LLMService",
                "name": "chat",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_hpa_owns_replicas_and_follows_the_spec() -> None:
    spec = minimal(
        "vllm",
        replicas={"min": 2, "max": 6},
        autoscaling={
            "targetQueueDepth": 5,
            "scaleUp": {"podsPerMinute": 3},
            "scaleDown": {"percentPerMinute": 10, "stabilizationWindowSeconds": 300},
        },
    )
    children = render(spec, predictive_floor=4)
    assert "replicas" not in children[("Deployment", "chat-model")]["spec"]
    hpa = children[("HorizontalPodAutoscaler", "chat")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 6)
    assert hpa["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "5"}
    assert hpa["behavior"]["scaleUp"]["policies"] == [{"type": "Pods", "value": 3, "periodSeconds": 60}]
    assert hpa["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
    }


def test_in_flight_target_adds_a_second_hpa_metric() -> None:
    without = render(minimal("vllm", replicas={"min": 1, "max": 4}))[("HorizontalPodAutoscaler", "chat")]
    assert [m["pods"]["metric"]["name"] for m in without["spec"]["metrics"]] == ["llmfleet_queue_depth"]
    spec = minimal(
        "vllm",
        replicas={"min": 1, "max": 4},
        autoscaling={"targetQueueDepth": 4, "targetInFlightPerReplica": 48},
    )
    metrics = render(spec)[("HorizontalPodAutoscaler", "chat")]["spec"]["metrics"]
    assert [(m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"]) for m in metrics] == [
        ("llmfleet_queue_depth", "4"),
        ("llmfleet_inflight_requests", "48"),
    ]


@pytest.mark.parametrize(("floor", "expected"), [(None, 2), (1, 2), (5, 5), (99, 6)])
def test_predictive_floor_is_clamped_to_the_spec(floor: int | None, expected: int) -> None:
    hpa = render(minimal("vllm", replicas={"min": 2, "max": 6}), predictive_floor=floor)[
        ("HorizontalPodAutoscaler", "chat")
    ]
    assert hpa["spec"]["minReplicas"] == expected


def test_fixed_size_service_has_no_hpa_and_sets_replicas() -> None:
    children = render(minimal("vllm", replicas={"min": 3}))
    assert ("HorizontalPodAutoscaler", "chat") not in children
    assert children[("Deployment", "chat-model")]["spec"]["replicas"] == 3
    assert ("PodDisruptionBudget", "chat-model") in children


def test_single_replica_has_no_pdb() -> None:
    assert ("PodDisruptionBudget", "chat-model") not in render(minimal("vllm"))


def test_cache_children_appear_only_when_enabled_and_public_service_moves() -> None:
    without = render(minimal("vllm"))
    with_cache = render(minimal("vllm", cache={"enabled": True, "maxMemory": "2Gi"}))
    extra = set(with_cache) - set(without)
    assert extra == {
        ("ConfigMap", "chat-cache"),
        ("Service", "chat-cache"),
        ("Deployment", "chat-cache"),
        ("Service", "chat-lb"),
        ("Deployment", "chat-gateway"),
        ("NetworkPolicy", "chat-cache"),
        ("NetworkPolicy", "chat-lb"),
    }
    assert without[("Service", "chat")]["spec"]["selector"]["app.kubernetes.io/component"] == "lb"
    assert with_cache[("Service", "chat")]["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    redis = with_cache[("Deployment", "chat-cache")]["spec"]["template"]["spec"]["containers"][0]
    assert redis["resources"]["limits"]["memory"] == "2624Mi"  # 2Gi * 1.25 + 64Mi
    conf = with_cache[("ConfigMap", "chat-cache")]["data"]["redis.conf"]
    assert f"maxmemory {2 * 2**30}" in conf and "maxmemory-policy allkeys-lru" in conf and 'save ""' in conf
    assert redis["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "chat-cache-auth", "key": "password"}


def test_redis_config_change_rolls_redis_pods() -> None:
    a = render(minimal("vllm", cache={"enabled": True, "maxMemory": "1Gi"}))[("Deployment", "chat-cache")]
    b = render(minimal("vllm", cache={"enabled": True, "maxMemory": "2Gi"}))[("Deployment", "chat-cache")]
    c = render(minimal("vllm", cache={"enabled": True, "maxMemory": "2Gi"}))[("Deployment", "chat-cache")]
    key = ("spec", "template", "metadata", "annotations")

    def annotation(d: dict[str, Any]) -> str:
        return str(d[key[0]][key[1]][key[2]][key[3]][CHECKSUM_ANNOTATION])

    assert annotation(a) != annotation(b) and annotation(b) == annotation(c)


def test_endpoint_changes_do_not_roll_lb_pods() -> None:
    one = render(minimal("vllm"), endpoints=(Endpoint("10.0.0.1", 8000),))
    two = render(minimal("vllm"), endpoints=(Endpoint("10.0.0.1", 8000), Endpoint("10.0.0.2", 8000)))
    assert one[("Deployment", "chat-lb")] == two[("Deployment", "chat-lb")]
    assert one[("ConfigMap", "chat-lb")] != two[("ConfigMap", "chat-lb")]


def lb_config(lb: dict[str, Any], endpoints: int = 2, engine: str = "vllm", **spec: Any) -> str:
    svc = validate_service(service(minimal(engine, loadBalancer=lb, **spec)))
    eps = tuple(Endpoint(f"10.0.0.{i}", 8000) for i in range(1, endpoints + 1))
    return config_text(svc.spec, RenderContext(name="chat", endpoints=eps))


# (lb spec, lines the config must contain)
STRATEGY_TABLE: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "nginx-rr",
        {"engine": "nginx", "strategy": "round-robin"},
        ["server 10.0.0.1:8000 max_fails=2", "proxy_buffering off;", "keepalive 128;"],
    ),
    ("nginx-lc", {"engine": "nginx", "strategy": "least-conn"}, ["least_conn;"]),
    (
        "nginx-sa",
        {"engine": "nginx", "strategy": "session-affinity", "sessionHeader": "X-Session-ID"},
        ["hash $llmfleet_affinity_key consistent;", "map $http_x_session_id $llmfleet_affinity_key"],
    ),
    ("nginx-cap", {"engine": "nginx", "maxConcurrencyPerReplica": 16}, ["max_conns=16", "zone model 1m;"]),
    (
        "nginx-rate",
        {"engine": "nginx", "rateLimit": {"requestsPerSecond": 50, "burst": 100}},
        ["rate=50r/s", "limit_req zone=per_client burst=100 nodelay;", "limit_req_status 429;"],
    ),
    (
        "nginx-timeouts",
        {"engine": "nginx", "timeouts": {"connectSeconds": 3, "readSeconds": 120}},
        ["proxy_connect_timeout 3s;", "proxy_read_timeout 120s;", "worker_shutdown_timeout 120s;"],
    ),
    (
        "haproxy-rr",
        {"engine": "haproxy", "strategy": "round-robin"},
        ["balance roundrobin", "option httpchk GET /health", "server 10-0-0-1-8000 10.0.0.1:8000 check"],
    ),
    ("haproxy-lc", {"engine": "haproxy", "strategy": "least-conn"}, ["balance leastconn"]),
    (
        "haproxy-sa",
        {"engine": "haproxy", "strategy": "session-affinity", "sessionHeader": "X-Session-ID"},
        ["balance hdr(X-Session-ID)", "hash-type consistent", "hash-balance-factor 125"],
    ),
    (
        "haproxy-cap",
        {"engine": "haproxy", "maxConcurrencyPerReplica": 16, "timeouts": {"queueSeconds": 45}},
        ["maxconn 16", "timeout queue 45000ms"],
    ),
    (
        "haproxy-fail-fast",
        {"engine": "haproxy", "maxConcurrencyPerReplica": 16, "timeouts": {"queueSeconds": 0.25}},
        ["timeout queue 250ms"],
    ),
    (
        "haproxy-rate",
        {"engine": "haproxy", "rateLimit": {"requestsPerSecond": 50, "burst": 10}},
        ["http-request track-sc0 src", "deny_status 429"],
    ),
    (
        "haproxy-retries",
        {"engine": "haproxy"},
        [
            "retry-on conn-failure",
            "retries 3",
            "http-request set-priority-class int(1) if { req.hdr_val(x-stainless-retry-count) gt 0 }",
        ],
    ),
]


@pytest.mark.parametrize(("lb", "lines"), [c[1:] for c in STRATEGY_TABLE], ids=[c[0] for c in STRATEGY_TABLE])
def test_lb_strategy_table(lb: dict[str, Any], lines: list[str]) -> None:
    text = lb_config(lb)
    for line in lines:
        assert line in text, line


def test_nginx_never_retries_a_post_that_reached_a_replica() -> None:
    text = lb_config({"engine": "nginx"})
    assert "proxy_next_upstream error timeout;" in text and "non_idempotent" not in text


def test_cap_defaults_to_engine_concurrency() -> None:
    svc = validate_service(
        service(minimal("vllm", engine={"kind": "vllm", "tuning": {"maxConcurrentSequences": 32}}))
    )
    text = config_text(svc.spec, RenderContext(name="chat", endpoints=(Endpoint("10.0.0.1", 8000),)))
    assert "max_conns=32" in text


def test_llamacpp_upstreams_get_no_connection_reuse() -> None:
    nginx = lb_config({"engine": "nginx"}, engine="llamacpp")
    haproxy = lb_config({"engine": "haproxy"}, engine="llamacpp")
    assert "keepalive 128;" not in nginx and 'proxy_set_header Connection "close";' in nginx
    assert "http-reuse never" in haproxy


def test_no_ready_replicas_renders_a_valid_placeholder() -> None:
    assert "server 127.0.0.1:9 down;" in lb_config({"engine": "nginx"}, endpoints=0)
    assert (
        " check"
        not in lb_config({"engine": "haproxy"}, endpoints=0)
        .split("backend model", 1)[1]
        .split("frontend status")[0]
    )


def test_cache_makes_the_balancer_trust_the_gateway_forwarded_address() -> None:
    assert "real_ip_header X-Forwarded-For;" in lb_config({"engine": "nginx"}, cache={"enabled": True})
    assert "real_ip_header" not in lb_config({"engine": "nginx"})


def test_rendered_gateway_args_are_accepted_by_the_gateway_command() -> None:
    """Contract: the Deployment's args parse with `llmfleet gateway`'s own parser."""
    from llmfleet.cli import command_parser

    spec = minimal(
        "vllm",
        cache={
            "enabled": True,
            "ttlSeconds": 120,
            "tenantHeader": "X-Team",
            "semantic": {"enabled": True, "similarityThreshold": 0.95},
        },
    )
    container = render(spec)[("Deployment", "chat-gateway")]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["llmfleet"] and container["args"][0] == "gateway"
    parser, _ = command_parser("gateway")
    args = parser.parse_args(container["args"][1:])
    assert args.upstream == "http://chat-lb.ml.svc.cluster.local:80"
    assert args.redis_url == "redis://chat-cache.ml.svc.cluster.local:6379/0"
    assert (args.ttl_seconds, args.tenant_header, args.semantic, args.semantic_threshold) == (
        120,
        "X-Team",
        True,
        0.95,
    )
    assert args.port == 8080 and args.metrics_port == 9091
