"""Request-rate forecaster: a seasonal model and a short-horizon model, blended by backtest error.

A new replica is useful only ``startup`` seconds after it is asked for, so the scaler needs
the *peak* load over the next horizon and a bound it will rarely exceed. Two models, because
neither is right everywhere: with days of history the daily cycle predicts the morning ramp
before it starts; with hours of history (or on a day that breaks the pattern) only the recent
level and trend are informative.

* **short**: level = mean of the last ``level_steps`` points, trend = change of that level over
  ``trend_steps``, extrapolated with a damped trend (``phi``) so it never runs away.
* **seasonal**: the mean of the same time of day over up to ``max_seasons`` past days
  (seasonal naive, averaged), rescaled by how today's last ``season_level_steps`` compare to
  those days at the same time (clipped to [1/3, 3]).

Both are evaluated on a rolling backtest of up to ``backtest_steps`` past origins, in one
vectorised pass: at each origin each model forecasts the next ``H`` steps and is scored on the
realised *peak* over them, the quantity the policy provisions for. The models are blended
with weights inversely proportional to their squared mean absolute error, and the upper bound
is the blended peak times the ``quantile`` of the backtest's realised/forecast peak ratios
(never below the point peak). With fewer than ``min_backtest`` origins there is nothing to
learn a band from, and ``default_band`` is used.

Pure numpy: history in, :class:`Forecast` out; cost is O(backtest_steps * H) per call, independent of
the length of history beyond ``max_seasons`` days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DAY_S = 86400.0


@dataclass(frozen=True)
class ForecastConfig:
    season_s: float = DAY_S
    max_seasons: int = 7
    level_steps: int = 5
    trend_steps: int = 15
    phi: float = 0.9
    season_level_steps: int = 30
    backtest_steps: int = 720
    min_backtest: int = 10
    quantile: float = 0.9
    default_band: float = 0.5


@dataclass(frozen=True)
class Forecast:
    """Rates per second over the next ``point.size`` steps of ``step_s``."""

    point: np.ndarray
    peak: float
    upper: float
    model: str
    seasonal_weight: float
    backtest_error: float  # mean absolute error of the blended peak, as a fraction of the mean

    def describe(self) -> str:
        return (
            f"{self.model} forecast peak {self.peak:.3g}/s (upper {self.upper:.3g}/s, "
            f"seasonal weight {self.seasonal_weight:.2f}, backtest error {self.backtest_error:.0%})"
        )


def _window_mean(cs: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """Mean of x[end-width+1 .. end] (fewer points near the start) from cs = [0, cumsum(x)]."""
    lo = np.maximum(end - width + 1, 0)
    return np.asarray((cs[end + 1] - cs[lo]) / np.maximum(end + 1 - lo, 1))


def short_model(x: np.ndarray, origins: np.ndarray, horizon: int, cfg: ForecastConfig) -> np.ndarray:
    """Damped-trend forecasts, one row per origin (index of the last point seen)."""
    cs = np.concatenate([[0.0], np.cumsum(x)])
    level = _window_mean(cs, origins, cfg.level_steps)
    past = np.maximum(origins - cfg.trend_steps, 0)
    span = np.maximum(origins - past, 1)
    trend = (level - _window_mean(cs, past, cfg.level_steps)) / span
    damped = np.cumsum(cfg.phi ** np.arange(1, horizon + 1))
    lead = damped + (cfg.level_steps - 1) / 2.0
    return np.asarray(np.maximum(level[:, None] + trend[:, None] * lead[None, :], 0.0))


def seasonal_model(
    x: np.ndarray, origins: np.ndarray, horizon: int, period: int, cfg: ForecastConfig
) -> np.ndarray | None:
    """Averaged seasonal naive rescaled to the recent level; None without a full past season."""
    t_lo = int(origins.min()) - cfg.season_level_steps + 1
    t_hi = int(origins.max()) + horizon
    seasons = min(cfg.max_seasons, t_lo // period) if t_lo >= 0 else 0
    if seasons < 1 or period <= horizon:
        return None
    t = np.arange(t_lo, t_hi + 1)
    profile = np.mean([x[t - d * period] for d in range(1, seasons + 1)], axis=0)
    cs_x = np.concatenate([[0.0], np.cumsum(x[t_lo : int(origins.max()) + 1])])
    cs_p = np.concatenate([[0.0], np.cumsum(profile)])
    rel = origins - t_lo
    w = cfg.season_level_steps
    seen = cs_x[rel + 1] - cs_x[rel + 1 - w]
    expected = cs_p[rel + 1] - cs_p[rel + 1 - w]
    ratio = np.clip((seen + 1e-9) / (expected + 1e-9), 1 / 3, 3.0)
    idx = rel[:, None] + np.arange(1, horizon + 1)[None, :]
    return np.asarray(profile[idx] * ratio[:, None])


def forecast(
    history: np.ndarray, step_s: float, horizon_s: float, config: ForecastConfig | None = None
) -> Forecast:
    """Forecast the rate over ``horizon_s`` from ``history`` (mean rate per ``step_s``, oldest first)."""
    cfg = config or ForecastConfig()
    x = np.asarray(history, dtype=float)
    horizon = max(1, math.ceil(horizon_s / step_s))
    if x.size == 0:
        return Forecast(np.zeros(horizon), 0.0, 0.0, "none", 0.0, 1.0)
    n = x.size
    period = round(cfg.season_s / step_s)
    last_bt = n - 1 - horizon
    first_bt = max(cfg.level_steps, last_bt - cfg.backtest_steps + 1)
    backtest = np.arange(first_bt, last_bt + 1) if last_bt >= first_bt else np.zeros(0, dtype=np.int64)
    origins = np.concatenate([backtest, [n - 1]]).astype(np.int64)
    short = short_model(x, origins, horizon, cfg)
    seasonal = seasonal_model(x, origins, horizon, period, cfg) if backtest.size else None
    if seasonal is None:
        seasonal = seasonal_model(x, origins[-1:], horizon, period, cfg)
        if seasonal is not None:  # a full season but too little to backtest it: trust it half
            short = 0.5 * short[-1:] + 0.5 * seasonal
            origins = origins[-1:]
            backtest = backtest[:0]
        models = {"short": short}
    else:
        models = {"short": short, "seasonal": seasonal}
    mean_level = max(float(x[-min(n, 1440) :].mean()), 1e-9)
    if backtest.size >= cfg.min_backtest:
        realised = sliding_window_view(x[backtest[0] + 1 :], horizon).max(axis=1)[: backtest.size]
        errors = {
            name: float(np.mean(np.abs(forecasts[:-1].max(axis=1) - realised)))
            for name, forecasts in models.items()
        }
        inverse = {name: 1.0 / (err**2 + 1e-12 * mean_level**2) for name, err in errors.items()}
        total = sum(inverse.values())
        weights = {name: w / total for name, w in inverse.items()}
    else:
        realised = np.zeros(0)
        weights = {name: 1.0 / len(models) for name in models}
    blend = sum(weights[name] * forecasts for name, forecasts in models.items())
    assert isinstance(blend, np.ndarray)
    point = blend[-1]
    peak = float(point.max())
    if realised.size:
        predicted = blend[:-1].max(axis=1)
        eps = 0.01 * mean_level
        log_ratio = np.log((realised + eps) / (predicted + eps))
        band = float(np.exp(max(float(np.quantile(log_ratio, cfg.quantile)), 0.0)))
        error = float(np.mean(np.abs(realised - predicted))) / mean_level
    else:
        band, error = 1.0 + cfg.default_band, 1.0
    seasonal_weight = weights.get("seasonal", 0.0)
    model = "seasonal" if seasonal_weight > 0.8 else "short" if seasonal_weight < 0.2 else "blend"
    return Forecast(point, peak, peak * band, model, seasonal_weight, error)


@dataclass(frozen=True)
class BurstConfig:
    """How :func:`burst_factor` reads sub-minute variability (see its docstring)."""

    quantile: float = 0.99  # share of requests whose arrival burst the fleet absorbs in time
    slack_s: float = 0.8  # queueing delay a request tolerates (TTFT SLO minus prefill)
    lookback_s: float = 1800.0  # recent history the burst distribution is read from
    max_window_s: float = 60.0  # longest burst window considered (the forecast's step)
    max_factor: float = 10.0


def burst_factor(
    counts: np.ndarray, step_s: float, rate_step_s: float = 60.0, config: BurstConfig | None = None
) -> float:
    """Capacity needed per unit of forecast (per-``rate_step_s`` mean) rate, from recent bursts.

    A FIFO fleet serving ``c`` requests/s keeps every wait under ``s`` seconds iff no interval of
    length ``w`` brings more than ``c * (w + s)`` requests (the arrival-curve / network-calculus
    condition). The forecaster predicts per-minute mean rates ``m``, so for each window length
    ``w`` (multiples of ``step_s`` up to ``max_window_s``) and each recent window, the demand
    ratio ``A_w / (m * (w + s))`` is computed, with ``m`` the mean rate of the ``rate_step_s`` step
    the window ends in. The factor is the request-weighted ``quantile`` of the per-window
    maximum over ``w`` (weighted by the window's arrivals: a burst matters in proportion to the
    requests it holds). It is >= 1: the queue is fluid, so the mean itself needs 1.

    ``counts`` are requests per ``step_s`` (oldest first); only the last ``lookback_s`` is read.
    Where load is high and Poisson-like the factor tends to ``w/(w+s)``-bounded values near 1
    (square-root staffing's vanishing relative headroom); bursty clients raise it.
    """
    cfg = config or BurstConfig()
    x = np.asarray(counts, dtype=float)
    per_rate = max(1, round(rate_step_s / step_s))
    n = min(x.size, int(cfg.lookback_s // step_s)) // per_rate * per_rate
    x = x[x.size - n :]
    if x.size < per_rate or x.sum() <= 0:
        return 1.0
    minute_rate = np.repeat(x.reshape(-1, per_rate).mean(axis=1) / step_s, per_rate)
    cs = np.concatenate([[0.0], np.cumsum(x)])
    ratio = np.zeros(x.size)
    max_w = max(1, int(cfg.max_window_s // step_s))
    for w in sorted({max(1, round(max_w ** (k / 12))) for k in range(13)}):
        arrivals = cs[w:] - cs[:-w]  # window ending at index w-1 .. n-1
        need = arrivals / np.maximum(minute_rate[w - 1 :] * (w * step_s + cfg.slack_s), 1e-12)
        ratio[w - 1 :] = np.maximum(ratio[w - 1 :], need)
    weight = x
    order = np.argsort(ratio)
    cum = np.cumsum(weight[order])
    i = int(np.searchsorted(cum, cfg.quantile * cum[-1]))
    value = float(ratio[order][min(i, order.size - 1)])
    return float(min(max(value, 1.0), cfg.max_factor))
