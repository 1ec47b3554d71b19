"""``ApiServer``: a ``kmock.KubernetesEmulator`` that behaves like a kube-apiserver for llmfleet's needs.

KMock gives the HTTP server, request parsing and logging (``apiserver.requests``), the reaction DSL
(``apiserver['get /api/v1/...'] << 500`` still works and wins over the emulation), and the error
rendering. This class replaces KMock's naive object handling with :mod:`tests.emulator.store`
(uid, resourceVersion, generation, status subresource, finalizers), :mod:`tests.emulator.fields`
(server-side apply), :mod:`tests.emulator.gc` (garbage collection), resume-able watches,
discovery for the kinds in :mod:`tests.emulator.resources`, a write log, and fault injection.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import json
import logging
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

from tests.emulator import verbs
from tests.emulator.discovery import Route, api_group, api_groups, api_resources, api_versions, parse_route
from tests.emulator.errors import ApiError, status_body
from tests.emulator.gc import collect_garbage
from tests.emulator.resources import ResourceRegistry, ResourceType
from tests.emulator.store import Store, Watcher

logger = logging.getLogger("llmfleet.emulator")


@dataclass
class Fault:
    method: str  # an HTTP method, or "*"
    path: str | re.Pattern[str]  # an exact path, a glob ("*" inside), or a regex (full match)
    status: int
    remaining: int
    message: str
    retry_after: int | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        if isinstance(self.path, re.Pattern):
            return self.path.fullmatch(path) is not None
        return fnmatch.fnmatchcase(path, self.path) if "*" in self.path else path == self.path


@dataclass(frozen=True)
class WriteRecord:
    verb: str  # create | update | patch | apply | delete | deletecollection
    resource: str  # plural, or plural/subresource
    namespace: str | None
    name: str | None
    changed: bool  # whether the stored state changed (a no-op apply is a write that changes nothing)
    dry_run: bool


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    registry: ResourceRegistry = attrs.field(factory=ResourceRegistry)
    crd_files: tuple[Path, ...] = ()  # CRDs installed at start (their schemas prune/default/validate)
    bookmark_interval: float = 5.0
    default_watch_timeout: float = 1800.0
    store: Store = attrs.field(init=False)
    write_log: list[WriteRecord] = attrs.field(factory=list, init=False)
    _faults: list[Fault] = attrs.field(factory=list, init=False)
    _faults_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        # Discovery and 404 fallbacks from the scaffold; not KubernetesEmulator's naive CRUD fallbacks.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self.store = Store(self.registry)
        self.store.on_deleted = self._schedule_gc
        crd_type = self.registry.by_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        for path in self.crd_files:
            for doc in yaml.safe_load_all(Path(path).read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.store.create(crd_type, None, doc, manager="kubectl")
        self.fallback[self._is_resource_request] << self._serve_resource

    # --- test-facing API -----------------------------------------------------------------

    def inject(
        self,
        method: str,
        path: str | re.Pattern[str],
        status: int = 500,
        *,
        count: int = 1,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Answer the next ``count`` requests matching method+path with ``status`` (409, 429, 500...)."""
        fault = Fault(method, path, status, count, message or f"injected fault: HTTP {status}", retry_after)
        with self._faults_lock:
            self._faults.append(fault)
        return fault

    def pending_faults(self) -> int:
        with self._faults_lock:
            return sum(f.remaining for f in self._faults)

    @property
    def writes(self) -> collections.Counter[tuple[str, str]]:
        """(verb, resource) -> number of write requests served (dry runs excluded)."""
        return collections.Counter((r.verb, r.resource) for r in list(self.write_log) if not r.dry_run)

    def count_writes(
        self, verb: str | None = None, resource: str | None = None, *, changed: bool | None = None
    ) -> int:
        return sum(
            1
            for r in list(self.write_log)
            if not r.dry_run
            and (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
            and (changed is None or r.changed == changed)
        )

    @property
    def requests(self) -> list[rendering.Request]:
        """Every request served so far, in order (KMock's request log: ``.method``, ``.url``, ``.params``, ``.data``)."""
        return list(self._requests)

    def reset_counters(self) -> None:
        self.write_log.clear()

    def object(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of a stored object (thread-safe), or None."""
        rt = self.registry.by_kind(api_version, kind)
        obj = self.store.find(rt, namespace, name)
        return json.loads(json.dumps(obj)) if obj is not None else None

    # --- plumbing ------------------------------------------------------------------------

    async def __aenter__(self) -> ApiServer:
        self._loop = asyncio.get_running_loop()
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close_watches()
        await super().__aexit__(*exc)

    def close_watches(self) -> None:
        """End every open watch stream, as a real API server does now and then; clients must resume."""
        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._close_watches()
        else:
            self._loop.call_soon_threadsafe(self._close_watches)

    def _close_watches(self) -> None:
        for watcher in list(self.store.watchers):
            watcher.queue.put_nowait(None)

    def _schedule_gc(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(collect_garbage, self.store)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # KMock's request parser fails on "/api/v1/namespaces" (namespaces as a collection); parse defensively.
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            try:
                request = await rendering.Request._parse(raw_request, id=len(self._requests))
            except ValueError:
                request = await self._parse_plain(raw_request)
            self._requests.append(request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                raise e.__cause__ or e from None
        except Exception as e:
            logger.exception("emulator failure on %s %s", raw_request.method, raw_request.path_qs)
            if self._errors:
                self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _parse_plain(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        return rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode(errors="replace"),
            data=data,
        )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        method, path = str(request.method.value), request.url.path
        with self._faults_lock:
            fault = next((f for f in self._faults if f.remaining > 0 and f.matches(method, path)), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            logger.debug("injecting HTTP %s into %s %s", fault.status, method, path)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            return aiohttp.web.json_response(
                status_body(fault.status, fault.message), status=fault.status, headers=headers
            )
        # Skip KubernetesEmulator._handle (KMock's own object tracking); dispatch to reactions & fallbacks.
        return await kmock.KubernetesScaffold._handle(self, request)

    def _is_resource_request(self, request: rendering.Request) -> bool:
        return parse_route(request.url.path) is not None

    # --- discovery -----------------------------------------------------------------------

    async def _serve_api(self, request: rendering.Request) -> rendering.Payload:
        return api_versions()

    async def _serve_apis(self, request: rendering.Request) -> rendering.Payload:
        return api_groups(self.registry)

    async def _serve_group(self, request: rendering.Request) -> rendering.Payload:
        doc = api_group(self.registry, request.url.path.strip("/").split("/")[1])
        return (
            doc if doc is not None else rendering.Response(status=404, payload=status_body(404, "not found"))
        )

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        parts = request.url.path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        doc = api_resources(self.registry, group, version)
        return (
            doc if doc is not None else rendering.Response(status=404, payload=status_body(404, "not found"))
        )

    async def _serve_root(self, request: rendering.Request) -> rendering.Payload:
        paths = {"/api", "/api/v1", "/apis", "/version"}
        for group, versions in self.registry.groups().items():
            if group:
                paths |= {f"/apis/{group}"} | {f"/apis/{group}/{v}" for v in versions}
        return {"paths": sorted(paths)}

    # --- resources -----------------------------------------------------------------------

    async def _serve_resource(self, request: rendering.Request) -> rendering.Payload:
        route = parse_route(request.url.path)
        assert route is not None
        try:
            call = self._call(request, route)
            method = str(request.method.value).upper()
            if method == "GET" and request.params.get("watch") in ("true", "1"):
                return self._watch(request, call)
            outcome = self._dispatch(method, call)
        except ApiError as e:
            logger.debug("%s %s -> %s %s", request.method, request.url.path_qs, e.status, e.message)
            return rendering.Response(status=e.status, payload=e.body())
        if outcome.verb is not None:
            resource = f"{route.plural}/{route.subresource}" if route.subresource else route.plural
            self.write_log.append(
                WriteRecord(
                    outcome.verb, resource, route.namespace, route.name, outcome.changed, call.dry_run
                )
            )
        return rendering.Response(status=outcome.status, payload=outcome.payload)

    def _call(self, request: rendering.Request, route: Route) -> verbs.Call:
        rt = self.registry.by_path(route.group, route.version, route.plural)
        if rt is None or (route.namespace is not None and not rt.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        if route.subresource is not None and route.subresource not in rt.subresources:
            raise ApiError(404, f"the server could not find the requested resource ({route.subresource})")
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        body = request.data
        if body is None and request.text.strip():
            try:
                body = yaml.safe_load(request.text)
            except yaml.YAMLError as e:
                raise ApiError(400, f"the request body cannot be decoded: {e}") from e
        agent = request.headers.get("User-Agent", "unknown").split("/")[0]
        manager = request.params.get("fieldManager") or agent or "unknown"
        return verbs.Call(rt, route, dict(request.params), ctype, manager, body)

    def _dispatch(self, method: str, call: verbs.Call) -> verbs.Outcome:
        named = call.route.name is not None
        if method == "GET":
            return verbs.get(self.store, call) if named else verbs.list_(self.store, call)
        if method in ("POST", "PUT", "PATCH") and (named or method == "POST"):
            # A cluster's garbage collector runs continuously: an object written with an owner
            # that is already gone (a reconcile in flight at deletion time) is collected too.
            self._schedule_gc()
        if method == "POST":
            return verbs.create(self.store, call)
        if method == "PUT" and named:
            return verbs.update(self.store, call)
        if method == "PATCH" and named:
            return verbs.patch(self.store, call)
        if method == "DELETE":
            return verbs.delete(self.store, call) if named else verbs.delete_collection(self.store, call)
        raise ApiError(405, f"{method} is not supported on {call.route}")

    # --- watching ------------------------------------------------------------------------

    def _watch(self, request: rendering.Request, call: verbs.Call) -> rendering.Payload:
        params = call.params
        matches = verbs.selector(params)
        if call.route.name is not None:  # watching one object
            name, by_selector = call.route.name, matches
            matches = lambda obj: obj["metadata"]["name"] == name and by_selector(obj)  # noqa: E731
        initial = params.get("sendInitialEvents") == "true"
        rv_text = params.get("resourceVersion") or ""
        try:
            since = None if initial or rv_text in ("", "0") else int(rv_text)
            timeout = float(params.get("timeoutSeconds") or self.default_watch_timeout)
        except ValueError as e:
            raise ApiError(400, f"invalid watch parameters: {e}") from e
        watcher = Watcher(call.rt.key, call.route.namespace, matches)
        try:
            backlog, rv = self.store.subscribe(watcher, since)
        except ApiError as e:  # 410 Gone is delivered in-stream, as the real server does
            error = {"type": "ERROR", "object": e.body()}
            return rendering.Response(status=200, payload=self._one_shot(error))
        bookmarks = params.get("allowWatchBookmarks") == "true"
        stream = self._stream(
            request, call.rt, watcher, backlog, rv, initial and bookmarks, bookmarks, timeout
        )
        return rendering.Response(status=200, payload=stream, headers={"Content-Type": "application/json"})

    async def _one_shot(self, event: dict[str, Any]) -> AsyncIterator[Any]:
        yield b""
        yield event

    def _bookmark(self, rt: ResourceType, rv: int, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta},
        }

    async def _stream(
        self,
        request: rendering.Request,
        rt: ResourceType,
        watcher: Watcher,
        backlog: list[tuple[str, dict[str, Any]]],
        rv: int,
        initial_end: bool,
        bookmarks: bool,
        timeout: float,
    ) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        try:
            yield b""  # send the headers now: the client waits for them before reading events
            for event_type, obj in backlog:
                yield {"type": event_type, "object": obj}
            if initial_end:
                yield self._bookmark(rt, rv, initial_end=True)
            while loop.time() < deadline:
                transport = request._raw_request.transport if request._raw_request is not None else None
                if transport is None or transport.is_closing():
                    break  # the client went away
                try:
                    event = await asyncio.wait_for(
                        watcher.queue.get(), min(1.0, self.bookmark_interval, deadline - loop.time())
                    )
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:  # the queue is empty: all events are out
                        next_bookmark = loop.time() + self.bookmark_interval
                        yield self._bookmark(rt, self.store.rv)
                    continue
                if event is None:
                    break  # the server is stopping
                seen = watcher.translate(event)
                if seen is not None:
                    yield {"type": seen[0], "object": seen[1]}
        finally:
            self.store.unsubscribe(watcher)
