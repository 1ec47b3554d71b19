"""Client threads that put load on servers until a test stops them (bounded by their own loops)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Self


class ClientThreads:
    """Daemon threads started on ``with`` entry; on exit ``stop`` is set and each is joined.

    Subclasses add one thread per client with :meth:`spawn`; each client loop checks ``stop``.
    """

    def __init__(self, join_timeout: float) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.join_timeout = join_timeout

    def spawn(self, target: Callable[..., None], *args: Any) -> None:
        self.threads.append(threading.Thread(target=target, args=args, daemon=True))

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=self.join_timeout)
