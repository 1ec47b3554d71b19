"""Data-plane benchmark: what the nginx and haproxy tiers cost, and how the strategies compare.

Loopback only, bounded in requests and time. Real ``llmfleet sim-server`` backends, the real
nginx and haproxy running the configs the operator renders, one asyncio/aiohttp client.

Phase 1, *tier overhead*: closed-loop streaming clients (64 and 256 at once), each sending
fixed-length streamed completions, straight to the backends (the client alternates between
them) and through each balancer (least-conn). Reports p50/p99 TTFT and total latency and the
difference to direct.

Phase 2, *strategies*: open-loop Poisson arrivals near the fleet's capacity, output and prompt
lengths drawn from the Azure LLM inference trace 2023 (conversation), against backends with a
small batch (``--max-num-seqs``) so a badly placed long request makes others queue. Compares
round-robin, least-conn and session-affinity (32 sessions) on each engine: p50/p99 TTFT,
throughput and per-backend load spread (requests, generated tokens, peak queue).

The machine is shared and small; the script records the load average and the CPU time the
client, balancers and backends used in each run, so a reader can tell when the client or the
backends, not the balancer, were the bottleneck.

    python bench/dataplane.py            # full run, ~4 minutes
    python bench/dataplane.py --quick    # smaller, ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import llmclient  # noqa: E402
from tests.support.loadbalancer import (  # noqa: E402
    Backend,
    Balancer,
    load_balancer,
    parse_metrics,
    service_spec,
    start_backends,
)

TRACE = ROOT.parent / "shared" / "traces" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
if not TRACE.exists():  # a checkout next to /work/shared
    TRACE = Path("/work/shared/traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
RESULTS = ROOT / "bench" / "results" / "dataplane.json"
ENGINES = ("nginx", "haproxy")
STRATEGIES = ("round-robin", "least-conn", "session-affinity")


# -- measurement helpers ---------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU seconds of every live process in a process group (balancer master + workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # fields[2] is pgrp (field 5 of stat)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds spent by the client, the balancer and the backends during one run."""

    def __init__(self, backends: Sequence[Backend], balancer: Balancer | None) -> None:
        self.groups = {"backends": [b.server.process.pid for b in backends]}
        if balancer is not None:
            self.groups["balancer"] = [balancer.process.pid]

    def sample(self) -> dict[str, float]:
        sample = {name: sum(group_cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        sample["client"] = self_cpu_seconds()
        return sample

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        before, load_before, started = self.sample(), os.getloadavg()[0], time.monotonic()
        yield
        elapsed = time.monotonic() - started
        after = self.sample()
        into["cpu_seconds"] = {k: round(after[k] - before[k], 2) for k in after}
        into["cpu_cores_used"] = {k: round((after[k] - before[k]) / elapsed, 2) for k in after}
        into["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    array = np.asarray(values) * 1000.0
    return {
        "p50": round(float(np.percentile(array, 50)), 1),
        "p99": round(float(np.percentile(array, 99)), 1),
    }


def summarize(outcomes: Sequence[llmclient.Outcome], elapsed: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    return {
        "requests": len(outcomes),
        "ok": len(ok),
        "failed": len(outcomes) - len(ok),
        "ttft_ms": percentiles([o.ttft for o in ok if o.ttft is not None]),
        "total_ms": percentiles([o.total for o in ok]),
        "throughput_rps": round(len(ok) / elapsed, 2),
        "tokens_per_s": round(sum(o.tokens for o in ok) / elapsed, 1),
        "seconds": round(elapsed, 2),
    }


def backend_counters(backends: Sequence[Backend]) -> dict[str, dict[str, float]]:
    counters = {}
    for backend in backends:
        samples = parse_metrics(backend.server.metrics_text())
        counters[backend.name] = {
            "requests": sum(
                v for k, v in samples.items() if k.startswith("llmfleet_sim_requests_received_total")
            ),
            "tokens": sum(v for k, v in samples.items() if k.startswith("vllm:generation_tokens_total")),
        }
    return counters


# -- phase 1: tier overhead ------------------------------------------------------------------


async def closed_loop(
    targets: Sequence[str], clients: int, per_client: int, max_tokens: int
) -> tuple[list[llmclient.Outcome], float]:
    """``clients`` concurrent streams, each sending ``per_client`` requests back to back."""
    outcomes: list[llmclient.Outcome] = []
    async with llmclient.session(limit=clients) as client:
        # One warm-up request per target opens connections and pays first-request costs.
        for target in targets:
            await llmclient.stream_completion(client, target, 2)

        async def user(index: int) -> None:
            for round_ in range(per_client):
                target = targets[(index + round_) % len(targets)]
                outcomes.append(await llmclient.stream_completion(client, target, max_tokens))

        started = time.monotonic()
        await asyncio.gather(*(user(i) for i in range(clients)))
        elapsed = time.monotonic() - started
    return outcomes, elapsed


def tier_overhead(tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Direct, nginx and haproxy in interleaved rounds (the machine's load drifts alike for all)."""
    rows: list[dict[str, Any]] = []
    flags = {"decode_base_seconds": 0.05, "decode_per_seq_seconds": 0.0002, "max_num_seqs": 512}
    tiers = ("direct", *ENGINES)
    with (
        start_backends(tmp, ["a", "b"], **flags) as backends,
        load_balancer(tmp, service_spec("nginx", "least-conn"), backends) as nginx,
        load_balancer(tmp, service_spec("haproxy", "least-conn"), backends) as haproxy,
    ):
        balancers = {"direct": None, "nginx": nginx, "haproxy": haproxy}
        targets = {"direct": [b.url for b in backends], "nginx": [nginx.url], "haproxy": [haproxy.url]}
        for clients in args.clients:
            per_client = max(1, args.overhead_requests // clients // args.rounds)
            pooled: dict[str, list[llmclient.Outcome]] = {tier: [] for tier in tiers}
            seconds = dict.fromkeys(tiers, 0.0)
            cpu: dict[str, dict[str, float]] = {tier: {} for tier in tiers}
            loads: dict[str, list[float]] = {tier: [] for tier in tiers}
            for round_ in range(args.rounds):
                order = tiers[round_ % 3 :] + tiers[: round_ % 3]
                for tier in order:
                    measured: dict[str, Any] = {}
                    with CpuMeter(backends, balancers[tier]).measure(measured):
                        outcomes, elapsed = asyncio.run(
                            closed_loop(targets[tier], clients, per_client, args.overhead_tokens)
                        )
                    pooled[tier] += outcomes
                    seconds[tier] += elapsed
                    for key, value in measured["cpu_seconds"].items():
                        cpu[tier][key] = cpu[tier].get(key, 0.0) + value
                    loads[tier] += measured["loadavg_1m"]
            for tier in tiers:
                row: dict[str, Any] = {"phase": "overhead", "tier": tier, "clients": clients,
                                       "max_tokens": args.overhead_tokens, "rounds": args.rounds}  # fmt: skip
                row.update(summarize(pooled[tier], seconds[tier]))
                row["cpu_cores_used"] = {k: round(v / seconds[tier], 3) for k, v in cpu[tier].items()}
                row["loadavg_1m"] = [round(min(loads[tier]), 2), round(max(loads[tier]), 2)]
                rows.append(row)
                print(f"  overhead {tier:8s} {clients:4d} clients: TTFT p50/p99 {row['ttft_ms']['p50']}/"
                      f"{row['ttft_ms']['p99']} ms, total p50/p99 {row['total_ms']['p50']}/{row['total_ms']['p99']}"
                      f" ms, {row['ok']}/{row['requests']} ok, cpu {row['cpu_cores_used']}", flush=True)  # fmt: skip
    direct = {r["clients"]: r for r in rows if r["tier"] == "direct"}
    for row in rows:
        base = direct[row["clients"]]
        row["added_ms"] = {
            metric: {
                q: None
                if row[metric][q] is None or base[metric][q] is None
                else round(row[metric][q] - base[metric][q], 1)
                for q in ("p50", "p99")
            }
            for metric in ("ttft_ms", "total_ms")
        }
    return rows


# -- phase 2: strategies under trace lengths ---------------------------------------------------


def trace_lengths(count: int, seed: int, output_scale: float, max_prompt: int) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) of ``count`` requests drawn from the Azure conversation trace."""
    with TRACE.open() as handle:
        rows = [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(handle)]
    rng = random.Random(seed)
    picked = [rows[rng.randrange(len(rows))] for _ in range(count)]
    return [(min(p, max_prompt), max(1, round(g * output_scale))) for p, g in picked]


async def open_loop(url: str, lengths: Sequence[tuple[int, int]], rate: float, seed: int, sessions: int,
                    backends: Sequence[Backend]) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(seed)
    outcomes: list[llmclient.Outcome] = []
    peak_waiting = {b.name: 0.0 for b in backends}
    async with llmclient.session() as client:
        await llmclient.stream_completion(client, url, 2)
        done = asyncio.Event()

        async def sampler() -> None:
            while not done.is_set():
                for backend in backends:
                    samples = parse_metrics(await llmclient.scrape(client, f"{backend.url}/metrics"))
                    waiting = sum(v for k, v in samples.items() if k.startswith("vllm:num_requests_waiting"))
                    peak_waiting[backend.name] = max(peak_waiting[backend.name], waiting)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=0.25)

        async def one(prompt_tokens: int, output_tokens: int, session_id: str) -> None:
            prompt = " ".join(["token"] * prompt_tokens)
            outcomes.append(await llmclient.stream_completion(
                client, url, output_tokens, headers={"X-Session-ID": session_id}, prompt=prompt))  # fmt: skip

        watcher = asyncio.create_task(sampler())
        tasks = []
        started = time.monotonic()
        next_at = started
        for prompt_tokens, output_tokens in lengths:
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            session_id = f"session-{rng.randrange(sessions)}"
            tasks.append(asyncio.create_task(one(prompt_tokens, output_tokens, session_id)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        done.set()
        await watcher
    result = summarize(outcomes, elapsed)
    result["peak_waiting"] = peak_waiting
    return result


def spread(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    mean = float(array.mean()) if array.size else 0.0
    return {
        "max_over_mean": round(float(array.max()) / mean, 3) if mean else 0.0,
        "cv": round(float(array.std()) / mean, 3) if mean else 0.0,
    }


def strategies(tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    lengths = trace_lengths(args.strategy_requests, args.seed, args.output_scale, args.max_prompt_tokens)
    # Prefill at 50k tokens/s (an H100-class GPU on an 8B model); a step per token of 20 ms + 0.5 ms/seq.
    flags = {"decode_base_seconds": 0.02, "decode_per_seq_seconds": 0.0005, "max_num_seqs": args.max_num_seqs,
             "prefill_seconds_per_token": 0.00002}  # fmt: skip
    names = [chr(ord("a") + i) for i in range(args.backends)]
    for engine in ENGINES:
        for strategy in STRATEGIES:
            # Fresh backends per run: queues and counters start empty, the same seed draws the same load.
            with start_backends(tmp, names, **flags) as backends:
                spec = service_spec(engine, strategy)
                with load_balancer(tmp, spec, backends) as lb:
                    row: dict[str, Any] = {"phase": "strategy", "engine": engine, "strategy": strategy,
                                           "rate_rps": args.rate, "backends": args.backends}  # fmt: skip
                    before = backend_counters(backends)
                    with CpuMeter(backends, lb).measure(row):
                        row.update(asyncio.run(open_loop(lb.url, lengths, args.rate, args.seed, args.sessions,
                                                         backends)))  # fmt: skip
                    after = backend_counters(backends)
            per_backend = {name: {k: after[name][k] - before[name][k] for k in after[name]} for name in after}
            row["per_backend"] = per_backend
            row["spread_requests"] = spread([v["requests"] for v in per_backend.values()])
            row["spread_tokens"] = spread([v["tokens"] for v in per_backend.values()])
            rows.append(row)
            print(f"  strategy {engine:7s} {strategy:16s}: TTFT p50/p99 {row['ttft_ms']['p50']}/{row['ttft_ms']['p99']}"
                  f" ms, {row['throughput_rps']} req/s, tokens max/mean {row['spread_tokens']['max_over_mean']},"
                  f" peak waiting {row['peak_waiting']}, {row['ok']}/{row['requests']} ok", flush=True)  # fmt: skip
    return rows


# -- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        return (result.stdout + result.stderr).strip().splitlines()[0]

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nginx": version(["/usr/sbin/nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_tables(result: dict[str, Any]) -> None:
    print("\nTier overhead (closed loop, streamed, least-conn; ms; added = tier - direct)")
    print(f"{'clients':>7} {'tier':8} {'TTFT p50':>9} {'p99':>7} {'total p50':>10} {'p99':>7} "
          f"{'+TTFT p50':>9} {'+p99':>6} {'+total p50':>10} {'+p99':>6} {'ok':>9} {'lb cpu':>6} {'load':>11}")  # fmt: skip
    for r in result["overhead"]:
        added = r["added_ms"]
        print(f"{r['clients']:>7} {r['tier']:8} {r['ttft_ms']['p50']:>9} {r['ttft_ms']['p99']:>7} "
              f"{r['total_ms']['p50']:>10} {r['total_ms']['p99']:>7} {added['ttft_ms']['p50']:>9} "
              f"{added['ttft_ms']['p99']:>6} {added['total_ms']['p50']:>10} {added['total_ms']['p99']:>6} "
              f"{r['ok']:>4}/{r['requests']:<4} {r['cpu_cores_used'].get('balancer', 0):>6} "
              f"{r['loadavg_1m'][0]:>5}-{r['loadavg_1m'][1]:<5}")  # fmt: skip
    print("\nStrategies (open loop, Azure conv trace lengths; TTFT ms; spread = max/mean per backend)")
    print(f"{'engine':8} {'strategy':17} {'TTFT p50':>9} {'p99':>7} {'total p50':>10} {'p99':>7} {'req/s':>6} "
          f"{'tok/s':>6} {'req spread':>10} {'tok spread':>10} {'peak wait':>10} {'ok':>9}")  # fmt: skip
    for r in result["strategies"]:
        print(f"{r['engine']:8} {r['strategy']:17} {r['ttft_ms']['p50']:>9} {r['ttft_ms']['p99']:>7} "
              f"{r['total_ms']['p50']:>10} {r['total_ms']['p99']:>7} {r['throughput_rps']:>6} {r['tokens_per_s']:>6} "
              f"{r['spread_requests']['max_over_mean']:>10} {r['spread_tokens']['max_over_mean']:>10} "
              f"{max(r['peak_waiting'].values()):>10} {r['ok']:>4}/{r['requests']:<4}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run, ~1 minute)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[64, 256], help="concurrent clients, phase 1"
    )
    parser.add_argument(
        "--overhead-requests", type=int, default=768, help="requests per tier and level, phase 1"
    )
    parser.add_argument(
        "--overhead-tokens", type=int, default=16, help="tokens per streamed request, phase 1"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds per tier and level, phase 1"
    )
    parser.add_argument("--backends", type=int, default=3, help="sim-servers in phase 2")
    parser.add_argument("--max-num-seqs", type=int, default=8, help="batch size of each phase-2 backend")
    parser.add_argument("--rate", type=float, default=14.0, help="arrivals per second, phase 2")
    parser.add_argument(
        "--strategy-requests", type=int, default=300, help="requests per strategy run, phase 2"
    )
    parser.add_argument("--output-scale", type=float, default=0.25,
                        help="trace output lengths are multiplied by this (keeps the shape, bounds the time)")  # fmt: skip
    parser.add_argument("--max-prompt-tokens", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=32, help="distinct X-Session-ID values, phase 2")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-strategies", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.overhead_requests, args.strategy_requests, args.rounds = 256, 100, 1
    result: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmfleet-dataplane-") as tmp:
        if not args.skip_overhead:
            print("phase 1: tier overhead", flush=True)
            result["overhead"] = tier_overhead(Path(tmp), args)
        if not args.skip_strategies:
            print("phase 2: strategies", flush=True)
            result["strategies"] = strategies(Path(tmp), args)
    result["seconds"] = round(time.monotonic() - started, 1)
    result.setdefault("overhead", [])
    result.setdefault("strategies", [])
    print_tables(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
