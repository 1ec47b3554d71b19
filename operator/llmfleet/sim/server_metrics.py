"""Prometheus metrics of the sim-server under the names real engines use.

The scaler's PromQL and the dashboards must work unchanged against the simulator and against
real vLLM (or llama.cpp's llama-server), so the metrics carry the engines' own names, types,
labels (``model_name`` for vLLM, none for llama.cpp) and histogram buckets. The
``llmfleet_sim_*`` counters are the simulator's own: requests received and served per backend,
so load-balancer tests can see how traffic was spread.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmfleet.sim.engine import Engine, Sequence, StepReport

# vLLM's buckets (vllm/engine/metrics.py), so histogram_quantile gives the same resolution.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
FAILURE_REASONS = ("injected_error", "rejected", "aborted", "starting", "not_found")


class SimMetrics(Collector):
    """Counters kept as plain numbers (cheap to bump per token), histograms via prometheus_client."""

    def __init__(self, engine: Engine, model_name: str, server_id: str, llamacpp: bool) -> None:
        self.engine = engine
        self.model_name = model_name
        self.server_id = server_id
        self.llamacpp = llamacpp
        self.received = 0
        self.served = 0
        self.failed = dict.fromkeys(FAILURE_REASONS, 0)
        self.success = {"stop": 0, "length": 0}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.decode_steps = 0
        self.busy_slots_sum = 0
        self.prompt_seconds = 0.0
        self.predicted_seconds = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            metric = Histogram(name, doc, labels, buckets=buckets, registry=self.registry)
            return metric.labels(model_name)

        self.ttft = histogram("vllm:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.tpot = histogram("vllm:time_per_output_token_seconds", "Time per output token.", TPOT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Inter-token latency.", TPOT_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.", E2E_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds", "Time spent waiting.", E2E_BUCKETS)
        self.request_prompt = histogram("vllm:request_prompt_tokens", "Prompt tokens.", TOKEN_BUCKETS)
        self.request_generation = histogram(
            "vllm:request_generation_tokens", "Generated tokens.", TOKEN_BUCKETS
        )
        self.registry.register(self)

    def record_step(self, report: StepReport) -> None:
        """Account one engine step: tokens, first-token and inter-token latency, finished requests."""
        self.decode_steps += 1
        self.busy_slots_sum += len(report.advanced)
        prefill = sum(seq.prompt_tokens for seq in report.admitted)
        self.prompt_tokens += prefill
        self.generation_tokens += len(report.advanced)
        for seq in report.advanced:
            times = seq.token_times
            if len(times) == 1:
                assert seq.first_token_at is not None and seq.admitted_at is not None
                self.ttft.observe(seq.first_token_at - seq.arrived_at)
                self.queue_time.observe(seq.admitted_at - seq.arrived_at)
                self.prompt_seconds += times[0] - seq.admitted_at
            else:
                gap = times[-1] - times[-2]
                self.tpot.observe(gap)
                self.itl.observe(gap)
                self.predicted_seconds += gap
        for seq in report.finished:
            self.record_finished(seq)

    def record_finished(self, seq: Sequence) -> None:
        assert seq.finished_at is not None
        self.success[seq.finish_reason] += 1
        self.e2e.observe(seq.finished_at - seq.arrived_at)
        self.request_prompt.observe(seq.prompt_tokens)
        self.request_generation.observe(seq.generated)

    def collect(self) -> Iterator[Metric]:
        engine, model = self.engine, [self.model_name]

        def gauge(name: str, doc: str, value: float, labels: list[str] | None = None) -> Metric:
            family = GaugeMetricFamily(name, doc, labels=None if labels is None else ["model_name"])
            family.add_metric(model if labels is not None else [], value)
            return family

        def counter(name: str, doc: str, value: float, vllm: bool = True) -> Metric:
            family = CounterMetricFamily(name, doc, labels=["model_name"] if vllm else None)
            family.add_metric(model if vllm else [], value)
            return family

        yield gauge("vllm:num_requests_running", "Requests in the running batch.", engine.num_running, model)
        yield gauge(
            "vllm:num_requests_waiting", "Requests waiting to be scheduled.", engine.num_waiting, model
        )
        yield gauge("vllm:num_requests_swapped", "Requests swapped to CPU (always 0 here).", 0, model)
        usage = engine.kv_cache_usage
        yield gauge("vllm:gpu_cache_usage_perc", "KV cache usage; 1 means 100 percent.", usage, model)
        yield gauge("vllm:kv_cache_usage_perc", "KV cache usage; 1 means 100 percent.", usage, model)
        yield counter("vllm:prompt_tokens", "Prefill tokens processed.", self.prompt_tokens)
        yield counter("vllm:generation_tokens", "Generation tokens processed.", self.generation_tokens)
        success = CounterMetricFamily(
            "vllm:request_success", "Finished requests.", labels=["model_name", "finished_reason"]
        )
        for reason, count in self.success.items():
            success.add_metric([self.model_name, reason], count)
        yield success
        yield counter("vllm:num_preemptions", "Preemptions (never: admission reserves KV).", 0)

        sim = ["server_id", "model_name"]
        received = CounterMetricFamily("llmfleet_sim_requests_received", "Requests received.", labels=sim)
        received.add_metric([self.server_id, self.model_name], self.received)
        yield received
        served = CounterMetricFamily("llmfleet_sim_requests_served", "Requests answered in full.", labels=sim)
        served.add_metric([self.server_id, self.model_name], self.served)
        yield served
        failed = CounterMetricFamily(
            "llmfleet_sim_requests_failed", "Requests not served, by reason.", labels=[*sim, "reason"]
        )
        for reason, count in self.failed.items():
            failed.add_metric([self.server_id, self.model_name, reason], count)
        yield failed
        if self.llamacpp:
            yield from self._collect_llamacpp()

    def _collect_llamacpp(self) -> Iterator[Metric]:
        """llama-server's /metrics names (tools/server/server.cpp); no labels, as there, and
        nothing the pinned llama-server lacks (tests/integration/test_sim_llamacpp_contract.py)."""
        engine = self.engine

        def counter(name: str, doc: str, value: float) -> Metric:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            return family

        def gauge(name: str, doc: str, value: float) -> Metric:
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            return family

        yield counter("llamacpp:prompt_tokens", "Number of prompt tokens processed.", self.prompt_tokens)
        yield counter("llamacpp:prompt_seconds", "Prompt process time.", self.prompt_seconds)
        yield counter(
            "llamacpp:tokens_predicted", "Number of generation tokens processed.", self.generation_tokens
        )
        yield counter("llamacpp:tokens_predicted_seconds", "Predict process time.", self.predicted_seconds)
        yield counter("llamacpp:n_decode", "Number of llama_decode() calls.", self.decode_steps)
        busy = self.busy_slots_sum / self.decode_steps if self.decode_steps else 0.0
        yield gauge("llamacpp:n_busy_slots_per_decode", "Average number of busy slots per decode.", busy)
        prompt_rate = self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0
        yield gauge("llamacpp:prompt_tokens_seconds", "Average prompt throughput in tokens/s.", prompt_rate)
        predicted_rate = self.generation_tokens / self.predicted_seconds if self.predicted_seconds else 0.0
        yield gauge(
            "llamacpp:predicted_tokens_seconds", "Average generation throughput in tokens/s.", predicted_rate
        )
        # No KV-cache gauge: llama.cpp removed kv_cache_usage_ratio and kv_cache_tokens (2025),
        # so a query built on them would never see data from a real llama-server.
        # llama-server gives an arriving request a free slot at once (processing, prefilled in its
        # next batch) and defers only what finds every slot taken; the engine's queue also holds
        # requests waiting for the next step, so split it the same way.
        free_slots = max(0, engine.config.max_num_seqs - engine.num_running)
        assigned = min(engine.num_waiting, free_slots)
        yield gauge(
            "llamacpp:requests_processing", "Number of requests processing.", engine.num_running + assigned
        )
        yield gauge(
            "llamacpp:requests_deferred", "Number of requests deferred.", engine.num_waiting - assigned
        )
