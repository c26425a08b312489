"""A seeded generator of flights with the schema of the Santiago (SCL) 2017 data set.

The real file cannot be downloaded everywhere this project is built, so the default model trains
on synthetic flights with the same 18 columns and plausible marginals: about 68,000 departures
from SCEL in 2017, operators with very different volumes, a national/international mix, seasonal
months and daily peaks. Whether a flight leaves more than 15 minutes late is drawn from a logistic
model of operator, month, hour, weekday, destination and flight type, with each operator's
intercept solved so that its delay rate matches the published one (LATAM 18%, Sky 18%,
Aerolineas Argentinas 24%, Copa 6%, LAW 41%, Avianca 27%; about 18% overall).

``drift=True`` produces next year's traffic as seen by a drifting deployment: winter-heavy months,
later departures, new operators and destinations (unseen categories), more delays, and a few rows
with a month outside 1..12 (data-entry errors) for the monitoring to catch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trainer.features import _high_season

__all__ = ["COLUMNS", "OPERATORS", "generate_flights", "write_flights_csv"]

COLUMNS = [
    "Fecha-I", "Vlo-I", "Ori-I", "Des-I", "Emp-I", "Fecha-O", "Vlo-O", "Ori-O", "Des-O", "Emp-O",
    "DIA", "MES", "AÑO", "DIANOM", "TIPOVUELO", "OPERA", "SIGLAORI", "SIGLADES",
]  # fmt: skip


class Operator(NamedTuple):
    name: str
    code: str
    flights: int  # 2017 volume, sets the sampling weight
    delay_rate: float
    international: float  # share of international departures
    destinations: tuple[str, ...]  # international destinations (SIGLADES)


OPERATORS = [
    Operator("Grupo LATAM", "LAN", 40_900, 0.18, 0.30, ("Lima", "Buenos Aires", "Sao Paulo",
             "Miami", "Madrid", "Bogota", "Mendoza", "Rio de Janeiro", "Punta Cana", "Cordoba")),
    Operator("Sky Airline", "SKU", 14_300, 0.18, 0.15, ("Lima", "Buenos Aires", "Mendoza",
             "Montevideo")),
    Operator("Aerolineas Argentinas", "ARG", 1_950, 0.24, 1.0, ("Buenos Aires", "Cordoba")),
    Operator("Copa Air", "CMP", 1_850, 0.06, 1.0, ("Ciudad de Panama",)),
    Operator("Latin American Wings", "LAW", 1_670, 0.41, 0.15, ("Punta Cana", "Lima")),
    Operator("Avianca", "AVA", 1_150, 0.27, 1.0, ("Bogota", "Lima")),
    Operator("JetSmart SPA", "JAT", 1_100, 0.18, 0.0, ()),
    Operator("Gol Trans", "GLO", 800, 0.26, 1.0, ("Sao Paulo", "Rio de Janeiro")),
    Operator("American Airlines", "AAL", 760, 0.08, 1.0, ("Miami", "Dallas")),
    Operator("Air Canada", "ACA", 560, 0.45, 1.0, ("Toronto",)),
    Operator("Iberia", "IBE", 360, 0.12, 1.0, ("Madrid",)),
    Operator("Delta Air", "DAL", 360, 0.04, 1.0, ("Atlanta",)),
    Operator("Air France", "AFR", 360, 0.10, 1.0, ("Paris",)),
    Operator("Aeromexico", "AMX", 350, 0.05, 1.0, ("Ciudad de Mexico",)),
    Operator("United Airlines", "UAL", 340, 0.05, 1.0, ("Houston",)),
    Operator("Oceanair Linhas Aereas", "ONE", 280, 0.16, 1.0, ("Sao Paulo",)),
    Operator("Alitalia", "AZA", 260, 0.17, 1.0, ("Roma",)),
    Operator("K.L.M.", "KLM", 250, 0.20, 1.0, ("Amsterdam",)),
    Operator("British Airways", "BAW", 200, 0.15, 1.0, ("Londres",)),
    Operator("Qantas Airways", "QFU", 195, 0.57, 1.0, ("Sydney",)),
    Operator("Lacsa", "LRC", 90, 0.17, 1.0, ("Lima",)),
    Operator("Austral", "AUT", 75, 0.28, 1.0, ("Buenos Aires",)),
    Operator("Plus Ultra Lineas Aereas", "PUE", 50, 0.61, 1.0, ("Madrid",)),
]  # fmt: skip

# Operators and destinations that never appear in the training year (drift mode only).
_NEW_OPERATORS = [
    Operator("Arajet", "DWI", 3_000, 0.30, 1.0, ("Santo Domingo",)),
    Operator("Flybondi", "FBZ", 2_500, 0.35, 1.0, ("Buenos Aires", "Florianopolis")),
]

_NATIONAL = {  # SIGLADES -> (ICAO code, weight)
    "Antofagasta": ("SCFA", 12), "Calama": ("SCCF", 11), "Puerto Montt": ("SCTE", 10),
    "Concepcion": ("SCIE", 9), "Iquique": ("SCDA", 8), "Punta Arenas": ("SCCI", 7),
    "La Serena": ("SCSE", 7), "Arica": ("SCAR", 5), "Temuco": ("SCQP", 5), "Copiapo": ("SCAT", 4),
    "Balmaceda": ("SCBA", 3), "Valdivia": ("SCVD", 3), "Osorno": ("SCJO", 1),
    "Castro (Chiloe)": ("SCPQ", 1), "Puerto Natales": ("SCNT", 1), "Isla de Pascua": ("SCIP", 1),
}  # fmt: skip
_INTERNATIONAL = {
    "Lima": "SPJC", "Buenos Aires": "SAEZ", "Sao Paulo": "SBGR", "Miami": "KMIA", "Madrid": "LEMD",
    "Bogota": "SKBO", "Mendoza": "SAME", "Rio de Janeiro": "SBGL", "Punta Cana": "MDPC",
    "Cordoba": "SACO", "Montevideo": "SUMU", "Ciudad de Panama": "MPTO", "Dallas": "KDFW",
    "Toronto": "CYYZ", "Atlanta": "KATL", "Paris": "LFPG", "Ciudad de Mexico": "MMMX",
    "Houston": "KIAH", "Roma": "LIRF", "Amsterdam": "EHAM", "Londres": "EGLL",
    "Sydney": "YSSY", "Santo Domingo": "MDSD", "Florianopolis": "SBFL",
}  # fmt: skip
_DAY_NAMES = ["Lunes", "Martes", "Miercoles", "Jueves", "Viernes", "Sabado", "Domingo"]

# Traffic shape and log-odds effects; months and hours are 1-based/0-based index positions.
_MONTH_WEIGHTS = np.array([61, 56, 55, 50, 52, 50, 60, 57, 56, 60, 61, 64], float)
_MONTH_EFFECT = np.array([0.0, -0.05, -0.5, -0.55, -0.3, -0.1, 0.6, 0.0, -0.05, 0.25, 0.1, 0.45])
_HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 2, 5, 9, 9, 8, 6, 6, 6, 7, 7, 6, 6, 6, 7, 7, 8, 7, 6, 5, 3], float
)
_HOUR_EFFECT = np.repeat([0.2, -0.45, -0.15, 0.05, 0.2, 0.35, 0.25], [5, 4, 3, 3, 3, 3, 3])
_WEEKDAY_EFFECT = np.array([0.0, -0.05, 0.0, 0.1, 0.2, -0.15, 0.0])  # Monday first
_INTERNATIONAL_EFFECT = 0.35


def _fit_intercepts(logit: np.ndarray, groups: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Shift each group's log-odds so its mean probability equals its target rate."""
    lo = np.full(len(rates), -15.0)
    hi = np.full(len(rates), 15.0)
    counts = np.maximum(np.bincount(groups, minlength=len(rates)), 1)
    for _ in range(50):  # bisection: the mean of a sigmoid is monotone in the shift
        mid = (lo + hi) / 2
        mean = np.bincount(groups, 1 / (1 + np.exp(-(logit + mid[groups]))), len(rates)) / counts
        too_high = mean > rates
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return logit + ((lo + hi) / 2)[groups]


