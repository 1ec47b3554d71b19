"""The real llama.cpp llama-server (built by hack/build-llama-server.sh) on the generated tiny model.

These pin down the engine behaviour the rest of the project relies on: the endpoints the
renderer probes and scrapes, the OpenAI-compatible streaming (one SSE event per token, exactly
``max_tokens`` tokens since the test model never ends a text), the ``llamacpp:`` metric families
the scaler queries, and that ``--parallel``/``--ctx-size`` set the slot count and per-slot context.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.llama import LlamaServer, llama_server, parse_metric, tiny_model
from tests.support.process import wait_until

pytestmark = [pytest.mark.realengine, pytest.mark.timeout(240)]

PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")
PARALLEL = 3
CTX = 1536  # split across the slots: 512 tokens each
ALIAS = "tiny-test"

# llama.cpp's /metrics families the scaler and the docs rely on (names without the prefix).
LLAMACPP_FAMILIES = [
    "prompt_tokens_total",
    "prompt_seconds_total",
    "tokens_predicted_total",
    "tokens_predicted_seconds_total",
    "n_decode_total",
    "n_busy_slots_per_decode",
    "prompt_tokens_seconds",
    "predicted_tokens_seconds",
    "requests_processing",
    "requests_deferred",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log_dir = tmp_path_factory.mktemp("llama")
    with llama_server(
        log_dir,
        tiny_model("tiny"),
        "--parallel",
        str(PARALLEL),
        "--ctx-size",
        str(CTX),
        "--metrics",
        "--alias",
        ALIAS,
    ) as running:
        yield running


@pytest.fixture
def client(server: LlamaServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(60.0, connect=5.0)) as http:
        yield http


def sse_events(response: httpx.Response) -> list[Any]:
    """The JSON payloads of an SSE stream, in order, up to ``data: [DONE]``."""
    events: list[Any] = []
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ").strip()
        if data == "[DONE]":
            break
        events.append(json.loads(data))
    return events


def test_health_and_models(server: LlamaServer, client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert [model["id"] for model in models["data"]] == [ALIAS]


@pytest.mark.parametrize("max_tokens", [1, 7, 32])
def test_chat_streaming_one_event_per_token(client: httpx.Client, max_tokens: int) -> None:
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    pieces = [
        e["choices"][0]["delta"]["content"]
        for e in events
        if e.get("choices") and e["choices"][0]["delta"].get("content")
    ]
    assert len(pieces) == max_tokens
    assert all(len(piece) == 1 for piece in pieces)  # the model emits single-byte tokens only
    assert set("".join(pieces)) <= PRINTABLE
    finishes = [
        e["choices"][0]["finish_reason"]
        for e in events
        if e.get("choices") and e["choices"][0].get("finish_reason")
    ]
    assert finishes == ["length"]
    usage = [e["usage"] for e in events if e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == max_tokens


@pytest.mark.parametrize("max_tokens", [1, 9, 24])
def test_completions_streaming_one_event_per_token(client: httpx.Client, max_tokens: int) -> None:
    body = {"model": ALIAS, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)
    pieces = [e["choices"][0]["text"] for e in events if e.get("choices") and e["choices"][0].get("text")]
    assert len(pieces) == max_tokens
    assert set("".join(pieces)) <= PRINTABLE
    finishes = [
        e["choices"][0]["finish_reason"]
        for e in events
        if e.get("choices") and e["choices"][0].get("finish_reason")
    ]
    assert finishes == ["length"]


def test_non_streaming_runs_exactly_to_max_tokens(client: httpx.Client) -> None:
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": ALIAS,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 20,
        },
    ).json()
    assert chat["usage"]["completion_tokens"] == 20
    assert chat["choices"][0]["finish_reason"] == "length"
    content = chat["choices"][0]["message"]["content"]
    assert len(content) == 20 and set(content) <= PRINTABLE

    completion = client.post(
        "/v1/completions", json={"model": ALIAS, "prompt": "abc", "max_tokens": 11}
    ).json()
    assert completion["usage"]["completion_tokens"] == 11
    assert completion["usage"]["prompt_tokens"] == 3  # byte tokens, no merge for "abc"
    assert completion["choices"][0]["finish_reason"] == "length"
    assert len(completion["choices"][0]["text"]) == 11


def test_metrics_expose_llamacpp_families_and_count_tokens(server: LlamaServer, client: httpx.Client) -> None:
    text = server.metrics_text()
    for family in LLAMACPP_FAMILIES:
        assert f"# TYPE llamacpp:{family} " in text, family
        assert parse_metric(text, f"llamacpp:{family}") is not None, family
    before = parse_metric(text, "llamacpp:tokens_predicted_total")
    prompt_before = parse_metric(text, "llamacpp:prompt_tokens_total")
    assert before is not None and prompt_before is not None
    response = client.post(
        "/v1/completions", json={"model": ALIAS, "prompt": "xyz xyz", "max_tokens": 13, "cache_prompt": False}
    )
    assert response.status_code == 200
    after = server.metrics_text()
    assert parse_metric(after, "llamacpp:tokens_predicted_total") == before + 13
    assert (
        parse_metric(after, "llamacpp:prompt_tokens_total")
        == prompt_before + response.json()["usage"]["prompt_tokens"]
    )
    assert parse_metric(after, "llamacpp:requests_processing") == 0
    assert parse_metric(after, "llamacpp:requests_deferred") == 0


def test_parallel_sets_slots_and_ctx_size_is_split(server: LlamaServer, client: httpx.Client) -> None:
    slots = client.get("/slots").json()
    assert len(slots) == PARALLEL
    assert {slot["n_ctx"] for slot in slots} == {CTX // PARALLEL}
    props = client.get("/props").json()
    assert props["total_slots"] == PARALLEL
    assert props["default_generation_settings"]["n_ctx"] == CTX // PARALLEL


def test_prompt_longer_than_a_slot_is_rejected(client: httpx.Client) -> None:
    prompt = "x" * (CTX // PARALLEL + 50)  # one token per byte: no merge covers "xx"
    response = client.post("/v1/completions", json={"model": ALIAS, "prompt": prompt, "max_tokens": 4})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "exceed_context_size_error"


def test_concurrent_streams_beyond_the_slots_all_complete(server: LlamaServer) -> None:
    """PARALLEL + 2 concurrent streams: the extra two queue (deferred) and still run to max_tokens."""
    import concurrent.futures

    def one(i: int) -> int:
        body = {"model": ALIAS, "prompt": f"request {i}", "max_tokens": 48, "stream": True}
        with (
            httpx.Client(base_url=server.url, timeout=httpx.Timeout(120.0, connect=5.0)) as http,
            http.stream("POST", "/v1/completions", json=body) as response,
        ):
            assert response.status_code == 200
            return sum(1 for e in sse_events(response) if e.get("choices") and e["choices"][0].get("text"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL + 2) as pool:
        counts = list(pool.map(one, range(PARALLEL + 2)))
    assert counts == [48] * (PARALLEL + 2)


def _completion(conn: http.client.HTTPConnection, stream: bool) -> bytes:
    body = json.dumps({"model": ALIAS, "prompt": "hi", "max_tokens": 5, "stream": stream})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    assert response.status == 200
    assert response.getheader("Connection") is None  # nothing announces the close below
    assert response.getheader("Keep-Alive") is not None
    return payload


def _peer_closed(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0.05)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def test_streamed_response_closes_the_connection_despite_keep_alive(server: LlamaServer) -> None:
    """The defect the load-balancer configs are built around (docs/real-engine.md).

    After a streamed response the server closes the connection although it answered with
    ``Keep-Alive`` and without ``Connection: close``: a client or proxy that reuses it writes
    into a closed socket. After a non-streamed response the connection really is reusable.
    """
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        _completion(conn, stream=False)
        _completion(conn, stream=False)  # reused: fine
        assert b"data: [DONE]" in _completion(conn, stream=True)
        sock = conn.sock
        assert sock is not None, "http.client already dropped the connection: it was announced as closing"
        wait_until(lambda: _peer_closed(sock), timeout=30, what="llama-server to close the connection")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            _completion(conn, stream=False)
    finally:
        conn.close()
