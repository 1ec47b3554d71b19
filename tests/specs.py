"""LLMService specs shared by the renderer, schema and config tests: samples and generators."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))


def load_sample(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def service(spec: dict[str, Any], name: str = "chat", namespace: str = "ml") -> dict[str, Any]:
    return {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


MINIMAL: dict[str, dict[str, Any]] = {
    "vllm": {
        "model": {"uri": "hf://org/model"},
        "engine": {"kind": "vllm"},
        "resources": {"gpu": {"count": 1}},
    },
    "tgi": {
        "model": {"uri": "hf://org/model"},
        "engine": {"kind": "tgi"},
        "resources": {"gpu": {"count": 1}},
    },
    "sglang": {
        "model": {"uri": "hf://org/model"},
        "engine": {"kind": "sglang"},
        "resources": {"gpu": {"count": 1}},
    },
    "llamacpp": {"model": {"uri": "hf://org/model-GGUF/model.Q4_K_M.gguf"}, "engine": {"kind": "llamacpp"}},
    "ollama": {
        "model": {"uri": "oci://registry.ollama.ai/library/llama3.2:1b"},
        "engine": {"kind": "ollama"},
    },
}


def minimal(engine_kind: str, /, **overrides: Any) -> dict[str, Any]:
    """A valid minimal spec for ``engine_kind`` with top-level sections merged from ``overrides``."""
    spec = copy.deepcopy(MINIMAL[engine_kind])
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


_names = st.from_regex(r"[a-z][a-z0-9]{0,12}", fullmatch=True)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Random *valid* LLMService specs covering every engine, strategy and optional section."""
    engine = draw(st.sampled_from(["vllm", "tgi", "sglang", "llamacpp", "ollama"]))
    gpu_engine = engine in ("vllm", "tgi", "sglang")
    count = draw(st.sampled_from([1, 2, 4, 8])) if gpu_engine else draw(st.sampled_from([0, 0, 1]))
    gpu: dict[str, Any] = {"count": count}
    if count and draw(st.booleans()):
        gpu["product"] = draw(
            st.sampled_from(["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"])
        )
    if engine == "ollama":
        uri = draw(
            st.sampled_from(
                ["oci://registry.ollama.ai/library/llama3.2:1b", "hf://bartowski/Llama-3.2-1B-Instruct-GGUF"]
            )
        )
    elif engine == "llamacpp":
        uri = draw(
            st.sampled_from(
                [
                    "hf://org/m-GGUF/m.Q4_K_M.gguf",
                    "hf://org/m-GGUF:Q8_0",
                    "pvc://models/llama/m.gguf",
                    "s3://bucket/models/m.gguf",
                    "oci://ghcr.io/acme/m:1",
                ]
            )
        )
    else:
        uri = draw(
            st.sampled_from(
                [
                    "hf://meta-llama/Llama-3.1-8B-Instruct",
                    "pvc://models/llama-3",
                    "s3://bucket/llama-3",
                    "oci://ghcr.io/acme/llama-modelcar:1",
                ]
            )
        )
    model: dict[str, Any] = {"uri": uri}
    if draw(st.booleans()):
        model["name"] = draw(_names)
    if not uri.startswith("pvc://") and draw(st.booleans()):
        model["cache"] = {
            "size": draw(st.sampled_from(["10Gi", "200Gi"])),
            "accessMode": draw(st.sampled_from(["ReadWriteOnce", "ReadWriteMany"])),
        }
    tuning: dict[str, Any] = {}
    if draw(st.booleans()):
        tuning["maxConcurrentSequences"] = draw(st.integers(1, 512))
    if draw(st.booleans()):
        tuning["contextLength"] = draw(st.integers(128, 131072))
    if gpu_engine:
        tuning["quantization"] = draw(st.sampled_from(["none", "awq", "gptq", "fp8"]))
        if draw(st.booleans()):
            tuning["gpuMemoryUtilization"] = draw(st.sampled_from([0.5, 0.85, 0.95]))
    if engine != "ollama" and draw(st.booleans()):
        tuning["prefixCaching"] = draw(st.booleans())
    env = (
        [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
        if draw(st.booleans())
        else []
    )
    resources: dict[str, Any] = {"gpu": gpu}
    if draw(st.booleans()):
        resources["cpu"] = draw(st.sampled_from(["500m", "4", "16"]))
    if draw(st.booleans()):
        resources["memory"] = draw(st.sampled_from(["8Gi", "64Gi"]))
        if draw(st.booleans()):
            resources["sharedMemory"] = "2Gi"
    low = draw(st.integers(1, 4))
    high = low if engine == "ollama" else draw(st.integers(low, low + 6))
    strategy = draw(st.sampled_from(["round-robin", "least-conn", "session-affinity"]))
    lb: dict[str, Any] = {
        "engine": draw(st.sampled_from(["nginx", "haproxy"])),
        "strategy": strategy,
        "replicas": draw(st.integers(1, 3)),
    }
    if strategy == "session-affinity" or draw(st.booleans()):
        lb["sessionHeader"] = draw(st.sampled_from(["X-Session-ID", "X-Conversation", "Session"]))
    if draw(st.booleans()):
        lb["rateLimit"] = {"requestsPerSecond": draw(st.integers(1, 500)), "burst": draw(st.integers(0, 500))}
    if draw(st.booleans()):
        lb["maxConcurrencyPerReplica"] = draw(st.integers(1, 256))
    if draw(st.booleans()):
        lb["timeouts"] = {
            "connectSeconds": draw(st.integers(1, 30)),
            "readSeconds": draw(st.integers(5, 3600)),
            "queueSeconds": draw(st.integers(1, 120)),
        }
    cache: dict[str, Any] = {"enabled": draw(st.booleans())}
    if cache["enabled"]:
        cache["maxMemory"] = draw(st.sampled_from(["64Mi", "1Gi", "3Gi"]))
        cache["ttlSeconds"] = draw(st.integers(1, 86400))
        if draw(st.booleans()):
            cache["semantic"] = {"enabled": True, "similarityThreshold": 0.9}
        if draw(st.booleans()):
            cache["tenantHeader"] = "X-Tenant"
        if draw(st.booleans()):
            cache["passwordSecretRef"] = {"name": "redis-pass"}
    autoscaling: dict[str, Any] = {"targetQueueDepth": draw(st.integers(1, 64))}
    cap = lb.get("maxConcurrencyPerReplica") or tuning.get("maxConcurrentSequences")
    most = 512 if cap is None else math.floor(cap / 1.1)  # the HPA must be able to exceed it
    if most >= 1 and draw(st.booleans()):
        autoscaling["targetInFlightPerReplica"] = draw(st.integers(1, most))
    if high > low and draw(st.booleans()):
        autoscaling["predictive"] = {
            "enabled": True,
            "horizonSeconds": 600,
            "intervalSeconds": 60,
            "headroom": 0.3,
        }
    spec: dict[str, Any] = {
        "model": model,
        "engine": {
            "kind": engine,
            "tuning": tuning,
            "env": env,
            "args": ["--verbose"] if draw(st.booleans()) else [],
            "warmup": draw(st.booleans()),
        },
        "resources": resources,
        "replicas": {"min": low, "max": high},
        "loadBalancer": lb,
        "cache": cache,
        "autoscaling": autoscaling,
    }
    if count and draw(st.booleans()):
        spec["scheduling"] = {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
            ],
            "nodeSelector": {"pool": "gpu"},
        }
    if draw(st.booleans()):
        spec["slo"] = {"ttftP95Ms": draw(st.integers(100, 5000))}
    return spec
