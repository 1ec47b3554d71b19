"""Load real request traces into the per-second arrays the fleet simulator replays.

Two sources, two shapes:

* **Azure LLM inference 2023** (``TIMESTAMP,ContextTokens,GeneratedTokens``, one row per
  request): every request becomes one *request group* of weight ``scale`` at its own arrival
  time with its own token counts. ``scale`` multiplies the load without changing its shape: a
  group of weight 15 is 15 identical requests arriving together, so a 12.8x burst stays a
  12.8x burst (superposing shifted copies would smooth it away).
* **ServeGen** folders (one CSV per client, ``timestamp,rate,cv,pattern,arg1,arg2`` per
  600 s window): 14 days at ~1,200-1,800 req/s are ~2e9 requests, far too many to replay one
  by one, and ServeGen itself treats client rates as weights. So the client rates are summed
  into the load curve and rescaled to the requested mean, and arrivals are drawn as per-second
  counts from a doubly stochastic Poisson process: each 10 s block gets a Gamma-distributed
  intensity around the window's rate whose variance is chosen so that the 10-minute count
  variance of the *native* traffic equals that of the superposed renewal processes,
  ``sum_k rate_k * cv_k**2`` per second (a renewal process with inter-arrival cv ``c`` has an
  asymptotic index of dispersion ``c**2``). Three choices decide how bursty that is:

  - *cv source*: each client's cv is its fitted distribution's (``pattern``, ``arg1``), which
    is how the ServeGen README says to draw arrivals. For Gamma clients that equals the ``cv``
    column; for Weibull clients the column is an empirical cv up to 40x the fitted one, and
    a handful of them made the column's dispersion 21x (m-small) and 7x (m-mid) the fitted
    distributions' (``cv_source="column"``, the first model).
  - *burst reference*: rescaling keeps the native traffic's relative intensity fluctuations,
    as the Azure weights keep a burst's shape: the trace is the production model's traffic on
    a fleet sized for it, each simulated replica standing for ``native / rescaled`` real
    ones. (``burst_reference="rescaled"``, the first model, kept every client's cv at its
    thinned rate, which multiplies the relative 10 s fluctuations by ``sqrt(native /
    rescaled)``, 3.8x on m-small and 4.7x on m-mid.) Poisson counts at the rescaled rate add
    the request-level noise of the smaller fleet on top.
  - *cap*: the block cv is capped at ``MAX_BLOCK_CV`` = 2 (the asymptotic dispersion
    overstates the 10 s scale for clients whose clusters are sub-second).

  The block intensities are renormalised so each window's total is the data's (the rates are
  measured, only their spread inside the window is modelled). Windows in which the whole
  model reports 0 req/s (37 of 2,016 in m-small, 84 in m-mid: a production model at ~1,000
  req/s does not go silent), or under 5% of the surrounding hour's median (9 more in m-mid,
  at ~14 req/s between windows at ~2,000), are collection gaps and are interpolated. ServeGen
  has no token lengths in these files: prompts and outputs are drawn from log-normals fitted
  to the Azure conversation trace (median 1,020 / 129 tokens, means 1,155 / 211), and each
  one-second bucket of requests is one request group whose members' prompt lengths follow
  that distribution.

Everything is vectorised: a 14-day ServeGen trace is ~1.2 M one-second buckets.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass

import numpy as np

from llmfleet.sim.fleet import CapacityModel

SERVEGEN_WINDOW_S = 600
BURST_BLOCK_S = 10
PROMPT_LOGNORMAL = (float(np.log(1020.0)), 0.5)
OUTPUT_LOGNORMAL = (float(np.log(129.0)), 0.99)
MAX_PROMPT_TOKENS = 8000
MAX_BLOCK_CV = 2.0
PARTIAL_GAP_FRACTION = 0.05
BURST_REFERENCES = ("native", "rescaled")
CV_SOURCES = ("fitted", "column")


def collection_gaps(rate: np.ndarray) -> np.ndarray:
    """Windows that are collection gaps, not traffic: the whole model at 0 req/s, or below
    ``PARTIAL_GAP_FRACTION`` of the median of the surrounding hour (m-mid has 9 windows at
    ~14 req/s between windows at ~2,000, one client still reporting; the next-lowest window is
    at 0.3x its neighbours, so the threshold is not a fine line)."""
    empty = rate <= 0
    half = 3600 // SERVEGEN_WINDOW_S
    padded = np.pad(np.where(empty, np.nan, rate), half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    valid = ~np.isnan(windows).all(axis=1)
    local = np.full(rate.size, np.inf)
    local[valid] = np.nanmedian(windows[valid], axis=1)
    return np.asarray(empty | (rate < PARTIAL_GAP_FRACTION * local))


def _fill_gaps(values: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Interpolate ``values`` across the ``gap`` windows."""
    if not gap.any() or gap.all():
        return values
    idx = np.arange(values.size)
    filled = values.copy()
    filled[gap] = np.interp(idx[gap], idx[~gap], values[~gap])
    return filled


