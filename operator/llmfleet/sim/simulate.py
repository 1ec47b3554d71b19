"""Replay a request trace against a simulated fleet and compare scalers (HPA, predictive, oracle).

PATH is an Azure LLM trace CSV, a ServeGen model folder (one CSV per client), or a folder
holding several of either (each is run). Load is rescaled so that its mean equals
``--load-replicas`` fully busy replicas. The oracle row is the cheapest oracle reaching the
attainment goal (utilisation swept from 100% down for each smoothing window), the reference
for "vs oracle".
Prints a results table and writes one PNG per trace (load, replicas, violations over time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

SCALERS = ("hpa", "hpa-inflight", "predictive", "oracle")
ORACLE_UTILISATIONS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)
ORACLE_SMOOTHING_S = (60, 30, 15, 5, 1)
# Failing fast, a shortage costs only its excess: the cheapest oracle may plan below the load.
ORACLE_UTILISATIONS_FAIL_FAST = (1.1, 1.05, *ORACLE_UTILISATIONS)


def add_data_plane_arguments(parser: argparse.ArgumentParser) -> None:
    """The balancer's queue discipline and the clients' retries (also bench/autoscaling.py's)."""
    from llmfleet.sim.fleet import FleetConfig

    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the balancer turns away requests that would wait longer (haproxy queueSeconds; 0 for nginx "
        "at a concurrency cap); default: an unbounded FIFO queue",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=FleetConfig().retries,
        help="with --queue-timeout: times a rejected client retries, 1 s apart (2: as OpenAI's SDKs)",
    )
    parser.add_argument(
        "--retry-order",
        choices=("last", "fifo"),
        default="last",
        help="last: the balancer queues retries behind first attempts (the rendered haproxy, for clients "
        "that send x-stainless-retry-count, as OpenAI's SDKs do); fifo: retries queue like new requests",
    )


def data_plane(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`~llmfleet.sim.fleet.FleetConfig` fields from :func:`add_data_plane_arguments`."""
    return {
        "queue_timeout_s": args.queue_timeout,
        "retries": args.retries,
        "retries_last": args.retry_order == "last",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from llmfleet.sim.traces import BURST_REFERENCES, CV_SOURCES

    parser.add_argument("--trace", required=True, help="Azure CSV, ServeGen folder, or a folder of them")
    parser.add_argument("--scaler", default="all", choices=[*SCALERS, "all"])
    parser.add_argument("--startup-delay", type=int, default=300, help="seconds until a new replica serves")
    parser.add_argument("--metric-lag", type=int, default=30, help="age of the metrics a scaler sees (s)")
    parser.add_argument("--load-replicas", type=float, default=16.0, help="mean load in fully busy replicas")
    parser.add_argument(
        "--days", type=float, default=None, help="use only the first DAYS of a ServeGen trace"
    )
    parser.add_argument("--slo-ms", type=float, default=1000.0, help="TTFT SLO (ms)")
    parser.add_argument("--goal", type=float, default=0.99, help="SLO attainment goal")
    add_data_plane_arguments(parser)
    parser.add_argument(
        "--headroom",
        type=float,
        default=None,
        help="predictive headroom; unset: the operator's, 0.2, or 0 when the balancer fails fast",
    )
    parser.add_argument(
        "--target-queue-depth", type=float, default=8.0, help="HPA waiting requests per replica"
    )
    parser.add_argument(
        "--inflight-target", type=float, default=0.8, help="hpa-inflight: fraction of a batch"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--servegen-cv",
        choices=CV_SOURCES,
        default="fitted",
        help="ServeGen client cv: its fitted distribution's, or the trace's cv column (burstier)",
    )
    parser.add_argument(
        "--servegen-bursts",
        choices=BURST_REFERENCES,
        default="native",
        help="ServeGen 10 s fluctuations relative to the native rate, or to the rescaled one (burstier)",
    )
    parser.add_argument("--plot-dir", default="simulate-results", help="where the PNG plots go ('' for none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class ProgressBar:
    """A one-line progress bar on stderr (no dependency); silent when not wanted."""

    def __init__(self, label: str, enabled: bool = True, width: int = 30) -> None:
        self.label, self.enabled, self.width = label, enabled, width
        self.started = time.monotonic()
        self.last = -1

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        percent = int(fraction * 100)
        if percent - self.last < 5 and fraction < 1.0:
            return
        self.last = percent
        filled = int(fraction * self.width)
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r{self.label:<40} |{'#' * filled}{'.' * (self.width - filled)}| {percent:3d}% {elapsed:5.1f}s"
        )
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_trace(
    path: str, args: argparse.Namespace, kinds: Sequence[str], progress: Callable[[str], ProgressBar]
) -> tuple[str, list[object]]:
    from llmfleet.scaling.forecast import Forecast
    from llmfleet.sim.fleet import FleetConfig, simulate
    from llmfleet.sim.results import SimResult
    from llmfleet.sim.scalers import ScalerSettings, make_scaler
    from llmfleet.sim.traces import load_trace

    config = FleetConfig(
        startup_delay_s=args.startup_delay,
        metric_lag_s=args.metric_lag,
        slo_ttft_s=args.slo_ms / 1000.0,
        **data_plane(args),
    )
    trace = load_trace(
        path,
        config.capacity,
        load_replicas=args.load_replicas,
        seed=args.seed,
        days=args.days,
        burst_reference=args.servegen_bursts,
        cv_source=args.servegen_cv,
    )
    defaults = ScalerSettings.defaults(config)
    settings = replace(
        defaults,
        target_queue_depth=args.target_queue_depth,
        headroom=defaults.headroom if args.headroom is None else args.headroom,
        inflight_target=args.inflight_target,
    )
    cache: dict[tuple[int, float, float], Forecast] = {}
    results: list[SimResult] = []
    for kind in kinds:
        if kind == "oracle":
            best: SimResult | None = None
            for smooth in ORACLE_SMOOTHING_S:
                for utilisation in (
                    ORACLE_UTILISATIONS_FAIL_FAST if config.fails_fast else ORACLE_UTILISATIONS
                ):
                    oracle = replace(settings, oracle_utilisation=utilisation, oracle_smooth_s=smooth)
                    label = f"{trace.name} oracle {smooth}s@{utilisation:.0%}"
                    result = simulate(
                        trace, make_scaler(kind, trace, config, oracle), config, progress(label)
                    )
                    if result.slo_attainment >= args.goal:
                        break
                if best is None or _better(result, best, args.goal):
                    best = result
            assert best is not None
            result = best
        else:
            scaler = make_scaler(kind, trace, config, settings, cache)
            result = simulate(trace, scaler, config, progress(f"{trace.name} {kind}"))
        results.append(result)
    return trace.name, list(results)


def _better(a: object, b: object, goal: float) -> bool:
    """Cheaper among results reaching ``goal``; a result reaching it beats one that does not."""
    from llmfleet.sim.results import SimResult

    assert isinstance(a, SimResult) and isinstance(b, SimResult)
    a_ok, b_ok = a.slo_attainment >= goal, b.slo_attainment >= goal
    if a_ok != b_ok:
        return a_ok
    return a.gpu_hours < b.gpu_hours if a_ok else a.slo_attainment > b.slo_attainment


def format_table(name: str, results: Sequence[object], goal: float) -> str:
    from llmfleet.sim.results import SimResult

    rows = [r for r in results if isinstance(r, SimResult)]
    oracle = next((r for r in rows if r.scaler == "oracle"), None)
    lines = [
        f"{name}",
        f"  {'scaler':<14}{'SLO attain':>11}{'goal':>6}{'GPU-h':>10}{'vs oracle':>11}{'TTFT p95 s':>12}{'events':>8}"
        f"{'rejected':>10}",
    ]
    for r in rows:
        ratio = f"{r.gpu_hours / oracle.gpu_hours:.2f}x" if oracle and oracle.gpu_hours > 0 else "-"
        met = "yes" if r.slo_attainment >= goal else "no"
        lines.append(
            f"  {r.scaler:<14}{r.slo_attainment:>10.2%}{met:>7}{r.gpu_hours:>10.1f}{ratio:>11}"
            f"{r.ttft_quantile(0.95):>12.2f}{r.scaling_events:>8d}{r.rejected_requests / max(r.requests, 1e-12):>10.2%}"
        )
    return "\n".join(lines)


def plot(name: str, results: Sequence[object], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmfleet.sim.results import SimResult

    rows = [r for r in results if isinstance(r, SimResult)]
    span = rows[0].ready.size
    step = 60 if span <= 6 * 3600 else 600
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    unit, scale = ("min", 60.0) if step == 60 else ("h", 3600.0)
    first = rows[0].timeline(step)
    axes[0].plot(first["t_s"] / scale, first["load_rps"], color="black", lw=0.8)
    axes[0].set_ylabel("load (req/s)")
    for r in rows:
        tl = r.timeline(step)
        axes[1].plot(tl["t_s"] / scale, tl["total"], lw=0.8, label=f"{r.scaler} ({r.gpu_hours:.0f} GPU-h)")
        axes[2].plot(
            tl["t_s"] / scale, tl["violations"], lw=0.8, label=f"{r.scaler} ({r.slo_attainment:.2%})"
        )
    axes[1].set_ylabel("replicas (incl. starting)")
    axes[2].set_ylabel(f"TTFT violations / {step} s")
    axes[2].set_xlabel(f"time ({unit})")
    axes[1].legend(fontsize=8, loc="upper left")
    axes[2].legend(fontsize=8, loc="upper left")
    axes[0].set_title(f"{name}: load, replicas and SLO violations per scaler")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from llmfleet.sim.traces import discover

    paths = discover(args.trace)
    if not paths:
        print(f"no trace found under {args.trace}", file=sys.stderr)
        return 2
    kinds = list(SCALERS) if args.scaler == "all" else [args.scaler]
    if args.plot_dir:
        os.makedirs(args.plot_dir, exist_ok=True)
    for path in paths:
        name, results = run_trace(path, args, kinds, lambda label: ProgressBar(label, not args.quiet))
        print(format_table(name, results, args.goal), flush=True)
        if args.plot_dir:
            target = os.path.join(args.plot_dir, f"{name}.png")
            plot(name, results, target)
            print(f"  plot: {target}", flush=True)
    return 0
