"""Run the llmfleet operator (kopf) against the current cluster.

Credentials: the pod's ServiceAccount in a cluster, else the current kubeconfig context. Pass
--namespace (repeatable) or --all-namespaces. With --peering (the default peering name is
"llmfleet") replicas coordinate through a KopfPeering object so that two never act at once;
--standalone skips that. /metrics (--metrics-port) reports reconciles, durations and errors;
--liveness-endpoint serves kopf's health probe.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmfleet.render.common import DEFAULT_IMAGES

DEFAULT_PEERING = "llmfleet"


@dataclass
class RunOptions:
    namespaces: list[str] = field(default_factory=list)
    clusterwide: bool = False
    liveness_endpoint: str | None = None
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    peering: str = DEFAULT_PEERING
    standalone: bool = False
    priority: int = 0
    prometheus_url: str | None = None
    images: dict[str, str] = field(default_factory=dict)
    drift_interval: float = 60.0


def _image(text: str) -> tuple[str, str]:
    key, sep, image = text.partition("=")
    if not sep or key not in DEFAULT_IMAGES or not image:
        raise argparse.ArgumentTypeError(
            f"expected KEY=IMAGE with KEY one of {', '.join(DEFAULT_IMAGES)}; got {text!r}"
        )
    return key, image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_argument_group("scope (one is required)")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NS",
        help="watch LLMServices in this namespace; repeat for several (globs like 'ml-*' work)",
    )  # fmt: skip
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    probes = parser.add_argument_group("probes and metrics")
    probes.add_argument(
        "--liveness-endpoint", metavar="URL", default=None,
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz (off when omitted)",
    )  # fmt: skip
    probes.add_argument(
        "--metrics-port", type=int, default=9090, metavar="PORT",
        help="serve the operator's Prometheus /metrics on this port; 0 turns it off",
    )  # fmt: skip
    probes.add_argument(
        "--metrics-host", default="0.0.0.0", metavar="ADDR", help="address /metrics listens on"
    )
    peering = parser.add_argument_group("leader election")
    mode = peering.add_mutually_exclusive_group()
    mode.add_argument(
        "--peering", default=DEFAULT_PEERING, metavar="NAME",
        help="KopfPeering object shared by the replicas (KopfPeering NAME in each watched namespace, "
        "or ClusterKopfPeering NAME with --all-namespaces); a replica pauses while another with "
        "the same or a higher priority is alive, so two never act at once",
    )  # fmt: skip
    mode.add_argument(
        "--standalone", action="store_true", help="no peering: only safe with exactly one replica"
    )
    peering.add_argument(
        "--priority", type=_priority, default=0,
        help="peering priority; the highest alive replica acts (give a standby a lower value). "
        "'random' draws one per process, so identical replicas of one Deployment elect a leader",
    )  # fmt: skip
    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument(
        "--prometheus-url", default=None, metavar="URL",
        help="Prometheus for predictive scaling when an LLMService omits autoscaling.predictive.prometheusUrl",
    )  # fmt: skip
    behaviour.add_argument(
        "--image", action="append", type=_image, default=[], metavar="KEY=IMAGE",
        help=f"override a default image; repeatable. KEY: {', '.join(DEFAULT_IMAGES)}",
    )  # fmt: skip
    behaviour.add_argument(
        "--drift-interval", type=float, default=60.0, metavar="SECONDS",
        help="how often every LLMService is re-checked against the cluster (repairs hand edits of kinds not watched)",
    )  # fmt: skip
    behaviour.add_argument("-v", "--verbose", action="store_true", help="log every handler and API call")


def _priority(value: str) -> int:
    """An integer peering priority, or ``random``: a draw per process (kopf's docs suggest it for
    replicas that share their arguments; equal priorities would make every replica pause)."""
    if value == "random":
        return secrets.randbelow(2**31 - 2) + 1
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'random', got {value!r}") from None


def options_from_args(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        namespaces=list(args.namespace),
        clusterwide=bool(args.all_namespaces),
        liveness_endpoint=args.liveness_endpoint,
        metrics_port=int(args.metrics_port),
        metrics_host=str(args.metrics_host),
        peering=str(args.peering),
        standalone=bool(args.standalone),
        priority=int(args.priority),
        prometheus_url=args.prometheus_url,
        images=dict(args.image),
        drift_interval=float(args.drift_interval),
    )


async def operate(
    options: RunOptions,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run kopf with llmfleet's handlers until ``stop_flag`` is set (or a signal arrives)."""
    import kopf

    from llmfleet.handlers import OperatorConfig, build_registry
    from llmfleet.predictive import LivePredictor

    config = OperatorConfig(
        drift_interval=options.drift_interval,
        images=options.images,
        predictor=LivePredictor(options.prometheus_url),
    )
    registry, _ = build_registry(config)
    settings = kopf.OperatorSettings()
    settings.peering.name = options.peering
    settings.peering.priority = options.priority
    settings.peering.clusterwide = options.clusterwide
    # Peering by name is a promise that two replicas never act at once: fail rather than run
    # unguarded when the KopfPeering resource is missing.
    settings.peering.mandatory = not options.standalone
    settings.peering.standalone = options.standalone
    await kopf.operator(
        registry=registry,
        settings=settings,
        standalone=options.standalone,
        priority=options.priority,
        peering_name=None if options.standalone else options.peering,
        clusterwide=options.clusterwide,
        namespaces=options.namespaces,
        liveness_endpoint=options.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main(args: argparse.Namespace) -> int:
    import kopf

    from llmfleet import opmetrics

    options = options_from_args(args)
    if not options.namespaces and not options.clusterwide:
        print("llmfleet run: pass --namespace NS (repeatable) or --all-namespaces")
        return 2
    if options.namespaces and options.clusterwide:
        print("llmfleet run: --namespace and --all-namespaces exclude each other")
        return 2
    kopf.configure(verbose=bool(args.verbose))
    logging.getLogger("llmfleet").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if options.metrics_port:
        opmetrics.serve(options.metrics_port, options.metrics_host)
    asyncio.run(operate(options))
    return 0


def run_in_thread(options: RunOptions, *, timeout: float = 30.0) -> tuple[threading.Thread, threading.Event]:
    """Start the operator in a background thread (for tests and embedding); returns (thread, stop)."""
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(operate(options, stop_flag=stop, ready_flag=ready)),
        name="llmfleet-operator",
        daemon=True,
    )
    thread.start()
    if not ready.wait(timeout):
        stop.set()
        raise RuntimeError("the operator did not become ready")
    return thread, stop


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmfleet run")
    add_arguments(parser)
    return parser.parse_args(list(argv))
