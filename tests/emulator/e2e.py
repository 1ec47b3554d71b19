"""The ``--e2e`` switch and the guard that keeps destructive tests off clusters that are not for tests."""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes.config
import pytest

E2E_CONTEXT_ENV = "LLMFLEET_E2E_CONTEXT"
TEST_NAMESPACE_LABEL = "llmfleet.io/test-namespace"


def e2e_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--e2e", default=False))


def check_e2e_context(path: Path) -> str:
    """The current context of a kubeconfig, if it is safe to run destructive tests against it."""
    _, active = kubernetes.config.list_kube_config_contexts(config_file=str(path))  # type: ignore[no-untyped-call]
    name = str(active["name"])
    allowed = os.environ.get(E2E_CONTEXT_ENV)
    if (allowed and name != allowed) or (not allowed and not name.startswith("kind-")):
        pytest.exit(
            f"refusing to run e2e tests against kube context {name!r}: use a kind cluster (kind-*) "
            f"or set {E2E_CONTEXT_ENV}={name} to allow it explicitly",
            returncode=2,
        )
    return name
