"""A real Prometheus scrapes real llama-servers under a rising, bounded load.

The scaler's signals for ``engine.kind: llamacpp`` come from llama-server's own gauges and
counters (no labels, no histograms): queue depth is ``llamacpp:requests_deferred`` (requests
waiting for a slot), load is ``llamacpp:requests_processing`` and the token rates are the
``*_total`` counters. This drives two servers with 2 slots each first below their slots, then
beyond them, and reads the signals through Prometheus with prometheus-api-client the way the
live scaler does. Only conditions on counts are asserted, never durations.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx
import pytest
from prometheus_api_client import PrometheusConnect

from tests.support.llama import LlamaServer, llama_server, tiny_model
from tests.support.load import ClientThreads
from tests.support.process import wait_until
from tests.support.prometheus import eventually, run_prometheus, scalar

pytestmark = [pytest.mark.realengine, pytest.mark.realservers, pytest.mark.slow, pytest.mark.timeout(300)]

SLOTS = 2
QUEUE = "sum(llamacpp:requests_deferred)"
QUEUE_PER_REPLICA = "avg(llamacpp:requests_deferred)"  # what an HPA AverageValue target compares
RUNNING = "sum(llamacpp:requests_processing)"
TOKEN_RATE = "sum(rate(llamacpp:tokens_predicted_total[10s]))"
PROMPT_RATE = "sum(rate(llamacpp:prompt_tokens_total[10s]))"


class Load(ClientThreads):
    """``clients`` threads per server, each streaming completions until stopped (bounded count)."""

    def __init__(self, servers: list[LlamaServer], clients: int, max_requests: int = 40,
                 max_tokens: int = 96) -> None:  # fmt: skip
        super().__init__(join_timeout=120)
        self.tokens: list[int] = []
        self.errors: list[str] = []
        self.max_tokens = max_tokens
        for server in servers:
            for i in range(clients):
                self.spawn(self._client, server, max_requests, i)

    def _client(self, server: LlamaServer, max_requests: int, i: int) -> None:
        # A fresh connection per request: llama-server closes it after every stream.
        for n in range(max_requests):
            if self.stop.is_set():
                return
            body = {"prompt": f"client {i} request {n}", "max_tokens": self.max_tokens, "stream": True}
            try:
                with httpx.Client(base_url=server.url, timeout=120) as client, \
                        client.stream("POST", "/v1/completions", json=body) as response:  # fmt: skip
                    count = 0
                    for line in response.iter_lines():
                        if line.startswith("data: {"):
                            event = json.loads(line[6:])
                            count += bool(event.get("choices") and event["choices"][0].get("text"))
                    self.tokens.append(count)
            except httpx.HTTPError as error:
                self.errors.append(repr(error))


def test_queue_and_load_signals_follow_a_rising_load(tmp_path: Path) -> None:
    model = tiny_model("small")  # slow enough that requests overlap and queue
    with contextlib.ExitStack() as stack:
        flags = ("--parallel", str(SLOTS), "--ctx-size", str(512 * SLOTS), "--metrics")
        servers = [stack.enter_context(llama_server(tmp_path, model, *flags)) for _ in range(2)]
        prometheus = PrometheusConnect(
            url=stack.enter_context(
                run_prometheus(tmp_path, [server.port for server in servers], job="llamacpp")
            ),
            disable_ssl=True,
        )
        wait_until(lambda: scalar(prometheus, "sum(up)") == 2, 60, interval=0.5, what="both targets scraped")
        assert scalar(prometheus, QUEUE) == 0
        assert scalar(prometheus, RUNNING) == 0

        # Below the slots: one client per server. Work runs, nothing queues.
        with Load(servers, clients=1) as light:
            running = eventually(prometheus, RUNNING, lambda v: v >= 1, "running requests", timeout=90)
            tokens = eventually(prometheus, TOKEN_RATE, lambda v: v > 0, "a token rate", timeout=90)
            prompts = eventually(prometheus, PROMPT_RATE, lambda v: v > 0, "a prompt-token rate", timeout=90)
            light_queue_max = max(scalar(prometheus, f"max_over_time({QUEUE}[30s:1s])"), 0.0)
        assert running <= 2 and tokens > 0 and prompts > 0
        assert light_queue_max == 0, "one client per server never waits for a slot"

        # Beyond the slots: SLOTS + 2 clients per server. Every slot busy, the rest deferred.
        with Load(servers, clients=SLOTS + 2) as heavy:
            queue = eventually(
                prometheus, QUEUE, lambda v: v >= 2, "requests deferred beyond the slots", timeout=90
            )
            per_replica = eventually(
                prometheus, QUEUE_PER_REPLICA, lambda v: v >= 1, "a per-replica queue", timeout=90
            )
            full = eventually(prometheus, RUNNING, lambda v: v == 2 * SLOTS, "every slot busy", timeout=90)
            per_server = prometheus.custom_query("max_over_time(llamacpp:requests_processing[30s])")

    assert not light.errors and not heavy.errors, (light.errors + heavy.errors)[:3]
    assert set(light.tokens + heavy.tokens) == {96}, "every request ran to max_tokens"
    assert queue <= 2 * 2, "at most two waiting per server (SLOTS + 2 clients, SLOTS slots)"
    assert per_replica <= 2 and full == 2 * SLOTS
    # Slots are a hard ceiling: no scrape ever saw more running than --parallel on a server.
    assert len(per_server) == 2 and all(float(s["value"][1]) == SLOTS for s in per_server), per_server
