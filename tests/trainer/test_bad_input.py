"""Unusable data: a message naming the problem (and the column), exit code 1, nothing published."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trainer.__main__ import main


def _train(capsys: pytest.CaptureFixture[str], repo: Path, *args: str) -> tuple[int, str]:
    code = main(["train", "--model-repository", str(repo), "--name", "m", *args])
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, repo: Path, *needles: str) -> None:
    assert code == 1
    assert err.startswith("pronto train: error:")
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    # Nothing published, and no staging folder left behind.
    assert not (repo / "m").exists() or not any((repo / "m").iterdir())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_flights_csv_missing_a_column(
    flights_frame: pd.DataFrame, tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "f.csv"
    flights_frame.drop(columns=["OPERA"]).to_csv(path, index=False)
    _assert_refused(*_train(capsys, repo, "--data", str(path)), repo, "missing column", "'OPERA'")


def test_tabular_csv_missing_target_or_feature(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2, 3, 4], "y": [0, 1, 0, 1]}).to_csv(path, index=False)
    code, err = _train(capsys, repo, "--data", str(path), "--target", "label")
    _assert_refused(code, err, repo, "target column(s) 'label' not in the data")
    code, err = _train(capsys, repo, "--data", str(path), "--target", "y", "--numeric", "a", "b")
    _assert_refused(code, err, repo, "feature column(s) 'b' not in the data")


def test_csv_without_flights_columns_needs_a_target(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2], "y": [0, 1]}).to_csv(path, index=False)
    _assert_refused(*_train(capsys, repo, "--data", str(path)), repo, "--target is required")


def test_unparseable_dates(
    flights_frame: pd.DataFrame, tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = flights_frame.copy()
    frame.loc[7, "Fecha-O"] = "31/02/2017 25:99"
    path = tmp_path / "f.csv"
    frame.to_csv(path, index=False)
    code, err = _train(capsys, repo, "--data", str(path))
    _assert_refused(code, err, repo, "'Fecha-O'", "unparseable date", "row 7", "31/02/2017 25:99")


def test_non_numeric_value_in_numeric_column(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": ["1", "x", "3", "4"], "y": [0, 1, 0, 1]}).to_csv(path, index=False)
    code, err = _train(capsys, repo, "--data", str(path), "--target", "y", "--numeric", "a")
    _assert_refused(code, err, repo, "numeric column 'a'", "'x'")


def test_target_with_a_single_class(
    flights_frame: pd.DataFrame, tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["yes", "yes", "yes"]}).to_csv(path, index=False)
    code, err = _train(capsys, repo, "--data", str(path), "--target", "y")
    _assert_refused(code, err, repo, "target column 'y' has a single class")
    on_time = flights_frame.copy()
    on_time["Fecha-O"] = on_time["Fecha-I"]
    on_time.to_csv(path, index=False)
    _assert_refused(*_train(capsys, repo, "--data", str(path)), repo, "'delay_15'", "one class")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "the file is empty"),
        (b"\n\n  \n", "the file is empty"),
        (b"a,b,y\n", "header but no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a CSV file"),
        (b"just some prose without any delimiter\nmore prose\n", "not a CSV file"),
        (b'{"a": 1, "y": 0}\n{"a": 2, "y": 1}\n', "not a CSV file"),
    ],
    ids=["empty", "blank", "header-only", "binary", "prose", "json-lines"],
)
def test_empty_and_non_csv_files(
    content: bytes,
    needle: str,
    tmp_path: Path,
    repo: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    code, err = _train(capsys, repo, "--data", str(path), "--target", "y")
    _assert_refused(code, err, repo, str(path), needle)


def test_missing_file(tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _train(capsys, repo, "--data", str(tmp_path / "nope.csv"), "--target", "y")
    _assert_refused(code, err, repo, "no such file")


def test_semicolon_separated_csv_is_read(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.csv"
    rows = "".join(f"{i % 7};{'ab'[i % 2]};{int(i % 7 > 3)}\n" for i in range(60))
    path.write_text("x;c;y\n" + rows)
    code, err = _train(capsys, repo, "--data", str(path), "--target", "y")
    assert code == 0, err
    assert (repo / "m" / "1" / "model.onnx").exists()
