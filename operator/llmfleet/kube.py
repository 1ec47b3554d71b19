"""The operator's only door to the API server: apply, list, delete, status, Events, Secrets.

Everything that talks HTTP lives here, so the decision code (``reconcile.plan``, ``status``)
stays pure and the error policy is written once:

* 409 Conflict -> :class:`ApiRetry` (a ``kopf.TemporaryError``) after 1-2 s: someone else wrote
  first; the next level-based pass reads the new state and converges.
* 429 and 5xx, timeouts, refused connections -> :class:`ApiRetry` with a longer delay
  (``Retry-After`` when the server sends one); the handler layer grows it with the retry count.
* other 4xx on a write (400, 403, 422...) -> ``kopf.PermanentError`` naming the object and the
  server's message: retrying an invalid manifest or a missing RBAC rule cannot succeed.

It uses the ``kubernetes`` package's ``ApiClient`` for auth and TLS but builds URLs from a
small static table instead of the generated typed APIs: the manifests are plain dicts from the
renderers, and no discovery round trip is needed. Every call blocks: callers run in kopf's
handler threads or under ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes.client
import urllib3

from llmfleet import FIELD_MANAGER, GROUP, PLURAL, VERSION

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SERVICE_LABEL = f"{GROUP}/service"
ENDPOINTSLICE_SERVICE_LABEL = "kubernetes.io/service-name"

CONFLICT_DELAY = 1.5
THROTTLE_DELAY = 5.0
SERVER_ERROR_DELAY = 2.0
MAX_DELAY = 120.0
# (connect, read) seconds for one request: a hung API server must not hold a handler thread.
DEFAULT_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        group_version = self.api_version
        base = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


LLMSERVICE = Resource(f"{GROUP}/{VERSION}", "LLMService", PLURAL)
EVENT = Resource("v1", "Event", "events")
ENDPOINT_SLICE = Resource("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")

# Every kind the renderers (and the cache Secret) produce. The reconcile lists each of them by
# label to find children to update or delete, so a kind missing here would never be cleaned up.
CHILD_RESOURCES: tuple[Resource, ...] = (
    Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Resource("v1", "Service", "services"),
    Resource("v1", "ConfigMap", "configmaps"),
    Resource("v1", "Secret", "secrets"),
    Resource("apps/v1", "Deployment", "deployments"),
    Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
)
_BY_KIND = {(r.api_version, r.kind): r for r in (*CHILD_RESOURCES, LLMSERVICE, EVENT, ENDPOINT_SLICE)}


def resource_for(api_version: str, kind: str) -> Resource:
    try:
        return _BY_KIND[api_version, kind]
    except KeyError:
        raise kopf.PermanentError(f"llmfleet does not manage {kind} ({api_version})") from None


class ApiRetry(kopf.TemporaryError):
    """A transient API failure; ``kind`` is conflict | throttled | server | timeout (for metrics)."""

    def __init__(self, message: str, *, kind: str, delay: float) -> None:
        super().__init__(message, delay=delay)
        self.kind = kind


class ApiRejected(kopf.PermanentError):
    """The API server refused a request for good (validation, RBAC); ``status`` is the HTTP code."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def backoff(retry: int, base: float) -> float:
    """Delay before retry number ``retry`` (0-based): doubling from ``base``, capped."""
    return float(min(MAX_DELAY, base * 2 ** max(0, retry)))


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or data)[:2000]
    return str(data)[:500]


def map_error(status: int, body: bytes, what: str, retry_after: str | None = None) -> ApiRetry | ApiRejected:
    """The kopf error for a failed request (returned, not raised, so callers can ``raise ... from``)."""
    message = _server_message(body)
    if status == 409:
        return ApiRetry(f"{what}: conflict, retrying: {message}", kind="conflict", delay=CONFLICT_DELAY)
    if status == 429:
        try:
            delay = float(retry_after) if retry_after else THROTTLE_DELAY
        except ValueError:
            delay = THROTTLE_DELAY
        return ApiRetry(f"{what}: throttled by the API server: {message}", kind="throttled", delay=delay)
    if status >= 500 or status in (0, 408):
        return ApiRetry(
            f"{what}: API server error HTTP {status}: {message}", kind="server", delay=SERVER_ERROR_DELAY
        )
    hint = ""
    if status == 403:
        hint = " (grant the operator's ServiceAccount this verb in its Role/ClusterRole)"
    return ApiRejected(
        f"{what} was rejected by the API server (HTTP {status}){hint}: {message}", status=status
    )


