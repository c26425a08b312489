"""Server metrics: in-process counters on the hot path, flushed to Prometheus on a timer.

A request costs a few dictionary updates (:class:`RequestRecorder`); a timer task moves the
totals into prometheus-client objects, which in multiprocess mode write to mmap'd files
that the supervisor's ``/metrics`` endpoint merges across workers.

prometheus-client picks its multiprocess value class when it is first imported, so this
module imports it lazily: :func:`prepare_multiprocess_dir` must run first (the supervisor
does, before forking workers).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from server import batch_stats
from server.errors import ProntoError

if TYPE_CHECKING:
    from server.repository import Registry

__all__ = [
    "LATENCY_BUCKETS",
    "RequestRecorder",
    "ServerMetrics",
    "mark_worker_dead",
    "observe_all",
    "prepare_multiprocess_dir",
    "start_metrics_server",
]

#: 100 µs … 5 s
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip

#: rows or requests per merged run
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: 10 µs … 10 ms: a queue delay is configured in microseconds
QUEUE_DELAY_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)

ENV = "PROMETHEUS_MULTIPROC_DIR"

#: label value of requests naming a model or version this server does not hold
OTHER = "_other"
#: longest label value recorded when no registry bounds the values
MAX_LABEL_CHARS = 64

log = logging.getLogger(__name__)


def prepare_multiprocess_dir(path: Path | None) -> Path:
    """Create (or wipe) the multiprocess directory and point prometheus-client at it."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="pronto-metrics-"))
    elif path.exists():
        # stale files from an earlier run would be summed into this one's totals
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    return path


