"""One worker process: load and warm the models, then serve gRPC until told to stop.

Runs in a child forked by the supervisor. Models load before the server binds, so the
shared SO_REUSEPORT port only routes connections to workers that can answer them. On
SIGTERM/SIGINT the worker drains: health → NOT_SERVING, optional delay, then
``server.stop(grace)`` lets in-flight RPCs finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pronto_contract import select_versions
from server import __version__
from server.batching import Batcher, BatchingConfig
from server.core import InferenceCore
from server.drift import DriftMonitor
from server.errors import EXIT_FATAL
from server.event_loop import run_loop
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.guard import AdmissionGuard
from server.health import GatewayAwareHealth
from server.metrics import ENV, RequestRecorder, ServerMetrics
from server.model import ModelHandle, load_model
from server.oip_codec import InferWire, max_elements_for
from server.predict_json import HttpBodyReply
from server.quality_loop import FEEDBACK_SERVICE, WorkerQualityLoop
from server.reflection import enable_reflection
from server.reload import Reloader, _stamp, version_policies
from server.repository import LoadFailure, Registry
from server.rollout import RolloutRouter, combine_sinks
from server.safe_decode import add_servicer
from server.servicers import InferenceServicer, MetadataReplies, PredictionServicer
from server.settings import ServeSettings
from server.shedding import QueueDelayGuard
from server.template import Preloaded, cached_handle

__all__ = ["EXIT_FATAL", "run_worker"]

log = logging.getLogger(__name__)


SERVICES = (
    pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    ppb.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    FEEDBACK_SERVICE,
)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the supervisor dies, so workers never linger."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _load_fresh(settings: ServeSettings, name: str, version: int, path: Path) -> ModelHandle:
    """A model version loaded from disk with the serve settings that shape its session."""
    return load_model(name, version, path, settings.intra_op_threads, settings.category_codes)


def _load(
    settings: ServeSettings, preloaded: Preloaded | None, name: str, version: int, path: Path
) -> ModelHandle:
    handle = cached_handle(preloaded, name, version, path) or _load_fresh(
        settings, name, version, path
    )
    config = BatchingConfig.resolve(
        handle.manifest, settings.batching_max_batch_size, settings.batching_max_queue_delay_us
    )
    if config is not None:
        handle.batcher = Batcher(handle, config, settings.offload_rows)
        log.info("%s version %d: micro-batching %s", name, version, config)
    return handle


def preload_models(settings: ServeSettings, preloaded: Preloaded) -> bool:
    """Load (in the warm template) what the version policy selects now; keep what is loaded.
    Returns whether a version was loaded or dropped.

    Handles here carry no micro-batcher: that belongs to each worker's event loop.
    """
    policy, policies = version_policies(settings)
    wanted = select_versions(settings.model_repository, settings.models, policy, policies)
    keep: set[tuple[str, int]] = set()
    changed = False
    for name, versions in wanted.items():
        for version, path in versions.items():
            keep.add((name, version))
            if cached_handle(preloaded, name, version, path) is None:
                with contextlib.suppress(Exception):  # the worker retries and reports it
                    stamp = _stamp(path)
                    preloaded[(name, version)] = (
                        stamp,
                        _load_fresh(settings, name, version, path),
                    )
                    changed = True
    for key in set(preloaded) - keep:
        del preloaded[key]
        changed = True
    return changed


def server_options(settings: ServeSettings) -> list[tuple[str, int]]:
    """Channel arguments of a worker's gRPC server.

    Only the ``identity`` encoding is enabled: gRPC checks the message cap on the wire
    size, so a 1 MB gzip message could inflate to a gigabyte inside the worker. A
    compressed request is refused with UNIMPLEMENTED before it is inflated.
    """
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.compression_enabled_algorithms_bitset", 1),  # 1 << GRPC_COMPRESS_NONE
    ]


def admission_guard(settings: ServeSettings) -> AdmissionGuard:
    return AdmissionGuard(
        settings.max_rows_in_flight, settings.memory_limit_mb * 2**20, settings.offload_rows
    )


def run_worker(settings: ServeSettings, index: int, preloaded: Preloaded | None = None) -> int:
    """Entry point of a forked worker; returns its exit status.

    ``preloaded``: model handles of the warm template this worker was forked from.
    """
    _die_with_parent()
    return run_loop(settings.event_loop, _serve(settings, index, preloaded))


def _reloader(
    settings: ServeSettings,
    registry: Registry,
    core: InferenceCore,
    health: GatewayAwareHealth,
    metrics: ServerMetrics | None,
    drift: DriftMonitor,
    preloaded: Preloaded | None,
    router: RolloutRouter,
) -> Reloader:
    """The worker's view of the model repository, with its metrics and health hooks."""
    policy, policies = version_policies(settings)

    def loaded(h: ModelHandle) -> None:
        if metrics is not None:
            metrics.model_load_seconds.labels(h.name, h.version_str).set(h.load_seconds)
        drift.register(h)

    def failed(f: LoadFailure) -> None:
        if metrics is not None:
            metrics.model_load_failures.labels(f.name, str(f.version)).inc()

    async def installed(serving: set[str], removed: set[str]) -> None:
        # per-model readiness is this worker's own registry, so Envoy's per-endpoint
        # health checks see exactly what each worker can answer
        if core.draining:
            return
        for name in serving:
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        for name in removed:
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if core.required_models:
            await health.set("", _overall(core))

    return Reloader(
        registry,
        settings.model_repository,
        names=settings.models,
        policy=policy,
        policies=policies,
        load=functools.partial(_load, settings, preloaded),
        on_loaded=loaded,
        on_failed=failed,
        on_installed=installed,
        pinned=router.refresh,
    )


