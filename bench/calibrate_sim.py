"""Fit a sim-server profile to a real engine measured in the same run, then report the sim's error.

The sim-server's latency model (docs/sim-server.md) has three timing parameters::

    step = decode_base + decode_per_seq * running + prefill_per_token * prompt tokens admitted

plus a slot limit (``max_num_seqs``, llama.cpp's ``--parallel``) beyond which requests wait in a
FIFO queue (``llamacpp:requests_deferred``). This script

1. starts the real server (default: the repo's llama-server, ``small`` test model,
   ``--parallel 4 --threads 1 --cache-ram 0 --ctx-size 4096``) and measures, with streaming
   ``/v1/completions`` and a fresh connection per request:

   * a prompt-length sweep at concurrency 1 (TTFT vs prompt tokens): the slope is the prefill
     cost per token;
   * fixed-prompt levels at concurrency 1 and 4 (never beyond the slots): the median
     inter-token latency vs running sequences gives ``decode_base`` and ``decode_per_seq``
     (least squares through the fit levels, clamped at zero; concurrency 2 is measured too and
     only reported, as a check of the linear model);
   * the TTFT intercept beyond one decode step becomes ``prefill_base`` (a fixed cost of a step
     that admits requests: request setup, the prompt batch's graph);

2. measures the sim-server's own per-step overhead with the fitted profile at the fit levels
   (its measured ITL beyond the model's: timer lateness and its own work, ~0.8 ms here) and
   subtracts it from ``decode_base`` (``--no-sim-overhead-correction`` keeps the raw fit);
   writes the fitted profile (``operator/llmfleet/sim/profiles/llamacpp-tiny-cpu.json`` by
   default);
3. starts ``llmfleet sim-server --profile PROFILE --metrics-flavor llamacpp`` and, ``--repeats``
   times, runs each comparison level (concurrency 1, 4, 8) on the real server and then at once
   on the sim, so both see about the same machine load; reports TTFT p50, output tokens/s and
   ITL p50 per level, and the sim's relative error against the real server (medians over the
   repeats), prints a table and writes ``bench/results/calibration.json``.

Prompts are lists of token ids (random lowercase-letter byte tokens, a different prompt per
request, ``cache_prompt: false``): llama-server takes them as they are and the sim-server counts
their length, so both see exactly the same number of prompt tokens (the sim's regex would count a
text prompt differently from the engine's tokenizer). The test models never emit end-of-text, so
every request runs exactly to ``max_tokens``.

Refit for another engine or machine with ``--server-cmd`` (``{port}`` is replaced by a free
port; the server must serve /health, streaming /v1/completions and accept token-id prompts)::

    python bench/calibrate_sim.py --server-cmd "llama-server -m M.gguf --host 127.0.0.1 --port {port} --parallel 8" \\
        --slots 8 --profile-out my-profile.json

Every phase is bounded: ``--rounds`` requests per client and a time cap per level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.llama import llama_server_binary, tiny_model  # noqa: E402
from tests.support.process import PYTHON, free_port, http_ok, managed  # noqa: E402

DEFAULT_PROFILE = ROOT / "operator" / "llmfleet" / "sim" / "profiles" / "llamacpp-tiny-cpu.json"
DEFAULT_RESULTS = ROOT / "bench" / "results" / "calibration.json"
PROMPT_TOKEN_IDS = range(ord("a"), ord("z") + 1)  # byte tokens of the test models (id = byte)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One streamed request as the client saw it (seconds since the level started)."""

    start: float
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    end: float = 0.0
    error: str | None = None


async def stream_one(
    client: httpx.AsyncClient, url: str, prompt: list[int], max_tokens: int, t0: float
) -> Sample:
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "cache_prompt": False,
        "temperature": 0.0,
    }
    sample = Sample(start=time.perf_counter() - t0)
    last: float | None = None
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return sample
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                choices = event.get("choices") or []
                if not (choices and choices[0].get("text")):
                    continue
                now = time.perf_counter() - t0
                if sample.ttft is None:
                    sample.ttft = now - sample.start
                elif last is not None:
                    sample.gaps.append(now - last)
                last = now
                sample.tokens += 1
    except httpx.HTTPError as error:
        sample.error = f"{type(error).__name__}: {error}"
    sample.end = time.perf_counter() - t0
    if sample.error is None and sample.tokens != max_tokens:
        sample.error = f"{sample.tokens} tokens instead of {max_tokens}"
    return sample


