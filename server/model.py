"""One loaded model version: an ONNX Runtime session plus what the server needs to know.

Everything that does not change per request (input specs, feature kinds, class labels,
the output to read labels and probabilities from) is computed once here, so requests only
look things up.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from pronto_contract import MANIFEST_FILE, MODEL_FILE, Manifest, ManifestError, read_manifest
from server.datatypes import DATATYPES, ONNX_TO_DATATYPE, Datatype
from server.textcodes import VOCABULARY, CodedSession, CodeTable, rewrite_categorical

if TYPE_CHECKING:
    from server.batching import Batcher

__all__ = [
    "PLATFORM",
    "DirectSession",
    "FeatureColumns",
    "FeatureSpec",
    "ModelHandle",
    "TensorSpec",
    "close_ort_executor",
    "load_model",
    "ort_executor",
]

log = logging.getLogger(__name__)

#: the OIP platform name of every model this server runs
PLATFORM = "onnxruntime_onnx"

_executor: concurrent.futures.ThreadPoolExecutor | None = None


#: the longest a run is expected to hold a worker's event loop and still run there. Handing a
#: run to the helper thread costs more CPU than a short run itself (a 256-row flight-delay
#: request took twice the CPU in process with the hand-over, on a 2-vCPU VM), but a long run
#: on the event loop delays health checks and every other request of the worker.
INLINE_BUDGET_S = 0.002


def inline_rows(run_seconds: Callable[[int], float], budget: float = INLINE_BUDGET_S) -> int:
    """The most rows whose run is expected to take at most ``budget`` seconds.

    ``run_seconds(rows)`` times one run of that many rows; runs of 1 and 64 rows, best of
    three each, give a fixed cost and a cost per row. 0 when a single row already takes
    the whole budget (then the bigger runs are not timed).
    """
    one = min(run_seconds(1) for _ in range(3))
    if one >= budget:
        return 0  # without timing bigger runs: a slow model loads no slower for this
    many = min(run_seconds(_TIMED_ROWS) for _ in range(3))
    per_row = max(many - one, 0.0) / (_TIMED_ROWS - 1)
    if per_row <= 0.0:
        return _MAX_INLINE_ROWS
    return min(_MAX_INLINE_ROWS, int((budget - one) / per_row) + 1)


def stays_inline(rows: int, offload_rows: int, inline_rows: int) -> bool:
    """Whether a run of ``rows`` rows stays on the event loop: below ``offload_rows``, or
    within ``inline_rows`` (:func:`inline_rows`, the model's timed warm-up)."""
    return rows < offload_rows or rows <= inline_rows


_TIMED_ROWS = 64
#: whatever the timing says: one run never holds more rows than this on the event loop
_MAX_INLINE_ROWS = 16_384


def ort_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The worker's one helper thread for ONNX Runtime runs too big for the event loop.

    One thread: big requests leave the event loop free for health checks without running
    more ONNX Runtime work in parallel than the worker has cores. Created on first use, so
    it belongs to the worker process and never to the supervisor.
    """
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ort")
    return _executor


def close_ort_executor() -> None:
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=False, cancel_futures=True)
        _executor = None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, OIP datatype and shape (-1 = any size) of a model input or output."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    #: precomputed for request validation: rank and (axis, size) of fixed dimensions
    rank: int = 0
    fixed: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, name: str, datatype: Datatype, shape: tuple[int, ...]) -> TensorSpec:
        fixed = tuple((i, d) for i, d in enumerate(shape) if d >= 0)
        return cls(name, datatype, shape, len(shape), fixed)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A named feature of the Predict API; it feeds the input of the same name, or column
    ``index`` of the packed input ``packed_in``."""

    name: str
    kind: str  # "categorical" | "numeric"
    categories: tuple[str, ...] = ()
    datatype: Datatype = DATATYPES["FP32"]
    packed_in: str | None = None
    index: int = 0


class FeatureColumns(Mapping[str, np.ndarray]):
    """A packed model's inputs seen as one ``[N, 1]`` column per named feature.

    Drift and payload capture read features by name; this view slices the packed inputs
    (no copy) only when they read, off the request path.
    """

    __slots__ = ("_feeds", "_where")

    def __init__(
        self, feeds: Mapping[str, np.ndarray], where: Mapping[str, tuple[str, int]]
    ) -> None:
        self._feeds = feeds
        self._where = where  # feature -> (input, column); -1 = the input of the same name

    def __getitem__(self, name: str) -> np.ndarray:
        source, index = self._where[name]
        array = self._feeds[source]
        return array if index < 0 else array[:, index : index + 1]

    def __iter__(self) -> Iterator[str]:
        return (n for n, (source, _) in self._where.items() if source in self._feeds)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(slots=True)
class ModelHandle:
    """A model version ready to run. Immutable after :func:`load_model` returns."""

    name: str
    version: int
    path: Path
    #: a :class:`~server.textcodes.CodedSession` when categorical inputs run as codes
    session: DirectSession | CodedSession
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...] | None
    label_output: str | None
    proba_output: str | None
    manifest: Manifest = field(default_factory=Manifest)
    load_seconds: float = 0.0
    #: the most rows a run may have and still run on the event loop past ``--offload-rows``
    #: (:func:`inline_rows`, from the timed warm-up); 0: none
    inline_rows: int = 0
    #: set by the worker when micro-batching is on for this version (see server.batching)
    batcher: Batcher | None = None
    #: packed input -> the features it carries, in column order (empty: one input per feature)
    packed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: packed models: feature -> (input, column; -1 for an input of the feature's own name)
    feature_sources: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: packed input -> the specs of its features, in column order
    packed_features: dict[str, tuple[FeatureSpec, ...]] = field(default_factory=dict)

    def feature_columns(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The request's inputs keyed by feature name (``feeds`` itself unless packed)."""
        if not self.packed:
            return feeds
        return FeatureColumns(feeds, self.feature_sources)

    @property
    def version_str(self) -> str:
        return str(self.version)

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    def runs_inline(self, rows: int, offload_rows: int) -> bool:
        """Whether a run of ``rows`` rows of this model stays on the event loop."""
        return stays_inline(rows, offload_rows, self.inline_rows)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """Run the session; ``feeds`` must already match the input specs."""
        return self.session.run(outputs, feeds)  # type: ignore[no-any-return]

    def sample_feeds(self, rows: int = 1) -> dict[str, np.ndarray]:
        """Valid inputs for a warm-up run."""
        feeds: dict[str, np.ndarray] = {}
        by_name = {f.name: f for f in self.features}
        for spec in self.inputs.values():
            shape = tuple(rows if d < 0 else d for d in spec.shape[:1]) + tuple(
                1 if d < 0 else d for d in spec.shape[1:]
            )
            if spec.datatype.name == "BYTES":
                feature = by_name.get(spec.name)
                value = feature.categories[0] if feature and feature.categories else ""
                feeds[spec.name] = np.full(shape, value, dtype=object)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=spec.datatype.dtype)
        return feeds


def _tensor_specs(args: list[Any]) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for arg in args:
        datatype = ONNX_TO_DATATYPE.get(arg.type)
        if datatype is None:  # e.g. a ZipMap sequence output: not a tensor, not served
            continue
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
        specs[arg.name] = TensorSpec.of(arg.name, DATATYPES[datatype], shape)
    return specs


def _pick_output(outputs: dict[str, TensorSpec], preferred: str, rank: int) -> str | None:
    if preferred in outputs:
        return preferred
    for spec in outputs.values():
        is_proba = spec.datatype.is_float
        if len(spec.shape) == rank and (is_proba if rank == 2 else not is_proba):
            return spec.name
    return None


def _packed(inputs: dict[str, TensorSpec], manifest: Manifest) -> dict[str, tuple[str, ...]]:
    packed: dict[str, tuple[str, ...]] = {}
    for name, columns in manifest.signature.packed.items():
        spec = inputs.get(name)
        if spec is None:
            continue  # the graph decides what is served; a stale manifest must not
        if spec.rank != 2 or spec.shape[1] != len(columns) or not spec.datatype.itemsize:
            raise ManifestError(
                f"model.json: packed input {name!r} lists {len(columns)} columns, the model's "
                f"input has shape {list(spec.shape)} of {spec.datatype.name}"
            )
        packed[name] = tuple(columns)
    return packed


def _features(
    inputs: dict[str, TensorSpec], manifest: Manifest, packed: dict[str, tuple[str, ...]]
) -> tuple[FeatureSpec, ...]:
    features = []
    for spec in inputs.values():
        columns = packed.get(spec.name)
        if columns is not None:
            # a packed input is numeric (checked by _packed): so is each of its columns
            for index, column in enumerate(columns):
                features.append(FeatureSpec(column, "numeric", (), spec.datatype, spec.name, index))
            continue
        info = manifest.signature.input(spec.name)
        kind = info.kind if info is not None else None
        if kind is None:
            kind = "categorical" if spec.datatype.name == "BYTES" else "numeric"
        categories = tuple(info.categories) if info is not None else ()
        features.append(FeatureSpec(spec.name, kind, categories, spec.datatype))
    return tuple(features)


class DirectSession:
    """An ONNX Runtime session whose ``run`` calls the binding itself.

    ``InferenceSession.run`` checks on every call that each required input is in the feed
    (a Python loop over the graph's inputs), that no fed OrtValue belongs to another
    session's device, and that no graph capture is on. The request path has already
    checked the feeds against the model's specs (numpy arrays, one per input), and those
    checks took about a quarter of a single-row run of the default model (2.3 of 9.3 µs;
    1.1 of 4.1 µs for a 30-feature packed one). An input missing all the same still
    fails, in ONNX Runtime itself.
    """

    __slots__ = ("_run", "session")

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        binding = getattr(session, "_sess", None)  # absent: keep the checked call
        self._run = session.run if binding is None else binding.run

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[Any]:
        names = outputs or [o.name for o in self.session.get_outputs()]  # none: every output
        return self._run(names, feeds, None)  # type: ignore[no-any-return]

    def get_inputs(self) -> list[Any]:
        return self.session.get_inputs()  # type: ignore[no-any-return]

    def get_outputs(self) -> list[Any]:
        return self.session.get_outputs()  # type: ignore[no-any-return]


def _session(
    name: str, version: int, path: Path, options: ort.SessionOptions, category_codes: bool
) -> DirectSession | CodedSession:
    """The model's session; over the graph with categorical inputs taking integer codes
    (:mod:`server.textcodes`) when ``category_codes`` and the graph allows it."""

    def open_graph(graph: str | bytes) -> DirectSession:
        return DirectSession(
            ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        )

    rewritten = None
    if category_codes and VOCABULARY is not None:
        try:
            rewritten = rewrite_categorical((path / MODEL_FILE).read_bytes())
        except Exception as exc:  # not a graph we can read: ONNX Runtime says why below
            log.debug("%s version %d: categorical inputs not rewritten (%r)", name, version, exc)
    if rewritten is None:
        return open_graph(str(path / MODEL_FILE))
    try:
        session = open_graph(rewritten.model)
    except Exception as exc:  # never a reason not to serve the model as it is
        log.warning("%s version %d: categorical inputs stay text (%r)", name, version, exc)
        return open_graph(str(path / MODEL_FILE))
    tables = {n: CodeTable(n, c) for n, c in rewritten.categories.items()}
    log.info("%s version %d: categorical inputs run as codes: %s",
             name, version, ", ".join(tables))  # fmt: skip
    return CodedSession(session, tables)


def load_model(
    name: str, version: int, path: Path, intra_op_threads: int = 1, category_codes: bool = True
) -> ModelHandle:
    """Load ``path/model.onnx`` (and ``model.json`` when present), then warm it up.

    A ``model.json`` that does not validate raises
    :class:`~pronto_contract.ManifestError`, so the version is not served.
    """
    started = time.perf_counter()
    manifest = read_manifest(path) if (path / MANIFEST_FILE).exists() else Manifest()
    options = ort.SessionOptions()
    # Parallelism comes from worker processes; more threads per session would
    # only make the workers fight over the same cores.
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = _session(name, version, path, options, category_codes)
    inputs = _tensor_specs(session.get_inputs())
    outputs = _tensor_specs(session.get_outputs())
    classes_raw = manifest.signature.classes
    packed = _packed(inputs, manifest)
    handle = ModelHandle(
        name=name,
        version=version,
        path=path,
        session=session,
        inputs=inputs,
        outputs=outputs,
        features=_features(inputs, manifest, packed),
        classes=tuple(classes_raw) if classes_raw else None,
        label_output=_pick_output(outputs, "label", 1) or _pick_output(outputs, "label", 2),
        proba_output=_pick_output(outputs, "probabilities", 2),
        manifest=manifest,
        packed=packed,
    )
    if packed:
        handle.packed_features = {
            name: tuple(f for f in handle.features if f.packed_in == name) for name in packed
        }
        handle.feature_sources = {
            f.name: (f.packed_in, f.index) if f.packed_in else (f.name, -1) for f in handle.features
        }
    # Warm-up: the first run allocates and plans; do it before reporting ready.
    results = handle.run(handle.sample_feeds(), handle.output_names)
    if handle.classes is not None and handle.proba_output is not None:
        width = results[handle.output_names.index(handle.proba_output)].shape[-1]
        if width != len(handle.classes):
            # a manifest that disagrees with the graph must not break every Predict
            log.warning(
                "%s version %d: model.json lists %d classes, the model outputs %d; "
                "keying probabilities by class index",
                name, version, len(handle.classes), width,
            )  # fmt: skip
            handle.classes = None

    def run_seconds(rows: int) -> float:
        feeds, names = handle.sample_feeds(rows), handle.output_names
        start = time.perf_counter()
        handle.run(feeds, names)
        return time.perf_counter() - start

    # a model whose batch axis is fixed is never timed: its sample runs cannot grow
    if all(spec.shape[:1] == (-1,) for spec in handle.inputs.values()):
        try:
            handle.inline_rows = inline_rows(run_seconds)
        except Exception as exc:  # timing is an optimisation: never a reason not to serve
            log.warning("%s version %d: runs not timed (%r); large runs go to the helper thread",
                        name, version, exc)  # fmt: skip
    handle.load_seconds = time.perf_counter() - started
    log.info("loaded %s version %d in %.3fs", name, version, handle.load_seconds)
    return handle
