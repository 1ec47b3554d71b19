"""What the predictive scaler reads from Prometheus, per engine, returned as plain dataclasses.

Each engine names its metrics differently and some export less than others, so the PromQL
lives in one table (:data:`ENGINES`) and a signal an engine cannot provide is ``None`` with the
reason in ``unavailable``; the policy then runs on what is left (no forecast without a request
rate: the live path holds its floor and says why).

==========  ====================================  ==================================  =====================================
engine      request rate (req/s)                  queue depth (waiting requests)      TTFT p95
==========  ====================================  ==================================  =====================================
vllm        ``vllm:request_success_total``        ``vllm:num_requests_waiting``       ``vllm:time_to_first_token_seconds``
tgi         ``tgi_request_success``               ``tgi_queue_size``                  queue time p95 only (no TTFT histogram)
sglang      ``sglang:e2e_request_latency_seconds``  ``sglang:num_queue_reqs``           ``sglang:time_to_first_token_seconds``
llamacpp    unavailable (tokens only)             ``llamacpp:requests_deferred``      unavailable
ollama      unavailable (no /metrics)             unavailable                         unavailable
==========  ====================================  ==================================  =====================================

Rates are ``rate(...[window])`` (default 1m; TTFT quantiles too) of completion counters (in steady state, arrivals).

**Demand from the balancer.** A balancer that fails fast (``maxConcurrencyPerReplica`` with
nginx, or haproxy with a short ``queueSeconds``) turns away what the replicas cannot start in
time, and the engines never count those requests: their completion rate stops at the fleet's
capacity exactly when it is short, so a forecast read from it cannot see the shortage. haproxy
counts every request its frontend receives (``haproxy_frontend_http_requests_total``, proxy
``llm``), so with haproxy the request rate is read there (:data:`BALANCERS`), with its 5xx
answers (the 503s of its queue timeout) as the rejected rate; with nginx, the caching
gateway's count of requests sent upstream gives the same, when the cache is on,
falling back to the engine's counter when Prometheus has no haproxy series (the balancer pods
are not scraped); the engine's counter still gives the *served* rate, from which capacity is
learned. nginx exports no request counter: with nginx and no cache the forecast follows the
served load.

Everything here blocks on HTTP (prometheus-api-client uses requests): call it from a thread
(``asyncio.to_thread`` or a sync kopf handler), never from ``async def`` directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

MAX_POINTS = 10000  # Prometheus refuses range queries of more than 11,000 points per series


@dataclass(frozen=True)
class EngineQueries:
    """PromQL with ``{sel}`` standing for the pod label selector (``job="x",namespace="y"``)."""

    request_rate: str | None
    queue_depth: str | None
    running: str | None
    ttft_p95: str | None
    unavailable: tuple[str, ...] = ()


ENGINES: dict[str, EngineQueries] = {
    "vllm": EngineQueries(
        request_rate="sum(rate(vllm:request_success_total{{{sel}}}[{window}]))",
        queue_depth="sum(vllm:num_requests_waiting{{{sel}}})",
        running="sum(vllm:num_requests_running{{{sel}}})",
        ttft_p95="histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[{window}])))",
    ),
    "tgi": EngineQueries(
        request_rate="sum(rate(tgi_request_success{{{sel}}}[{window}]))",
        queue_depth="sum(tgi_queue_size{{{sel}}})",
        running="sum(tgi_batch_current_size{{{sel}}})",
        ttft_p95="histogram_quantile(0.95, sum by (le) (rate(tgi_request_queue_duration_bucket{{{sel}}}[{window}])))",
        unavailable=("ttft_p95: TGI has no TTFT histogram; queue-time p95 is used (a lower bound)",),
    ),
    "sglang": EngineQueries(
        request_rate="sum(rate(sglang:e2e_request_latency_seconds_count{{{sel}}}[{window}]))",
        queue_depth="sum(sglang:num_queue_reqs{{{sel}}})",
        running="sum(sglang:num_running_reqs{{{sel}}})",
        ttft_p95="histogram_quantile(0.95, sum by (le) (rate(sglang:time_to_first_token_seconds_bucket{{{sel}}}[{window}])))",
    ),
    "llamacpp": EngineQueries(
        request_rate=None,
        queue_depth="sum(llamacpp:requests_deferred{{{sel}}})",
        running="sum(llamacpp:requests_processing{{{sel}}})",
        ttft_p95=None,
        unavailable=(
            "request_rate: llama.cpp exports token counters but no request counter",
            "ttft_p95: llama.cpp exports no latency histogram",
        ),
    ),
    "ollama": EngineQueries(
        request_rate=None,
        queue_depth=None,
        running=None,
        ttft_p95=None,
        unavailable=("all: ollama has no Prometheus /metrics endpoint",),
    ),
}


@dataclass(frozen=True)
class BalancerQueries:
    """PromQL of a balancer's own counters, ``{sel}`` standing for its pods' label selector."""

    request_rate: str  # requests received, rejected ones included
    rejected_rate: str  # 5xx answers: its own 503s when no replica could take a request in time


BALANCERS: dict[str, BalancerQueries] = {
    "haproxy": BalancerQueries(
        request_rate='sum(rate(haproxy_frontend_http_requests_total{{proxy="llm",{sel}}}[{window}]))',
        rejected_rate='sum(rate(haproxy_frontend_http_responses_total{{proxy="llm",code="5xx",{sel}}}[{window}]))',
    ),
    # The caching gateway in front of either balancer: what it sent upstream (cache misses), by
    # the status that came back ("error": no answer).
    "gateway": BalancerQueries(
        request_rate="sum(rate(llmfleet_gateway_upstream_requests_total{{{sel}}}[{window}]))",
        rejected_rate='sum(rate(llmfleet_gateway_upstream_requests_total{{status=~"5..|error",{sel}}}[{window}]))',
    ),
}


@dataclass(frozen=True)
class FleetMetrics:
    """One read of the fleet's signals at ``at`` (unix seconds); ``None`` = not available."""

    at: float
    step_s: float
    rate_history: tuple[float, ...]  # mean req/s per step, oldest first, ending at ``at``
    request_rate: float | None
    queue_depth: float | None  # waiting requests, all replicas
    running: float | None
    ttft_p95_s: float | None
    unavailable: tuple[str, ...] = field(default=())
    # Request rate at a finer step over the last half hour, for the burst factor (empty: none).
    burst_history: tuple[float, ...] = field(default=())
    burst_step_s: float = 15.0
    # Requests the engines completed per second (None: as request_rate, which then is the same
    # counter); below request_rate when the balancer turned requests away.
    served_rate: float | None = None
    demand_source: str = "engine"  # where request_rate and its history come from
    rejected_rate: float | None = None  # 5xx answers per second at the balancer (None: not read)


