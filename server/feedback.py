"""Label feedback: ``pronto.v1.FeedbackService`` over the shared prediction index.

Any worker can take a label for a prediction any worker served: ids are checked against the
index (:mod:`server.labels`) in the capture directory. Only predictions in the capture sample
are indexed; the sample is a hash of the id, so the worker taking the labels knows which ids
were sampled without asking anyone, and acknowledges the others as ``unsampled``. A
prediction reaches the index within one capture flush interval of being served, so an id the
index does not hold yet is looked up once more after that interval before the caller hears
NOT_FOUND. A request is all or
nothing: one bad entry and no label of it is written.

SQLite calls run on one helper thread per worker, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from server.errors import InvalidInput, ProntoError, Recorder, rpc
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import feedback_pb2_grpc as fpb_grpc
from server.ids import MAX_ID_LENGTH
from server.labels import LabelStore, UnknownPrediction, WrongLabels, is_sampled

__all__ = ["FeedbackCore", "FeedbackDisabled", "FeedbackServicer", "PredictionNotFound"]

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

#: most predictions in one feedback request
MAX_ENTRIES = 10_000


class PredictionNotFound(ProntoError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "unknown_id"


class FeedbackDisabled(ProntoError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "feedback_disabled"


class FeedbackCore:
    """Validates feedback and writes labels to the index (transport-neutral)."""

    def __init__(
        self,
        directory: Path | None,
        flush_interval: float,
        metrics: Any = None,
        sample_rate: float = 1.0,
    ) -> None:
        self.directory = directory
        #: predictions outside the capture sample are not in the index
        self.sample_rate = sample_rate
        #: how long a just-served prediction may take to reach the index
        self.settle_seconds = flush_interval * 1.5 + 0.05
        self.metrics = metrics
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labels")
        self._store: LabelStore | None = None

    def _label(self, name: str, entries: Sequence[tuple[str, Sequence[str]]]) -> int:
        assert self.directory is not None
        if self._store is None:  # created on the helper thread that uses it
            self._store = LabelStore(self.directory)
        return self._store.label(name, entries)

    async def feedback(
        self, name: str, entries: Sequence[tuple[str, Sequence[str]]]
    ) -> tuple[int, int, int]:
        """Record labels; returns predictions and rows labeled, and predictions unsampled."""
        try:
            if self.directory is None:
                raise FeedbackDisabled(
                    "label feedback is off: the server runs without a capture directory"
                )
            if not name:
                raise InvalidInput("model name is empty", "feedback")
            if not entries:
                raise InvalidInput("no feedback entries", "feedback")
            if len(entries) > MAX_ENTRIES:
                raise InvalidInput(
                    f"{len(entries)} feedback entries exceed the limit of {MAX_ENTRIES}",
                    "feedback",
                )
            seen: set[str] = set()
            for pid, labels in entries:
                if not pid or len(pid) > MAX_ID_LENGTH:
                    raise InvalidInput(f"feedback id '{pid[:MAX_ID_LENGTH]}' is not valid", "id")
                if pid in seen:
                    raise InvalidInput(f"prediction '{pid}' appears twice", "duplicate_id")
                if not labels:
                    raise InvalidInput(f"no labels for prediction '{pid}'", "label_count")
                seen.add(pid)
            sampled = [e for e in entries if is_sampled(e[0], self.sample_rate)]
            rows = 0
            loop = asyncio.get_running_loop()
            try:
                try:
                    if sampled:
                        rows = await loop.run_in_executor(
                            self._executor, self._label, name, sampled
                        )
                except UnknownPrediction:
                    await asyncio.sleep(self.settle_seconds)
                    rows = await loop.run_in_executor(self._executor, self._label, name, sampled)
            except UnknownPrediction as exc:
                raise PredictionNotFound(str(exc)) from None
            except WrongLabels as exc:
                raise InvalidInput(str(exc), exc.reason) from None
        except ProntoError as exc:
            if self.metrics is not None:
                self.metrics.rejected.labels(exc.reason).inc()
            raise
        unsampled = len(entries) - len(sampled)
        if self.metrics is not None:
            self.metrics.labels.labels(name).inc(rows)
            if unsampled:
                self.metrics.unsampled.labels(name).inc(unsampled)
        return len(sampled), rows, unsampled

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._store is not None:
            self._store.close()


class FeedbackServicer(fpb_grpc.FeedbackServiceServicer):
    """``pronto.v1.FeedbackService``: true labels of earlier predictions."""

    def __init__(self, core: FeedbackCore, recorder: Recorder) -> None:
        self.core = core
        self.recorder = recorder

    @rpc
    async def Feedback(self, request: fpb.FeedbackRequest, context: Context) -> Any:
        entries = [(e.id, list(e.labels)) for e in request.feedback]
        predictions, rows, unsampled = await self.core.feedback(request.name, entries)
        return fpb.FeedbackResponse(predictions=predictions, labels=rows, unsampled=unsampled)
