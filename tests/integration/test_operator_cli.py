"""``llmfleet run`` as a process: peering, liveness probe, /metrics, reconciling, clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.emulator.apiserver import ApiServer
from tests.emulator.client import Kube
from tests.integration.operator_harness import children, llmservice, names, wait_until
from tests.integration.test_operator_lifecycle import BASE_CHILDREN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get(url: str) -> str:
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def answers(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True


def test_llmfleet_run_process(apiserver: ApiServer, kube: Kube, kubeconfig: Path, tmp_path: Path) -> None:
    """Emulator only (``apiserver``): a kind cluster would need the kopf.dev peering CRDs."""
    kube.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "llmfleet"}})
    metrics, health = free_port(), free_port()
    log = (tmp_path / "operator.log").open("w")
    argv = [
        *(sys.executable, "-m", "llmfleet.cli", "run", "--namespace", kube.namespace),
        *("--metrics-port", str(metrics), "--metrics-host", "127.0.0.1"),
        *("--liveness-endpoint", f"http://127.0.0.1:{health}/healthz"),
    ]
    process = subprocess.Popen(
        argv, env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log, stderr=log
    )
    try:
        kube.create(llmservice("chat"), namespace=kube.namespace)
        wait_until(lambda: names(children(kube, "chat")) == BASE_CHILDREN, "children from the process")
        wait_until(lambda: answers(f"http://127.0.0.1:{health}/healthz"), "the liveness probe")
        wait_until(
            lambda: 'trigger="create"' in get(f"http://127.0.0.1:{metrics}/metrics"),
            "the reconcile in /metrics",
        )
        peers = kube.get("kopf.dev/v1", "KopfPeering", "llmfleet").get("status") or {}
        assert len(peers) == 1  # the process registered itself for leader election
        kube.delete(*("llmfleet.io/v1alpha1", "LLMService"), "chat")
        wait_until(lambda: not kube.list("llmfleet.io/v1alpha1", "LLMService"), "the finalizer released")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        log.close()
    assert code == 0, (tmp_path / "operator.log").read_text()[-3000:]
