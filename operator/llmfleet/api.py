"""The LLMService API (llmfleet.io/v1alpha1) as pydantic models: the one source of truth.

The CRD (``llmfleet crd``) is generated from these models, the renderers take them as input,
and the operator validates every object it receives with them. Per-field rules (types, bounds,
enums, patterns) live in ``Field``; rules that relate fields live in ``model_validator``s and,
where the API server can check them, in CEL rules attached with ``cel()`` so ``kubectl apply``
rejects the mistake before the operator ever sees it. Engine capabilities (which engine supports
which quantization, which knob) live in ``ENGINE_CAPABILITIES`` so the renderer and the
validation never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from llmfleet.quantity import QUANTITY_PATTERN, parse_quantity
from llmfleet.scaling.hpa import TOLERANCE as HPA_TOLERANCE

CEL_KEY = "x-kubernetes-validations"


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """JSON-schema extra carrying CEL rules (rule, message) into the generated CRD."""
    return {CEL_KEY: [{"rule": rule, "message": message} for rule, message in rules]}


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields rejected, defaults filled on validation."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
        use_enum_values=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as it appears in YAML: camelCase keys, unset optionals omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Quantity = str
QUANTITY_FIELD: dict[str, Any] = {"pattern": QUANTITY_PATTERN}


class EngineKind(StrEnum):
    VLLM = "vllm"
    TGI = "tgi"
    SGLANG = "sglang"
    LLAMACPP = "llamacpp"
    OLLAMA = "ollama"


class Quantization(StrEnum):
    NONE = "none"
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do; the renderer and the validators both read this table."""

    needs_gpu: bool
    quantizations: frozenset[Quantization]
    prefix_caching: bool
    gpu_memory_utilization: bool
    exports_queue_metric: bool
    tensor_parallel_power_of_two: bool


ENGINE_CAPABILITIES: dict[EngineKind, EngineCapabilities] = {
    EngineKind.VLLM: EngineCapabilities(True, frozenset(Quantization), True, True, True, True),
    EngineKind.TGI: EngineCapabilities(True, frozenset(Quantization), True, True, True, False),
    EngineKind.SGLANG: EngineCapabilities(True, frozenset(Quantization), True, True, True, True),
    # llama.cpp and Ollama read quantized GGUF files: the quantization is in the file, not a flag.
    EngineKind.LLAMACPP: EngineCapabilities(False, frozenset({Quantization.NONE}), True, False, True, False),
    EngineKind.OLLAMA: EngineCapabilities(False, frozenset({Quantization.NONE}), False, False, False, False),
}


# ---------------------------------------------------------------------------------------------
# spec.model


class ModelCache(ApiModel):
    size: Quantity = Field(
        description="Size of the PersistentVolumeClaim that caches downloaded model files across restarts, e.g. 100Gi.",
        **QUANTITY_FIELD,
    )
    storage_class_name: str | None = Field(
        default=None,
        description="StorageClass of the cache claim; the cluster default when omitted.",
        min_length=1,
        max_length=253,
    )
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        default="ReadWriteMany",
        description="ReadWriteMany lets every replica share one download (needs an RWX-capable storage class); ReadWriteOnce works only while all replicas land on one node.",
    )


class ModelSpec(ApiModel):
    uri: str = Field(
        description="Where the weights come from: hf://org/repo (Hugging Face; for llamacpp hf://org/repo/file.gguf or hf://org/repo:QUANT), pvc://claim/path (an existing PersistentVolumeClaim), s3://bucket/prefix, or oci://registry/image:tag (a modelcar image with the files under /models).",
        pattern=r"^(hf|pvc|s3|oci)://[^\s]+$",
        max_length=1024,
    )
    name: str | None = Field(
        default=None,
        description="Model name clients send in the OpenAI `model` field; defaults to metadata.name.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        max_length=128,
    )
    cache: ModelCache | None = Field(
        default=None,
        description="Optional model cache volume shared by the replicas so restarts and scale-ups do not download the weights again.",
    )

    @model_validator(mode="after")
    def _check_uri(self) -> ModelSpec:
        scheme, _, rest = self.uri.partition("://")
        if scheme == "pvc" and "/" not in rest.strip("/"):
            raise ValueError("model.uri pvc:// needs a claim and a path inside it: pvc://CLAIM/PATH")
        if scheme == "pvc" and self.cache is not None:
            raise ValueError(
                "model.cache is for downloaded weights; a pvc:// model is already on a volume, remove model.cache"
            )
        if scheme == "hf" and "/" not in rest.strip("/"):
            raise ValueError("model.uri hf:// needs an organisation and a repository: hf://ORG/REPO")
        return self


