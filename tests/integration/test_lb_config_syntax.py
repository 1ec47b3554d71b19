"""Every rendered nginx.conf passes `nginx -t` and every haproxy.cfg passes `haproxy -c`.

The real binaries from Debian's packages check the configs the operator would put in the LB
ConfigMap, for the samples and for random valid specs, with and without ready endpoints.
Warnings count as failures: a config haproxy warns about is a config someone will misread.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from llmfleet.render import Endpoint, RenderContext
from llmfleet.render.lb import config_text
from llmfleet.validation import validate_service
from tests.specs import SAMPLES, load_sample, service, valid_specs
from tests.support.process import require_binary

pytestmark = pytest.mark.realservers

ENDPOINTS = (
    Endpoint("10.0.0.11", 8000, "chat-model-abc"),
    Endpoint("10.0.0.12", 8000, "chat-model-def"),
    Endpoint("10.0.0.13", 8000),
)


def check_config(obj: dict[str, Any], endpoints: tuple[Endpoint, ...] | None) -> None:
    svc = validate_service(obj)
    engine = svc.spec.load_balancer.engine
    with tempfile.TemporaryDirectory() as tmp:
        text = config_text(
            svc.spec,
            RenderContext(name=svc.name, namespace=svc.namespace, endpoints=endpoints),
            runtime_dir=tmp,
        )
        conf = Path(tmp) / ("nginx.conf" if engine == "nginx" else "haproxy.cfg")
        conf.write_text(text)
        if engine == "nginx":
            argv = [require_binary("nginx"), "-t", "-q", "-p", tmp, "-e", f"{tmp}/error.log", "-c", str(conf)]
        else:
            argv = [require_binary("haproxy"), "-c", "-f", str(conf)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{engine} rejected the config:\n{output}\n---\n{text}"
        assert "WARNING" not in output.upper().replace("[NOTICE]", ""), f"{engine} warned:\n{output}"


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
@pytest.mark.parametrize("endpoints", [None, (), ENDPOINTS], ids=["offline", "no-ready", "three-ready"])
@pytest.mark.parametrize("lb_engine", ["nginx", "haproxy"])
def test_sample_configs_pass_the_real_binaries(
    path: Path, endpoints: tuple[Endpoint, ...] | None, lb_engine: str
) -> None:
    obj = load_sample(path)
    obj["spec"].setdefault("loadBalancer", {})["engine"] = lb_engine
    check_config(obj, endpoints)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(spec=valid_specs())
def test_random_valid_specs_give_configs_the_real_binaries_accept(spec: dict[str, Any]) -> None:
    check_config(service(spec), ENDPOINTS)


def test_the_check_fails_on_a_broken_config() -> None:
    """Guard: a config the binary rejects must fail the check."""
    require_binary("nginx")
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            "events {}\nhttp { upstream model { } server { listen 1; location / { proxy_pass http://model; } } }\n"
        )
        result = subprocess.run(
            ["nginx", "-t", "-q", "-p", tmp, "-e", f"{tmp}/e.log", "-c", str(conf)],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
