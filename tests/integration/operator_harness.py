"""Run the real llmfleet operator (kopf) in a background thread for integration tests.

The operator is started exactly as ``llmfleet run --standalone --namespace NS`` would start it,
only in-process so tests can stop it mid-pass and read its metrics. It finds the API server
through ``KUBECONFIG`` (the emulator's, or the kind cluster's with ``--e2e``).
Helpers here wait on conditions with a deadline; no test sleeps a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from llmfleet import opmetrics
from llmfleet.runner import RunOptions, run_in_thread
from tests.emulator.client import Kube

Obj = dict[str, Any]
LLMS = ("llmfleet.io/v1alpha1", "LLMService")
WAIT = 30.0  # generous: the CI machine is shared and slow; passing runs take a fraction of it


@contextmanager
def running_operator(kube: Kube, *, drift_interval: float = 3.0, let_go: bool = True) -> Iterator[None]:
    """The operator on ``kube.namespace`` for the duration of the block.

    With ``let_go`` the LLMServices are deleted (and their finalizers released by the operator)
    before it stops: on a real cluster a finalizer left behind would hold the test namespace in
    Terminating forever.
    """
    options = RunOptions(namespaces=[kube.namespace], standalone=True, drift_interval=drift_interval)
    thread, stop = run_in_thread(options, timeout=WAIT)
    try:
        yield
    finally:
        try:
            if let_go:
                for obj in kube.list(*LLMS):
                    kube.delete(*LLMS, obj["metadata"]["name"])
                wait_until(lambda: not kube.list(*LLMS), "the operator to release its LLMServices")
        finally:
            stop.set()
            thread.join(WAIT)
        assert not thread.is_alive(), "the operator did not stop"


def llmservice(name: str, *, cache: bool = False, replicas: tuple[int, int] = (1, 3), **spec: Any) -> Obj:
    """A small valid LLMService (llama.cpp on CPU) with optional spec overrides."""
    body: Obj = {
        "model": {
            "uri": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
            "name": "qwen",
        },
        "engine": {"kind": "llamacpp", "tuning": {"maxConcurrentSequences": 4, "contextLength": 2048}},
        "resources": {"cpu": "2", "memory": "4Gi"},
        "replicas": {"min": replicas[0], "max": replicas[1]},
        "loadBalancer": {"engine": "nginx", "replicas": 1},
        "cache": {"enabled": cache},
    }
    body.update(spec)
    return {"apiVersion": LLMS[0], "kind": LLMS[1], "metadata": {"name": name}, "spec": body}


def condition(obj: Obj | None, kind: str) -> Obj | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def has_condition(kind: str, status: str, reason: str | None = None) -> Callable[[Obj], bool]:
    def check(obj: Obj) -> bool:
        cond = condition(obj, kind)
        return cond is not None and cond["status"] == status and (reason is None or cond["reason"] == reason)

    return check


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_passes(count: int, trigger: str | None = None, timeout: float = WAIT) -> None:
    """Wait until the operator has finished ``count`` more reconcile passes (of ``trigger``)."""
    start = opmetrics.reconcile_count(trigger)
    wait_until(
        lambda: opmetrics.reconcile_count(trigger) >= start + count, f"{count} reconcile passes", timeout
    )


def children(kube: Kube, name: str) -> list[Obj]:
    selector = f"app.kubernetes.io/managed-by=llmfleet,llmfleet.io/service={name}"
    found: list[Obj] = []
    for api_version, kind in (
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "PersistentVolumeClaim"),
        ("apps/v1", "Deployment"),
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ):
        for item in kube.list(api_version, kind, label_selector=selector):
            found.append({"apiVersion": api_version, "kind": kind, **item})
    return found


def names(objs: list[Obj]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


def set_deployment_ready(kube: Kube, name: str, ready: int, desired: int | None = None) -> None:
    """Write what the Deployment controller would (no controllers run in the emulator).

    ``desired`` also sets ``spec.replicas`` the way the HPA does through the scale subresource.
    """
    if desired is not None:
        kube.patch(
            "apps/v1",
            "Deployment",
            name,
            {"spec": {"replicas": desired}},
            field_manager="kube-controller-manager",
        )
    dep = kube.get("apps/v1", "Deployment", name)
    replicas = desired if desired is not None else int(dep["spec"].get("replicas", 1))
    kube.patch_status(
        "apps/v1",
        "Deployment",
        name,
        {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    )


def write_endpoint_slice(
    kube: Kube, service: str, addresses: list[tuple[str, bool]], port: int = 8080
) -> None:
    """An EndpointSlice of ``service`` as the EndpointSlice controller would write it."""
    kube.apply(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-abcde",
                "namespace": kube.namespace,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [ip],
                    "conditions": {"ready": ready},
                    "targetRef": {"kind": "Pod", "name": f"pod-{i}"},
                }
                for i, (ip, ready) in enumerate(addresses)
            ],
        },
        field_manager="endpointslice-controller.k8s.io",
    )
