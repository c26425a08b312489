"""model.json through the typed model: old files load, unusable ones fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pronto_contract import SCHEMA_VERSION, Manifest, ManifestError, read_manifest

#: a manifest as the trainer wrote it before ``schema_version`` existed
BEFORE_VERSIONING = {
    "name": "flight-delay",
    "version": 3,
    "created_at": "2026-01-01T00:00:00Z",
    "code_version": "abc123",
    "platform": "onnxruntime_onnx",
    "data": {"path": "data/flights.csv", "sha256": "0" * 64, "rows": 100},
    "params": {"estimator": "logistic_regression", "seed": 42},
    "metrics": {
        "roc_auc": 0.61,
        "brier": 0.2,
        "confusion_matrix": {"labels": [0, 1], "matrix": [[70, 10], [10, 10]]},
    },
    "parity": {"passed": True, "max_abs_diff": 1e-7},
    "signature": {
        "inputs": [
            {"name": "OPERA", "datatype": "BYTES", "shape": [-1, 1], "kind": "categorical",
             "categories": ["Grupo LATAM", "Sky Airline"], "column": "OPERA"},
            {"name": "MES", "datatype": "FP32", "shape": [-1, 1], "kind": "numeric",
             "range": [1, 12], "column": "MES"},
        ],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
        "classes": [0, 1],
        "positive_class": 1,
    },
    "reference": {
        "features": {"OPERA": {"kind": "categorical", "frequencies": {"Grupo LATAM": 0.6}}},
        "score": {"of": "positive_class_probability", "split": "test", "edges": [0, 1],
                  "counts": [5]},
    },
}  # fmt: skip


def test_a_manifest_from_before_versioning_loads_as_version_1() -> None:
    m = Manifest.parse(BEFORE_VERSIONING)
    assert m.schema_version == 1 < SCHEMA_VERSION
    # numbers written as class labels are read as the strings the server keys by
    assert m.signature.classes == ["0", "1"] and m.signature.positive_class == "1"
    assert m.signature.input("MES") is not None and m.signature.input("MES").range == [1, 12]
    assert m.metrics.predicted_positive_rate("1") == pytest.approx(0.2)
    # keys this code does not know are kept, not dropped, on a round trip
    again = json.loads(m.to_json())
    assert again["metrics"]["brier"] == 0.2 and again["schema_version"] == 1


def test_a_minimal_hand_written_manifest_loads() -> None:
    m = Manifest.parse({})
    assert m.signature.inputs == [] and m.batching is None and not m.has_batching_entry


def test_a_newer_schema_fails_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**BEFORE_VERSIONING, "schema_version": SCHEMA_VERSION + 1}))
    newer = rf"model.json: schema_version {SCHEMA_VERSION + 1} is newer .* upgrade"
    with pytest.raises(ManifestError, match=newer):
        read_manifest(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"signature": {"inputs": [{"kind": "numeric"}]}}', r"signature\.inputs\.0\.name"),
        ('{"reference": {"score": {"of": "median"}}}', r"reference\.score\.of"),
    ],
)
def test_an_unusable_manifest_names_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(tmp_path)  # a version folder works as well as the file
    assert str(tmp_path / "model.json") in str(info.value)
