"""The live predictive scaler: Prometheus signals in, the HPA's ``minReplicas`` out, pure.

The operator's reconcile calls :func:`recommend` every ``predictive.intervalSeconds`` with the
spec, what :func:`llmfleet.scaling.metrics.fetch` returned (or the exception it raised), and
the :class:`LiveState` from the previous call, and writes the result to the HPA
(``minReplicas``), ``status.predictive`` and the ``PredictiveScaling`` condition. The forecaster
and the policy are the ones the fleet simulator benchmarks.

Safety rules: the floor is never below ``spec.replicas.min`` nor above ``spec.replicas.max``.
When Prometheus is unreachable, has no request-rate history, or the engine exports no request
rate, the last floor is held (it was safe when computed; lowering it blind is not) and the
condition goes False with a reason. Capacity per replica comes from
``predictive.requestsPerSecondPerReplica`` or is learned from observed throughput at known
replica counts: a saturated fleet (queue above target or TTFT over the SLO) measures it
directly; an unsaturated one only bounds it from below, which is the safe direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from llmfleet.scaling.forecast import BurstConfig, ForecastConfig, burst_factor, forecast
from llmfleet.scaling.metrics import FleetMetrics, MetricsUnavailable
from llmfleet.scaling.policy import PolicyConfig, PolicyInput, PolicyState, decide

DEFAULT_MAX_REPLICAS = 1000
MIN_HISTORY_STEPS = 5
CAPACITY_EWMA = 0.3

# PredictiveScaling condition reasons (status True only for the first)
FORECAST_APPLIED = "ForecastApplied"
PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
NO_METRICS = "NoMetrics"
METRICS_UNSUPPORTED = "MetricsUnsupported"
CAPACITY_UNKNOWN = "CapacityUnknown"


@dataclass(frozen=True)
class Margins:
    """How far above the forecast the floor sits, by default, for one kind of data plane."""

    headroom: float
    burst_quantile: float | None  # None: no burst factor
    band_quantile: float


# A balancer that queues without a useful bound lets any shortage delay every request behind
# it, so the floor covers the forecast's 90% error band, sub-minute bursts and 20% more. One that
# fails fast loses only the requests over capacity, and is cheapest nearer the forecast: on the
# ServeGen traces (bench/autoscaling.py --queue-timeout 0.5) this default reaches 99% of requests
# within the TTFT SLO at half or more of the gap between the best in-flight HPA and the oracle.
QUEUEING_MARGINS = Margins(headroom=0.2, burst_quantile=0.99, band_quantile=0.9)
FAIL_FAST_MARGINS = Margins(headroom=0.0, burst_quantile=None, band_quantile=0.8)


@dataclass(frozen=True)
class LiveConfig:
    """The spec fields the live scaler reads (build with :meth:`from_spec`)."""

    min_replicas: int = 1
    max_replicas: int = DEFAULT_MAX_REPLICAS
    target_queue_depth: float = 8.0
    headroom: float = QUEUEING_MARGINS.headroom
    horizon_s: float = 600.0
    interval_s: float = 60.0
    ttft_slo_s: float | None = None
    capacity_rps: float | None = None  # predictive.requestsPerSecondPerReplica
    down_percent_per_minute: float = 25.0
    burst_quantile: float | None = QUEUEING_MARGINS.burst_quantile  # None: no burst factor
    band_quantile: float = QUEUEING_MARGINS.band_quantile
    # The balancer turns away what cannot start within the SLO (LLMServiceSpec.balancer_fails_fast).
    fails_fast: bool = False

    @classmethod
    def from_spec(cls, spec: Any) -> LiveConfig:
        """From an ``llmfleet.api.LLMServiceSpec``."""
        auto, predictive = spec.autoscaling, spec.autoscaling.predictive
        slo_ms = spec.slo.ttft_p95_ms if spec.slo is not None else None
        fails_fast = bool(spec.balancer_fails_fast())
        margins = FAIL_FAST_MARGINS if fails_fast else QUEUEING_MARGINS
        return cls(
            min_replicas=spec.replicas.min,
            max_replicas=spec.replicas.max or DEFAULT_MAX_REPLICAS,
            target_queue_depth=float(auto.target_queue_depth),
            headroom=margins.headroom if predictive.headroom is None else predictive.headroom,
            band_quantile=margins.band_quantile
            if predictive.band_quantile is None
            else predictive.band_quantile,
            horizon_s=float(predictive.horizon_seconds),
            interval_s=float(predictive.interval_seconds),
            ttft_slo_s=slo_ms / 1000.0 if slo_ms else None,
            capacity_rps=predictive.requests_per_second_per_replica,
            down_percent_per_minute=float(auto.scale_down.percent_per_minute),
            burst_quantile=margins.burst_quantile,
            fails_fast=fails_fast,
        )


@dataclass(frozen=True)
class LiveState:
    """Carried between calls (the operator may keep it in memory; losing it is safe)."""

    floor: int = 0
    policy: PolicyState = field(default_factory=PolicyState)
    learned_capacity_rps: float | None = None  # measured while saturated
    capacity_lower_bound_rps: float = 0.0  # highest per-replica rate served without saturation

    @classmethod
    def resume(cls, recommended_replicas: int | None) -> LiveState:
        """After an operator restart: hold ``status.predictive.recommendedReplicas`` until a full
        scale-down window of new evidence says it can go lower."""
        return cls(floor=recommended_replicas or 0)


@dataclass(frozen=True)
class Recommendation:
    replicas: int  # the HPA's minReplicas
    forecast_rps: float  # upper-band forecast of the request rate (status.predictive)
    reason: str  # one line for status.predictive.reason and the Event
    healthy: bool  # PredictiveScaling condition status
    condition_reason: str  # PredictiveScaling condition reason (CamelCase)
    state: LiveState

    def status(self, updated_at: str) -> dict[str, Any]:
        """``status.predictive`` in API (camelCase) form; ``updated_at`` is RFC 3339."""
        return {
            "forecastRequestsPerSecond": round(self.forecast_rps, 3),
            "recommendedReplicas": self.replicas,
            "reason": self.reason[:1024],
            "updatedAt": updated_at,
        }


def _hold(config: LiveConfig, previous: LiveState, reason: str, why: str) -> Recommendation:
    floor = min(max(previous.floor, config.min_replicas), config.max_replicas)
    state = replace(previous, floor=floor)
    return Recommendation(floor, 0.0, f"holding floor {floor}: {why}", False, reason, state)


def learn_capacity(config: LiveConfig, metrics: FleetMetrics, ready: int, state: LiveState) -> LiveState:
    """Update the per-replica capacity estimate from one observation at ``ready`` replicas.

    From the rate the engines *served*: when the balancer fails fast, the demand it received
    while saturated exceeds what the replicas can do, and learning from it would overstate
    their capacity."""
    served = metrics.served_rate if metrics.demand_source != "engine" else metrics.request_rate
    if ready <= 0 or served is None or served <= 0:
        return state
    per_replica = served / ready
    queue = (metrics.queue_depth or 0.0) / ready
    slow = config.ttft_slo_s is not None and (metrics.ttft_p95_s or 0.0) > config.ttft_slo_s
    if queue > config.target_queue_depth or slow:
        old = state.learned_capacity_rps
        new = per_replica if old is None else (1 - CAPACITY_EWMA) * old + CAPACITY_EWMA * per_replica
        return replace(state, learned_capacity_rps=new)
    return replace(state, capacity_lower_bound_rps=max(state.capacity_lower_bound_rps, per_replica))


def capacity(config: LiveConfig, state: LiveState) -> float | None:
    if config.capacity_rps is not None:
        return config.capacity_rps
    if state.learned_capacity_rps is not None:
        return max(state.learned_capacity_rps, state.capacity_lower_bound_rps)
    return state.capacity_lower_bound_rps or None


def burst_config(quantile: float, ttft_slo_s: float | None) -> BurstConfig:
    """The burst factor's settings for a TTFT SLO: the queueing delay a request tolerates is the
    SLO less 0.2 s for its own prefill (0.8 s when no SLO is set)."""
    slack = max(ttft_slo_s - 0.2, 0.1) if ttft_slo_s is not None and math.isfinite(ttft_slo_s) else 0.8
    return BurstConfig(quantile=quantile, slack_s=slack)


def live_burst_factor(config: LiveConfig, metrics: FleetMetrics) -> float:
    """Capacity per unit of forecast rate that recent sub-minute bursts call for (>= 1)."""
    if config.burst_quantile is None or not metrics.burst_history:
        return 1.0
    step = metrics.burst_step_s
    counts = np.asarray(metrics.burst_history, dtype=float) * step
    return burst_factor(counts, step, metrics.step_s, burst_config(config.burst_quantile, config.ttft_slo_s))


def _demand(config: LiveConfig, metrics: FleetMetrics) -> str:
    """Where the request rate came from, and what that misses."""
    if metrics.demand_source != "engine":
        return f"demand from {metrics.demand_source} (rejected requests included)"
    if config.fails_fast:
        return "demand from the engines' completions (the balancer's rejections are not counted)"
    return "demand from the engines' completions"


def recommend(
    spec: Any,
    metrics: FleetMetrics | BaseException | None,
    previous: LiveState | None,
    now: float,
    ready_replicas: int,
) -> Recommendation:
    """The HPA floor for now.

    ``spec`` is an ``LLMServiceSpec`` or a :class:`LiveConfig`; ``metrics`` what
    :func:`~llmfleet.scaling.metrics.fetch` returned, or the exception it raised (None when it
    was not called); ``ready_replicas`` the model Deployment's ready replicas (for learning
    capacity and for feedback); ``now`` unix seconds. Pass ``result.state`` back next time.
    """
    config = spec if isinstance(spec, LiveConfig) else LiveConfig.from_spec(spec)
    state = previous or LiveState(floor=config.min_replicas)
    if isinstance(metrics, BaseException) or metrics is None:
        detail = str(metrics) if metrics is not None else "no metrics were read"
        kind = "unreachable" if isinstance(metrics, MetricsUnavailable) else "failed"
        return _hold(
            config,
            state,
            PROMETHEUS_UNAVAILABLE,
            f"Prometheus {kind} ({detail}); check predictive.prometheusUrl",
        )
    if metrics.request_rate is None and not metrics.rate_history:
        if any(u.startswith(("request_rate", "all")) for u in metrics.unavailable):
            return _hold(config, state, METRICS_UNSUPPORTED, "; ".join(metrics.unavailable))
        return _hold(
            config, state, NO_METRICS, "Prometheus has no request-rate series for the model pods yet"
        )
    state = learn_capacity(config, metrics, ready_replicas, state)
    per_replica = capacity(config, state)
    if per_replica is None:
        return _hold(
            config,
            state,
            CAPACITY_UNKNOWN,
            "no throughput observed yet; set predictive.requestsPerSecondPerReplica",
        )
    history = np.asarray(metrics.rate_history, dtype=float)
    if history.size < MIN_HISTORY_STEPS:
        return _hold(config, state, NO_METRICS, f"only {history.size} steps of request-rate history")
    fc = forecast(
        history,
        metrics.step_s,
        max(config.horizon_s, config.interval_s),
        ForecastConfig(quantile=config.band_quantile),
    )
    burst = live_burst_factor(config, metrics)
    policy = PolicyConfig(
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        capacity_rps=per_replica,
        headroom=config.headroom,
        target_queue_depth=config.target_queue_depth,
        ttft_slo_s=config.ttft_slo_s if config.ttft_slo_s is not None else math.inf,
        down_percent_per_minute=config.down_percent_per_minute,
    )
    ready = max(ready_replicas, 0)
    policy_state = state.policy if state.policy.floor else PolicyState(state.floor, now, ())
    decision, new_policy = decide(
        policy,
        PolicyInput(
            now=now,
            forecast_upper_rps=fc.upper,
            forecast_rps=fc.peak,
            ready=ready,
            observed_rps=metrics.request_rate or 0.0,
            queue_per_replica=(metrics.queue_depth / max(ready, 1))
            if metrics.queue_depth is not None
            else None,
            ttft_p95_s=metrics.ttft_p95_s,
            burst_factor=burst,
            rejected_rps=metrics.rejected_rate or 0.0,
        ),
        policy_state,
    )
    new_state = replace(state, floor=decision.replicas, policy=new_policy)
    reason = (
        f"{decision.reason}; {fc.model} model, backtest error {fc.backtest_error:.0%}, burst x{burst:.2f}"
        f"; {_demand(config, metrics)}"
    )
    return Recommendation(decision.replicas, fc.upper, reason, True, FORECAST_APPLIED, new_state)
