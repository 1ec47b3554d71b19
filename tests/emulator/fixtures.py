"""Pytest fixtures for operator tests: the API emulator, a kubeconfig, and a namespace-scoped client.

Load with ``pytest_plugins = ["tests.emulator.fixtures"]`` in ``tests/conftest.py``.

* ``apiserver`` -> :class:`ApiServer`: the emulator, running on loopback in its own thread;
  ``KUBECONFIG`` (and the ``kubernetes`` package's cached default) point at it for the test.
  Emulator-only: tests that use it are skipped with ``--e2e``.
* ``kubeconfig`` -> ``Path`` of the kubeconfig in effect (the emulator's, or ``$KUBECONFIG`` with ``--e2e``).
* ``kube`` -> :class:`Kube` on a fresh namespace (``kube.namespace``), deleted after the test.
  With ``--e2e`` it talks to the cluster in ``$KUBECONFIG`` — only if its current context is a
  ``kind-*`` context or equals ``$LLMFLEET_E2E_CONTEXT``; anything else aborts the session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import kubernetes.config
import kubernetes.config.kube_config
import pytest

from tests.emulator.apiserver import ApiServer
from tests.emulator.client import Kube
from tests.emulator.e2e import TEST_NAMESPACE_LABEL, check_e2e_context, e2e_enabled
from tests.emulator.runner import EmulatorThread

# The repository's CRDs, installed in every emulator as `kubectl apply -f crds/` would on a cluster.
CRD_FILES = tuple(sorted((Path(__file__).resolve().parents[2] / "crds").glob("*.yaml")))


@pytest.fixture()
def _emulator(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ApiServer, Path]]:
    if e2e_enabled(request.config):
        pytest.skip("uses the API emulator; not available with --e2e")
    thread = EmulatorThread(crd_files=CRD_FILES)
    server = thread.start()
    path = thread.write_kubeconfig(tmp_path / "kubeconfig")
    # kubernetes.config caches $KUBECONFIG at import time: patch the cached defaults too.
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.setattr(kubernetes.config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    try:
        yield server, path
    finally:
        thread.stop()


@pytest.fixture()
def apiserver(_emulator: tuple[ApiServer, Path]) -> ApiServer:
    """The API emulator: inspect ``write_log``/``writes``, ``inject()`` faults, read ``object()``."""
    return _emulator[0]


@pytest.fixture()
def kubeconfig(request: pytest.FixtureRequest) -> Path:
    if not e2e_enabled(request.config):
        server_and_path: tuple[ApiServer, Path] = request.getfixturevalue("_emulator")
        return server_and_path[1]
    path = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
    check_e2e_context(path)
    return path


@pytest.fixture()
def kube(kubeconfig: Path) -> Iterator[Kube]:
    api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    namespace = f"llmfleet-t-{secrets.token_hex(4)}"
    client = Kube(api_client, namespace)
    client.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {TEST_NAMESPACE_LABEL: "true"}},
        }
    )
    try:
        yield client
    finally:
        client.delete("v1", "Namespace", namespace)
        api_client.close()
