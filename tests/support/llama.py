"""Run the real llama.cpp ``llama-server`` (built by hack/build-llama-server.sh) in tests.

    with llama_server(tmp_path, tiny_model("tiny"), "--parallel", "4", "--ctx-size", "2048") as server:
        httpx.post(f"{server.url}/v1/completions", json={...})

The binary and the models live in ``${LLMFLEET_CACHE:-~/.cache/llmfleet}`` (outside the checkout);
``./hack/setup-test-env.sh`` builds both. When the binary is missing the helpers raise: a
real-engine test fails, it never skips. ``LLMFLEET_LLAMA_SERVER`` points at another binary.

The generated models emit only printable ASCII and never end-of-text, so every request runs
exactly to ``max_tokens``: token counts in these tests are exact, not approximate.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.process import PYTHON, ManagedProcess, free_port, http_ok, managed

REPO = Path(__file__).resolve().parents[2]
LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # keep in step with hack/build-llama-server.sh
BUILD_SCRIPT = REPO / "hack" / "build-llama-server.sh"
MODEL_SCRIPT = REPO / "hack" / "make-tiny-model.py"

# Flags every test server gets: one thread (client and server share two cores) and no prompt
# cache in RAM (it let RSS grow to 1.8 GB under load).
TEST_ARGS = ("--threads", "1", "--cache-ram", "0")


def cache_root() -> Path:
    return Path(os.environ.get("LLMFLEET_CACHE") or Path.home() / ".cache" / "llmfleet")


def llama_server_binary() -> Path:
    """Path of the built ``llama-server``; RuntimeError (a test failure) when it is not built."""
    override = os.environ.get("LLMFLEET_LLAMA_SERVER")
    path = (
        Path(override)
        if override
        else cache_root() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}" / "bin" / "llama-server"
    )
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"llama-server is not built at {path}: run {BUILD_SCRIPT.relative_to(REPO)} "
            "(or ./hack/setup-test-env.sh); it builds llama.cpp from the llama-cpp-python "
            f"{LLAMA_CPP_PYTHON_VERSION} sdist in about 6 minutes on 2 cores"
        )
    return path


def tiny_model(size: str = "tiny", seed: int = 0) -> Path:
    """Path of the generated test model (``tiny`` or ``small``), generating it on first use (~1 s)."""
    result = subprocess.run(
        [PYTHON, str(MODEL_SCRIPT), size, "--seed", str(seed)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{MODEL_SCRIPT.name} {size} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    path = Path(result.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise RuntimeError(f"{MODEL_SCRIPT.name} printed {path}, which does not exist")
    return path


@dataclass
class LlamaServer:
    """A running llama-server: ``url`` is ``http://127.0.0.1:PORT`` (no trailing slash)."""

    url: str
    port: int
    process: ManagedProcess

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:
            return json.loads(response.read())

    def metrics_text(self, timeout: float = 10.0) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=timeout) as response:
            return str(response.read().decode())

    def metric(self, name: str, timeout: float = 10.0) -> float | None:
        """Value of the sample ``name`` (no labels in llama.cpp's metrics); None when absent."""
        return parse_metric(self.metrics_text(timeout), name)


def parse_metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == name or sample.startswith(name + "{"):
            return float(value)
    return None


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


@contextlib.contextmanager
def run_llama_server(
    argv: Sequence[str],
    port: int,
    log_path: Path,
    timeout: float = 120.0,
    ready_path: str = "/health",
    env: dict[str, str] | None = None,
) -> Iterator[LlamaServer]:
    """Start a complete llama-server command line that listens on ``port``; wait for ``ready_path``."""
    url = f"http://127.0.0.1:{port}"
    with managed(
        list(argv), log_path, ready=lambda: http_ok(url + ready_path), timeout=timeout, env=env
    ) as process:
        yield LlamaServer(url=url, port=port, process=process)


@contextlib.contextmanager
def llama_server(
    log_dir: Path, model: Path, *args: str, timeout: float = 120.0, test_args: Sequence[str] = TEST_ARGS
) -> Iterator[LlamaServer]:
    """Start ``llama-server -m MODEL --host 127.0.0.1 --port FREE *test_args *args`` and wait for /health."""
    port = free_port()
    argv = [
        str(llama_server_binary()),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *test_args,
        *args,
    ]
    with run_llama_server(argv, port, log_dir / f"llama-server-{port}.log", timeout=timeout) as server:
        yield server
