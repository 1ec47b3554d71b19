"""Run the rendered nginx.conf / haproxy.cfg with the real binaries in front of real sim-servers.

The configs under test are exactly what the operator puts in the ``<name>-lb`` ConfigMap
(``llmfleet.render.lb.config_text``); only the listen address, ports, runtime directory and
access log are moved onto loopback and a temp dir. Two ways to run them:

* ``load_balancer(...)``: the binary itself (``nginx -p DIR -c CONF``, ``haproxy -W -db -f
  CONF``), with ``reload()`` (HUP / USR2 to the master) and ``restart()`` helpers;
* ``supervised_balancer(...)``: the LB pod's own ``run.sh`` (``supervisor_script``) against a
  config dir (``LLMFLEET_LB_DIR``), so ``update(endpoints)`` rewrites the config the way a
  ConfigMap update lands (an atomic rename) and the script notices, checks and reloads it.

    with start_backends(tmp_path, ["a", "b"], decode_base_seconds=0.04) as backends:
        spec = service_spec("haproxy", "least-conn")
        with load_balancer(tmp_path, spec, backends) as lb:
            httpx.post(f"{lb.url}/v1/completions", json={...})
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfleet.api import LLMServiceSpec
from llmfleet.render.common import Endpoint, RenderContext
from llmfleet.render.lb import config_text, supervisor_script
from llmfleet.validation import validate_service
from tests.support.process import ManagedProcess, free_port, http_ok, require_binary, wait_until
from tests.support.simserver import SimServer, sim_server_argv

ENGINES = ("nginx", "haproxy")
CONFIG_FILE = {"nginx": "nginx.conf", "haproxy": "haproxy.cfg"}
SERVICE_NAME = "chat"


def service_spec(
    engine: str, strategy: str = "least-conn", cache: bool = False, **load_balancer: Any
) -> LLMServiceSpec:
    """A validated spec whose load balancer is ``engine``/``strategy`` plus camelCase ``load_balancer`` fields.

    The model side is a vLLM-like engine (health path ``/health``, upstream keepalive), which is
    what the sim-server imitates. The response cache is off unless ``cache``: with it on, the
    caching gateway is the balancer's client and the config trusts its ``X-Forwarded-For``.
    """
    lb: dict[str, Any] = {"engine": engine, "strategy": strategy, **load_balancer}
    if strategy == "session-affinity":
        lb.setdefault("sessionHeader", "X-Session-ID")
    obj = {
        "apiVersion": "llmfleet.io/v1alpha1",
        "kind": "LLMService",
        "metadata": {"name": SERVICE_NAME, "namespace": "default"},
        "spec": {
            "model": {"uri": "hf://llmfleet/sim-model", "name": "sim-model"},
            "engine": {"kind": "vllm"},
            "resources": {"gpu": {"count": 1}},
            "loadBalancer": lb,
            "cache": {"enabled": cache},
        },
    }
    return validate_service(obj).spec


@dataclass
class Backend:
    """A sim-server known to the balancer by ``name`` (its ``--id``, echoed in ``X-Sim-Server``)."""

    name: str
    server: SimServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(address="127.0.0.1", port=self.server.port, name=self.name)


@contextlib.contextmanager
def start_backends(
    tmp_path: Path, names: Sequence[str], timeout: float = 60.0, **flags: object
) -> Iterator[list[Backend]]:
    """Start one sim-server per name in parallel (``--id NAME``), wait until all are healthy."""
    started: list[Backend] = []
    try:
        for name in names:
            port = free_port()
            argv = sim_server_argv(port, id=name, **flags)
            process = ManagedProcess(argv, tmp_path / f"sim-{name}-{port}.log")
            started.append(
                Backend(name, SimServer(url=f"http://127.0.0.1:{port}", port=port, process=process))
            )
        for backend in started:
            backend.server.process.wait_ready(functools.partial(http_ok, f"{backend.url}/health"),
                                              timeout=timeout, what=f"sim-server {backend.name}")  # fmt: skip
        yield started
    finally:
        for backend in started:
            backend.server.process.stop()


def endpoints(backends: Sequence[Backend]) -> tuple[Endpoint, ...]:
    return tuple(backend.endpoint for backend in backends)


@dataclass
class Balancer:
    """A running nginx or haproxy with a config rendered for ``spec`` and some backends."""

    engine: str
    spec: LLMServiceSpec
    directory: Path
    port: int
    status_port: int
    process: ManagedProcess
    backends: tuple[Endpoint, ...]
    supervised: bool = False
    _reloads_seen: int = field(default=0, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE[self.engine]

    @property
    def access_log(self) -> Path:
        """nginx's JSON access log (haproxy logs to its stdout, i.e. ``log()``)."""
        return self.directory / "access.log"

    def render(self, backends: Sequence[Endpoint]) -> str:
        return render_config(self.spec, backends, self.directory, self.port, self.status_port)

    def write_config(self, backends: Sequence[Endpoint], text: str | None = None) -> None:
        """Replace the config atomically, as a ConfigMap update lands (a rename, never a partial file)."""
        self.backends = tuple(backends)
        staged = self.directory / f".{CONFIG_FILE[self.engine]}.new"
        staged.write_text(self.render(backends) if text is None else text)
        os.replace(staged, self.config_path)

    def log(self) -> str:
        return self.process.log()

    def reload(self, backends: Sequence[Endpoint]) -> None:
        """Direct mode: write the new config and signal the master (nginx HUP, haproxy USR2)."""
        assert not self.supervised, "a supervised balancer reloads itself: use update()"
        self.write_config(backends)
        self.process.signal(signal.SIGHUP if self.engine == "nginx" else signal.SIGUSR2)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop the balancer and start it again on the same ports with the current config."""
        self.process.stop()
        self.process = ManagedProcess(self.process.argv, self.process.log_path,
                                      env=_balancer_env(self.directory))  # fmt: skip
        self.process.wait_ready(lambda: http_ok(f"{self.status_url}/healthz"), timeout=timeout,
                                what=f"{self.engine} after restart")  # fmt: skip

    def supervisor_events(self, text: str) -> int:
        return self.log().count(text)

    def update(self, backends: Sequence[Endpoint], text: str | None = None, timeout: float = 30.0) -> str:
        """Supervised mode: write the config and wait until ``run.sh`` has acted on it.

        Returns what it did: ``"reloaded"`` or ``"rejected"`` (the syntax check failed and the
        old config stays), read from the script's own log lines.
        """
        assert self.supervised, "update() is for supervised_balancer(); use reload()"
        reloaded, rejected = (f"config changed, {self.engine} reloaded", "new config rejected")
        before = (self.supervisor_events(reloaded), self.supervisor_events(rejected))
        self.write_config(backends, text)
        wait_until(
            lambda: (self.supervisor_events(reloaded), self.supervisor_events(rejected)) != before,
            timeout=timeout, what=f"the supervisor to act on the new {self.engine} config",
        )  # fmt: skip
        return "reloaded" if self.supervisor_events(reloaded) > before[0] else "rejected"

    def retries_after_failed_connect(self, backend_port: int) -> int:
        """Requests the balancer moved to another backend after failing to connect to one port."""
        if self.engine == "nginx":
            count = 0
            for line in self.access_log.read_text().splitlines():
                entry = json.loads(line)
                attempts = entry["upstream"].split(", ")
                if len(attempts) > 1 and attempts[0].endswith(f":{backend_port}") and entry["status"] == 200:
                    count += 1
            return count
        return int(
            metric_sum(self.haproxy_metrics(), "haproxy_backend_redispatch_warnings_total", proxy="model")
        )

    def haproxy_metrics(self) -> dict[str, float]:
        """haproxy's Prometheus exporter on the status port, as ``{'name{labels}': value}``."""
        import urllib.request

        with urllib.request.urlopen(f"{self.status_url}/metrics", timeout=5) as response:
            return parse_metrics(response.read().decode())


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format to ``{'name{labels}': value}`` (labels as written)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            samples[name] = float(value)
    return samples