class ServerMetrics:
    """The metric families. Build one per process after :func:`prepare_multiprocess_dir`."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # registry=None: in multiprocess mode the files are the source of truth
        self.requests = Counter(
            "pronto_requests",
            "RPCs handled, by model, version, method and status code.",
            ["model", "version", "method", "code"],
            registry=None,
        )
        self.latency = Histogram(
            "pronto_request_duration_seconds",
            "Server-side RPC latency, by model, version and method.",
            ["model", "version", "method"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.in_flight = Gauge(
            "pronto_requests_in_flight",
            "RPCs being handled (sampled at each flush).",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.validation_errors = Counter(
            "pronto_validation_errors",
            "Requests rejected as invalid, by reason.",
            ["reason"],
            registry=None,
        )
        self.model_load_seconds = Gauge(
            "pronto_model_load_seconds",
            "Seconds to load and warm up a model version (slowest worker).",
            ["model", "version"],
            multiprocess_mode="max",
            registry=None,
        )
        self.model_load_failures = Counter(
            "pronto_model_load_failures",
            "Model versions that failed to load.",
            ["model", "version"],
            registry=None,
        )
        self.workers_ready = Gauge(
            "pronto_workers_ready",
            "Worker processes with all models loaded and serving.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.batch_rows = Histogram(
            "pronto_batch_size",
            "Rows per merged ONNX Runtime run (micro-batching on).",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.batch_requests = Histogram(
            "pronto_batch_requests",
            "Requests merged into one ONNX Runtime run (micro-batching on).",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.batch_queue_delay = Histogram(
            "pronto_batch_queue_delay_seconds",
            "How long the first request of a merged run waited for company.",
            ["model", "version"],
            buckets=QUEUE_DELAY_BUCKETS,
            registry=None,
        )
        self.requests_shed = Counter(
            "pronto_requests_shed",
            "Inference requests refused unrun (RESOURCE_EXHAUSTED) because the worker's "
            "queueing delay was past its bound, by model and method.",
            ["model", "method"],
            registry=None,
        )
        self.worker_restarts = Counter(
            "pronto_worker_restarts",
            "Worker processes restarted by the supervisor after they died.",
            registry=None,
        )
        # The server's own version only: exact library versions would tell a scraper
        # which published vulnerabilities to try.
        self.build_info = Gauge(
            "pronto_build_info",
            "Build information (value 1).",
            ["version"],
            multiprocess_mode="max",
            registry=None,
        )

    def set_build_info(self, version: str) -> None:
        self.build_info.labels(version).set(1)


class RequestRecorder:
    """Per-process accumulation of request outcomes; cheap enough for every RPC."""

    def __init__(
        self, metrics: ServerMetrics | None = None, registry: Registry | None = None
    ) -> None:
        self.metrics = metrics
        self.registry = registry
        self.in_flight = 0
        self._counts: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self._latencies: defaultdict[tuple[str, str, str], list[float]] = defaultdict(list)
        self._reasons: defaultdict[str, int] = defaultdict(int)
        self._shed: defaultdict[tuple[str, str], int] = defaultdict(int)

    def observe(
        self,
        method: str,
        request: Any,
        response: Any,
        code: grpc.StatusCode,
        seconds: float,
        error: ProntoError | None,
    ) -> None:
        src = response if response is not None else request
        model = str(getattr(src, "model_name", None) or getattr(src, "name", ""))
        version = str(getattr(src, "model_version", None) or getattr(src, "version", ""))
        model, version = self.labels(model, version)
        self._counts[(model, version, method, code.name)] += 1
        self._latencies[(model, version, method)].append(seconds)
        if error is not None and code is grpc.StatusCode.INVALID_ARGUMENT:
            self._reasons[error.reason] += 1
        elif error is not None and error.reason == "overloaded":
            self._shed[(model, method)] += 1

    def labels(self, model: str, version: str) -> tuple[str, str]:
        """Bounded label values: names come from callers, so only models and versions in
        the registry are recorded as themselves; anything else is :data:`OTHER`."""
        if self.registry is None:
            return model[:MAX_LABEL_CHARS], version[:MAX_LABEL_CHARS]
        versions = self.registry.snapshot().get(model)
        if versions is None:
            return (OTHER, OTHER) if model else ("", "")
        if version and not (version.isdigit() and int(version) in versions):
            return model, OTHER
        return model, version

    def model_label(self, model: str) -> str:
        """The bounded label value of a caller-sent model name (see :meth:`labels`)."""
        return self.labels(model, "")[0]

    def flush(self) -> None:
        """Move the accumulated totals into the Prometheus objects."""
        m = self.metrics
        if m is None:
            batch_stats.drain()
            self._counts.clear()
            self._latencies.clear()
            self._reasons.clear()
            self._shed.clear()
            return
        counts, self._counts = self._counts, defaultdict(int)
        latencies, self._latencies = self._latencies, defaultdict(list)
        reasons, self._reasons = self._reasons, defaultdict(int)
        shed, self._shed = self._shed, defaultdict(int)
        for key, n in counts.items():
            m.requests.labels(*key).inc(n)
        for lkey, values in latencies.items():
            observe_all(m.latency.labels(*lkey), values)
        for reason, n in reasons.items():
            m.validation_errors.labels(reason).inc(n)
        for skey, n in shed.items():
            m.requests_shed.labels(*skey).inc(n)
        for model, version, rows, requests, waited in batch_stats.drain():
            m.batch_rows.labels(model, version).observe(rows)
            m.batch_requests.labels(model, version).observe(requests)
            m.batch_queue_delay.labels(model, version).observe(waited)
        m.in_flight.set(self.in_flight)

    async def run_flusher(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.flush()
            except Exception:
                # keep flushing (and so keep the buffers bounded) even if one flush fails
                log.exception("metrics flush failed")


def observe_all(child: Any, values: Sequence[float]) -> None:
    """``child.observe(v)`` for each of ``values``, with one write per bucket touched and
    one to the sum instead of two per value: a multiprocess value's write takes a lock and
    checks the pid (about 1 µs), so the flush of a worker's requests costs 0.2 µs each
    instead of 2. Falls back to ``observe`` on a histogram without the buckets it knows."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for v in values:
            child.observe(v)
        return
    child._raise_if_not_observable()
    # observe() counts a value in the first bucket whose bound is at least the value
    for index, n in Counter(bisect.bisect_left(bounds, v) for v in values).items():
        buckets[index].inc(n)
    total.inc(sum(values))


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (prometheus-client multiprocess bookkeeping)."""
    if ENV in os.environ:
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)


def start_metrics_server(port: int, host: str = "127.0.0.1", collectors: Sequence[Any] = ()) -> Any:
    """Serve ``/metrics`` merged over all processes; returns the HTTP server object.

    ``collectors`` add families computed in this process at scrape time.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
