"""Real redis-server and real ``llmfleet gateway`` processes for the gateway's integration tests."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.process import PYTHON, ManagedProcess, free_port, http_ok, managed, require_binary


def redis_ping(port: int) -> bool:
    """Redis answers (PONG, or NOAUTH when it wants a password)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    return False


@dataclass
class RedisServer:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server(
    tmp_path: Path, port: int | None = None, password: str | None = None
) -> Iterator[RedisServer]:
    """A throwaway redis-server in ``tmp_path``: no persistence, loopback only."""
    binary = require_binary("redis-server")
    port = port or free_port()
    data = tmp_path / f"redis-{port}"
    data.mkdir(exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data),
        *(["--requirepass", password] if password else []),
    ]
    with managed(argv, tmp_path / f"redis-{port}.log", ready=lambda: redis_ping(port)) as process:
        yield RedisServer(port, process)


@dataclass
class GatewayProcess:
    url: str
    admin_url: str
    process: ManagedProcess

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"{self.admin_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric_name, _, label_text = sample.partition("{")
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total


@contextlib.contextmanager
def gateway(
    tmp_path: Path,
    upstream: str,
    redis_url: str,
    *extra: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    """``llmfleet gateway`` with the renderer's flags, on free loopback ports."""
    port, metrics_port = free_port(), free_port()
    argv = [
        PYTHON,
        "-m",
        "llmfleet.cli",
        "gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--upstream",
        upstream,
        "--redis-url",
        redis_url,
        "--ttl-seconds",
        "3600",
        "--tenant-header",
        "X-Tenant-ID",
        *extra,
    ]
    admin = f"http://127.0.0.1:{metrics_port}"
    with managed(
        argv,
        tmp_path / f"gateway-{port}.log",
        ready=lambda: http_ok(f"{admin}/readyz"),
        timeout=timeout,
        env={"HF_HUB_OFFLINE": "1", **(env or {})},
    ) as process:
        yield GatewayProcess(f"http://127.0.0.1:{port}", admin, process)


def chat(content: str, **params: Any) -> dict[str, Any]:
    return {
        "model": "sim-model",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 8,
        **params,
    }


def sse_events(raw: bytes) -> list[str]:
    """The data payloads of an SSE body, checking the framing on the way (raises if malformed)."""
    text = raw.decode()
    assert text.endswith("\n\n"), "an SSE stream ends with a blank line"
    payloads = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        assert all(line.startswith("data: ") for line in lines), block
        payloads.append("\n".join(line[len("data: ") :] for line in lines))
    assert payloads[-1] == "[DONE]"
    for payload in payloads[:-1]:
        assert json.loads(payload)["object"].endswith("chunk")
    return payloads