def generate_flights(rows: int = 68_000, seed: int = 2017, drift: bool = False) -> pd.DataFrame:
    """Flights in the SCL schema; the same ``(rows, seed, drift)`` always give the same frame."""
    rng = np.random.default_rng(seed)
    operators = OPERATORS + (_NEW_OPERATORS if drift else [])
    volume = np.array([op.flights for op in operators], float)
    if drift:
        volume[[4, 9]] *= 4  # LAW and Air Canada grow, with their high delay rates
    op_idx = rng.choice(len(operators), rows, p=volume / volume.sum())

    intl_share = np.array([op.international for op in operators])
    international = rng.random(rows) < np.minimum(intl_share[op_idx] * (1.3 if drift else 1), 1)
    national_names = list(_NATIONAL)
    national_w = np.array([w for _, w in _NATIONAL.values()], float)
    dest = np.array(national_names, dtype=object)[
        rng.choice(len(national_names), rows, p=national_w / national_w.sum())
    ]
    for i, op in enumerate(operators):
        pool = list(op.destinations) + (["Punta Cana", "Florianopolis"] if drift else [])
        mask = international & (op_idx == i)
        if pool and mask.any():
            dest[mask] = rng.choice(pool, mask.sum())
    international &= np.isin(dest, list(_INTERNATIONAL))

    winter = np.isin(np.arange(1, 13), [6, 7, 8])
    month_w = _MONTH_WEIGHTS * np.where(winter & drift, 3, 1)  # drift: winter-heavy
    hour_w = np.roll(_HOUR_WEIGHTS, 3) if drift else _HOUR_WEIGHTS  # departures move later
    year = 2018 if drift else 2017
    month = rng.choice(12, rows, p=month_w / month_w.sum()) + 1
    days_in_month = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": 1}))
    day = np.floor(rng.random(rows) * days_in_month.dt.days_in_month.to_numpy()).astype(int) + 1
    hour = rng.choice(24, rows, p=hour_w / hour_w.sum())
    minute = rng.choice(12, rows) * 5
    scheduled = pd.to_datetime(
        pd.DataFrame({"year": year, "month": month, "day": day, "hour": hour, "minute": minute})
    )

    dest_effect = dict(zip(sorted(set(dest)), rng.normal(0, 0.25, len(set(dest))), strict=True))
    high_season = _high_season(scheduled).to_numpy()
    logit = (
        _MONTH_EFFECT[month - 1]
        + _HOUR_EFFECT[hour]
        + _WEEKDAY_EFFECT[scheduled.dt.day_of_week.to_numpy()]
        + _INTERNATIONAL_EFFECT * international
        + 0.15 * high_season
        + np.array([dest_effect[d] for d in dest])
    )
    rates = np.array([op.delay_rate for op in operators]) * (1.35 if drift else 1)
    p_delay = 1 / (1 + np.exp(-_fit_intercepts(logit, op_idx, np.minimum(rates, 0.9))))
    delayed = rng.random(rows) < p_delay
    minutes = np.where(
        delayed,
        16 + np.minimum(rng.exponential(25, rows), 400).astype(int),
        np.clip(np.round(rng.normal(2, 5, rows)), -15, 15).astype(int),
    )
    actual = scheduled + pd.to_timedelta(minutes, unit="min")
    return _assemble(rng, operators, op_idx, dest, international, scheduled, actual, drift)


