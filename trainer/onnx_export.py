"""ONNX export of the fitted pipeline and the parity gate that guards publishing.

By default one graph input per feature, shape ``[None, 1]``: categorical features as string
tensors, numeric ones as FP32. With a ``packed`` input name, the numeric features are the
columns of that one ``[None, k]`` FP32 input instead (in ``numeric`` order), which saves a
client one tensor per column and ONNX Runtime one input binding per column; categorical
features stay one string input each. ``zipmap`` is off, so the outputs are ``label`` and
``probabilities`` (``[N, n_classes]``, FP32) in the order of ``classifier.classes_``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.pipeline import Pipeline

from trainer.errors import ParityError

__all__ = [
    "ONNX_ML_OPSET",
    "ONNX_OPSET",
    "PACKED_INPUT",
    "ParityResult",
    "check_parity",
    "export_onnx",
    "onnx_feeds",
    "require_parity",
    "run_onnx",
]

# Supported by onnxruntime 1.32 (and several releases before it).
ONNX_OPSET = 18
ONNX_ML_OPSET = 3
#: name of the one FP32 input that holds every numeric column of a packed model
PACKED_INPUT = "numeric_features"


@dataclass
class ParityResult:
    passed: bool
    max_abs_diff: float
    rows: int
    labels_equal: bool
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(
    pipeline: Pipeline, categorical: list[str], numeric: list[str], packed: str | None = None
) -> bytes:
    """The ONNX graph of a fitted pipeline; ``packed``: name of the one numeric input (the
    pipeline must then select columns by position, see :func:`trainer.model.build_pipeline`)."""
    initial_types: list[tuple[str, Any]] = [(c, StringTensorType([None, 1])) for c in categorical]
    if packed is not None and numeric:
        initial_types.append((packed, FloatTensorType([None, len(numeric)])))
    else:
        initial_types += [(c, FloatTensorType([None, 1])) for c in numeric]
    model = to_onnx(
        pipeline,
        initial_types=initial_types,
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
    )
    model.doc_string = "pronto tabular classifier"
    # skl2onnx lists opsets in set order, which varies with PYTHONHASHSEED; sorting makes the
    # same pipeline serialise to the same bytes in every process (DVC compares hashes).
    opsets = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model.SerializeToString()


def onnx_feeds(
    X: pd.DataFrame, categorical: list[str], numeric: list[str], packed: str | None = None
) -> dict[str, Any]:
    """The graph's inputs for a feature frame: ``[N, 1]`` columns of str / float32, or the
    numeric columns as one ``[N, k]`` float32 matrix under ``packed``."""
    feeds: dict[str, Any] = {c: X[[c]].astype(str).to_numpy(dtype=object) for c in categorical}
    if packed is not None and numeric:
        feeds[packed] = np.ascontiguousarray(X[numeric].to_numpy(dtype=np.float32))
    else:
        feeds.update({c: X[[c]].to_numpy(dtype=np.float32) for c in numeric})
    return feeds


def run_onnx(
    onnx_bytes: bytes,
    X: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    packed: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` of the ONNX model on a feature frame."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(
        ["label", "probabilities"], onnx_feeds(X, categorical, numeric, packed)
    )
    return np.asarray(labels).ravel(), np.asarray(probabilities)


def check_parity(
    pipeline: Pipeline,
    onnx_bytes: bytes,
    X: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    tolerance: float = 1e-5,
    packed: str | None = None,
) -> ParityResult:
    """Compare ONNX and scikit-learn on every row of ``X``; never raises on a mismatch.

    scikit-learn gets ``X`` as a frame (columns ``categorical + numeric``), ONNX Runtime the
    graph's own inputs (per column, or the numeric columns packed into ``packed``)."""
    try:
        labels, probabilities = run_onnx(onnx_bytes, X, categorical, numeric, packed)
    except Exception as exc:  # a graph that does not even run fails the gate the same way
        raise ParityError(f"the ONNX model does not run: {exc}") from exc
    X = X[[*categorical, *numeric]]
    expected = pipeline.predict_proba(X)
    if probabilities.shape != expected.shape:
        return ParityResult(False, float("inf"), len(X), False, tolerance)
    diff = float(np.max(np.abs(probabilities.astype(float) - expected))) if len(X) else 0.0
    sk_labels = pipeline.predict(X)
    labels_equal = bool(np.array_equal(labels.astype(str), np.asarray(sk_labels).astype(str)))
    return ParityResult(diff <= tolerance and labels_equal, diff, len(X), labels_equal, tolerance)


def require_parity(result: ParityResult) -> None:
    if not result.passed:
        raise ParityError(
            f"ONNX/scikit-learn parity check failed on {result.rows} test rows: max |Δp| = "
            f"{result.max_abs_diff:.3g} (tolerance {result.tolerance:g}), labels "
            f"{'agree' if result.labels_equal else 'differ'}; nothing was published"
        )