# ---------------------------------------------------------------------------------------------
# spec.engine


class EnvVar(ApiModel):
    name: str = Field(
        description="Environment variable name.", pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256
    )
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef), e.g. an HF token from a Secret.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


class Tuning(ApiModel):
    max_concurrent_sequences: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Sequences the engine runs at once (vLLM --max-num-seqs, TGI --max-concurrent-requests, SGLang --max-running-requests, llama.cpp --parallel, Ollama OLLAMA_NUM_PARALLEL). Also the default load-balancer cap per replica.",
    )
    context_length: int | None = Field(
        default=None,
        ge=128,
        le=1048576,
        description="Longest sequence (prompt + output) in tokens (vLLM --max-model-len, TGI --max-total-tokens, SGLang --context-length, llama.cpp --ctx-size per slot, Ollama OLLAMA_CONTEXT_LENGTH).",
    )
    quantization: Quantization = Field(
        default=Quantization.NONE,
        description="Weight quantization the engine applies: none, awq, gptq or fp8. vLLM, TGI and SGLang only; llama.cpp and Ollama take it from the GGUF file.",
    )
    prefix_caching: bool | None = Field(
        default=None,
        description="Reuse the KV cache of shared prompt prefixes (vLLM, TGI, SGLang, llama.cpp). Omitted: the engine's own default.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Fraction of GPU memory the engine may use (vLLM --gpu-memory-utilization, TGI --cuda-memory-fraction, SGLang --mem-fraction-static).",
    )


class EngineSpec(ApiModel):
    kind: EngineKind = Field(description="Model server: vllm, tgi, sglang, llamacpp or ollama.")
    image: str | None = Field(
        default=None,
        description="Container image; a pinned, tested image per engine when omitted.",
        min_length=1,
        max_length=512,
    )
    args: list[str] = Field(
        default_factory=list,
        description="Extra engine flags, appended after the generated ones (they win).",
        max_length=128,
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Extra environment variables for the engine container.",
        max_length=128,
    )
    tuning: Tuning = Field(
        default_factory=Tuning, description="Engine-agnostic knobs, each mapped to the engine's own flag."
    )
    warmup: bool = Field(
        default=True,
        description="Send one short request before the pod reports ready, so the first user request does not pay for lazy initialisation.",
    )


# ---------------------------------------------------------------------------------------------
# spec.resources, spec.scheduling, spec.replicas


class GpuSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel(("self.count > 0 || !has(self.product)", "gpu.product needs gpu.count > 0"))
    )

    count: int = Field(
        default=0,
        ge=0,
        le=16,
        description="GPUs per replica (nvidia.com/gpu); 0 runs on CPU. Also the tensor-parallel size.",
    )
    product: str | None = Field(
        default=None,
        description="GPU model to schedule on, matched against the node label nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3.",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
    )

    @model_validator(mode="after")
    def _product_needs_gpu(self) -> GpuSpec:
        if self.product is not None and self.count == 0:
            raise ValueError("gpu.product needs gpu.count > 0")
        return self


class ResourcesSpec(ApiModel):
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPUs per replica.")
    cpu: Quantity | None = Field(
        default=None, description='CPU request and limit per replica, e.g. "8".', **QUANTITY_FIELD
    )
    memory: Quantity | None = Field(
        default=None,
        description="Memory request and limit per replica, e.g. 64Gi. Includes sharedMemory.",
        **QUANTITY_FIELD,
    )
    shared_memory: Quantity | None = Field(
        default=None,
        description="Size of the in-memory /dev/shm (tensor-parallel engines need it); 2Gi per GPU when omitted on GPU replicas.",
        **QUANTITY_FIELD,
    )

    @model_validator(mode="after")
    def _shm_fits(self) -> ResourcesSpec:
        if (
            self.memory
            and self.shared_memory
            and parse_quantity(self.shared_memory) >= parse_quantity(self.memory)
        ):
            raise ValueError(
                f"sharedMemory ({self.shared_memory}) counts against the memory limit and must be below memory ({self.memory})"
            )
        return self


