"""Cache keys: equal meaning -> equal key, any difference that can change the answer -> new key."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from llmfleet.gateway.keys import (
    CacheableRequest,
    NotCacheable,
    cache_directives,
    classify,
    is_deterministic,
    normalize_body,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TENANT = "X-Tenant-ID"


def chat_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0,
        "max_tokens": 16,
    }
    body.update(overrides)
    return body


def decide(
    body: Any, headers: dict[str, str] | None = None, path: str = CHAT
) -> CacheableRequest | NotCacheable:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify(path, CIMultiDict(headers or {}), raw, TENANT)


def key(body: Any, headers: dict[str, str] | None = None, path: str = CHAT) -> str:
    decision = decide(body, headers, path)
    assert isinstance(decision, CacheableRequest), decision
    return decision.exact_key


def test_key_ignores_json_spelling() -> None:
    a = chat_body(temperature=0, top_p=1.0)
    b = dict(reversed(list(chat_body(temperature=0.0).items())))  # other key order, no top_p
    assert key(a) == key(b)
    assert key(a).startswith("llmfleet:gw:v1:exact:")


def test_default_valued_parameters_share_the_entry() -> None:
    assert key(chat_body(n=1, presence_penalty=0, stop=None, stream=False)) == key(chat_body())


def test_every_parameter_changes_the_key() -> None:
    base = key(chat_body())
    variants = [
        chat_body(model="other"),
        chat_body(max_tokens=17),
        chat_body(top_p=0.5),
        chat_body(seed=1),
        chat_body(stop=["\n"]),
        chat_body(stream=True),
        chat_body(messages=[{"role": "user", "content": "What is the capital of France?"}]),
        chat_body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "What is the capital of Spain?"},
            ]
        ),
    ]
    keys = {key(v) for v in variants}
    assert base not in keys
    assert len(keys) == len(variants)


def test_route_is_part_of_the_key() -> None:
    body = {"model": "m", "prompt": "hello", "temperature": 0}
    assert key(body, path=COMPLETIONS) != key({**body, "messages": [{"role": "user", "content": "hello"}]})


def test_identity_separates_tenants_and_credentials() -> None:
    body = chat_body()
    anonymous = key(body)
    keys = {
        key(body, {"Authorization": "Bearer a"}),
        key(body, {"Authorization": "Bearer b"}),
        key(body, {TENANT: "team-a"}),
        key(body, {TENANT: "team-b"}),
        key(body, {"Authorization": "Bearer a", TENANT: "team-a"}),
    }
    assert len(keys) == 5
    assert anonymous not in keys
    # header names are case-insensitive, values are not
    assert key(body, {"authorization": "Bearer a"}) == key(body, {"Authorization": "Bearer a"})


def test_identity_fields_cannot_be_confused() -> None:
    # "a" as Authorization with no tenant must differ from no Authorization with tenant "a"
    assert key(chat_body(), {"Authorization": "a"}) != key(chat_body(), {TENANT: "a"})


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 0.7, "seed": 42})
    assert not is_deterministic({})  # the API default temperature is 1
    assert not is_deterministic({"temperature": 0.2})
    assert not is_deterministic({"temperature": False})
    assert decide(chat_body(temperature=0.8)) == NotCacheable("nondeterministic")
    assert isinstance(decide(chat_body(temperature=0.8, seed=3)), CacheableRequest)


def test_cache_all_caches_sampled_requests() -> None:
    raw = json.dumps(chat_body(temperature=0.8)).encode()
    assert isinstance(classify(CHAT, CIMultiDict(), raw, TENANT, cache_all=True), CacheableRequest)


def test_opt_out_headers() -> None:
    assert cache_directives(CIMultiDict()) == (True, True)
    assert cache_directives(CIMultiDict({"X-LLMFleet-Cache": "bypass"})) == (False, False)
    assert cache_directives(CIMultiDict({"Cache-Control": "no-store"})) == (False, False)
    assert cache_directives(CIMultiDict({"cache-control": "max-age=0, No-Cache"})) == (False, True)
    assert decide(chat_body(), {"X-LLMFleet-Cache": "BYPASS"}) == NotCacheable("bypass")
    no_cache = decide(chat_body(), {"Cache-Control": "no-cache"})
    assert isinstance(no_cache, CacheableRequest)
    assert (no_cache.read, no_cache.write) == (False, True)


def test_other_paths_and_bad_bodies_pass_through() -> None:
    assert decide(chat_body(), path="/v1/embeddings") == NotCacheable("path")
    assert decide(b"{not json") == NotCacheable("invalid")
    assert decide([1, 2]) == NotCacheable("invalid")
    assert decide(chat_body(model=5)) == NotCacheable("invalid")


def test_semantic_parts_of_a_chat() -> None:
    decision = decide(chat_body())
    assert isinstance(decision, CacheableRequest)
    assert decision.semantic_text == "What is the capital of France?"
    paraphrase = decide(
        chat_body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "France's capital city?"},
            ]
        )
    )
    assert isinstance(paraphrase, CacheableRequest)
    assert paraphrase.semantic_scope == decision.semantic_scope
    assert paraphrase.exact_key != decision.exact_key
    # anything else differing puts it in another scope
    for other in (
        decide(chat_body(max_tokens=99)),
        decide(chat_body(), {TENANT: "t"}),
        decide(
            chat_body(
                messages=[
                    {"role": "system", "content": "be verbose"},
                    {"role": "user", "content": "What is the capital of France?"},
                ]
            )
        ),
    ):
        assert isinstance(other, CacheableRequest)
        assert other.semantic_scope != decision.semantic_scope


def test_semantic_needs_a_plain_text_last_user_message() -> None:
    assistant_last = decide(
        chat_body(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    )
    multimodal = decide(chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]))
    for decision in (assistant_last, multimodal):
        assert isinstance(decision, CacheableRequest)
        assert decision.semantic_scope is None and decision.semantic_text is None
    completion = decide({"model": "m", "prompt": "Once upon", "temperature": 0}, path=COMPLETIONS)
    assert isinstance(completion, CacheableRequest) and completion.semantic_text == "Once upon"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=6), st.randoms())
def test_normalization_is_invariant_under_key_order(body: dict[str, Any], rng: Any) -> None:
    items = list(body.items())
    rng.shuffle(items)
    assert normalize_body(dict(items)) == normalize_body(body)
    # and survives a JSON round trip (what the gateway actually hashes)
    assert normalize_body(json.loads(json.dumps(body))) == normalize_body(body)
