"""Three real llama-servers behind the real nginx and haproxy with the configs rendered for llamacpp.

The balancer configs are exactly what the operator renders for an ``engine.kind: llamacpp``
LLMService (``tests/support/loadbalancer.py`` only moves listen ports and runtime files onto
loopback); the backends are the llama-server built by hack/build-llama-server.sh on the
generated models, which emit exactly ``max_tokens`` tokens per request. Which backend served a
request is read from the backends' own ``llamacpp:`` counters. Nothing asserts on durations:
only counts, placements and orderings that hold however slow the machine is.

The engine defect these configs are built around: llama-server closes the connection after a
streamed response while announcing keep-alive (test_llama_server.py pins it down). Through the
balancer, clients that pool and reuse connections must never see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmfleet.api import LLMServiceSpec
from llmfleet.render.common import Endpoint
from llmfleet.validation import validate_service
from tests.support.llama import TEST_ARGS, LlamaServer, llama_server_binary, parse_metric, tiny_model
from tests.support.loadbalancer import ENGINES, load_balancer, metric_sum
from tests.support.process import ManagedProcess, free_port, http_ok, wait_until

pytestmark = [pytest.mark.realengine, pytest.mark.realservers, pytest.mark.slow, pytest.mark.timeout(300)]

SLOTS = 2
MODEL_NAME = "tiny-llama"


def llamacpp_spec(engine: str, strategy: str = "least-conn", **load_balancer: Any) -> LLMServiceSpec:
    """A validated llamacpp LLMService spec: the balancer config is rendered for this engine."""
    obj = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMService",
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {
            "model": {"uri": "hf://llmfleet/tiny-GGUF/tiny.gguf", "name": MODEL_NAME},
            "engine": {"kind": "llamacpp", "tuning": {"maxConcurrentSequences": SLOTS, "contextLength": 512}},
            "resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "1Gi"},
            "loadBalancer": {"engine": engine, "strategy": strategy, **load_balancer},
            "cache": {"enabled": False},
        },
    }
    return validate_service(obj).spec


@dataclass
class Backend:
    name: str
    server: LlamaServer

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(address="127.0.0.1", port=self.server.port, name=self.name)

    def metric(self, name: str) -> float:
        value = self.server.metric(name)
        assert value is not None, f"{name} missing on {self.name}"
        return value


@contextlib.contextmanager
def fleet(tmp_path: Path, size: str, names: Sequence[str] = ("a", "b", "c")) -> Iterator[list[Backend]]:
    """One llama-server per name (``--parallel SLOTS``, per-slot context 512), all healthy."""
    model = tiny_model(size)
    started: list[Backend] = []
    try:
        for name in names:
            port = free_port()
            argv = [str(llama_server_binary()), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                    *TEST_ARGS, "--parallel", str(SLOTS), "--ctx-size", str(512 * SLOTS), "--metrics",
                    "--alias", MODEL_NAME]  # fmt: skip
            process = ManagedProcess(argv, tmp_path / f"llama-{name}-{port}.log")
            started.append(Backend(name, LlamaServer(f"http://127.0.0.1:{port}", port, process)))
        for backend in started:
            url = backend.server.url
            backend.server.process.wait_ready(lambda url=url: http_ok(f"{url}/health"), timeout=120,
                                              what=f"llama-server {backend.name}")  # fmt: skip
        yield started
    finally:
        for backend in started:
            backend.server.process.stop()


def endpoints(backends: Sequence[Backend]) -> list[Endpoint]:
    return [b.endpoint for b in backends]


def predicted(backends: Sequence[Backend]) -> dict[str, float]:
    return {b.name: b.metric("llamacpp:tokens_predicted_total") for b in backends}


@dataclass
class Result:
    status: int | None = None
    tokens: int = 0
    done: bool = False
    error: str | None = None
    body: bytes = b""
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and self.error is None


async def stream(client: aiohttp.ClientSession, url: str, max_tokens: int, prompt: str = "Hello there",
                 on_first_token: Any = None) -> Result:  # fmt: skip
    """A streaming /v1/completions through ``client`` (pooled connections); counts token events."""
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    result = Result()
    try:
        async with client.post(f"{url}/v1/completions", json=body) as response:
            result.status = response.status
            result.retry_after = response.headers.get("Retry-After")
            if response.status != 200:
                result.body = await response.read()
                return result
            async for line in response.content:
                if line.startswith(b"data: [DONE]"):
                    result.done = True
                elif line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event.get("choices") and event["choices"][0].get("text"):
                        result.tokens += 1
                        if result.tokens == 1 and on_first_token is not None:
                            await on_first_token()
    except (TimeoutError, aiohttp.ClientError) as error:
        result.error = f"{type(error).__name__}: {error}"
    return result


def pooled_session(limit: int = 8) -> aiohttp.ClientSession:
    """A client that keeps and reuses connections (keep-alive), as SDKs and benchmark clients do."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=240))  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
