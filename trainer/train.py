"""Train, export, check parity, evaluate and publish: what ``pronto train`` runs."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pronto_contract import (
    MANIFEST_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    Manifest,
    commit,
    next_version,
    staging,
)
from trainer.data import Dataset, load_dataset, sha256_file
from trainer.errors import DataError
from trainer.flights import write_flights_csv
from trainer.manifest import code_version, reference_statistics, signature, utc_now
from trainer.metrics import compute_metrics, positive_index
from trainer.model import Split, build_pipeline, estimator_params
from trainer.onnx_export import (
    PACKED_INPUT,
    check_parity,
    export_onnx,
    require_parity,
    run_onnx,
)
from trainer.report import write_report
from trainer.settings import DEFAULT_DATA, TrainSettings

__all__ = ["TrainResult", "resolve_data", "train", "write_model"]


@dataclass
class TrainResult:
    version: int | None  # None when written to --output-dir instead of the repository
    path: Path
    manifest: dict[str, Any]


def resolve_data(settings: TrainSettings, log: Callable[[str], None] = print) -> Path:
    """The training CSV; the default flights file is generated (seeded) when absent."""
    if settings.data is not None:
        return settings.data
    if not DEFAULT_DATA.exists():
        log(f"generating {settings.rows} flights (seed {settings.data_seed}) into {DEFAULT_DATA}")
        write_flights_csv(DEFAULT_DATA, settings.rows, settings.data_seed)
    return DEFAULT_DATA


def _params(settings: TrainSettings, data: Dataset) -> dict[str, Any]:
    return {
        "estimator": settings.estimator,
        "estimator_params": estimator_params(settings),
        "target": data.target,
        # CSV column names, so the data set can be rebuilt (python -m trainer evaluate)
        "categorical": [data.source[c] for c in data.categorical],
        "numeric": [data.source[c] for c in data.numeric],
        "data_kind": data.kind,
        "test_size": settings.test_size,
        "seed": settings.seed,
        "parity_tolerance": settings.parity_tolerance,
        "numeric_input": settings.numeric_input,
    }


def _packed_name(settings: TrainSettings, data: Dataset) -> str | None:
    """The packed numeric input's name, or None for one input per column."""
    if settings.numeric_input != "packed" or not data.numeric:
        return None
    if PACKED_INPUT in data.categorical:
        raise DataError(
            f"a categorical feature is named {PACKED_INPUT!r}, the name of the packed numeric "
            "input; rename the column or use --numeric-input per-column"
        )
    return PACKED_INPUT


def _build(
    settings: TrainSettings, path: Path, version: int, log: Callable[[str], None]
) -> tuple[bytes, dict[str, Any], np.ndarray, np.ndarray]:
    started = time.perf_counter()
    data = load_dataset(path, settings.target, settings.categorical, settings.numeric)
    split = Split(data, settings.test_size, settings.seed)
    params = _params(settings, data)
    packed = _packed_name(settings, data)
    pipeline = build_pipeline(
        data.categorical,
        data.numeric,
        settings.estimator,
        params["estimator_params"],
        packed is not None,
    )
    fit_started = time.perf_counter()
    pipeline.fit(split.X_train, split.y_train)
    fit_seconds = time.perf_counter() - fit_started
    onnx_bytes = export_onnx(pipeline, data.categorical, data.numeric, packed)
    parity = check_parity(
        pipeline,
        onnx_bytes,
        split.X_test,
        data.categorical,
        data.numeric,
        settings.parity_tolerance,
        packed,
    )
    require_parity(parity)
    log(f"parity passed: max |Δp| = {parity.max_abs_diff:.2e} on {parity.rows} test rows")

    classes = pipeline.classes_
    names = [str(c) for c in classes]
    labels, probabilities = run_onnx(
        onnx_bytes, split.X_test, data.categorical, data.numeric, packed
    )
    metrics = compute_metrics(split.y_test.to_numpy(), probabilities, labels, names)
    pos = positive_index(names)
    scores = probabilities[:, pos] if pos is not None else probabilities.max(axis=1)
    encoder = pipeline.named_steps["preprocess"].named_transformers_.get("categorical")
    categories = (
        {
            c: [str(v) for v in cats]
            for c, cats in zip(data.categorical, encoder.categories_, strict=True)
        }
        if encoder is not None
        else {}
    )
    manifest = {
        # the oldest schema that describes the model, so older servers keep loading
        # per-column models; a packed input needs version 2
        "schema_version": SCHEMA_VERSION if packed is not None else 1,
        "name": settings.name,
        "version": version,
        "created_at": utc_now(),
        "code_version": code_version(),
        "platform": "onnxruntime_onnx",
        "data": {"path": str(path), "sha256": sha256_file(path), "rows": len(data.y)},
        "params": params,
        "metrics": metrics,
        "parity": parity.as_dict(),
        "signature": signature(
            split.X_train,
            data.categorical,
            data.numeric,
            categories,
            classes,
            data.source,
            packed,
        ),
        "reference": reference_statistics(
            split.X_train,
            data.categorical,
            data.numeric,
            scores,
            "positive_class_probability" if pos is not None else "max_probability",
        ),
        "training": {
            "train_rows": len(split.y_train),
            "test_rows": len(split.y_test),
            "fit_seconds": round(fit_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
        },
    }
    return onnx_bytes, manifest, split.y_test.to_numpy(), probabilities


def write_model(
    folder: Path,
    onnx_bytes: bytes,
    manifest: dict[str, Any],
    y_test: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    """Write a complete model folder: model.onnx, model.json, metrics.json, report.md, plots/."""
    # validated before anything is written: the server reads it through the same model
    typed = Manifest.parse(manifest, "the trainer's manifest")
    (folder / MODEL_FILE).write_bytes(onnx_bytes)
    write_report(folder, manifest, y_test, probabilities)
    # The manifest goes last: a folder with model.json is a finished one.
    (folder / MANIFEST_FILE).write_text(typed.to_json())


def _replace_dir(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train(settings: TrainSettings, log: Callable[[str], None] = print) -> TrainResult:
    """Train on the configured data; publish (or write to ``output_dir``) only if parity holds.

    Raises :class:`~trainer.errors.DataError` or :class:`~trainer.errors.ParityError`, in which
    case nothing is written to the repository.
    """
    path = resolve_data(settings, log)
    if settings.output_dir is not None:
        onnx_bytes, manifest, y_test, proba = _build(settings, path, 0, log)
        _replace_dir(
            settings.output_dir, lambda d: write_model(d, onnx_bytes, manifest, y_test, proba)
        )
        return TrainResult(None, settings.output_dir, manifest)
    root, name = settings.model_repository, settings.name
    guess = next_version(root, name)
    onnx_bytes, manifest, y_test, proba = _build(settings, path, guess, log)
    with staging(root, name) as tmp:
        write_model(tmp, onnx_bytes, manifest, y_test, proba)
        version, folder = commit(tmp, root, name)
    manifest["version"] = version
    return TrainResult(version, folder, manifest)