def metric_sum(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for sample, value in samples.items():
        if (sample == name or sample.startswith(name + "{")) and all(w in sample for w in wanted):
            total += value
    return total


def render_config(
    spec: LLMServiceSpec, backends: Sequence[Endpoint], directory: Path, port: int, status_port: int
) -> str:
    ctx = RenderContext(name=SERVICE_NAME, endpoints=tuple(backends))
    return config_text(spec, ctx, runtime_dir=str(directory), listen_address="127.0.0.1", listen_port=port,
                       status_port=status_port, access_log=str(directory / "access.log"))  # fmt: skip


def _balancer_env(directory: Path) -> dict[str, str]:
    for binary in ("nginx", "haproxy"):
        require_binary(binary)
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return {"PATH": f"/usr/sbin:/sbin:{path}", "LLMFLEET_LB_DIR": str(directory)}


def check_config(engine: str, config: Path) -> str:
    """Run ``nginx -t`` / ``haproxy -c``; return its output (raises on a rejected config)."""
    import subprocess

    binary = require_binary(engine)
    if engine == "nginx":
        argv = [binary, "-t", "-p", str(config.parent), "-e", "stderr", "-c", str(config)]
    else:
        argv = [binary, "-c", "-f", str(config)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{engine} rejected {config}:\n{output}")
    return output


def _prepare(tmp_path: Path, engine: str, label: str) -> tuple[Path, int, int]:
    directory = tmp_path / f"{engine}-{label}-{free_port()}"
    directory.mkdir(parents=True)
    return directory, free_port(), free_port()


@contextlib.contextmanager
def load_balancer(
    tmp_path: Path,
    spec: LLMServiceSpec,
    backends: Sequence[Backend] | Sequence[Endpoint],
    timeout: float = 30.0,
) -> Iterator[Balancer]:
    """Run nginx or haproxy (``spec.load_balancer.engine``) with the rendered config until the block ends."""
    engine = str(spec.load_balancer.engine)
    directory, port, status_port = _prepare(tmp_path, engine, "lb")
    eps = tuple(b.endpoint if isinstance(b, Backend) else b for b in backends)
    binary = require_binary(engine)
    config = directory / CONFIG_FILE[engine]
    config.write_text(render_config(spec, eps, directory, port, status_port))
    if engine == "nginx":
        argv = [binary, "-p", str(directory), "-e", "stderr", "-c", str(config)]
    else:  # as the LB pod runs it: master-worker, in the foreground
        argv = [binary, "-W", "-db", "-f", str(config)]
    process = ManagedProcess(argv, directory / "balancer.log", env=_balancer_env(directory))
    balancer = Balancer(engine, spec, directory, port, status_port, process, eps)
    try:
        process.wait_ready(lambda: http_ok(f"{balancer.status_url}/healthz"), timeout=timeout, what=engine)
        yield balancer
    finally:
        balancer.process.stop()


@contextlib.contextmanager
def supervised_balancer(
    tmp_path: Path,
    spec: LLMServiceSpec,
    backends: Sequence[Backend] | Sequence[Endpoint],
    poll_seconds: float = 0.2,
    timeout: float = 30.0,
) -> Iterator[Balancer]:
    """Run the LB pod's ``run.sh`` (the real supervisor script) against a temp config dir."""
    engine = str(spec.load_balancer.engine)
    directory, port, status_port = _prepare(tmp_path, engine, "supervised")
    eps = tuple(b.endpoint if isinstance(b, Backend) else b for b in backends)
    script = directory / "run.sh"
    script.write_text(supervisor_script(spec.load_balancer.engine))
    (directory / CONFIG_FILE[engine]).write_text(render_config(spec, eps, directory, port, status_port))
    env = {**_balancer_env(directory), "LLMFLEET_LB_POLL_SECONDS": str(poll_seconds)}
    process = ManagedProcess(["sh", str(script)], directory / "supervisor.log", env=env, cwd=directory)
    balancer = Balancer(engine, spec, directory, port, status_port, process, eps, supervised=True)
    try:
        process.wait_ready(lambda: http_ok(f"{balancer.status_url}/healthz"), timeout=timeout,
                           what=f"{engine} under run.sh")  # fmt: skip
        yield balancer
    finally:
        # SIGTERM to the process group: the script's trap asks the balancer to stop gracefully.
        balancer.process.stop()
