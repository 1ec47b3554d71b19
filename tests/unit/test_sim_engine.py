"""The sim-server's engine model on a virtual clock: batching, queueing and latency as users see them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.sim.engine import (
    Arrival,
    Engine,
    EngineConfig,
    RequestRejected,
    Sequence,
    count_chat_tokens,
    count_text_tokens,
    run_virtual,
)

CONFIG = EngineConfig(
    max_num_seqs=4,
    prefill_seconds_per_token=0.001,
    decode_base_seconds=0.01,
    decode_per_seq_seconds=0.002,
)


def ttft(seq: Sequence) -> float:
    assert seq.first_token_at is not None
    return seq.first_token_at - seq.arrived_at


def itls(seq: Sequence) -> list[float]:
    return [b - a for a, b in zip(seq.token_times, seq.token_times[1:], strict=False)]


def max_concurrent(sequences: list[Sequence]) -> int:
    """Most sequences running at one time, from their admission and finish times."""
    starts = [s.admitted_at for s in sequences if s.admitted_at is not None]
    return max(
        sum(1 for s in sequences if s.admitted_at is not None and s.admitted_at <= t < (s.finished_at or 0))
        for t in starts
    )


def test_running_batch_is_capped_and_the_rest_waits() -> None:
    engine = Engine(CONFIG)
    for _ in range(10):
        engine.add(prompt_tokens=10, max_tokens=5, now=0.0)
    engine.start_step(0.0)
    assert (engine.num_running, engine.num_waiting) == (4, 6)


def test_batch_cap_holds_over_a_whole_run() -> None:
    sequences = run_virtual(
        Engine(CONFIG), [Arrival(at=i * 0.001, prompt_tokens=20, max_tokens=30) for i in range(25)]
    )
    assert max_concurrent(sequences) == 4
    assert all(s.generated == 30 for s in sequences)


def test_queue_is_first_in_first_out() -> None:
    sequences = run_virtual(
        Engine(CONFIG), [Arrival(at=i * 0.0001, prompt_tokens=50, max_tokens=10) for i in range(12)]
    )
    admitted = [s.admitted_at or 0.0 for s in sequences]
    assert all(s.admitted_at is not None for s in sequences)
    assert admitted == sorted(admitted)
    assert admitted[0] < admitted[4] < admitted[8]  # three waves of four


def test_ttft_grows_with_prompt_length_by_the_prefill_cost() -> None:
    short = run_virtual(Engine(CONFIG), [Arrival(0.0, prompt_tokens=100, max_tokens=5)])[0]
    long = run_virtual(Engine(CONFIG), [Arrival(0.0, prompt_tokens=4000, max_tokens=5)])[0]
    assert ttft(long) - ttft(short) == pytest.approx(3900 * CONFIG.prefill_seconds_per_token)


def test_ttft_grows_with_the_queue_ahead() -> None:
    engine = Engine(EngineConfig(max_num_seqs=1, decode_base_seconds=0.01, decode_per_seq_seconds=0.0))
    sequences = run_virtual(engine, [Arrival(0.0, prompt_tokens=10, max_tokens=20) for _ in range(5)])
    ttfts = [ttft(s) for s in sequences]
    assert ttfts == sorted(ttfts)
    # each request waits for the whole generation of the ones before it
    assert ttfts[4] - ttfts[0] == pytest.approx(4 * 20 * 0.01, rel=0.05)


def test_inter_token_latency_grows_with_batch_size() -> None:
    config = EngineConfig(max_num_seqs=64, decode_base_seconds=0.01, decode_per_seq_seconds=0.002)
    alone = run_virtual(Engine(config), [Arrival(0.0, 10, 50)])[0]
    crowd = run_virtual(Engine(config), [Arrival(0.0, 10, 50) for _ in range(32)])[0]
    assert itls(alone) == pytest.approx([0.01 + 0.002] * 49)
    assert itls(crowd) == pytest.approx([0.01 + 0.002 * 32] * 49)


def test_long_prefill_of_a_newcomer_slows_the_running_batch() -> None:
    config = EngineConfig(max_num_seqs=8, prefill_seconds_per_token=0.001, decode_base_seconds=0.01)
    runner, newcomer = run_virtual(Engine(config), [Arrival(0.0, 10, 40), Arrival(0.1, 2000, 5)])
    assert max(itls(runner)) > 2000 * 0.001  # the step that prefilled the newcomer
    assert newcomer.first_token_at is not None


def test_same_seed_same_output_lengths_and_different_seed_differs() -> None:
    config = EngineConfig(output_tokens_dist="exponential", output_tokens_mean=40)

    def lengths(seed: int) -> list[int]:
        engine = Engine(config, seed=seed)
        return [engine.add(10, 500, 0.0).output_tokens for _ in range(50)]

    assert lengths(7) == lengths(7)
    assert lengths(7) != lengths(8)
    assert 20 < sum(lengths(7)) / 50 < 80


def test_drawn_lengths_are_capped_by_max_tokens_and_report_the_reason() -> None:
    engine = Engine(EngineConfig(output_tokens_dist="uniform", output_tokens_mean=50), seed=1)
    sequences = [engine.add(10, 30, 0.0) for _ in range(100)]
    assert all(1 <= s.output_tokens <= 30 for s in sequences)
    assert {s.finish_reason for s in sequences} == {"stop", "length"}
    assert engine.add(10, 30, 0.0, ignore_eos=True).output_tokens == 30


def test_prompt_tokens_are_counted_from_words_and_punctuation() -> None:
    assert count_text_tokens("Hello, world!") == 4
    assert count_text_tokens("  ") == 0
    assert count_text_tokens("a b c " * 100) == 300
    # each message costs its text plus 4 template tokens, plus 3 to prime the reply
    assert count_chat_tokens(["You are terse.", "Hi"]) == (4 + 4) + (1 + 4) + 3


def test_requests_longer_than_the_context_are_rejected() -> None:
    engine = Engine(EngineConfig(max_model_len=1000))
    with pytest.raises(RequestRejected, match="maximum context length is 1000"):
        engine.add(prompt_tokens=900, max_tokens=200, now=0.0)
    assert engine.num_waiting == 0


def test_kv_cache_limits_admission_without_overtaking() -> None:
    engine = Engine(EngineConfig(max_num_seqs=10, kv_cache_tokens=1000, max_model_len=1000))
    engine.add(600, 100, 0.0)
    engine.add(500, 100, 0.0)  # does not fit beside the first
    engine.add(10, 10, 0.0)  # would fit, but FCFS keeps it behind
    engine.start_step(0.0)
    assert (engine.num_running, engine.num_waiting) == (1, 2)
    assert engine.kv_cache_usage == pytest.approx(0.6)


def test_prefill_budget_splits_long_prompts_over_steps() -> None:
    engine = Engine(EngineConfig(max_num_batched_tokens=8192))
    engine.add(5000, 10, 0.0)
    engine.add(5000, 10, 0.0)
    engine.start_step(0.0)
    assert engine.num_running == 1


def test_abort_frees_the_slot_for_the_next_request() -> None:
    engine = Engine(EngineConfig(max_num_seqs=1))
    first = engine.add(10, 100, 0.0)
    second = engine.add(10, 100, 0.0)
    duration = engine.start_step(0.0)
    assert duration is not None
    engine.finish_step(duration)
    engine.abort(first, duration)
    engine.start_step(duration)
    assert engine.running == [second] and first.aborted


@settings(max_examples=40, deadline=None)
@given(
    cap=st.integers(1, 8),
    requests=st.lists(
        st.tuples(st.floats(0, 2), st.integers(1, 300), st.integers(1, 40)), min_size=1, max_size=30
    ),
)
def test_every_request_gets_its_tokens_within_the_cap(
    cap: int, requests: list[tuple[float, int, int]]
) -> None:
    engine = Engine(EngineConfig(max_num_seqs=cap))
    sequences = run_virtual(engine, [Arrival(at, p, m) for at, p, m in requests])
    assert [s.generated for s in sequences] == [s.output_tokens for s in sequences]
    assert max_concurrent(sequences) <= cap
    assert all(s.arrived_at <= (s.admitted_at or 0) < (s.first_token_at or 0) for s in sequences)
    assert not engine.busy and engine.kv_cache_usage == 0
