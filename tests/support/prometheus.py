"""A real Prometheus (Debian's 2.42) scraping test servers on loopback, and polling helpers.

One scrape and evaluation interval of 1 s; the first scrape still takes a few seconds, so tests
poll with ``eventually`` instead of sleeping.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from prometheus_api_client import PrometheusConnect

from tests.support.process import free_port, http_ok, managed, require_binary, wait_until


@contextlib.contextmanager
def run_prometheus(
    tmp_path: Path,
    ports: Sequence[int],
    job: str = "model",
    labels: Mapping[str, str] | None = None,
    more_jobs: Sequence[tuple[str, Sequence[int], Mapping[str, str]]] = (),
) -> Iterator[str]:
    """Prometheus scraping ``127.0.0.1:<port>/metrics`` for each port every second; yields its URL.

    ``more_jobs``: further ``(job, ports, labels)`` scraped the same way (e.g. the balancer)."""

    def job_config(name: str, job_ports: Sequence[int], job_labels: Mapping[str, str] | None) -> str:
        targets = ", ".join(f"'127.0.0.1:{port}'" for port in job_ports)
        extra = ", ".join(f"{key}: {value}" for key, value in (job_labels or {}).items())
        static = f"{{targets: [{targets}]" + (f", labels: {{{extra}}}" if extra else "") + "}"
        return f"  - job_name: {name}\n    static_configs: [{static}]\n"

    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        + job_config(job, ports, labels)
        + "".join(job_config(*more) for more in more_jobs)
    )
    port = free_port()
    argv = [
        require_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    url = f"http://127.0.0.1:{port}"
    with managed(argv, tmp_path / "prometheus.log", ready=lambda: http_ok(f"{url}/-/ready"), timeout=60):
        yield url


def scalar(prometheus: PrometheusConnect, query: str) -> float:
    """The value of a query that yields one series; NaN when it yields none yet."""
    result = prometheus.custom_query(query)
    return float(result[0]["value"][1]) if result else math.nan


def eventually(
    prometheus: PrometheusConnect, query: str, good: Callable[[float], bool], what: str, timeout: float = 30
) -> float:
    """Poll ``query`` until its value satisfies ``good``; return that value."""
    seen: list[float] = []

    def check() -> bool:
        seen.append(scalar(prometheus, query))
        return good(seen[-1])

    try:
        wait_until(check, timeout, interval=0.5, what=what)
    except TimeoutError as error:
        raise AssertionError(f"no {what}: {query} was {seen[-5:]}") from error
    return seen[-1]
