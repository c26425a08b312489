"""The parity gate: a graph that disagrees with scikit-learn is refused and nothing published."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper
from sklearn.pipeline import Pipeline

import trainer.train as train_module
from pronto_contract import published_versions
from trainer.data import Dataset, load_dataset
from trainer.errors import ParityError
from trainer.model import Split, build_pipeline
from trainer.onnx_export import check_parity, export_onnx
from trainer.settings import TrainSettings


def _tamper(onnx_bytes: bytes, factor: float = 1.05) -> bytes:
    """Scale the logistic-regression coefficients: a small, plausible-looking corruption."""
    model = onnx.load_from_string(onnx_bytes)
    (node,) = [n for n in model.graph.node if n.op_type == "LinearClassifier"]
    for i, attr in enumerate(node.attribute):
        if attr.name == "coefficients":
            scaled = [v * factor for v in attr.floats]
            node.attribute[i].CopyFrom(helper.make_attribute("coefficients", scaled))
    return model.SerializeToString()


@pytest.fixture(scope="module")
def fitted(flights_csv: Path) -> tuple[Dataset, Split, Pipeline, bytes]:
    data = load_dataset(flights_csv)
    split = Split(data, 0.2, 0)
    params = {"class_weight": "balanced", "max_iter": 1000}
    pipe = build_pipeline(data.categorical, data.numeric, "logistic_regression", params)
    pipe.fit(split.X_train, split.y_train)
    return data, split, pipe, export_onnx(pipe, data.categorical, data.numeric)


def test_faithful_graph_passes(fitted: tuple[Dataset, Split, Pipeline, bytes]) -> None:
    data, split, pipe, onnx_bytes = fitted
    result = check_parity(pipe, onnx_bytes, split.X_test, data.categorical, data.numeric)
    assert result.passed and result.labels_equal
    assert result.rows == len(split.X_test)
    assert result.max_abs_diff <= 1e-5


def test_tampered_graph_fails(fitted: tuple[Dataset, Split, Pipeline, bytes]) -> None:
    data, split, pipe, onnx_bytes = fitted
    result = check_parity(pipe, _tamper(onnx_bytes), split.X_test, data.categorical, data.numeric)
    assert not result.passed
    assert result.max_abs_diff > 1e-3


def test_train_refuses_to_publish_a_tampered_model(
    flights_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = train_module.export_onnx
    monkeypatch.setattr(train_module, "export_onnx", lambda *args: _tamper(real_export(*args), 0.9))
    repo = tmp_path / "models"
    settings = TrainSettings(data=flights_csv, model_repository=repo, name="m")
    with pytest.raises(ParityError, match=r"parity check failed on \d+ test rows.*nothing"):
        train_module.train(settings, log=lambda _: None)
    assert published_versions(repo, "m") == []
    assert not (repo / "m").exists() or list((repo / "m").iterdir()) == []


def test_cli_reports_parity_failure(
    flights_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trainer.__main__ import main

    real_export = train_module.export_onnx
    monkeypatch.setattr(train_module, "export_onnx", lambda *args: _tamper(real_export(*args), 1.2))
    repo = tmp_path / "models"
    code = main(["train", "--data", str(flights_csv), "--model-repository", str(repo)])
    assert code == 1
    assert "parity check failed" in capsys.readouterr().err
    assert published_versions(repo, "flight-delay") == []