@dataclass(frozen=True)
class Trace:
    """Arrivals of one trace: per-second totals plus request groups for per-request outcomes.

    ``count``, ``prompt_tokens`` and ``output_tokens`` are per one-second bucket (weighted
    sums). Groups are single requests (Azure) or whole buckets (ServeGen); when
    ``group_prompt_sample`` is set, a group's members have prompt lengths distributed like that
    sorted sample instead of all equal to ``group_prompt``.
    """

    name: str
    count: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    group_t: np.ndarray
    group_weight: np.ndarray
    group_prompt: np.ndarray
    group_output: np.ndarray
    group_prompt_sample: np.ndarray | None = None

    @property
    def seconds(self) -> int:
        return int(self.count.size)

    @property
    def total_requests(self) -> float:
        return float(self.group_weight.sum())

    def mean_tokens_per_sequence(self) -> float:
        total = float(self.count.sum())
        return float((self.prompt_tokens.sum() + self.output_tokens.sum()) / max(total, 1e-9))

    def work(self, capacity: CapacityModel) -> np.ndarray:
        """Replica-seconds of work arriving in each second under ``capacity``."""
        per_token = capacity.decode_seconds_per_token(self.mean_tokens_per_sequence())
        return np.asarray(
            self.prompt_tokens * capacity.prefill_seconds_per_token + self.output_tokens * per_token
        )

    def mean_request_cost(self, capacity: CapacityModel) -> float:
        return float(self.work(capacity).sum() / max(float(self.count.sum()), 1e-9))


def _bucket_sums(seconds: int, t: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(np.floor(t).astype(np.int64), weights=values, minlength=seconds)[:seconds]


def load_azure(path: str, *, scale: float = 1.0, name: str | None = None) -> Trace:
    """One Azure CSV: arrival times from the first request, 7-digit fractions parsed exactly."""
    raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=str)
    stamps = raw[:, 0].astype("datetime64[ns]")
    t = (stamps - stamps.min()).astype(np.int64) / 1e9
    order = np.argsort(t, kind="stable")
    t = t[order]
    prompt = raw[order, 1].astype(float)
    output = raw[order, 2].astype(float)
    seconds = int(np.floor(t[-1])) + 1
    weight = np.full(t.size, float(scale))
    return Trace(
        name=name or os.path.splitext(os.path.basename(path))[0],
        count=_bucket_sums(seconds, t, weight),
        prompt_tokens=_bucket_sums(seconds, t, weight * prompt),
        output_tokens=_bucket_sums(seconds, t, weight * output),
        group_t=t,
        group_weight=weight,
        group_prompt=prompt,
        group_output=output,
    )


