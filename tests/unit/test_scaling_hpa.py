"""The HPA model against hand-computed kube-controller-manager behaviour (replica_calculator.go,
horizontal.go): usage ratio and tolerance, missing/unready pods, stabilisation windows,
rate policies with selectPolicy, min/max."""

from __future__ import annotations

import pytest

from llmfleet.scaling import hpa
from llmfleet.scaling.hpa import HPASpec, HPAState, PodMetrics, Policy, Rules, metric_replicas, step


@pytest.mark.parametrize(
    ("current", "pods", "expected"),
    [
        # 4 pods averaging 10 against 8: ratio 1.25 -> ceil(1.25 * 4) = 5
        (4, PodMetrics(total=40, reporting=4), 5),
        # ratio 1.0625 is inside the 10% tolerance: no change
        (4, PodMetrics(total=34, reporting=4), 4),
        # ratio 0.25 -> ceil(0.25 * 4) = 1
        (4, PodMetrics(total=8, reporting=4), 1),
        # scale-up, one missing pod counted as 0: 30 / (4 * 8) = 0.94 < 1 reverses direction -> hold
        (4, PodMetrics(total=30, reporting=3, missing=1), 4),
        # scale-up, missing as 0: 48 / 32 = 1.5 -> ceil(1.5 * 4) = 6
        (4, PodMetrics(total=48, reporting=3, missing=1), 6),
        # scale-down, missing counted at the target: (6 + 8) / 32 = 0.4375 -> ceil(1.75) = 2
        (4, PodMetrics(total=6, reporting=3, missing=1), 2),
        # scale-up with 2 pending pods counted as 0: 32 / 32 = 1.0 -> within tolerance, hold
        (4, PodMetrics(total=32, reporting=2, unready=2), 4),
        # scale-down ignores pending pods: 4 / (2 * 8) = 0.25 -> ceil(0.5) = 1
        (4, PodMetrics(total=4, reporting=2, unready=2), 1),
        # scale-up with 1 pending pod: 64 / (3 * 8) = 2.67 -> ceil(2.67 * 3) = 8
        (3, PodMetrics(total=64, reporting=2, unready=1), 8),
    ],
)
def test_metric_replicas(current: int, pods: PodMetrics, expected: int) -> None:
    assert metric_replicas(current, pods, target=8.0) == expected


def test_no_pod_reports_the_metric_means_no_recommendation() -> None:
    assert metric_replicas(3, PodMetrics(total=0, reporting=0, missing=3), target=8.0) is None
    spec = HPASpec(min_replicas=1, max_replicas=10, target_average_value=8)
    decision = step(spec, HPAState(), 0.0, 3, PodMetrics(total=0, reporting=0, missing=3))
    assert (decision.replicas, decision.reason) == (3, "FailedGetPodsMetric")


def run(spec: HPASpec, current: int, per_pod: float, times: list[float]) -> list[int]:
    """Sync at each time with every ready pod reporting ``per_pod``; returns replicas set."""
    state, out = HPAState(), []
    for now in times:
        decision = step(spec, state, now, current, PodMetrics(total=per_pod * current, reporting=current))
        state, current = decision.state, decision.replicas
        out.append(current)
    return out


def test_scale_down_waits_for_the_stabilization_window_then_100_percent_per_15s() -> None:
    # Defaults: scale-down window 300 s, Percent 100 per 15 s. Seeded with current (5) at t=0.
    spec = HPASpec(min_replicas=1, max_replicas=10, target_average_value=8)
    times = [float(t) for t in range(0, 316, 15)]
    replicas = run(spec, 5, per_pod=3.2, times=times)  # wants ceil(0.4 * 5) = 2
    assert replicas[times.index(285.0)] == 5  # the t=0 samples (5) are still in the window
    assert replicas[times.index(300.0)] == 2  # window (0, 300]: only the 2s are left


def test_scale_up_pods_per_minute_policy_counts_earlier_events() -> None:
    spec = HPASpec.from_llmservice(min_replicas=1, max_replicas=50, target_queue_depth=1)
    replicas = run(spec, 2, per_pod=10.0, times=[0.0, 15.0, 30.0, 45.0, 60.0])
    # +4 per 60 s relative to the replicas at the start of the period
    assert replicas == [6, 6, 6, 6, 10]


def test_scale_down_percent_per_minute_truncates() -> None:
    spec = HPASpec.from_llmservice(min_replicas=1, max_replicas=50, target_queue_depth=8, down_window_s=0)
    replicas = run(spec, 8, per_pod=0.0, times=[0.0, 15.0, 60.0, 120.0])
    # int(8 * 0.75) = 6, held within the minute, then int(6 * 0.75) = 4, int(4 * 0.75) = 3
    assert replicas == [6, 6, 4, 3]


@pytest.mark.parametrize(("select", "expected"), [("Max", 20), ("Min", 14), ("Disabled", 10)])
def test_select_policy(select: str, expected: int) -> None:
    rules = Rules(0, (Policy("Percent", 100, 15), Policy("Pods", 4, 15)), select)  # type: ignore[arg-type]
    spec = HPASpec(min_replicas=1, max_replicas=100, target_average_value=1, scale_up=rules)
    decision = step(spec, HPAState(), 0.0, 10, PodMetrics(total=300, reporting=10))
    assert decision.replicas == expected


def test_scale_up_stabilization_takes_the_lowest_recent_recommendation() -> None:
    rules = Rules(60, (Policy("Percent", 100, 15),))
    spec = HPASpec(min_replicas=1, max_replicas=100, target_average_value=1, scale_up=rules)
    state = HPAState()
    d1 = step(spec, state, 0.0, 4, PodMetrics(total=4, reporting=4))  # wants 4
    d2 = step(spec, d1.state, 15.0, 4, PodMetrics(total=32, reporting=4))  # wants 32, window min 4
    assert (d1.replicas, d2.replicas) == (4, 4)
    d3 = step(spec, d2.state, 75.0, 4, PodMetrics(total=32, reporting=4))  # the 4 left the window
    assert d3.replicas == 8  # 32 wanted, Percent 100 per 15 s


def test_min_and_max_override_everything() -> None:
    spec = HPASpec(min_replicas=3, max_replicas=6, target_average_value=8)
    assert step(spec, HPAState(), 0.0, 1, PodMetrics(total=0, reporting=1)).replicas == 3
    assert step(spec, HPAState(), 0.0, 9, PodMetrics(total=900, reporting=9)).replicas == 6
    # within bounds, the recommendation is clamped to max with reason TooManyReplicas
    decision = step(spec, HPAState(), 0.0, 5, PodMetrics(total=400, reporting=5))
    assert (decision.replicas, decision.reason) == (6, "TooManyReplicas")


def test_sync_period_and_tolerance_are_the_controller_defaults() -> None:
    assert hpa.SYNC_PERIOD_S == 15
    assert hpa.TOLERANCE == 0.1
