"""The operator's side of predictive scaling: when to ask, where to ask, what to remember.

``llmfleet.scaling.live.recommend`` decides the floor (pure); ``scaling.metrics.fetch`` reads
Prometheus. This adapter runs them at most once per ``predictive.intervalSeconds`` per
LLMService, keeps the recommender's state in memory between calls (losing it on a restart is
safe: the recommender starts from the spec's minimum and the HPA still scales up on queue
depth), and turns the answer into what the reconcile consumes: the floor for the HPA's
``minReplicas``, ``status.predictive`` and the ``PredictiveScaling`` condition. Between two
recommendations it returns the last one unchanged, so status is not rewritten on every pass.

It blocks on HTTP; the reconcile calls it from a worker thread, never from the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmfleet.api import ConditionType, LLMService, PredictiveStatus
from llmfleet.status import FALSE, TRUE, Cond, PredictiveOutcome

logger = logging.getLogger(__name__)

NOT_CONFIGURED = "PrometheusNotConfigured"

Fetch = Callable[[str, LLMService, float], Any]  # (prometheus url, service, now) -> FleetMetrics


def fetch_from_prometheus(url: str, service: LLMService, now: float) -> Any:
    """The fleet's signals from Prometheus (raises ``MetricsUnavailable``)."""
    from llmfleet.scaling.metrics import connect, fetch, selector

    client = connect(url)
    return fetch(
        client,
        str(service.spec.engine.kind),
        selector(service.namespace, f"{service.name}-model"),
        now=now,
        demand_sources=demand_sources(service),
    )


def demand_sources(service: LLMService) -> list[tuple[str, str]]:
    """Where the fleet's demand is counted, closest to the engines first, with the label
    selector of those pods: the balancer, then the caching gateway in front of it."""
    from llmfleet.scaling.metrics import pod_selector

    spec, ns, name = service.spec, service.namespace, service.name
    sources = [(str(spec.load_balancer.engine), pod_selector(ns, name, "lb"))]
    if spec.cache.enabled:
        sources.append(("gateway", pod_selector(ns, name, "gateway")))
    return sources


@dataclass
class _Memory:
    at: float
    state: Any  # scaling.live.LiveState
    outcome: PredictiveOutcome


class LivePredictor:
    """A ``reconcile.Predictor`` backed by ``scaling.live.recommend``."""

    def __init__(
        self,
        default_prometheus_url: str | None = None,
        *,
        fetch: Fetch = fetch_from_prometheus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_prometheus_url = default_prometheus_url
        self._fetch = fetch
        self._clock = clock
        self._memory: dict[tuple[str, str, str], _Memory] = {}
        self._lock = threading.Lock()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._memory if k[:2] == (namespace, name)]:
                del self._memory[key]

    def __call__(
        self, service: LLMService, previous: dict[str, Any] | None, ready: int
    ) -> PredictiveOutcome | None:
        from llmfleet.scaling.live import LiveState, recommend

        predictive = service.spec.autoscaling.predictive
        key = (service.namespace, service.name, str(service.metadata.get("uid", "")))
        now = self._clock()
        with self._lock:
            memory = self._memory.get(key)
        if memory is not None and now - memory.at < predictive.interval_seconds:
            return memory.outcome
        url = predictive.prometheus_url or self.default_prometheus_url
        state = memory.state if memory is not None else _state_from_status(previous, LiveState)
        if url is None:
            outcome = PredictiveOutcome(
                floor=state.floor if state is not None else None,
                status=None,
                condition=Cond(
                    ConditionType.PREDICTIVE_SCALING,
                    FALSE,
                    NOT_CONFIGURED,
                    "No Prometheus to read: set autoscaling.predictive.prometheusUrl or start the operator with --prometheus-url.",
                ),
            )
            with self._lock:
                self._memory[key] = _Memory(now, state, outcome)
            return outcome
        try:
            metrics: Any = self._fetch(url, service, now)
        except Exception as error:  # recommend() turns it into "holding the floor: Prometheus ..."
            logger.info(
                "predictive metrics for %s/%s unavailable: %s", service.namespace, service.name, error
            )
            metrics = error
        rec = recommend(service.spec, metrics, state, now, ready)
        outcome = PredictiveOutcome(
            floor=rec.replicas,
            status=PredictiveStatus(
                forecast_requests_per_second=round(max(rec.forecast_rps, 0.0), 3),
                recommended_replicas=rec.replicas,
                reason=rec.reason[:1024],
                updated_at=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            ),
            condition=Cond(
                ConditionType.PREDICTIVE_SCALING,
                TRUE if rec.healthy else FALSE,
                rec.condition_reason,
                rec.reason,
            ),
        )
        with self._lock:
            self._memory[key] = _Memory(now, rec.state, outcome)
        return outcome


def _state_from_status(previous: dict[str, Any] | None, live_state: Any) -> Any:
    """After a restart, start from the floor the last recommendation set (it was safe then)."""
    floor = int((previous or {}).get("recommendedReplicas") or 0)
    return live_state(floor=floor) if floor else None