def named_distribution_cv(pattern: np.ndarray, shape: np.ndarray, column_cv: np.ndarray) -> np.ndarray:
    """Inter-arrival cv of each row's fitted distribution: Gamma ``1/sqrt(shape)``, Weibull
    ``sqrt(G(1 + 2/k) / G(1 + 1/k)**2 - 1)``, Exponential 1; the ``cv`` column otherwise."""
    cv = np.asarray(column_cv, dtype=float).copy()
    gamma = (pattern == "Gamma") & (shape > 0)
    cv[gamma] = 1.0 / np.sqrt(shape[gamma])
    weibull = (pattern == "Weibull") & (shape > 0)
    k = shape[weibull]
    log_ratio = np.array([math.lgamma(1 + 2 / x) - 2 * math.lgamma(1 + 1 / x) for x in k])
    cv[weibull] = np.sqrt(np.maximum(np.exp(log_ratio) - 1.0, 0.0)) if k.size else k
    cv[pattern == "Exponential"] = 1.0
    return cv


def servegen_windows(folder: str, cv_source: str = "fitted") -> tuple[np.ndarray, np.ndarray]:
    """Per-window total rate (req/s) and count variance per second ``sum rate*cv**2``.

    ``cv_source="fitted"`` takes each client's cv from its named, fitted distribution (how the
    ServeGen README says to draw arrivals); ``"column"`` from the ``cv`` column. They agree for
    the Gamma clients; for the Weibull ones the column is far larger (rate-weighted cv^2 2,739
    against 122 in m-small, 4,272 against 577 in m-mid: a few clients with empirical cvs of
    30-800 whose fitted Weibull shapes give 10-30).
    """
    if cv_source not in CV_SOURCES:
        raise ValueError(f"cv_source must be one of {CV_SOURCES}, not {cv_source!r}")
    files = sorted(glob.glob(os.path.join(folder, "*.csv")))
    if not files:
        raise FileNotFoundError(f"no ServeGen client CSVs in {folder}")
    rate_total: np.ndarray | None = None
    var_total: np.ndarray | None = None
    for file in files:
        data = np.loadtxt(file, delimiter=",", dtype=str, ndmin=2)
        rate = data[:, 1].astype(float)
        cv = np.nan_to_num(data[:, 2].astype(float))
        if cv_source == "fitted":
            cv = named_distribution_cv(data[:, 3], np.nan_to_num(data[:, 4].astype(float)), cv)
        rate_total = rate.copy() if rate_total is None else rate_total + rate
        var_total = rate * cv**2 if var_total is None else var_total + rate * cv**2
    assert rate_total is not None and var_total is not None
    return rate_total, var_total


def load_servegen(
    folder: str,
    *,
    mean_rate: float,
    seed: int = 0,
    days: float | None = None,
    name: str | None = None,
    max_block_cv: float = MAX_BLOCK_CV,
    burst_reference: str = "native",
    cv_source: str = "fitted",
) -> Trace:
    """A ServeGen model folder as per-second buckets with the total rescaled to ``mean_rate``.

    ``burst_reference``: ``"native"`` keeps the native traffic's relative 10 s intensity
    fluctuations; ``"rescaled"`` derives them from the clients' cvs at the rescaled rates
    (the first model, kept for the sensitivity runs).
    """
    if burst_reference not in BURST_REFERENCES:
        raise ValueError(f"burst_reference must be one of {BURST_REFERENCES}, not {burst_reference!r}")
    rate, var = servegen_windows(folder, cv_source)
    if days is not None:
        rate, var = (
            rate[: int(days * 86400 / SERVEGEN_WINDOW_S)],
            var[: int(days * 86400 / SERVEGEN_WINDOW_S)],
        )
    gap = collection_gaps(rate)
    rate, var = _fill_gaps(rate, gap), _fill_gaps(var, gap)
    scale = mean_rate / max(float(rate.mean()), 1e-12)
    mean = rate * scale  # req/s per window
    dispersion = np.where(rate > 0, var / np.maximum(rate, 1e-12), 1.0)  # index of dispersion c^2
    # Gamma intensity per block: count variance over a window = W*m + W*m^2*block*g  ==  W*m*D,
    # with m the native rate (relative fluctuations kept) or the rescaled one.
    reference = rate if burst_reference == "native" else mean
    gamma_var = np.minimum(
        np.maximum(dispersion - 1.0, 0.0) / np.maximum(reference * BURST_BLOCK_S, 1e-12), max_block_cv**2
    )
    rng = np.random.default_rng(seed)
    blocks_per_window = SERVEGEN_WINDOW_S // BURST_BLOCK_S
    block_var = np.repeat(gamma_var, blocks_per_window)
    gamma_shape = 1.0 / np.maximum(block_var, 1e-9)
    multiplier = np.where(block_var > 1e-9, rng.gamma(gamma_shape, 1.0 / gamma_shape), 1.0).reshape(
        -1, blocks_per_window
    )
    multiplier /= np.maximum(multiplier.mean(axis=1, keepdims=True), 1e-12)  # keep each window's total
    intensity = np.repeat((mean[:, None] * multiplier).ravel(), BURST_BLOCK_S)
    count = rng.poisson(intensity).astype(float)
    prompt_mean, prompt_var = _lognormal_moments(*PROMPT_LOGNORMAL)
    out_mean, out_var = _lognormal_moments(*OUTPUT_LOGNORMAL)
    prompt = _sum_of_draws(rng, count, prompt_mean, prompt_var)
    output = _sum_of_draws(rng, count, out_mean, out_var)
    seconds = count.size
    sample = np.sort(
        np.minimum(rng.lognormal(PROMPT_LOGNORMAL[0], PROMPT_LOGNORMAL[1], 4096), MAX_PROMPT_TOKENS)
    )
    nonzero = count > 0
    t = np.arange(seconds, dtype=float)[nonzero] + 0.5
    return Trace(
        name=name or os.path.basename(os.path.normpath(folder)),
        count=count,
        prompt_tokens=prompt,
        output_tokens=output,
        group_t=t,
        group_weight=count[nonzero],
        group_prompt=prompt[nonzero] / count[nonzero],
        group_output=output[nonzero] / count[nonzero],
        group_prompt_sample=sample,
    )


