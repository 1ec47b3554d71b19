"""The shipped sim-server profile calibrated on llama-server (bench/calibrate_sim.py) holds its shape.

``operator/llmfleet/sim/profiles/llamacpp-tiny-cpu.json`` was fitted to the real llama-server
(small test model, 4 slots, 1 thread); the bench script compares the timings against the real
server. This checks, on the sim-server alone and without timing the real engine, that the profile
loads (by file and by its shipped name) and produces llama-server's structure: 4 slots and a
deferred queue beyond them under ``llamacpp:`` names, TTFT that grows with prompt length and ITL
that grows with running sequences, by amounts of the order the fitted parameters say.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmfleet.sim.server_options import PROFILES_DIR, add_arguments, engine_config
from tests.support.simserver import SimServer, sim_server

pytestmark = [pytest.mark.realengine, pytest.mark.timeout(60)]

PROFILE = PROFILES_DIR / "llamacpp-tiny-cpu.json"


def profile() -> dict[str, object]:
    loaded = json.loads(PROFILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_profile_is_a_fitted_llamacpp_profile() -> None:
    values = profile()
    assert values["max_num_seqs"] == 4
    assert values["metrics_flavor"] == "llamacpp"
    assert "bench/calibrate_sim.py" in str(values["_calibration"])
    config = engine_config(parsed("--profile", str(PROFILE)))
    assert config.prefill_seconds_per_token > 0
    assert config.decode_per_seq_seconds > 0
    assert config.max_model_len * config.max_num_seqs == config.kv_cache_tokens  # --ctx-size split over slots


def test_shipped_name_loads_the_same_profile_and_flags_still_win() -> None:
    assert engine_config(parsed("--profile", "llamacpp-tiny-cpu")) == engine_config(
        parsed("--profile", str(PROFILE))
    )
    args = parsed("--max-num-seqs", "2", "--profile", "llamacpp-tiny-cpu")
    assert engine_config(args).max_num_seqs == 2
    assert args.metrics_flavor == "llamacpp"


async def stream(url: str, prompt_tokens: int, max_tokens: int) -> tuple[float, list[float]]:
    """TTFT and inter-token gaps (seconds) of one streamed completion with a token-id prompt."""
    body = {"prompt": [97] * prompt_tokens, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    gaps: list[float] = []
    ttft, last, start = 0.0, 0.0, time.perf_counter()
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{url}/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: {") or not json.loads(line[6:])["choices"][0].get("text"):
                continue
            now = time.perf_counter()
            if not ttft:
                ttft = now - start
            else:
                gaps.append(now - last)
            last = now
    assert len(gaps) == max_tokens - 1
    return ttft, gaps


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


@pytest.fixture()
def sim(tmp_path: Path) -> Iterator[SimServer]:
    with sim_server(tmp_path, profile="llamacpp-tiny-cpu") as server:
        yield server


def test_fifth_concurrent_request_is_deferred(sim: SimServer) -> None:
    """Four slots: five concurrent streams show 4 processing and 1 deferred, and all complete."""
    peaks = {"llamacpp:requests_processing": 0.0, "llamacpp:requests_deferred": 0.0}

    async def run() -> list[tuple[float, list[float]]]:
        tasks = [asyncio.create_task(stream(sim.url, 64, 48)) for _ in range(5)]
        while not all(task.done() for task in tasks):
            for name in peaks:
                peaks[name] = max(peaks[name], await asyncio.to_thread(sim.metric, name))
            await asyncio.sleep(0.02)
        return [task.result() for task in tasks]

    results = asyncio.run(run())
    assert len(results) == 5
    assert peaks == {"llamacpp:requests_processing": 4.0, "llamacpp:requests_deferred": 1.0}
    assert sim.metric("llamacpp:requests_deferred") == 0
    assert sim.metric("llamacpp:tokens_predicted_total") == 5 * 48


def test_ttft_grows_with_prompt_length(sim: SimServer) -> None:
    prefill = float(profile()["prefill_seconds_per_token"])  # type: ignore[arg-type]
    short, long = 16, 800
    ttfts = {n: median([asyncio.run(stream(sim.url, n, 2))[0] for _ in range(3)]) for n in (short, long)}
    modelled = prefill * (long - short)
    assert modelled > 0.1  # the fitted prefill cost is visible at this length difference
    assert ttfts[long] - ttfts[short] > 0.5 * modelled, (ttfts, modelled)
    assert ttfts[long] - ttfts[short] < 2.0 * modelled + 0.05, (ttfts, modelled)


def test_itl_grows_with_running_sequences(sim: SimServer) -> None:
    per_seq = float(profile()["decode_per_seq_seconds"])  # type: ignore[arg-type]

    async def itl(concurrency: int) -> float:
        results = await asyncio.gather(*(stream(sim.url, 32, 40) for _ in range(concurrency)))
        return median([gap for _, gaps in results for gap in gaps])

    alone, four = asyncio.run(itl(1)), asyncio.run(itl(4))
    modelled = 3 * per_seq
    assert modelled > 0.003  # the fitted per-sequence cost is visible beside the sim's own jitter
    assert four - alone > 0.5 * modelled, (alone, four, modelled)
    assert four - alone < 2.0 * modelled + 0.005, (alone, four, modelled)