def _assemble(
    rng: np.random.Generator,
    operators: list[Operator],
    op_idx: np.ndarray,
    dest: np.ndarray,
    international: np.ndarray,
    scheduled: pd.Series,
    actual: pd.Series,
    drift: bool,
) -> pd.DataFrame:
    rows = len(op_idx)
    codes = np.array([op.code for op in operators], dtype=object)[op_idx]
    icao = {**{k: v for k, (v, _) in _NATIONAL.items()}, **_INTERNATIONAL}
    des_i = np.array([icao[d] for d in dest], dtype=object)
    flight_no = (
        (pd.factorize(dest)[0] * 37 + scheduled.dt.hour.to_numpy() * 7 + op_idx * 101) % 9000 + 100
    ).astype(str)
    # A few operated flights differ from the schedule: a subsidiary, a new number, a diversion.
    emp_o = np.where((codes == "LAN") & ~international & (rng.random(rows) < 0.3), "LXP", codes)
    vlo_o = np.where(rng.random(rows) < 0.01, (flight_no.astype(int) + 1).astype(str), flight_no)
    des_o = np.where(rng.random(rows) < 0.003, "SCFA", des_i)
    month = actual.dt.month.to_numpy()
    if drift:  # data-entry errors: months outside 1..12 for the range checks to catch
        bad = rng.random(rows) < 0.02
        month = np.where(bad, rng.choice([0, 13], rows), month)
    frame = {
        "Fecha-I": scheduled.dt.strftime("%Y-%m-%d %H:%M:%S"),
        "Vlo-I": flight_no,
        "Ori-I": "SCEL",
        "Des-I": des_i,
        "Emp-I": codes,
        "Fecha-O": actual.dt.strftime("%Y-%m-%d %H:%M:%S"),
        "Vlo-O": vlo_o,
        "Ori-O": "SCEL",
        "Des-O": des_o,
        "Emp-O": emp_o,
        "DIA": actual.dt.day.to_numpy(),
        "MES": month,
        "AÑO": actual.dt.year.to_numpy(),
        "DIANOM": np.array(_DAY_NAMES, dtype=object)[actual.dt.day_of_week.to_numpy()],
        "TIPOVUELO": np.where(international, "I", "N"),
        "OPERA": np.array([op.name for op in operators], dtype=object)[op_idx],
        "SIGLAORI": "Santiago",
        "SIGLADES": dest,
    }
    return (
        pd.DataFrame(frame, columns=COLUMNS)
        .sort_values("Fecha-I", kind="stable")
        .reset_index(drop=True)
    )


def write_flights_csv(
    path: Path, rows: int = 68_000, seed: int = 2017, drift: bool = False
) -> Path:
    """Write the generated flights as UTF-8 CSV (the real file's encoding) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_flights(rows, seed, drift).to_csv(path, index=False)
    return path


def register(subparsers: Any) -> None:
    """``python -m trainer generate``: the first stage of the DVC pipeline."""
    parser = subparsers.add_parser("generate", help="Write the synthetic SCL flights CSV.")
    parser.add_argument("--out", type=Path, default=Path("data/flights.csv"))
    parser.add_argument("--rows", type=int, default=68_000)
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--drift", action="store_true", help="shifted, drifting traffic")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    path = write_flights_csv(args.out, args.rows, args.seed, args.drift)
    print(f"wrote {args.rows} flights to {path}")
    return 0
