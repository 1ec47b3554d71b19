"""Request coalescing: identical concurrent cacheable requests share one upstream call.

The upstream call of a cache miss runs in its own task (a *flight*), not in the handler of the
request that started it, so a client that hangs up does not cut off the others. Every waiting
request, the first one included, subscribes to the flight and receives the response as it
arrives: coalesced followers stream live, they do not wait for the end.

A flight records what it received, both for the cache and so that a request joining late can
be replayed the beginning. The recording is capped at the cache's size limit; past it the flight
stops recording, stops accepting new subscribers (they make their own upstream call), and is
cancelled once its last subscriber leaves, since nobody, not even the cache, wants the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    """Status line and headers of the shared response."""

    status: int
    headers: tuple[tuple[str, str], ...]


class FlightAborted(Exception):
    """The shared upstream response broke off after its head was sent."""


class Flight:
    """One upstream call whose response is fanned out to every subscriber."""

    def __init__(self, record_limit: int) -> None:
        self.record_limit = record_limit
        self.head: Head | None = None
        self.error: BaseException | None = None
        self.finished = False
        self._head_ready = asyncio.Event()
        self._record: list[bytes] | None = []
        self._recorded_bytes = 0
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self.task: asyncio.Task[None] | None = None

    # -- producer side (the fetch coroutine) --
    def start(self, head: Head) -> None:
        self.head = head
        self._head_ready.set()

    def publish(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._record is not None:
            self._recorded_bytes += len(chunk)
            if self._recorded_bytes > self.record_limit:
                self._record = None  # oversize: no cache entry, no late joiners
            else:
                self._record.append(chunk)
        for queue in self._subscribers:
            queue.put_nowait(chunk)

    def finish(self, error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        self.error = error
        if error is not None:
            self._record = None
        self._head_ready.set()
        for queue in self._subscribers:
            queue.put_nowait(None)

    def recording(self) -> bytes | None:
        """The whole response body, if it was received completely within the size limit."""
        if not self.finished or self._record is None:
            return None
        return b"".join(self._record)

    # -- consumer side (request handlers) --
    @property
    def joinable(self) -> bool:
        return self._record is not None

    def subscribe(self) -> Subscription | None:
        """A live view of the response from its first byte; ``None`` when it can no longer be joined."""
        if self._record is None:
            return None
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for chunk in self._record:
            queue.put_nowait(chunk)
        if self.finished:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        return Subscription(self, queue)

    def _unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(queue)
        if not self._subscribers and self._record is None and self.task is not None and not self.finished:
            self.task.cancel()


class Subscription:
    """One request's view of a flight: await ``head()``, then iterate the body chunks."""

    def __init__(self, flight: Flight, queue: asyncio.Queue[bytes | None]) -> None:
        self.flight = flight
        self._queue = queue

    async def head(self) -> Head:
        await self.flight._head_ready.wait()
        if self.flight.head is None:
            raise FlightAborted(f"upstream call failed before its response head: {self.flight.error!r}")
        return self.flight.head

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                if self.flight.error is not None:
                    raise FlightAborted(f"upstream response broke off: {self.flight.error!r}")
                return
            yield chunk

    def close(self) -> None:
        self.flight._unsubscribe(self._queue)


FetchFn = Callable[[Flight], Awaitable[None]]


class Coalescer:
    """The flights in progress, by cache key."""

    def __init__(self, record_limit: int) -> None:
        self.record_limit = record_limit
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: str) -> Subscription | None:
        """Subscribe to the flight already in progress for ``key``, if there is a joinable one."""
        flight = self._flights.get(key)
        return flight.subscribe() if flight is not None else None

    def start(self, key: str, fetch: FetchFn) -> Subscription:
        """Start a flight for ``key`` running ``fetch`` and subscribe to it.

        ``fetch`` must call ``flight.start``, ``flight.publish`` and ``flight.finish``; whatever
        it raises finishes the flight with that error. The flight is forgotten when ``fetch``
        returns, so work ``fetch`` does after ``finish`` (storing the recording) still lets late
        identical requests join the finished flight instead of calling upstream again.
        """
        flight = Flight(self.record_limit)
        subscription = flight.subscribe()
        assert subscription is not None  # a new flight is always joinable
        self._flights[key] = flight
        flight.task = asyncio.create_task(self._run(key, flight, fetch), name=f"flight:{key[-12:]}")
        return subscription

    async def _run(self, key: str, flight: Flight, fetch: FetchFn) -> None:
        try:
            await fetch(flight)
        except asyncio.CancelledError as exc:
            flight.finish(exc)
        except Exception as exc:
            log.exception("coalesced upstream call failed")
            flight.finish(exc)
        finally:
            flight.finish()
            if self._flights.get(key) is flight:
                del self._flights[key]
