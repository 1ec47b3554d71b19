"""Start a real ``llmfleet sim-server`` for a test: the backend behind gateways, balancers, scalers.

Tests of the load balancers, the gateway and the scaler need model servers that behave like
vLLM (continuous batching, queueing, metrics) and that can fail on demand; this starts the real
CLI as a subprocess on a free loopback port and stops it when the test is done.

    with sim_server(tmp_path, id="a", max_num_seqs=4, error_rate=0.1) as server:
        httpx.post(f"{server.url}/v1/completions", json={...})

Keyword flags map to CLI flags: ``max_num_seqs=4`` -> ``--max-num-seqs 4``; ``True`` -> a bare
flag; ``False``/``None`` -> omitted. See ``llmfleet sim-server --help`` or docs/sim-server.md.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.process import PYTHON, ManagedProcess, free_port, http_ok, managed, port_open


@dataclass
class SimServer:
    """A running sim-server: ``url`` is ``http://127.0.0.1:PORT`` (no trailing slash)."""

    url: str
    port: int
    process: ManagedProcess

    def metrics_text(self, timeout: float = 5.0) -> str:
        """The server's /metrics page (Prometheus text format)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout) as response:
            return str(response.read().decode())

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """One scrape of /metrics: every metric name with the sum of its samples (all label sets)."""
        totals: dict[str, float] = {}
        for line in self.metrics_text(timeout).splitlines():
            if line.startswith("#") or not line.strip():
                continue
            sample, _, value = line.rpartition(" ")
            name = sample.partition("{")[0]
            totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    def metric(self, name: str, timeout: float = 5.0) -> float:
        """Sum of every sample of ``name`` on /metrics (all label sets); 0.0 when absent."""
        return self.metrics(timeout).get(name, 0.0)

    def healthy(self) -> bool:
        return http_ok(f"{self.url}/health")

    def health_status(self) -> int | None:
        """HTTP status of /health, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except (urllib.error.URLError, ConnectionError, OSError):
            return None


def sim_server_argv(port: int, **flags: object) -> list[str]:
    """The command line that starts a sim-server on ``port`` with ``flags`` (see module doc)."""
    argv = [PYTHON, "-m", "llmfleet.cli", "sim-server", "--host", "127.0.0.1", "--port", str(port)]
    for key, value in flags.items():
        if value is None or value is False:
            continue
        option = "--" + key.replace("_", "-")
        if value is True:
            argv.append(option)
        else:
            argv += [option, str(value)]
    return argv


@contextlib.contextmanager
def sim_server(
    tmp_path: Path, wait_healthy: bool = True, timeout: float = 30.0, **flags: object
) -> Iterator[SimServer]:
    """Run one sim-server until the block ends.

    Waits until /health answers 200, or, with ``wait_healthy=False`` (for tests of
    ``--startup-delay-seconds``), only until the port accepts connections. The server's output
    is in ``tmp_path/sim-server-PORT.log`` and is shown if it fails to start.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ready = (lambda: http_ok(f"{url}/health")) if wait_healthy else (lambda: port_open(port))
    argv = sim_server_argv(port, **flags)
    with managed(argv, tmp_path / f"sim-server-{port}.log", ready=ready, timeout=timeout) as process:
        yield SimServer(url=url, port=port, process=process)
