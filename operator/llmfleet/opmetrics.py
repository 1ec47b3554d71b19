"""Prometheus metrics of the operator itself (not of the fleets it runs).

An admin asks three things of an operator: is it reconciling, how long does a pass take, and
what fails. ``reconciles_total{trigger,result}``, ``reconcile_duration_seconds{trigger}`` and
``errors_total{kind}`` answer them; ``writes_total{action}`` shows that a quiet cluster costs
the API server nothing. They live in the default registry, so ``/metrics`` also carries the
process collectors (CPU, memory, open file descriptors).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import prometheus_client
from prometheus_client import Counter, Histogram

PREFIX = "llmfleet_operator"

RECONCILES = Counter(
    f"{PREFIX}_reconciles",
    "Reconcile passes by trigger (create, resume, update, timer, child) and result (ok, retry, invalid, error, gone).",
    ["trigger", "result"],
)
DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Wall time of one reconcile pass, API calls included.",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = Counter(
    f"{PREFIX}_errors",
    "Failed passes by kind: conflict, throttled, server, timeout (retried); rejected, invalid (permanent); unexpected.",
    ["kind"],
)
WRITES = Counter(
    f"{PREFIX}_writes",
    "Writes sent to the API server by action: apply, delete, create_secret, status, event.",
    ["action"],
)


@contextmanager
def track(trigger: str) -> Iterator[None]:
    """Time one pass; the caller records its result with :func:`finished`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        DURATION.labels(trigger).observe(time.perf_counter() - start)


def finished(trigger: str, result: str, error_kind: str | None = None) -> None:
    RECONCILES.labels(trigger, result).inc()
    if error_kind is not None:
        ERRORS.labels(error_kind).inc()


def reconcile_count(trigger: str | None = None) -> float:
    """Passes finished so far (all results), for one trigger or all of them."""
    total = 0.0
    for metric in RECONCILES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and (trigger is None or sample.labels["trigger"] == trigger):
                total += sample.value
    return total


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose /metrics on ``host:port`` from a daemon thread."""
    prometheus_client.start_http_server(port, addr=host)
