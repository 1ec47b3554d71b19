"""The semantic cache fails open: a busy or broken embedder skips the lookup, never the request."""

from __future__ import annotations

import asyncio

import numpy as np

from llmfleet.gateway.metrics import GatewayMetrics
from llmfleet.gateway.semantic import SemanticCache, Vector


class BlockingEmbedder:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def embed(self, text: str) -> Vector:
        self.calls += 1
        await self.release.wait()
        return np.full(4, 0.5, dtype=np.float32)

    def close(self) -> None:
        pass


class BrokenEmbedder(BlockingEmbedder):
    async def embed(self, text: str) -> Vector:
        raise RuntimeError("model failed")


def semantic(embedder: BlockingEmbedder, max_pending: int, metrics: GatewayMetrics) -> SemanticCache:
    return SemanticCache(embedder, index=None, cache=None, max_pending=max_pending, metrics=metrics)  # type: ignore[arg-type]


def skipped(metrics: GatewayMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "llmfleet_gateway_cache_lookups_total", {"type": "semantic", "result": result}
    )
    return value or 0.0


async def test_requests_beyond_the_pending_bound_skip_the_semantic_cache() -> None:
    metrics = GatewayMetrics()
    embedder = BlockingEmbedder()
    cache = semantic(embedder, max_pending=2, metrics=metrics)
    waiting = [asyncio.create_task(cache.embed(f"q{i}")) for i in range(2)]
    await asyncio.sleep(0)
    assert await cache.embed("one too many") is None
    assert skipped(metrics, "skipped") == 1
    embedder.release.set()
    vectors = await asyncio.gather(*waiting)
    assert all(v is not None and v.shape == (4,) for v in vectors)
    assert embedder.calls == 2
    assert await cache.embed("room again") is not None


async def test_embedding_errors_skip_the_semantic_cache() -> None:
    metrics = GatewayMetrics()
    cache = semantic(BrokenEmbedder(), max_pending=2, metrics=metrics)
    assert await cache.embed("anything") is None
    assert await cache.embed("anything") is None  # the failure did not leak a pending slot
    assert skipped(metrics, "error") == 2
    assert skipped(metrics, "skipped") == 0
