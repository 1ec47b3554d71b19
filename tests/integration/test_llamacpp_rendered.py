"""The rendered llamacpp model Deployment, run for real against the built llama-server.

For every ``engine.kind: llamacpp`` sample in manifests/samples (and variants of each with
``warmup: false``, with one GPU, and with ``prefixCaching: false``), render the children with ``llmfleet render``,
take the model container's command and args exactly as rendered, substitute only the model (the
generated test model instead of the hub download) and the port (a free loopback port instead of
the container port), start it, and check what the kubelet, the Service and Prometheus will see:

- every rendered flag is accepted (an unknown flag makes llama-server exit non-zero);
- every ``engine.tuning`` knob has its intended effect (slots, per-sequence context, prefix cache);
- the startup, readiness and liveness probes (path, port) succeed the way the kubelet judges
  them, also while every slot is busy and requests queue;
- the metrics port and path named by the Service's and the pod's scrape annotations serve the
  ``llamacpp:`` families;
- the rendered warmup (a postStart hook) waits for the engine and sends one real request.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.llama import (
    LlamaServer,
    http_status,
    llama_server_binary,
    parse_metric,
    run_llama_server,
    tiny_model,
)
from tests.support.process import PYTHON, ManagedProcess, free_port, wait_until

pytestmark = [pytest.mark.realengine, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
MODEL_FLAGS = ("--model", "-m")
HUB_FLAGS = {"--hf-repo": 1, "-hf": 1, "-hfr": 1, "--hf-file": 1, "-hff": 1}


def llamacpp_samples() -> list[Path]:
    found = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "LLMService" and doc["spec"]["engine"]["kind"] == "llamacpp":
                found.append(path)
                break
    return found


def sample_doc(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "LLMService"]
    assert len(docs) == 1, f"{path.name}: expected one LLMService"
    return docs[0]


def variant(doc: dict[str, Any], name: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    engine = out["spec"]["engine"]
    if name == "no-warmup":
        engine["warmup"] = False
    elif name == "gpu":  # the CUDA image's flags; this CPU build accepts and ignores --n-gpu-layers
        out["spec"].setdefault("resources", {})["gpu"] = {"count": 1}
    elif name == "no-prefix-caching":
        engine.setdefault("tuning", {})["prefixCaching"] = False
    else:
        assert name == "as-is", name
    return out


CASES = [(path, name) for path in llamacpp_samples() for name in ("as-is", "no-warmup", "gpu")]


@dataclass
class Rendered:
    service_spec: dict[str, Any]  # LLMService.spec as given (after the variant)
    deployment: dict[str, Any]
    model_service: dict[str, Any]
    container: dict[str, Any]

    @property
    def container_port(self) -> int:
        ports = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
        return int(ports["http"])

    def resolve_port(self, port: int | str) -> int:
        """A probe's or Service's port (number or container port name) as a container port number."""
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        ports = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
        assert port in ports, (
            f"port name {port!r} is not a container port of {self.container['name']}: {ports}"
        )
        return int(ports[port])


def render_cli(doc: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    source = workdir / "llmservice.yaml"
    source.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [PYTHON, "-m", "llmfleet.cli", "render", "-f", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def render(doc: dict[str, Any], workdir: Path) -> Rendered:
    result = render_cli(doc, workdir)
    assert result.returncode == 0, f"llmfleet render failed:\n{result.stderr}"
    children = [d for d in yaml.safe_load_all(result.stdout) if d]
    name = doc["metadata"]["name"]
    deployment = next(
        c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == f"{name}-model"
    )
    service = next(c for c in children if c["kind"] == "Service" and c["metadata"]["name"] == f"{name}-model")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return Rendered(doc["spec"], deployment, service, containers[0])


def localize(rendered: Rendered, model: Path, port: int) -> list[str]:
    """The rendered command + args with only the binary, the model and the port substituted."""
    command = list(rendered.container.get("command") or [])
    args = list(rendered.container.get("args") or [])
    assert command and command[0].endswith("/llama-server"), command
    argv = [str(llama_server_binary()), *command[1:]]
    i, model_done, port_done = 0, False, False
    while i < len(args):
        arg = args[i]
        if arg in MODEL_FLAGS:
            argv += [arg, str(model)]
            model_done = True
            i += 2
        elif arg in HUB_FLAGS:  # the pod downloads from the hub; here the generated model stands in
            if not model_done:
                argv += ["--model", str(model)]
                model_done = True
            i += 1 + HUB_FLAGS[arg]
        elif arg == "--port":
            argv += [arg, str(port)]
            port_done = True
            i += 2
        else:
            argv.append(arg)
            i += 1
    assert model_done, f"no model flag among the rendered args: {args}"
    assert port_done, f"no --port among the rendered args: {args}"
    return argv


def localize_env(rendered: Rendered, root: Path) -> dict[str, str]:
    """The rendered env with paths under the container's volume mounts moved under ``root``."""
    mounts = [m["mountPath"] for m in rendered.container.get("volumeMounts", [])]
    env = {}
    for item in rendered.container.get("env", []):
        if "value" not in item:
            continue
        value = str(item["value"])
        for mount in mounts:
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                value = str(root / mount.strip("/")) + value[len(mount) :]
                Path(value).mkdir(parents=True, exist_ok=True)
                break
        env[item["name"]] = value
    return env


