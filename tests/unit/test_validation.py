"""Invalid LLMServices are rejected with the field path a user would edit and a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmfleet.validation import InvalidService, validate_service
from tests.specs import SAMPLES, load_sample, minimal, service

# (id, spec or whole-object override, expected path, expected message fragment)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown-engine",
        minimal("vllm", engine={"kind": "triton"}),
        "spec.engine.kind",
        "'vllm', 'tgi', 'sglang', 'llamacpp' or 'ollama'",
    ),
    (
        "bad-uri-scheme",
        minimal("vllm", model={"uri": "http://example.com/model"}),
        "spec.model.uri",
        "should match pattern",
    ),
    ("hf-without-repo", minimal("vllm", model={"uri": "hf://llama"}), "spec.model", "hf://ORG/REPO"),
    ("pvc-without-path", minimal("vllm", model={"uri": "pvc://claim"}), "spec.model", "pvc://CLAIM/PATH"),
    (
        "pvc-with-cache",
        minimal("vllm", model={"uri": "pvc://claim/llama", "cache": {"size": "10Gi"}}),
        "spec.model",
        "remove model.cache",
    ),
    (
        "in-flight-target-at-the-cap",
        minimal(
            "vllm",
            loadBalancer={"maxConcurrencyPerReplica": 64},
            autoscaling={"targetInFlightPerReplica": 60},
        ),
        "spec",
        "too close to the concurrency cap 64",
    ),
    (
        "min-above-max",
        minimal("vllm", replicas={"min": 3, "max": 2}),
        "spec.replicas",
        "replicas.min (3) must be <= replicas.max (2)",
    ),
    ("min-zero", minimal("vllm", replicas={"min": 0}), "spec.replicas.min", "greater than or equal to 1"),
    (
        "affinity-without-header",
        minimal("vllm", loadBalancer={"strategy": "session-affinity"}),
        "spec.loadBalancer",
        "sessionHeader is required",
    ),
    (
        "product-without-gpu",
        minimal("llamacpp", resources={"gpu": {"count": 0, "product": "NVIDIA-L4"}}),
        "spec.resources.gpu",
        "gpu.product needs gpu.count > 0",
    ),
    (
        "vllm-on-cpu",
        minimal("vllm", resources={"gpu": {"count": 0}}),
        "spec",
        "vllm needs resources.gpu.count >= 1",
    ),
    (
        "llamacpp-quantization",
        minimal("llamacpp", engine={"kind": "llamacpp", "tuning": {"quantization": "awq"}}),
        "spec",
        "does not support engine.tuning.quantization awq",
    ),
    (
        "ollama-prefix-caching",
        minimal("ollama", engine={"kind": "ollama", "tuning": {"prefixCaching": True}}),
        "spec",
        "no prefix caching switch",
    ),
    (
        "llamacpp-gpu-memory",
        minimal("llamacpp", engine={"kind": "llamacpp", "tuning": {"gpuMemoryUtilization": 0.9}}),
        "spec",
        "no GPU memory fraction",
    ),
    (
        "gpu-memory-above-one",
        minimal("vllm", engine={"kind": "vllm", "tuning": {"gpuMemoryUtilization": 1.5}}),
        "spec.engine.tuning.gpuMemoryUtilization",
        "less than or equal to 1",
    ),
    (
        "tensor-parallel-3",
        minimal("vllm", resources={"gpu": {"count": 3}}),
        "spec",
        "must be 1, 2, 4, 8 or 16 (got 3)",
    ),
    (
        "ollama-autoscaling",
        minimal("ollama", replicas={"min": 1, "max": 3}),
        "spec",
        "ollama exports no queue metric",
    ),
    (
        "ollama-pvc",
        minimal("ollama", model={"uri": "pvc://models/llama.gguf"}),
        "spec",
        "engine ollama pulls models itself",
    ),
    (
        "llamacpp-pvc-dir",
        minimal("llamacpp", model={"uri": "pvc://models/llama"}),
        "spec",
        "must end in .gguf",
    ),
    (
        "shm-over-memory",
        minimal("vllm", resources={"gpu": {"count": 1}, "memory": "8Gi", "sharedMemory": "16Gi"}),
        "spec.resources",
        "must be below memory (8Gi)",
    ),
    (
        "bad-quantity",
        minimal("vllm", resources={"gpu": {"count": 1}, "memory": "lots"}),
        "spec.resources.memory",
        "should match pattern",
    ),
    (
        "semantic-without-cache",
        minimal("vllm", cache={"enabled": False, "semantic": {"enabled": True}}),
        "spec.cache",
        "cache.semantic.enabled needs cache.enabled",
    ),
    (
        "tiny-redis",
        minimal("vllm", cache={"enabled": True, "maxMemory": "1Mi"}),
        "spec.cache",
        "at least 16Mi",
    ),
    (
        "horizon-below-interval",
        minimal(
            "vllm",
            autoscaling={"predictive": {"enabled": True, "horizonSeconds": 60, "intervalSeconds": 120}},
            replicas={"min": 1, "max": 2},
        ),
        "spec.autoscaling.predictive",
        "horizonSeconds (60) must be >= intervalSeconds (120)",
    ),
    (
        "predictive-without-room",
        minimal("vllm", autoscaling={"predictive": {"enabled": True}}),
        "spec",
        "needs room to scale",
    ),
    (
        "unknown-field",
        minimal("vllm", engine={"kind": "vllm", "replicas": 3}),
        "spec.engine.replicas",
        "Extra inputs are not permitted",
    ),
    (
        "negative-rate",
        minimal("vllm", loadBalancer={"rateLimit": {"requestsPerSecond": -5}}),
        "spec.loadBalancer.rateLimit.requestsPerSecond",
        "greater than or equal to 1",
    ),
    (
        "env-value-and-from",
        minimal(
            "vllm",
            engine={
                "kind": "vllm",
                "env": [
                    {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ],
            },
        ),
        "spec.engine.env[0]",
        "set value or valueFrom, not both",
    ),
    (
        "lb-engine-typo",
        minimal("vllm", loadBalancer={"engine": "envoy"}),
        "spec.loadBalancer.engine",
        "'nginx' or 'haproxy'",
    ),
]


@pytest.mark.parametrize(
    ("spec", "path", "fragment"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_spec_is_rejected_with_path_and_message(
    spec: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(InvalidService) as caught:
        validate_service(service(spec))
    problems = [(p.path, p.message) for p in caught.value.problems]
    assert any(p == path and fragment in m for p, m in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    spec = minimal(
        "vllm", engine={"kind": "vllm", "tuning": {"maxConcurrentSequences": 0}}, replicas={"min": 0}
    )
    with pytest.raises(InvalidService) as caught:
        validate_service(service(spec, name="Bad_Name"))
    paths = {p.path for p in caught.value.problems}
    assert {"metadata.name", "spec.engine.tuning.maxConcurrentSequences", "spec.replicas.min"} <= paths


@pytest.mark.parametrize("name", ["", "UPPER", "9starts-with-digit", "x" * 41, "ends-with-"])
def test_metadata_name_must_leave_room_for_child_names(name: str) -> None:
    with pytest.raises(InvalidService) as caught:
        validate_service(service(minimal("vllm"), name=name))
    assert [p.path for p in caught.value.problems] == ["metadata.name"]


def test_wrong_kind_is_rejected() -> None:
    obj = service(minimal("vllm"))
    obj["kind"] = "Deployment"
    with pytest.raises(InvalidService) as caught:
        validate_service(obj)
    assert caught.value.problems[0].path == "kind"


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_samples_are_valid(path: Path) -> None:
    validate_service(load_sample(path))


def _render(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmfleet.cli", "render", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_render_cli_exits_2_listing_problems_without_traceback(tmp_path: Path) -> None:
    bad = service(
        minimal("vllm", replicas={"min": 3, "max": 1}, loadBalancer={"strategy": "session-affinity"})
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = _render(["-f", str(path)])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "spec.replicas: replicas.min (3) must be <= replicas.max (1)" in result.stderr
    assert "spec.loadBalancer: loadBalancer.sessionHeader is required" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("case", INVALID[:15], ids=[case[0] for case in INVALID[:15]])
def test_render_cli_rejects_each_kind_of_mistake(case: tuple[str, dict[str, Any], str, str]) -> None:
    result = _render(["-f", "-"], stdin=yaml.safe_dump(service(case[1])))
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert case[2] in result.stderr


def test_render_cli_reports_unreadable_input_cleanly(tmp_path: Path) -> None:
    missing = _render(["-f", str(tmp_path / "nope.yaml")])
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nope.yaml" in missing.stderr
    (tmp_path / "broken.yaml").write_text("spec: [unclosed")
    broken = _render(["-f", str(tmp_path / "broken.yaml")])
    assert broken.returncode == 2 and "Traceback" not in broken.stderr


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_render_cli_prints_a_yaml_stream_of_children(path: Path) -> None:
    result = _render(["-f", str(path)])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    assert all(d["metadata"]["namespace"] for d in docs)