class SchedulingSpec(ApiModel):
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the model pods must match."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Kubernetes tolerations for the model pods (e.g. for tainted GPU nodes).",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes Affinity for the model pods.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(
        default=None, description="PriorityClass of the model pods.", min_length=1, max_length=253
    )


class ReplicasSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("!has(self.max) || self.min <= self.max", "replicas.min must be <= replicas.max")
        )
    )

    min: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Fewest model replicas; the predictive scaler never goes below it.",
    )
    max: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Most model replicas; equal to min (no autoscaling) when omitted.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReplicasSpec:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) must be <= replicas.max ({self.max})")
        return self

    @property
    def upper(self) -> int:
        return self.max if self.max is not None else self.min


# ---------------------------------------------------------------------------------------------
# spec.loadBalancer


class LbEngine(StrEnum):
    NGINX = "nginx"
    HAPROXY = "haproxy"


class LbStrategy(StrEnum):
    ROUND_ROBIN = "round-robin"
    LEAST_CONN = "least-conn"
    SESSION_AFFINITY = "session-affinity"


class RateLimit(ApiModel):
    requests_per_second: int = Field(
        ge=1, le=100000, description="Sustained requests per second allowed per client address."
    )
    burst: int = Field(
        default=0,
        ge=0,
        le=100000,
        description="Requests a client may send above the rate before it gets HTTP 429.",
    )


class Timeouts(ApiModel):
    connect_seconds: int = Field(
        default=5,
        ge=1,
        le=300,
        description="Time to open a connection to a model replica before trying another.",
    )
    read_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="Longest silence allowed while reading a response (also how long a reload waits for open streams).",
    )
    queue_seconds: float = Field(
        default=30,
        ge=0.05,
        le=3600,
        description="How long a request may wait in the balancer (haproxy) for a free replica slot before HTTP 503; fractions allowed (0.5 = 500 ms). Below the TTFT SLO it fails fast: a shortage then costs only the requests over capacity instead of making every request behind the queue late (docs/autoscaling.md).",
    )


class LoadBalancerSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.strategy != 'session-affinity' || has(self.sessionHeader)",
                "loadBalancer.sessionHeader is required for strategy session-affinity",
            )
        )
    )

    engine: LbEngine = Field(default=LbEngine.NGINX, description="Load balancer: nginx or haproxy.")
    strategy: LbStrategy = Field(
        default=LbStrategy.LEAST_CONN,
        description="round-robin, least-conn, or session-affinity (consistent hash on sessionHeader; bounded load with haproxy).",
    )
    session_header: str | None = Field(
        default=None,
        description="Request header whose value pins a session to one replica, e.g. X-Session-ID.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$",
        max_length=64,
    )
    replicas: int = Field(default=2, ge=1, le=100, description="Load-balancer pods.")
    rate_limit: RateLimit | None = Field(
        default=None, description="Per-client-address request rate limit; HTTP 429 beyond it."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Connection, read and queue timeouts.")
    max_concurrency_per_replica: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description="Requests in flight per model replica; more wait in the balancer (haproxy) or get HTTP 503 with Retry-After (nginx has no upstream queue). Defaults to engine.tuning.maxConcurrentSequences; unlimited when both are omitted.",
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Type of the public <name> Service."
    )

    @model_validator(mode="after")
    def _session_header(self) -> LoadBalancerSpec:
        if self.strategy == LbStrategy.SESSION_AFFINITY and not self.session_header:
            raise ValueError("loadBalancer.sessionHeader is required for strategy session-affinity")
        return self


# ---------------------------------------------------------------------------------------------
# spec.cache


class SecretKeyRef(ApiModel):
    name: str = Field(description="Secret name (same namespace).", min_length=1, max_length=253)
    key: str = Field(default="password", description="Key in the Secret.", min_length=1, max_length=253)


class SemanticCache(ApiModel):
    enabled: bool = Field(
        default=False,
        description="Also answer requests whose meaning is close to a cached one (sentence embeddings, same tenant and model).",
    )
    similarity_threshold: float = Field(
        default=0.92, ge=0.5, le=1.0, description="Cosine similarity above which a cached answer is reused."
    )


class CacheSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.enabled || !has(self.semantic) || !self.semantic.enabled",
                "cache.semantic.enabled needs cache.enabled",
            )
        )
    )

    enabled: bool = Field(
        default=False, description="Deploy Redis and the caching gateway in front of the load balancer."
    )
    ttl_seconds: int = Field(
        default=3600, ge=1, le=2592000, description="How long a cached response is served."
    )
    max_memory: Quantity = Field(
        default="1Gi",
        description="Redis maxmemory; least-recently-used entries are evicted beyond it.",
        **QUANTITY_FIELD,
    )
    tenant_header: str | None = Field(
        default=None,
        description="Header naming the tenant; cache entries are never shared across tenants. The Authorization header when omitted.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$",
        max_length=64,
    )
    max_entry_bytes: int = Field(
        default=1048576, ge=1024, le=67108864, description="Responses larger than this are not cached."
    )
    semantic: SemanticCache = Field(
        default_factory=SemanticCache, description="Opt-in semantic (embedding similarity) cache."
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding the Redis password; the operator creates <name>-cache-auth with a random one when omitted.",
    )

    @model_validator(mode="after")
    def _semantic_needs_cache(self) -> CacheSpec:
        if self.semantic.enabled and not self.enabled:
            raise ValueError("cache.semantic.enabled needs cache.enabled")
        if parse_quantity(self.max_memory) < 16 * 2**20:
            raise ValueError(f"cache.maxMemory ({self.max_memory}) must be at least 16Mi")
        return self


# ---------------------------------------------------------------------------------------------
# spec.autoscaling, spec.slo


class ScaleUp(ApiModel):
    stabilization_window_seconds: int = Field(
        default=0, ge=0, le=3600, description="HPA scale-up stabilization window."
    )
    pods_per_minute: int = Field(default=4, ge=1, le=1000, description="Most replicas added per minute.")


class ScaleDown(ApiModel):
    stabilization_window_seconds: int = Field(
        default=600, ge=0, le=3600, description="HPA scale-down stabilization window."
    )
    percent_per_minute: int = Field(
        default=25,
        ge=1,
        le=100,
        description="Most replicas removed per minute, as a percentage of the current count.",
    )


class PredictiveSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.horizonSeconds >= self.intervalSeconds",
                "predictive.horizonSeconds must be >= intervalSeconds",
            )
        )
    )

    enabled: bool = Field(default=False, description="Raise the HPA floor ahead of forecast load.")
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus that scrapes the model pods; the operator's --prometheus-url when omitted.",
        pattern=r"^https?://[^\s]+$",
        max_length=1024,
    )
    horizon_seconds: int = Field(
        default=600,
        ge=60,
        le=86400,
        description="How far ahead to provision; at least the time a new replica takes to become ready.",
    )
    interval_seconds: int = Field(
        default=60, ge=15, le=3600, description="How often the forecast is refreshed."
    )
    headroom: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Extra capacity above the forecast's upper band, as a fraction. Default 0.2, or 0 when the balancer fails fast (loadBalancer.timeouts.queueSeconds below the TTFT SLO, or nginx with a concurrency cap), where a shortage costs only its excess.",
    )
    band_quantile: float | None = Field(
        default=None,
        ge=0.5,
        le=0.999,
        description="Quantile of the forecaster's past errors that its upper band covers. Default 0.9, or 0.8 when the balancer fails fast.",
    )
    requests_per_second_per_replica: float | None = Field(
        default=None,
        gt=0,
        le=100000,
        description="Requests per second one replica serves within the SLO; learned from observed throughput when omitted.",
    )

    @model_validator(mode="after")
    def _horizon(self) -> PredictiveSpec:
        if self.horizon_seconds < self.interval_seconds:
            raise ValueError(
                f"predictive.horizonSeconds ({self.horizon_seconds}) must be >= intervalSeconds ({self.interval_seconds})"
            )
        return self


class AutoscalingSpec(ApiModel):
    target_queue_depth: int = Field(
        default=8,
        ge=1,
        le=10000,
        description="Waiting requests per replica the HPA aims for (vLLM vllm:num_requests_waiting, TGI tgi_queue_size, llama.cpp llamacpp:requests_deferred).",
    )
    target_in_flight_per_replica: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description="Optional second HPA target: requests in flight (running + waiting) per replica. The queue only grows once replicas are saturated; in flight rises with the load, so this reacts earlier. About 0.6-0.8 of maxConcurrentSequences is a good start (docs/autoscaling.md).",
    )
    scale_up: ScaleUp = Field(default_factory=ScaleUp, description="How fast the HPA adds replicas.")
    scale_down: ScaleDown = Field(default_factory=ScaleDown, description="How fast the HPA removes replicas.")
    predictive: PredictiveSpec = Field(
        default_factory=PredictiveSpec, description="Forecast-driven floor for the HPA."
    )


