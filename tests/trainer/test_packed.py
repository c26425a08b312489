"""``--numeric-input packed``: numeric columns as one ``[N, k]`` FP32 input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from pronto_contract import SCHEMA_VERSION, Manifest, ManifestError, read_manifest
from trainer.data import load_dataset
from trainer.model import Split, build_pipeline
from trainer.onnx_export import PACKED_INPUT, check_parity, export_onnx, run_onnx
from trainer.settings import TrainSettings
from trainer.train import train


@pytest.fixture(scope="module")
def wide_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tabular data set with 30 numeric columns (scikit-learn's breast cancer)."""
    path = tmp_path_factory.mktemp("wide") / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    return path


def _train(csv: Path, out: Path, numeric_input: str, **kw: object) -> Manifest:
    settings = TrainSettings(
        data=csv, name="wide", output_dir=out, numeric_input=numeric_input, **kw
    )  # type: ignore[arg-type]
    train(settings, log=lambda _: None)
    return read_manifest(out)


def test_packed_export_has_one_numeric_input_in_the_manifest_order(
    wide_csv: Path, tmp_path: Path
) -> None:
    m = _train(wide_csv, tmp_path / "packed", "packed", target="target")
    graph = onnx.load(str(tmp_path / "packed" / "model.onnx")).graph
    assert [i.name for i in graph.input] == [PACKED_INPUT]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 30
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    assert m.schema_version == SCHEMA_VERSION == 2
    (spec,) = m.signature.inputs
    assert (spec.name, spec.datatype, spec.shape) == (PACKED_INPUT, "FP32", [-1, 30])
    frame = pd.read_csv(wide_csv)
    expected = [c.replace(" ", "_") for c in frame.columns if c != "target"]
    assert spec.columns == expected and len(expected) == 30
    # every column keeps its own description (range, CSV column) for drift and clients
    radius = m.signature.feature("mean_radius")
    assert radius is not None and radius.column == "mean radius"
    assert radius.range is not None
    lo, hi = frame["mean radius"].min(), frame["mean radius"].max()
    assert lo - 1e-4 <= radius.range[0] < radius.range[1] <= hi + 1e-4
    assert set(m.reference.features) == set(expected)
    assert m.parity["passed"] and m.params["numeric_input"] == "packed"


def test_packed_and_per_column_models_predict_the_same(wide_csv: Path, tmp_path: Path) -> None:
    packed = _train(wide_csv, tmp_path / "packed", "packed", target="target")
    plain = _train(wide_csv, tmp_path / "plain", "per-column", target="target")
    assert plain.schema_version == 1  # older servers keep loading per-column models
    assert [i.name for i in plain.signature.inputs] == packed.signature.inputs[0].columns
    data = load_dataset(wide_csv, "target")
    X = data.X.iloc[:200]
    _, p_packed = run_onnx(
        (tmp_path / "packed" / "model.onnx").read_bytes(), X, [], data.numeric, PACKED_INPUT
    )
    _, p_plain = run_onnx((tmp_path / "plain" / "model.onnx").read_bytes(), X, [], data.numeric)
    np.testing.assert_allclose(p_packed, p_plain, atol=1e-5)


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting"])
def test_flights_packed_keeps_categorical_inputs_and_passes_parity(
    flights_csv: Path, tmp_path: Path, estimator: str
) -> None:
    rounds = {"max_iter": 20} if estimator == "hist_gradient_boosting" else {}
    m = _train(flights_csv, tmp_path / "m", "packed", estimator=estimator, **rounds)
    inputs = {i.name: i for i in m.signature.inputs}
    assert list(inputs) == ["OPERA", "TIPOVUELO", "SIGLADES", "DIANOM", "period_of_day",
                            PACKED_INPUT]  # fmt: skip
    assert inputs["OPERA"].datatype == "BYTES" and inputs["OPERA"].columns is None
    assert inputs[PACKED_INPUT].columns == ["MES", "hour", "high_season"]
    assert inputs[PACKED_INPUT].shape == [-1, 3]
    assert m.parity["passed"] and m.parity["max_abs_diff"] <= 1e-5


