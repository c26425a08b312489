"""The transport-neutral inference core (one per worker process).

Servicers convert wire messages to :class:`InferRequest` / instance mappings, call the
core, and convert back; validation against the model and the actual run live here only.
:meth:`InferenceCore.run` hands requests to the model's micro-batcher when it has one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from server import tracing
from server.datatypes import Datatype
from server.errors import InvalidInput, ModelNotFound, Overloaded, ServerNotReady
from server.features import Columns, columns_from_inputs, columns_from_instances
from server.guard import AdmissionGuard
from server.ids import MAX_ID_LENGTH, IdGenerator
from server.model import ModelHandle, close_ort_executor, ort_executor
from server.repository import Registry
from server.shedding import QueueDelayGuard

if TYPE_CHECKING:
    from server.rollout import RolloutRouter

__all__ = [
    "InferRequest",
    "InferResponse",
    "InferenceCore",
    "InferenceObserver",
    "Prediction",
    "PredictionSink",
    "Tensor",
]

SERVER_NAME = "pronto"
_STR = {str}


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: Datatype
    data: np.ndarray


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str
    inputs: list[Tensor]
    #: requested output names; empty means all outputs
    outputs: list[str] = field(default_factory=list)
    id: str = ""
    raw_output: bool = False


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]
    raw_output: bool


@dataclass(slots=True)
class Prediction:
    model_name: str
    model_version: str
    labels: list[str]
    classes: list[str]
    probabilities: np.ndarray  # [rows, classes], float64
    id: str = ""


class InferenceObserver(Protocol):
    """Sees every served batch (e.g. drift monitoring); must only buffer, never block."""

    def observe(
        self, handle: ModelHandle, feeds: Mapping[str, np.ndarray], proba: Any, rows: int
    ) -> None: ...


class PredictionSink(Protocol):
    """Sees every prediction with its id (payload capture, label joins); must only buffer."""

    def record(
        self,
        prediction_id: str,
        handle: ModelHandle,
        feeds: Mapping[str, np.ndarray],
        labels: Any,
        proba: Any,
        rows: int,
    ) -> None: ...


class InferenceCore:
    """Validates requests against a model's signature and runs it."""

    def __init__(
        self,
        registry: Registry,
        *,
        version: str = "0",
        max_batch_size: int = 1_000_000,
        offload_rows: int = 256,
        observer: InferenceObserver | None = None,
        guard: AdmissionGuard | None = None,
        sink: PredictionSink | None = None,
    ) -> None:
        self.registry = registry
        self.observer = observer
        self.sink = sink
        self.new_id = IdGenerator()
        self.version = version
        self.max_batch_size = max_batch_size
        self.offload_rows = offload_rows
        self.guard = guard
        self.ready = False
        self.draining = False
        #: models that must all be loaded for the server to report ready (strict readiness)
        self.required_models: frozenset[str] = frozenset()
        #: canary routing of unversioned requests (set by the worker; see server.rollout)
        self.router: RolloutRouter | None = None
        #: refuses inference while requests queue too long (disabled until the worker sets it)
        self.queue_guard = QueueDelayGuard(0.0)

    # -- health and metadata -------------------------------------------------
    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        return (
            self.ready and not self.draining and self.required_models <= set(self.registry.names())
        )

    def model_ready(self, name: str, version: str = "") -> bool:
        if not self.ready or self.draining:
            return False
        try:
            self.registry.get(name, version)
        except ModelNotFound:
            return False
        return True

    def server_metadata(self) -> tuple[str, str, list[str]]:
        return SERVER_NAME, self.version, []

    def model(self, name: str, version: str = "") -> ModelHandle:
        return self.registry.get(name, version)

    # -- inference -----------------------------------------------------------
    def _check_ready(self) -> None:
        if not self.ready:
            raise ServerNotReady("server is not ready")

    def _shed(self) -> None:
        # after the model lookup, so that refusals are counted under real model names only
        raise Overloaded(
            f"server overloaded: the request could not start within "
            f"{self.queue_guard.max_delay * 1000:g} ms; retry later"
        )

    def _feeds(self, handle: ModelHandle, request: InferRequest) -> dict[str, np.ndarray]:
        specs = handle.inputs
        feeds: dict[str, np.ndarray] = {}
        batch = -1
        for t in request.inputs:
            spec = specs.get(t.name)
            if spec is None:
                raise InvalidInput(
                    f"unexpected input '{t.name}' for model '{handle.name}'", "unknown_input"
                )
            if t.datatype is not spec.datatype:
                raise InvalidInput(
                    f"input '{t.name}' has datatype {t.datatype.name}, "
                    f"model '{handle.name}' expects {spec.datatype.name}",
                    "datatype",
                )
            shape = t.data.shape
            bad = len(shape) != spec.rank
            for axis, size in spec.fixed:  # usually one fixed axis: a loop beats any()
                bad = bad or shape[axis] != size
            if bad:
                raise InvalidInput(
                    f"input '{t.name}' has shape {list(shape)}, "
                    f"model '{handle.name}' expects {list(spec.shape)}",
                    "shape",
                )
            if batch < 0:
                batch = shape[0]
            elif shape[0] != batch:
                raise InvalidInput(
                    f"input '{t.name}' has batch size {shape[0]}, other inputs have {batch}",
                    "shape",
                )
            feeds[t.name] = t.data
        if len(feeds) != len(specs):
            missing = [n for n in specs if n not in feeds]
            raise InvalidInput(
                f"missing inputs for model '{handle.name}': {', '.join(missing)}",
                "missing_input",
            )
        if len(feeds) != len(request.inputs):
            raise InvalidInput("duplicate input names", "duplicate_input")
        return feeds

    async def run(
        self, handle: ModelHandle, feeds: dict[str, np.ndarray], outputs: list[str], rows: int
    ) -> list[np.ndarray]:
        """Run the model; small requests inline (cheapest), big ones on the helper thread."""
        if self.guard is not None:
            with self.guard.admit(rows):
                return await self._run(handle, feeds, outputs, rows)
        return await self._run(handle, feeds, outputs, rows)

    async def _run(
        self, handle: ModelHandle, feeds: dict[str, np.ndarray], outputs: list[str], rows: int
    ) -> list[np.ndarray]:
        if tracing.ENABLED and tracing.recording():
            return await tracing.traced_run(self, handle, feeds, outputs, rows)
        batcher = handle.batcher
        if batcher is not None:
            return await batcher.run(feeds, outputs, rows)
        if handle.runs_inline(rows, self.offload_rows):
            return handle.run(feeds, outputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ort_executor(), handle.run, feeds, outputs)

    async def infer(self, request: InferRequest, queued_at: float = 0.0) -> InferResponse:
        """Run one inference; ``queued_at``: when the gateway received it (0: unknown)."""
        self._check_ready()
        handle = self.registry.get(request.model_name, request.model_version)
        if self.queue_guard.refuse(queued_at):
            self._shed()
        prediction_id = self._id(request.id)
        router = self.router
        if router is not None and not request.model_version:
            candidate = router.canary_for(handle, prediction_id)
            if candidate is not None:
                return await router.canary(self._infer, handle, candidate, request, prediction_id)
        return await self._infer(handle, request, prediction_id)

    async def _infer(
        self, handle: ModelHandle, request: InferRequest, prediction_id: str
    ) -> InferResponse:
        feeds = self._feeds(handle, request)
        names = request.outputs or handle.output_names
        for name in names:
            if name not in handle.outputs:
                raise InvalidInput(
                    f"unknown output '{name}' for model '{handle.name}'", "unknown_output"
                )
        rows = request.inputs[0].data.shape[0] if request.inputs else 0
        results = await self.run(handle, feeds, names, rows)
        if self.observer is not None or self.sink is not None:
            proba_name = handle.proba_output
            proba = results[names.index(proba_name)] if proba_name in names else None
            if self.observer is not None:
                self.observer.observe(handle, feeds, proba, rows)
            if self.sink is not None:
                label = handle.label_output
                labels = results[names.index(label)] if label in names else None
                self.sink.record(prediction_id, handle, feeds, labels, proba, rows)
        outputs = handle.outputs
        tensors = [Tensor(n, outputs[n].datatype, a) for n, a in zip(names, results, strict=True)]
        return InferResponse(
            handle.name, handle.version_str, prediction_id, tensors, request.raw_output
        )

    def _id(self, requested: str) -> str:
        """The caller's prediction id, or a new one."""
        if not requested:
            return self.new_id()
        if len(requested) > MAX_ID_LENGTH:
            raise InvalidInput(f"id is longer than {MAX_ID_LENGTH} characters", "id")
        return requested

    async def predict(
        self,
        name: str,
        version: str,
        instances: Sequence[Mapping[str, Any]] | Columns,
        id: str = "",
        queued_at: float = 0.0,
    ) -> Prediction:
        """Named-feature prediction: label and class probabilities per instance; the rows
        come as instances or in columnar form (:class:`~server.features.Columns`)."""
        self._check_ready()
        handle = self.registry.get(name, version)
        if self.queue_guard.refuse(queued_at):
            self._shed()
        prediction_id = self._id(id)
        router = self.router
        if router is not None and not version:
            candidate = router.canary_for(handle, prediction_id)
            if candidate is not None:
                return await router.canary(
                    self._predict, handle, candidate, instances, prediction_id
                )
        return await self._predict(handle, instances, prediction_id)

    async def _predict(
        self,
        handle: ModelHandle,
        instances: Sequence[Mapping[str, Any]] | Columns,
        prediction_id: str,
    ) -> Prediction:
        name = handle.name
        if handle.proba_output is None or handle.label_output is None:
            raise InvalidInput(f"model '{name}' is not a classifier", "not_classifier")
        if not instances:
            raise InvalidInput("empty batch: no instances", "empty_batch")
        if len(instances) > self.max_batch_size:
            raise InvalidInput(
                f"{len(instances)} instances exceed the limit of {self.max_batch_size}",
                "batch_too_large",
            )
        if self.guard is not None:
            self.guard.check(len(instances))  # before the columns are built
        if isinstance(instances, Columns):
            feeds = columns_from_inputs(handle.features, instances, handle.packed_features)
        else:
            feeds = columns_from_instances(handle.features, instances, handle.packed_features)
        label, proba = await self.run(
            handle, feeds, [handle.label_output, handle.proba_output], len(instances)
        )
        if self.observer is not None:
            self.observer.observe(handle, feeds, proba, len(instances))
        if self.sink is not None:
            self.sink.record(prediction_id, handle, feeds, label, proba, len(instances))
        proba = np.asarray(proba, dtype=np.float64).reshape(len(instances), -1)
        classes = list(handle.classes or [str(i) for i in range(proba.shape[1])])
        labels = label.ravel().tolist()
        if not set(map(type, labels)) <= _STR:  # integer class labels, say
            labels = [x if isinstance(x, str) else str(x) for x in labels]
        return Prediction(handle.name, handle.version_str, labels, classes, proba, prediction_id)

    def close(self) -> None:
        close_ort_executor()
