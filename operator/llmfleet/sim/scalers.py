"""The three scalers the simulator compares: the HPA, the predictive floor under it, the oracle.

* ``HPAScaler``: ``llmfleet.scaling.hpa`` on queue depth per pod every 15 s; replicas still
  starting (loading the model) report no metric, so they are the HPA's *missing* pods.
* ``PredictiveScaler``: what the operator ships: every ``interval_s`` the forecaster and the
  policy set the HPA's ``minReplicas``; the same HPA then runs every 15 s above that floor.
* ``OracleScaler``: knows the future work exactly and pays the same startup delay: at ``t``
  it keeps ``max(need)`` over ``[t, t + startup + period]`` where ``need`` is the smoothed work
  rate over ``utilisation``. Releasing a replica it needs back within a startup would cost
  more than keeping it, so this greedy rule is the cheapest schedule for that ``need``;
  sweeping ``utilisation`` gives the cheapest oracle reaching the SLO (the lower bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from llmfleet.scaling import hpa
from llmfleet.scaling.forecast import BurstConfig, Forecast, ForecastConfig, burst_factor, forecast
from llmfleet.scaling.live import FAIL_FAST_MARGINS, QUEUEING_MARGINS, burst_config
from llmfleet.scaling.policy import PolicyConfig, PolicyInput, PolicyState, decide
from llmfleet.sim.fleet import FleetConfig, Observation
from llmfleet.sim.traces import Trace


class HPAScaler:
    """``metric="waiting"`` is the HPA the operator renders; ``"inflight"`` (running + waiting per
    pod, a concurrency target) is the stronger reactive baseline KServe/KEDA setups use. Both
    read the engines' gauges, as prometheus-adapter serves them; ``"inflight-lb"`` adds the
    requests waiting in the balancer, which no shipped metric gives the HPA (a sensitivity)."""

    name = "hpa"

    def __init__(self, spec: hpa.HPASpec, metric: str = "waiting") -> None:
        if metric not in ("waiting", "inflight", "inflight-lb"):
            raise ValueError(f"unknown HPA metric {metric!r}")
        self.spec = spec
        self.metric = metric
        self.period_s = hpa.SYNC_PERIOD_S
        self.state = hpa.HPAState()

    def decide(self, obs: Observation) -> int:
        return self._hpa(obs, self.spec)

    def _hpa(self, obs: Observation, spec: hpa.HPASpec) -> int:
        per_pod = {
            "waiting": obs.queue_per_replica,
            "inflight": obs.inflight_per_replica,
            "inflight-lb": obs.inflight_per_replica + obs.balancer_queue_per_replica,
        }[self.metric]
        pods = hpa.PodMetrics(total=per_pod * obs.ready, reporting=obs.ready, missing=obs.starting)
        decision = hpa.step(spec, self.state, float(obs.now), obs.desired, pods)
        self.state = decision.state
        return decision.replicas


@dataclass
class RateHistory:
    """Per ``step_s``: the peak ``peak_s``-second mean request rate, built incrementally.

    The fleet must absorb the short-term peak within each minute, not its mean (a queue that
    lasts a few seconds already costs the TTFT SLO), so that peak is the series forecast.
    ``peak_s = step_s`` gives the plain mean rate per step.
    """

    step_s: int
    peak_s: int = 60
    rates: list[float] = field(default_factory=list)

    def update(self, counts: np.ndarray) -> np.ndarray:
        full = counts.size // self.step_s
        have = len(self.rates)
        if full > have:
            chunk = counts[have * self.step_s : full * self.step_s]
            sub = chunk.reshape(-1, self.step_s // self.peak_s, self.peak_s).mean(axis=2)
            self.rates.extend(sub.max(axis=1).tolist())
        return np.asarray(self.rates)


class PredictiveScaler(HPAScaler):
    name = "predictive"

    def __init__(
        self,
        spec: hpa.HPASpec,
        policy: PolicyConfig,
        *,
        horizon_s: float,
        interval_s: int = 60,
        step_s: int = 60,
        peak_s: int = 60,
        forecast_config: ForecastConfig | None = None,
        cache: dict[tuple[int, float, float], Forecast] | None = None,
        burst: BurstConfig | None = None,
        burst_step_s: int = 1,
        burst_cache: dict[tuple[int, float, float], float] | None = None,
    ) -> None:
        super().__init__(spec)
        self.burst = burst
        self.burst_step_s = burst_step_s
        self.burst_cache = burst_cache if burst_cache is not None else {}
        self.policy = policy
        self.horizon_s = horizon_s
        self.interval_s = interval_s
        self.forecast_config = forecast_config or ForecastConfig()
        self.history = RateHistory(step_s, peak_s)
        self.cache = cache if cache is not None else {}
        self.policy_state = PolicyState()
        self.floor = policy.min_replicas
        self.reasons: list[tuple[int, str]] = []
        cfg = self.forecast_config
        self.keep = (
            cfg.max_seasons * round(cfg.season_s / step_s) + cfg.backtest_steps + cfg.season_level_steps + 64
        )

    def predict(self, counts: np.ndarray) -> Forecast:
        rates = self.history.update(counts)
        key = (rates.size, self.horizon_s, self.forecast_config.quantile)
        cached = self.cache.get(key)
        if cached is None:
            cached = forecast(rates[-self.keep :], self.history.step_s, self.horizon_s, self.forecast_config)
            self.cache[key] = cached
        return cached

    def burst_factor(self, counts: np.ndarray) -> float:
        """The live scaler's burst factor from what Prometheus would hold: per ``burst_step_s``,
        the rate over the last two steps (``rate(...[30s])`` read every 15 s) over the burst
        lookback; 1.0 when bursts are not modelled."""
        if self.burst is None:
            return 1.0
        key = (counts.size, self.burst.quantile, float(self.burst_step_s))
        cached = self.burst_cache.get(key)
        if cached is None:
            step = self.burst_step_s
            n = min(counts.size, int(self.burst.lookback_s)) // step * step
            recent = counts[counts.size - n :].reshape(-1, step).sum(axis=1) if n else counts[:0]
            if step > 1 and recent.size > 1:  # Prometheus: rate over two steps, read every step
                recent = (recent[1:] + recent[:-1]) / 2.0
            cached = burst_factor(recent, float(step), float(self.history.step_s), self.burst)
            self.burst_cache[key] = cached
        return cached

    def decide(self, obs: Observation) -> int:
        if obs.now % self.interval_s == 0:
            fc = self.predict(obs.count_history)
            if self.history.rates.__len__() < self.forecast_config.level_steps:
                # Too little history to forecast: hold what runs now (the live path holds too).
                self.floor = max(self.floor, obs.desired)
                self.policy_state = PolicyState(self.floor, float(obs.now), ())
                return self._hpa(obs, replace(self.spec, min_replicas=self.floor))
            inp = PolicyInput(
                now=float(obs.now),
                forecast_upper_rps=fc.upper,
                forecast_rps=fc.peak,
                ready=obs.ready,
                observed_rps=float(self.history.rates[-1]) if self.history.rates else obs.request_rate,
                queue_per_replica=obs.queue_per_replica,
                ttft_p95_s=obs.ttft_p95_s,
                burst_factor=self.burst_factor(obs.count_history),
                rejected_rps=obs.rejected_rate,
            )
            decision, self.policy_state = decide(self.policy, inp, self.policy_state)
            if decision.replicas != self.floor:
                self.reasons.append((obs.now, decision.reason))
            self.floor = decision.replicas
        return self._hpa(obs, replace(self.spec, min_replicas=self.floor))


class PlanScaler:
    """A reference scaler whose decisions are fixed in advance from the trace: ``plan[b]``
    replicas from second ``b * period_s`` (the simulator replays it on its vectorised path)."""

    name = "plan"
    period_s = 15
    plan: np.ndarray

    def decide(self, obs: Observation) -> int:
        block = obs.now // self.period_s
        return int(self.plan[block]) if block < self.plan.size else 1


def trailing_work(trace: Trace, config: FleetConfig, smooth_s: int) -> np.ndarray:
    """Replica-seconds of work per second, as a trailing mean over ``smooth_s`` seconds."""
    work = trace.work(config.capacity)
    return np.asarray(np.convolve(work, np.ones(smooth_s) / smooth_s, mode="full")[: work.size])


class OracleScaler(PlanScaler):
    name = "oracle"

    def __init__(
        self,
        trace: Trace,
        config: FleetConfig,
        *,
        utilisation: float = 0.9,
        smooth_s: int = 1,
        period_s: int = 15,
    ) -> None:
        self.period_s = period_s
        need = np.ceil(trailing_work(trace, config, smooth_s) / utilisation - 1e-9)
        blocks = math.ceil(need.size / period_s)
        padded = np.zeros(blocks * period_s)
        padded[: need.size] = need
        block_max = padded.reshape(blocks, period_s).max(axis=1)
        ahead = math.ceil(config.startup_delay_s / period_s) + 2
        tail = np.concatenate([block_max, np.zeros(ahead)])
        window_max = np.lib.stride_tricks.sliding_window_view(tail, ahead + 1).max(axis=1)[:blocks]
        self.plan = np.maximum(window_max, 1.0)


class PresentScaler(PlanScaler):
    """Reference, not a product: sees the present work exactly (no metric lag, no forecast error)
    and nothing of the future. At ``t`` it asks for ``(1 + margin)`` times the work of the last
    ``smooth_s`` seconds, held for ``hold_s``. What it costs to reach the SLO measures how much
    of the gap is lost to load changes within one startup delay, which no forecast of the past
    can see coming (ServeGen's level steps)."""

    name = "present"

    def __init__(
        self,
        trace: Trace,
        config: FleetConfig,
        *,
        margin: float = 0.3,
        smooth_s: int = 60,
        hold_s: int = 300,
        period_s: int = 15,
    ) -> None:
        self.period_s = period_s
        need = np.ceil(trailing_work(trace, config, smooth_s) * (1.0 + margin) - 1e-9)
        padded = np.concatenate([np.zeros(max(hold_s - 1, 0)), need])
        held = np.lib.stride_tricks.sliding_window_view(padded, max(hold_s, 1)).max(axis=1)
        self.plan = np.maximum(held[::period_s], 1.0)


@dataclass(frozen=True)
class ScalerSettings:
    """The knobs the benchmark sweeps; defaults are the LLMService API defaults."""

    target_queue_depth: float = 8.0
    hpa_metric: str = "waiting"
    inflight_target: float = 0.8  # inflight HPA: fraction of a replica's batch
    headroom: float = QUEUEING_MARGINS.headroom
    oracle_utilisation: float = 0.9
    oracle_smooth_s: int = 1
    min_replicas: int = 1
    max_replicas: int = 1000
    interval_s: int = 60
    burst_quantile: float | None = QUEUEING_MARGINS.burst_quantile  # None: no burst factor
    burst_step_s: int = 15  # the finest step a 15 s Prometheus scrape gives the live scaler
    forecast_quantile: float = QUEUEING_MARGINS.band_quantile  # the forecast's upper band

    @classmethod
    def defaults(cls, config: FleetConfig) -> ScalerSettings:
        """The live scaler's defaults for the fleet's data plane (failing fast or queueing)."""
        margins = FAIL_FAST_MARGINS if config.fails_fast else QUEUEING_MARGINS
        return cls(
            headroom=margins.headroom,
            burst_quantile=margins.burst_quantile,
            forecast_quantile=margins.band_quantile,
        )


def make_scaler(
    kind: str,
    trace: Trace,
    config: FleetConfig,
    settings: ScalerSettings | None = None,
    cache: dict[tuple[int, float, float], Forecast] | None = None,
    burst_cache: dict[tuple[int, float, float], float] | None = None,
) -> HPAScaler | OracleScaler:
    """A fresh scaler of ``kind`` (hpa | hpa-inflight | hpa-inflight-lb | predictive | oracle) for ``trace``."""
    s = settings or ScalerSettings()
    spec = hpa.HPASpec.from_llmservice(
        min_replicas=s.min_replicas, max_replicas=s.max_replicas, target_queue_depth=s.target_queue_depth
    )
    if kind == "hpa":
        return HPAScaler(spec, s.hpa_metric)
    if kind in ("hpa-inflight", "hpa-inflight-lb"):
        batch = config.capacity.batch_limit(trace.mean_tokens_per_sequence())
        scaler = HPAScaler(replace(spec, target_average_value=s.inflight_target * batch), kind[4:])
        scaler.name = kind
        return scaler
    if kind in ("predictive", "predictive-inflight"):
        policy = PolicyConfig(
            min_replicas=s.min_replicas,
            max_replicas=s.max_replicas,
            capacity_rps=1.0 / trace.mean_request_cost(config.capacity),
            headroom=s.headroom,
            target_queue_depth=s.target_queue_depth,
            ttft_slo_s=config.slo_ttft_s,
        )
        horizon = config.startup_delay_s + s.interval_s + config.metric_lag_s
        burst = burst_config(s.burst_quantile, config.slo_ttft_s) if s.burst_quantile is not None else None
        if kind == "predictive":
            return PredictiveScaler(
                spec,
                policy,
                horizon_s=horizon,
                interval_s=s.interval_s,
                forecast_config=ForecastConfig(quantile=s.forecast_quantile),
                cache=cache,
                burst=burst,
                burst_step_s=s.burst_step_s,
                burst_cache=burst_cache,
            )
        batch = config.capacity.batch_limit(trace.mean_tokens_per_sequence())
        inflight = replace(spec, target_average_value=s.inflight_target * batch)
        both = PredictiveScaler(
            inflight,
            policy,
            horizon_s=horizon,
            interval_s=s.interval_s,
            forecast_config=ForecastConfig(quantile=s.forecast_quantile),
            cache=cache,
            burst=burst,
            burst_step_s=s.burst_step_s,
            burst_cache=burst_cache,
        )
        both.metric, both.name = "inflight", "predictive-inflight"
        return both
    if kind == "oracle":
        return OracleScaler(trace, config, utilisation=s.oracle_utilisation, smooth_s=s.oracle_smooth_s)
    raise ValueError(f"unknown scaler {kind!r}")
