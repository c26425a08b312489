"""Loading a training CSV and turning it into features and a target, with clear errors.

Two kinds of CSV are accepted: one in the SCL flights schema (features derived by
:mod:`trainer.features`, target = departure more than 15 minutes late) and any other tabular CSV
with ``--target`` and optional ``--categorical`` / ``--numeric`` lists.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainer import features
from trainer.errors import DataError

__all__ = ["Dataset", "input_names", "load_dataset", "read_csv", "sha256_file"]


@dataclass
class Dataset:
    """Model inputs (categorical as ``str``, numeric as float32-representable floats) and target."""

    X: pd.DataFrame
    y: pd.Series
    categorical: list[str]
    numeric: list[str]
    target: str
    kind: str  # "flights" or "tabular"
    #: model input name -> CSV column it came from (names differ when sanitised)
    source: dict[str, str]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV, refusing missing, empty, binary and non-tabular files with a clear message."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as fh:
        head = fh.read(8192)
    if not head.strip():
        raise DataError(f"{path}: the file is empty")
    if b"\0" in head:
        raise DataError(f"{path}: not a CSV file (binary content)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")  # spreadsheet exports are often Latin-1
    if text.lstrip()[:1] in ("{", "[", "<"):
        raise DataError(f"{path}: not a CSV file (looks like JSON, XML or HTML)")
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0] + "\n", delimiters=",;\t")
    except csv.Error:
        raise DataError(f"{path}: not a CSV file (no delimited header line)") from None
    try:
        frame = pd.read_csv(
            path, sep=dialect.delimiter, low_memory=False, encoding_errors="replace"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if len(frame.columns) < 2:
        raise DataError(f"{path}: not a CSV file (found {len(frame.columns)} column)")
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    return frame


# Graph outputs; an input with the same name would make skl2onnx rename one of them.
_RESERVED = {"label", "probabilities"}


def input_names(columns: list[str]) -> dict[str, str]:
    """Model input name for each column: the name skl2onnx would keep (word characters, no
    leading digit), so the ONNX inputs carry exactly the names in the manifest."""
    names: dict[str, str] = {}
    for column in columns:
        name = re.sub(r"\W", "_", str(column))
        name = f"_{name}" if name[:1].isdigit() or not name else name
        while name in _RESERVED or name in names.values():
            name += "_"
        names[column] = name
    return names


def _check_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} column(s) {', '.join(map(repr, missing))} not in the data "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            f"numeric column {column!r}: non-numeric value {frame[column].iloc[row]!r} at row "
            f"{row}; declare it with --categorical"
        )
    # The served model takes FP32; training on float32-rounded values makes the parity check
    # compare like with like.
    return values.astype(np.float32).astype(float)


def _target(frame: pd.DataFrame, column: str) -> pd.Series:
    y = frame[column]
    if y.isna().any():
        raise DataError(f"target column {column!r}: {int(y.isna().sum())} missing value(s)")
    if pd.api.types.is_float_dtype(y) and (y == y.round()).all():
        y = y.astype(np.int64)
    elif not pd.api.types.is_integer_dtype(y):
        y = y.astype(str)
    if y.nunique() < 2:
        raise DataError(
            f"target column {column!r} has a single class ({y.iloc[0]!r}); need at least two"
        )
    return y


def _tabular(
    frame: pd.DataFrame, target: str, categorical: list[str] | None, numeric: list[str] | None
) -> Dataset:
    _check_columns(frame, [target], "target")
    if categorical is None and numeric is None:
        rest = [c for c in frame.columns if c != target]
        numeric = [c for c in rest if pd.api.types.is_numeric_dtype(frame[c])]
        categorical = [c for c in rest if c not in numeric]
    categorical, numeric = list(categorical or []), list(numeric or [])
    _check_columns(frame, categorical + numeric, "feature")
    if target in categorical + numeric:
        raise DataError(f"target column {target!r} is also listed as a feature")
    if not categorical + numeric:
        raise DataError("no feature columns: give --categorical and/or --numeric")
    names = input_names(categorical + numeric)
    X = pd.DataFrame(index=frame.index)
    for column in categorical:
        X[names[column]] = frame[column].fillna("").astype(str).astype(object)
    for column in numeric:
        X[names[column]] = _numeric(frame, column)
    return Dataset(
        X,
        _target(frame, target),
        [names[c] for c in categorical],
        [names[c] for c in numeric],
        target,
        "tabular",
        {name: column for column, name in names.items()},
    )


def load_dataset(
    path: Path,
    target: str | None = None,
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
) -> Dataset:
    """Read ``path`` and build the dataset; flights CSVs need no column arguments."""
    frame = read_csv(path)
    if target is None and categorical is None and numeric is None:
        if not features.is_flights_frame(frame):
            raise DataError(
                f"{path}: --target is required (the file lacks the flights columns "
                "'Fecha-I' and 'Fecha-O')"
            )
        y = features.flight_target(frame)
        X = features.flight_features(frame)
        if y.nunique() < 2:
            raise DataError(
                f"target {features.FLIGHT_TARGET!r} (from Fecha-O - Fecha-I) has one class"
            )
        for column in features.FLIGHT_NUMERIC:
            X[column] = X[column].astype(np.float32).astype(float)
        cat, num = features.FLIGHT_CATEGORICAL, features.FLIGHT_NUMERIC
        return Dataset(X, y, cat, num, features.FLIGHT_TARGET, "flights", {c: c for c in cat + num})
    if target is None:
        raise DataError("--target is required when --categorical or --numeric is given")
    return _tabular(frame, target, categorical, numeric)