def test_parity_check_sees_a_wrong_column_order(wide_csv: Path) -> None:
    """The gate compares scikit-learn on named columns with ONNX on positions: feeding the
    packed matrix in another order must fail it, so a column-order bug cannot publish."""
    data = load_dataset(wide_csv, "target")
    split = Split(data, 0.2, 0)
    pipe = build_pipeline([], data.numeric, "logistic_regression", {"max_iter": 500}, True)
    pipe.fit(split.X_train, split.y_train)
    onnx_bytes = export_onnx(pipe, [], data.numeric, PACKED_INPUT)
    good = check_parity(pipe, onnx_bytes, split.X_test, [], data.numeric, 1e-5, PACKED_INPUT)
    assert good.passed
    shuffled = data.numeric[::-1]
    bad = check_parity(pipe, onnx_bytes, split.X_test, [], shuffled, 1e-5, PACKED_INPUT)
    assert not bad.passed


def test_packed_is_refused_when_a_categorical_column_takes_its_name(tmp_path: Path) -> None:
    from trainer.errors import DataError

    csv = tmp_path / "clash.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            PACKED_INPUT: rng.choice(["a", "b"], 200),
            "x": rng.normal(size=200),
            "y": rng.integers(0, 2, 200),
        }
    ).to_csv(csv, index=False)
    with pytest.raises(DataError, match="packed numeric input"):
        _train(csv, tmp_path / "m", "packed", target="y")


def test_packed_cli_flag(wide_csv: Path, tmp_path: Path) -> None:
    from pronto_cli.main import main

    repo = tmp_path / "repo"
    rc = main(["train", "--data", str(wide_csv), "--target", "target", "--name", "bc",
               "--numeric-input", "packed", "--model-repository", str(repo)])  # fmt: skip
    assert rc == 0
    assert read_manifest(repo / "bc" / "1").signature.packed[PACKED_INPUT][0] == "mean_radius"


def _packed_manifest(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "schema_version": 2,
        "signature": {
            "inputs": [{"name": "num", "datatype": "FP32", "shape": [-1, 2],
                        "kind": "numeric", "columns": ["a", "b"]}],
            "features": [{"name": "a", "range": [0, 1]}, {"name": "b"}],
        },
    }  # fmt: skip
    data.update(changes)
    return data


def test_manifest_packed_input_round_trips() -> None:
    m = Manifest.parse(_packed_manifest())
    assert m.signature.packed == {"num": ["a", "b"]}
    assert m.signature.feature("a") is not None and m.signature.feature("a").range == [0, 1]
    assert m.signature.feature("num") is None  # an input of columns is not a feature
    assert Manifest.parse(json.loads(m.to_json())).signature.packed == {"num": ["a", "b"]}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 1}, "needs schema_version 2"),
        (
            {"signature": {"inputs": [{"name": "num", "shape": [-1, 3], "columns": ["a", "b"]}],
                           "features": [{"name": "a"}, {"name": "b"}]}},
            "one distinct column per element",
        ),
        (
            {"signature": {"inputs": [{"name": "num", "shape": [-1, 2], "columns": ["a", "b"]}],
                           "features": [{"name": "a"}]}},
            r"column\(s\) b not described",
        ),
    ],
)  # fmt: skip
def test_manifest_rejects_inconsistent_packed_inputs(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.parse(_packed_manifest(**changes))


def test_evaluate_and_gate_score_a_packed_model(wide_csv: Path, tmp_path: Path) -> None:
    from trainer.evaluate import evaluate_model
    from trainer.gate import _score

    m = _train(wide_csv, tmp_path / "packed", "packed", target="target")
    metrics = evaluate_model(tmp_path / "packed", wide_csv, tmp_path / "report")
    assert metrics["roc_auc"] == pytest.approx(m.metrics.roc_auc)
    split = {"test_size": m.params["test_size"], "seed": m.params["seed"]}
    assert _score(tmp_path / "packed", wide_csv, split)["roc_auc"] == pytest.approx(
        m.metrics.roc_auc
    )
