"""The synthetic SCL flights generator: schema, marginals, learnable signal, drift mode."""

from __future__ import annotations

import pandas as pd

from trainer.features import flight_features, flight_target
from trainer.flights import COLUMNS, OPERATORS, generate_flights


def _delayed(frame: pd.DataFrame) -> pd.Series:
    return flight_target(frame).astype(bool)


def test_schema_and_size_match_the_scl_file(default_flights: pd.DataFrame) -> None:
    assert list(default_flights.columns) == COLUMNS
    assert len(default_flights) == 68_000
    assert set(default_flights["TIPOVUELO"]) == {"I", "N"}
    assert set(default_flights["Ori-I"]) == {"SCEL"}
    assert set(default_flights["AÑO"]) <= {2017, 2018}  # late December flights may roll over
    assert default_flights["MES"].between(1, 12).all()
    assert default_flights["DIA"].between(1, 31).all()
    pd.to_datetime(default_flights["Fecha-I"], format="%Y-%m-%d %H:%M:%S")  # raises if malformed


def test_marginals_are_plausible(default_flights: pd.DataFrame) -> None:
    delayed = _delayed(default_flights)
    assert 0.16 < delayed.mean() < 0.20
    volume = default_flights["OPERA"].value_counts(normalize=True)
    assert 20 <= len(volume) <= 25
    assert volume.index[:2].tolist() == ["Grupo LATAM", "Sky Airline"]
    assert volume.iloc[:2].sum() > 0.75 and volume.iloc[-1] < 0.002
    assert 0.25 < (default_flights["TIPOVUELO"] == "I").mean() < 0.5
    assert default_flights["MES"].nunique() == 12 and default_flights["DIANOM"].nunique() == 7
    hours = pd.to_datetime(default_flights["Fecha-I"]).dt.hour
    assert hours.nunique() == 24


def test_operator_delay_rates_match_published_figures(default_flights: pd.DataFrame) -> None:
    rates = _delayed(default_flights).groupby(default_flights["OPERA"]).mean()
    published = {op.name: op.delay_rate for op in OPERATORS}
    for name in ["Grupo LATAM", "Sky Airline", "Copa Air", "Latin American Wings", "Avianca"]:
        assert abs(rates[name] - published[name]) < 0.05, name


def test_delay_depends_on_month_hour_and_flight_type(default_flights: pd.DataFrame) -> None:
    delayed = _delayed(default_flights)
    feats = flight_features(default_flights)
    by_month = delayed.groupby(feats["MES"]).mean()
    assert by_month[7] - by_month[4] > 0.1  # July holidays vs quiet April
    by_period = delayed.groupby(feats["period_of_day"]).mean()
    assert by_period["night"] > by_period["morning"] + 0.03
    by_type = delayed.groupby(default_flights["TIPOVUELO"]).mean()
    assert by_type["I"] > by_type["N"]


def test_seeded_and_repeatable() -> None:
    a = generate_flights(500, seed=3)
    pd.testing.assert_frame_equal(a, generate_flights(500, seed=3))
    assert not a.equals(generate_flights(500, seed=4))


def test_drift_mode_shifts_distributions_and_adds_unseen_values() -> None:
    base = generate_flights(6000, seed=5)
    drift = generate_flights(6000, seed=5, drift=True)
    assert list(drift.columns) == COLUMNS
    unseen = set(drift["OPERA"]) - set(base["OPERA"])
    assert {"Arajet", "Flybondi"} <= unseen
    assert set(drift["SIGLADES"]) - set(base["SIGLADES"])
    assert not drift["MES"].between(1, 12).all()  # out-of-range months
    winter = [6, 7, 8]
    assert drift["MES"].isin(winter).mean() > base["MES"].isin(winter).mean() + 0.15
    assert _delayed(drift).mean() > _delayed(base).mean() + 0.03
    # Drifted rows still go through the feature function the load tests use.
    assert len(flight_features(drift)) == len(drift)
