"""Autoscaling benchmark: cost-SLO frontiers of the HPA, the predictive scaler and the oracle.

For every trace (ServeGen m-small and m-mid over 14 days, both Azure 2023 traces) and startup
delay (300 s, 120 s) it sweeps

* the HPA target: queue depth per pod (the HPA the operator renders) and, as the stronger
  reactive baseline, in-flight requests per pod as a fraction of a replica's batch;
* the predictive headroom (the floor under the rendered HPA, as shipped);
* the oracle's utilisation and smoothing (the cheapest one reaching the goal is the bound);
* two references: the minute-rate oracle (knows each future minute's mean only) and the
  present-knowledge scaler (knows the current load exactly, nothing of the future);

and reports the **gap closure** at the attainment goal (99% of requests within the TTFT SLO):
``(GPU-h of the cheapest HPA reaching it - predictive's) / (that HPA's - oracle's)``, for the
predictive scaler tuned per trace (its cheapest headroom reaching the goal) and at its
default headroom. Writes ``bench/results/autoscaling.json`` and ``autoscaling.png``.

    python bench/autoscaling.py                 # everything (~13 min in one process)
    python bench/autoscaling.py --quick         # 2 days of ServeGen, fewer points
    # the published run: two processes, then one JSON
    python bench/autoscaling.py --trace m-small --trace azure-code --trace azure-conv --out /tmp/a &
    python bench/autoscaling.py --trace m-mid --out /tmp/b; wait
    python bench/autoscaling.py --merge /tmp/a/autoscaling.json /tmp/b/autoscaling.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import replace
from typing import Any

from llmfleet.scaling.forecast import Forecast
from llmfleet.scaling.live import QUEUEING_MARGINS
from llmfleet.sim.fleet import FleetConfig, simulate
from llmfleet.sim.results import SimResult
from llmfleet.sim.scalers import OracleScaler, PresentScaler, ScalerSettings, make_scaler
from llmfleet.sim.simulate import ProgressBar, add_data_plane_arguments, data_plane
from llmfleet.sim.traces import BURST_REFERENCES, CV_SOURCES, Trace, load_trace

TRACES = {
    "m-small": "servegen/language/m-small",
    "m-mid": "servegen/language/m-mid",
    "azure-code": "azure-llm-2023/AzureLLMInferenceTrace_code.csv",
    "azure-conv": "azure-llm-2023/AzureLLMInferenceTrace_conv.csv",
}
HPA_TARGETS = (1.0, 8.0)
INFLIGHT_TARGETS = (0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 1.0)
# Sensitivity, when the balancer holds the queue: an in-flight HPA that also saw it.
INFLIGHT_LB_TARGETS = (0.88, 0.9, 0.91, 0.92, 0.93, 0.94)
# (headroom, burst quantile, forecast band quantile): the predictive sweep; the default is the
# API's headroom 0.2 with the live scaler's default burst quantile 0.99 and band quantile 0.9.
PREDICTIVE = (
    (0.0, None, 0.9),
    (0.0, 0.99, 0.9),
    (0.1, 0.99, 0.9),
    (0.2, 0.99, 0.9),
    (0.5, 0.99, 0.9),
    (0.2, 0.999, 0.9),
    (1.0, 0.999, 0.9),
)
# Failing fast, a shortage costs only its excess, so the sweep reaches below the upper band.
PREDICTIVE_FAIL_FAST = (
    *((0.0, None, band) for band in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)),
    (0.1, None, 0.9),
    (0.0, 0.99, 0.9),
    (0.2, 0.99, 0.9),
)
COMBINED_INFLIGHT = (0.9, 0.95)  # predictive floor (headroom 0) under an in-flight HPA
ORACLE_SMOOTHING = (1, 5, 15, 30, 60, 120)
ORACLE_UTILISATION = (0.7, 0.8, 0.9, 1.0)
ORACLE_UTILISATION_FAIL_FAST = (0.9, 1.0, 1.05, 1.1)  # running short is cheap when it costs only the excess
# The minute-rate oracle knows each future minute's mean work, not its seconds: what a perfect
# forecast of the series the predictive scaler reads could buy (the forecastable part of the gap).
MINUTE_ORACLE_UTILISATION = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# The present-knowledge reference sees the current load exactly but not the future: what a
# causal scaler loses to load changes within one startup, however good its measurements.
PRESENT_MARGINS = (0.1, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0, 4.0)
PRESENT_MARGINS_FAIL_FAST = (0.0, 0.05, 0.1, 0.2, 0.3, 0.6)
# Runs written before the band was swept used the queueing default for it.
DEFAULT_BAND_QUANTILE = QUEUEING_MARGINS.band_quantile


def point(result: SimResult, setting: float) -> dict[str, float]:
    return {
        "setting": setting,
        "attainment": round(result.slo_attainment, 5),
        "gpu_hours": round(result.gpu_hours, 2),
        "events": result.scaling_events,
        "ttft_p95_s": round(result.ttft_quantile(0.95), 3),
    }


def cheapest(points: list[dict[str, Any]], goal: float) -> dict[str, Any] | None:
    ok = [p for p in points if p["attainment"] >= goal]
    return min(ok, key=lambda p: p["gpu_hours"]) if ok else None


def cost_at(points: list[dict[str, Any]], level: float) -> float | None:
    """GPU-hours to reach ``level`` attainment along a sweep, interpolating between its points."""
    ordered = sorted(points, key=lambda p: p["gpu_hours"])
    costs = [p["gpu_hours"] for p in ordered if p["attainment"] >= level]
    for lo, hi in itertools.pairwise(ordered):
        if lo["attainment"] < level <= hi["attainment"]:
            share = (level - lo["attainment"]) / (hi["attainment"] - lo["attainment"])
            costs.append(lo["gpu_hours"] + share * (hi["gpu_hours"] - lo["gpu_hours"]))
    return min(costs) if costs else None


def closure_at_common_level(case: dict[str, Any], goal: float) -> dict[str, Any]:
    """Gap closure at the highest attainment (<= goal) that the in-flight HPA and predictive both
    reach: defined even on traces where no reactive setting reaches the goal."""
    sweeps = case["sweeps"]
    level = min(goal, *(max(p["attainment"] for p in sweeps[k]) for k in ("hpa-inflight", "predictive")))
    level = round(level - 5e-6, 5)
    hpa, pred, oracle = (cost_at(sweeps[k], level) for k in ("hpa-inflight", "predictive", "oracle"))
    gap = None
    if hpa is not None and pred is not None and oracle is not None and hpa > oracle:
        gap = round((hpa - pred) / (hpa - oracle), 4)
    return {"level": level, "hpa_inflight": hpa, "predictive": pred, "oracle": oracle, "gap_closure": gap}


def closure(
    hpa: dict[str, Any] | None, pred: dict[str, Any] | None, oracle: dict[str, Any] | None
) -> float | None:
    if hpa is None or pred is None or oracle is None or hpa["gpu_hours"] <= oracle["gpu_hours"]:
        return None
    return round(float((hpa["gpu_hours"] - pred["gpu_hours"]) / (hpa["gpu_hours"] - oracle["gpu_hours"])), 4)


def run_case(trace: Trace, delay: int, args: argparse.Namespace) -> dict[str, Any]:
    config = FleetConfig(startup_delay_s=delay, **data_plane(args))
    base = ScalerSettings()
    cache: dict[tuple[int, float, float], Forecast] = {}
    burst_cache: dict[tuple[int, float, float], float] = {}
    quiet = args.quiet

    def run(kind: str, settings: ScalerSettings, label: str) -> SimResult:
        scaler = make_scaler(kind, trace, config, settings, cache, burst_cache)
        return simulate(trace, scaler, config, ProgressBar(f"{trace.name} {delay}s {label}", not quiet))

    sweeps: dict[str, list[dict[str, Any]]] = {
        "hpa": [],
        "hpa-inflight": [],
        "hpa-inflight-lb": [],
        "predictive": [],
        "predictive-inflight": [],
        "oracle": [],
        "oracle-minute": [],
        "present": [],
    }
    for target in args.hpa_targets:
        sweeps["hpa"].append(
            point(run("hpa", replace(base, target_queue_depth=target), f"hpa q={target}"), target)
        )
    for frac in args.inflight_targets:
        result = run("hpa-inflight", replace(base, inflight_target=frac), f"hpa-inflight {frac}")
        sweeps["hpa-inflight"].append(point(result, frac))
    for frac in INFLIGHT_LB_TARGETS if config.queue_timeout_s is not None else ():
        result = run("hpa-inflight-lb", replace(base, inflight_target=frac), f"hpa-inflight-lb {frac}")
        sweeps["hpa-inflight-lb"].append(point(result, frac))
    for headroom, quantile, band in args.headrooms:
        settings = replace(base, headroom=headroom, burst_quantile=quantile, forecast_quantile=band)
        result = run("predictive", settings, f"predictive h={headroom} q={quantile} band={band}")
        entry = point(result, headroom)
        entry["burst_quantile"] = quantile
        entry["forecast_quantile"] = band
        sweeps["predictive"].append(entry)
    for frac in args.combined:
        result = run(
            "predictive-inflight", replace(base, headroom=0.0, inflight_target=frac), f"pred+inflight {frac}"
        )
        sweeps["predictive-inflight"].append(point(result, frac))
    for smooth in ORACLE_SMOOTHING:
        for utilisation in args.oracle_utilisation:
            oracle = OracleScaler(trace, config, utilisation=utilisation, smooth_s=smooth)
            entry = point(simulate(trace, oracle, config), utilisation)
            entry["smooth_s"] = smooth
            sweeps["oracle"].append(entry)
    for utilisation in MINUTE_ORACLE_UTILISATION:
        oracle = OracleScaler(trace, config, utilisation=utilisation, smooth_s=60)
        sweeps["oracle-minute"].append(point(simulate(trace, oracle, config), utilisation))
    for margin in args.present_margins:
        present = PresentScaler(trace, config, margin=margin)
        sweeps["present"].append(point(simulate(trace, present, config), margin))
    goal = args.goal
    best = {name: cheapest(points, goal) for name, points in sweeps.items()}
    default = next(
        (
            p
            for p in sweeps["predictive"]
            if (p["setting"], p.get("burst_quantile"), p.get("forecast_quantile", DEFAULT_BAND_QUANTILE))
            == args.default_predictive
        ),
        None,
    )
    default_ok = default if default and default["attainment"] >= goal else None
    summary = {
        "oracle_gpu_hours": best["oracle"] and best["oracle"]["gpu_hours"],
        "hpa_gpu_hours": best["hpa"] and best["hpa"]["gpu_hours"],
        "hpa_inflight_gpu_hours": best["hpa-inflight"] and best["hpa-inflight"]["gpu_hours"],
        "hpa_inflight_lb_gpu_hours": best["hpa-inflight-lb"] and best["hpa-inflight-lb"]["gpu_hours"],
        "gap_closure_tuned_vs_hpa_inflight_lb": closure(
            best["hpa-inflight-lb"], best["predictive"], best["oracle"]
        ),
        "predictive_tuned": best["predictive"],
        "predictive_default": default,
        "gap_closure_tuned_vs_hpa": closure(best["hpa"], best["predictive"], best["oracle"]),
        "gap_closure_default_vs_hpa": closure(best["hpa"], default_ok, best["oracle"]),
        "gap_closure_tuned_vs_hpa_inflight": closure(
            best["hpa-inflight"], best["predictive"], best["oracle"]
        ),
        "gap_closure_default_vs_hpa_inflight": closure(best["hpa-inflight"], default_ok, best["oracle"]),
        "minute_oracle_gpu_hours": best["oracle-minute"] and best["oracle-minute"]["gpu_hours"],
        "gap_closure_tuned_vs_minute_oracle": closure(
            best["hpa-inflight"], best["predictive"], best["oracle-minute"]
        ),
        "present_gpu_hours": best["present"] and best["present"]["gpu_hours"],
        "gap_closure_present_vs_hpa_inflight": closure(best["hpa-inflight"], best["present"], best["oracle"]),
        "predictive_inflight_tuned": best["predictive-inflight"],
        "gap_closure_predictive_inflight_vs_hpa_inflight": closure(
            best["hpa-inflight"], best["predictive-inflight"], best["oracle"]
        ),
    }
    case = {"trace": trace.name, "startup_delay_s": delay, "sweeps": sweeps, "best": best, "summary": summary}
    summary["at_common_level"] = closure_at_common_level(case, goal)
    return case


def plot(cases: list[dict[str, Any]], goal: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({c["trace"] for c in cases})
    delays = sorted({c["startup_delay_s"] for c in cases}, reverse=True)
    fig, axes = plt.subplots(
        len(delays), len(names), figsize=(4 * len(names), 3.4 * len(delays)), squeeze=False
    )
    styles = {
        "hpa": "s-",
        "hpa-inflight": "^-",
        "hpa-inflight-lb": "^:",
        "predictive": "o-",
        "predictive-inflight": "v-",
        "oracle": "*",
        "oracle-minute": "x--",
        "present": "d:",
    }
    for case in cases:
        ax = axes[delays.index(case["startup_delay_s"])][names.index(case["trace"])]
        for name, points in case["sweeps"].items():
            if name == "oracle":
                points = [p for p in points if p == case["best"]["oracle"]] or points[:1]
            xs = [p["gpu_hours"] for p in points]
            ys = [max(100 * (1 - p["attainment"]), 0.01) for p in points]
            ax.plot(xs, ys, styles[name], label=name, ms=5 if name != "oracle" else 12)
        oracle = case["best"]["oracle"]
        if oracle:  # the loosest settings cost many times the oracle: keep the interesting part
            ax.set_xlim(left=0, right=min(ax.get_xlim()[1], 2.2 * oracle["gpu_hours"]))
        ax.axhline(100 * (1 - goal), color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(f"{case['trace']} startup {case['startup_delay_s']} s", fontsize=9)
        ax.set_xlabel("GPU-hours")
        ax.set_ylabel("% requests over TTFT SLO")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces-dir", default=os.environ.get("LLMFLEET_TRACES", "../shared/traces"))
    parser.add_argument("--trace", action="append", choices=list(TRACES), help="default: all")
    parser.add_argument("--delays", type=int, nargs="+", default=[300, 120])
    parser.add_argument("--goal", type=float, default=0.99)
    parser.add_argument("--days", type=float, default=None, help="ServeGen days (default: all 14)")
    parser.add_argument("--quick", action="store_true", help="2 ServeGen days, fewer sweep points")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--burst-cv", type=float, default=None, help="ServeGen 10 s intensity cv cap (sensitivity; default 2)"
    )
    parser.add_argument(
        "--servegen-bursts",
        choices=BURST_REFERENCES,
        default="native",
        help="ServeGen 10 s fluctuations relative to the native rate (default) or to the rescaled one (the first model)",
    )
    parser.add_argument(
        "--servegen-cv",
        choices=CV_SOURCES,
        default="fitted",
        help="ServeGen client cv from the fitted distribution (default) or the cv column (the first model)",
    )
    add_data_plane_arguments(parser)
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine earlier runs' JSON into --out")
    parser.add_argument("--report", metavar="JSON", help="print the results of a run as a Markdown table")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as f:
            print(markdown(json.load(f)))
        return 0
    if args.merge:
        merged: list[dict[str, Any]] = []
        runtime = 0.0
        for name in args.merge:
            with open(name) as f:
                part = json.load(f)
            merged += part["cases"]
            runtime += part["runtime_s"]
        order = list(TRACES)
        merged.sort(
            key=lambda c: (order.index(c["trace"]) if c["trace"] in order else 99, -c["startup_delay_s"])
        )
        write(args.out, {**part, "runtime_s": runtime, "cases": merged}, args.goal)
        return 0
    args.hpa_targets, args.inflight_targets, args.headrooms = HPA_TARGETS, INFLIGHT_TARGETS, PREDICTIVE
    args.combined = COMBINED_INFLIGHT
    args.oracle_utilisation, args.present_margins = ORACLE_UTILISATION, PRESENT_MARGINS
    # the live scaler's defaults for this data plane
    defaults = ScalerSettings.defaults(FleetConfig(queue_timeout_s=args.queue_timeout))
    args.default_predictive = (defaults.headroom, defaults.burst_quantile, defaults.forecast_quantile)
    if FleetConfig(queue_timeout_s=args.queue_timeout).fails_fast:
        args.headrooms = PREDICTIVE_FAIL_FAST
        args.oracle_utilisation, args.present_margins = (
            ORACLE_UTILISATION_FAIL_FAST,
            PRESENT_MARGINS_FAIL_FAST,
        )
    if args.quick:
        args.days = args.days or 2.0
        args.hpa_targets, args.inflight_targets, args.headrooms = (2.0,), (0.7, 0.8), args.headrooms[:3]
        args.combined = (0.7,)
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    cases = []
    config = FleetConfig()
    for name in args.trace or list(TRACES):
        path = os.path.join(args.traces_dir, TRACES[name])
        extra: dict[str, Any] = {"burst_reference": args.servegen_bursts, "cv_source": args.servegen_cv}
        if args.burst_cv is not None:
            extra["max_block_cv"] = args.burst_cv
        trace = replace(load_trace(path, config.capacity, days=args.days, **extra), name=name)
        for delay in args.delays:
            case = run_case(trace, delay, args)
            cases.append(case)
            s = case["summary"]
            print(
                f"{name:<11} {delay:>4}s oracle {s['oracle_gpu_hours']} hpa {s['hpa_gpu_hours']} "
                f"hpa-inflight {s['hpa_inflight_gpu_hours']} predictive tuned {s['predictive_tuned']} "
                f"closure tuned/default vs hpa-inflight {s['gap_closure_tuned_vs_hpa_inflight']}/"
                f"{s['gap_closure_default_vs_hpa_inflight']} vs hpa {s['gap_closure_tuned_vs_hpa']}/"
                f"{s['gap_closure_default_vs_hpa']} pred+inflight {s['predictive_inflight_tuned']} "
                f"closure {s['gap_closure_predictive_inflight_vs_hpa_inflight']}",
                flush=True,
            )
    result = {
        "goal": args.goal,
        "days": args.days,
        "burst_cv": args.burst_cv,
        "servegen_bursts": args.servegen_bursts,
        "servegen_cv": args.servegen_cv,
        "queue_timeout_s": args.queue_timeout,
        "retries": args.retries if args.queue_timeout is not None else None,
        "retry_order": args.retry_order if args.queue_timeout is not None else None,
        "default_headroom": args.default_predictive[0],
        "default_burst_quantile": args.default_predictive[1],
        "default_band_quantile": args.default_predictive[2],
        "runtime_s": round(time.monotonic() - started, 1),
        "cases": cases,
    }
    write(args.out, result, args.goal)
    return 0


def markdown(result: dict[str, Any]) -> str:
    """The summary table of docs/autoscaling.md."""

    def gpu(p: dict[str, Any] | None) -> str:
        return f"{p['gpu_hours']:.0f} ({p['attainment']:.2%})" if p else "never"

    def pct(x: float | None) -> str:
        return f"{x:.0%}" if x is not None else "n/a"

    rows = [
        "| trace | startup | oracle | HPA queue depth | HPA in-flight | predictive tuned (headroom) "
        "| predictive default | gap closed at 99%: tuned / default | predictive + in-flight HPA "
        "| common level | GPU-h there: HPA in-flight / predictive / oracle | gap closed there "
        "| minute-rate oracle | tuned's share of the forecastable gap | present-knowledge reference (gap closed) "
        "| HPA in-flight + balancer queue (tuned's gap closed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        best, s = case["best"], case["summary"]
        common = closure_at_common_level(case, result["goal"])
        tuned = best["predictive"]
        tuned_txt = (
            f"{gpu(tuned)} (h={tuned['setting']:g}, burst q={tuned.get('burst_quantile', '-')}, "
            f"band {tuned.get('forecast_quantile', 0.9):g})"
            if tuned
            else "never"
        )
        there = " / ".join(
            f"{common[k]:.0f}" if common[k] is not None else "-"
            for k in ("hpa_inflight", "predictive", "oracle")
        )
        rows.append(
            f"| {case['trace']} | {case['startup_delay_s']} s | {gpu(best['oracle'])} | {gpu(best['hpa'])} "
            f"| {gpu(best['hpa-inflight'])} | {tuned_txt} | {gpu(s['predictive_default'])} "
            f"| {pct(s['gap_closure_tuned_vs_hpa_inflight'])} / {pct(s['gap_closure_default_vs_hpa_inflight'])} "
            f"| {gpu(best['predictive-inflight'])} | {common['level']:.2%} | {there} | {pct(common['gap_closure'])} "
            f"| {gpu(best.get('oracle-minute'))} | {pct(s.get('gap_closure_tuned_vs_minute_oracle'))} "
            f"| {gpu(best.get('present'))} ({pct(s.get('gap_closure_present_vs_hpa_inflight'))}) "
            f"| {gpu(best.get('hpa-inflight-lb')) if case['sweeps'].get('hpa-inflight-lb') else '-'} "
            f"({pct(s.get('gap_closure_tuned_vs_hpa_inflight_lb'))}) |"
        )
    return "\n".join(rows)


def write(out: str, result: dict[str, Any], goal: float) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "autoscaling.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result["cases"], goal, os.path.join(out, "autoscaling.png"))
    print(f"wrote {out}/autoscaling.json and autoscaling.png ({result['runtime_s']} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
