"""Fleet simulator: conservation, capacity, startup delay, the oracle fast path, trace loaders."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llmfleet.sim.fleet import CapacityModel, FleetConfig, Observation, simulate
from llmfleet.sim.scalers import OracleScaler, PresentScaler, ScalerSettings, make_scaler
from llmfleet.sim.traces import Trace, discover, load_azure, load_servegen, load_trace, servegen_windows

CAP = CapacityModel()


def synthetic(rates: np.ndarray, prompt: float = 1000.0, output: float = 200.0) -> Trace:
    """One request group per second with ``rates[k]`` requests of fixed lengths."""
    seconds = rates.size
    nz = rates > 0
    return Trace(
        name="synthetic",
        count=rates.astype(float),
        prompt_tokens=rates * prompt,
        output_tokens=rates * output,
        group_t=np.arange(seconds, dtype=float)[nz] + 0.5,
        group_weight=rates[nz].astype(float),
        group_prompt=np.full(int(nz.sum()), prompt),
        group_output=np.full(int(nz.sum()), output),
    )


class Fixed:
    """Asks for ``replicas`` at every sync; records what it saw."""

    name = "fixed"
    period_s = 15

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.seen: list[Observation] = []

    def decide(self, obs: Observation) -> int:
        self.seen.append(obs)
        return self.replicas


def test_every_request_is_served_or_counted_as_violated_under_overload() -> None:
    rates = np.concatenate([np.full(600, 5.0), np.full(600, 80.0), np.full(1200, 5.0)])
    trace = synthetic(rates)
    config = FleetConfig(startup_delay_s=300, initial_replicas=2, drain_s=60, warmup_s=0)
    result = simulate(trace, Fixed(2), config)
    total = trace.count.sum()
    assert result.requests == pytest.approx(total)
    met = float((result.weight * result.slo_met).sum())
    assert met + result.violated == pytest.approx(total)
    assert result.unserved > 0  # the overload left a backlog the drain tail could not clear
    served = result.weight[np.isfinite(result.ttft_s)].sum()
    assert served + result.unserved == pytest.approx(total)
    assert 0.0 < result.slo_attainment < 1.0


def test_failing_fast_turns_away_the_excess_instead_of_making_everyone_late() -> None:
    # 2 replicas serve ~12 req/s; for 10 minutes 18 req/s arrive, a third more than they can take.
    rates = np.concatenate([np.full(600, 5.0), np.full(600, 18.0), np.full(1200, 5.0)])
    trace = synthetic(rates)
    fifo_config = FleetConfig(initial_replicas=2, drain_s=60, warmup_s=0)
    fifo = simulate(trace, Fixed(2), fifo_config)
    watcher = Fixed(2)
    fast = simulate(trace, watcher, replace(fifo_config, queue_timeout_s=0.5, retries=0))
    total = trace.count.sum()
    served = float((fast.weight * (1 - fast.rejected)).sum())  # type: ignore[operator]
    assert served + fast.rejected_requests == pytest.approx(total)
    assert fast.unserved == pytest.approx(fast.rejected_requests)
    met = float((fast.weight * fast.slo_met).sum())
    assert met + fast.violated == pytest.approx(total)
    capacity_rps = 2 / (trace.work(CAP)[0] / 5)
    excess = 600 * (18 - capacity_rps)
    assert fast.rejected_requests == pytest.approx(excess, rel=0.05)  # only the excess is turned away
    admitted = fast.rejected < 1  # type: ignore[operator]
    assert fast.ttft_s[admitted].max() <= 0.5 + 1000 * CAP.prefill_seconds_per_token + 1e-9
    # the scalers see the rejections (lagged, over the rate window) and the demand, not just what was served
    during = next(o for o in watcher.seen if o.now == 1050)
    assert during.rejected_rate == pytest.approx(18 - capacity_rps, rel=0.05)
    assert during.request_rate == pytest.approx(18.0)
    assert all(o.rejected_rate == 0.0 for o in watcher.seen if o.now < 600)
    # the balancer holds the queue (each replica capped at its batch): the engines' gauges, all an
    # HPA gets, show a full batch and nothing waiting
    assert during.queue_per_replica == 0.0 and during.balancer_queue_per_replica > 0.0
    assert during.inflight_per_replica == pytest.approx(CAP.batch_limit(1200))
    # FIFO: the backlog makes every request of the overload and its drain late.
    assert fifo.violated > 2 * fast.violated
    assert fifo.rejected_requests == 0.0


def test_retries_of_rejected_requests_take_capacity_from_new_ones() -> None:
    rates = np.concatenate([np.full(600, 5.0), np.full(600, 18.0), np.full(1200, 5.0)])
    trace = synthetic(rates)
    config = FleetConfig(initial_replicas=2, drain_s=60, warmup_s=0, queue_timeout_s=0.5)
    once = simulate(trace, Fixed(2), replace(config, retries=0))
    watcher = Fixed(2)
    retried = simulate(trace, watcher, replace(config, retries=2, retry_delay_s=1, retries_last=False))
    total = trace.count.sum()
    met = float((retried.weight * retried.slo_met).sum())
    assert met + retried.violated == pytest.approx(total)  # each request counted once
    # late retries take slots new requests needed: more new requests are turned away ...
    assert retried.rejected_requests > 1.5 * once.rejected_requests
    # ... but the retried ones add at most two attempts each
    assert retried.count.sum() - total < 2 * retried.rejected_requests
    assert retried.count.sum() > total
    # the balancer counts the retries as requests received: the scalers see the inflated demand
    during = next(o for o in watcher.seen if o.now == 1050)
    assert during.request_rate > 20.0
    assert all(o.request_rate == pytest.approx(5.0) for o in watcher.seen if 60 < o.now < 600)
    # queued behind first attempts, retries only take capacity no new request wants
    behind = simulate(trace, Fixed(2), replace(config, retries=2, retries_last=True))
    assert behind.rejected_requests == pytest.approx(once.rejected_requests, rel=0.02)
    assert behind.count.sum() > total  # they are still sent, and counted by the balancer
    # the vectorised plan path queues the same way
    config = replace(config, retries_last=False)
    oracle = OracleScaler(trace, config, utilisation=1.3)
    assert simulate(trace, oracle, config).rejected_requests > 0

    class Loop:
        name, period_s = "oracle", 15

        def decide(self, obs: Observation) -> int:
            return oracle.decide(obs)

    fast_path, loop = simulate(trace, oracle, config), simulate(trace, Loop(), config)
    assert fast_path.rejected_requests == pytest.approx(loop.rejected_requests)
    assert fast_path.count == pytest.approx(loop.count)


def test_ample_capacity_gives_prefill_only_ttft_and_full_attainment() -> None:
    trace = synthetic(np.full(900, 10.0))
    config = FleetConfig(initial_replicas=20, warmup_s=0)
    result = simulate(trace, Fixed(20), config)
    assert result.slo_attainment == 1.0
    assert np.allclose(result.ttft_s, 1000 * CAP.prefill_seconds_per_token)
    assert result.gpu_hours == pytest.approx(20 * (900 + config.drain_s) / 3600)


def test_cost_model_matches_the_engine_step_model() -> None:
    # 1000 + 200 tokens per sequence: the KV cache holds 109 of them; a full step is 15 + 0.2*109 ms
    batch = CAP.batch_limit(1200)
    assert batch == 131072 // 1200
    per_token = (0.015 + 0.0002 * batch) / batch
    trace = synthetic(np.full(10, 3.0))
    assert trace.work(CAP)[0] == pytest.approx(3 * (1000 * 0.0001 + 200 * per_token))


def test_pending_replicas_cost_gpu_time_but_serve_nothing() -> None:
    rates = np.full(1200, 20.0)
    trace = synthetic(rates)
    config = FleetConfig(startup_delay_s=300, initial_replicas=1, drain_s=0, warmup_s=0)
    result = simulate(trace, Fixed(6), config)
    assert (result.ready[:300] == 1).all() and (result.ready[300:] == 6).all()
    assert (result.starting[:300] == 5).all() and (result.starting[300:] == 0).all()
    assert result.gpu_hours == pytest.approx(6 * 1200 / 3600)
    early = result.slo_met[result.arrival_s < 300].mean()
    late = result.slo_met[result.arrival_s > 900].mean()
    assert early < 0.5 and late == 1.0  # one replica cannot serve 20 req/s; six can, once ready


def test_scalers_see_lagged_metrics() -> None:
    rates = np.concatenate([np.full(300, 1.0), np.full(300, 50.0)])
    scaler = Fixed(1)
    simulate(synthetic(rates), scaler, FleetConfig(metric_lag_s=30, initial_replicas=1, warmup_s=0))
    at = {obs.now: obs for obs in scaler.seen}
    assert at[315].request_rate == pytest.approx(1.0)  # data up to t=285
    assert at[390].request_rate == pytest.approx(50.0)  # window (300, 360]
    assert at[390].queue_per_replica > 0
    assert at[315].count_history.size == 286


def test_oracle_fast_path_equals_the_loop() -> None:
    rng = np.random.default_rng(0)
    rates = rng.poisson(np.repeat(rng.uniform(5, 60, 20), 180)).astype(float)
    trace = synthetic(rates)
    config = FleetConfig(startup_delay_s=120)
    oracle = OracleScaler(trace, config, utilisation=0.9, smooth_s=5)

    class Loop:
        name, period_s = "oracle", 15

        def decide(self, obs: Observation) -> int:
            return oracle.decide(obs)

    fast, slow = simulate(trace, oracle, config), simulate(trace, Loop(), config)
    assert fast.events == slow.events
    assert (fast.ready == slow.ready).all() and (fast.starting == slow.starting).all()
    assert fast.slo_attainment == pytest.approx(slow.slo_attainment)


def test_oracle_meets_the_slo_on_a_ramp_the_hpa_misses() -> None:
    ramp = np.concatenate([np.full(900, 10.0), np.linspace(10, 120, 1200), np.full(900, 120.0)])
    trace = synthetic(ramp)
    config = FleetConfig()
    oracle = simulate(trace, make_scaler("oracle", trace, config), config)
    hpa = simulate(trace, make_scaler("hpa", trace, config), config)
    assert oracle.slo_attainment > 0.99
    assert hpa.slo_attainment < oracle.slo_attainment


def test_present_reference_meets_a_step_only_one_startup_late() -> None:
    step = np.concatenate([np.full(1200, 10.0), np.full(1800, 40.0)])
    trace = synthetic(step)
    config = FleetConfig(startup_delay_s=300)
    present = PresentScaler(trace, config, margin=0.2)
    result = simulate(trace, present, config)
    late = result.slo_met[(result.arrival_s > 1200) & (result.arrival_s < 1500)].mean()
    after = result.slo_met[result.arrival_s > 2800].mean()  # once the backlog has drained
    assert late < 0.2 and after == 1.0  # it sees the step at once but cannot serve it sooner
    assert min(k for k, _ in result.events if k >= 1200) <= 1215  # it asked at the first sync


def test_predictive_scaler_follows_a_ramp_and_explains() -> None:
    ramp = np.concatenate([np.full(1800, 10.0), np.linspace(10, 40, 3600)])
    trace = synthetic(ramp)
    config = FleetConfig()
    scaler = make_scaler("predictive", trace, config, ScalerSettings(headroom=0.2))
    result = simulate(trace, scaler, config)
    assert result.slo_attainment > 0.99
    assert getattr(scaler, "reasons", [])[0][1].startswith("floor ")
    assert result.ready[-1] >= 40 / 6  # ~6 req/s per replica at full batch


def test_azure_loader_parses_seven_digit_fractions_and_scales(tmp_path: Path) -> None:
    csv = tmp_path / "trace.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,100,10\n"
        "2023-11-16 18:17:04.0319600,200,20\n"
        "2023-11-16 18:17:06.5000001,300,30\n"
    )
    trace = load_azure(str(csv), scale=2.0)
    assert trace.seconds == 3
    assert trace.group_t == pytest.approx([0.0, 0.052, 2.5200401])
    assert list(trace.count) == [4.0, 0.0, 2.0]
    assert list(trace.prompt_tokens) == [600.0, 0.0, 600.0]
    assert discover(str(csv)) == [str(csv)]


def test_servegen_loader_keeps_window_totals_and_fills_gaps(tmp_path: Path) -> None:
    folder = tmp_path / "m-test"
    folder.mkdir()
    rows_a = ["0,2.0,1.0,Gamma,1,0.5", "600,0,0,,0,0", "1200,4.0,5.0,Weibull,0.3,0.1"]
    rows_b = ["0,2.0,1.0,Exponential,2,0", "600,0,0,,0,0", "1200,0,0,,0,0"]
    (folder / "chunk-0-trace.csv").write_text("\n".join(rows_a) + "\n")
    (folder / "chunk-1-trace.csv").write_text("\n".join(rows_b) + "\n")
    trace = load_servegen(str(folder), mean_rate=10.0, seed=1)
    assert trace.seconds == 1800
    per_window = trace.count.reshape(3, 600).mean(axis=1)
    # totals 4, gap (interpolated to 4), 4 req/s -> all rescaled to 10 req/s
    assert per_window == pytest.approx([10.0, 10.0, 10.0], rel=0.1)
    blocks = trace.count[1200:].reshape(-1, 10).sum(axis=1)
    assert blocks.std() > trace.count[:600].reshape(-1, 10).sum(axis=1).std()  # cv 5 window is burstier
    assert trace.group_prompt_sample is not None
    assert trace.total_requests == pytest.approx(trace.count.sum())
    assert discover(str(tmp_path)) == [str(folder)]


def servegen_folder(tmp_path: Path, rates: list[float], cv: float = 1.0) -> str:
    folder = tmp_path / "m-synthetic"
    folder.mkdir()
    shape = 1 / cv**2
    rows = [f"{600 * i},{rate},{cv},Gamma,{shape},{1 / (rate * shape)}" for i, rate in enumerate(rates)]
    (folder / "chunk-0-trace.csv").write_text("\n".join(rows) + "\n")
    return str(folder)


def test_servegen_dispersion_comes_from_the_fitted_distribution(tmp_path: Path) -> None:
    folder = tmp_path / "m-weibull"
    folder.mkdir()
    # A Weibull client whose cv column (93, an empirical cv) is far above its fitted shape's (10.7),
    # and a Gamma client whose column agrees with its shape (cv 2).
    (folder / "chunk-0-trace.csv").write_text("0,10.0,93.0,Weibull,0.2277,1.22\n")
    (folder / "chunk-1-trace.csv").write_text("0,30.0,2.0,Gamma,0.25,0.1333\n")
    rate, var = servegen_windows(str(folder))
    assert rate == pytest.approx([40.0])
    assert var == pytest.approx([10.0 * 10.7**2 + 30.0 * 4.0], rel=0.01)
    _, column = servegen_windows(str(folder), cv_source="column")
    assert column == pytest.approx([10.0 * 93.0**2 + 30.0 * 4.0])
    with pytest.raises(ValueError, match="cv_source"):
        servegen_windows(str(folder), cv_source="other")


def test_servegen_partial_collection_gaps_are_interpolated_and_real_dips_kept(tmp_path: Path) -> None:
    rates = [2000.0] * 6 + [14.0] + [2000.0] * 6 + [700.0] + [2000.0] * 6
    folder = servegen_folder(tmp_path, rates)
    trace = load_servegen(folder, mean_rate=100.0, seed=0)
    per_window = trace.count.reshape(-1, 600).mean(axis=1)
    scale = 100.0 / np.mean([*rates[:6], 2000.0, *rates[7:]])  # the gap counts as 2,000 req/s
    assert per_window[6] == pytest.approx(2000.0 * scale, rel=0.05)  # one client left reporting: a gap
    assert per_window[13] == pytest.approx(700.0 * scale, rel=0.05)  # a third of the neighbours: traffic


def test_servegen_rescaling_keeps_the_native_relative_burstiness(tmp_path: Path) -> None:
    """Thinning 1,000 req/s of cv-3 clients to 10 req/s must not make 10 s blocks burstier
    relative to their mean than the production traffic was (the first model did, ~10x in variance)."""
    folder = servegen_folder(tmp_path, [1000.0] * 12, cv=3.0)

    def excess_block_cv(reference: str) -> float:
        trace = load_servegen(folder, mean_rate=10.0, seed=3, burst_reference=reference)
        blocks = trace.count.reshape(-1, 10).sum(axis=1)
        poisson = blocks.mean()  # the Poisson part of a block's variance
        return float(np.sqrt(max(blocks.var() - poisson, 0.0)) / blocks.mean())

    native = np.sqrt((9.0 - 1.0) / (1000.0 * 10))  # (D - 1) / (native rate * block), D = cv^2
    assert excess_block_cv("native") < 3 * native
    assert excess_block_cv("rescaled") > 5 * native
    with pytest.raises(ValueError, match="burst_reference"):
        load_servegen(folder, mean_rate=10.0, burst_reference="other")


@pytest.mark.skipif(not os.path.isdir("/work/shared/traces"), reason="shared traces not mounted")
def test_load_trace_rescales_to_the_requested_mean_load() -> None:
    path = "/work/shared/traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
    trace = load_trace(path, CAP, load_replicas=10.0)
    assert trace.work(CAP).mean() == pytest.approx(10.0, rel=1e-6)


def test_simulate_command_prints_a_table_and_writes_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmfleet.cli import main

    rates = [1000.0, 1200.0, 1800.0, 1500.0, 1000.0, 900.0]
    folder = servegen_folder(tmp_path, rates, cv=2.0)
    plots = tmp_path / "plots"
    argv = ["simulate", "--trace", folder, "--startup-delay", "120", "--quiet", "--plot-dir", str(plots)]
    assert main([*argv, "--servegen-cv", "column"]) == 0
    out = capsys.readouterr().out
    for scaler in ("hpa ", "hpa-inflight", "predictive", "oracle"):
        assert f"  {scaler}" in out
    assert (plots / "m-synthetic.png").stat().st_size > 10_000
    assert " 0.00%" in out  # nothing is turned away by an unbounded queue
    # failing fast, the queue-depth HPA never sees a queue: its shortages show as rejected requests
    assert main([*argv, "--queue-timeout", "0.5", "--scaler", "hpa"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "hpa" in line)
    assert not row.endswith(" 0.00%"), row
    assert main(["simulate", "--trace", str(tmp_path / "nothing-here")]) == 2
    assert "no trace found" in capsys.readouterr().err
