"""``llmfleet run``: its flags, their help, and the operator's /metrics endpoint."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from llmfleet import opmetrics
from llmfleet.cli import command_parser
from llmfleet.runner import main, options_from_args


def parse(*argv: str) -> object:
    parser, _ = command_parser("run")
    return parser.parse_args(list(argv))


def test_help_documents_every_flag() -> None:
    parser, _ = command_parser("run")
    text = parser.format_help()
    for flag in (
        "--namespace",
        "--all-namespaces",
        "--liveness-endpoint",
        "--metrics-port",
        "--peering",
        "--standalone",
        "--priority",
        "--prometheus-url",
        "--image",
        "--drift-interval",
    ):
        assert flag in text, flag


def test_flags_become_options() -> None:
    args = parse(
        "-n", "ml", "-n", "team-*", "--standalone", "--image", "nginx=mirror/nginx:1", "--metrics-port", "0"
    )
    options = options_from_args(args)  # type: ignore[arg-type]
    assert options.namespaces == ["ml", "team-*"] and not options.clusterwide
    assert options.standalone and options.images == {"nginx": "mirror/nginx:1"} and options.metrics_port == 0
    assert options_from_args(parse("-A")).clusterwide  # type: ignore[arg-type]


def test_unknown_image_key_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse("-A", "--image", "postgres=pg:16")


@pytest.mark.parametrize("argv", [(), ("-A", "-n", "ml")])
def test_scope_is_required_and_unambiguous(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(parse(*argv)) == 2  # type: ignore[arg-type]
    assert "--namespace" in capsys.readouterr().out


def test_metrics_endpoint_serves_the_operator_metrics() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    opmetrics.finished("timer", "ok")
    opmetrics.serve(port, "127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'llmfleet_operator_reconciles_total{result="ok",trigger="timer"}' in body
    assert "llmfleet_operator_reconcile_duration_seconds" in body


def test_random_priority_differs_between_replicas_started_alike() -> None:
    priorities = {parse("-A", "--priority", "random").priority for _ in range(20)}  # type: ignore[attr-defined]
    assert len(priorities) == 20 and all(p > 0 for p in priorities)
    assert parse("-A", "--priority", "7").priority == 7  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        parse("-A", "--priority", "high")
