"""Prepare the same trained model for MLServer's scikit-learn runtime.

MLServer's runtime loads a pickled scikit-learn pipeline, not ONNX. The
trainer is deterministic (same data + same params → same model), so the
pipeline is refitted from the manifest's data and parameters and checked
against the published ONNX model before it is used.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from pronto_contract import Manifest

__all__ = ["mlserver_payloads", "write_mlserver_repository"]


def _refit(manifest: Manifest) -> Any:
    from trainer.data import load_dataset
    from trainer.model import Split, build_pipeline

    params = manifest.params
    path = Path(manifest.data["path"])
    if params.get("data_kind") == "flights":  # features and target derive from raw columns
        data = load_dataset(path)
    else:
        data = load_dataset(path, params["target"], params["categorical"], params["numeric"])
    split = Split(data, params["test_size"], params["seed"])
    pipeline = build_pipeline(
        data.categorical,
        data.numeric,
        params["estimator"],
        params["estimator_params"],
        bool(manifest.signature.packed),
    )
    pipeline.fit(split.X_train, split.y_train)
    return pipeline, split.X_test.head(500), data


def write_mlserver_repository(
    manifest: Manifest, onnx_path: Path, root: Path, settings: dict[str, Any]
) -> Path:
    """``root/settings.json`` + ``root/<model>/{model-settings.json,model.joblib}``."""
    import joblib
    import onnxruntime as ort

    from trainer.onnx_export import onnx_feeds

    pipeline, sample, data = _refit(manifest)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    packed = next(iter(manifest.signature.packed), None)
    feeds = onnx_feeds(sample, data.categorical, data.numeric, packed)
    onnx_proba = session.run(None, feeds)[1]
    drift = float(np.abs(onnx_proba - pipeline.predict_proba(sample)).max())
    if drift > 1e-4:
        raise RuntimeError(f"refitted pipeline differs from the served ONNX model ({drift:.2e})")
    model_dir = root / manifest.name
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": manifest.name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": str(manifest.version)},
            }
        )
    )
    (root / "settings.json").write_text(json.dumps(settings))
    return root


def mlserver_payloads(oip_requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows as the Pronto OIP requests, in the form MLServer's runtime wants:
    a pandas request (one column per input, strings decoded) asking for probabilities."""
    out = []
    for req in oip_requests:
        r = copy.deepcopy(req)
        r["parameters"] = {"content_type": {"string_param": "pd"}}
        r["outputs"] = [{"name": "predict_proba"}]
        for t in r["inputs"]:
            if t["datatype"] == "BYTES":
                t["parameters"] = {"content_type": {"string_param": "str"}}
                # keep bytes as-is: protobuf JSON already base64-encodes them
                assert all(base64.b64decode(v) for v in t["contents"]["bytes_contents"])
        out.append(r)
    return out