class Kube:
    """Plain-dict access to the resources the operator reads and writes."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        self.timeout = timeout

    # --- transport -----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """(status, decoded body). Statuses in ``allow`` are returned; other failures are mapped."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = list((query or {}).items())
        try:
            method, url, headers, payload, post = self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(
                method, url, headers, payload, post, _request_timeout=self.timeout
            )
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ApiRetry(
                f"{what}: API server unreachable: {e}", kind="timeout", delay=SERVER_ERROR_DELAY
            ) from e
        status = int(response.status)
        if 200 <= status < 300 or status in allow:
            return status, (json.loads(data) if data else None)
        retry_after = response.getheader("Retry-After")  # type: ignore[no-untyped-call]
        raise map_error(status, data, what, retry_after)

    # --- reads ---------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> Obj | None:
        res = resource_for(api_version, kind)
        status, data = self._request("GET", res.path(namespace, name), f"get {kind} {name}", allow=(404,))
        return None if status == 404 else dict(data)

    def list_objects(self, res: Resource, namespace: str | None, label_selector: str) -> list[Obj]:
        _, data = self._request(
            "GET",
            res.path(namespace),
            f"list {res.plural}",
            query={"labelSelector": label_selector},
        )
        items: list[Obj] = []
        for item in data.get("items", []):
            # List items carry no apiVersion/kind; children are matched by them.
            items.append({"apiVersion": res.api_version, "kind": res.kind, **item})
        return items

    def list_children(self, namespace: str, service: str) -> list[Obj]:
        """Every object of every child kind labelled as managed by llmfleet for ``service``."""
        selector = f"{MANAGED_BY_LABEL}={FIELD_MANAGER},{SERVICE_LABEL}={service}"
        children: list[Obj] = []
        for res in CHILD_RESOURCES:
            children += self.list_objects(res, namespace, selector)
        return children

    def endpoint_slices(self, namespace: str, service_name: str) -> list[Obj]:
        return self.list_objects(ENDPOINT_SLICE, namespace, f"{ENDPOINTSLICE_SERVICE_LABEL}={service_name}")

    # --- writes --------------------------------------------------------------------------

    def apply(self, manifest: Obj) -> Obj:
        """Server-side apply with our field manager.

        ``force`` is safe because a manifest only contains fields llmfleet owns (for example the
        model Deployment leaves out ``replicas`` when the HPA sets it): forcing takes back what a
        hand edit changed in those fields and nothing else.
        """
        meta = manifest["metadata"]
        res = resource_for(manifest["apiVersion"], manifest["kind"])
        _, data = self._request(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            f"apply {manifest['kind']} {meta['name']}",
            manifest,
            query={"fieldManager": self.field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return dict(data)

    def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None, uid: str | None = None
    ) -> None:
        """Delete (background propagation); gone already is fine. ``uid`` guards against a re-created object."""
        res = resource_for(api_version, kind)
        options: Obj = {"propagationPolicy": "Background"}
        if uid:
            options["preconditions"] = {"uid": uid}
        self._request("DELETE", res.path(namespace, name), f"delete {kind} {name}", options, allow=(404,))

    def patch_status(self, namespace: str, name: str, status: Obj) -> Obj | None:
        """Merge-patch the LLMService's /status. Lists (conditions) are replaced whole: send them all."""
        code, data = self._request(
            "PATCH",
            LLMSERVICE.path(namespace, name, "status"),
            f"update status of LLMService {name}",
            {"status": status},
            content_type="application/merge-patch+json",
            allow=(404,),
        )
        return None if code == 404 else dict(data)

    def create_secret_once(self, manifest: Obj, key: str) -> bool:
        """Create a Secret with a random value under ``key`` unless it exists; never rotates it.

        Returns whether it was created. An existing Secret (409 AlreadyExists) is left untouched.
        """
        meta = manifest["metadata"]
        body = {**manifest, "type": "Opaque", "stringData": {key: secrets.token_urlsafe(32)}}
        res = resource_for("v1", "Secret")
        code, _ = self._request(
            "POST",
            res.path(meta["namespace"]),
            f"create Secret {meta['name']}",
            body,
            query={"fieldManager": self.field_manager},
            allow=(409,),
        )
        return code != 409

    def post_event(self, owner: Obj, event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event on ``owner`` (shown by ``kubectl describe llms``). Best effort."""
        meta = owner.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": owner.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": owner.get("kind", "LLMService"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._request("POST", EVENT.path(namespace), f"post Event {reason}", event)
        except (kopf.TemporaryError, kopf.PermanentError) as e:
            logger.warning("could not post Event %s on %s: %s", reason, meta.get("name"), e)


def default_api_client() -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else the current kubeconfig context."""
    import kubernetes.config

    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(config)
