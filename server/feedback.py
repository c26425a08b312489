"""Label feedback: ``pronto.v1.FeedbackService`` over the shared prediction index.

Any worker can take a label for a prediction any worker of its pod served: ids are checked
against the index (:mod:`pronto_contract.labels`) in the capture directory. Only predictions
in the capture sample are indexed; the sample is a hash of the id, so the worker taking the
labels knows which ids were sampled without asking anyone, and acknowledges the others as
``unsampled``. A prediction reaches the index within one capture flush interval of being
served, so an id the index does not hold yet is looked up once more after that interval.
Ids the pod does not hold are looked for on its peers (``--feedback-peers``, the other pods
of a deployment; :mod:`server.feedback_peers`) before the caller hears NOT_FOUND. A request
is all or nothing: one bad entry and no label of it is written.

SQLite calls run on one helper thread per worker, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from pronto_contract.labels import LabelStore, UnknownPrediction, WrongLabels, is_sampled
from server.errors import ErrorKind, InvalidInput, PredictionNotFound, ProntoError
from server.feedback_peers import FeedbackPeers
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import feedback_pb2_grpc as fpb_grpc
from server.generated.pronto.v1 import feedback_peer_pb2 as peer_pb
from server.generated.pronto.v1 import feedback_peer_pb2_grpc as peer_grpc
from server.ids import MAX_ID_LENGTH
from server.metrics import MAX_LABEL_CHARS
from server.status import Recorder, rpc

__all__ = [
    "FeedbackCore",
    "FeedbackDisabled",
    "FeedbackPeerServicer",
    "FeedbackServicer",
    "PredictionNotFound",
]

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
Entries: TypeAlias = Sequence[tuple[str, Sequence[str]]]

#: most predictions in one feedback request
MAX_ENTRIES = 10_000


class FeedbackDisabled(ProntoError):
    kind = ErrorKind.PRECONDITION
    reason = "feedback_disabled"


class FeedbackCore:
    """Validates feedback and writes labels to the index (transport-neutral)."""

    def __init__(
        self,
        directory: Path | None,
        flush_interval: float,
        metrics: Any = None,
        sample_rate: float = 1.0,
        peers: FeedbackPeers | None = None,
        model_label: Callable[[str], str] | None = None,
    ) -> None:
        self.directory = directory
        #: predictions outside the capture sample are not in the index
        self.sample_rate = sample_rate
        #: how long a just-served prediction may take to reach the index
        self.settle_seconds = flush_interval * 1.5 + 0.05
        self.metrics = metrics
        self.peers = peers
        #: the metric label of a caller-sent model name: names come from callers (and an
        #: unsampled id is acknowledged without a lookup), so only bounded values are recorded
        self.model_label = model_label or (lambda name: name[:MAX_LABEL_CHARS])
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labels")
        self._store: LabelStore | None = None

    def _store_call(self, method: str, *args: Any) -> Any:
        assert self.directory is not None
        if self._store is None:  # created on the helper thread that uses it
            self._store = LabelStore(self.directory)
        return getattr(self._store, method)(*args)

    async def _in_store(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._store_call, method, *args)
        except UnknownPrediction as exc:
            raise PredictionNotFound(str(exc)) from None
        except WrongLabels as exc:
            raise InvalidInput(str(exc), exc.reason) from None

    async def held(self, name: str, entries: Entries, settle: bool = True) -> set[str]:
        """Ids of ``entries`` this pod's index holds (with ``settle``, after one settle wait
        if some are missing); INVALID_ARGUMENT when the labels of a held one are invalid."""
        held = set(await self._in_store("check", name, entries))
        if settle and len(held) < len(entries):
            await asyncio.sleep(self.settle_seconds)
            missing = [e for e in entries if e[0] not in held]
            held |= set(await self._in_store("check", name, missing))
        return held

    async def label_held(self, name: str, entries: Entries) -> int:
        """Record labels of predictions this pod holds; rows labeled."""
        return int(await self._in_store("label", name, entries))

    async def _record(self, name: str, entries: Entries) -> int:
        held = await self.held(name, entries)
        local = [e for e in entries if e[0] in held]
        remote: dict[str, list[tuple[str, Any]]] = {}
        if len(local) < len(entries):
            rest = [e for e in entries if e[0] not in held]
            if self.peers is None:
                raise PredictionNotFound(
                    f"no prediction '{rest[0][0]}' of model '{name}' (unknown, or older than "
                    "the label retention)"
                )
            remote = await self.peers.locate(name, rest)
        rows = await self.label_held(name, local) if local else 0
        for address, group in remote.items():
            assert self.peers is not None
            rows += await self.peers.commit(address, name, group)
        return rows

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
            rows = await self._record(name, sampled) if sampled else 0
        except ProntoError as exc:
            if self.metrics is not None:
                self.metrics.rejected.labels(exc.reason).inc()
            raise
        unsampled = len(entries) - len(sampled)
        if self.metrics is not None:
            label = self.model_label(name)
            self.metrics.labels.labels(label).inc(rows)
            if unsampled:
                self.metrics.unsampled.labels(label).inc(unsampled)
        return len(sampled), rows, unsampled

    async def aclose(self) -> None:
        if self.peers is not None:
            await self.peers.close()
        self.close()

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


class FeedbackPeerServicer(peer_grpc.FeedbackPeerServiceServicer):
    """``pronto.v1.FeedbackPeerService``: this pod's share of another pod's feedback."""

    def __init__(self, core: FeedbackCore, recorder: Recorder) -> None:
        self.core = core
        self.recorder = recorder

    def _entries(self, request: Any) -> list[tuple[str, list[str]]]:
        if self.core.directory is None:
            raise FeedbackDisabled("label feedback is off on this pod")
        return [(e.id, list(e.labels)) for e in request.feedback]

    @rpc
    async def CheckLabels(self, request: peer_pb.CheckLabelsRequest, context: Context) -> Any:
        entries = self._entries(request)
        try:
            # the asking pod waited for its own index to settle: by now any prediction
            # served here before the labels were sent is in this index too
            held = await self.core.held(request.name, entries, settle=False)
        except InvalidInput as exc:
            return peer_pb.CheckLabelsResponse(error=str(exc), reason=exc.reason)
        return peer_pb.CheckLabelsResponse(held=[pid for pid, _ in entries if pid in held])

    @rpc
    async def CommitLabels(self, request: peer_pb.CommitLabelsRequest, context: Context) -> Any:
        rows = await self.core.label_held(request.name, self._entries(request))
        return peer_pb.CommitLabelsResponse(labels=rows)
