"""The real ``llmfleet sim-server`` process, driven over HTTP as load balancers and clients drive it."""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmfleet.sim.engine import count_chat_tokens, count_text_tokens
from llmfleet.sim.server_options import add_arguments, engine_config
from tests.support.process import wait_until
from tests.support.simserver import SimServer, sim_server

PROMPT = "Explain, in one sentence, why queues grow when a server is saturated."


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, checking the framing as it goes."""
    events, pending = [], None
    for line in response.iter_lines():
        if line == "":
            assert pending is not None, "blank line without an event"
            events.append(pending)
            pending = None
            continue
        assert line.startswith("data: "), line
        assert pending is None, "two data lines in one event"
        pending = line.removeprefix("data: ")
    assert pending is None, "stream ended inside an event"
    return events


def complete(server: SimServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", json={"model": "sim-model", **body}, timeout=30)


def test_streaming_completion_is_well_formed_sse_with_usage(tmp_path: Path) -> None:
    with sim_server(tmp_path, id="backend-a") as server:
        body = {
            "model": "sim-model",
            "prompt": PROMPT,
            "max_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-sim-server"] == "backend-a"
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    tokens, usage = chunks[:-1], chunks[-1]
    assert len(tokens) == 12
    assert all(c["object"] == "text_completion" and c["system_fingerprint"] == "backend-a" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 11 + ["length"]
    assert all(c["usage"] is None for c in tokens)
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": count_text_tokens(PROMPT),
        "completion_tokens": 12,
        "total_tokens": count_text_tokens(PROMPT) + 12,
    }


def test_chat_stream_starts_with_the_role_and_arrives_token_by_token(tmp_path: Path) -> None:
    with sim_server(tmp_path, decode_base_seconds=0.05) as server:
        body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24, "stream": True}
        started = time.monotonic()
        arrivals = []
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic() - started, line.removeprefix("data: ")))
    assert arrivals[-1][1] == "[DONE]"
    chunks = [json.loads(payload) for _, payload in arrivals[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).count(" ") == 24
    first_token_at, done_at = arrivals[1][0], arrivals[-1][0]
    # 24 steps of >= 50 ms: the first token must come long before the end, not all at once
    assert done_at > 1.0
    assert first_token_at < done_at / 3


def test_non_streaming_chat_reports_usage_and_the_backend(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    with sim_server(tmp_path, id="b7") as server:
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "sim-model", "messages": messages, "max_tokens": 9},
            timeout=30,
        )
    assert response.status_code == 200
    assert response.headers["x-sim-server"] == "b7"
    reply = response.json()
    assert reply["object"] == "chat.completion" and reply["system_fingerprint"] == "b7"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert len(reply["choices"][0]["message"]["content"].split()) == 9
    prompt_tokens = count_chat_tokens([m["content"] for m in messages])
    assert reply["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 9,
        "total_tokens": prompt_tokens + 9,
    }


def test_models_and_request_errors(tmp_path: Path) -> None:
    with sim_server(tmp_path, served_model_name="llama-3.1-8b", max_model_len=512) as server:
        models = httpx.get(f"{server.url}/v1/models").json()
        ok = httpx.post(f"{server.url}/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 5}).json()
        unbounded = httpx.post(f"{server.url}/v1/completions", json={"prompt": "word " * 500}).json()
        unknown = httpx.post(f"{server.url}/v1/completions", json={"model": "gpt-9", "prompt": "x"})
        too_long = httpx.post(
            f"{server.url}/v1/completions", json={"prompt": "word " * 500, "max_tokens": 100}
        )
        malformed = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": "hello"})
    assert [m["id"] for m in models["data"]] == ["llama-3.1-8b"]
    assert models["data"][0]["max_model_len"] == 512
    assert ok["object"] == "text_completion" and ok["model"] == "llama-3.1-8b"
    assert len(ok["choices"][0]["text"].split()) == 5 and ok["choices"][0]["finish_reason"] == "length"
    assert ok["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert unbounded["usage"]["total_tokens"] == 512  # no max_tokens: the rest of the context
    assert unknown.status_code == 404
    assert (
        too_long.status_code == 400 and "maximum context length is 512" in too_long.json()["error"]["message"]
    )
    assert malformed.status_code == 400


def test_injected_errors_are_seeded_and_counted(tmp_path: Path) -> None:
    def statuses(server: SimServer) -> list[int]:
        with httpx.Client(base_url=server.url) as client:
            return [
                client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1}).status_code
                for _ in range(30)
            ]

    with (
        sim_server(tmp_path, error_rate=0.5, seed=3) as first,
        sim_server(tmp_path, error_rate=0.5, seed=3) as second,
    ):
        observed = statuses(first)
        assert statuses(second) == observed
        failed = first.metric("llmfleet_sim_requests_failed_total")
        served = first.metric("llmfleet_sim_requests_served_total")
    assert set(observed) == {200, 500}
    assert failed == observed.count(500) and served == observed.count(200)


def test_stream_stalls_after_the_configured_tokens(tmp_path: Path) -> None:
    with sim_server(tmp_path, stall_after_tokens=3, stall_seconds=60) as server:
        body = {"prompt": PROMPT, "max_tokens": 10, "stream": True}
        received = []
        timeout = httpx.Timeout(30.0, read=2.0)
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=timeout) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(line)
        # the client gave up mid-stall: the server counts the request as not served
        wait_until(lambda: server.metric("llmfleet_sim_requests_failed_total") == 1, 10, what="abort counted")
    assert len(received) == 3


def test_client_disconnect_frees_the_batch_slot(tmp_path: Path) -> None:
    with sim_server(tmp_path, decode_base_seconds=0.05) as server:
        body = {"prompt": PROMPT, "max_tokens": 1000, "stream": True}  # 50 s if left to run
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            assert server.metric("vllm:num_requests_running") == 1
        wait_until(lambda: server.metric("vllm:num_requests_running") == 0, 10, what="slot freed")
        assert server.metric("llmfleet_sim_requests_failed_total") == 1
        assert server.metric("vllm:request_success_total") == 0


def test_crash_after_requests_kills_the_process(tmp_path: Path) -> None:
    with sim_server(tmp_path, crash_after_requests=2) as server:
        assert [complete(server, prompt="hi", max_tokens=2).status_code for _ in range(2)] == [200, 200]
        with pytest.raises(httpx.TransportError):
            complete(server, prompt="hi", max_tokens=2)
        assert server.process.proc.wait(timeout=10) == 3
        with pytest.raises(httpx.ConnectError):
            complete(server, prompt="hi", max_tokens=2)


def test_health_is_503_until_the_startup_delay_passes(tmp_path: Path) -> None:
    with sim_server(tmp_path, wait_healthy=False, startup_delay_seconds=2) as server:
        assert server.health_status() == 503
        assert complete(server, prompt="hi").status_code == 503
        wait_until(lambda: server.health_status() == 200, 20, what="healthy after the startup delay")
        assert complete(server, prompt="hi", max_tokens=1).status_code == 200


def test_queue_and_batch_metrics_under_load(tmp_path: Path) -> None:
    # each request takes >= 12 x 100 ms, so all eight have arrived long before the first two finish
    flags: dict[str, Any] = {
        "max_num_seqs": 2,
        "decode_base_seconds": 0.1,
        "metrics_flavor": "llamacpp",
        "id": "q",
    }
    with sim_server(tmp_path, **flags) as server, ThreadPoolExecutor(8) as pool:
        replies = [pool.submit(complete, server, prompt=PROMPT, max_tokens=12) for _ in range(8)]
        # Admission happens at step boundaries, so (1 running, 6 waiting) is a real, brief state
        # while requests still arrive: read the gauges from one scrape once the batch is full.
        scrape: dict[str, float] = {}

        def batch_full_and_six_queued() -> bool:
            scrape.update(server.metrics())
            return (
                scrape.get("vllm:num_requests_running") == 2 and scrape.get("vllm:num_requests_waiting") == 6
            )

        wait_until(batch_full_and_six_queued, 20, what="two requests running and six queued")
        assert scrape["llamacpp:requests_deferred"] == 6
        assert scrape["llamacpp:requests_processing"] == 2
        assert scrape["vllm:gpu_cache_usage_perc"] > 0
        assert [r.result().status_code for r in replies] == [200] * 8
        assert server.metric("vllm:request_success_total") == 8
        assert server.metric("vllm:generation_tokens_total") == 8 * 12
        assert server.metric("llamacpp:tokens_predicted_total") == 8 * 12
        assert server.metric("vllm:prompt_tokens_total") == 8 * count_text_tokens(PROMPT)
        assert server.metric("llmfleet_sim_requests_received_total") == 8
        assert server.metric("vllm:time_to_first_token_seconds_count") == 8
        assert server.metric("vllm:num_requests_waiting") == 0
        # four waves of two: wave k waited k x 12 steps, a mean of 1.5 generations
        ttft_mean = server.metric("vllm:time_to_first_token_seconds_sum") / 8
        assert ttft_mean > 12 * 0.1


def parse_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_profile_presets_flags_and_explicit_flags_win(tmp_path: Path) -> None:
    profile = tmp_path / "llamacpp-8b.json"
    profile.write_text(
        json.dumps(
            {
                "_source": "calibrated",
                "max_num_seqs": 4,
                "decode_base_seconds": 0.03,
                "metrics_flavor": "llamacpp",
            }
        )
    )
    before = parse_flags("--max-num-seqs", "2", "--profile", str(profile))
    after = parse_flags("--profile", str(profile), "--decode-base-seconds", "0.07")
    assert (engine_config(before).max_num_seqs, engine_config(before).decode_base_seconds) == (2, 0.03)
    assert (engine_config(after).max_num_seqs, engine_config(after).decode_base_seconds) == (4, 0.07)
    assert before.metrics_flavor == "llamacpp"
    profile.write_text(json.dumps({"max_num_seq": 4}))
    with pytest.raises(SystemExit):
        parse_flags("--profile", str(profile))
