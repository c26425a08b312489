"""Shared fixtures: small generated data sets, so most tests train in well under a second."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trainer.flights import write_flights_csv


@pytest.fixture(scope="session")
def flights_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flights_csv(tmp_path_factory.mktemp("data") / "flights.csv", rows=4000, seed=11)


@pytest.fixture(scope="session")
def flights_frame(flights_csv: Path) -> pd.DataFrame:
    return pd.read_csv(flights_csv)


@pytest.fixture(scope="session")
def default_flights() -> pd.DataFrame:
    """The default-size generated data set (about a second to build)."""
    from trainer.flights import generate_flights

    return generate_flights()
