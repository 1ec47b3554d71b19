"""Which requests may be cached, and under which key: pure functions, no I/O.

The key must change whenever the answer could change (model, prompt, every sampling
parameter, streaming or not) and must never be shared between callers: the caller's identity
(its Authorization header and its tenant header) is hashed into every key, so no tenant can
read another tenant's cached response. Spellings that cannot change the answer are folded
together (JSON key order, ``0`` vs ``0.0``, parameters given at their documented default), so
that they share one entry.

Only deterministic requests are cached by default: temperature 0 (greedy decoding) or an
explicit ``seed``. A sampled answer served twice would silently remove the variety the caller
asked for.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CACHEABLE_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})
CACHE_HEADER = "X-LLMFleet-Cache"
KEY_PREFIX = "llmfleet:gw:v1"

# Parameters that, at these values, mean the same as leaving them out (OpenAI API defaults).
_DEFAULTS: dict[str, Any] = {
    "n": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "echo": False,
    "best_of": 1,
    "suffix": None,
    "stop": None,
    "seed": None,
    "logit_bias": None,
    "user": None,
    "stream_options": None,
}
# The message content of these fields is what the semantic cache compares; everything else in
# the request must match exactly.
_PROMPT_FIELDS = {"/v1/completions": "prompt", "/v1/chat/completions": "messages"}


@dataclass(frozen=True)
class CacheableRequest:
    """A request the cache may answer: its exact key and, when it has one, its semantic parts."""

    path: str
    model: str
    stream: bool
    exact_key: str
    read: bool  # may be answered from the cache (false for Cache-Control: no-cache)
    write: bool  # its response may be stored (false for Cache-Control: no-store)
    semantic_scope: str | None  # everything but the last prompt text, hashed; None: not eligible
    semantic_text: str | None


@dataclass(frozen=True)
class NotCacheable:
    """Why a request goes straight to the upstream (a metric label, so a short constant)."""

    reason: str  # path | bypass | nondeterministic | invalid


def canonical(value: Any) -> Any:
    """A JSON value with every spelling of the same meaning folded into one."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def normalize_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request body with defaults dropped and numbers and key order made canonical."""
    normalized = {}
    for name, value in canonical(body).items():
        if name in _DEFAULTS and value == _DEFAULTS[name]:
            continue
        normalized[name] = value
    normalized["stream"] = bool(normalized.get("stream", False))
    return normalized


def caller_identity(headers: Mapping[str, str], tenant_header: str) -> str:
    """A digest of who is asking: the Authorization header and the tenant header, both optional.

    Requests with neither share the anonymous identity: they are one caller as far as the
    upstream can tell too.
    """
    authorization = headers.get("Authorization", "")
    tenant = headers.get(tenant_header, "") if tenant_header else ""
    material = json.dumps([authorization, tenant]).encode()
    return hashlib.sha256(material).hexdigest()


def is_deterministic(body: Mapping[str, Any]) -> bool:
    """Greedy decoding or a fixed seed: the same request should give the same answer."""
    temperature = body.get("temperature")
    greedy = isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0
    return greedy or body.get("seed") is not None


def cache_directives(headers: Mapping[str, str]) -> tuple[bool, bool]:
    """(read, write) allowed by the caller's headers.

    ``X-LLMFleet-Cache: bypass`` turns both off; ``Cache-Control: no-store`` too (nothing of
    this exchange may be kept); ``Cache-Control: no-cache`` means "do not answer me from the
    cache" (HTTP semantics: the fresh answer may still be stored).
    """
    if headers.get(CACHE_HEADER, "").strip().lower() == "bypass":
        return False, False
    directives = {d.strip().split("=")[0].lower() for d in headers.get("Cache-Control", "").split(",")}
    if "no-store" in directives:
        return False, False
    if "no-cache" in directives:
        return False, True
    return True, True


def _digest(*parts: Any) -> str:
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


def _semantic_parts(path: str, normalized: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Split the request into (everything that must match exactly, the text to compare).

    The compared text is the prompt of a completion, or the last message of a chat when it is
    a user message with plain-text content; the earlier messages (system prompt, history) must
    match exactly, as must every parameter.
    """
    field = _PROMPT_FIELDS[path]
    rest = {k: v for k, v in normalized.items() if k != field}
    value = normalized.get(field)
    if path == "/v1/completions":
        return (rest, value) if isinstance(value, str) and value.strip() else None
    if not isinstance(value, list) or not value:
        return None
    last = value[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if not isinstance(content, str) or not content.strip():
        return None
    others = {k: v for k, v in last.items() if k != "content"}
    rest[field] = [*value[:-1], others]
    return rest, content


def classify(
    path: str, headers: Mapping[str, str], body: bytes, tenant_header: str, cache_all: bool = False
) -> CacheableRequest | NotCacheable:
    """Decide whether the cache may see this request, and compute its keys if so."""
    if path not in CACHEABLE_PATHS:
        return NotCacheable("path")
    read, write = cache_directives(headers)
    if not (read or write):
        return NotCacheable("bypass")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return NotCacheable("invalid")
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model", ""), str):
        return NotCacheable("invalid")
    if not cache_all and not is_deterministic(parsed):
        return NotCacheable("nondeterministic")
    try:
        normalized = normalize_body(parsed)
    except TypeError:
        return NotCacheable("invalid")
    identity = caller_identity(headers, tenant_header)
    exact_key = f"{KEY_PREFIX}:exact:{_digest(identity, path, normalized)}"
    parts = _semantic_parts(path, normalized)
    scope = text = None
    if parts is not None:
        rest, text = parts
        scope = f"{KEY_PREFIX}:sem:{_digest(identity, path, rest)}"
    return CacheableRequest(
        path=path,
        model=str(normalized.get("model", "")),
        stream=normalized["stream"],
        exact_key=exact_key,
        read=read,
        write=write,
        semantic_scope=scope,
        semantic_text=text,
    )
