"""What sim-servers cost: CPU of idle instances, CPU per streamed token, requests/s of one instance.

Tests and local fleets run several sim-servers on a small machine, so their cost must be known:
this starts real ``llmfleet sim-server`` processes on loopback, measures their CPU time from
/proc while they idle and while bounded streaming clients run, and (with ``wrk`` installed)
the request rate one instance sustains. Every phase is bounded in requests and time.

    python bench/sim_server_cost.py --instances 8 --streams-per-instance 8 --tokens 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def start(count: int, log_dir: Path, extra: list[str]) -> list[tuple[subprocess.Popen[bytes], int]]:
    servers = []
    for i in range(count):
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "llmfleet.cli",
            "sim-server",
            "--port",
            str(port),
            "--id",
            f"s{i}",
            *extra,
        ]
        log = open(log_dir / f"s{i}.log", "wb")  # noqa: SIM115 - lives as long as the process
        servers.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), port))
    deadline = time.monotonic() + 60
    for _, port in servers:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return servers


async def stream_load(ports: list[int], streams: int, tokens: int, rounds: int) -> tuple[int, float]:
    """``streams`` concurrent streaming clients per port, ``rounds`` requests each; returns tokens, seconds."""
    import aiohttp

    received = 0

    async def client(session: aiohttp.ClientSession, port: int) -> None:
        nonlocal received
        body = {"prompt": "Tell me about batching.", "max_tokens": tokens, "stream": True}
        for _ in range(rounds):
            async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
                async for line in response.content:
                    if line.startswith(b'data: {"id"'):
                        received += 1

    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session, port) for port in ports for _ in range(streams)))
    return received, time.monotonic() - started


def wrk_rate(port: int, body: str, seconds: int, connections: int, log_dir: Path) -> str:
    script = log_dir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = \'{body}\'\n'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    )
    return next(line.strip() for line in out.stdout.splitlines() if "Requests/sec" in line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--streams-per-instance", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=100, help="max_tokens of each streamed request")
    parser.add_argument("--rounds", type=int, default=2, help="requests per streaming client")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        servers = start(args.instances, log_dir, [])
        pids = [proc.pid for proc, _ in servers]
        ports = [port for _, port in servers]
        try:
            before = cpu_seconds(pids)
            time.sleep(args.idle_seconds)  # measuring idleness itself: nothing to wait on
            idle = cpu_seconds(pids) - before
            print(
                f"idle: {args.instances} instances used {idle:.3f} CPU-s in {args.idle_seconds:.0f} s "
                f"({100 * idle / args.idle_seconds:.2f}% of one core)"
            )
            before, client_before = cpu_seconds(pids), time.process_time()
            tokens, seconds = asyncio.run(
                stream_load(ports, args.streams_per_instance, args.tokens, args.rounds)
            )
            used, client_used = cpu_seconds(pids) - before, time.process_time() - client_before
            print(
                f"streaming: {args.instances}x{args.streams_per_instance} streams, {tokens} tokens in "
                f"{seconds:.1f} s ({tokens / seconds:.0f} tokens/s): servers {used:.2f} CPU-s "
                f"({100 * used / seconds:.0f}% of one core, {1e6 * used / tokens:.0f} us/token), "
                f"client {client_used:.2f} CPU-s"
            )
        finally:
            for proc, _ in servers:
                proc.terminate()
            for proc, _ in servers:
                proc.wait(timeout=15)
        if shutil.which("wrk"):
            # the engine model nearly free, so that the HTTP layer (and the machine's CPU) is the limit
            fast = [
                "--decode-base-seconds",
                "0.001",
                "--decode-per-seq-seconds",
                "0",
                "--prefill-seconds-per-token",
                "0",
            ]
            for label, body, extra in (
                ("1-token, default model", '{"prompt":"hi","max_tokens":1}', []),
                ("1-token, fast model", '{"prompt":"hi","max_tokens":1}', fast),
                ("16-token stream, default model", '{"prompt":"hi","max_tokens":16,"stream":true}', []),
                ("16-token stream, fast model", '{"prompt":"hi","max_tokens":16,"stream":true}', fast),
            ):
                ((proc, port),) = start(1, log_dir, extra)
                try:
                    rate = wrk_rate(port, body, args.wrk_seconds, 64, log_dir)
                    print(f"one instance, {label}, 64 connections: {rate}")
                finally:
                    proc.terminate()
                    proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
