"""kopf registrations: every trigger funnels into the one reconcile, nothing else lives here.

* LLMService create / resume / spec update and a drift timer call ``reconcile`` directly
  (sync handlers: kopf runs them in its thread pool, and the ``kubernetes`` client blocks).
* Children are watched so status follows them within seconds: events of our Deployments (by
  label) and of the model Service's EndpointSlices (by ``kubernetes.io/service-name``) *poke*
  the owner. A poke is in-memory, not a write: :class:`Poker` debounces a burst of child events
  into one pass that reads the LLMService and reconciles it in a worker thread. A lost poke
  costs nothing but latency: the drift timer runs the same pass.
* Passes for one object never overlap (a lock per object), whichever trigger started them.

Registrations are built per operator instance (:func:`build_registry`) so the timer interval and
the settings come from ``llmfleet run`` flags and tests can run fresh operators side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from llmfleet import FIELD_MANAGER, GROUP, PLURAL, VERSION, opmetrics
from llmfleet.kube import (
    ENDPOINTSLICE_SERVICE_LABEL,
    LLMSERVICE,
    MANAGED_BY_LABEL,
    SERVICE_LABEL,
    ApiRejected,
    ApiRetry,
    Kube,
    backoff,
    default_api_client,
)
from llmfleet.reconcile import InvalidSpecError, Predictor, no_predictor, reconcile

logger = logging.getLogger(__name__)

PREFIX = GROUP  # finalizer and annotation prefix: llmfleet.io/...
MODEL_SUFFIX = "-model"
PREDICTIVE_TICK = 15.0  # seconds; the smallest predictive.intervalSeconds the API allows


@dataclass
class OperatorConfig:
    drift_interval: float = 60.0  # seconds between drift passes per LLMService
    debounce: float = 0.3  # seconds a child-event poke waits for the rest of its burst
    images: Mapping[str, str] = field(default_factory=dict)
    predictor: Predictor = no_predictor
    kube_factory: Callable[[], Kube] = lambda: Kube(default_api_client())
    max_workers: int = 8


class Operator:
    """Per-process state behind the handlers: the API client, per-object locks, the poker."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self._kube: Kube | None = None
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.poker = Poker(self, config.debounce)

    @property
    def kube(self) -> Kube:
        with self._guard:
            if self._kube is None:
                self._kube = self.config.kube_factory()
            return self._kube

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)

    def run(self, namespace: str, name: str, trigger: str, retry: int = 0) -> None:
        """One pass with metrics and the error policy; raises kopf errors for kopf to retry.

        The object is read again under the lock: a body captured before the previous pass wrote
        its status would make this pass judge transitions against stale conditions.
        """
        with self._lock(namespace, name), opmetrics.track(trigger):
            try:
                obj = self.kube.get(LLMSERVICE.api_version, LLMSERVICE.kind, name, namespace)
                if obj is None:
                    opmetrics.finished(trigger, "gone")
                    return
                outcome = reconcile(
                    self.kube, obj, predictor=self.config.predictor, images=self.config.images
                )
            except ApiRetry as e:
                opmetrics.finished(trigger, "retry", e.kind)
                delay = e.delay if e.kind == "conflict" else backoff(retry, e.delay or 1.0)
                raise kopf.TemporaryError(str(e), delay=delay) from e
            except InvalidSpecError:
                opmetrics.finished(trigger, "invalid", "invalid")
                raise
            except ApiRejected:
                opmetrics.finished(trigger, "error", "rejected")
                raise
            except Exception:
                opmetrics.finished(trigger, "error", "unexpected")
                raise
        opmetrics.finished(trigger, "ok")
        for action, count in (("apply", outcome.applied), ("delete", outcome.deleted)):
            if count:
                opmetrics.WRITES.labels(action).inc(count)
        if outcome.status_written:
            opmetrics.WRITES.labels("status").inc()


