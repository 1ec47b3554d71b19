"""Forecaster error bounds on synthetic seasonal, trend and burst signals."""

from __future__ import annotations

import numpy as np
import pytest

from llmfleet.scaling.forecast import BurstConfig, ForecastConfig, burst_factor, forecast

STEP = 60.0
DAY = 1440  # steps of a minute


def seasonal(days: float, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    t = np.arange(int(days * DAY))
    rng = np.random.default_rng(seed)
    base = 100 + 60 * np.sin(2 * np.pi * t / DAY) + 20 * np.sin(4 * np.pi * t / DAY + 1)
    return np.asarray(base * (1 + noise * rng.standard_normal(t.size)))


@pytest.mark.parametrize("days", [3, 14])
def test_seasonal_signal_forecast_within_5_percent_and_uses_the_daily_model(days: int) -> None:
    full = seasonal(days + 1)
    errors = []
    for cut in range(days * DAY + 60, days * DAY + DAY - 20, 97):  # origins over the next day
        fc = forecast(full[:cut], STEP, 10 * STEP)
        truth = full[cut : cut + 10]
        errors.append(np.abs(fc.point - truth).max() / truth.mean())
        assert fc.upper >= fc.peak
    assert np.median(errors) < 0.05
    assert max(errors) < 0.12
    fc = forecast(full[: days * DAY + 300], STEP, 10 * STEP)
    assert fc.seasonal_weight > 0.5


def test_morning_ramp_is_forecast_before_it_starts() -> None:
    """The point of the seasonal model: at the trough, yesterday says the load is about to rise."""
    t = np.arange(4 * DAY)
    load = np.where((t % DAY) < 600, 50.0, 150.0)  # a step up at minute 600 every day
    cut = 3 * DAY + 595  # five minutes before today's step
    fc = forecast(load[:cut], STEP, 10 * STEP)
    assert fc.peak > 120  # the short model alone would say 50
    assert forecast(load[cut - 600 : cut], STEP, 10 * STEP).peak < 60  # hours only: no season


def test_linear_trend_with_hours_of_history() -> None:
    t = np.arange(180)  # three hours
    load = 20 + 0.5 * t + np.random.default_rng(1).normal(0, 0.5, t.size)
    fc = forecast(load, STEP, 10 * STEP)
    truth_peak = 20 + 0.5 * (t[-1] + 10)
    assert fc.model == "short"
    assert abs(fc.peak - truth_peak) / truth_peak < 0.05
    assert fc.upper >= truth_peak * 0.98


def test_upper_band_covers_the_realised_peak_at_about_its_quantile() -> None:
    full = seasonal(5, noise=0.1, seed=3)
    covered = []
    for cut in range(3 * DAY, 5 * DAY - 20, 53):
        fc = forecast(full[:cut], STEP, 10 * STEP, ForecastConfig(quantile=0.9))
        covered.append(full[cut : cut + 10].max() <= fc.upper)
    assert 0.75 <= np.mean(covered) <= 1.0


def test_a_past_burst_widens_the_band_but_does_not_become_the_forecast() -> None:
    load = np.full(600, 100.0) + np.random.default_rng(2).normal(0, 2, 600)
    load[400:405] = 400.0  # a five-minute burst, three hours ago... then calm
    fc = forecast(load, STEP, 10 * STEP)
    assert fc.peak < 110
    assert fc.upper < 400
    calm = forecast(np.full(600, 100.0), STEP, 10 * STEP)
    assert fc.upper >= calm.upper


def test_little_or_no_history() -> None:
    empty = forecast(np.zeros(0), STEP, 300)
    assert empty.peak == 0 and empty.point.size == 5
    few = forecast(np.array([10.0, 12.0, 11.0]), STEP, 300)
    assert np.isfinite(few.peak) and few.upper == pytest.approx(few.peak * 1.5)
    assert (few.point >= 0).all()


def test_burst_factor_is_near_one_for_poisson_arrivals_at_fleet_scale() -> None:
    counts = np.random.default_rng(1).poisson(200.0, 1800).astype(float)  # per second
    factor = burst_factor(counts, 1.0, 60.0, BurstConfig(quantile=0.99, slack_s=0.8))
    assert 1.0 <= factor < 1.1  # sqrt staffing: relative headroom vanishes with load


def test_burst_factor_grows_with_dispersion_and_with_the_quantile() -> None:
    rng = np.random.default_rng(2)
    calm = rng.poisson(20.0, 1800).astype(float)
    # 10 s blocks with a Gamma intensity of cv 1 around the same mean: bursty clients
    intensity = np.repeat(rng.gamma(1.0, 20.0, 180), 10)
    bursty = rng.poisson(intensity).astype(float)
    low = burst_factor(calm, 1.0, 60.0, BurstConfig(quantile=0.99))
    high = burst_factor(bursty, 1.0, 60.0, BurstConfig(quantile=0.99))
    assert high > 1.5 * low
    assert burst_factor(bursty, 1.0, 60.0, BurstConfig(quantile=0.9)) <= high
    # the same history read at a 15 s step (what Prometheus gives) sees less of it, never more
    coarse = bursty.reshape(-1, 15).sum(axis=1)
    assert 1.0 <= burst_factor(coarse, 15.0, 60.0, BurstConfig(quantile=0.99)) <= high


def test_burst_factor_without_history_is_one_and_is_capped() -> None:
    assert burst_factor(np.zeros(0), 1.0) == 1.0
    assert burst_factor(np.zeros(600), 1.0) == 1.0
    spikes = np.zeros(1800)
    spikes[::60] = 600.0  # a minute's requests in one second
    assert burst_factor(spikes, 1.0, 60.0, BurstConfig(max_factor=10.0)) == 10.0