async def test_streaming_arrives_token_by_token(engine: str, tmp_path: Path) -> None:
    """When the first token reaches the client, the backend is still generating that response."""
    with (
        fleet(tmp_path, "small") as backends,
        load_balancer(tmp_path, llamacpp_spec(engine), endpoints(backends)) as lb,
    ):
        at_first: dict[str, float] = {}

        async def first() -> None:
            at_first["processing"] = sum(b.metric("llamacpp:requests_processing") for b in backends)
            at_first["predicted"] = sum(predicted(backends).values())

        before = sum(predicted(backends).values())
        async with pooled_session() as client:
            result = await stream(client, lb.url, 200, on_first_token=first)
        after = sum(predicted(backends).values())
    assert result.ok and result.tokens == 200, result
    # llama-server adds a response's tokens to its counters when the response is finished: at
    # the first token the backend was still busy with it and had not finished it.
    assert at_first == {"processing": 1, "predicted": before}, at_first
    assert after - before == 200


@pytest.mark.parametrize("engine", ENGINES)
async def test_least_conn_spreads_concurrent_streams(engine: str, tmp_path: Path) -> None:
    with (
        fleet(tmp_path, "small") as backends,
        load_balancer(tmp_path, llamacpp_spec(engine), endpoints(backends)) as lb,
    ):
        async with pooled_session() as client:
            tasks = [asyncio.create_task(stream(client, lb.url, 200, prompt=f"stream {i}")) for i in range(3)]

            def one_each() -> bool:
                return [b.metric("llamacpp:requests_processing") for b in backends] == [1, 1, 1]

            try:
                await asyncio.to_thread(wait_until, one_each, 120, 0.02, "one stream on each backend")
            finally:
                results = await asyncio.gather(*tasks)
    assert [r.tokens for r in results] == [200, 200, 200], results


