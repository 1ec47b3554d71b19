"""OpenAI wire format of the sim-server: request validation, response bodies and SSE events.

Clients, the gateway and load balancers parse these bytes, so they follow vLLM's shapes exactly
(compact JSON, one ``data:`` event per token, ``stream_options.include_usage``, ``[DONE]``). Kept
apart from the HTTP plumbing so the shapes are plain functions of a sequence's state, and cheap:
a token event is a precomputed prefix and suffix around one word, not a JSON encoding.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from llmfleet.sim.engine import Sequence, count_chat_tokens, count_text_tokens

_GENERATED_TEXT = (
    "the model said that a fleet of servers can answer more requests when the load balancer "
    "spreads them well and the queue stays short so every user sees the first token soon "
    "while batches grow and each step takes longer than before under heavy traffic today"
)
# Generated text: token i of a request is one of these words (ASCII, JSON-safe, leading space).
WORDS = tuple(" " + word for word in _GENERATED_TEXT.split(" "))
_TOKEN_MARK = "\x00token\x00"
DONE_EVENT = "data: [DONE]\n\n"


def dumps(value: Any) -> str:
    """Compact JSON, as vLLM's pydantic models serialize."""
    return json.dumps(value, separators=(",", ":"))


def generated_words(seq: Sequence, start: int, stop: int) -> list[str]:
    """Text of tokens ``start..stop-1`` of a sequence, one word per token."""
    return [WORDS[(seq.seq_id * 7 + i) % len(WORDS)] for i in range(start, stop)]


@dataclass(frozen=True)
class GenerationRequest:
    """The parts of a completions or chat request that the simulator acts on."""

    model: str | None
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    ignore_eos: bool


def _positive_int(body: dict[str, Any], *keys: str, default: int) -> int:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
        return value
    return default


def _chat_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages must be a non-empty list of objects")
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        texts.append(content if isinstance(content, str) else "")
    return count_chat_tokens(texts)


def _completion_prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return count_text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)  # token ids
    raise ValueError("prompt must be a string or a list of token ids (one prompt per request)")


def parse_request(body: Any, chat: bool, default_max_tokens: int, max_model_len: int) -> GenerationRequest:
    """Validate an OpenAI request body; raises ValueError with the message for a 400.

    Without ``max_tokens`` a request gets ``default_max_tokens``, shortened to what the context
    leaves after the prompt (as vLLM fills the context).
    """
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    if body.get("n") not in (None, 1):
        raise ValueError("the simulator serves n=1 only")
    if chat:
        prompt_tokens = _chat_prompt_tokens(body.get("messages"))
    else:
        prompt_tokens = _completion_prompt_tokens(body.get("prompt"))
    options = body.get("stream_options") or {}
    model = body.get("model")
    default_max_tokens = max(1, min(default_max_tokens, max_model_len - prompt_tokens))
    return GenerationRequest(
        model=model if isinstance(model, str) else None,
        prompt_tokens=max(1, prompt_tokens),
        max_tokens=_positive_int(body, "max_tokens", "max_completion_tokens", default=default_max_tokens),
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


def usage(seq: Sequence) -> dict[str, int]:
    return {
        "prompt_tokens": seq.prompt_tokens,
        "completion_tokens": seq.generated,
        "total_tokens": seq.prompt_tokens + seq.generated,
    }


def envelope(seq: Sequence, chat: bool, model: str, server_id: str, stream: bool) -> dict[str, Any]:
    """The fields every response or chunk of one request shares."""
    kind = "text_completion"
    if chat:
        kind = "chat.completion.chunk" if stream else "chat.completion"
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{server_id}-{seq.seq_id}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": server_id,
    }


def completion_body(seq: Sequence, chat: bool, model: str, server_id: str) -> dict[str, Any]:
    """The non-streaming response of a finished sequence."""
    text = "".join(generated_words(seq, 0, seq.generated))
    choice: dict[str, Any]
    if chat:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": seq.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": seq.finish_reason}
        choice["stop_reason"] = None
    return {**envelope(seq, chat, model, server_id, stream=False), "choices": [choice], "usage": usage(seq)}


class EventStream:
    """The server-sent events of one streaming request, token by token."""

    def __init__(self, seq: Sequence, chat: bool, model: str, server_id: str, include_usage: bool) -> None:
        self.seq, self.chat, self.include_usage = seq, chat, include_usage
        self.envelope = envelope(seq, chat, model, server_id, stream=True)
        self.usage_field: dict[str, Any] = {"usage": None} if include_usage else {}
        if chat:
            self.choice: dict[str, Any] = {"index": 0, "delta": {"content": _TOKEN_MARK}}
            self.choice.update(logprobs=None, finish_reason=None)
        else:
            self.choice = {"index": 0, "text": _TOKEN_MARK, "logprobs": None, "finish_reason": None}
            self.choice["stop_reason"] = None
        template = self.event({"choices": [self.choice]})
        self.prefix, self.suffix = template.split(dumps(_TOKEN_MARK))

    def event(self, payload: dict[str, Any]) -> str:
        return f"data: {dumps({**self.envelope, **payload, **self.usage_field})}\n\n"

    def tokens(self, start: int, stop: int) -> str:
        """Events of tokens ``start..stop-1``; the role first in chat, the finish reason last."""
        seq, parts = self.seq, []
        if self.chat and start == 0 and stop > 0:
            parts.append(
                self.event({"choices": [{**self.choice, "delta": {"role": "assistant", "content": ""}}]})
            )
        words = generated_words(seq, start, stop)
        last = stop == seq.output_tokens and bool(words)
        parts.extend(f'{self.prefix}"{word}"{self.suffix}' for word in (words[:-1] if last else words))
        if last:
            final = {**self.choice, "finish_reason": seq.finish_reason}
            final.update({"delta": {"content": words[-1]}} if self.chat else {"text": words[-1]})
            parts.append(self.event({"choices": [final]}))
        return "".join(parts)

    def end(self) -> str:
        """The usage chunk (when asked for) and ``[DONE]``."""
        if not self.include_usage:
            return DONE_EVENT
        body = {**self.envelope, "choices": [], "usage": usage(self.seq)}
        return f"data: {dumps(body)}\n\n{DONE_EVENT}"
