"""``model.json``: the signature the server validates requests against and the reference
statistics it compares live traffic with for drift."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainer.metrics import positive_index

__all__ = ["code_version", "reference_statistics", "signature", "utc_now"]

_BINS = 10


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def code_version() -> str:
    """``git describe`` of the source tree, else the installed package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return metadata.version("pronto-serving")
        except metadata.PackageNotFoundError:
            return "unknown"


def _label_datatype(classes: np.ndarray) -> str:
    return "INT64" if np.issubdtype(np.asarray(classes).dtype, np.integer) else "BYTES"


def signature(
    X_train: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    categories: dict[str, list[str]],
    classes: np.ndarray,
    source: dict[str, str],
    packed: str | None = None,
) -> dict[str, Any]:
    """Inputs (name = ONNX input, ``column`` = the CSV column it comes from), outputs, classes.

    ``packed``: the numeric features are the columns of that one ``[-1, k]`` input; the
    input lists them in order under ``columns`` and each is described under ``features``.
    """
    inputs: list[dict[str, Any]] = []
    for column in categorical:
        inputs.append(
            {
                "name": column,
                "datatype": "BYTES",
                "shape": [-1, 1],
                "kind": "categorical",
                "categories": categories[column],
                "column": source[column],
            }
        )
    numeric_specs: list[dict[str, Any]] = []
    for column in numeric:
        values = X_train[column].dropna()
        numeric_specs.append(
            {
                "name": column,
                "datatype": "FP32",
                "shape": [-1, 1],
                "kind": "numeric",
                "range": [float(values.min()), float(values.max())],
                "column": source[column],
            }
        )
    if packed is not None and numeric:
        inputs.append(
            {
                "name": packed,
                "datatype": "FP32",
                "shape": [-1, len(numeric)],
                "kind": "numeric",
                "columns": list(numeric),
            }
        )
    else:
        inputs += numeric_specs
    names = [str(c) for c in classes]
    sig: dict[str, Any] = {
        "inputs": inputs,
        "outputs": [
            {"name": "label", "datatype": _label_datatype(classes), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(names)]},
        ],
        "classes": names,
    }
    if packed is not None and numeric:
        sig["features"] = numeric_specs
    pos = positive_index(names)
    if pos is not None:
        sig["positive_class"] = names[pos]
    return sig


def _numeric_reference(values: pd.Series) -> dict[str, Any]:
    values = values.dropna().astype(float)
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:  # a constant feature still needs a valid bin range
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=_BINS, range=(lo, hi))
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
    }


def reference_statistics(
    X_train: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    scores: np.ndarray,
    score_of: str,
) -> dict[str, Any]:
    """Per-feature distributions of the training split and the score histogram of the test split.

    ``scores`` is the positive-class probability (binary) or the top probability (multiclass);
    ``score_of`` says which, so the server computes the live histogram the same way.
    """
    feats: dict[str, Any] = {}
    for column in categorical:
        freq = X_train[column].value_counts(normalize=True)
        feats[column] = {
            "kind": "categorical",
            "frequencies": {str(k): round(float(v), 8) for k, v in freq.items()},
        }
    for column in numeric:
        feats[column] = _numeric_reference(X_train[column])
    counts, edges = np.histogram(np.clip(scores, 0, 1), bins=_BINS, range=(0.0, 1.0))
    return {
        "features": feats,
        "score": {
            "of": score_of,
            "split": "test",
            "edges": [round(float(e), 6) for e in edges],
            "counts": [int(c) for c in counts],
        },
    }
