"""Print every child of one or more LLMServices as a YAML stream, like ``helm template``.

Offline and side-effect free: the same renderers the operator applies. Without ``--endpoint``
the load-balancer config lists no replicas (it answers 503 until the operator fills in the ready
pods); pass ``--endpoint IP:PORT`` to see the config as the operator would render it for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from llmfleet.render import Endpoint, RenderContext, render_children
from llmfleet.render.cache import password_secret
from llmfleet.validation import InvalidService, validate_service


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        required=True,
        help="YAML file with one or more LLMService documents ('-' reads standard input)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace for the children (default: the object's metadata.namespace, else 'default')",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="IP:PORT",
        help="a ready model replica to put in the load-balancer config (repeatable)",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="KEY=IMAGE",
        help="override a pinned image: vllm, tgi, sglang, llamacpp, llamacpp-cuda, ollama, nginx, haproxy, redis, aws-cli, llmfleet (repeatable)",
    )
    parser.add_argument(
        "--predictive-floor",
        type=int,
        default=None,
        help="render the HPA as if the predictive scaler had recommended this many replicas",
    )
    parser.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml", help="output format")


def _parse_endpoints(values: list[str]) -> tuple[Endpoint, ...]:
    endpoints = []
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--endpoint {value!r}: expected IP:PORT")
        endpoints.append(Endpoint(address=host, port=int(port)))
    return tuple(endpoints)


def _load_documents(filename: str) -> list[Any]:
    text = sys.stdin.read() if filename == "-" else open(filename, encoding="utf-8").read()  # noqa: SIM115
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def main(args: argparse.Namespace) -> int:
    try:
        documents = _load_documents(args.filename)
        endpoints = _parse_endpoints(args.endpoint) if args.endpoint else None
        images = dict(item.split("=", 1) for item in args.image)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not documents:
        print(f"error: {args.filename} holds no LLMService", file=sys.stderr)
        return 2
    failed = False
    output: list[dict[str, Any]] = []
    notes: list[str] = []
    for index, document in enumerate(documents):
        try:
            service = validate_service(document)
        except InvalidService as exc:
            label = (document.get("metadata") or {}).get("name") if isinstance(document, dict) else None
            print(
                f"error: {args.filename}: document {index + 1}{f' ({label})' if label else ''} is not a valid LLMService:",
                file=sys.stderr,
            )
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            failed = True
            continue
        namespace = args.namespace or service.metadata.get("namespace") or "default"
        ctx = RenderContext(
            name=service.name,
            namespace=namespace,
            endpoints=endpoints,
            predictive_floor=args.predictive_floor,
            images=images,
        )
        output += render_children(service.spec, ctx)
        if service.spec.cache.enabled and service.spec.cache.password_secret_ref is None:
            secret, key = password_secret(service.spec, ctx)
            notes.append(
                f"# The operator creates Secret {namespace}/{secret} (key {key}) with a random Redis password."
            )
    if failed:
        return 2
    if args.output == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": output}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in notes:
            print(line)
        for manifest in output:
            sys.stdout.write("---\n" + yaml.safe_dump(manifest, sort_keys=False, width=120))
    return 0
