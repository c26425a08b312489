"""Both model families convert to ONNX with the pinned protobuf/skl2onnx.

protobuf 7.x breaks skl2onnx's tree-ensemble converters ("Expected an int, got
a boolean"), so the pins keep protobuf 6.x; this test fails if they drift.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


@pytest.mark.parametrize(
    "estimator",
    [LogisticRegression(class_weight="balanced"), HistGradientBoostingClassifier(max_iter=15)],
    ids=["logistic-regression", "hist-gradient-boosting"],
)
def test_pipeline_converts_and_matches_sklearn(estimator: object) -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"c": rng.choice(["a", "b", "c"], 400), "x": rng.normal(size=400)})
    target = ((frame["x"] + (frame["c"] == "a")) > 0.4).astype(int)
    pipe = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("oh", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["c"]),
                        ("sc", StandardScaler(), ["x"]),
                    ]
                ),
            ),
            ("clf", estimator),
        ]
    ).fit(frame, target)
    onx = to_onnx(
        pipe,
        initial_types=[("c", StringTensorType([None, 1])), ("x", FloatTensorType([None, 1]))],
        options={id(estimator): {"zipmap": False}},
        target_opset=18,
    )
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, probs = session.run(
        None, {"c": frame[["c"]].to_numpy(dtype=object), "x": frame[["x"]].to_numpy(np.float32)}
    )
    np.testing.assert_allclose(probs, pipe.predict_proba(frame), atol=1e-5)
    np.testing.assert_array_equal(labels, pipe.predict(frame))
