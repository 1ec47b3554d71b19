"""The sim-server's OpenAI wire format: what clients parse, without a server."""

from __future__ import annotations

import json

import pytest

from llmfleet.sim.engine import Engine, EngineConfig, Sequence, count_text_tokens
from llmfleet.sim.openai_api import EventStream, completion_body, parse_request


def finished_sequence(max_tokens: int) -> Sequence:
    engine = Engine(EngineConfig())
    seq = engine.add(prompt_tokens=7, max_tokens=max_tokens, now=0.0)
    now = 0.0
    while engine.busy:
        now += engine.start_step(now) or 0.0
        engine.finish_step(now)
    return seq


def payloads(events: str) -> list[str]:
    assert events.endswith("\n\n")
    chunks = events.split("\n\n")[:-1]
    assert all(chunk.startswith("data: ") and "\n" not in chunk for chunk in chunks)
    return [chunk.removeprefix("data: ") for chunk in chunks]


@pytest.mark.parametrize("chat", [False, True])
def test_streamed_text_equals_the_non_streamed_text(chat: bool) -> None:
    seq = finished_sequence(max_tokens=6)
    stream = EventStream(seq, chat, "m", "backend-a", include_usage=True)
    events = [json.loads(p) for p in payloads(stream.tokens(0, 2) + stream.tokens(2, 6))]
    body = completion_body(seq, chat, "m", "backend-a")
    if chat:
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        assert streamed == body["choices"][0]["message"]["content"]
    else:
        streamed = "".join(e["choices"][0]["text"] for e in events)
        assert streamed == body["choices"][0]["text"]
    assert [e["choices"][0]["finish_reason"] for e in events][-2:] == [None, "length"]
    assert all(e["usage"] is None and e["id"] == events[0]["id"] for e in events)


def test_stream_end_carries_usage_then_done() -> None:
    seq = finished_sequence(max_tokens=3)
    with_usage = payloads(EventStream(seq, False, "m", "x", include_usage=True).end())
    assert json.loads(with_usage[0])["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }
    assert json.loads(with_usage[0])["choices"] == []
    assert with_usage[1] == "[DONE]"
    assert payloads(EventStream(seq, False, "m", "x", include_usage=False).end()) == ["[DONE]"]


def test_requests_are_parsed_like_openai() -> None:
    chat = parse_request(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": 9,
        },
        chat=True,
        default_max_tokens=256,
        max_model_len=8192,
    )
    assert (chat.prompt_tokens, chat.max_tokens, chat.stream, chat.include_usage) == (
        2 + 4 + 3,
        9,
        True,
        True,
    )
    text = parse_request({"prompt": ["one two"]}, chat=False, default_max_tokens=256, max_model_len=100)
    assert (text.prompt_tokens, text.max_tokens, text.model) == (count_text_tokens("one two"), 98, None)


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "max_tokens": True},
        {"prompt": "x", "max_tokens": 0},
        {"prompt": "x", "n": 2},
        {"prompt": ["a", "b"]},
        {"prompt": 5},
        {"messages": []},
        ["prompt"],
    ],
)
def test_malformed_requests_are_refused(body: object) -> None:
    chat = isinstance(body, dict) and "messages" in body
    with pytest.raises(ValueError):
        parse_request(body, chat=chat, default_max_tokens=16, max_model_len=8192)
