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
  A rejected request counts as an SLO violation, and its client retries ``retries`` times,
  ``retry_delay_s`` apart (the balancer answers ``Retry-After: 1``; OpenAI's SDKs retry a 503
  twice by default). A retry that gets through is still late, so it only adds load: it takes
  capacity from the requests arriving with it, and the balancer counts it as demand. With
  ``retries_last`` the balancer queues retries behind first attempts (haproxy's
  ``set-priority-class`` on the ``x-stainless-retry-count`` header those SDKs send), so a
  retry only takes capacity that no new request wants, and is the first to be turned away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from llmfleet.sim.fleet import CapacityModel, FleetConfig
    from llmfleet.sim.traces import Trace


class Admission:
    """The balancer's decision, one second at a time: what it admits, what it turns away, and
    the retries that come back. For the simulator's loop and for :func:`queue`."""

    def __init__(
        self, n: int, timeout_s: float, retries: int = 0, retry_delay_s: int = 1, retries_last: bool = False
    ) -> None:
        self.timeout_s = timeout_s
        self.retries = retries
        self.retries_last = retries_last
        self.delay = max(1, retry_delay_s)
        size = n + self.delay * (retries + 1) + 1
        self.pending = [[0.0] * size for _ in range(retries)]  # [attempt - 1][second]: work retried
        self.incoming = [0.0] * n  # work arriving, retries included
        self.shed = [0.0] * n  # work turned away
        self.rejected = [0.0] * n  # share of each second's arrivals turned away

    def due(self, k: int) -> float:
        """Work of the retries that arrive in second ``k``."""
        return sum(attempt[k] for attempt in self.pending)

    def step(self, k: int, backlog: float, new_work: float, ready: int | float) -> float:
        """Second ``k``: ``new_work`` arrives at ``ready`` replicas; returns the new backlog."""
        retried = [attempt[k] for attempt in self.pending]
        retry_work = sum(retried)
        incoming = new_work + retry_work
        self.incoming[k] = incoming
        b = backlog + incoming - ready
        if b < 0.0:
            b = 0.0
        limit = ready * self.timeout_s
        if b > limit:
            shed = self.shed[k] = b - limit
            b = limit
            if self.retries_last:  # retries go first, then new requests
                retry_share = min(1.0, shed / retry_work) if retry_work > 0 else 0.0
                new_share = min(1.0, (shed - min(shed, retry_work)) / new_work) if new_work > 0 else 0.0
            else:
                retry_share = new_share = min(1.0, shed / incoming) if incoming > 0 else 0.0
            self.rejected[k] = new_share
            for attempt in range(self.retries):  # the last attempt's rejections give up
                source = new_work * new_share if attempt == 0 else retried[attempt - 1] * retry_share
                self.pending[attempt][k + self.delay] += source
        return b


def queue_state(
    backlog: np.ndarray, work: np.ndarray, admission: Admission | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`outcomes` reads: the backlog, the share of each second's arrivals turned away,
    and the work arriving each second (``work`` plus retries). No admission: a FIFO queue."""
    if admission is None:
        return backlog, np.zeros_like(work), work
    return backlog, np.asarray(admission.rejected), np.asarray(admission.incoming)


def queue(
    work: np.ndarray,
    ready: np.ndarray,
    timeout_s: float | None,
    retries: int = 0,
    retry_delay_s: int = 1,
    retries_last: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backlog (replica-seconds waiting at the end of each second), the share of each second's
    arrivals turned away, and the work arriving (retries included), for ``work`` arriving new
    and ``ready`` replicas serving one replica-second per second."""
    if timeout_s is None:
        # Lindley vectorised: backlog_k = S_k - min(0, min_{j<=k} S_j), S the cumulative net work.
        cumulative = np.cumsum(work - ready)
        return queue_state(cumulative - np.minimum(np.minimum.accumulate(cumulative), 0.0), work, None)
    admission = Admission(work.size, timeout_s, retries, retry_delay_s, retries_last)
    backlog_s = [0.0] * work.size
    b = 0.0
    for k, (arrived, replicas) in enumerate(zip(work.tolist(), ready.tolist(), strict=True)):
        b = admission.step(k, b, arrived, replicas)
        backlog_s[k] = b
    return queue_state(np.asarray(backlog_s), work, admission)


def prefill_p95(trace: Trace, cap: CapacityModel) -> float:
    prompts = trace.group_prompt_sample if trace.group_prompt_sample is not None else trace.group_prompt
    return float(np.percentile(prompts, 95)) * cap.prefill_seconds_per_token


def outcomes(
    trace: Trace,
    config: FleetConfig,
    work: np.ndarray,
    backlog: np.ndarray,
    rejected_share: np.ndarray,
    capacity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group TTFT and latency of the admitted requests, SLO-met fraction (rejected requests
    included, as violations) and rejected fraction, from the FIFO fluid queue. ``work`` is what
    arrived each second, retries included; ``rejected_share`` the share of it turned away."""
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
    # A request turned away on its first attempt is late whatever its retries get; the admitted
    # ones wait at most the timeout.
    rejected = rejected_share[sec]
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
