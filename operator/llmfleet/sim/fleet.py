"""Fleet simulator: replay a trace against replicas that a pluggable scaler adds and removes.

Why a fluid model: the benchmark replays 14 days (1.2 M seconds, ~1e8 requests at fleet scale)
many times over on two shared cores, so requests are not simulated one by one. The fleet is
one FIFO queue in front of its replicas (the load balancer queues beyond each replica's
concurrency, as in the LLMService API), advanced one second at a time in plain Python floats
(Lindley recursion ``backlog = max(0, backlog + arrived_work - capacity)``), and per-request
outcomes are read off the cumulative-capacity curve afterwards, vectorised.

Capacity model (the same knobs as the sim-server engine, ``llmfleet.sim.engine``): a replica
runs at most ``C = min(max_num_seqs, kv_cache_tokens / mean sequence tokens)`` sequences; one
engine step takes ``decode_base + decode_per_seq * batch`` seconds and emits one token per
running sequence, and a prompt costs ``prefill_seconds_per_token`` per token. Work is counted
in replica-seconds at a full batch::

    cost(request) = prompt * prefill_seconds_per_token + output * step(C) / C

so a replica serves 1 replica-second of work per second only when its batch is full (per-
replica batching: a half-empty batch is faster per request but not more throughput). A request
waits for the work ahead of it, then its own prefill: ``TTFT = wait + prompt * prefill``;
its latency adds ``output * step(b)`` with ``b`` the batch implied by the fleet's utilisation.

Replicas the scaler adds are *starting* for ``startup_delay_s`` (they cost GPU time, serve
nothing) and then *ready*; removals cancel starting replicas first. The scaler sees metrics
``metric_lag_s`` old (scrape interval + rate window), as the HPA and the live scaler do.
Requests still waiting when the trace (plus a drain tail) ends count as violations. With
``queue_timeout_s`` set, the balancer fails fast instead: work that would wait longer is
rejected and counted as violated (``llmfleet.sim.queueing``), and the scalers still see the
demand the balancer received.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from llmfleet.sim.engine import EngineConfig
from llmfleet.sim.queueing import Admission, outcomes, prefill_p95, queue, queue_state
from llmfleet.sim.results import SimResult

if TYPE_CHECKING:
    from llmfleet.sim.traces import Trace


_ENGINE = EngineConfig()


@dataclass(frozen=True)
class CapacityModel:
    """One replica's engine, in the sim-server's terms (defaults are ``EngineConfig``'s)."""

    max_num_seqs: int = _ENGINE.max_num_seqs
    kv_cache_tokens: int = _ENGINE.kv_cache_tokens
    prefill_seconds_per_token: float = _ENGINE.prefill_seconds_per_token
    decode_base_seconds: float = _ENGINE.decode_base_seconds
    decode_per_seq_seconds: float = _ENGINE.decode_per_seq_seconds

    def batch_limit(self, mean_sequence_tokens: float) -> int:
        return max(1, min(self.max_num_seqs, int(self.kv_cache_tokens // max(mean_sequence_tokens, 1.0))))

    def step_seconds(self, batch: float) -> float:
        return self.decode_base_seconds + self.decode_per_seq_seconds * batch

    def decode_seconds_per_token(self, mean_sequence_tokens: float) -> float:
        """Replica-seconds per output token at a full batch."""
        batch = self.batch_limit(mean_sequence_tokens)
        return self.step_seconds(batch) / batch


@dataclass(frozen=True)
class FleetConfig:
    capacity: CapacityModel = field(default_factory=CapacityModel)
    startup_delay_s: int = 300
    metric_lag_s: int = 30
    rate_window_s: int = 60
    slo_ttft_s: float = 1.0
    initial_replicas: int | None = None  # None: warm start sized for the first startup period
    drain_s: int = 300
    warmup_s: int | None = None  # not scored; None: one startup delay, which no scaler can act within
    queue_timeout_s: float | None = None  # None: unbounded FIFO; else reject work waiting longer
    retries: int = 2  # a rejected client's retries (only when the balancer rejects)
    retry_delay_s: int = 1  # Retry-After
    retries_last: bool = True  # the balancer queues retries behind first attempts (haproxy, as rendered)

    @property
    def fails_fast(self) -> bool:
        """The balancer turns away work it could not start within the SLO (as the API decides)."""
        return self.queue_timeout_s is not None and self.queue_timeout_s < self.slo_ttft_s


@dataclass(frozen=True)
class Observation:
    """What a scaler knows at ``now``: metrics ``metric_lag_s`` old, as Prometheus would show."""

    now: int
    desired: int
    ready: int
    starting: int
    queue_per_replica: float  # waiting in the engines (all of the queue, unless the balancer holds it)
    inflight_per_replica: float  # engines' running + waiting: the batch fills with utilisation
    request_rate: float
    ttft_p95_s: float
    count_history: np.ndarray  # requests per second up to now - lag (a view)
    rejected_rate: float = 0.0  # requests/s the balancer turned away over the rate window
    # Waiting in the balancer: with a queue timeout, the balancer caps each replica at its batch
    # and holds the queue itself, where the engines' gauges (and an HPA on them) cannot see it.
    balancer_queue_per_replica: float = 0.0


class Scaler(Protocol):
    name: str
    period_s: int

    def decide(self, obs: Observation) -> int: ...


def initial_replicas(trace: Trace, config: FleetConfig) -> int:
    if config.initial_replicas is not None:
        return config.initial_replicas
    # Every scaler starts from a fleet already sized for the load of the first startup period
    # (the peak 30 s mean at 85% busy), as if it had been running before the trace began.
    work = trace.work(config.capacity)[: config.startup_delay_s + 60]
    windows = work[: work.size // 30 * 30].reshape(-1, 30).mean(axis=1)
    return max(1, math.ceil(float(windows.max(initial=0.0)) / 0.85))


def simulate(
    trace: Trace, scaler: Scaler, config: FleetConfig, progress: Callable[[float], None] | None = None
) -> SimResult:
    """Replay ``trace`` with ``scaler`` deciding the desired replicas every ``scaler.period_s``.

    A scaler with a precomputed ``plan`` array (one value per period; the oracle) takes the
    vectorised :func:`simulate_plan` path, which gives the same result.
    """
    plan = getattr(scaler, "plan", None)
    if isinstance(plan, np.ndarray):
        result = simulate_plan(trace, scaler.name, plan, scaler.period_s, config)
        if progress is not None:
            progress(1.0)
        return result
    cap = config.capacity
    n = trace.seconds + config.drain_s
    work = np.zeros(n)
    work[: trace.seconds] = trace.work(cap)
    count = np.zeros(n)
    count[: trace.seconds] = trace.count
    mean_cost = trace.mean_request_cost(cap)
    arrive = work.tolist()
    count_cum = [0.0] * (n + 1)
    backlog = [0.0] * n
    shed_cum = [0.0] * (n + 1)
    timeout = config.queue_timeout_s
    admission = (
        None
        if timeout is None
        else Admission(n, timeout, config.retries, config.retry_delay_s, config.retries_last)
    )
    wait_est = [0.0] * n
    ready_at = [0] * n
    busy = [0.0] * n
    batch = float(cap.batch_limit(trace.mean_tokens_per_sequence()))
    starting_at = [0] * n
    events: list[tuple[int, int]] = []
    ready = initial_replicas(trace, config)
    starting: deque[int] = deque()
    desired = ready
    lag, window, period = config.metric_lag_s, config.rate_window_s, max(1, scaler.period_s)
    prefill_95 = prefill_p95(trace, cap)
    report_every = max(1, n // 100)
    b = 0.0
    for k in range(n):
        if admission is not None:  # retries due now count as requests the balancer receives
            count[k] += admission.due(k) / mean_cost
        count_cum[k + 1] = count_cum[k] + count[k]
        if k % period == 0:
            i = max(0, k - lag)
            lo = max(0, i + 1 - window)
            recent = sorted(wait_est[lo : i + 1])
            queued = backlog[i] / mean_cost / max(ready_at[i], 1)
            queue, held = (queued, 0.0) if admission is None else (0.0, queued)
            obs = Observation(
                now=k,
                desired=desired,
                ready=ready,
                starting=len(starting),
                queue_per_replica=queue,
                inflight_per_replica=busy[i] * batch + queue,
                request_rate=(count_cum[i + 1] - count_cum[lo]) / (i + 1 - lo),
                ttft_p95_s=recent[min(len(recent) - 1, int(0.95 * len(recent)))] + prefill_95,
                count_history=count[: i + 1] if k >= lag else count[:0],
                rejected_rate=(shed_cum[i + 1] - shed_cum[lo]) / (i + 1 - lo) / mean_cost,
                balancer_queue_per_replica=held,
            )
            new = max(0, int(scaler.decide(obs)))
            if new != desired:
                events.append((k, new))
                total = ready + len(starting)
                if new > total:
                    starting.extend([k + config.startup_delay_s] * (new - total))
                else:
                    drop = total - new
                    while drop and starting:
                        starting.pop()
                        drop -= 1
                    ready -= drop
                desired = new
        while starting and starting[0] <= k:
            starting.popleft()
            ready += 1
        if admission is None:
            offered = b + arrive[k]
            b = offered - ready
            if b < 0.0:
                b = 0.0
        else:
            offered = b
            b = admission.step(k, b, arrive[k], ready)
            offered += admission.incoming[k]
            shed_cum[k + 1] = shed_cum[k] + admission.shed[k]
        if ready:
            busy[k] = 1.0 if offered >= ready else offered / ready
        backlog[k] = b
        wait_est[k] = b / ready if ready else (math.inf if b > 0 else 0.0)
        ready_at[k] = ready
        starting_at[k] = len(starting)
        if progress is not None and k % report_every == 0:
            progress(k / n)
    if progress is not None:
        progress(1.0)
    return _result(
        trace,
        scaler.name,
        config,
        count,
        queue_state(np.asarray(backlog), work, admission),
        ready_at,
        starting_at,
        events,
    )


def _result(
    trace: Trace,
    name: str,
    config: FleetConfig,
    count: np.ndarray,
    queued: tuple[np.ndarray, np.ndarray, np.ndarray],
    ready: list[int] | np.ndarray,
    starting: list[int] | np.ndarray,
    events: list[tuple[int, int]],
) -> SimResult:
    ready_arr = np.asarray(ready, dtype=np.int32)
    backlog, rejected_share, incoming = queued
    ttft, latency, met, rejected = outcomes(
        trace, config, incoming, backlog, rejected_share, ready_arr.astype(float)
    )
    return SimResult(
        scaler=name,
        ttft_s=ttft,
        latency_s=latency,
        weight=trace.group_weight,
        slo_met=met,
        ready=ready_arr,
        starting=np.asarray(starting, dtype=np.int32),
        queue_requests=backlog / trace.mean_request_cost(config.capacity),
        count=count,
        events=events,
        slo_ttft_s=config.slo_ttft_s,
        warmup_s=config.startup_delay_s if config.warmup_s is None else config.warmup_s,
        arrival_s=trace.group_t,
        rejected=rejected if config.queue_timeout_s is not None else None,
    )


def simulate_plan(trace: Trace, name: str, plan: np.ndarray, period_s: int, config: FleetConfig) -> SimResult:
    """Fast path for a scaler that ignores observations (the oracle): ``plan[b]`` replicas from
    second ``b * period_s``, with the same replica semantics and queue as :func:`simulate`."""
    n = trace.seconds + config.drain_s
    work = np.zeros(n)
    work[: trace.seconds] = trace.work(config.capacity)
    count = np.zeros(n)
    count[: trace.seconds] = trace.count
    ready_diff = np.zeros(n + config.startup_delay_s + 1, dtype=np.int64)
    start_diff = np.zeros_like(ready_diff)
    ready = desired = initial_replicas(trace, config)
    starting: deque[int] = deque()
    events: list[tuple[int, int]] = []
    for b, k in enumerate(range(0, n, period_s)):
        while starting and starting[0] < k:
            starting.popleft()
            ready += 1
        new = int(plan[min(b, plan.size - 1)]) if b < plan.size else 1
        if new == desired:
            continue
        events.append((k, new))
        total = ready + len(starting)
        if new > total:
            r = k + config.startup_delay_s
            starting.extend([r] * (new - total))
            start_diff[k] += new - total
            start_diff[r] -= new - total
            ready_diff[r] += new - total
        else:
            drop = total - new
            while drop and starting:
                r = starting.pop()
                start_diff[k] -= 1
                start_diff[r] += 1
                ready_diff[r] -= 1
                drop -= 1
            ready -= drop
            ready_diff[k] -= drop
        desired = new
    initial = initial_replicas(trace, config)
    ready_s = initial + np.cumsum(ready_diff)[:n]
    starting_s = np.cumsum(start_diff)[:n]
    queued = queue(
        work,
        ready_s.astype(float),
        config.queue_timeout_s,
        config.retries,
        config.retry_delay_s,
        config.retries_last,
    )
    count = count + (queued[2] - work) / trace.mean_request_cost(config.capacity)  # retries, as received
    return _result(trace, name, config, count, queued, ready_s, starting_s, events)
