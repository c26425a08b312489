"""Raw SCL flight rows -> the model's input features (the API boundary) and target.

Clients of the served ``flight-delay`` model send exactly these features by name, so the
load-test and monitoring code build request rows with :func:`flight_features`. Everything after
this boundary (one-hot encoding, scaling) lives inside the ONNX graph.
"""

from __future__ import annotations

import pandas as pd

from trainer.errors import DataError

__all__ = [
    "FLIGHT_CATEGORICAL",
    "FLIGHT_NUMERIC",
    "FLIGHT_TARGET",
    "REQUIRED_COLUMNS",
    "flight_features",
    "flight_target",
    "is_flights_frame",
]

FLIGHT_CATEGORICAL = ["OPERA", "TIPOVUELO", "SIGLADES", "DIANOM", "period_of_day"]
FLIGHT_NUMERIC = ["MES", "hour", "high_season"]
FLIGHT_TARGET = "delay_15"
#: raw columns the features and the target are computed from
REQUIRED_COLUMNS = ["Fecha-I", "Fecha-O", "OPERA", "TIPOVUELO", "SIGLADES", "DIANOM", "MES"]
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def is_flights_frame(frame: pd.DataFrame) -> bool:
    """True for a frame in the SCL schema (recognised by its two timestamp columns)."""
    return {"Fecha-I", "Fecha-O"} <= set(frame.columns)


def _require(frame: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(map(repr, missing))} in the flights data")


def _timestamps(frame: pd.DataFrame, column: str) -> pd.Series:
    # Strict format first (the real file's), then a lenient parse; report the first bad value.
    parsed = pd.to_datetime(frame[column], format=_DATE_FORMAT, errors="coerce")
    if parsed.isna().any():
        parsed = pd.to_datetime(frame[column], format="mixed", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            f"column {column!r}: {int(bad.sum())} unparseable date(s), first at row {row}: "
            f"{frame[column].iloc[row]!r} (expected YYYY-MM-DD HH:MM:SS)"
        )
    return parsed


def _high_season(when: pd.Series) -> pd.Series:  # also drives the generator
    """Chilean holiday seasons: Dec 15 - Mar 3, Jul 15 - 31, Sep 11 - 30."""
    md = when.dt.month * 100 + when.dt.day
    return ((md >= 1215) | (md <= 303) | md.between(715, 731) | md.between(911, 930)).astype(int)


def _period_of_day(hour: pd.Series) -> pd.Series:
    period = pd.Series("night", index=hour.index, dtype=object)
    period[hour.between(5, 11)] = "morning"
    period[hour.between(12, 18)] = "afternoon"
    return period


def flight_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Model features of raw flight rows: categorical columns as ``str``, numeric as float.

    Needs ``Fecha-I`` (scheduled departure), ``OPERA``, ``TIPOVUELO``, ``SIGLADES``, ``DIANOM``
    and ``MES``; ``Fecha-O`` is only needed for the target.
    """
    _require(frame, [c for c in REQUIRED_COLUMNS if c != "Fecha-O"])
    scheduled = _timestamps(frame, "Fecha-I")
    month = pd.to_numeric(frame["MES"], errors="coerce")
    if month.isna().any():
        row = int(month.isna().to_numpy().nonzero()[0][0])
        raise DataError(f"column 'MES': non-numeric value at row {row}: {frame['MES'].iloc[row]!r}")
    out = pd.DataFrame(index=frame.index)
    for column in ("OPERA", "TIPOVUELO", "SIGLADES", "DIANOM"):
        out[column] = frame[column].fillna("").astype(str).str.strip().astype(object)
    out["period_of_day"] = _period_of_day(scheduled.dt.hour)
    out["MES"] = month.astype(float)
    out["hour"] = scheduled.dt.hour.astype(float)
    out["high_season"] = _high_season(scheduled).astype(float)
    return out[FLIGHT_CATEGORICAL + FLIGHT_NUMERIC]


def flight_target(frame: pd.DataFrame) -> pd.Series:
    """1 when the flight left more than 15 minutes after its scheduled time, else 0."""
    _require(frame, ["Fecha-I", "Fecha-O"])
    delay = _timestamps(frame, "Fecha-O") - _timestamps(frame, "Fecha-I")
    return (delay > pd.Timedelta(minutes=15)).astype(int).rename(FLIGHT_TARGET)
