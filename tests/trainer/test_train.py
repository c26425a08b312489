"""End to end: train, publish, and serve the result with onnxruntime from its signature alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from pronto_contract import latest_manifest, published_versions
from trainer.__main__ import main
from trainer.settings import TrainSettings
from trainer.train import train

CONTRACT_KEYS = {
    "name", "version", "created_at", "code_version", "platform", "data", "params", "metrics",
    "parity", "signature", "reference",
}  # fmt: skip


def _quiet(_: str) -> None:
    pass


def _feeds(signature: dict[str, Any], frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Request tensors built only from the manifest, as the server does."""
    feeds = {}
    for spec in signature["inputs"]:
        column = frame[[spec["name"]]]
        if spec["datatype"] == "BYTES":
            feeds[spec["name"]] = column.astype(str).to_numpy(dtype=object)
        else:
            feeds[spec["name"]] = column.to_numpy(dtype=np.float32)
    return feeds


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        (folder / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"]
    )


def test_flights_model_is_published_with_its_contract(flights_csv: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    result = train(TrainSettings(data=flights_csv, model_repository=repo), log=_quiet)
    assert result.version == 1 and result.path == repo / "flight-delay" / "1"
    files = {p.relative_to(result.path).as_posix() for p in result.path.rglob("*")}
    assert {"model.onnx", "model.json", "metrics.json", "report.md", "plots/roc.png"} <= files
    manifest = json.loads(latest_manifest(repo, "flight-delay").to_json())
    assert set(manifest) >= CONTRACT_KEYS
    assert manifest["version"] == 1 and manifest["platform"] == "onnxruntime_onnx"
    assert manifest["created_at"].endswith("Z")
    assert len(manifest["data"]["sha256"]) == 64 and manifest["data"]["rows"] == 4000
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_diff"] <= 1e-5
    sig = manifest["signature"]
    assert [i["name"] for i in sig["inputs"]] == [
        "OPERA", "TIPOVUELO", "SIGLADES", "DIANOM", "period_of_day", "MES", "hour", "high_season",
    ]  # fmt: skip
    assert sig["classes"] == ["0", "1"] and sig["positive_class"] == "1"
    assert sig["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1]}
    hour = next(i for i in sig["inputs"] if i["name"] == "hour")
    assert hour["range"] == [0.0, 23.0] and hour["datatype"] == "FP32"
    opera = next(i for i in sig["inputs"] if i["name"] == "OPERA")
    assert "Grupo LATAM" in opera["categories"]
    ref = manifest["reference"]
    assert abs(sum(ref["features"]["OPERA"]["frequencies"].values()) - 1) < 1e-6
    assert len(ref["features"]["hour"]["edges"]) == 11
    assert sum(ref["features"]["hour"]["counts"]) == 3200
    assert ref["score"]["edges"][0] == 0.0 and ref["score"]["edges"][-1] == 1.0
    assert sum(ref["score"]["counts"]) == 800
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert metrics == manifest["metrics"]
    assert metrics["roc_auc"] > 0.55  # small data; the default-size model is tested below
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 800
    assert len(metrics["calibration"]["mean_predicted"]) > 3
    assert "![ROC](plots/roc.png)" in (result.path / "report.md").read_text()

    # The signature alone is enough to call the model, including with an unseen category.
    from trainer.features import flight_features
    from trainer.flights import generate_flights

    rows = flight_features(generate_flights(50, seed=99, drift=True))
    labels, probabilities = _session(result.path).run(None, _feeds(sig, rows))
    assert labels.dtype == np.int64 and probabilities.shape == (50, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)

    again = train(TrainSettings(data=flights_csv, model_repository=repo), log=_quiet)
    assert again.version == 2 and published_versions(repo, "flight-delay") == [1, 2]


def test_same_data_and_params_give_the_same_model(flights_csv: Path, tmp_path: Path) -> None:
    outs = []
    for run in ("a", "b"):
        settings = TrainSettings(data=flights_csv, output_dir=tmp_path / run)
        outs.append(train(settings, log=_quiet))
    a, b = (tmp_path / "a", tmp_path / "b")
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()
    assert outs[0].manifest["metrics"] == outs[1].manifest["metrics"]
    assert outs[0].manifest["version"] == 0  # an unpublished build


# skl2onnx's tree converter trips a protobuf deprecation warning; the output is unaffected.
@pytest.mark.filterwarnings("ignore:Field onnx.AttributeProto.ints:DeprecationWarning")
def test_hist_gradient_boosting_passes_parity(flights_csv: Path, tmp_path: Path) -> None:
    settings = TrainSettings(
        data=flights_csv, output_dir=tmp_path / "hgb", estimator="hist_gradient_boosting",
        max_iter=10,
    )  # fmt: skip
    manifest = train(settings, log=_quiet).manifest
    assert manifest["parity"]["passed"] and manifest["metrics"]["roc_auc"] > 0.55
    assert manifest["params"]["estimator_params"]["max_iter"] == 10


def test_breast_cancer_csv_gets_its_own_signature(tmp_path: Path) -> None:
    data = load_breast_cancer(as_frame=True).frame
    path = tmp_path / "cancer.csv"
    data.to_csv(path, index=False)
    repo = tmp_path / "models"
    assert main(["train", "--data", str(path), "--target", "target", "--name", "cancer",
                 "--model-repository", str(repo)]) == 0  # fmt: skip
    manifest = json.loads(latest_manifest(repo, "cancer").to_json())
    sig = manifest["signature"]
    assert len(sig["inputs"]) == 30
    # Column names with spaces become valid ONNX input names; the manifest keeps both.
    assert sig["inputs"][0]["name"] == "mean_radius"
    assert sig["inputs"][0]["column"] == "mean radius"
    assert {i["kind"] for i in sig["inputs"]} == {"numeric"}
    assert sig["classes"] == ["0", "1"] and manifest["metrics"]["roc_auc"] > 0.95
    requests = data.rename(columns={i["column"]: i["name"] for i in sig["inputs"]})
    labels, _ = _session(repo / "cancer" / "1").run(None, _feeds(sig, requests))
    assert (labels == data["target"].to_numpy()).mean() > 0.95


def test_multiclass_csv_with_text_labels_and_a_categorical_column(tmp_path: Path) -> None:
    wine = load_wine(as_frame=True)
    frame = wine.frame.copy()
    frame["target"] = np.asarray(wine.target_names)[wine.target]  # text labels
    frame["vineyard"] = np.where(frame["alcohol"] > 13, "hill", "valley")
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    repo = tmp_path / "models"
    numeric = ["alcohol", "malic_acid", "flavanoids", "color_intensity", "proline"]
    args = ["train", "--data", str(path), "--target", "target", "--name", "wine",
            "--categorical", "vineyard", "--numeric", *numeric,
            "--model-repository", str(repo)]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads(latest_manifest(repo, "wine").to_json())
    sig = manifest["signature"]
    assert [i["name"] for i in sig["inputs"]] == ["vineyard", *numeric]
    assert sig["inputs"][0]["categories"] == ["hill", "valley"]
    assert sig["classes"] == ["class_0", "class_1", "class_2"] and "positive_class" not in sig
    assert sig["outputs"][0]["datatype"] == "BYTES"
    assert sig["outputs"][1]["shape"] == [-1, 3]
    assert manifest["reference"]["score"]["of"] == "max_probability"
    assert manifest["parity"]["passed"] and manifest["metrics"]["f1"] > 0.85
    labels, probabilities = _session(repo / "wine" / "1").run(None, _feeds(sig, frame))
    assert set(labels) <= set(sig["classes"]) and probabilities.shape == (len(frame), 3)


@pytest.mark.slow
def test_pronto_train_without_arguments_trains_the_default_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pronto_cli.main import main as pronto

    monkeypatch.chdir(tmp_path)
    for var in ("PRONTO_DATA", "PRONTO_MODEL_REPOSITORY", "PRONTO_NAME", "PRONTO_OUTPUT_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert pronto(["train"]) == 0
    assert "ROC AUC" in capsys.readouterr().out
    folder = tmp_path / "models" / "flight-delay" / "1"
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["data"]["rows"] == 68_000 and (tmp_path / "data" / "flights.csv").exists()
    assert manifest["parity"]["passed"] and manifest["parity"]["rows"] == 13_600
    assert manifest["metrics"]["roc_auc"] > 0.65
    for plot in ("confusion_matrix", "roc", "pr"):
        assert (folder / "plots" / f"{plot}.png").stat().st_size > 1000


def test_input_names_are_valid_and_never_shadow_outputs() -> None:
    from trainer.data import input_names

    names = input_names(["a b", "a_b", "label", "2nd", "AÑO"])
    assert names == {"a b": "a_b", "a_b": "a_b_", "label": "label_", "2nd": "_2nd", "AÑO": "AÑO"}