def _overall(core: InferenceCore) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    """The overall service's status: with strict readiness, SERVING only while every
    required model is loaded."""
    if core.server_ready():
        return health_pb2.HealthCheckResponse.SERVING
    return health_pb2.HealthCheckResponse.NOT_SERVING


def _grpc_server(
    settings: ServeSettings,
    index: int,
    core: InferenceCore,
    recorder: RequestRecorder,
    health: GatewayAwareHealth,
    quality: WorkerQualityLoop,
    router: RolloutRouter,
    reloader: Reloader,
) -> grpc.aio.Server | None:
    """The worker's server with every service added and its ports bound; None if a port
    cannot be bound."""
    server = grpc.aio.server(
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    max_elements = max_elements_for(settings.max_message_bytes)
    metadata = MetadataReplies(core)
    add_servicer(
        pb_grpc.add_GRPCInferenceServiceServicer_to_server,
        InferenceServicer(core, recorder, max_elements, metadata),
        server,
        deserializers={"ModelInfer": InferWire},  # read from the wire bytes (oip_codec)
    )
    add_servicer(
        ppb_grpc.add_PredictionServiceServicer_to_server,
        PredictionServicer(core, recorder, max_elements, metadata),
        server,
        serializers=dict.fromkeys(
            ("PredictJson", "ModelInferJson", "ModelMetadataJson"), HttpBodyReply.serialize
        ),
    )
    quality.add_to(server, recorder)
    router.add_admin_to(server, recorder, reloader.trigger, index)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        server, (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    )
    addresses = [f"{settings.host}:{settings.port}"]
    if settings.worker_base_port:
        addresses.append(f"{settings.worker_host}:{settings.worker_base_port + index}")
    for address in addresses:
        try:
            server.add_insecure_port(address)
        except RuntimeError:
            log.error("worker %d: cannot listen on %s", index, address)
            return None
    return server


@dataclass(slots=True)
class _Parts:
    """What one worker serves with, built before any model loads."""

    metrics: ServerMetrics | None
    registry: Registry
    recorder: RequestRecorder
    drift: DriftMonitor
    health: GatewayAwareHealth
    quality: WorkerQualityLoop
    router: RolloutRouter
    guard: AdmissionGuard
    core: InferenceCore


def _parts(settings: ServeSettings) -> _Parts:
    metrics = ServerMetrics() if ENV in os.environ else None
    registry = Registry()
    recorder = RequestRecorder(metrics, registry)
    drift = DriftMonitor(
        enabled=settings.drift and metrics is not None,
        sample_rows=settings.drift_sample_rows,
        sample_requests=settings.drift_sample_requests,
    )
    health = GatewayAwareHealth()
    quality = WorkerQualityLoop(settings, metrics is not None, recorder.model_label)
    router = RolloutRouter.for_worker(settings, registry, metrics is not None)
    guard = admission_guard(settings)
    core = InferenceCore(
        registry,
        version=__version__,
        max_batch_size=settings.max_batch_size,
        offload_rows=settings.offload_rows,
        observer=drift if drift.enabled else None,
        guard=guard,
        sink=combine_sinks(quality.sink, router),
    )
    core.queue_guard = QueueDelayGuard(settings.max_queue_delay_ms / 1000)
    core.router = router
    if settings.strict_readiness and settings.models:
        core.required_models = frozenset(settings.models)
    return _Parts(metrics, registry, recorder, drift, health, quality, router, guard, core)


async def _open(server: grpc.aio.Server, parts: _Parts, index: int) -> None:
    """Ready before the ports open: the first health check already sees SERVING."""
    core, health = parts.core, parts.health
    core.ready = True
    for service in (*SERVICES, *parts.registry.names()):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", _overall(core))
    await server.start()
    if parts.metrics is not None:
        parts.metrics.workers_ready.set(1)
    names = ", ".join(parts.registry.names())
    log.info("worker %d (pid %d) serving %s", index, os.getpid(), names)


def _background(settings: ServeSettings, parts: _Parts) -> list[asyncio.Task[None]]:
    """The worker's timers: metric flushes, queue-delay sampling, memory trimming."""
    interval = settings.metrics_flush_interval
    return [
        asyncio.create_task(parts.recorder.run_flusher(interval)),
        asyncio.create_task(parts.drift.run_flusher(interval)),
        asyncio.create_task(parts.router.run_flusher(interval)),
        asyncio.create_task(parts.core.queue_guard.run()),
        asyncio.create_task(parts.guard.run_trimmer(1.0)),
    ]


async def _serve(settings: ServeSettings, index: int, preloaded: Preloaded | None) -> int:
    # Handlers first: a signal during model loading then leads to a clean, empty drain.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    p = _parts(settings)
    try:
        reloader = _reloader(
            settings, p.registry, p.core, p.health, p.metrics, p.drift, preloaded, p.router
        )
    except ValueError as exc:  # a malformed version policy
        log.error("worker %d: %s", index, exc)
        return EXIT_FATAL
    reloader.load_initial()
    if not p.registry.names():
        log.error("worker %d: no model could be loaded from %s", index, settings.model_repository)
        return EXIT_FATAL
    server = _grpc_server(
        settings, index, p.core, p.recorder, p.health, p.quality, p.router, reloader
    )
    if server is None:
        return EXIT_FATAL
    await _open(server, p, index)

    tasks = _background(settings, p)
    loop.add_signal_handler(signal.SIGHUP, reloader.trigger)
    poller = None
    if settings.model_poll_interval:
        poller = asyncio.create_task(reloader.run(settings.model_poll_interval))
    await stop.wait()
    if poller is not None:
        poller.cancel()
    loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the default action would kill the drain
    await _shutdown(settings, index, server, p, reloader, tasks)
    return 0


async def _shutdown(
    settings: ServeSettings,
    index: int,
    server: grpc.aio.Server,
    parts: _Parts,
    reloader: Reloader,
    tasks: list[asyncio.Task[None]],
) -> None:
    """Drain, stop the timers, write the last metrics, and close what the worker opened."""
    await _drain(settings, index, server, parts.core, parts.health, parts.metrics)
    for task in tasks:
        task.cancel()
    parts.recorder.flush()
    parts.drift.flush()
    parts.router.flush()
    parts.router.close()
    reloader.close()
    parts.core.close()
    await parts.quality.close()


async def _drain(
    settings: ServeSettings,
    index: int,
    server: grpc.aio.Server,
    core: InferenceCore,
    health: GatewayAwareHealth,
    metrics: ServerMetrics | None,
) -> None:
    """Health NOT_SERVING, an optional delay for load balancers to notice, then let
    in-flight RPCs finish within the grace period."""
    log.info("worker %d draining (grace %.1fs)", index, settings.grace_period)
    core.draining = True
    await health.enter_graceful_shutdown()
    if metrics is not None:
        metrics.workers_ready.set(0)
    if settings.drain_delay:
        await asyncio.sleep(settings.drain_delay)
    await server.stop(settings.grace_period)
