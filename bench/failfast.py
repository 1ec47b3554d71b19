"""Failing fast, end to end: the rendered haproxy in front of real sim-servers, overloaded by
clients that retry like OpenAI's SDKs, against what the fleet simulator's fluid model predicts.

The autoscaling benchmark's fail-fast results rest on ``llmfleet.sim.queueing``: per second,
the balancer turns away the work that would wait longer than its queue timeout, a second's
rejections spread evenly over its requests, and rejected clients retry 1 s later, queued behind
first attempts or not. This checks that model on the real data path. For each load (a multiple
of the fleet's capacity) and retry order it sends open-loop Poisson arrivals for ``--seconds``:

* ``last``: retries carry ``x-stainless-retry-count`` (as OpenAI's SDKs send), which the
  rendered haproxy puts in a lower priority class;
* ``fifo``: retries carry no header and queue like new requests.

Each request is a short streamed completion; a 503 is retried after its ``Retry-After`` (1 s),
at most twice. Per phase (after a 5 s warm-up) it reports the share of first attempts turned
away, the share of requests with a first token within the 1 s TTFT SLO (from their first
send), the TTFT of the admitted ones and the served rate, next to two predictions of the
rejected share from the capacity measured at saturation: the steady state of the model
(constant demand) and the simulator's own per-second admission run on Poisson counts. Every phase is bounded in time; nothing listens beyond 127.0.0.1.

Usage: ``python bench/failfast.py [--seconds 25] [--loads 1.0 1.2 1.5]`` (about 4 minutes); prints a table and
writes ``bench/results/failfast.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import llmclient  # noqa: E402
from tests.support.loadbalancer import load_balancer, service_spec, start_backends  # noqa: E402

from llmfleet.sim.queueing import queue  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "failfast.json"
SLO_S = 1.0
RETRIES = 2
SLOTS = 4  # sequences per sim-server, and the balancer's cap per replica
STEP_S = 0.05  # one decode step, whatever the batch
WARMUP_S = 5.0  # the first seconds of a phase fill the replicas, the queue and the retries
TOKENS = 10  # per request: 0.5 s of decoding, so a replica serves SLOTS / 0.5 s = 8 req/s


async def one_request(client: Any, url: str, tagged: bool, begin: float) -> dict[str, Any]:
    """A request and its retries; times are from its first send."""
    attempts: list[int | None] = []
    for attempt in range(RETRIES + 1):
        headers = {"X-Stainless-Retry-Count": str(attempt)} if tagged else {}
        sent = time.monotonic()
        outcome = await llmclient.stream_completion(client, url, TOKENS, headers=headers)
        attempts.append(outcome.status)
        if outcome.status != 503:
            ttft = (sent - begin) + outcome.ttft if outcome.ttft is not None else None
            return {
                "sent": begin,
                "attempts": attempts,
                "ok": outcome.ok,
                "ttft": ttft,
                "served_at": time.monotonic(),
            }
        if attempt < RETRIES:
            await asyncio.sleep(float(outcome.headers.get("Retry-After", "1")))
    return {"sent": begin, "attempts": attempts, "ok": False, "ttft": None, "served_at": None}


async def phase(
    url: str, rate: float, seconds: float, tagged: bool, seed: int
) -> tuple[float, list[dict[str, Any]]]:
    """Open-loop Poisson arrivals at ``rate`` for ``seconds``; waits for every request to end.
    Returns the phase's start (monotonic) and each request's record."""
    rng = random.Random(seed)
    tasks = []
    async with llmclient.session(timeout=60) as client:
        start = time.monotonic()
        next_at = start
        while next_at < start + seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.create_task(one_request(client, url, tagged, time.monotonic())))
            next_at += rng.expovariate(rate)
        return start, list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60))


def served_rate(start: float, results: list[dict[str, Any]], seconds: float) -> float:
    """Requests completed per second while the load was on, after the first ``WARMUP_S``."""
    lo, hi = start + WARMUP_S, start + seconds
    return sum(1 for r in results if r["served_at"] is not None and lo <= r["served_at"] < hi) / (hi - lo)


def steady_state_share(demand: float, capacity: float, last: bool) -> float:
    """The share of first attempts turned away at a constant ``demand`` above ``capacity``:
    retries last, only the excess; retries queued like new requests, the fixed point of
    ``s = 1 - c / (d (1 + s + s^2))`` (two retries)."""
    if demand <= capacity:
        return 0.0
    if last:
        return 1.0 - capacity / demand
    share = 0.0
    for _ in range(200):
        share = 1.0 - capacity / (demand * sum(share**k for k in range(RETRIES + 1)))
    return share


def simulated_share(demand: float, capacity: float, seconds: float, queue_s: float, last: bool) -> float:
    """What the fleet simulator's admission model (``llmfleet.sim.queueing``) predicts: the share
    of first attempts turned away, after the warm-up, for Poisson arrivals at ``demand`` per
    second to a fleet serving ``capacity`` (one "replica" of the whole fleet, work in seconds)."""
    rng = np.random.default_rng(0)
    n = int(seconds)
    work = rng.poisson(demand, n) / capacity
    _, rejected, _ = queue(work, np.ones(n), queue_s, RETRIES, 1, last)
    steady = slice(int(WARMUP_S), n)
    return float((rejected[steady] * work[steady]).sum() / max(work[steady].sum(), 1e-12))


def summarise(
    start: float, results: list[dict[str, Any]], seconds: float, capacity: float, queue_s: float, last: bool
) -> dict[str, Any]:
    offered = len(results) / seconds
    # steady state only: retries take a few seconds to build up
    results = [r for r in results if r["sent"] >= start + WARMUP_S]
    n = len(results)
    rejected_first = sum(1 for r in results if r["attempts"][0] == 503) / max(n, 1)
    within = sum(1 for r in results if r["ok"] and r["ttft"] is not None and r["ttft"] <= SLO_S) / max(n, 1)
    first_ttfts = [
        r["ttft"] for r in results if r["ok"] and len(r["attempts"]) == 1 and r["ttft"] is not None
    ]
    served = served_rate(start, results, seconds)
    return {
        "requests": n,
        "offered_rps": round(offered, 2),
        "served_rps": round(served, 2),
        "rejected_first_share": round(rejected_first, 4),
        "steady_state_prediction": round(steady_state_share(offered, capacity, last), 4),
        "simulator_prediction": round(simulated_share(offered, capacity, seconds, queue_s, last), 4),
        "within_slo_share": round(within, 4),
        "ttft_admitted_p50_s": round(float(np.percentile(first_ttfts, 50)), 3) if first_ttfts else None,
        "ttft_admitted_p99_s": round(float(np.percentile(first_ttfts, 99)), 3) if first_ttfts else None,
        "failed_after_retries": sum(1 for r in results if not r["ok"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=25.0, help="arrivals per phase (default %(default)s)"
    )
    parser.add_argument(
        "--loads", type=float, nargs="+", default=[1.0, 1.2, 1.5], help="multiples of capacity"
    )
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--queue-seconds", type=float, default=0.5)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    # a SIGTERM (timeout, CI) unwinds the with-blocks, so the servers it started are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nominal = args.replicas * SLOTS / (TOKENS * STEP_S)
    flags = {"max_num_seqs": SLOTS, "decode_base_seconds": STEP_S, "decode_per_seq_seconds": 0.0}
    spec = service_spec(
        "haproxy", "least-conn", maxConcurrencyPerReplica=SLOTS, timeouts={"queueSeconds": args.queue_seconds}
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        names = [f"r{i}" for i in range(args.replicas)]
        with (
            start_backends(Path(tmp), names, **flags) as backends,
            load_balancer(Path(tmp), spec, backends) as lb,
        ):
            # capacity as served: a saturating phase (twice the nominal rate), retries off
            capacity = served_rate(
                *asyncio.run(phase(lb.url, 2 * nominal, args.seconds, True, 0)), args.seconds
            )
            print(f"capacity: {capacity:.1f} req/s served at saturation (nominal {nominal:.0f})", flush=True)
            for load in args.loads:
                for order in ("last", "fifo"):
                    time.sleep(2.0)  # let the previous phase's streams end
                    start, results = asyncio.run(
                        phase(lb.url, load * capacity, args.seconds, order == "last", seed=1)
                    )
                    summary = summarise(
                        start, results, args.seconds, capacity, args.queue_seconds, order == "last"
                    )
                    row = {"load": load, "retry_order": order, **summary}
                    rows.append(row)
                    print(
                        f"load {load:>4.1f}x  retries {order:<4}  offered {row['offered_rps']:>5.1f}/s  "
                        f"served {row['served_rps']:>5.1f}/s  first attempts turned away {row['rejected_first_share']:>6.1%} "
                        f"(steady state {row['steady_state_prediction']:>6.1%}, simulator {row['simulator_prediction']:>6.1%})  "
                        f"within SLO {row['within_slo_share']:>6.1%}  "
                        f"admitted TTFT p50/p99 {row['ttft_admitted_p50_s']}/{row['ttft_admitted_p99_s']} s",
                        flush=True,
                    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "replicas": args.replicas,
                "slots": SLOTS,
                "queue_seconds": args.queue_seconds,
                "seconds_per_phase": args.seconds,
                "capacity_rps": round(capacity, 2),
                "nominal_rps": nominal,
                "machine": platform.platform(),
                "phases": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
