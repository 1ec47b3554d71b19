"""A real Prometheus scrapes two sim-servers under load and the scaler's PromQL gets sane answers.

This is the contract between the simulator and the predictive scaler: the same queries that run
against vLLM in production (queue depth, TTFT p95 from the histogram, success rate) must work
against the simulator, with the ``model_name`` label where vLLM puts it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_api_client import PrometheusConnect

from tests.support.load import ClientThreads
from tests.support.process import wait_until
from tests.support.prometheus import eventually, run_prometheus, scalar
from tests.support.simserver import SimServer, sim_server

pytestmark = pytest.mark.realservers

QUEUE = "sum(vllm:num_requests_waiting)"
TTFT_P95 = "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[10s])))"
SUCCESS_RATE = "sum(rate(vllm:request_success_total[10s]))"


class Load(ClientThreads):
    """Clients that keep sending requests until stopped (at most ``max_requests`` each)."""

    def __init__(self, servers: list[SimServer], clients_per_server: int, max_requests: int) -> None:
        super().__init__(join_timeout=30)
        self.statuses: list[int] = []
        for server in servers:
            for _ in range(clients_per_server):
                self.spawn(self._client, server, max_requests)

    def _client(self, server: SimServer, max_requests: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(max_requests):
                if self.stop.is_set():
                    return
                body = {"prompt": "How long is the queue right now?", "max_tokens": 20, "stream": True}
                with client.stream("POST", "/v1/completions", json=body) as response:
                    for _line in response.iter_lines():
                        pass
                    self.statuses.append(response.status_code)


def test_scaler_queries_work_against_scraped_sim_servers(tmp_path: Path) -> None:
    with ExitStack() as stack:
        flags: dict[str, Any] = {"max_num_seqs": 2, "decode_base_seconds": 0.02}
        servers = [stack.enter_context(sim_server(tmp_path, id=name, **flags)) for name in ("a", "b")]
        url = stack.enter_context(run_prometheus(tmp_path, [server.port for server in servers], job="sim"))
        prometheus = PrometheusConnect(url=url, disable_ssl=True)
        wait_until(lambda: scalar(prometheus, "sum(up)") == 2, 60, interval=0.5, what="both targets scraped")

        # 3 clients per server with 2 slots each: one request is nearly always queued
        with Load(servers, clients_per_server=3, max_requests=60) as load:
            # conditions, not instants: the queue empties for a moment whenever a request ends
            queue = eventually(prometheus, QUEUE, lambda value: value >= 1, "a queue seen by Prometheus")
            success_rate = eventually(prometheus, SUCCESS_RATE, lambda value: value > 0, "a success rate")
            # a third of the requests queue behind a whole generation (20 steps of >= 20 ms)
            ttft_p95 = eventually(prometheus, TTFT_P95, lambda value: value >= 0.1, "queueing in TTFT p95")
            per_model = prometheus.custom_query("sum by (model_name) (vllm:num_requests_running)")
            # each backend's counter is scraped on its own schedule: wait until both show traffic
            per_backend: list[dict[str, Any]] = []

            def both_backends_counted() -> bool:
                per_backend[:] = prometheus.custom_query(
                    "sum by (server_id) (llmfleet_sim_requests_received_total)"
                )
                return len(per_backend) == 2 and all(float(series["value"][1]) > 0 for series in per_backend)

            wait_until(both_backends_counted, 30, interval=0.5, what="requests counted on both backends")

    assert set(load.statuses) == {200}
    assert queue <= 2  # one client per server more than its two slots: at most one waits on each
    assert ttft_p95 <= 10
    # each server finishes at most 2 requests per 20 x 20 ms = 5/s at full speed
    assert success_rate <= 10.5
    assert [series["metric"] for series in per_model] == [{"model_name": "sim-model"}]
    assert sorted(series["metric"]["server_id"] for series in per_backend) == ["a", "b"]
    assert all(float(series["value"][1]) > 0 for series in per_backend)