def prompt_ids(rng: random.Random, length: int) -> list[int]:
    return [rng.choice(PROMPT_TOKEN_IDS) for _ in range(length)]


@dataclass
class Level:
    """What one closed-loop level measured."""

    concurrency: int
    prompt_tokens: int
    max_tokens: int
    requests: int
    errors: int
    ttft_p50_ms: float
    itl_p50_ms: float
    output_tok_s: float
    seconds: float
    max_processing: float
    max_deferred: float
    loadavg_1m: float
    error_examples: list[str]


def llamacpp_gauges(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:requests_"):
            sample, _, value = line.rpartition(" ")
            values[sample] = float(value)
    return values


async def run_level(
    url: str,
    concurrency: int,
    rounds: int,
    prompt_tokens: int,
    max_tokens: int,
    cap_seconds: float,
    rng: random.Random,
) -> Level:
    """``concurrency`` clients, each sending ``rounds`` requests one after the other (stopping at
    the time cap); a poller records the most processing and deferred requests /metrics showed."""
    limits = httpx.Limits(max_keepalive_connections=0)  # llama-server closes after each stream
    timeout = httpx.Timeout(max(cap_seconds, 60.0), connect=5.0)
    samples: list[Sample] = []
    peaks = {"llamacpp:requests_processing": 0.0, "llamacpp:requests_deferred": 0.0}
    done = asyncio.Event()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()

        async def worker() -> None:
            for _ in range(rounds):
                if time.perf_counter() - t0 > cap_seconds:
                    return
                samples.append(await stream_one(client, url, prompt_ids(rng, prompt_tokens), max_tokens, t0))

        async def poll() -> None:
            while not done.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    gauges = llamacpp_gauges((await client.get(f"{url}/metrics")).text)
                    for name in peaks:
                        peaks[name] = max(peaks[name], gauges.get(name, 0.0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.05)

        poller = asyncio.create_task(poll())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
        done.set()
        await poller
    good = [s for s in samples if s.error is None]
    ttfts = [s.ttft for s in good if s.ttft is not None]
    gaps = [gap for s in good for gap in s.gaps]
    return Level(
        concurrency=concurrency,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        requests=len(samples),
        errors=len(samples) - len(good),
        ttft_p50_ms=1000 * float(np.median(ttfts)) if ttfts else float("nan"),
        itl_p50_ms=1000 * float(np.median(gaps)) if gaps else float("nan"),
        output_tok_s=sum(s.tokens for s in good) / seconds,
        seconds=seconds,
        max_processing=peaks["llamacpp:requests_processing"],
        max_deferred=peaks["llamacpp:requests_deferred"],
        loadavg_1m=os.getloadavg()[0],
        error_examples=[s.error for s in samples if s.error][:3],
    )


async def prompt_sweep(
    url: str, lengths: Sequence[int], reps: int, rng: random.Random
) -> list[tuple[int, float]]:
    """TTFT (s) of single requests (max_tokens 2) at each prompt length, interleaved over lengths."""
    points: list[tuple[int, float]] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        for _ in range(reps):
            for length in lengths:
                sample = await stream_one(client, url, prompt_ids(rng, length), 2, time.perf_counter())
                if sample.error is None and sample.ttft is not None:
                    points.append((length, sample.ttft))
    return points


# -- fitting ------------------------------------------------------------------------------------


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` with ``a, b >= 0`` (a negative slope or intercept is clamped
    to 0 and the other refitted: the closed form of non-negative least squares in 2 unknowns)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(set(xs)) < 2:
        return max(float(np.mean(y)), 0.0), 0.0
    b, a = np.polyfit(x, y, 1)
    if b < 0:
        return max(float(np.mean(y)), 0.0), 0.0
    if a < 0:
        return 0.0, max(float(np.dot(x, y) / np.dot(x, x)), 0.0)
    return float(a), float(b)


def fit_profile(
    sweep: list[tuple[int, float]],
    itl_levels: list[Level],
    check_levels: list[Level],
    slots: int,
    ctx_size: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sim-server profile and the fit's diagnostics."""
    # ITL vs running sequences (concurrency <= slots, so running = concurrency in the decode steps).
    running = [level.concurrency for level in itl_levels]
    itls = [level.itl_p50_ms / 1000 for level in itl_levels]
    decode_base, decode_per_seq = fit_line(running, itls)
    measured = {level.concurrency: level.itl_p50_ms for level in [*itl_levels, *check_levels]}
    # TTFT vs prompt tokens at concurrency 1, fitted on the median of each length.
    lengths = sorted({length for length, _ in sweep})
    medians = [float(np.median([t for n, t in sweep if n == length])) for length in lengths]
    intercept, prefill = fit_line(lengths, medians)
    prefill_base = max(0.0, intercept - decode_base - decode_per_seq)
    profile = {
        "max_num_seqs": slots,
        "max_num_batched_tokens": 2048,  # llama-server's default --batch-size
        "kv_cache_tokens": ctx_size,
        "max_model_len": ctx_size // slots,  # --ctx-size is split across the slots
        "prefill_seconds_per_token": round(prefill, 7),
        "prefill_base_seconds": round(prefill_base, 6),
        "decode_base_seconds": round(decode_base, 6),
        "decode_per_seq_seconds": round(decode_per_seq, 6),
        "output_tokens_dist": "max_tokens",
        "metrics_flavor": "llamacpp",
    }
    predicted_ttft = [decode_base + decode_per_seq + prefill_base + prefill * n for n in lengths]
    diagnostics = {
        "itl_fitted_on": running,
        "itl_measured_ms": {str(n): round(t, 2) for n, t in sorted(measured.items())},
        "itl_predicted_ms": {
            str(n): round(1000 * (decode_base + decode_per_seq * n), 2) for n in sorted(measured)
        },
        "ttft_sweep_median_ms": {str(n): round(1000 * t, 1) for n, t in zip(lengths, medians, strict=True)},
        "ttft_sweep_predicted_ms": {
            str(n): round(1000 * t, 1) for n, t in zip(lengths, predicted_ttft, strict=True)
        },
        "ttft_intercept_ms": round(1000 * intercept, 2),
        "ttft_intercept_beyond_one_step_ms": round(1000 * (intercept - decode_base - decode_per_seq), 2),
    }
    return profile, diagnostics


# -- servers ------------------------------------------------------------------------------------


def default_server_cmd(slots: int, ctx_size: int) -> str:
    binary, model = shlex.quote(str(llama_server_binary())), shlex.quote(str(tiny_model("small")))
    return (
        f"{binary} -m {model} --host 127.0.0.1 --port {{port}} --parallel {slots} --ctx-size {ctx_size} "
        "--threads 1 --cache-ram 0 --metrics"
    )


@contextlib.contextmanager
def server(argv: list[str], port: int, log: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    with managed(argv, log, ready=lambda: http_ok(f"{url}/health"), timeout=120):
        yield url


def sim_argv(port: int, profile: Path) -> list[str]:
    return [
        PYTHON,
        "-m",
        "llmfleet.cli",
        "sim-server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--profile",
        str(profile),
        "--metrics-flavor",
        "llamacpp",
        "--id",
        "calibration",
    ]


def measure_sim_overhead(
    profile: dict[str, Any], tmp: Path, levels: list[Level], level: Callable[[str, int], Level]
) -> dict[int, float]:
    """Seconds each sim-server step takes beyond the modelled duration on this machine, per level.

    The sim sleeps for each step and then spends time of its own (timer lateness behind the
    handlers writing the previous step's tokens, admission) before the next one starts, so its ITL
    is the model's plus an overhead that grows with the streams served (about 0.9 ms with one and
    1 to 2 ms with four on the loaded 2-core machine). Run the fitted profile at the fit levels and
    return the measured ITL's excess over the model's at each.
    """
    path = tmp / "provisional-profile.json"
    path.write_text(json.dumps(profile))
    port = free_port()
    with server(sim_argv(port, path), port, tmp / "sim-provisional.log") as url:
        measured = [level(url, m.concurrency) for m in levels]
    base, per_seq = profile["decode_base_seconds"], profile["decode_per_seq_seconds"]
    excess = {
        m.concurrency: max(0.0, m.itl_p50_ms / 1000 - (base + per_seq * m.concurrency)) for m in measured
    }
    print(f"  sim overhead per step (ms): { {n: round(1000 * e, 3) for n, e in excess.items()} }", flush=True)
    return excess


def portable(text: str) -> str:
    """``text`` with the checkout as ``.`` and the home directory as ``~``."""
    return text.replace(str(ROOT), ".").replace(str(Path.home()), "~")


# -- main ---------------------------------------------------------------------------------------


def rel_error(sim: float, real: float) -> float:
    return (sim - real) / real if real else float("nan")


def summarize(levels: list[Level]) -> dict[str, float]:
    return {
        "ttft_p50_ms": float(np.median([level.ttft_p50_ms for level in levels])),
        "output_tok_s": float(np.median([level.output_tok_s for level in levels])),
        "itl_p50_ms": float(np.median([level.itl_p50_ms for level in levels])),
        "max_deferred": max(level.max_deferred for level in levels),
        "max_processing": max(level.max_processing for level in levels),
        "errors": sum(level.errors for level in levels),
    }


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server-cmd", help="real server command line with {port} (default: llama-server, small model)"
    )
    parser.add_argument("--slots", type=int, default=4, help="the real server's slots (--parallel)")
    parser.add_argument("--ctx-size", type=int, default=4096, help="the real server's --ctx-size (all slots)")
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--levels", type=ints, default=[1, 4, 8], help="concurrencies compared")
    parser.add_argument(
        "--fit-levels", type=ints, default=[1, 4], help="concurrencies (<= slots) for the ITL fit"
    )
    parser.add_argument(
        "--check-levels", type=ints, default=[2], help="measured beside the fit levels, not fitted"
    )
    parser.add_argument(
        "--sweep", type=ints, default=[32, 96, 192, 384, 640], help="prompt lengths of the TTFT sweep"
    )
    parser.add_argument("--sweep-reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="requests per client per level")
    parser.add_argument("--repeats", type=int, default=2, help="real-then-sim passes over the levels")
    parser.add_argument("--level-cap-seconds", type=float, default=60.0, help="no new request after this")
    parser.add_argument(
        "--no-sim-overhead-correction",
        dest="sim_overhead_correction",
        action="store_false",
        help="keep decode_base as fitted (default: less the sim-server's own per-step overhead)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-out", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument(
        "--profile-in", type=Path, help="skip the fit: compare this profile with the real server"
    )
    return parser.parse_args(argv)


def fmt_level(level: Level) -> str:
    return (
        f"c={level.concurrency}: TTFT p50 {level.ttft_p50_ms:7.1f} ms, ITL p50 {level.itl_p50_ms:6.2f} ms, "
        f"{level.output_tok_s:6.1f} tok/s, {level.requests} req, {level.errors} err, "
        f"processing<={level.max_processing:.0f} deferred<={level.max_deferred:.0f}, load {level.loadavg_1m:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    cmd = args.server_cmd or default_server_cmd(args.slots, args.ctx_size)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = os.getloadavg()

    def level(url: str, concurrency: int) -> Level:
        result = asyncio.run(
            run_level(
                url,
                concurrency,
                args.rounds,
                args.prompt_tokens,
                args.max_tokens,
                args.level_cap_seconds,
                rng,
            )
        )
        return result

    with tempfile.TemporaryDirectory(prefix="calibrate-sim-") as tmp:
        real_port = free_port()
        real_argv = shlex.split(cmd.replace("{port}", str(real_port)))
        with server(real_argv, real_port, Path(tmp) / "real.log") as real_url:
            asyncio.run(prompt_sweep(real_url, [args.prompt_tokens], 1, rng))  # warm up
            diagnostics: dict[str, Any] = {}
            fit_levels: list[Level] = []
            check_levels: list[Level] = []
            if args.profile_in is None:
                print(f"real server: {cmd}", flush=True)
                sweep = asyncio.run(prompt_sweep(real_url, args.sweep, args.sweep_reps, rng))
                for concurrency in sorted({*args.fit_levels, *args.check_levels}):
                    measured = level(real_url, concurrency)
                    (fit_levels if concurrency in args.fit_levels else check_levels).append(measured)
                    print("  fit " + fmt_level(measured), flush=True)
                profile, diagnostics = fit_profile(sweep, fit_levels, check_levels, args.slots, args.ctx_size)
                note = "decode parameters as fitted"
                if args.sim_overhead_correction:
                    overhead = measure_sim_overhead(profile, Path(tmp), fit_levels, level)
                    # Refit ITL = base + per_seq * n on the real ITL less the sim's own overhead at n.
                    target = [m.itl_p50_ms / 1000 - overhead[m.concurrency] for m in fit_levels]
                    base, per_seq = fit_line([m.concurrency for m in fit_levels], target)
                    profile["decode_base_seconds"] = round(base, 6)
                    profile["decode_per_seq_seconds"] = round(per_seq, 6)
                    diagnostics["sim_step_overhead_ms"] = {
                        str(n): round(1000 * o, 3) for n, o in overhead.items()
                    }
                    diagnostics["itl_corrected_model_ms"] = {
                        str(m.concurrency): round(1000 * (base + per_seq * m.concurrency), 2)
                        for m in fit_levels
                    }
                    note = (
                        "decode parameters fitted to the real ITL less the sim-server's own per-step overhead"
                    )
                profile["_calibration"] = (
                    f"fitted by bench/calibrate_sim.py at {started} against: {portable(cmd)}; "
                    f"prompts of token ids, {args.prompt_tokens} tokens, max_tokens {args.max_tokens}; "
                    f"{note}; "
                    f"load average {load_start[0]:.2f}; see docs/sim-server.md#calibration"
                )
                args.profile_out.parent.mkdir(parents=True, exist_ok=True)
                args.profile_out.write_text(json.dumps(profile, indent=2) + "\n")
                profile_path = args.profile_out
                print(f"fitted profile -> {profile_path}: {json.dumps(diagnostics)}", flush=True)
            else:
                profile_path = args.profile_in
                profile = json.loads(profile_path.read_text())
            sim_port = free_port()
            with server(sim_argv(sim_port, profile_path), sim_port, Path(tmp) / "sim.log") as sim_url:
                runs: dict[str, dict[int, list[Level]]] = {"real": {}, "sim": {}}
                for repeat in range(args.repeats):
                    for concurrency in args.levels:
                        for kind, url in (("real", real_url), ("sim", sim_url)):
                            result = level(url, concurrency)
                            runs[kind].setdefault(concurrency, []).append(result)
                            print(f"  pass {repeat + 1} {kind:4} " + fmt_level(result), flush=True)
                sim_sweep = asyncio.run(prompt_sweep(sim_url, args.sweep, 1, rng))

    table = []
    for concurrency in args.levels:
        real, sim = summarize(runs["real"][concurrency]), summarize(runs["sim"][concurrency])
        table.append(
            {
                "concurrency": concurrency,
                "real": real,
                "sim": sim,
                "error": {
                    key: rel_error(sim[key], real[key])
                    for key in ("ttft_p50_ms", "output_tok_s", "itl_p50_ms")
                },
            }
        )
    goal = 0.25
    met = all(abs(row["error"][k]) <= goal for row in table for k in ("ttft_p50_ms", "output_tok_s"))
    print()
    print(
        f"{'conc':>4} | {'TTFT p50 real':>13} {'sim':>8} {'err':>6} | {'tok/s real':>10} {'sim':>6} {'err':>6} | "
        f"{'ITL p50 real':>12} {'sim':>6} {'err':>6} | deferred real/sim"
    )
    for row in table:
        r, s, e = row["real"], row["sim"], row["error"]
        print(
            f"{row['concurrency']:>4} | {r['ttft_p50_ms']:>10.0f} ms {s['ttft_p50_ms']:>8.0f} {e['ttft_p50_ms']:>+6.0%} | "
            f"{r['output_tok_s']:>10.1f} {s['output_tok_s']:>6.1f} {e['output_tok_s']:>+6.0%} | "
            f"{r['itl_p50_ms']:>9.2f} ms {s['itl_p50_ms']:>6.2f} {e['itl_p50_ms']:>+6.0%} | "
            f"{r['max_deferred']:.0f}/{s['max_deferred']:.0f}"
        )
    load_end = os.getloadavg()
    print(
        f"goal (TTFT p50 and tok/s within {goal:.0%} at every level): {'met' if met else 'NOT met'}; "
        f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
    )
    report: dict[str, Any] = {
        "started": started,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "server_cmd": portable(cmd),
        "profile": profile,
        "fit": {"diagnostics": diagnostics, "levels": [asdict(x) for x in [*fit_levels, *check_levels]]},
        "compare": table,
        "goal": {"max_relative_error": goal, "met": met},
        "runs": {
            kind: {str(c): [asdict(x) for x in v] for c, v in per.items()} for kind, per in runs.items()
        },
        "sim_sweep_ttft_ms": [[n, round(1000 * t, 1)] for n, t in sim_sweep],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"results -> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
