"""Where the TTFT signal for ``engine.kind: llamacpp`` comes from, proven against the real engine.

llama-server exports no latency histogram (docs/real-engine.md), so the scaler's latency signal
for llamacpp has to be measured in front of it. A balancer's "time to response headers"
(haproxy ``Tr``/``haproxy_*_response_time_average_seconds``, nginx ``$upstream_header_time``) is
the wrong clock: llama-server sends the headers as soon as a slot takes the request, *before*
the prompt is processed. The first body byte, on the other hand, is the first token. The
caching gateway's ``llmfleet_gateway_upstream_ttft_seconds`` histogram times exactly that (from
sending the request upstream to its first body byte), so it includes queueing and prefill: that
is the llamacpp TTFT signal, ``histogram_quantile(0.95, sum by (le) (rate(
llmfleet_gateway_upstream_ttft_seconds_bucket[1m])))``.

The checks are causal orderings (what the server had done when a byte arrived), not durations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_helpers import gateway, redis_server
from tests.support.llama import LlamaServer, llama_server, tiny_model

pytestmark = [pytest.mark.realengine, pytest.mark.realservers, pytest.mark.slow, pytest.mark.timeout(300)]

PROMPT_TOKENS = 3000  # one token per byte of "x": a prefill that takes a while even on a fast machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with llama_server(tmp_path_factory.mktemp("llama"), tiny_model("small"), "--parallel", "1", "--ctx-size", "4096",
                      "--metrics") as running:  # fmt: skip
        yield running


def final_timings(events: list[dict[str, object]]) -> dict[str, float]:
    timings = [e["timings"] for e in events if "timings" in e]
    assert timings, "llama-server sent no timings"
    return timings[-1]  # type: ignore[return-value]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_headers_come_before_prefill_and_the_first_body_byte_is_the_first_token(
    server: LlamaServer, path: str
) -> None:
    prompt = "x" * PROMPT_TOKENS
    body: dict[str, object] = {"max_tokens": 3, "stream": True, "cache_prompt": False}
    if path == "/v1/completions":
        body["prompt"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(240.0, connect=5.0)) as http, \
            http.stream("POST", path, json=body) as response:  # fmt: skip
        assert response.status_code == 200
        # The headers are here: what has the server done with this request so far?
        (slot,) = http.get("/slots").json()
        chunks = response.iter_raw()
        first = next(chunks)
        rest = first + b"".join(chunks)
    assert slot["is_processing"] is True
    assert slot["next_token"][0]["n_decoded"] == 0, "headers came only after decoding started"
    # The first body bytes already carry the first generated token (the chat role delta comes
    # in the same write as the first content delta).
    first_event = json.loads(first.split(b"\n", 1)[0].removeprefix(b"data: "))
    choice = first_event["choices"][0]
    assert choice.get("text") or choice["delta"].get("content") or b'"content":"' in first, first[:200]
    events = [json.loads(line[6:]) for line in rest.split(b"\n") if line.startswith(b"data: {")]
    assert final_timings(events)["prompt_n"] >= PROMPT_TOKENS


def test_gateway_upstream_ttft_includes_the_prefill(server: LlamaServer, tmp_path: Path) -> None:
    """The gateway's upstream TTFT observation is at least the engine's own prompt-processing time."""
    with redis_server(tmp_path) as redis, gateway(tmp_path, server.url, redis.url) as gw:
        count_before = gw.metric("llmfleet_gateway_upstream_ttft_seconds_count")
        sum_before = gw.metric("llmfleet_gateway_upstream_ttft_seconds_sum")
        body = {
            "prompt": "x" * (PROMPT_TOKENS - 1) + "y",
            "max_tokens": 3,
            "stream": True,
            "cache_prompt": False,
        }
        with httpx.Client(base_url=gw.url, timeout=httpx.Timeout(240.0, connect=5.0)) as http:
            response = http.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        events = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
        assert sum(1 for e in events if e.get("choices") and e["choices"][0].get("text")) == 3
        prompt_seconds = final_timings(events)["prompt_ms"] / 1000
        count = gw.metric("llmfleet_gateway_upstream_ttft_seconds_count") - count_before
        observed = gw.metric("llmfleet_gateway_upstream_ttft_seconds_sum") - sum_before
    assert count == 1
    # The first token cannot leave the engine before its prompt is processed, and the gateway
    # started its clock before sending the request: its TTFT covers the whole prefill.
    assert observed >= prompt_seconds, (observed, prompt_seconds)