class SloSpec(ApiModel):
    ttft_p95_ms: int | None = Field(
        default=None,
        ge=1,
        le=600000,
        description="Target 95th-percentile time to first token; a breach raises the predictive floor at once.",
    )


# ---------------------------------------------------------------------------------------------
# spec


class LLMServiceSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!(self.engine.kind in ['vllm', 'tgi', 'sglang']) || (has(self.resources) && has(self.resources.gpu) && self.resources.gpu.count >= 1)",
                "engines vllm, tgi and sglang need resources.gpu.count >= 1",
            ),
            (
                "!(self.engine.kind in ['llamacpp', 'ollama']) || !has(self.engine.tuning) || !has(self.engine.tuning.quantization) || self.engine.tuning.quantization == 'none'",
                "llamacpp and ollama take quantization from the GGUF file: engine.tuning.quantization must be none",
            ),
            (
                "self.engine.kind != 'ollama' || !has(self.replicas) || !has(self.replicas.max) || self.replicas.max == self.replicas.min",
                "ollama exports no queue metric to autoscale on: replicas.max must equal replicas.min",
            ),
        )
    )

    model: ModelSpec = Field(description="What to serve.")
    engine: EngineSpec = Field(description="Which model server runs it and how it is tuned.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute per model replica.")
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Where model pods may run."
    )
    replicas: ReplicasSpec = Field(
        default_factory=ReplicasSpec, description="Bounds on the number of model replicas."
    )
    load_balancer: LoadBalancerSpec = Field(
        default_factory=LoadBalancerSpec, description="The NGINX or HAProxy tier in front of the replicas."
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec, description="Redis response cache behind the caching gateway."
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="HPA on queue depth plus the predictive floor."
    )
    slo: SloSpec = Field(
        default_factory=SloSpec, description="Service-level objective the predictive scaler defends."
    )

    @model_validator(mode="after")
    def _engine_rules(self) -> LLMServiceSpec:
        caps = ENGINE_CAPABILITIES[EngineKind(self.engine.kind)]
        kind, tuning, gpus = self.engine.kind, self.engine.tuning, self.resources.gpu.count
        problems: list[str] = []
        if caps.needs_gpu and gpus < 1:
            problems.append(
                f"engine {kind} needs resources.gpu.count >= 1 (its pinned image is a CUDA build)"
            )
        if tuning.quantization not in caps.quantizations:
            problems.append(
                f"engine {kind} does not support engine.tuning.quantization {tuning.quantization} (the GGUF file sets it): use none"
            )
        if tuning.prefix_caching is not None and not caps.prefix_caching:
            problems.append(f"engine {kind} has no prefix caching switch: remove engine.tuning.prefixCaching")
        if tuning.gpu_memory_utilization is not None and not caps.gpu_memory_utilization:
            problems.append(
                f"engine {kind} has no GPU memory fraction setting: remove engine.tuning.gpuMemoryUtilization"
            )
        if caps.tensor_parallel_power_of_two and gpus > 0 and gpus & (gpus - 1):
            problems.append(
                f"engine {kind} shards the model over resources.gpu.count GPUs, which must be 1, 2, 4, 8 or 16 (got {gpus})"
            )
        if not caps.exports_queue_metric and self.replicas.upper > self.replicas.min:
            problems.append(
                f"engine {kind} exports no queue metric to autoscale on: set replicas.max equal to replicas.min"
            )
        scheme = self.model.uri.partition("://")[0]
        if kind == EngineKind.OLLAMA and scheme not in ("hf", "oci"):
            problems.append(
                "engine ollama pulls models itself: model.uri must be hf://ORG/REPO or oci://REGISTRY/MODEL:TAG"
            )
        if kind == EngineKind.LLAMACPP and scheme in ("pvc", "s3") and not self.model.uri.endswith(".gguf"):
            problems.append(
                "engine llamacpp loads one GGUF file: a pvc:// or s3:// model.uri must end in .gguf"
            )
        in_flight, cap = self.autoscaling.target_in_flight_per_replica, self.concurrency_cap()
        if in_flight is not None and cap is not None and in_flight * (1 + HPA_TOLERANCE) > cap:
            most = math.floor(cap / (1 + HPA_TOLERANCE))
            problems.append(
                f"autoscaling.targetInFlightPerReplica {in_flight} is too close to the concurrency cap {cap} "
                "(loadBalancer.maxConcurrencyPerReplica or engine.tuning.maxConcurrentSequences): in flight "
                "per replica never exceeds the cap, and the HPA scales up only above 110% of its target, "
                + (f"so use at most {most}" if most >= 1 else "so remove the target or raise the cap")
            )
        if self.autoscaling.predictive.enabled and self.replicas.upper == self.replicas.min:
            problems.append(
                "autoscaling.predictive.enabled needs room to scale: set replicas.max above replicas.min"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def served_model_name(self, service_name: str) -> str:
        return self.model.name or service_name

    def concurrency_cap(self) -> int | None:
        """Requests per replica the balancer lets through at once (None: unlimited)."""
        return self.load_balancer.max_concurrency_per_replica or self.engine.tuning.max_concurrent_sequences

    def balancer_fails_fast(self) -> bool:
        """Whether the balancer turns away work it cannot start within the TTFT SLO instead of
        queueing it: nginx at the concurrency cap (no upstream queue), or haproxy whose queue
        timeout is shorter than the SLO (one second when no SLO is set)."""
        if self.concurrency_cap() is None:
            return False  # nothing is held back in the balancer: the engines queue everything
        if self.load_balancer.engine == LbEngine.NGINX:
            return True
        slo_ms = self.slo.ttft_p95_ms or 1000
        return self.load_balancer.timeouts.queue_seconds * 1000 < slo_ms


# ---------------------------------------------------------------------------------------------
# status


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ConditionType(StrEnum):
    READY = "Ready"
    MODEL_AVAILABLE = "ModelAvailable"
    LOAD_BALANCER_AVAILABLE = "LoadBalancerAvailable"
    CACHE_AVAILABLE = "CacheAvailable"
    AUTOSCALING = "Autoscaling"
    PREDICTIVE_SCALING = "PredictiveScaling"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(
        description="Condition type, e.g. Ready.",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase machine-readable reason.",
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
        min_length=1,
    )
    message: str = Field(default="", description="What happened and what to do about it.", max_length=32768)
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this condition was computed for."
    )


