"""``Kube``: a thin synchronous client for tests, on the ``kubernetes`` package's ApiClient.

It speaks plain dicts and maps (apiVersion, kind) to URLs with the static resource table, so it
needs no discovery and works the same against the emulator and a real cluster.
Errors are ``kubernetes.client.ApiException`` (``.status`` 404/409/422...).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import kubernetes.client

from tests.emulator.resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


class Kube:
    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        registry: ResourceRegistry | None = None,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.registry = registry or ResourceRegistry()

    # --- low level -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = [
            (k, str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in (query or {}).items()
            if v is not None
        ]
        method, url, headers, body, post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(method, url, headers, body, post)
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            kubernetes.client.ApiException.from_response(http_resp=response, body=data.decode(), data=None)
        return json.loads(data) if data else None

    def resource(self, api_version: str, kind: str) -> ResourceType:
        """The URL data of a kind: from the static table, else from discovery (e.g. a CRD made in a test)."""
        try:
            return self.registry.by_kind(api_version, kind)
        except LookupError:
            group, _, version = api_version.rpartition("/")
            path = f"/apis/{api_version}" if group else f"/api/{version}"
            docs = self.request("GET", path)["resources"]
            for doc in docs:
                if doc["kind"] == kind and "/" not in doc["name"]:
                    prefix = doc["name"] + "/"
                    subresources = frozenset(
                        d["name"][len(prefix) :] for d in docs if d["name"].startswith(prefix)
                    )
                    found = ResourceType(
                        group,
                        version,
                        doc["name"],
                        kind,
                        namespaced=doc["namespaced"],
                        subresources=subresources,
                        builtin=False,
                    )
                    self.registry.add(found)
                    return found
            raise

    def _url(
        self, rt: ResourceType, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        return rt.url(namespace if rt.namespaced else None, name, subresource)

    def _ns(self, rt: ResourceType, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if rt.namespaced else None

    # --- verbs ---------------------------------------------------------------------------

    def create(self, obj: Obj, *, namespace: str | None = None) -> Obj:
        rt = self.resource(obj["apiVersion"], obj["kind"])
        ns = self._ns(rt, namespace or obj.get("metadata", {}).get("namespace"))
        result: Obj = self.request("POST", self._url(rt, ns), obj)
        return result

    def get(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> Obj:
        rt = self.resource(api_version, kind)
        result: Obj = self.request("GET", self._url(rt, self._ns(rt, namespace), name))
        return result

    def get_or_none(
        self, api_version: str, kind: str, name: str, *, namespace: str | None = None
    ) -> Obj | None:
        try:
            return self.get(api_version, kind, name, namespace=namespace)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        rt = self.resource(api_version, kind)
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        result = self.request("GET", self._url(rt, self._ns(rt, namespace)), query=query)
        items: list[Obj] = result["items"]
        return items

    def replace(self, obj: Obj, *, subresource: str | None = None) -> Obj:
        rt = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        url = self._url(rt, self._ns(rt, meta.get("namespace")), meta["name"], subresource)
        result: Obj = self.request("PUT", url, obj)
        return result

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Any,
        *,
        type: str = "merge",
        subresource: str | None = None,
        namespace: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        rt = self.resource(api_version, kind)
        url = self._url(rt, self._ns(rt, namespace), name, subresource)
        result: Obj = self.request(
            "PATCH", url, patch, content_type=PATCH_TYPES[type], query={"fieldManager": field_manager}
        )
        return result

    def patch_status(
        self, api_version: str, kind: str, name: str, status: Obj, *, namespace: str | None = None
    ) -> Obj:
        """Merge-patch ``status`` (what a controller would write, e.g. a Deployment's ready replicas)."""
        return self.patch(
            api_version, kind, name, {"status": status}, subresource="status", namespace=namespace
        )

    def apply(
        self,
        obj: Obj,
        *,
        field_manager: str = "llmfleet-tests",
        force: bool = True,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        rt = self.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        url = self._url(rt, self._ns(rt, meta.get("namespace")), meta["name"], subresource)
        query = {"fieldManager": field_manager, "force": force, "dryRun": "All" if dry_run else None}
        result: Obj = self.request(
            "PATCH", url, obj, content_type="application/apply-patch+yaml", query=query
        )
        return result

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        *,
        namespace: str | None = None,
        propagation: str | None = None,
        missing_ok: bool = True,
    ) -> Any:
        rt = self.resource(api_version, kind)
        body = {"propagationPolicy": propagation} if propagation else None
        try:
            return self.request("DELETE", self._url(rt, self._ns(rt, namespace), name), body)
        except kubernetes.client.ApiException as e:
            if e.status == 404 and missing_ok:
                return None
            raise

    # --- waiting -------------------------------------------------------------------------

    def wait_for(
        self,
        api_version: str,
        kind: str,
        name: str,
        predicate: Callable[[Obj], bool],
        *,
        namespace: str | None = None,
        timeout: float = 15.0,
        interval: float = 0.05,
    ) -> Obj:
        """Poll until the object exists and ``predicate(obj)`` holds; returns it."""
        deadline = time.monotonic() + timeout
        last: Obj | None = None
        while True:
            last = self.get_or_none(api_version, kind, name, namespace=namespace)
            if last is not None and predicate(last):
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} {name!r} never satisfied the condition; last state: {last!r}")
            time.sleep(interval)

    def wait_gone(
        self,
        api_version: str,
        kind: str,
        name: str,
        *,
        namespace: str | None = None,
        timeout: float = 15.0,
        interval: float = 0.05,
    ) -> None:
        deadline = time.monotonic() + timeout
        while self.get_or_none(api_version, kind, name, namespace=namespace) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} {name!r} still exists after {timeout}s")
            time.sleep(interval)
