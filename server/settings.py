"""Settings of ``pronto serve``: one pydantic-settings class, read from ``PRONTO_*``.

Every field becomes a ``--flag`` of ``pronto serve``, so the help text of a flag is the
description written here. Fields that other commands share (ports, workers, the model
repository) come from :mod:`pronto_contract.fields`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronto_contract.fields import (
    MetricsPort,
    ModelRepository,
    Port,
    WorkerBasePort,
    Workers,
    usable_cpus,
)

__all__ = ["ServeSettings", "usable_cpus"]


class ServeSettings(BaseSettings):
    """Configuration of the supervisor and its worker processes."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    model_repository: ModelRepository = Path("models")
    models: list[str] | None = Field(
        None,
        description="Models to load (names); default: every model in the repository.",
    )
    model_versions: int = Field(
        1, ge=1, description="How many of the newest versions of each model to load."
    )
    version_policy: str | None = Field(
        None,
        description="Versions to serve per model: latest, latest:N, pinned:V1,V2 or all "
        "(default: latest:<model-versions>).",
    )
    model_version_policies: dict[str, str] = Field(
        default_factory=dict,
        description='Per-model version policies as JSON, e.g. {"flights": "pinned:1,3"}.',
    )
    strict_readiness: bool = Field(
        False,
        description="Report the server ready (grpc.health.v1 overall service and OIP "
        "ServerReady) only while every model named in --models serves at least one version, "
        "as Triton's --strict-readiness; per-model health and ModelReady are unaffected.",
    )
    model_poll_interval: float = Field(
        5.0,
        ge=0,
        description="Seconds between scans of the repository for new or removed versions "
        "(0 disables polling; SIGHUP always triggers a scan).",
    )
    batching_max_batch_size: int = Field(
        0,
        ge=0,
        description="Micro-batching for models whose model.json has no 'batching' key: "
        "largest merged batch in rows (0 = off).",
    )
    batching_max_queue_delay_us: int = Field(
        500,
        ge=0,
        description="Micro-batching: longest a request waits for others to join, in µs.",
    )
    workers: Workers = 0
    host: str = Field(
        "127.0.0.1",
        description="Address the shared gRPC port binds to. Loopback by default: the port "
        "has no authentication (Envoy's listener is the authenticated entry point).",
    )
    worker_host: str = Field(
        "127.0.0.1",
        description="Address the worker-private ports bind to (Envoy's upstreams; loopback "
        "while Envoy runs next to the workers).",
    )
    port: Port = 50051
    worker_base_port: WorkerBasePort = 50100
    metrics_port: MetricsPort = 9090
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the /metrics endpoint binds to (the pod IP in Kubernetes).",
    )
    metrics_dir: Path | None = Field(
        None,
        description="prometheus-client multiprocess directory; wiped at start "
        "(default: a fresh temporary directory).",
    )
    drift: bool = Field(
        True,
        description="Count inputs and scores per bucket of the manifest's reference statistics "
        "(drift metrics; needs the metrics port).",
    )
    drift_sample_rows: int = Field(
        32,
        ge=0,
        description="Drift counts the inputs of a request of at least twice this many rows "
        "from a sample of about this many (every k-th row, each counted k times; 0 counts "
        "every row).",
    )
    drift_sample_requests: int = Field(
        8,
        ge=1,
        description="Of the requests whose inputs drift counts from a sample (see "
        "--drift-sample-rows), every this-many-th gives its sample, each row then counted k "
        "times this; the others give only their scores, which are always counted in full (1: "
        "every such request gives a sample).",
    )
    metrics_flush_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between flushes of in-process request counters to /metrics.",
    )
    grace_period: float = Field(
        20.0,
        ge=0,
        description="Seconds in-flight requests get to finish after SIGTERM/SIGINT.",
    )
    drain_delay: float = Field(
        0.0,
        ge=0,
        description="Seconds to report NOT_SERVING before refusing new requests on shutdown "
        "(lets load balancers notice).",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest request message accepted, in bytes (RESOURCE_EXHAUSTED above). "
        "Four times Envoy's REST body cap: a JSON number as short as '0,' becomes 8 bytes "
        "of FP64 once transcoded, and a body Envoy admits must not fail here.",
    )
    max_batch_size: int = Field(
        1_000_000, ge=1, description="Largest batch dimension accepted in one request."
    )
    offload_rows: int = Field(
        256,
        ge=1,
        description="Requests with at least this many rows run on a helper thread so the "
        "event loop keeps answering health checks, unless the model's timed warm-up puts "
        "their run under 2 ms (handing a short run over costs more than the run).",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="Event loop of the worker processes: uvloop (libuv; about a tenth less "
        "CPU per single-row call than asyncio's own loop, measured side by side) or asyncio.",
    )
    max_concurrent_rpcs: int | None = Field(
        None,
        ge=1,
        description="Per-worker cap on concurrent RPCs (RESOURCE_EXHAUSTED above); "
        "default: no cap.",
    )
    max_queue_delay_ms: float = Field(
        1000.0,
        ge=0,
        description="Refuse inference (RESOURCE_EXHAUSTED, retry-after) while requests have "
        "waited longer than this to start, for a whole window (0 disables shedding); "
        "health, metadata and metrics always answer.",
    )
    max_rows_in_flight: int = Field(
        100_000,
        ge=1,
        description="Per-worker bound on rows being predicted at once; a request that would "
        "pass it is refused with RESOURCE_EXHAUSTED (a single bigger batch always is).",
    )
    memory_limit_mb: int = Field(
        1024,
        ge=0,
        description="Per-worker resident-memory guard, in MiB: above it, requests of at least "
        "offload_rows rows are refused with RESOURCE_EXHAUSTED until memory is returned "
        "(0 = off).",
    )
    intra_op_threads: int = Field(
        1,
        ge=1,
        description="ONNX Runtime intra-op threads per session (parallelism comes from processes).",
    )
    category_codes: bool = Field(
        True,
        description="Run a model's one-hot encoded string inputs as integer codes: the same "
        "results without ONNX Runtime's string work (needs the native text extension).",
    )
    log_level: str = Field("INFO", description="Log level of supervisor and workers.")
    capture_dir: Path | None = Field(
        None,
        description="Directory for payload capture and the prediction index that label "
        "feedback joins (default: off; label feedback then answers FAILED_PRECONDITION).",
    )
    capture_sample_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of predictions captured (inputs and outputs to capture files) and "
        "indexed for label feedback, chosen by a hash of the prediction id.",
    )
    capture_buffer: int = Field(
        10_000,
        ge=1,
        description="Predictions a worker buffers for the capture writer; beyond that they are "
        "dropped (pronto_capture_dropped_total), never the request.",
    )
    capture_flush_interval: float = Field(
        1.0, gt=0, description="Seconds between capture writes (a crash loses at most this)."
    )
    capture_max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Capture files rotate at this size, in bytes."
    )
    capture_rotate_seconds: float = Field(
        3600.0, gt=0, description="Capture files rotate at this age, in seconds."
    )
    capture_upload_url: str = Field(
        "",
        pattern=r"^(gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?)?$",
        description="gs://bucket/prefix that closed capture files are copied to, as "
        "<prefix>/<model>/<version>/<file> (credentials from the environment; default: none).",
    )
    label_retention: float = Field(
        7 * 86_400.0,
        gt=0,
        description="Seconds a served prediction stays in the index; labels for older ones "
        "answer NOT_FOUND.",
    )
    feedback_peers: str = Field(
        "",
        description="The other pods of this deployment, for label feedback on predictions "
        "another pod served: comma-separated host:port of their server ports; a name may "
        "resolve to several addresses (a headless Service). Empty: labels join on this pod "
        "only.",
    )
    rollout_analysis_interval: float = Field(
        1.0,
        ge=0,
        description="Seconds between checks of automatic rollouts by the supervisor "
        "(needs the metrics port; 0 disables the analysis).",
    )
    rollout_admin_loopback_only: bool = Field(
        True,
        description="Answer the rollout admin service (pronto.v1.RolloutService) only to "
        "callers on this host (PERMISSION_DENIED otherwise).",
    )
    quality_window_rows: int = Field(
        10_000, ge=1, description="pronto_model_quality: newest labeled (or served) rows used."
    )
    quality_window_seconds: float = Field(
        86_400.0,
        gt=0,
        description="pronto_model_quality: only rows labeled (served) this recently, in seconds.",
    )
    quality_refresh_seconds: float = Field(
        10.0, ge=0, description="pronto_model_quality: seconds a computed value is reused."
    )

    @field_validator("feedback_peers")
    @classmethod
    def _peers_are_host_port(cls, value: str) -> str:
        parse_peers(value)
        return value


def parse_peers(spec: str) -> list[tuple[str, int]]:
    """``"a:1, b:2"`` -> ``[("a", 1), ("b", 2)]``; ``[v6]:port`` accepted."""
    peers: list[tuple[str, int]] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"feedback peer '{item}' is not host:port")
        peers.append((host.strip("[]"), int(port)))
    return peers
