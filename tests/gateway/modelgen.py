"""A tiny two-feature classifier in the model-repository layout, for gateway tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CARRIERS", "MODEL", "build_repository", "instance"]

MODEL = "delays"
CARRIERS = ["Grupo LATAM", "Sky Airline", "Copa Air"]


def instance(i: int = 0) -> dict[str, Any]:
    """One valid row for the named-feature Predict API."""
    return {"carrier": CARRIERS[i % len(CARRIERS)], "hour": float(i % 24)}


def _onnx_bytes() -> bytes:
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "carrier": rng.choice(CARRIERS, 200),
            "hour": rng.integers(0, 24, 200).astype(np.float32),
        }
    )
    target = ((frame["carrier"] == "Copa Air") | (frame["hour"] > 18)).astype(int)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["carrier"]),
                        ("num", "passthrough", ["hour"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=200)),
        ]
    )
    pipe.fit(frame, target)
    model = convert_sklearn(
        pipe,
        initial_types=[
            ("carrier", StringTensorType([None, 1])),
            ("hour", FloatTensorType([None, 1])),
        ],
        options={id(pipe): {"zipmap": False}},
        target_opset=17,
    )
    renames = {"output_label": "label", "output_probability": "probabilities"}
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
    for output in model.graph.output:
        output.name = renames.get(output.name, output.name)
    return bytes(model.SerializeToString())


def _manifest() -> dict[str, object]:
    return {
        "name": MODEL,
        "version": 1,
        "platform": "onnxruntime_onnx",
        "signature": {
            "inputs": [
                {
                    "name": "carrier",
                    "datatype": "BYTES",
                    "shape": [-1, 1],
                    "kind": "categorical",
                    "categories": CARRIERS,
                },
                {"name": "hour", "datatype": "FP32", "shape": [-1, 1], "kind": "numeric"},
            ],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            ],
            "classes": ["0", "1"],
            "positive_class": "1",
        },
    }


def build_repository(root: Path) -> Path:
    folder = root / MODEL / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(_onnx_bytes())
    (folder / "model.json").write_text(json.dumps(_manifest()))
    return root
