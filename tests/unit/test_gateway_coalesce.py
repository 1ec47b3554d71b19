"""Coalescing: one upstream call per key in flight, every subscriber gets every byte."""

from __future__ import annotations

import asyncio

import pytest

from llmfleet.gateway.coalesce import Coalescer, Flight, FlightAborted, Head, Subscription

HEAD = Head(200, (("Content-Type", "text/event-stream"),))


async def collect(subscription: Subscription) -> bytes:
    try:
        await subscription.head()
        return b"".join([chunk async for chunk in subscription.chunks()])
    finally:
        subscription.close()


class Upstream:
    """A fetch function driven step by step by the test."""

    def __init__(self, chunks: list[bytes], error_after: int | None = None) -> None:
        self.chunks = chunks
        self.error_after = error_after
        self.calls = 0
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, flight: Flight) -> None:
        self.calls += 1
        flight.start(HEAD)
        try:
            for index, chunk in enumerate(self.chunks):
                if index == 1:
                    await self.release.wait()
                if self.error_after is not None and index == self.error_after:
                    raise ConnectionError("upstream went away")
                flight.publish(chunk)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        flight.finish()


async def test_concurrent_subscribers_share_one_call_and_get_every_byte() -> None:
    coalescer = Coalescer(record_limit=1000)
    upstream = Upstream([b"a", b"b", b"c"])
    first = coalescer.start("k", upstream)
    await asyncio.sleep(0)  # the first chunk is out before the others join
    followers = [coalescer.join("k") for _ in range(5)]
    assert all(f is not None for f in followers)
    tasks = [asyncio.create_task(collect(s)) for s in [first, *followers] if s is not None]
    upstream.release.set()
    assert await asyncio.gather(*tasks) == [b"abc"] * 6
    assert upstream.calls == 1
    assert first.flight.recording() == b"abc"


async def test_flight_is_forgotten_when_fetch_returns() -> None:
    coalescer = Coalescer(record_limit=1000)
    upstream = Upstream([b"x"])
    upstream.release.set()
    subscription = coalescer.start("k", upstream)
    assert await collect(subscription) == b"x"
    assert subscription.flight.task is not None
    await subscription.flight.task
    assert len(coalescer) == 0
    assert coalescer.join("k") is None


async def test_finished_flight_replays_to_late_joiners_until_forgotten() -> None:
    flight = Flight(record_limit=100)
    flight.start(HEAD)
    flight.publish(b"all")
    flight.finish()
    late = flight.subscribe()
    assert late is not None
    assert await collect(late) == b"all"


async def test_oversize_response_stops_recording_and_joining() -> None:
    coalescer = Coalescer(record_limit=3)
    upstream = Upstream([b"ab", b"cd", b"ef"])
    first = coalescer.start("k", upstream)
    await asyncio.sleep(0)
    early = coalescer.join("k")
    assert early is not None
    task = asyncio.gather(collect(first), collect(early))
    upstream.release.set()
    await asyncio.sleep(0)
    assert coalescer.join("k") is None  # past the limit: nobody else may join
    assert list(await task) == [b"abcdef", b"abcdef"]  # those already in get everything
    assert first.flight.recording() is None


async def test_oversize_flight_without_subscribers_is_cancelled() -> None:
    coalescer = Coalescer(record_limit=1)
    upstream = Upstream([b"ab", b"cd"])
    subscription = coalescer.start("k", upstream)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    subscription.close()
    flight = subscription.flight
    assert flight.task is not None
    await asyncio.wait([flight.task])
    assert upstream.cancelled
    assert flight.finished and flight.recording() is None


async def test_upstream_error_after_head_aborts_every_subscriber() -> None:
    coalescer = Coalescer(record_limit=1000)
    upstream = Upstream([b"a", b"b", b"c"], error_after=2)
    first = coalescer.start("k", upstream)
    await asyncio.sleep(0)
    follower = coalescer.join("k")
    assert follower is not None
    upstream.release.set()
    results = await asyncio.gather(collect(first), collect(follower), return_exceptions=True)
    assert all(isinstance(r, FlightAborted) for r in results)
    assert first.flight.recording() is None
    assert coalescer.join("k") is None


async def test_failure_before_head_is_reported_to_subscribers() -> None:
    async def unreachable(flight: Flight) -> None:
        raise ConnectionRefusedError("no upstream")

    coalescer = Coalescer(record_limit=1000)
    subscription = coalescer.start("k", unreachable)
    with pytest.raises(FlightAborted):
        await subscription.head()