class Poker:
    """Coalesces child events into at most one pending pass per LLMService (asyncio side)."""

    def __init__(self, operator: Operator, debounce: float) -> None:
        self.operator = operator
        self.debounce = debounce
        self._pending: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self, namespace: str, name: str, retry: int = 0, delay: float | None = None) -> None:
        key = (namespace, name)
        if key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._pass(key, retry, delay or self.debounce))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pass(self, key: tuple[str, str], retry: int, delay: float) -> None:
        await asyncio.sleep(delay)
        self._pending.discard(key)  # pokes from now on schedule another pass
        try:
            await asyncio.to_thread(self.operator.run, *key, "child", retry)
        except kopf.TemporaryError as e:
            if retry < 8:  # beyond that, the drift timer takes over
                self.poke(*key, retry=retry + 1, delay=e.delay or 1.0)
        except (kopf.PermanentError, ApiRejected) as e:
            logger.warning("reconcile of %s/%s after a child event failed: %s", *key, e)
        except Exception:
            logger.exception("reconcile of %s/%s after a child event failed", *key)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings, once per operator process."""
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # Handler progress and the last-handled spec go to llmfleet.io/* annotations, never into
    # .status: status belongs to the reconcile, which writes it whole and only when it changed.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Ask the API server to end each watch after ~5 minutes and give up client-side a little
    # later: load balancers and NATs drop idle long-lived connections silently, and a fresh watch
    # (resumed from the last resourceVersion) is cheaper than missing events until the drift timer.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # One request must not hang a handler thread forever.
    settings.networking.request_timeout = 60
    # kopf would post an Event for every handler success (a write per pass); keep only its
    # warnings and errors. The reconcile posts its own Events on condition transitions.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = FIELD_MANAGER
    settings.execution.max_workers = config.max_workers
    # A drift pass caught running when its LLMService is deleted finishes within seconds; poll for
    # its end every 2 s instead of kopf's 60 s, or the finalizer (and kubectl delete) waits a minute.
    settings.background.cancellation_polling = 2
    settings.peering.stealth = True  # keep-alives are not news


def build_registry(config: OperatorConfig) -> tuple[kopf.OperatorRegistry, Operator]:
    registry = kopf.OperatorRegistry()
    operator = Operator(config)
    llms = dict(group=GROUP, version=VERSION, plural=PLURAL, registry=registry)
    ours: dict[str, Any] = {
        MANAGED_BY_LABEL: FIELD_MANAGER,
        SERVICE_LABEL: kopf.PRESENT,
    }

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as our own client: the pod's ServiceAccount or the kubeconfig.
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry, id="configure")
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, config)

    @kopf.on.cleanup(registry=registry, id="stop-poker")
    async def cleanup(**_: Any) -> None:
        await operator.poker.close()

    @kopf.on.create(**llms, id="reconcile-create")  # type: ignore[arg-type]
    def on_create(namespace: str, name: str, retry: int, **_: Any) -> None:
        operator.run(namespace, name, "create", retry)

    @kopf.on.resume(**llms, id="reconcile-resume")  # type: ignore[arg-type]
    def on_resume(namespace: str, name: str, retry: int, **_: Any) -> None:
        operator.run(namespace, name, "resume", retry)

    @kopf.on.update(**llms, field="spec", id="reconcile-update")  # type: ignore[arg-type]
    def on_update(namespace: str, name: str, retry: int, **_: Any) -> None:
        operator.run(namespace, name, "update", retry)

    @kopf.timer(**llms, id="drift", interval=config.drift_interval, initial_delay=config.drift_interval)  # type: ignore[arg-type]
    def drift(namespace: str, name: str, retry: int, **_: Any) -> None:
        # An invalid spec is already reported in status and an Event; not again every interval.
        with contextlib.suppress(InvalidSpecError):
            operator.run(namespace, name, "timer", retry)

    def predictive_enabled(spec: kopf.Spec, **_: Any) -> bool:
        return bool(spec.get("autoscaling", {}).get("predictive", {}).get("enabled"))

    # The drift timer may be minutes apart; services with predictive scaling get a pass every
    # PREDICTIVE_TICK seconds, and the predictor itself only asks Prometheus when its own
    # intervalSeconds is due (otherwise the pass is reads only).
    @kopf.timer(**llms, id="predictive", interval=PREDICTIVE_TICK, when=predictive_enabled)  # type: ignore[arg-type]
    def predictive(namespace: str, name: str, retry: int, **_: Any) -> None:
        with contextlib.suppress(InvalidSpecError):
            operator.run(namespace, name, "predictive", retry)

    @kopf.on.delete(**llms, id="forget", optional=True)  # type: ignore[arg-type]
    def on_delete(namespace: str, name: str, **_: Any) -> None:
        operator.forget(namespace, name)  # the children go by garbage collection
        forget = getattr(config.predictor, "forget", None)
        if forget is not None:
            forget(namespace, name)

    @kopf.on.event("apps", "v1", "deployments", labels=ours, registry=registry, id="poke-from-deployment")
    async def deployment_event(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        operator.poker.poke(namespace or "default", labels[SERVICE_LABEL])

    @kopf.on.event(
        "discovery.k8s.io", "v1", "endpointslices",
        labels={ENDPOINTSLICE_SERVICE_LABEL: kopf.PRESENT}, registry=registry, id="poke-from-endpointslice",
    )  # fmt: skip
    async def endpointslice_event(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        service = labels[ENDPOINTSLICE_SERVICE_LABEL]
        if service.endswith(MODEL_SUFFIX):
            operator.poker.poke(namespace or "default", service.removesuffix(MODEL_SUFFIX))

    return registry, operator