@pytest.mark.parametrize("engine", ENGINES)
async def test_cap_per_replica_queues_in_the_balancer_not_the_engine(engine: str, tmp_path: Path) -> None:
    """maxConcurrencyPerReplica = the engine's slots: no backend ever defers a request.

    haproxy queues the excess and serves it all; nginx (no upstream queue) answers it 503 with
    Retry-After. Either way llama-server's own queue (``llamacpp:requests_deferred``) stays empty.
    """
    n = 12
    spec = llamacpp_spec(
        engine, maxConcurrencyPerReplica=SLOTS, timeouts={"queueSeconds": 240, "readSeconds": 300}
    )
    with fleet(tmp_path, "small") as backends, load_balancer(tmp_path, spec, endpoints(backends)) as lb:
        peak = {"processing": 0.0, "deferred": 0.0}
        async with pooled_session(limit=n) as client:
            tasks = [asyncio.create_task(stream(client, lb.url, 48, prompt=f"req {i}")) for i in range(n)]
            while not all(t.done() for t in tasks):
                for backend in backends:
                    text = await asyncio.to_thread(backend.server.metrics_text)
                    peak["processing"] = max(
                        peak["processing"], parse_metric(text, "llamacpp:requests_processing") or 0
                    )
                    peak["deferred"] = max(
                        peak["deferred"], parse_metric(text, "llamacpp:requests_deferred") or 0
                    )
                await asyncio.sleep(0.02)
            results = [t.result() for t in tasks]
        haproxy = lb.haproxy_metrics() if engine == "haproxy" else {}
    ok = [r for r in results if r.ok]
    assert peak["deferred"] == 0, peak
    assert 1 <= peak["processing"] <= SLOTS, peak
    assert all(r.tokens == 48 for r in ok)
    if engine == "haproxy":
        assert len(ok) == n, [r for r in results if not r.ok][:3]
        assert metric_sum(haproxy, "haproxy_backend_max_queue", proxy="model") >= 1, (
            "nothing waited in haproxy"
        )
    else:
        refused = [r for r in results if r.status == 503]
        assert len(ok) + len(refused) == n, results
        assert refused, "nginx cannot queue: requests beyond the cap must be refused"
        assert all(r.retry_after == "1" for r in refused)


@pytest.mark.parametrize("engine", ENGINES)
async def test_killed_backend(engine: str, tmp_path: Path) -> None:
    """A backend killed between requests: every later request is served by the others.

    The balancer learns about the dead backend from a refused connection and retries that
    request elsewhere (a request that never reached a replica is safe to resend).
    """
    with (
        fleet(tmp_path, "tiny") as backends,
        load_balancer(tmp_path, llamacpp_spec(engine), endpoints(backends)) as lb,
    ):
        async with pooled_session() as client:
            warm = await asyncio.gather(*(stream(client, lb.url, 8, prompt=f"w{i}") for i in range(6)))
            assert all(r.ok for r in warm), warm
            victim, survivors = backends[0], backends[1:]
            victim.server.process.kill()
            before = predicted(survivors)
            # Three at a time: within what the survivors may hold (the default cap is SLOTS per
            # replica), so every refusal or failure would be the dead backend's doing.
            results: list[Result] = []

            async def worker(k: int) -> None:
                for i in range(10):
                    results.append(await stream(client, lb.url, 16, prompt=f"r{k}-{i}"))

            await asyncio.gather(*(worker(k) for k in range(3)))
        after = predicted(survivors)
        retried = lb.retries_after_failed_connect(victim.server.port)
    assert [r.status for r in results] == [200] * 30, [r for r in results if not r.ok][:3]
    assert all(r.ok and r.tokens == 16 for r in results)
    assert sum(after.values()) - sum(before.values()) == 30 * 16, "every request was served by a survivor"
    assert retried >= 1, "the balancer never tried the dead backend, so the retry was not exercised"


@pytest.mark.parametrize("engine", ENGINES)
async def test_pooled_client_connections_see_no_failure_despite_the_keep_alive_defect(
    engine: str, tmp_path: Path
) -> None:
    """A bounded load with pooled, reused client connections: zero failed requests.

    Directly against llama-server the same client reuses connections the server has closed
    after streaming; the rendered llamacpp upstream settings (no upstream connection reuse)
    keep the balancer from ever writing into such a socket, and the balancer's own client
    connections honour keep-alive.
    """
    requests, concurrency = 240, 8
    # Room above the client's concurrency, so nginx's cap (it cannot queue) refuses nothing here.
    spec = llamacpp_spec(engine, maxConcurrencyPerReplica=2 * concurrency)
    with fleet(tmp_path, "tiny") as backends, load_balancer(tmp_path, spec, endpoints(backends)) as lb:
        before = predicted(backends)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        results: list[Result] = []
        async with pooled_session(limit=concurrency) as client:

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    if i % 3 == 2:  # a non-streamed request now and then on the same pooled connections
                        async with client.post(
                            f"{lb.url}/v1/completions",
                            json={"model": MODEL_NAME, "prompt": f"n{i}", "max_tokens": 8},
                        ) as r:
                            payload = await r.read()
                        done = r.status == 200 and json.loads(payload)["usage"]["completion_tokens"] == 8
                        results.append(Result(status=r.status, tokens=8 if done else 0, done=done))
                    else:
                        results.append(await stream(client, lb.url, 8, prompt=f"s{i}"))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        after = predicted(backends)
    failed = [r for r in results if not r.ok]
    assert len(results) == requests
    assert failed == [], failed[:5]
    assert all(r.tokens == 8 for r in results)
    assert sum(after.values()) - sum(before.values()) == requests * 8
    assert all(after[name] > before[name] for name in after), "least-conn used every backend"


