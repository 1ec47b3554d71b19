"""The Kubernetes HorizontalPodAutoscaler, as kube-controller-manager computes it, in pure Python.

The reactive baseline the predictive scaler is measured against has to be the real thing,
not a caricature, so this follows ``pkg/controller/podautoscaler`` (horizontal.go and
replica_calculator.go) for one ``Pods`` metric (queue depth per pod, ``AverageValue``):

* ``calcPlainMetricReplicas``: usage ratio = mean over pods with metrics / target; within the
  tolerance (10%) nothing changes; otherwise ``ceil(ratio * readyPods)``. Pending pods are
  *unready* and ignored; running pods without metrics (a vLLM pod still loading its model) are
  *missing*. On a scale-up missing and unready pods count as 0, on a scale-down missing pods
  count as the target; the ratio is then recomputed, and a recomputed ratio that crosses 1 or
  a result that reverses direction means "no change".
* ``reconcileAutoscaler``: current above max -> max, below min -> min (no stabilisation);
  no pod with metrics -> no change (the HPA reports ScalingActive=False).
* ``stabilizeRecommendationWithBehaviors``: the recommendation is clamped between the min of
  the recommendations within the scale-up window and the max within the scale-down window;
  the raw (unstabilised) recommendation is what gets recorded.
* ``convertDesiredReplicasWithBehaviorRate``: each policy allows ``Pods`` or ``Percent``
  change relative to the replica count at the start of its period (replicas added/removed in
  the period are undone); ``selectPolicy`` Max takes the most permissive, Min the least,
  Disabled forbids the direction. Percent rounds up on scale-up and down (truncation) on
  scale-down, as in Go.

State (recommendations, scale events) is an immutable value passed in and returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

SYNC_PERIOD_S = 15
TOLERANCE = 0.1


@dataclass(frozen=True)
class Policy:
    type: Literal["Pods", "Percent"]
    value: int
    period_s: int


@dataclass(frozen=True)
class Rules:
    stabilization_window_s: int
    policies: tuple[Policy, ...]
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"


DEFAULT_SCALE_UP = Rules(0, (Policy("Percent", 100, 15), Policy("Pods", 4, 15)))
DEFAULT_SCALE_DOWN = Rules(300, (Policy("Percent", 100, 15),))


@dataclass(frozen=True)
class HPASpec:
    min_replicas: int
    max_replicas: int
    target_average_value: float
    scale_up: Rules = DEFAULT_SCALE_UP
    scale_down: Rules = DEFAULT_SCALE_DOWN
    tolerance: float = TOLERANCE

    @classmethod
    def from_llmservice(
        cls,
        *,
        min_replicas: int,
        max_replicas: int,
        target_queue_depth: float,
        up_window_s: int = 0,
        pods_per_minute: int = 4,
        down_window_s: int = 600,
        percent_per_minute: int = 25,
    ) -> HPASpec:
        """The HPA the operator renders from ``spec.autoscaling`` (one policy per direction)."""
        return cls(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_average_value=target_queue_depth,
            scale_up=Rules(up_window_s, (Policy("Pods", pods_per_minute, 60),)),
            scale_down=Rules(down_window_s, (Policy("Percent", percent_per_minute, 60),)),
        )


@dataclass(frozen=True)
class PodMetrics:
    """The metric as the HPA sees it: values of ready pods, plus pods without a usable value."""

    total: float  # sum of the metric over pods that report it
    reporting: int  # pods that report it (and are not pending)
    unready: int = 0  # pending pods
    missing: int = 0  # running pods that report nothing yet


@dataclass(frozen=True)
class HPAState:
    started: bool = False  # the controller seeds the scale-down window with the current replicas
    recommendations: tuple[tuple[float, int], ...] = ()
    up_events: tuple[tuple[float, int], ...] = ()
    down_events: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class HPADecision:
    replicas: int
    metric_replicas: int | None
    reason: str
    state: HPAState = field(repr=False)


def metric_replicas(
    current: int, pods: PodMetrics, target: float, tolerance: float = TOLERANCE
) -> int | None:
    """``calcPlainMetricReplicas``; None when no pod reports the metric."""
    if pods.reporting == 0:
        return None
    ratio = pods.total / (pods.reporting * target)
    scale_up_with_unready = pods.unready > 0 and ratio > 1.0
    if not scale_up_with_unready and pods.missing == 0:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * pods.reporting)
    total, counted = pods.total, pods.reporting
    if pods.missing:
        total += pods.missing * (target if ratio < 1.0 else 0.0)
        counted += pods.missing
    if scale_up_with_unready:
        counted += pods.unready
    new_ratio = total / (counted * target)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    new = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
        return current
    return new


def _change_in_period(events: tuple[tuple[float, int], ...], now: float, period_s: int) -> int:
    return sum(change for t, change in events if t > now - period_s)


def _replicas_at_period_start(current: int, state: HPAState, now: float, period_s: int) -> int:
    """Replicas at the start of a policy's period: the base its limit applies to (as the controller)."""
    return (
        current
        - _change_in_period(state.up_events, now, period_s)
        + _change_in_period(state.down_events, now, period_s)
    )