def kubelet_probe(rendered: Rendered, probe: dict[str, Any], port: int) -> bool:
    """Judge an httpGet probe the way the kubelet does: 200 <= status < 400 within timeoutSeconds."""
    get = probe["httpGet"]
    assert get.get("scheme", "HTTP") == "HTTP"
    assert rendered.resolve_port(get["port"]) == rendered.container_port, (
        "probe does not target the engine port"
    )
    status = http_status(
        f"http://127.0.0.1:{port}{get['path']}", timeout=float(probe.get("timeoutSeconds", 1))
    )
    return status is not None and 200 <= status < 400


@dataclass
class Running:
    rendered: Rendered
    server: LlamaServer
    argv: list[str]
    env: dict[str, str]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p.stem}-{n}" for p, n in CASES])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    path, name = request.param
    workdir = tmp_path_factory.mktemp(f"{path.stem}-{name}")
    rendered = render(variant(sample_doc(path), name), workdir)
    port = free_port()
    # The 68 MB model: slow enough that concurrent requests overlap and queue for a while.
    argv = localize(rendered, tiny_model("small"), port)
    env = localize_env(rendered, workdir / "volumes")
    with run_llama_server(argv, port, workdir / "llama-server.log", env=env) as server:
        yield Running(rendered, server, argv, env)


def tuning(running: Running) -> dict[str, Any]:
    return dict(running.rendered.service_spec["engine"].get("tuning") or {})


def test_there_is_a_llamacpp_sample() -> None:
    assert llamacpp_samples(), f"no engine.kind: llamacpp sample in {SAMPLES}"


def test_unknown_flag_makes_llama_server_exit(tmp_path: Path) -> None:
    """The control for 'every flag accepted': a flag llama-server does not know ends it at once."""
    port = free_port()
    process = ManagedProcess(
        [
            str(llama_server_binary()),
            "--model",
            str(tiny_model("tiny")),
            "--port",
            str(port),
            "--no-such-flag-llmfleet",
        ],
        tmp_path / "bad.log",
    )
    try:
        process.proc.wait(timeout=60)
        assert process.proc.returncode != 0
        assert "no-such-flag-llmfleet" in process.log()
    finally:
        process.stop()


