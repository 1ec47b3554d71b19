"""The sim-server acting as llamacpp (``--metrics-flavor llamacpp``) against the real llama-server.

Everything downstream of a model server (the scaler's PromQL, dashboards, the HPA adapter
rules) is developed against the sim-server; this checks that what the sim-server says about
llama.cpp is what the real llama-server (hack/build-llama-server.sh) exports: the same
``llamacpp:`` series with the same types, no series the engine does not have, and the same
counts after the same workload.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.llama import LlamaServer, llama_server, tiny_model
from tests.support.process import wait_until
from tests.support.simserver import SimServer, sim_server

pytestmark = [pytest.mark.realengine, pytest.mark.timeout(240)]

PREFIX = "llamacpp:"
# What the scaler, the HPA and the docs query for llamacpp: both must export these.
REQUIRED = {
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "llamacpp:tokens_predicted_total",
    "llamacpp:prompt_tokens_total",
    "llamacpp:tokens_predicted_seconds_total",
    "llamacpp:prompt_seconds_total",
}


def llamacpp_series(text: str) -> dict[str, str]:
    """``{sample name: type}`` for every ``llamacpp:`` sample on a /metrics page."""
    types: dict[str, str] = {}
    series: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind.strip()
        elif line.startswith(PREFIX):
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            family = sample if sample in types else sample.removesuffix("_total")
            series[sample] = types.get(family, "untyped")
    return series


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with llama_server(tmp_path_factory.mktemp("real"), tiny_model("tiny"), "--parallel", "4", "--ctx-size", "2048",
                      "--metrics") as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    with sim_server(tmp_path_factory.mktemp("sim"), metrics_flavor="llamacpp", max_num_seqs=4) as server:
        yield server


def test_required_series_are_exported_by_both(real: LlamaServer, sim: SimServer) -> None:
    real_series, sim_series = llamacpp_series(real.metrics_text()), llamacpp_series(sim.metrics_text())
    assert set(real_series) >= REQUIRED, REQUIRED - set(real_series)
    assert set(sim_series) >= REQUIRED, REQUIRED - set(sim_series)


def test_sim_exports_no_llamacpp_series_the_engine_lacks(real: LlamaServer, sim: SimServer) -> None:
    """A query written against the sim must find its series on a real llama-server.

    (llama.cpp removed ``kv_cache_usage_ratio`` and ``kv_cache_tokens`` in 2025, before the
    pinned image; an HPA or dashboard built on them never sees data.)
    """
    real_series, sim_series = llamacpp_series(real.metrics_text()), llamacpp_series(sim.metrics_text())
    invented = sorted(set(sim_series) - set(real_series))
    assert invented == [], f"the sim-server exports llamacpp series llama-server does not have: {invented}"


def test_shared_series_have_the_same_type(real: LlamaServer, sim: SimServer) -> None:
    real_series, sim_series = llamacpp_series(real.metrics_text()), llamacpp_series(sim.metrics_text())
    mismatched = {name: (sim_series[name], real_series[name])
                  for name in set(sim_series) & set(real_series) if sim_series[name] != real_series[name]}  # fmt: skip
    assert mismatched == {}, f"(sim type, real type): {mismatched}"


def test_same_workload_same_token_counts(real: LlamaServer, sim: SimServer) -> None:
    """Three 5-token completions move tokens_predicted_total by 15 on both; nothing stays busy."""
    for server in (real, sim):
        before = llamacpp_values(server.metrics_text())
        with httpx.Client(base_url=server.url, timeout=httpx.Timeout(60.0, connect=5.0)) as http:
            model = http.get("/v1/models").json()["data"][0]["id"]
            for i in range(3):
                body = {"model": model, "prompt": f"count {i}", "max_tokens": 5, "ignore_eos": True}
                response = http.post("/v1/completions", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["usage"]["completion_tokens"] == 5
        after = llamacpp_values(server.metrics_text())
        assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == 15, (
            server.url
        )
        assert after["llamacpp:prompt_tokens_total"] > before["llamacpp:prompt_tokens_total"], server.url
        assert after["llamacpp:requests_processing"] == 0, server.url
        assert after["llamacpp:requests_deferred"] == 0, server.url


def llamacpp_values(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(PREFIX):
            sample, _, value = line.rpartition(" ")
            values[sample.split("{", 1)[0]] = float(value)
    return values


def run_beyond_the_slots(server: LlamaServer | SimServer, slots: int, max_tokens: int) -> list[int]:
    """Start slots + 2 streams, wait until the server reports slots processing and 2 deferred;
    return each stream's token count."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]
    counts: list[int] = []

    def one(i: int) -> None:
        body = {
            "model": model,
            "prompt": f"slot {i}",
            "max_tokens": max_tokens,
            "stream": True,
            "ignore_eos": True,
        }
        with httpx.Client(base_url=server.url, timeout=httpx.Timeout(240.0, connect=5.0)) as http, \
                http.stream("POST", "/v1/completions", json=body) as response:  # fmt: skip
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        counts.append(sum(1 for e in events if e.get("choices") and e["choices"][0].get("text")))

    def saturated() -> bool:
        values = llamacpp_values(server.metrics_text())
        return values["llamacpp:requests_processing"] == slots and values["llamacpp:requests_deferred"] == 2

    threads = [threading.Thread(target=one, args=(i,)) for i in range(slots + 2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            saturated, timeout=120, interval=0.02, what=f"{slots} processing and 2 deferred on {server.url}"
        )
    finally:
        for thread in threads:
            thread.join(timeout=240)
    return counts


def test_slots_and_deferred_queue_behave_alike(tmp_path: Path) -> None:
    """SLOTS + 2 concurrent streams: both run SLOTS at once and report the other two as deferred,
    and every stream still runs to max_tokens."""
    slots, max_tokens = 2, 96
    flags = ("--parallel", str(slots), "--ctx-size", str(512 * slots), "--metrics")
    with llama_server(tmp_path, tiny_model("small"), *flags) as real_server:
        assert run_beyond_the_slots(real_server, slots, max_tokens) == [max_tokens] * (slots + 2)
    with sim_server(
        tmp_path, metrics_flavor="llamacpp", max_num_seqs=slots, decode_base_seconds=0.05
    ) as sim_srv:
        assert run_beyond_the_slots(sim_srv, slots, max_tokens) == [max_tokens] * (slots + 2)
