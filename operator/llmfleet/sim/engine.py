"""The scheduling and latency model of the simulated model server, free of I/O and clocks.

Queueing and batching are what make LLM serving behave as it does: a request waits in a FIFO
queue until the engine has a free sequence slot (and KV cache room), its prompt is prefilled in
the step that admits it, and from then on every engine step emits one token for every running
sequence, so a step gets slower as the batch grows. This module is that step scheduler. The
caller owns the clock: ``start_step(now)`` admits and returns how long the step takes,
``finish_step(now)`` advances every running sequence by one token. ``run_virtual`` drives it
with a virtual clock, which is how the tests (and a fleet simulator) use it without sleeping.

Latency model (all times in seconds)::

    step      = decode_base + decode_per_seq * running
                + (prefill_base if the step admits a request) + prefill_per_token * admitted_prompt_tokens
    TTFT      = time queued + the step that admits (and prefills) the request
    ITL       = the duration of each later step
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_TOKENS_REPLY_PRIME = 3
OUTPUT_DISTRIBUTIONS = ("max_tokens", "uniform", "exponential")


def count_text_tokens(text: str) -> int:
    """Deterministic prompt token count: every run of word characters and every punctuation mark.

    English text gives about 1.3 tokens per word, close to what BPE tokenizers report.
    """
    return len(_TOKEN_RE.findall(text))


def count_chat_tokens(contents: Iterable[str]) -> int:
    """Tokens of a chat prompt: each message's text plus the template's per-message overhead."""
    return (
        sum(count_text_tokens(text) + CHAT_TOKENS_PER_MESSAGE for text in contents) + CHAT_TOKENS_REPLY_PRIME
    )


@dataclass(frozen=True)
class EngineConfig:
    """Capacity and timing of one simulated engine; flag names add the dashes."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_cache_tokens: int = 131072
    max_model_len: int = 8192
    prefill_seconds_per_token: float = 0.0001
    prefill_base_seconds: float = 0.0
    decode_base_seconds: float = 0.015
    decode_per_seq_seconds: float = 0.0002
    output_tokens_dist: str = "max_tokens"
    output_tokens_mean: float = 128.0

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_tokens", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "prefill_seconds_per_token",
            "prefill_base_seconds",
            "decode_base_seconds",
            "decode_per_seq_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.decode_base_seconds + self.decode_per_seq_seconds <= 0:
            raise ValueError("decode_base_seconds + decode_per_seq_seconds must be positive")
        if self.kv_cache_tokens < self.max_model_len:
            raise ValueError("kv_cache_tokens must hold at least one max_model_len sequence")
        if self.output_tokens_dist not in OUTPUT_DISTRIBUTIONS:
            raise ValueError(f"output_tokens_dist must be one of {', '.join(OUTPUT_DISTRIBUTIONS)}")
        if self.output_tokens_mean < 1:
            raise ValueError("output_tokens_mean must be at least 1")


class RequestRejected(ValueError):
    """The request can never be served (too long for the model); maps to HTTP 400."""


@dataclass(eq=False)
class Sequence:
    """One request inside the engine, with the timestamps the metrics are made of."""

    seq_id: int
    prompt_tokens: int
    max_tokens: int
    output_tokens: int
    arrived_at: float
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    generated: int = 0
    aborted: bool = False
    token_times: list[float] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def finish_reason(self) -> str:
        """OpenAI's reason: ``length`` when max_tokens cut it off, ``stop`` when it ended itself."""
        return "length" if self.output_tokens >= self.max_tokens else "stop"

    @property
    def kv_tokens(self) -> int:
        """KV cache reserved for the sequence: its prompt and every token it will generate."""
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class StepReport:
    """What one finished step did: every sequence that got a token, and those that finished."""

    started_at: float
    duration: float
    advanced: list[Sequence]
    finished: list[Sequence]
    admitted: list[Sequence]