class MetricsUnavailable(Exception):
    """Prometheus could not be queried (unreachable, error status, bad answer)."""


def selector(namespace: str, service: str) -> str:
    """Label selector of one LLMService's model pods as the Service scrape labels them."""
    return f'namespace="{namespace}",service="{service}"'


def pod_selector(namespace: str, instance: str, component: str) -> str:
    """Label selector of one component's pods (the balancer, the gateway) as a pod scrape labels
    them: their ``prometheus.io/scrape`` annotations are scraped by the ``kubernetes-pods`` job
    of the prometheus-community chart, which maps pod labels to ``app_kubernetes_io_*``."""
    return (
        f'namespace="{namespace}",app_kubernetes_io_instance="{instance}",'
        f'app_kubernetes_io_component="{component}"'
    )


def queries_for(engine: str, sel: str, window: str = "1m") -> EngineQueries:
    """The engine's queries for pods matching ``sel``; rates and quantiles over ``window``."""
    base = ENGINES.get(engine)
    if base is None:
        raise ValueError(f"unknown engine {engine!r}")

    def fill(q: str | None) -> str | None:
        return _fill(q, sel, window) if q is not None else None

    return EngineQueries(
        fill(base.request_rate),
        fill(base.queue_depth),
        fill(base.running),
        fill(base.ttft_p95),
        base.unavailable,
    )


def _scalar(result: list[dict[str, Any]]) -> float | None:
    """The value of an instant query, None when empty or NaN (e.g. a quantile of no data)."""
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def _series(
    results: list[list[dict[str, Any]]], start: float, step_s: float, points: int
) -> tuple[float, ...]:
    """Range-query chunks -> a dense series on the step grid; gaps (no sample) become 0."""
    out = [0.0] * points
    for result in results:
        for sample_ts, sample_value in result[0]["values"] if result else []:
            i = round((float(sample_ts) - start) / step_s)
            value = float(sample_value)
            if 0 <= i < points and math.isfinite(value):
                out[i] = value
    return tuple(out)


def _range(
    client: Any, query: str, start: float, end: float, step_s: float, timeout_s: int
) -> tuple[float, ...]:
    """A range query on the step grid from ``start`` to ``end``, in chunks Prometheus accepts."""
    chunks = []
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(end, chunk_start + (MAX_POINTS - 1) * step_s)
        chunks.append(
            client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(chunk_start, UTC),
                end_time=datetime.fromtimestamp(chunk_end, UTC),
                step=f"{round(step_s)}s",
                timeout=timeout_s,
            )
        )
        chunk_start = chunk_end + step_s
    return _series(chunks, start, step_s, round((end - start) / step_s) + 1)


