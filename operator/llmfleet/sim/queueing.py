"""The fleet's queue in fluid form: how much work waits, how much the balancer turns away, and
what each request group sees.

Why its own module: the simulator's per-second loop (scaler in the loop) and its vectorised
path (a fixed plan) must queue identically, and the per-request outcomes are read off the same
curves either way.

Two queue disciplines, as the data plane offers them:

* **unbounded FIFO** (``queue_timeout_s=None``): the balancer or the engine holds every request
  until a replica takes it; a shortage makes every later request late (haproxy's queue with a
  long ``queueSeconds``, or no concurrency cap so the engine queues);
* **fail fast** (``queue_timeout_s=T``): a request that would wait longer than ``T`` is turned
  away with HTTP 503 (haproxy's ``timeout queue``, ``loadBalancer.timeouts.queueSeconds``, with
  ``maxConcurrencyPerReplica`` at the batch size). The queue never holds more than ``T``
  seconds of work, so a shortage of ``x``% costs about ``x``% of the requests, not all of them.
  Rejected requests count as SLO violations; clients' retries are not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from llmfleet.sim.fleet import CapacityModel, FleetConfig
    from llmfleet.sim.traces import Trace


def queue(work: np.ndarray, ready: np.ndarray, timeout_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Backlog (replica-seconds waiting at the end of each second) and the work rejected in each
    second, for ``work`` arriving and ``ready`` replicas serving one replica-second per second."""
    if timeout_s is None:
        # Lindley vectorised: backlog_k = S_k - min(0, min_{j<=k} S_j), S the cumulative net work.
        cumulative = np.cumsum(work - ready)
        return cumulative - np.minimum(np.minimum.accumulate(cumulative), 0.0), np.zeros_like(work)
    backlog = [0.0] * work.size
    shed = [0.0] * work.size
    b = 0.0
    for k, (arrived, replicas) in enumerate(zip(work.tolist(), ready.tolist(), strict=True)):
        b = max(0.0, b + arrived - replicas)
        limit = replicas * timeout_s
        if b > limit:
            shed[k] = b - limit
            b = limit
        backlog[k] = b
    return np.asarray(backlog), np.asarray(shed)


def prefill_p95(trace: Trace, cap: CapacityModel) -> float:
    prompts = trace.group_prompt_sample if trace.group_prompt_sample is not None else trace.group_prompt
    return float(np.percentile(prompts, 95)) * cap.prefill_seconds_per_token


def outcomes(
    trace: Trace,
    config: FleetConfig,
    work: np.ndarray,
    backlog: np.ndarray,
    shed: np.ndarray,
    capacity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group TTFT and latency of the admitted requests, SLO-met fraction (rejected requests
    included, as violations) and rejected fraction, from the FIFO fluid queue."""
    cap = config.capacity
    n = capacity.size
    ccum = np.concatenate([[0.0], np.cumsum(capacity)])
    prev_backlog = np.concatenate([[0.0], backlog[:-1]])
    t = trace.group_t
    sec = np.floor(t).astype(np.int64)
    frac = t - sec
    per_token = cap.decode_seconds_per_token(trace.mean_tokens_per_sequence())
    own = trace.group_weight * (
        trace.group_prompt * cap.prefill_seconds_per_token + trace.group_output * per_token
    )
    if trace.group_prompt_sample is None:
        exclusive = np.cumsum(own) - own
        first = np.searchsorted(t, sec.astype(float), side="left")
        before = exclusive - exclusive[first] + own / 2
    else:
        before = work[sec] / 2
    ahead = np.maximum(prev_backlog[sec] + before - capacity[sec] * frac, 0.0)
    # Rejected share of each second's arrivals; the admitted ones wait at most the timeout.
    rejected = np.divide(shed, work, out=np.zeros_like(shed), where=work > 0)[sec]
    if config.queue_timeout_s is not None:
        ahead = np.minimum(ahead, capacity[sec] * config.queue_timeout_s)
    start = ccum[sec] + capacity[sec] * frac
    target = start + ahead
    idx = np.searchsorted(ccum, target, side="left")
    finite = idx <= n
    j = np.clip(idx - 1, 0, n - 1)
    finish = j + (target - ccum[j]) / np.maximum(capacity[j], 1e-12)
    wait = np.where(finite, np.maximum(finish - t, 0.0), np.inf)
    wait = np.where((ahead <= 0) & (capacity[sec] > 0), 0.0, wait)
    prefill = trace.group_prompt * cap.prefill_seconds_per_token
    ttft = wait + prefill
    busy = np.minimum(1.0, (prev_backlog[sec] + work[sec]) / np.maximum(capacity[sec], 1e-12))
    batch = busy * cap.batch_limit(trace.mean_tokens_per_sequence())
    latency = (
        ttft
        + trace.group_output * cap.step_seconds(1.0)
        + trace.group_output * (cap.decode_per_seq_seconds * np.maximum(batch - 1.0, 0.0))
    )
    slo = config.slo_ttft_s
    if trace.group_prompt_sample is None:
        met = (ttft <= slo).astype(float)
    else:
        prefill_sample = trace.group_prompt_sample * cap.prefill_seconds_per_token
        met = np.searchsorted(prefill_sample, slo - wait, side="right") / prefill_sample.size
        met = np.where(np.isfinite(wait), met, 0.0)
    return ttft, latency, np.asarray(met * (1.0 - rejected), dtype=float), rejected
