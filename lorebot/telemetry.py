"""Prometheus metrics of every lorebot process (not slm/evals/metrics.py: that is answer quality).

Series (all prefixed ``lorebot_``):

* ``questions_total{outcome}``: answered / abstained / failed, counted by answer workers.
* ``stage_seconds{stage}``: latency histograms of retrieve, generate, first_token, total,
  from ``Answer.timings_ms``.
* ``queue_depth{queue}``: Celery messages waiting in each Redis list, read at scrape time.
* ``index_version_info{version}`` / ``adapter_version_info{version}``: 1 for what a live
  process serves (adapter "base" = no adapter).
* ``refresh_total{decision}``: nightly refresh outcomes (promoted, rejected, ...).
* ``ingest_failures_total{reason}``: files an ingest could not index, and failed runs.

Celery's prefork pool answers in child processes, so a worker uses prometheus_client's
multiprocess mode: each child writes its values to memory-mapped files under a
per-worker directory (``<data_dir>/run/metrics/<host>-<pid>``) and the worker's main
process serves their aggregate on ``metrics.worker_port``. One port per worker process
(not per child) keeps scrape configs static while the pool recycles children; the price
is that ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus_client is imported,
which :func:`start_worker_server` takes care of. The bot is one process and serves the
default registry on its own HTTP port.

prometheus_client is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from lorebot import contracts
from lorebot.settings import Settings

log = logging.getLogger(__name__)

STAGES = ("retrieve", "generate", "first_token", "total")
OUTCOMES = ("answered", "abstained", "failed")
REFRESH_DECISIONS = ("promoted", "rejected", "skipped", "failed")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_metrics: dict[str, Any] | None = None
_metrics_lock = threading.Lock()
_server_port: int | None = None
_multiproc_dir: Path | None = None


def metrics() -> dict[str, Any]:
    """The metric objects of this process, created on first use."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            from prometheus_client import Counter, Gauge, Histogram

            _metrics = {
                "questions": Counter(
                    "lorebot_questions", "Questions answered by outcome.", ["outcome"]
                ),
                "stage": Histogram(
                    "lorebot_stage_seconds",
                    "Answer latency per stage.",
                    ["stage"],
                    buckets=LATENCY_BUCKETS,
                ),
                "index_version": Gauge(
                    "lorebot_index_version_info",
                    "1 for the index version a live process serves.",
                    ["version"],
                    multiprocess_mode="livemax",
                ),
                "adapter_version": Gauge(
                    "lorebot_adapter_version_info",
                    "1 for the adapter version a live process serves (base = none).",
                    ["version"],
                    multiprocess_mode="livemax",
                ),
                "refresh": Counter(
                    "lorebot_refresh", "Nightly refresh results by decision.", ["decision"]
                ),
                "ingest_failures": Counter(
                    "lorebot_ingest_failures",
                    "Files an ingest could not index, and failed runs, by reason.",
                    ["reason"],
                ),
            }
            # Known label values start at 0, so rates and dashboards have a series at once.
            for outcome in OUTCOMES:
                _metrics["questions"].labels(outcome=outcome)
            for decision in REFRESH_DECISIONS:
                _metrics["refresh"].labels(decision=decision)
    return _metrics


# Names as they appear in the exposition (the dashboard test checks its queries against these).
def series_names() -> set[str]:
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
    }
    names = {"lorebot_queue_depth"}
    for m in metrics().values():
        for family in m.describe():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


# --------------------------------------------------------------------------- recording
def record_answer(outcome: str, timings_ms: dict[str, float] | None = None) -> None:
    """Count one question and observe its stage latencies."""
    m = metrics()
    m["questions"].labels(outcome=outcome).inc()
    for stage in STAGES:
        if timings_ms and stage in timings_ms:
            m["stage"].labels(stage=stage).observe(max(0.0, float(timings_ms[stage])) / 1000.0)


_served: dict[str, str] = {}


def set_serving(index_version: str | None, adapter_version: str | None) -> None:
    """Mark what this process serves (and unmark what it served before)."""
    m = metrics()
    for key, value in (
        ("index_version", index_version or "none"),
        ("adapter_version", adapter_version or "base"),
    ):
        old = _served.get(key)
        if old == value:
            continue
        if old is not None:
            if os.environ.get(MULTIPROC_ENV):  # mmap files stay: 0 once every live child moved on
                m[key].labels(version=old).set(0)
            else:
                m[key].remove(old)
        m[key].labels(version=value).set(1)
        _served[key] = value


def record_refresh(decision: str) -> None:
    """For the nightly refresh: one call per run with its decision."""
    metrics()["refresh"].labels(decision=decision).inc()


