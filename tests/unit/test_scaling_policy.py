"""Policy properties: bounds, monotonic in load, feedback at once, slow scale-down, no flapping."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.scaling.policy import Decision, PolicyConfig, PolicyInput, PolicyState, combined_rate, decide

CFG = PolicyConfig(min_replicas=2, max_replicas=40, capacity_rps=5.0, headroom=0.2)

loads = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)
queues = st.one_of(st.none(), st.floats(min_value=0.0, max_value=500.0, allow_nan=False))
ttfts = st.one_of(st.none(), st.floats(min_value=0.0, max_value=60.0, allow_nan=False))
floors = st.integers(min_value=0, max_value=60)


def inp(
    load: float, now: float = 0.0, queue: float | None = 0.0, ttft: float | None = 0.1, ready: int = 4
) -> PolicyInput:
    return PolicyInput(
        now=now,
        forecast_upper_rps=load,
        forecast_rps=load,
        ready=ready,
        observed_rps=load,
        queue_per_replica=queue,
        ttft_p95_s=ttft,
    )


@given(load=loads, queue=queues, ttft=ttfts, floor=floors, ready=st.integers(0, 60))
def test_always_within_min_and_max(
    load: float, queue: float | None, ttft: float | None, floor: int, ready: int
) -> None:
    decision, state = decide(
        CFG, inp(load, 1000.0, queue, ttft, ready), PolicyState(floor=floor, changed_at=0.0)
    )
    assert CFG.min_replicas <= decision.replicas <= CFG.max_replicas
    assert state.floor == decision.replicas
    assert decision.reason.startswith(f"floor {decision.replicas}")


@given(a=loads, b=loads, floor=floors)
def test_monotonic_in_load(a: float, b: float, floor: int) -> None:
    low, high = sorted((a, b))
    state = PolicyState(floor=floor, changed_at=0.0)
    assert (
        decide(CFG, inp(low, 5000.0), state)[0].replicas <= decide(CFG, inp(high, 5000.0), state)[0].replicas
    )


def test_forecast_converts_to_replicas_with_headroom() -> None:
    decision, _ = decide(CFG, inp(50.0), PolicyState())
    assert decision.replicas == 12  # 50 * 1.2 / 5
    assert decision.driver == "forecast"


def run(cfg: PolicyConfig, loads: list[float], interval: float = 60.0, **kw: float) -> list[Decision]:
    state, out = PolicyState(), []
    for i, load in enumerate(loads):
        decision, state = decide(cfg, inp(load, i * interval, **kw), state)  # type: ignore[arg-type]
        out.append(decision)
    return out


@settings(max_examples=50)
@given(load=st.floats(min_value=0.0, max_value=300.0, allow_nan=False), start=st.integers(0, 60))
def test_no_flapping_on_a_constant_load(load: float, start: int) -> None:
    state = PolicyState(floor=start, changed_at=0.0)
    floors = []
    for i in range(60):
        decision, state = decide(CFG, inp(load, 60.0 * (i + 1)), state)
        floors.append(decision.replicas)
    changes = [b - a for a, b in itertools.pairwise(floors) if b != a]
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes)  # one direction only
    assert floors[-1] == floors[-2]  # and it settles


def test_scale_up_at_once_scale_down_slowly() -> None:
    decisions = run(CFG, [20.0] * 3 + [150.0] + [20.0] * 20)
    floors = [d.replicas for d in decisions]
    assert floors[3] == 36  # up immediately: 150 * 1.2 / 5
    assert floors[4:8] == [36, 36, 36, 36]  # held while the peak is in the 300 s window
    drops = [a - b for a, b in itertools.pairwise(floors) if a > b]
    assert drops and floors[-1] == 5  # back down to 20 * 1.2 / 5 eventually
    assert any(d.driver == "hold" for d in decisions[4:8])


def test_small_dips_inside_the_tolerance_do_not_lower_the_floor() -> None:
    floors = [d.replicas for d in run(CFG, [50.0] + [47.0] * 20)]  # needs 12, then 11.28 -> 12
    assert set(floors) == {12}
    floors = [d.replicas for d in run(CFG, [50.0] + [45.0] * 20)]  # 10.8 -> 11 is within 10% of 12
    assert set(floors) == {12}


def test_queue_and_latency_breaches_raise_the_floor_at_once() -> None:
    """The forecast (10 req/s) missed a burst the fleet now sees (30 req/s)."""
    state = PolicyState(floor=4, changed_at=0.0)

    def with_feedback(queue: float, ttft: float) -> Decision:
        missed = PolicyInput(
            60.0, 10.0, 10.0, ready=4, observed_rps=30.0, queue_per_replica=queue, ttft_p95_s=ttft
        )
        return decide(CFG, missed, state)[0]

    calm = with_feedback(queue=2.0, ttft=0.1)  # no breach: the forecast rules, floor held
    assert (calm.replicas, calm.driver) == (4, "hold")
    # a breach adds 10% headroom (boost): 30 + 400 waiting / 60 s = 36.7 req/s * 1.3 / 5 -> 10
    queued = with_feedback(queue=100.0, ttft=0.1)
    assert (queued.replicas, queued.driver) == (10, "queue")
    slow = with_feedback(queue=0.0, ttft=3.0)  # 30 req/s * 1.3 / 5 = 7.8 -> 8
    assert (slow.replicas, slow.driver) == (8, "latency")
    assert "TTFT p95 3000 ms above SLO 1000 ms" in slow.reason
    assert "+10% after SLO breaches" in slow.reason


def test_rejections_raise_the_floor_to_the_demand_without_a_boost() -> None:
    """A balancer that fails fast keeps queue and TTFT low while it sheds: its rejections are the
    breach. 30 req/s arrive, 8 of them turned away; the forecast said 10."""
    state = PolicyState(floor=4, changed_at=0.0)

    def shedding(rejected: float) -> tuple[Decision, PolicyState]:
        return decide(
            CFG,
            PolicyInput(
                60.0, 10.0, 10.0, ready=4, observed_rps=30.0, queue_per_replica=0.5, rejected_rps=rejected
            ),
            state,
        )

    few, _ = shedding(0.1)  # 0.3% of the requests: within the tolerance, the forecast rules
    assert (few.replicas, few.driver) == (4, "hold")
    many, after = shedding(8.0)  # 30 req/s * 1.2 / 5 = 7.2 -> 8, no boost on top
    assert (many.replicas, many.driver) == (8, "rejections")
    assert after.boost == 0.0
    assert "balancer turning away 8 req/s (26.7%) of 30" in many.reason


def test_breach_boost_decays_on_calm_days() -> None:
    state = PolicyState(floor=4, changed_at=0.0)
    breach = PolicyInput(0.0, 10.0, 10.0, ready=4, observed_rps=10.0, queue_per_replica=50.0)
    _, state = decide(CFG, breach, state)
    assert state.boost == pytest.approx(0.1)
    calm = PolicyInput(3600.0, 10.0, 10.0, ready=4, observed_rps=10.0, queue_per_replica=0.0)
    _, later = decide(CFG, calm, state)
    assert later.boost == pytest.approx(0.05)  # one half-life
    for _ in range(20):
        _, state = decide(CFG, breach, state)
    assert state.boost == pytest.approx(CFG.max_boost)


def test_missing_metrics_are_not_breaches() -> None:
    decision, _ = decide(CFG, inp(10.0, queue=None, ttft=None), PolicyState())
    assert decision.driver in ("forecast", "min")


bursts = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)


@given(a=loads, b=loads, burst=bursts, floor=floors)
def test_monotonic_in_load_with_a_burst_factor(a: float, b: float, burst: float, floor: int) -> None:
    low, high = sorted((a, b))
    state = PolicyState(floor=floor, changed_at=0.0)

    def floor_for(load: float) -> int:
        bursty = replace(inp(load, 5000.0), forecast_rps=load * 0.8, burst_factor=burst)
        return decide(CFG, bursty, state)[0].replicas

    assert floor_for(low) <= floor_for(high)


@given(
    point=st.floats(min_value=0.0, max_value=1000.0, allow_nan=False),
    band=st.floats(min_value=1.0, max_value=3.0, allow_nan=False),
    burst=bursts,
)
def test_level_band_and_bursts_add_in_quadrature(point: float, band: float, burst: float) -> None:
    upper = point * band
    combined = combined_rate(upper, point, burst)
    assert max(upper, point * burst) - 1e-9 <= combined <= upper * burst + 1e-9


def test_burst_factor_raises_the_floor() -> None:
    decision, _ = decide(CFG, replace(inp(50.0), burst_factor=1.5), PolicyState())
    assert decision.replicas == 18  # 50 * 1.5 * 1.2 / 5
