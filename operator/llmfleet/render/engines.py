"""One builder per model server: the container command, args, env, ports, probes and warmup.

Every engine listens on port 8000 (named ``http``) so the Services, the load-balancer configs
and the probes never need to know which engine runs. ``engine.tuning`` knobs map to each engine's
own flag here and only here; extra ``engine.args`` are appended last so the user always wins.
Where the weights come from (``model.uri``) is resolved once into a ``ModelLocation`` that the
builders turn into the engine's model argument.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from llmfleet.api import EngineKind, LLMServiceSpec, Quantization
from llmfleet.render.common import Manifest, RenderContext

HTTP_PORT = 8000
LLAMACPP_DEFAULT_CONTEXT = 4096  # tokens per slot when engine.tuning.contextLength is omitted
CACHE_DIR = "/models-cache"
SOURCE_DIR = "/models"


@dataclass(frozen=True)
class ModelLocation:
    """How the engine finds the weights.

    ``local_path``: the weights are files in the pod (a claim, or copied by an init container);
    ``hub_ref``: the engine downloads them itself (Hugging Face repo, Ollama registry reference).
    """

    local_path: str | None = None
    hub_ref: str | None = None
    hub_file: str | None = None
    init_containers: tuple[Manifest, ...] = ()
    volumes: tuple[Manifest, ...] = ()
    mounts: tuple[Manifest, ...] = ()


@dataclass
class EngineContainer:
    """What the model Deployment needs to know about the engine container."""

    image: str
    command: list[str]
    args: list[str]
    env: list[Manifest] = field(default_factory=list)
    health_path: str = "/health"
    metrics_port: int | None = HTTP_PORT
    metrics_path: str = "/metrics"
    run_as_user: int = 1000
    read_only_root: bool = False
    post_start: list[str] | None = None
    extra_ports: list[Manifest] = field(default_factory=list)


def _sanitize(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")[:100]


def resolve_model(spec: LLMServiceSpec, ctx: RenderContext) -> ModelLocation:
    scheme, _, rest = spec.model.uri.partition("://")
    rest = rest.strip("/")
    if scheme == "hf":
        repo, _, quant = rest.partition(":")
        parts = repo.split("/")
        hub_file = "/".join(parts[2:]) or None
        ref = "/".join(parts[:2]) + (f":{quant}" if quant else "")
        return ModelLocation(hub_ref=ref, hub_file=hub_file)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        mount = f"{SOURCE_DIR}/{claim}"
        return ModelLocation(
            local_path=f"{mount}/{path}",
            volumes=(
                {"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
            ),
            mounts=({"name": "model-source", "mountPath": mount, "readOnly": True},),
        )
    if scheme == "s3":
        target = f"{CACHE_DIR}/s3/{rest}"
        verb = "cp" if rest.endswith(".gguf") else "sync"
        script = f"aws s3 {verb} {shlex.quote('s3://' + rest)} {shlex.quote(target)} --only-show-errors"
        loader = _loader("fetch-model", ctx.image("aws-cli"), ["sh", "-c", script], spec)
        return ModelLocation(local_path=target, init_containers=(loader,))
    if scheme == "oci" and spec.engine.kind != EngineKind.OLLAMA:
        target = f"{CACHE_DIR}/oci/{_sanitize(rest)}"
        script = f"mkdir -p {target} && cp -a {SOURCE_DIR}/. {target}/"
        loader = _loader("fetch-model", rest, ["sh", "-c", script], spec)
        return ModelLocation(local_path=target, init_containers=(loader,))
    return ModelLocation(hub_ref=rest)  # oci:// for Ollama: its own registry reference


def _loader(name: str, image: str, command: list[str], spec: LLMServiceSpec) -> Manifest:
    """An init container that fills the model cache before the engine starts."""
    from llmfleet.render.common import restricted_security_context

    return {
        "name": name,
        "image": image,
        "command": command,
        "env": [env.to_api() for env in spec.engine.env] + [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [
            {"name": "model-cache", "mountPath": CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": restricted_security_context(1000, read_only_root=False),
    }


def _model_ref(loc: ModelLocation) -> str:
    ref = loc.local_path or loc.hub_ref
    assert ref is not None
    return ref


def _python_warmup(name: str) -> list[str]:
    body = json.dumps({"model": name, "prompt": "Hello", "max_tokens": 1})
    script = (
        "import time, urllib.request as u\n"
        f"base = 'http://127.0.0.1:{HTTP_PORT}'\n"
        "while True:\n"
        "    try:\n"
        "        u.urlopen(base + '/health', timeout=5); break\n"
        "    except Exception:\n"
        "        time.sleep(2)\n"
        f"req = u.Request(base + '/v1/completions', data={body!r}.encode(), headers={{'Content-Type': 'application/json'}})\n"
        "try:\n"
        "    u.urlopen(req, timeout=300).read()\n"
        "except Exception as e:\n"
        "    print('llmfleet warmup request failed:', e)\n"
    )
    return ["python3", "-c", script]


def _curl_warmup(name: str, health_path: str) -> list[str]:
    body = json.dumps({"model": name, "prompt": "Hello", "max_tokens": 1})
    base = f"http://127.0.0.1:{HTTP_PORT}"
    script = (
        f"until curl -fsS -o /dev/null {base}{health_path}; do sleep 2; done; "
        f"curl -fsS -o /dev/null -m 300 -H 'Content-Type: application/json' -d {shlex.quote(body)} "
        f"{base}/v1/completions || echo 'llmfleet warmup request failed'"
    )
    return ["sh", "-c", script]


def _hf_env() -> list[Manifest]:
    return [
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "HOME", "value": "/tmp"},
    ]


def _vllm(spec: LLMServiceSpec, name: str, loc: ModelLocation, ctx: RenderContext) -> EngineContainer:
    t = spec.engine.tuning
    args = [_model_ref(loc), "--host", "0.0.0.0", "--port", str(HTTP_PORT), "--served-model-name", name]
    args += ["--tensor-parallel-size", str(spec.resources.gpu.count)]
    if t.max_concurrent_sequences:
        args += ["--max-num-seqs", str(t.max_concurrent_sequences)]
    if t.context_length:
        args += ["--max-model-len", str(t.context_length)]
    if t.quantization != Quantization.NONE:
        args += ["--quantization", str(t.quantization)]
    if t.prefix_caching is not None:
        args.append("--enable-prefix-caching" if t.prefix_caching else "--no-enable-prefix-caching")
    if t.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(t.gpu_memory_utilization)]
    return EngineContainer(
        image=ctx.image("vllm"),
        command=["vllm", "serve"],
        args=args,
        env=[*_hf_env(), {"name": "VLLM_NO_USAGE_STATS", "value": "1"}],
        post_start=_python_warmup(name) if spec.engine.warmup else None,
    )


def _tgi(spec: LLMServiceSpec, name: str, loc: ModelLocation, ctx: RenderContext) -> EngineContainer:
    t = spec.engine.tuning
    args = ["--model-id", _model_ref(loc), "--hostname", "0.0.0.0", "--port", str(HTTP_PORT)]
    args += [
        "--prometheus-port",
        "9000",
        "--served-model-name",
        name,
        "--num-shard",
        str(spec.resources.gpu.count),
    ]
    if t.max_concurrent_sequences:
        args += ["--max-concurrent-requests", str(t.max_concurrent_sequences)]
    if t.context_length:
        args += ["--max-input-tokens", str(t.context_length - 1), "--max-total-tokens", str(t.context_length)]
    if t.quantization != Quantization.NONE:
        args += ["--quantize", str(t.quantization)]
    if t.gpu_memory_utilization is not None:
        args += ["--cuda-memory-fraction", str(t.gpu_memory_utilization)]
    env = [*_hf_env(), {"name": "HUGGINGFACE_HUB_CACHE", "value": f"{CACHE_DIR}/huggingface/hub"}]
    if t.prefix_caching is not None:
        env.append({"name": "PREFIX_CACHING", "value": "1" if t.prefix_caching else "0"})
    return EngineContainer(
        image=ctx.image("tgi"),
        command=["text-generation-launcher"],
        args=args,
        env=env,
        metrics_port=9000,
        extra_ports=[{"name": "metrics", "containerPort": 9000, "protocol": "TCP"}],
        post_start=_python_warmup(name) if spec.engine.warmup else None,
    )


def _sglang(spec: LLMServiceSpec, name: str, loc: ModelLocation, ctx: RenderContext) -> EngineContainer:
    t = spec.engine.tuning
    args = ["-m", "sglang.launch_server", "--model-path", _model_ref(loc), "--host", "0.0.0.0"]
    args += [
        "--port",
        str(HTTP_PORT),
        "--served-model-name",
        name,
        "--tp",
        str(spec.resources.gpu.count),
        "--enable-metrics",
    ]
    if t.max_concurrent_sequences:
        args += ["--max-running-requests", str(t.max_concurrent_sequences)]
    if t.context_length:
        args += ["--context-length", str(t.context_length)]
    if t.quantization != Quantization.NONE:
        args += ["--quantization", str(t.quantization)]
    if t.gpu_memory_utilization is not None:
        args += ["--mem-fraction-static", str(t.gpu_memory_utilization)]
    if t.prefix_caching is False:
        args.append("--disable-radix-cache")
    return EngineContainer(
        image=ctx.image("sglang"),
        command=["python3"],
        args=args,
        env=_hf_env(),
        post_start=_python_warmup(name) if spec.engine.warmup else None,
    )


def _llamacpp(spec: LLMServiceSpec, name: str, loc: ModelLocation, ctx: RenderContext) -> EngineContainer:
    t = spec.engine.tuning
    gpus = spec.resources.gpu.count
    if loc.local_path:
        args = ["--model", loc.local_path]
    elif loc.hub_file:
        args = ["--hf-repo", _model_ref(loc), "--hf-file", loc.hub_file]
    else:
        args = ["--hf-repo", _model_ref(loc)]
    args += ["--host", "0.0.0.0", "--port", str(HTTP_PORT), "--alias", name, "--metrics"]
    slots = t.max_concurrent_sequences or 1
    args += ["--parallel", str(slots)]
    # llama.cpp splits --ctx-size across the slots: the per-sequence length times the slots.
    # Always set: without it this llama.cpp gives every slot the model's full training context.
    args += ["--ctx-size", str((t.context_length or LLAMACPP_DEFAULT_CONTEXT) * slots)]
    if t.prefix_caching:
        args += ["--cache-reuse", "256"]
    elif t.prefix_caching is False:
        args += ["--no-cache-prompt", "--cache-ram", "0"]
    if t.prefix_caching is not False and spec.resources.memory:
        # The host-RAM prompt cache defaults to 8 GiB and counts against the pod's memory limit.
        from llmfleet.quantity import to_bytes

        args += ["--cache-ram", str(min(8192, to_bytes(spec.resources.memory) // 2**20 // 4))]
    if gpus:
        args += ["--n-gpu-layers", "999"]
    elif spec.resources.cpu:
        from llmfleet.quantity import parse_quantity

        args += ["--threads", str(max(1, int(parse_quantity(spec.resources.cpu))))]
    if not spec.engine.warmup:
        args.append("--no-warmup")
    return EngineContainer(
        image=ctx.image("llamacpp-cuda" if gpus else "llamacpp"),
        command=["/app/llama-server"],
        args=args,
        env=[{"name": "LLAMA_CACHE", "value": f"{CACHE_DIR}/llama.cpp"}, {"name": "HOME", "value": "/tmp"}],
        read_only_root=True,
        post_start=_curl_warmup(name, "/health") if spec.engine.warmup else None,
    )


def _ollama(spec: LLMServiceSpec, name: str, loc: ModelLocation, ctx: RenderContext) -> EngineContainer:
    t = spec.engine.tuning
    ref = _model_ref(loc)
    if loc.hub_ref and spec.model.uri.startswith("hf://"):
        ref = f"hf.co/{ref}"
    env: list[Manifest] = [
        {"name": "OLLAMA_HOST", "value": f"0.0.0.0:{HTTP_PORT}"},
        {"name": "OLLAMA_MODELS", "value": f"{CACHE_DIR}/ollama"},
        {"name": "OLLAMA_KEEP_ALIVE", "value": "-1"},
        {"name": "HOME", "value": "/tmp"},
    ]
    if t.max_concurrent_sequences:
        env.append({"name": "OLLAMA_NUM_PARALLEL", "value": str(t.max_concurrent_sequences)})
    if t.context_length:
        env.append({"name": "OLLAMA_CONTEXT_LENGTH", "value": str(t.context_length)})
    # Ollama serves only models it has pulled, under their own name: pull, then alias to `name`.
    script = f"ollama pull {shlex.quote(ref)} && ollama cp {shlex.quote(ref)} {shlex.quote(name)}"
    if spec.engine.warmup:
        script += f" && ollama run {shlex.quote(name)} '' >/dev/null"
    return EngineContainer(
        image=ctx.image("ollama"),
        command=["ollama", "serve"],
        args=[],
        env=env,
        health_path="/",
        metrics_port=None,
        post_start=["sh", "-c", script],
    )


_BUILDERS = {
    EngineKind.VLLM: _vllm,
    EngineKind.TGI: _tgi,
    EngineKind.SGLANG: _sglang,
    EngineKind.LLAMACPP: _llamacpp,
    EngineKind.OLLAMA: _ollama,
}


def engine_container(spec: LLMServiceSpec, ctx: RenderContext, loc: ModelLocation) -> EngineContainer:
    """The engine's container plan with the user's image, args and env applied on top."""
    plan = _BUILDERS[EngineKind(spec.engine.kind)](spec, spec.served_model_name(ctx.name), loc, ctx)
    if spec.engine.image:
        plan.image = spec.engine.image
    plan.args = plan.args + list(spec.engine.args)
    user_env: list[Any] = [env.to_api() for env in spec.engine.env]
    user_names = {env["name"] for env in user_env}
    plan.env = [env for env in plan.env if env["name"] not in user_names] + user_env
    return plan