class Engine:
    """A continuous-batching step scheduler (see module doc). Not thread-safe; no I/O."""

    def __init__(self, config: EngineConfig, seed: int | None = None) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._kv_reserved = 0
        self._step: tuple[float, float, list[Sequence]] | None = None
        self.steps = 0

    # -- requests -------------------------------------------------------------------------

    def output_length(self, max_tokens: int, ignore_eos: bool = False) -> int:
        """How many tokens a request generates: ``max_tokens`` or a draw capped by it."""
        dist, mean = self.config.output_tokens_dist, self.config.output_tokens_mean
        if ignore_eos or dist == "max_tokens":
            drawn = max_tokens
        elif dist == "uniform":
            drawn = self._rng.randint(1, max(1, round(2 * mean - 1)))
        else:
            drawn = 1 + math.floor(self._rng.expovariate(1.0 / max(mean - 0.5, 0.5)))
        return max(1, min(drawn, max_tokens))

    def add(self, prompt_tokens: int, max_tokens: int, now: float, ignore_eos: bool = False) -> Sequence:
        """Queue a request (FIFO); raises RequestRejected when it can never fit the model."""
        limit = self.config.max_model_len
        if max_tokens < 1:
            raise RequestRejected("max_tokens must be at least 1")
        if prompt_tokens + max_tokens > limit:
            raise RequestRejected(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages or completion."
            )
        output = self.output_length(max_tokens, ignore_eos)
        seq = Sequence(next(self._ids), prompt_tokens, max_tokens, output, arrived_at=now)
        self.waiting.append(seq)
        return seq

    def abort(self, seq: Sequence, now: float) -> None:
        """Drop a request whose client went away, freeing its slot at once."""
        if seq.finished:
            return
        seq.aborted = True
        seq.finished_at = now
        if seq in self.running:
            self.running.remove(seq)
            self._kv_reserved -= seq.kv_tokens
        else:
            self.waiting.remove(seq)

    # -- state ------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_cache_usage(self) -> float:
        """Fraction (0..1) of KV cache holding tokens of running sequences (prompt + generated)."""
        used = sum(seq.prompt_tokens + seq.generated for seq in self.running)
        return used / self.config.kv_cache_tokens

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    # -- stepping -------------------------------------------------------------------------

    def start_step(self, now: float) -> float | None:
        """Admit waiting requests that fit and return the step's duration; None when idle."""
        if self._step is not None:
            raise RuntimeError("start_step called twice without finish_step")
        config = self.config
        admitted: list[Sequence] = []
        batched = 0
        while self.waiting and len(self.running) < config.max_num_seqs:
            head = self.waiting[0]
            if self._kv_reserved + head.kv_tokens > config.kv_cache_tokens:
                break  # FCFS: nobody overtakes the head of the queue
            if admitted and batched + head.prompt_tokens > config.max_num_batched_tokens:
                break
            self.waiting.popleft()
            head.admitted_at = now
            self._kv_reserved += head.kv_tokens
            self.running.append(head)
            admitted.append(head)
            batched += head.prompt_tokens
        if not self.running:
            return None
        duration = (
            config.decode_base_seconds
            + config.decode_per_seq_seconds * len(self.running)
            + config.prefill_seconds_per_token * batched
            + (config.prefill_base_seconds if admitted else 0.0)
        )
        self._step = (now, duration, admitted)
        return duration

    def finish_step(self, now: float) -> StepReport:
        """Give every running sequence its next token; retire those that are done."""
        if self._step is None:
            raise RuntimeError("finish_step called without start_step")
        started_at, duration, admitted = self._step
        self._step = None
        self.steps += 1
        advanced = list(self.running)
        finished: list[Sequence] = []
        for seq in advanced:
            seq.generated += 1
            seq.token_times.append(now)
            if seq.first_token_at is None:
                seq.first_token_at = now
            if seq.generated >= seq.output_tokens:
                seq.finished_at = now
                finished.append(seq)
        if finished:
            done = set(map(id, finished))
            self.running = [seq for seq in self.running if id(seq) not in done]
            self._kv_reserved -= sum(seq.kv_tokens for seq in finished)
        return StepReport(started_at, duration, advanced, finished, admitted)


@dataclass(frozen=True)
class Arrival:
    """A request arriving at ``at`` seconds of virtual time."""

    at: float
    prompt_tokens: int
    max_tokens: int


def run_virtual(engine: Engine, arrivals: Iterable[Arrival], start: float = 0.0) -> list[Sequence]:
    """Serve ``arrivals`` on a virtual clock until all are done; returns sequences in arrival order.

    Requests that arrive during a step join the queue and are admitted by the next step, as in
    a real engine loop.
    """
    pending = [(a.at, i, a) for i, a in enumerate(arrivals)]
    heapq.heapify(pending)
    sequences: list[Sequence] = []
    now = start
    while pending or engine.busy:
        while pending and pending[0][0] <= now:
            at, _, arrival = heapq.heappop(pending)
            sequences.append(engine.add(arrival.prompt_tokens, arrival.max_tokens, at))
        duration = engine.start_step(now)
        if duration is None:
            now = max(now, pending[0][0])
            continue
        now += duration
        engine.finish_step(now)
    return sequences
