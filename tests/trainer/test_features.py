"""Raw flight rows -> model features (the API boundary) and target."""

from __future__ import annotations

import pandas as pd
import pytest

from trainer.errors import DataError
from trainer.features import (
    FLIGHT_CATEGORICAL,
    FLIGHT_NUMERIC,
    flight_features,
    flight_target,
)


def _rows(**overrides: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        "Fecha-I": ["2017-07-20 06:30:00", "2017-04-03 13:00:00", "2017-12-20 23:55:00"],
        "Fecha-O": ["2017-07-20 06:46:00", "2017-04-03 13:15:00", "2017-12-21 00:20:00"],
        "OPERA": ["Sky Airline", "Grupo LATAM", "Copa Air"],
        "TIPOVUELO": ["N", "N", "I"],
        "SIGLADES": ["Calama", "Arica", "Ciudad de Panama"],
        "DIANOM": ["Jueves", "Lunes", "Miercoles"],
        "MES": [7, 4, 12],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_features_are_derived_from_raw_columns() -> None:
    feats = flight_features(_rows())
    assert list(feats.columns) == FLIGHT_CATEGORICAL + FLIGHT_NUMERIC
    assert feats["hour"].tolist() == [6.0, 13.0, 23.0]
    assert feats["period_of_day"].tolist() == ["morning", "afternoon", "night"]
    assert feats["high_season"].tolist() == [1.0, 0.0, 1.0]
    assert feats["MES"].tolist() == [7.0, 4.0, 12.0]
    assert all(isinstance(v, str) for v in feats["OPERA"])


def test_target_is_departure_more_than_15_minutes_late() -> None:
    # 16 minutes late, exactly 15 (on time), 25 minutes across midnight
    assert flight_target(_rows()).tolist() == [1, 0, 1]


def test_unparseable_date_names_the_column_and_row() -> None:
    rows = _rows(**{"Fecha-I": ["2017-07-20 06:30:00", "yesterday", "2017-12-20 23:55:00"]})
    with pytest.raises(DataError, match=r"'Fecha-I'.*row 1.*'yesterday'"):
        flight_features(rows)


def test_missing_raw_column_is_named() -> None:
    with pytest.raises(DataError, match="'SIGLADES'"):
        flight_features(_rows().drop(columns=["SIGLADES"]))