def _lognormal_moments(mu: float, sigma: float) -> tuple[float, float]:
    mean = float(np.exp(mu + sigma**2 / 2))
    return mean, float((np.exp(sigma**2) - 1) * mean**2)


def _sum_of_draws(rng: np.random.Generator, count: np.ndarray, mean: float, var: float) -> np.ndarray:
    """Sum of ``count`` i.i.d. token lengths per bucket (normal approximation, never negative)."""
    noise = rng.standard_normal(count.size) * np.sqrt(count * var)
    return np.asarray(np.maximum(count * mean + noise, 0.0))


def discover(path: str) -> list[str]:
    """Trace paths under ``path``: itself if it is a CSV or a ServeGen folder, else its children."""
    if os.path.isfile(path) and path.endswith(".csv"):
        return [path]
    if glob.glob(os.path.join(path, "chunk-*.csv")):
        return [path]
    found: list[str] = []
    for root, _dirs, files in os.walk(path):
        if any(f.startswith("chunk-") and f.endswith(".csv") for f in files):
            found.append(root)
        found.extend(
            os.path.join(root, f) for f in files if f.endswith(".csv") and not f.startswith("chunk-")
        )
    return sorted(found)


def load_trace(
    path: str,
    capacity: CapacityModel,
    *,
    load_replicas: float = 16.0,
    seed: int = 0,
    days: float | None = None,
    max_block_cv: float = MAX_BLOCK_CV,
    burst_reference: str = "native",
    cv_source: str = "fitted",
) -> Trace:
    """Load a CSV or ServeGen folder with its mean load rescaled to ``load_replicas`` replicas.

    The mean offered work equals ``load_replicas`` fully busy replicas of ``capacity``, so every
    trace exercises a fleet of the same order of size whatever its native rate.
    """
    if os.path.isdir(path):
        probe = load_servegen(path, mean_rate=1.0, seed=seed, days=min(days or 1.0, 1.0))
        cost = probe.mean_request_cost(capacity)
        return load_servegen(
            path,
            mean_rate=load_replicas / cost,
            seed=seed,
            days=days,
            max_block_cv=max_block_cv,
            burst_reference=burst_reference,
            cv_source=cv_source,
        )
    native = load_azure(path)
    offered = float(native.work(capacity).sum()) / native.seconds
    return load_azure(path, scale=load_replicas / max(offered, 1e-12))
