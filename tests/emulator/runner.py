"""Run the emulator on loopback in a background thread (so sync clients and kopf threads can use it)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kmock
import yaml

from tests.emulator.apiserver import ApiServer

CONTEXT = "llmfleet-emulator"


class EmulatorThread:
    """Start with :meth:`start`, stop with :meth:`stop`; ``apiserver`` and ``url`` are valid in between."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.apiserver: ApiServer | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> ApiServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the API emulator did not start")
        if self._error is not None or self.apiserver is None:
            raise RuntimeError("the API emulator failed to start") from self._error
        return self.apiserver

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the API emulator did not stop")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            ApiServer(**self._options) as apiserver,
            kmock.Server(apiserver, host="127.0.0.1") as server,
        ):
            self.apiserver = apiserver
            self.url = f"http://{server.host}:{server.port}"
            self._ready.set()
            await self._stop.wait()
            apiserver.close_watches()  # before the HTTP server waits for its open requests

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [
                {
                    "name": CONTEXT,
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": CONTEXT,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config))
        return path
