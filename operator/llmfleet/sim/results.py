"""What one simulated run produced, and the measures the benchmark reads off it.

Kept apart from the simulator so that the result (per-request-group outcomes, replicas per
second, scaling events) and its measures (SLO attainment, GPU-hours, TTFT quantiles, the
per-minute timeline the plots draw) can be read without the simulation loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SimResult:
    scaler: str
    ttft_s: np.ndarray
    latency_s: np.ndarray
    weight: np.ndarray
    slo_met: np.ndarray  # fraction of each group's requests within the TTFT SLO
    ready: np.ndarray
    starting: np.ndarray
    queue_requests: np.ndarray
    count: np.ndarray
    events: list[tuple[int, int]]
    slo_ttft_s: float
    arrival_s: np.ndarray  # arrival time of each request group
    warmup_s: int = 0
    rejected: np.ndarray | None = None  # fraction of each group the balancer turned away

    @property
    def scored(self) -> np.ndarray:
        """Groups arriving after the warm-up: the ones the SLO attainment counts."""
        return np.asarray(self.arrival_s >= self.warmup_s)

    @property
    def requests(self) -> float:
        return float(self.weight[self.scored].sum())

    @property
    def violated(self) -> float:
        keep = self.scored
        return float((self.weight[keep] * (1.0 - self.slo_met[keep])).sum())

    @property
    def unserved(self) -> float:
        """Requests never served: still queued at the end, or rejected by the balancer."""
        keep = self.scored
        stuck = float(self.weight[~np.isfinite(self.ttft_s) & keep].sum())
        if self.rejected is None:
            return stuck
        return stuck + float((self.weight * self.rejected)[np.isfinite(self.ttft_s) & keep].sum())

    @property
    def rejected_requests(self) -> float:
        if self.rejected is None:
            return 0.0
        return float((self.weight * self.rejected)[self.scored].sum())

    @property
    def slo_attainment(self) -> float:
        return 1.0 - self.violated / max(self.requests, 1e-12)

    @property
    def gpu_hours(self) -> float:
        w = self.warmup_s
        return float(self.ready[w:].sum() + self.starting[w:].sum()) / 3600.0

    @property
    def scaling_events(self) -> int:
        return len(self.events)

    def ttft_quantile(self, q: float) -> float:
        """TTFT quantile of the requests served (rejected ones have none)."""
        weight = self.weight if self.rejected is None else self.weight * (1.0 - self.rejected)
        ttft, weight = self.ttft_s[self.scored], weight[self.scored]
        if ttft.size == 0:
            return 0.0
        order = np.argsort(ttft)
        cum = np.cumsum(weight[order])
        i = int(np.searchsorted(cum, q * cum[-1]))
        return float(ttft[order][min(i, order.size - 1)])

    def timeline(self, step_s: int = 60) -> dict[str, np.ndarray]:
        """Per-step load (req/s), mean ready and total replicas, violated requests."""
        n = self.ready.size // step_s * step_s

        def per_step(x: np.ndarray) -> np.ndarray:
            return np.asarray(x[:n].reshape(-1, step_s).mean(axis=1))

        sec = np.minimum(np.floor(self.arrival_s).astype(np.int64), self.ready.size - 1)
        viol = np.bincount(sec, weights=self.weight * (1 - self.slo_met), minlength=self.ready.size)
        return {
            "t_s": np.arange(n // step_s) * float(step_s),
            "load_rps": per_step(self.count),
            "ready": per_step(self.ready.astype(float)),
            "total": per_step((self.ready + self.starting).astype(float)),
            "violations": per_step(viol) * step_s,
        }