def scale_up_limit(current: int, state: HPAState, now: float, rules: Rules) -> int:
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _replicas_at_period_start(current, state, now, policy.period_s)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(current: int, state: HPAState, now: float, rules: Rules) -> int:
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _replicas_at_period_start(current, state, now, policy.period_s)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def step(spec: HPASpec, state: HPAState, now: float, current: int, pods: PodMetrics) -> HPADecision:
    """One HPA sync: the replicas to set on the scale target and the new controller state."""
    if current > spec.max_replicas:
        return HPADecision(
            spec.max_replicas, None, "AboveMax", _record_event(spec, state, now, current, spec.max_replicas)
        )
    if current < spec.min_replicas:
        return HPADecision(
            spec.min_replicas, None, "BelowMin", _record_event(spec, state, now, current, spec.min_replicas)
        )
    if not state.started:  # maybeInitScaleDownStabilizationWindow
        state = replace(state, started=True, recommendations=((now, current),))
    wanted = metric_replicas(current, pods, spec.target_average_value, spec.tolerance)
    if wanted is None:
        return HPADecision(current, None, "FailedGetPodsMetric", state)
    # stabilizeRecommendationWithBehaviors
    up_cut = now - spec.scale_up.stabilization_window_s
    down_cut = now - spec.scale_down.stabilization_window_s
    up_rec, down_rec = wanted, wanted
    kept = []
    for sample in state.recommendations:
        t, rec = sample
        if t > up_cut:
            if rec < up_rec:
                up_rec = rec
            kept.append(sample)
            if t > down_cut and rec > down_rec:
                down_rec = rec
        elif t > down_cut:
            if rec > down_rec:
                down_rec = rec
            kept.append(sample)
    stabilized = min(max(current, up_rec), down_rec)
    state = replace(state, recommendations=(*kept, (now, wanted)))
    # convertDesiredReplicasWithBehaviorRate
    desired, reason = stabilized, "DesiredWithinRange"
    if stabilized > current:
        limit = max(scale_up_limit(current, state, now, spec.scale_up), current)
        allowed = min(spec.max_replicas, limit)
        if stabilized > allowed:
            desired = allowed
            reason = "ScaleUpLimit" if limit < spec.max_replicas else "TooManyReplicas"
    elif stabilized < current:
        limit = min(scale_down_limit(current, state, now, spec.scale_down), current)
        allowed = max(spec.min_replicas, limit)
        if stabilized < allowed:
            desired = allowed
            reason = "ScaleDownLimit" if limit > spec.min_replicas else "TooFewReplicas"
    return HPADecision(desired, wanted, reason, _record_event(spec, state, now, current, desired))


def _record_event(spec: HPASpec, state: HPAState, now: float, current: int, desired: int) -> HPAState:
    """``storeScaleEvent``: remember the change, forgetting events older than every policy period."""
    if desired == current:
        return state
    longest = max([p.period_s for p in spec.scale_up.policies + spec.scale_down.policies] or [0])
    up = tuple(e for e in state.up_events if e[0] > now - longest)
    down = tuple(e for e in state.down_events if e[0] > now - longest)
    if desired > current:
        up = (*up, (now, desired - current))
    else:
        down = (*down, (now, current - desired))
    return replace(state, up_events=up, down_events=down)
