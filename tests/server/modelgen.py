"""Small ONNX models for server tests, built from synthetic data (no trainer needed).

- ``flights`` (versions 1 and 2): a scikit-learn pipeline with two categorical and two
  numeric features, exported per the trainer's contract (one input per feature, outputs
  ``label`` and ``probabilities``, ``model.json`` with signature and classes).
- ``bare``: the same kind of model with only ``model.onnx`` and skl2onnx's default output
  names, to exercise reading the signature from the graph.
- ``echo``: identity over FP32/FP64/INT32/INT64/BOOL/BYTES inputs, for datatype round trips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

__all__ = [
    "CATEGORIES",
    "FEATURES",
    "build_repository",
    "build_slow_model",
    "build_version",
    "sample_rows",
]

CATEGORIES = {
    "OPERA": ["Grupo LATAM", "Sky Airline", "Copa Air", "Avianca"],
    "TIPOVUELO": ["N", "I"],
}
NUMERIC = ["MES", "DIA"]
FEATURES = [*CATEGORIES, *NUMERIC]


def sample_rows(n: int, seed: int = 0) -> dict[str, list[object]]:
    """Column-wise synthetic rows."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[object]] = {
        name: [str(x) for x in rng.choice(cats, n)] for name, cats in CATEGORIES.items()
    }
    cols["MES"] = [float(x) for x in rng.integers(1, 13, n)]
    cols["DIA"] = [float(x) for x in rng.integers(1, 32, n)]
    return cols


def _rename_outputs(model: onnx.ModelProto, names: dict[str, str]) -> None:
    for node in model.graph.node:
        for i, out in enumerate(node.output):
            if out in names:
                node.output[i] = names[out]
    for out in model.graph.output:
        if out.name in names:
            out.name = names[out.name]


def _classifier(
    c: float, seed: int, contract: bool, estimator: str = "logistic"
) -> onnx.ModelProto:
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cols = sample_rows(400, seed)
    frame = pd.DataFrame(cols)
    frame[NUMERIC] = frame[NUMERIC].astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    y = ((frame["OPERA"] == "Avianca") | (frame["MES"] > 9) | (rng.random(400) < 0.2)).astype(int)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORIES)),
                        ("num", StandardScaler(), NUMERIC),
                    ]
                ),
            ),
            ("clf", _estimator(estimator, c)),
        ]
    )
    pipe.fit(frame, y)
    types = [(n, StringTensorType([None, 1])) for n in CATEGORIES] + [
        (n, FloatTensorType([None, 1])) for n in NUMERIC
    ]
    model = convert_sklearn(
        pipe, initial_types=types, options={id(pipe): {"zipmap": False}}, target_opset=17
    )
    if contract:
        _rename_outputs(model, {"output_label": "label", "output_probability": "probabilities"})
    return model


def _estimator(kind: str, c: float) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    if kind == "tree":
        return DecisionTreeClassifier(max_depth=4, random_state=0)
    return LogisticRegression(C=c, max_iter=500)


def build_version(
    root: Path, version: int, *, estimator: str = "logistic", seed: int = 0, c: float = 1.0
) -> Path:
    """One more ``flights`` version (e.g. a candidate trained with another estimator)."""
    folder = root / "flights" / str(version)
    folder.mkdir(parents=True)
    onnx.save(_classifier(c, seed, contract=True, estimator=estimator), folder / "model.onnx")
    (folder / "model.json").write_text(json.dumps(_manifest("flights", version)))
    return folder


def _manifest(name: str, version: int) -> dict[str, object]:
    inputs: list[dict[str, object]] = [
        {
            "name": n,
            "datatype": "BYTES",
            "shape": [-1, 1],
            "kind": "categorical",
            "categories": cats,
        }
        for n, cats in CATEGORIES.items()
    ]
    inputs += [
        {"name": n, "datatype": "FP32", "shape": [-1, 1], "kind": "numeric", "range": [1, 31]}
        for n in NUMERIC
    ]
    return {
        "name": name,
        "version": version,
        "created_at": "2026-01-01T00:00:00Z",
        "code_version": "test",
        "platform": "onnxruntime_onnx",
        "data": {},
        "params": {},
        "metrics": {},
        "parity": {},
        "signature": {
            "inputs": inputs,
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            ],
            "classes": ["0", "1"],
            "positive_class": "1",
        },
        "reference": {},
    }


ECHO_TYPES = {
    "x_fp32": TensorProto.FLOAT,
    "x_fp64": TensorProto.DOUBLE,
    "x_int32": TensorProto.INT32,
    "x_int64": TensorProto.INT64,
    "x_bool": TensorProto.BOOL,
    "x_bytes": TensorProto.STRING,
}


def _echo() -> onnx.ModelProto:
    inputs, outputs, nodes = [], [], []
    for name, t in ECHO_TYPES.items():
        out = name.replace("x_", "y_")
        inputs.append(helper.make_tensor_value_info(name, t, [None, 2]))
        outputs.append(helper.make_tensor_value_info(out, t, [None, 2]))
        nodes.append(helper.make_node("Identity", [name], [out]))
    graph = helper.make_graph(nodes, "echo", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


SLOW_WIDTH = 256


def build_slow_model(folder: Path, layers: int = 20) -> None:
    """A deliberately compute-heavy model (MatMul + Tanh chain on FP32 [N, 256]).

    Requests to it stay in flight long enough for shutdown tests, without any test-only
    code path in the server.
    """
    rng = np.random.default_rng(0)
    # one weight matrix shared by every layer keeps the file small however deep the chain
    w = (rng.standard_normal((SLOW_WIDTH, SLOW_WIDTH)) / np.sqrt(SLOW_WIDTH)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(w, "w")]
    nodes = []
    prev = "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"t{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, SLOW_WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, SLOW_WIDTH])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")


def build_repository(root: Path) -> Path:
    """Write the test models under ``root`` and return it."""
    for version, c in ((1, 0.05), (2, 1.0)):
        folder = root / "flights" / str(version)
        folder.mkdir(parents=True)
        onnx.save(_classifier(c, version, contract=True), folder / "model.onnx")
        (folder / "model.json").write_text(json.dumps(_manifest("flights", version)))
    (root / "flights" / ".tmp-3").mkdir()  # an unfinished publish: must be ignored
    bare = root / "bare" / "1"
    bare.mkdir(parents=True)
    onnx.save(_classifier(1.0, 7, contract=False), bare / "model.onnx")
    echo = root / "echo" / "1"
    echo.mkdir(parents=True)
    onnx.save(_echo(), echo / "model.onnx")
    return root


if __name__ == "__main__":
    import sys

    build_repository(Path(sys.argv[1]))
