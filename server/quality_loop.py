"""Wiring of the model-quality loop into a worker: capture sink, feedback service, closing.

Kept apart from :mod:`server.worker` so that the worker only creates one
:class:`WorkerQualityLoop`, hands its sink to the core and its servicer to the server.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from server.capture import CaptureConfig, CaptureSink
from server.feedback import FeedbackCore, FeedbackPeerServicer, FeedbackServicer
from server.feedback_peers import FeedbackPeers
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import feedback_pb2_grpc as fpb_grpc
from server.generated.pronto.v1 import feedback_peer_pb2_grpc as peer_grpc
from server.safe_decode import add_servicer
from server.settings import ServeSettings, parse_peers
from server.status import Recorder

__all__ = ["FEEDBACK_SERVICE", "WorkerQualityLoop"]

FEEDBACK_SERVICE = fpb.DESCRIPTOR.services_by_name["FeedbackService"].full_name


class WorkerQualityLoop:
    """One worker's capture sink (None without a capture directory) and feedback core."""

    def __init__(
        self,
        settings: ServeSettings,
        export_metrics: bool,
        model_label: Callable[[str], str] | None = None,
    ) -> None:
        capture_metrics = feedback_metrics = None
        if export_metrics:
            from server.monitoring.quality_metrics import CaptureMetrics, FeedbackMetrics

            capture_metrics, feedback_metrics = CaptureMetrics(), FeedbackMetrics()
        directory = settings.capture_dir
        self.sink: CaptureSink | None = None
        if directory is not None:
            config = CaptureConfig(
                directory,
                sample_rate=settings.capture_sample_rate,
                buffer=settings.capture_buffer,
                flush_interval=settings.capture_flush_interval,
                max_file_bytes=settings.capture_max_file_bytes,
                rotate_seconds=settings.capture_rotate_seconds,
                upload_url=settings.capture_upload_url,
            )
            self.sink = CaptureSink(config, capture_metrics)
            self.sink.start()
        peers = None
        if directory is not None and settings.feedback_peers:
            peers = FeedbackPeers(
                parse_peers(settings.feedback_peers),
                own={f"{settings.host}:{settings.port}"},
                metrics=feedback_metrics,
            )
        self.feedback = FeedbackCore(
            directory,
            settings.capture_flush_interval,
            feedback_metrics,
            settings.capture_sample_rate,
            peers,
            model_label,
        )

    def add_to(self, server: grpc.aio.Server, recorder: Recorder) -> None:
        add_servicer(
            fpb_grpc.add_FeedbackServiceServicer_to_server,
            FeedbackServicer(self.feedback, recorder),
            server,
        )
        add_servicer(
            peer_grpc.add_FeedbackPeerServiceServicer_to_server,
            FeedbackPeerServicer(self.feedback, recorder),
            server,
        )

    async def close(self) -> None:
        """After the server stopped: write what is buffered, release the index."""
        if self.sink is not None:
            self.sink.close()
        await self.feedback.aclose()