def test_every_rendered_flag_is_accepted(running: Running) -> None:
    assert running.server.process.alive()
    log = running.server.process.log()
    assert "invalid argument" not in log and "unknown argument" not in log.lower()
    # The hub flags were replaced by --model here; the engine must still know them.
    help_text = subprocess.run(
        [str(llama_server_binary()), "--help"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    for flag in running.rendered.container.get("args") or []:
        if flag in HUB_FLAGS:
            assert f" {flag}" in help_text or f"{flag}," in help_text, flag


def test_max_concurrent_sequences_sets_the_slots(running: Running) -> None:
    slots_wanted = tuning(running).get("maxConcurrentSequences", 1)
    props = running.server.get_json("/props")
    assert props["total_slots"] == slots_wanted
    assert len(running.server.get_json("/slots")) == slots_wanted


def test_context_length_is_the_per_sequence_context(running: Running) -> None:
    context = tuning(running).get("contextLength")
    if context is None:
        pytest.fail("the llamacpp samples should set engine.tuning.contextLength so this test can check it")
    slots = running.server.get_json("/slots")
    assert {slot["n_ctx"] for slot in slots} == {context}
    assert running.server.get_json("/props")["default_generation_settings"]["n_ctx"] == context
    with httpx.Client(base_url=running.server.url, timeout=httpx.Timeout(240.0, connect=5.0)) as http:
        # One token per byte ("xx" has no merge): a prompt that fills a sequence to the brim is served,
        fits = http.post("/v1/completions", json={"prompt": "x" * (context - 4), "max_tokens": 2})
        assert fits.status_code == 200, fits.text
        assert fits.json()["usage"]["prompt_tokens"] == context - 4
        # and one token more than a sequence holds is refused.
        too_long = http.post("/v1/completions", json={"prompt": "x" * (context + 1), "max_tokens": 2})
        assert too_long.status_code == 400
        assert too_long.json()["error"]["type"] == "exceed_context_size_error"


def repeated_prompt_cached_tokens(server: LlamaServer) -> list[int]:
    """cached_tokens of the same prompt sent twice in a row to an idle server."""
    prompt = "The same system prompt for every request, long enough to be worth caching. " * 3
    cached = []
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(120.0, connect=5.0)) as http:
        for _ in range(2):
            response = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
            assert response.status_code == 200, response.text
            cached.append(int(response.json()["usage"]["prompt_tokens_details"]["cached_tokens"]))
    return cached


def test_prefix_caching_knob(running: Running) -> None:
    wanted = tuning(running).get("prefixCaching")
    cached = repeated_prompt_cached_tokens(running.server)
    if wanted is True:
        assert cached[0] == 0 and cached[1] > 0, f"prefixCaching: true, but cached_tokens were {cached}"
    elif wanted is False:
        assert cached == [0, 0], f"prefixCaching: false, but cached_tokens were {cached}"


@pytest.mark.parametrize("path", llamacpp_samples(), ids=lambda p: p.stem)
def test_prefix_caching_false_is_honoured_or_refused(path: Path, tmp_path: Path) -> None:
    """prefixCaching: false must switch the engine's prompt cache off, or be refused at validation.

    What it must not do is render nothing: llama-server caches prompts by default, so the knob
    would be silently ignored.
    """
    doc = variant(sample_doc(path), "no-prefix-caching")
    result = render_cli(doc, tmp_path)
    if result.returncode != 0:
        assert "prefixCaching" in result.stderr, f"render failed for another reason:\n{result.stderr}"
        return
    rendered = render(doc, tmp_path)
    port = free_port()
    argv = localize(rendered, tiny_model("tiny"), port)
    with run_llama_server(
        argv, port, tmp_path / "llama-server.log", env=localize_env(rendered, tmp_path)
    ) as server:
        cached = repeated_prompt_cached_tokens(server)
    assert cached == [0, 0], (
        f"prefixCaching: false, but the repeated prompt reused {cached[1]} cached tokens; "
        f"rendered args: {rendered.container.get('args')}"
    )


def test_probes_answer_as_the_kubelet_expects(running: Running) -> None:
    container = running.rendered.container
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kind in container, f"the engine container has no {kind}"
        assert kubelet_probe(running.rendered, container[kind], running.server.port), kind


def test_probes_pass_while_every_slot_is_busy_and_requests_queue(running: Running) -> None:
    """Readiness and liveness must not fail under load: the kubelet would restart a busy pod."""
    slots = tuning(running).get("maxConcurrentSequences", 1)
    n_requests = slots + 1
    counts: list[int] = []
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        body = {"prompt": f"request {i}", "max_tokens": 160, "stream": True}
        try:
            with (
                httpx.Client(base_url=running.server.url, timeout=httpx.Timeout(240.0, connect=5.0)) as http,
                http.stream("POST", "/v1/completions", json=body) as response,
            ):
                response.raise_for_status()
                events = [
                    json.loads(line[6:])
                    for line in response.iter_lines()
                    if line.startswith("data: ") and line != "data: [DONE]"
                ]
                counts.append(sum(1 for e in events if e.get("choices") and e["choices"][0].get("text")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n_requests)]
    for thread in threads:
        thread.start()
    try:

        def saturated() -> bool:
            text = running.server.metrics_text()
            return (
                parse_metric(text, "llamacpp:requests_processing") == slots
                and parse_metric(text, "llamacpp:requests_deferred") == 1
            )

        wait_until(saturated, timeout=120, interval=0.02, what=f"{slots} busy slots and 1 deferred request")
        container = running.rendered.container
        for kind in ("readinessProbe", "livenessProbe"):
            assert kubelet_probe(running.rendered, container[kind], running.server.port), (
                f"{kind} failed under load"
            )
    finally:
        for thread in threads:
            thread.join(timeout=280)
    assert not errors, errors
    assert counts == [160] * n_requests


def test_scrape_target_serves_llamacpp_metrics(running: Running) -> None:
    rendered = running.rendered
    pod_annotations = rendered.deployment["spec"]["template"]["metadata"].get("annotations", {})
    service_annotations = rendered.model_service["metadata"].get("annotations", {})
    targets = []
    for marks in (pod_annotations, service_annotations):
        if marks.get("prometheus.io/scrape") == "true":
            targets.append((int(marks["prometheus.io/port"]), marks.get("prometheus.io/path", "/metrics")))
    assert targets, "neither the pod nor the model Service is annotated for scraping"
    # The Service's http port must reach the engine too (the load balancer and the scaler use it).
    http_port = next(p for p in rendered.model_service["spec"]["ports"] if p["name"] == "http")
    assert rendered.resolve_port(http_port["targetPort"]) == rendered.container_port
    for container_port, path in targets:
        assert container_port == rendered.container_port, "the scrape port is not the engine's port"
        with httpx.Client(timeout=10.0) as http:
            response = http.get(f"{running.server.url}{path}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        for family in (
            "requests_processing",
            "requests_deferred",
            "tokens_predicted_total",
            "prompt_tokens_total",
        ):
            assert f"# TYPE llamacpp:{family} " in response.text, family


def test_warmup(running: Running, tmp_path: Path) -> None:
    """warmup: true -> a postStart hook that waits for /health and sends one real request;
    warmup: false -> --no-warmup and no request before traffic."""
    rendered = running.rendered
    warmup = rendered.service_spec["engine"].get("warmup", True)
    args = rendered.container.get("args") or []
    hook = rendered.container.get("lifecycle", {}).get("postStart", {}).get("exec", {}).get("command")
    if not warmup:
        assert "--no-warmup" in args
        assert hook is None, f"warmup: false still renders a postStart hook: {hook}"
        return
    assert "--no-warmup" not in args
    assert hook, "warmup: true renders no postStart hook"
    # The kubelet starts the hook right after the container, before the engine listens: start a
    # fresh copy of the engine and the hook together, so the hook's wait loop is exercised.
    port = free_port()
    argv = localize(rendered, tiny_model("small"), port)
    engine_port = f"127.0.0.1:{rendered.container_port}"
    local_hook = [part.replace(engine_port, f"127.0.0.1:{port}") for part in hook]
    assert local_hook != hook, f"the hook does not call the engine at {engine_port}: {hook}"
    hook_process = ManagedProcess(local_hook, tmp_path / "hook.log")
    try:
        with run_llama_server(argv, port, tmp_path / "engine.log", env=running.env) as engine:
            hook_process.proc.wait(timeout=200)
            assert hook_process.proc.returncode == 0, hook_process.log()
            assert "warmup request failed" not in hook_process.log(), hook_process.log()
            # Exactly one request reached the engine and it generated.
            assert engine.metric("llamacpp:tokens_predicted_total") == 1
            assert engine.metric("llamacpp:prompt_tokens_total") is not None
    finally:
        hook_process.stop()