def failure_reason(reason: str | None) -> str:
    """A bounded label from a free-text reason ("timeout: parsing x" -> "timeout")."""
    head = (reason or "unknown").split(":", 1)[0].strip().lower().replace(" ", "_")
    return head[:32] or "unknown"


def record_ingest_report(report: dict[str, Any]) -> int:
    """Count the failed files of an ingest report (IngestReport.to_dict())."""
    n = 0
    for f in report.get("files", []):
        if f.get("status") == "failed":
            metrics()["ingest_failures"].labels(reason=failure_reason(f.get("reason"))).inc()
            n += 1
    return n


def record_ingest_failure(reason: str) -> None:
    """A whole ingest run failed (no sources, nothing indexable, ...)."""
    metrics()["ingest_failures"].labels(reason=failure_reason(reason)).inc()


# --------------------------------------------------------------------------- collection
class QueueDepthCollector:
    """Reads LLEN of each Celery queue when Prometheus scrapes (never a stale number)."""

    def __init__(
        self,
        redis_url: str | None = None,
        queues: tuple[str, ...] = contracts.ALL_QUEUES,
        client: Any = None,
    ) -> None:
        self.redis_url = redis_url
        self.queues = queues
        self._client = client

    def _redis(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._client

    def describe(self):
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "lorebot_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "lorebot_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        try:
            pipe = self._redis().pipeline(transaction=False)
            for q in self.queues:
                pipe.llen(q)
            for q, depth in zip(self.queues, pipe.execute()):
                family.add_metric([q], float(depth))
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis blinked
            log.warning("metrics: cannot read queue depth: %s", type(exc).__name__)
        yield family


def registry(redis_url: str | None = None, redis: Any = None):
    """The registry to expose from this process (multiprocess aggregate when enabled).

    Queue depth comes from `redis` (a client) or a client made from `redis_url`.
    """
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if os.environ.get(MULTIPROC_ENV):
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
    else:
        reg = CollectorRegistry()
        reg.register(_DefaultProxy(REGISTRY))
    if redis is not None or redis_url:
        reg.register(QueueDepthCollector(redis_url, client=redis))
    metrics()  # families exist (HELP/TYPE) even before the first question
    return reg


class _DefaultProxy:
    """Lets one registry carry the default one's collectors plus a per-server queue collector."""

    def __init__(self, reg) -> None:
        self._reg = reg

    def collect(self):
        return self._reg.collect()


def exposition(reg) -> tuple[bytes, str]:
    """(body, content type) of a scrape."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(reg), CONTENT_TYPE_LATEST


# --------------------------------------------------------------------------- worker server
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiproc_dir(settings: Settings) -> Path:
    """A fresh per-worker directory; leftovers of dead workers on this host are removed."""
    host = socket.gethostname()
    base = settings.run_dir / "metrics"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{host}-*"):
        try:
            pid = int(old.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"{host}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def start_worker_server(settings: Settings) -> int | None:
    """In a worker's main process, before the pool forks: multiprocess mode + HTTP server.

    Returns the port (useful with worker_port=0), or None when metrics are off or the
    port is taken (logged: a busy metrics port must not stop a worker from answering).
    """
    global _server_port, _multiproc_dir
    if not settings.metrics.enabled:
        return None
    _multiproc_dir = prepare_multiproc_dir(settings)
    os.environ[MULTIPROC_ENV] = str(_multiproc_dir)
    from prometheus_client import values

    # The value class is chosen when prometheus_client is first imported; if something
    # imported it before the directory was known, choose again now.
    values.ValueClass = values.get_value_class()
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(
            settings.metrics.worker_port,
            addr=settings.metrics.host,
            registry=registry(settings.redis.effective_url),
        )
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on %s:%d (%s); this worker serves no metrics "
            "(fix: set LOREBOT_METRICS__WORKER_PORT to a free port, 0 = any)",
            settings.metrics.host,
            settings.metrics.worker_port,
            exc.strerror,
        )
        return None
    _server_port = server.server_address[1]
    log.info(
        "metrics: worker serves /metrics on port %d (multiprocess dir %s)",
        _server_port,
        _multiproc_dir,
    )
    return _server_port


def server_port() -> int | None:
    """The worker metrics port (inherited by pool children), or None."""
    return _server_port


def child_exit(pid: int | None = None) -> None:
    """A pool child is gone: drop its live gauges from the aggregate."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def stop_worker_server() -> None:
    """At worker shutdown: remove the per-worker directory."""
    if _multiproc_dir is not None:
        shutil.rmtree(_multiproc_dir, ignore_errors=True)