def _fill(template: str, sel: str, window: str) -> str:
    return template.format(sel=sel, window=window)


def _instant(client: Any, query: str | None, at: float, timeout_s: int) -> float | None:
    if query is None:
        return None
    return _scalar(client.custom_query(query, params={"time": at}, timeout=timeout_s))


def fetch(
    client: Any,
    engine: str,
    sel: str,
    *,
    now: float,
    lookback_s: float = 7.5 * 86400,
    step_s: float = 60.0,
    timeout_s: int = 10,
    rate_window: str = "1m",
    burst_step_s: float | None = 15.0,
    burst_lookback_s: float = 1800.0,
    demand_sources: Sequence[tuple[str, str]] = (),
) -> FleetMetrics:
    """Query the signals of one fleet. ``client`` is a ``prometheus_api_client.PrometheusConnect``.

    With ``burst_step_s``, the request rate is also read every ``burst_step_s`` over the last
    ``burst_lookback_s`` (rate window two steps, so a 15 s scrape always has two samples): the
    sub-minute burstiness the policy's burst factor is computed from. ``demand_sources`` are
    ``(source, label selector)`` pairs in front of the engines (keys of :data:`BALANCERS`), tried
    in order: the first that Prometheus has a request-rate series for gives the request rate and
    the rejected rate; the engines' counter is the last resort.

    Raises :class:`MetricsUnavailable` when Prometheus cannot be reached or answers an error.
    Blocking: run it in a thread.
    """
    queries = queries_for(engine, sel, rate_window)
    sources: list[tuple[str, Callable[[str], str]]] = []
    for name, lb_sel in demand_sources:
        if name in BALANCERS:
            template = BALANCERS[name].request_rate
            sources.append((name, partial(_fill, template, lb_sel)))
    engine_rate = ENGINES[engine].request_rate  # queries_for has checked the engine
    if engine_rate is not None:
        sources.append(("engine", partial(_fill, engine_rate, sel)))
    end = math.floor(now / step_s) * step_s
    points = max(1, int(lookback_s // step_s))
    start = end - (points - 1) * step_s
    history: tuple[float, ...] = ()
    burst: tuple[float, ...] = ()
    source, rate_query = "engine", None
    try:
        for name, query in sources:
            source, rate_query = name, query
            history = _range(client, query(rate_window), start, end, step_s, timeout_s)
            if any(v > 0 for v in history):
                break  # else the balancer's pods are not scraped (or nothing came): next source
        if rate_query is not None and burst_step_s:
            burst_end = math.floor(now / burst_step_s) * burst_step_s
            burst_start = burst_end - (max(1, int(burst_lookback_s // burst_step_s)) - 1) * burst_step_s
            window = f"{round(2 * burst_step_s)}s"
            burst = _range(client, rate_query(window), burst_start, burst_end, burst_step_s, timeout_s)
        request_rate = _instant(client, rate_query(rate_window) if rate_query else None, end, timeout_s)
        served, rejected = request_rate, None
        if source != "engine":
            served = _instant(client, queries.request_rate, end, timeout_s)
            lb_sel = dict(demand_sources)[source]
            rejected_query = _fill(BALANCERS[source].rejected_rate, lb_sel, rate_window)
            rejected = _instant(client, rejected_query, end, timeout_s) or 0.0
        queue_depth = _instant(client, queries.queue_depth, end, timeout_s)
        running = _instant(client, queries.running, end, timeout_s)
        ttft = _instant(client, queries.ttft_p95, end, timeout_s)
    except Exception as error:  # requests' ConnectionError, the client's exceptions, bad JSON
        raise MetricsUnavailable(f"{type(error).__name__}: {error}") from error
    first = next((i for i, v in enumerate(history) if v > 0), len(history))
    lead = next((i for i, v in enumerate(burst) if v > 0), len(burst))
    return FleetMetrics(
        at=end,
        step_s=step_s,
        rate_history=history[first:],  # drop the leading emptiness before the fleet existed
        request_rate=request_rate,
        queue_depth=queue_depth,
        running=running,
        ttft_p95_s=ttft,
        unavailable=queries.unavailable,
        burst_history=burst[lead:],
        burst_step_s=float(burst_step_s or 15.0),
        served_rate=served,
        demand_source=source,
        rejected_rate=rejected,
    )


def connect(url: str, timeout_s: int = 10) -> Any:
    """A prometheus-api-client connection (imported here: the CLI stays light)."""
    from prometheus_api_client import PrometheusConnect

    return PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s)
