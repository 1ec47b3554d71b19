"""Command-line flags of ``llmfleet sim-server`` and the ``--profile`` file that can preset them.

Every parameter of the latency model is a flag (with its unit in the name) and a profile key, so
a profile calibrated against a real engine (llama-server, vLLM) can be checked in and loaded,
while a flag on the command line still wins for one experiment.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from llmfleet.sim.engine import OUTPUT_DISTRIBUTIONS, EngineConfig

DEFAULTS = EngineConfig()


class _Explicit(argparse.Action):
    """Store the value and remember that the user gave it, so a --profile cannot override it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        explicit: set[str] = namespace.__dict__.setdefault("explicit_flags", set())
        explicit.add(self.dest)


class _LoadProfile(argparse.Action):
    """Apply a JSON profile's values to every profile flag not given explicitly on the command line."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            profile = json.loads(profile_path(str(values)).read_text())
        except (OSError, ValueError) as error:
            parser.error(f"--profile {values}: {error}")
        if not isinstance(profile, dict):
            parser.error(f"--profile {values}: expected a JSON object")
        kinds = {action.dest: action.type for action in parser._actions if action.dest in PROFILE_KEYS}
        explicit = namespace.__dict__.get("explicit_flags", set())
        for key, value in profile.items():
            if key.startswith("_"):
                continue  # comments, calibration notes
            if key not in PROFILE_KEYS:
                parser.error(
                    f"--profile {values}: unknown key {key!r} (known: {', '.join(sorted(PROFILE_KEYS))})"
                )
            if key not in explicit:
                convert = kinds.get(key) or str
                try:
                    setattr(namespace, key, convert(value))  # type: ignore[operator]
                except (TypeError, ValueError):
                    parser.error(f"--profile {values}: bad value for {key}: {value!r}")
        namespace.profile = values


PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


def profile_path(value: str) -> Path:
    """A profile file, or the name of one shipped in llmfleet/sim/profiles (``llamacpp-tiny-cpu``)."""
    path = Path(value)
    bundled = PROFILES_DIR / f"{value}.json"
    if not path.exists() and path.name == value and bundled.is_file():
        return bundled
    return path


PROFILE_KEYS = {f.name for f in fields(EngineConfig)} | {
    "default_max_tokens",
    "startup_delay_seconds",
    "metrics_flavor",
}


def _non_negative(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    nonneg_int, nonneg_float = _non_negative(int), _non_negative(float)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 inside a pod)")
    server.add_argument("--port", type=int, default=8000, help="TCP port (vLLM's default)")
    server.add_argument(
        "--id",
        default=argparse.SUPPRESS,
        help="backend name echoed in the X-Sim-Server header, system_fingerprint and "
        "metrics (default: HOSTNAME:PORT)",
    )
    server.add_argument(
        "--served-model-name",
        default="sim-model",
        help="model name in /v1/models, the `model_name` metric label and accepted in requests",
    )
    server.add_argument(
        "--seed", type=int, default=0, help="seed of every random choice (output lengths, injected errors)"
    )
    server.add_argument(
        "--profile",
        action=_LoadProfile,
        default=None,
        metavar="FILE.json",
        help="JSON object of model parameters (keys: the flag names below marked [profile], "
        "with underscores), or the name of a shipped profile (llamacpp-tiny-cpu); flags given "
        "on the command line win",
    )
    server.add_argument("--access-log", action="store_true", help="log every request (costs CPU)")
    server.add_argument(
        "--shutdown-timeout-seconds",
        type=nonneg_float,
        default=2.0,
        help="on SIGTERM, how long in-flight requests may finish",
    )

    model = parser.add_argument_group("engine model (each also a --profile key)")

    def profiled(flag: str, kind: Any, default: Any, text: str, **extra: Any) -> None:
        model.add_argument(
            flag, type=kind, default=default, action=_Explicit, help=f"[profile] {text}", **extra
        )

    profiled(
        "--max-num-seqs",
        nonneg_int,
        DEFAULTS.max_num_seqs,
        "sequences in the running batch at most (vLLM --max-num-seqs, llama.cpp --parallel)",
    )
    profiled(
        "--max-num-batched-tokens",
        nonneg_int,
        DEFAULTS.max_num_batched_tokens,
        "prompt tokens prefilled in one step at most (a single longer prompt still goes alone)",
    )
    profiled(
        "--kv-cache-tokens",
        nonneg_int,
        DEFAULTS.kv_cache_tokens,
        "KV cache capacity in tokens; a request is admitted only when its prompt plus its "
        "output fit beside the running ones",
    )
    profiled(
        "--max-model-len",
        nonneg_int,
        DEFAULTS.max_model_len,
        "context length: prompt + max_tokens above it is answered 400",
    )
    profiled(
        "--prefill-seconds-per-token",
        nonneg_float,
        DEFAULTS.prefill_seconds_per_token,
        "prefill cost per prompt token, added to the step that admits the request",
    )
    profiled(
        "--prefill-base-seconds",
        nonneg_float,
        DEFAULTS.prefill_base_seconds,
        "fixed cost added to a step that admits (prefills) at least one request: the TTFT "
        "intercept beyond one decode step (llama-server: about 20 ms on the CPU test model)",
    )
    profiled(
        "--decode-base-seconds",
        nonneg_float,
        DEFAULTS.decode_base_seconds,
        "fixed duration of one engine step (inter-token latency of a batch of one, minus per-seq)",
    )
    profiled(
        "--decode-per-seq-seconds",
        nonneg_float,
        DEFAULTS.decode_per_seq_seconds,
        "added to each step per running sequence (ITL grows with batch size)",
    )
    profiled(
        "--output-tokens-dist",
        str,
        DEFAULTS.output_tokens_dist,
        "output length: exactly max_tokens, or drawn (uniform 1..2*mean-1, or exponential with "
        "the mean) and capped by max_tokens; requests with ignore_eos always get max_tokens",
        choices=OUTPUT_DISTRIBUTIONS,
    )
    profiled(
        "--output-tokens-mean",
        nonneg_float,
        DEFAULTS.output_tokens_mean,
        "mean output tokens of the uniform and exponential distributions",
    )
    profiled(
        "--default-max-tokens",
        nonneg_int,
        256,
        "max_tokens of requests that do not set it (at most what the context leaves after the prompt)",
    )
    profiled(
        "--startup-delay-seconds",
        nonneg_float,
        0.0,
        "/health and the API answer 503 until this much time after start (model loading)",
    )
    profiled(
        "--metrics-flavor",
        str,
        "vllm",
        "vllm: vLLM metric names; llamacpp: also llama-server's llamacpp:* names",
        choices=("vllm", "llamacpp"),
    )

    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--error-rate",
        type=_fraction,
        default=0.0,
        help="fraction of requests answered HTTP 500 before any token (seeded)",
    )
    faults.add_argument(
        "--stall-after-tokens",
        type=nonneg_int,
        default=None,
        help="every response stops after this many tokens for --stall-seconds, then goes on",
    )
    faults.add_argument(
        "--stall-seconds", type=nonneg_float, default=3600.0, help="how long a stalled response stalls"
    )
    faults.add_argument(
        "--crash-after-requests",
        type=nonneg_int,
        default=None,
        help="handle this many generation requests normally; the next one received makes the "
        "process exit at once with status 3 (no response, in-flight requests cut)",
    )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine parameters of parsed arguments (after the --profile merge)."""
    return EngineConfig(**{f.name: getattr(args, f.name) for f in fields(EngineConfig)})
