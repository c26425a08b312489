"""Wiring of the model-quality loop into a worker: capture sink, feedback service, closing.

Kept apart from :mod:`server.worker` so that the worker only creates one
:class:`WorkerQualityLoop`, hands its sink to the core and its servicer to the server.
"""

from __future__ import annotations

import grpc

from server.capture import CaptureConfig, CaptureSink
from server.errors import Recorder
from server.feedback import FeedbackCore, FeedbackServicer
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import feedback_pb2_grpc as fpb_grpc
from server.registration import add_servicer
from server.settings import ServeSettings

__all__ = ["FEEDBACK_SERVICE", "WorkerQualityLoop"]

FEEDBACK_SERVICE = fpb.DESCRIPTOR.services_by_name["FeedbackService"].full_name


class WorkerQualityLoop:
    """One worker's capture sink (None without a capture directory) and feedback core."""

    def __init__(self, settings: ServeSettings, export_metrics: bool) -> None:
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
            )
            self.sink = CaptureSink(config, capture_metrics)
            self.sink.start()
        self.feedback = FeedbackCore(
            directory,
            settings.capture_flush_interval,
            feedback_metrics,
            settings.capture_sample_rate,
        )

    def add_to(self, server: grpc.aio.Server, recorder: Recorder) -> None:
        add_servicer(
            fpb_grpc.add_FeedbackServiceServicer_to_server,
            FeedbackServicer(self.feedback, recorder),
            server,
        )

    def close(self) -> None:
        """After the server stopped: write what is buffered, release the index."""
        if self.sink is not None:
            self.sink.close()
        self.feedback.close()
