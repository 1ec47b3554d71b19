"""Benchmark of the caching gateway against a real redis-server and a real sim-server, on loopback.

What it measures (every phase bounded in requests and in time):

* miss overhead: the same kind of streamed, cacheable-but-new request sent straight to the
  sim-server and through the gateway, interleaved; p50/p99 of TTFT and total latency, and the
  difference (what a cache miss costs: Redis GET, coalescing bookkeeping, Redis SET, one more hop);
* pass-through overhead: non-deterministic requests (never cached) through the gateway;
* hit latency: a cached streamed answer replayed from Redis;
* coalescing: rounds of N concurrent identical requests, with coalescing and with the cache
  bypassed, counting the upstream calls the sim-server received;
* semantic (unless --no-semantic): miss cost with the embedding step, and paraphrase hit latency.

Usage: ``python bench/gateway.py [--requests 300] [--max-seconds 150]``; prints a table and writes
``bench/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.gateway_helpers import gateway, redis_server  # noqa: E402
from tests.support.simserver import sim_server  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gateway.json"
CHAT = "/v1/chat/completions"
# Distinct subjects for the semantic phase: each is asked once, then once more in other words.
TOPICS = [
    "a refrigerator",
    "photosynthesis",
    "the stock market",
    "a jet engine",
    "vaccination",
    "a blockchain",
    "public-key cryptography",
    "a nuclear reactor",
    "the immune system",
    "a compiler",
    "plate tectonics",
    "a hash table",
    "inflation",
    "a bicycle gearbox",
    "radar",
    "the water cycle",
    "garbage collection",
    "an electric motor",
    "GPS positioning",
    "a credit score",
    "solar panels",
    "a neural network",
    "the heart",
    "TCP congestion control",
    "a mortgage",
    "noise-cancelling headphones",
    "a transistor",
    "wind turbines",
    "the Federal Reserve",
    "a 3D printer",
    "DNS resolution",
    "fermentation",
    "a pressure cooker",
    "an elevator",
    "lithium-ion batteries",
    "a microwave oven",
    "carbon dating",
    "the electoral college",
    "a suspension bridge",
    "a search engine",
]


def sim_received(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("llmfleet_sim_requests_received_total"):
                return float(line.rpartition(" ")[2])
    return 0.0


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    failed: int = 0
    cache: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)) * 1000, 3) if values else None

        return {
            "requests": len(self.total) + self.failed,
            "failed": self.failed,
            "ttft_p50_ms": pct(self.ttft, 50),
            "ttft_p99_ms": pct(self.ttft, 99),
            "total_p50_ms": pct(self.total, 50),
            "total_p99_ms": pct(self.total, 99),
            "cache": self.cache,
        }


async def timed(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    samples: Samples,
    headers: dict[str, str] | None = None,
) -> None:
    started_at = time.perf_counter()
    ttft = None
    try:
        async with client.stream("POST", url + CHAT, json=body, headers=headers or {}) as response:
            async for _ in response.aiter_raw():
                if ttft is None:
                    ttft = time.perf_counter() - started_at
            status = response.status_code
            outcome = response.headers.get("X-LLMFleet-Cache", "direct")
    except httpx.HTTPError:
        samples.failed += 1
        return
    if status != 200 or ttft is None:
        samples.failed += 1
        return
    samples.ttft.append(ttft)
    samples.total.append(time.perf_counter() - started_at)
    samples.cache[outcome] = samples.cache.get(outcome, 0) + 1


def chat(prompt: str, temperature: float = 0, max_tokens: int = 8) -> dict[str, Any]:
    return {
        "model": "sim-model",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "stream": True,
    }


async def run_phases(
    args: argparse.Namespace, sim: str, gateway: str, semantic_gateway: str | None
) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    n = args.requests
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=256)) as client:
        for i in range(20):  # warm connections and code paths on both sides
            await timed(client, gateway, chat(f"warmup {i}"), Samples())
            await timed(client, sim, chat(f"warmup {i}"), Samples())

        direct, via = Samples(), Samples()
        for i in range(n):
            if time.monotonic() > deadline:
                break
            pair = [
                (sim, f"miss direct {i} {args.run_id}", direct),
                (gateway, f"miss gateway {i} {args.run_id}", via),
            ]
            for url, prompt, samples in pair if i % 2 == 0 else reversed(pair):  # no order bias
                await timed(client, url, chat(prompt), samples)
        results["direct"] = direct.summary()
        results["miss"] = via.summary()

        passthrough = Samples()
        for i in range(n):
            if time.monotonic() > deadline:
                break
            await timed(client, gateway, chat(f"sampled {i}", temperature=0.7), passthrough)
        results["passthrough"] = passthrough.summary()

        hit = Samples()
        await timed(client, gateway, chat(f"hot prompt {args.run_id}"), Samples())
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            await timed(client, gateway, chat(f"hot prompt {args.run_id}"), hit)
        results["hit"] = hit.summary()

        for mode, headers in (("coalesced", {}), ("uncoalesced", {"X-LLMFleet-Cache": "bypass"})):
            samples, walls, before = Samples(), [], sim_received(sim)
            rounds = 0
            for r in range(args.coalesce_rounds):
                if time.monotonic() > deadline:
                    break
                body = chat(f"burst {mode} {r} {args.run_id}", max_tokens=args.coalesce_tokens)
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(timed(client, gateway, body, samples, headers) for _ in range(args.coalesce_clients))
                )
                walls.append(time.perf_counter() - t0)
                rounds += 1
            summary = samples.summary()
            summary["rounds"] = rounds
            summary["clients_per_round"] = args.coalesce_clients
            summary["upstream_calls"] = int(sim_received(sim) - before)
            summary["round_wall_p50_ms"] = round(float(np.median(walls)) * 1000, 3) if walls else None
            results[mode] = summary

        if semantic_gateway is not None:
            miss, paraphrase = Samples(), Samples()
            for topic in TOPICS[: args.semantic_requests]:
                if time.monotonic() > deadline:
                    break
                await timed(client, semantic_gateway, chat(f"Explain how {topic} works. {args.run_id}"), miss)
                await timed(
                    client,
                    semantic_gateway,
                    chat(f"Can you explain how {topic} works? {args.run_id}"),
                    paraphrase,
                )
            results["semantic_miss"] = miss.summary()
            results["semantic_paraphrase"] = paraphrase.summary()
    return results


def index_scan(redis_url: str, sizes: tuple[int, ...] = (64, 512, 4096), repeats: int = 30) -> dict[str, Any]:
    """Cost of one semantic lookup (HGETALL of a scope + exact cosine scan) by scope size."""
    import redis

    from llmfleet.gateway.semantic import best_match

    client = redis.Redis.from_url(f"{redis_url}/1")
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for size in sizes:
        vectors = rng.normal(size=(size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        scope = f"bench:scope:{size}"
        client.delete(scope)
        client.hset(scope, mapping={f"key{i}": v.tobytes() for i, v in enumerate(vectors)})
        fetch, scan = [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            entries = client.hgetall(scope)
            t1 = time.perf_counter()
            best_match(entries, vectors[r % size])
            fetch.append(t1 - t0)
            scan.append(time.perf_counter() - t1)
        out[str(size)] = {
            "hgetall_p50_ms": round(float(np.median(fetch)) * 1000, 3),
            "scan_p50_ms": round(float(np.median(scan)) * 1000, 3),
            "bytes": size * 384 * 4,
        }
        client.delete(scope)
    client.close()
    return out


def machine() -> dict[str, Any]:
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "loadavg_before": os.getloadavg(),
        "redis": redis_version.split(" ")[2] if redis_version else None,
    }


def print_table(results: dict[str, Any]) -> None:
    header = f"{'phase':<20}{'requests':>9}{'failed':>7}{'TTFT p50':>10}{'TTFT p99':>10}{'total p50':>11}{'total p99':>11}  cache"
    print(header)
    print("-" * len(header))
    for phase, row in results.items():
        if not isinstance(row, dict) or "failed" not in row:
            continue
        extra = f"  upstream calls {row['upstream_calls']}" if "upstream_calls" in row else ""
        print(
            f"{phase:<20}{row['requests']:>9}{row['failed']:>7}{row['ttft_p50_ms']!s:>10}{row['ttft_p99_ms']!s:>10}"
            f"{row['total_p50_ms']!s:>11}{row['total_p99_ms']!s:>11}  {row['cache']}{extra}"
        )
    for size, row in results.get("semantic_index_scan", {}).items():
        print(
            f"semantic lookup, {size:>5} entries in the scope: HGETALL {row['hgetall_p50_ms']} ms + scan "
            f"{row['scan_p50_ms']} ms (p50, {row['bytes'] // 1024} KiB moved)"
        )
    overhead = results.get("overhead_ms", {})
    if overhead:
        print("gateway overhead on a miss (ms): " + ", ".join(f"{k} {v}" for k, v in overhead.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per latency phase")
    parser.add_argument("--coalesce-clients", type=int, default=32)
    parser.add_argument("--coalesce-rounds", type=int, default=5)
    parser.add_argument("--coalesce-tokens", type=int, default=64)
    parser.add_argument("--semantic-requests", type=int, default=len(TOPICS))
    parser.add_argument("--no-semantic", action="store_true")
    parser.add_argument(
        "--max-seconds", type=float, default=150.0, help="stop every phase after this in total"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.run_id = f"{time.time():.0f}"
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_dir:
        tmp = Path(tmp_dir)
        info = machine()
        with contextlib.ExitStack() as stack:
            store = stack.enter_context(redis_server(tmp))
            redis_url = store.url.removesuffix("/0")
            sim = stack.enter_context(
                sim_server(
                    tmp,
                    id="bench",
                    decode_base_seconds=0.001,
                    decode_per_seq_seconds=0.0001,
                    prefill_seconds_per_token=0.00001,
                )
            ).url
            common = ("--max-cached-bytes", "1048576", "--log-level", "WARNING")
            plain = stack.enter_context(gateway(tmp, sim, store.url, *common))
            semantic_url = None
            if not args.no_semantic:
                semantic = stack.enter_context(
                    gateway(
                        tmp,
                        sim,
                        store.url,
                        *common,
                        "--semantic",
                        "--semantic-threshold",
                        "0.92",
                        timeout=180,
                    )
                )
                semantic_url = semantic.url
            results = asyncio.run(run_phases(args, sim, plain.url, semantic_url))
            results["semantic_index_scan"] = index_scan(redis_url)
    results["overhead_ms"] = {
        key: round(results["miss"][key] - results["direct"][key], 3)
        for key in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")
        if results["miss"].get(key) is not None and results["direct"].get(key) is not None
    }
    results["machine"] = {**info, "loadavg_after": os.getloadavg()}
    results["settings"] = {k: v for k, v in vars(args).items() if k != "output"}
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
