"""Predict's columnar form (``inputs``: feature -> one value per row): the same arrays and
errors as ``instances``, decoded one column at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core import InferenceCore
from server.errors import InvalidInput
from server.features import columns_from_inputs, columns_from_instances, columns_of
from server.model import ModelHandle


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def _rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def _valid_rows(handle: ModelHandle, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for f in handle.features:
            if f.kind == "categorical":
                row[f.name] = f.categories[i % len(f.categories)] if f.categories else "x"
            else:
                row[f.name] = float(i % 12) + 0.25
        rows.append(row)
    return rows


def test_columnar_predict_equals_instances(
    flights_core: InferenceCore, flights_handle: ModelHandle
) -> None:
    rows = _valid_rows(flights_handle, 300)
    by_rows = asyncio.run(flights_core.predict("flights", "", [_struct(r) for r in rows]))
    columns = columns_of(_struct(_rows_to_columns(rows)))
    by_columns = asyncio.run(flights_core.predict("flights", "", columns))
    assert by_columns.labels == by_rows.labels
    np.testing.assert_array_equal(by_columns.probabilities, by_rows.probabilities)


@pytest.mark.parametrize(
    ("change", "message", "reason"),
    [
        (lambda c: c.pop("MES"), "inputs: missing features: MES", "missing_feature"),
        (lambda c: c.update(extra=[1, 2]), "inputs: unknown features: extra", "unknown_feature"),
        (lambda c: c.update(MES=[1.0]), r"feature 'MES' has 1\b", "shape"),
        (lambda c: c.update(MES=3.0), "'MES' must be a list .*, got a number$", "value_type"),
        (lambda c: c.update(MES=[1.0, "x"]), "feature 'MES' must be numeric", "value_type"),
        (lambda c: c.update(MES=[1.0, None]), "'MES' has a null, NaN or Inf", "non_finite"),
        (lambda c: c.update(MES=[1.0, True]), "got a boolean", "value_type"),
        (lambda c: c.update(MES=[1.0, 1e39]), "'MES' has a null, NaN or Inf", "non_finite"),
    ],
)
def test_columnar_errors(
    flights_core: InferenceCore, flights_handle: ModelHandle, change: Any, message: str, reason: str
) -> None:
    columns = _rows_to_columns(_valid_rows(flights_handle, 2))
    change(columns)
    with pytest.raises(InvalidInput, match=message) as info:
        asyncio.run(flights_core.predict("flights", "", columns_of(_struct(columns))))
    assert info.value.reason == reason


def test_categorical_errors_and_numbers_as_categories(flights_handle: ModelHandle) -> None:
    cat = next(f for f in flights_handle.features if f.kind == "categorical")
    columns = _rows_to_columns(_valid_rows(flights_handle, 3))
    columns[cat.name] = ["a", 7, ""]  # a number is a category "7"; "" is a category too
    feeds = columns_from_inputs(flights_handle.features, columns_of(_struct(columns)))
    assert feeds[cat.name].ravel().tolist() == ["a", "7", ""]
    columns[cat.name] = ["a", None, "b"]
    with pytest.raises(InvalidInput, match=f"feature '{cat.name}' must be a string or number"):
        columns_from_inputs(flights_handle.features, columns_of(_struct(columns)))


def test_an_empty_columnar_request_is_an_empty_batch(flights_core: InferenceCore) -> None:
    with pytest.raises(InvalidInput, match="empty batch"):
        asyncio.run(flights_core.predict("flights", "", columns_of(_struct({}))))


_number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(width=64),
    st.integers(-(10**6), 10**6),
)
_value = st.one_of(_number, st.text(max_size=4), st.none(), st.booleans())


@settings(max_examples=200, deadline=None)
@given(data=st.data(), rows=st.integers(1, 6))
def test_columnar_decode_equals_instances(
    flights_handle: ModelHandle, data: Any, rows: int
) -> None:
    """For any values, the columnar decode gives exactly the arrays of the instance decode,
    or fails with the same reason and, for a bad value, the same message."""
    columns: dict[str, list[Any]] = {}
    for f in flights_handle.features:
        mostly_valid = (
            st.sampled_from([*f.categories, "", "zz"]) if f.kind == "categorical" else _number
        )
        columns[f.name] = data.draw(
            st.lists(st.one_of(mostly_valid, mostly_valid, _value), min_size=rows, max_size=rows)
        )
    instances = [_struct({k: v[i] for k, v in columns.items()}) for i in range(rows)]

    def outcome(fn: Any) -> Any:
        try:
            return fn()
        except InvalidInput as exc:
            return (exc.reason, str(exc))

    plain = outcome(lambda: columns_from_instances(flights_handle.features, instances))
    columnar = outcome(
        lambda: columns_from_inputs(flights_handle.features, columns_of(_struct(columns)))
    )
    if isinstance(plain, tuple):
        assert columnar == plain
    else:
        assert set(columnar) == set(plain)
        for name, arr in plain.items():
            assert columnar[name].dtype == arr.dtype and columnar[name].shape == arr.shape
            np.testing.assert_array_equal(columnar[name], arr)
