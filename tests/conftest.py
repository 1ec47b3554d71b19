"""Test-suite wiring: the API-server emulator fixtures and the opt-in real-cluster switch.

``pytest`` runs everything that runs on one machine: unit tests, the real nginx/haproxy/redis/
prometheus/llama-server tests, and the operator against the Kubernetes API emulator.
``pytest --e2e`` with ``KUBECONFIG`` pointing at a kind cluster runs the operator tests against
that cluster instead (see tests/emulator/e2e.py for the context guard).
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.emulator.fixtures"]

# Hypothesis must never touch the network or write its database into the checkout on CI.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(os.path.expanduser("~"), ".cache", "llmfleet", "hypothesis")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run the operator tests against the cluster in $KUBECONFIG (a kind-* context) instead of the emulator",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--e2e"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: run with --e2e and KUBECONFIG")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