class ReplicaStatus(ApiModel):
    desired: int = Field(default=0, ge=0, description="Replicas the model Deployment wants now.")
    ready: int = Field(default=0, ge=0, description="Model replicas ready to serve.")
    display: str = Field(default="0/0", description="ready/desired, for kubectl's Ready column.")


class PredictiveStatus(ApiModel):
    forecast_requests_per_second: float = Field(
        ge=0, description="Upper-band forecast of the request rate over the horizon."
    )
    recommended_replicas: int = Field(
        ge=0, description="Floor the predictive scaler sets as the HPA's minReplicas."
    )
    reason: str = Field(description="One-line explanation of the recommendation.", max_length=1024)
    updated_at: str = Field(
        description="When the recommendation was computed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class LLMServiceStatus(ApiModel):
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the operator last acted on."
    )
    phase: Phase | None = Field(
        default=None,
        description="Pending, Progressing, Ready, Degraded or Failed (summary for humans; read conditions in code).",
    )
    model: str | None = Field(default=None, description="Model name clients send in requests.")
    replicas: ReplicaStatus | None = Field(default=None, description="Model replicas wanted and ready.")
    endpoint: str | None = Field(
        default=None, description="In-cluster URL of the OpenAI-compatible endpoint."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current state, one entry per condition type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    predictive: PredictiveStatus | None = Field(
        default=None, description="The predictive scaler's latest recommendation."
    )


class LLMService(ApiModel):
    """A served model: its engine, load balancer, cache and autoscaling."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["llmfleet.io/v1alpha1"] = Field(default="llmfleet.io/v1alpha1", alias="apiVersion")
    kind: Literal["LLMService"] = "LLMService"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LLMServiceSpec
    status: LLMServiceStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")
