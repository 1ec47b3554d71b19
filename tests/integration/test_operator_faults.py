"""The operator under API failures and restarts (emulator only: faults are injected into it).

Whatever fails on the way, the level-based reconcile must end with every child present exactly
once, the status written, and the cache password never rotated.
"""

from __future__ import annotations

from datetime import UTC, datetime

import prometheus_client
import pytest

from llmfleet import opmetrics
from llmfleet.runner import RunOptions, run_in_thread
from tests.emulator.apiserver import ApiServer
from tests.emulator.client import Kube
from tests.integration.operator_harness import (
    LLMS,
    children,
    has_condition,
    llmservice,
    names,
    running_operator,
    wait_until,
)
from tests.integration.test_operator_lifecycle import BASE_CHILDREN, CACHE_CHILDREN

EVERYTHING = BASE_CHILDREN | CACHE_CHILDREN


def errors(kind: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value("llmfleet_operator_errors_total", {"kind": kind})
    return value or 0.0


def test_injected_conflicts_throttling_and_server_errors_converge(apiserver: ApiServer, kube: Kube) -> None:
    ns = kube.namespace
    before = {kind: errors(kind) for kind in ("conflict", "server", "throttled")}
    faults = [
        apiserver.inject("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/chat-model", 409, count=2),
        apiserver.inject("PATCH", f"/api/v1/namespaces/{ns}/configmaps/*", 500, count=1),
        apiserver.inject("PATCH", f"/api/v1/namespaces/{ns}/services/chat", 429, count=1, retry_after=1),
        apiserver.inject("POST", f"/api/v1/namespaces/{ns}/secrets", 503, count=1),
        apiserver.inject("PATCH", f"/apis/llmfleet.io/v1alpha1/namespaces/{ns}/llmservices/chat/status", 409),
    ]
    with running_operator(kube):
        kube.create(llmservice("chat", cache=True), namespace=ns)
        wait_until(lambda: names(children(kube, "chat")) == EVERYTHING, "every child despite the faults")
        kube.wait_for(*LLMS, "chat", has_condition("ModelAvailable", "False", "NoReplicasReady"), timeout=60)
        assert len(children(kube, "chat")) == len(EVERYTHING)  # each exactly once
    assert [f.remaining for f in faults] == [0, 0, 0, 0, 0]
    assert errors("conflict") >= before["conflict"] + 3
    assert errors("server") >= before["server"] + 2
    assert errors("throttled") >= before["throttled"] + 1
    exposition = prometheus_client.generate_latest().decode()
    assert 'llmfleet_operator_errors_total{kind="conflict"}' in exposition
    assert "llmfleet_operator_reconcile_duration_seconds_bucket" in exposition


def test_restart_mid_reconcile_converges_without_duplicates_or_a_new_password(
    apiserver: ApiServer, kube: Kube
) -> None:
    ns = kube.namespace
    # Every pass dies at the balancer Deployment: the model tier and the Secret exist, the rest not.
    stuck = apiserver.inject("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/chat-lb", 500, count=10_000)
    with running_operator(kube, let_go=False):
        kube.create(llmservice("chat", cache=True), namespace=ns)
        wait_until(lambda: stuck.remaining < 10_000, "a pass to fail half-way")
    half = names(children(kube, "chat"))
    assert ("Deployment", "chat-model") in half and ("Deployment", "chat-lb") not in half
    password = kube.get("v1", "Secret", "chat-cache-auth")["data"]
    stuck.remaining = 0

    passes = opmetrics.reconcile_count()
    with running_operator(kube):
        wait_until(lambda: names(children(kube, "chat")) == EVERYTHING, "convergence after the restart")
        kube.wait_for(*LLMS, "chat", has_condition("LoadBalancerAvailable", "False", "LoadBalancerNotReady"))
        assert opmetrics.reconcile_count() > passes  # the new process did the work
        assert len(children(kube, "chat")) == len(EVERYTHING)  # each exactly once
        assert kube.get("v1", "Secret", "chat-cache-auth")["data"] == password


def test_a_replica_acts_only_while_no_higher_priority_peer_is_alive(apiserver: ApiServer, kube: Kube) -> None:
    other = "llmfleet-other-replica@node-b"
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "llmfleet"},
        "status": {other: {"priority": 100, "lifetime": 60, "lastseen": datetime.now(UTC).isoformat()}},
    }
    kube.create(peering, namespace=kube.namespace)
    thread, stop = run_in_thread(RunOptions(namespaces=[kube.namespace], priority=10))
    try:
        wait_until(
            lambda: len(kube.get("kopf.dev/v1", "KopfPeering", "llmfleet")["status"]) == 2, "our keep-alive"
        )
        kube.create(llmservice("chat"), namespace=kube.namespace)
        with pytest.raises(TimeoutError):  # the only way to observe "does nothing": for a while
            wait_until(lambda: bool(children(kube, "chat")), "children from a paused replica", timeout=3)
        kube.patch("kopf.dev/v1", "KopfPeering", "llmfleet", {"status": {other: None}})  # the leader is gone
        wait_until(lambda: names(children(kube, "chat")) == BASE_CHILDREN, "the standby taking over")
    finally:
        stop.set()
        thread.join(30)