@pytest.mark.parametrize("engine", ENGINES)
def test_one_client_connection_reused_across_streams(engine: str, tmp_path: Path) -> None:
    """The strictest client: one HTTP/1.1 connection, a streamed request after every streamed one.

    Directly against llama-server the second request on such a connection fails every time
    (test_llama_server.py); through the balancer every one succeeds on the same connection.
    """
    with (
        fleet(tmp_path, "tiny") as backends,
        load_balancer(tmp_path, llamacpp_spec(engine), endpoints(backends)) as lb,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=60)
        try:
            for i in range(20):
                body = json.dumps({"model": MODEL_NAME, "prompt": f"c{i}", "max_tokens": 4, "stream": True})
                conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                assert response.status == 200, payload
                events = [json.loads(line[6:]) for line in payload.split(b"\n")
                          if line.startswith(b"data: {")]  # fmt: skip
                assert sum(1 for e in events if e["choices"] and e["choices"][0]["text"]) == 4, payload
                assert payload.rstrip().endswith(b"data: [DONE]"), payload
                assert not response.will_close, f"the balancer closed the client connection after request {i}"
        finally:
            conn.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_openai_sdk_through_the_balancer(engine: str, tmp_path: Path) -> None:
    """The official openai SDK (pooled httpx connections) against the balancer: chat and
    completions, streaming and not, exact token counts."""
    import openai

    with (
        fleet(tmp_path, "tiny") as backends,
        load_balancer(tmp_path, llamacpp_spec(engine), endpoints(backends)) as lb,
    ):
        client = openai.OpenAI(base_url=f"{lb.url}/v1", api_key="unused", timeout=60.0, max_retries=0)
        try:
            models = client.models.list()
            assert [m.id for m in models.data] == [MODEL_NAME]
            for round_ in range(3):  # several rounds: pooled connections get reused after streams
                chat = client.chat.completions.create(
                    model=MODEL_NAME, messages=[{"role": "user", "content": f"hi {round_}"}], max_tokens=12
                )
                assert chat.choices[0].finish_reason == "length"
                assert chat.usage is not None and chat.usage.completion_tokens == 12
                assert len(chat.choices[0].message.content or "") == 12

                pieces = []
                for chunk in client.chat.completions.create(
                    model=MODEL_NAME,
                    messages=[{"role": "user", "content": "stream"}],
                    max_tokens=9,
                    stream=True,
                    stream_options={"include_usage": True},
                ):
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
                    if chunk.usage is not None:
                        assert chunk.usage.completion_tokens == 9
                assert len(pieces) == 9

                completion = client.completions.create(model=MODEL_NAME, prompt="Once", max_tokens=7)
                assert completion.usage is not None and completion.usage.completion_tokens == 7
                assert completion.choices[0].finish_reason == "length"

                texts = [
                    c.choices[0].text
                    for c in client.completions.create(
                        model=MODEL_NAME, prompt="Twice", max_tokens=5, stream=True
                    )
                    if c.choices and c.choices[0].text
                ]
                assert len(texts) == 5
        finally:
            client.close()
