"""The CLI contract the renderer relies on: flags, their environment twins, the password source."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from llmfleet.gateway.command import add_arguments, config_from_args

RENDERED = [
    "--host", "0.0.0.0", "--port", "8080", "--metrics-port", "9091", "--upstream", "http://chat-lb:80",
    "--redis-url", "redis://chat-cache:6379/0", "--ttl-seconds", "3600", "--tenant-header", "X-Tenant-ID",
    "--max-cached-bytes", "1048576", "--semantic", "--semantic-threshold", "0.92",
]  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_rendered_command_line_maps_to_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    config = config_from_args(parse(RENDERED))
    assert config.upstream == "http://chat-lb:80"
    assert config.redis_url == "redis://chat-cache:6379/0"
    assert config.redis_password == "s3cret"
    assert (config.host, config.port, config.metrics_port) == ("0.0.0.0", 8080, 9091)
    assert (config.ttl_seconds, config.tenant_header, config.max_cached_bytes) == (
        3600,
        "X-Tenant-ID",
        1048576,
    )
    assert config.semantic and config.semantic_threshold == 0.92


def test_environment_sets_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("LLMFLEET_GATEWAY_TTL_SECONDS", "60")
    monkeypatch.setenv("LLMFLEET_GATEWAY_UPSTREAM", "http://env-lb:80")
    monkeypatch.setenv("LLMFLEET_GATEWAY_SEMANTIC", "true")
    monkeypatch.setenv("LLMFLEET_GATEWAY_REDIS_TIMEOUT_MS", "250")
    config = config_from_args(parse(["--upstream", "http://flag-lb:80"]))
    assert config.ttl_seconds == 60
    assert config.upstream == "http://flag-lb:80"
    assert config.semantic is True
    assert config.redis_timeout_seconds == 0.25
    assert config.redis_password is None


def test_unparsable_environment_is_ignored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Kubernetes service links: a Service named llmfleet-gateway injects this into every pod
    monkeypatch.setenv("LLMFLEET_GATEWAY_PORT", "tcp://10.0.0.7:80")
    assert parse([]).port == 8080
    assert "LLMFLEET_GATEWAY_PORT" in capsys.readouterr().err


def test_command_module_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, llmfleet.gateway.command;"
        "heavy = {'torch', 'aiohttp', 'httpx', 'redis', 'numpy'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
