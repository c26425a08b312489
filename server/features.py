"""Named-feature instances → one input array per feature, built column-wise.

Instances are any mappings (a ``google.protobuf.Struct`` or a plain dict) from feature
name to a JSON-like value, so the same code serves gRPC and any later REST path.

A packed model takes several numeric features as the columns of one ``[rows, k]`` input;
those are gathered row by row into one matrix in a single numpy call, and only a request
that the fast path cannot take (a string, a null, a value out of range) goes through the
per-feature path, which names the culprit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from server.errors import InvalidInput
from server.model import FeatureSpec

__all__ = [
    "Columns",
    "columns_from_inputs",
    "columns_from_instances",
    "columns_of",
    "json_kind",
]


def json_kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    # google.protobuf.Struct / ListValue, or plain containers from JSON and in-process callers
    return "an object" if hasattr(value, "keys") else "a list"


def _category(value: Any) -> str:
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is float:
        # JSON numbers arrive as doubles; a category "7" must not become "7.0"
        return str(int(value)) if value.is_integer() else str(value)
    if t is int:
        return str(value)
    # booleans, nulls, lists and objects are not categories: str() would invent one
    raise TypeError(json_kind(value))


def _unknown(features: Sequence[FeatureSpec], instances: Sequence[Mapping[str, Any]]) -> None:
    known = {f.name for f in features}
    for i, inst in enumerate(instances):
        extra = sorted(k for k in inst.keys() if k not in known)  # noqa: SIM118 - Struct
        if extra:
            raise InvalidInput(
                f"instance {i}: unknown features: {', '.join(extra)}", "unknown_feature"
            )


def columns_from_instances(
    features: Sequence[FeatureSpec],
    instances: Sequence[Mapping[str, Any]],
    packed: Mapping[str, Sequence[FeatureSpec]] | None = None,
) -> dict[str, np.ndarray]:
    """``{feature: array [rows, 1]}``, and ``{input: array [rows, k]}`` for each packed input
    (``packed``: input -> its features in column order); raises :class:`InvalidInput`
    naming the culprit."""
    n = len(features)
    for i, inst in enumerate(instances):
        if len(inst) != n:
            _unknown(features, instances)
            missing = [f.name for f in features if f.name not in inst]
            raise InvalidInput(
                f"instance {i}: missing features: {', '.join(missing)}", "missing_feature"
            )
    feeds: dict[str, np.ndarray] = {}
    for f in features:
        if f.packed_in is not None:
            continue
        feeds[f.name] = _array(f, _column(features, instances, f)).reshape(-1, 1)
    if packed:
        for name, specs in packed.items():
            feeds[name] = _matrix(features, instances, specs)
    return feeds


def _column(
    features: Sequence[FeatureSpec], instances: Sequence[Mapping[str, Any]], f: FeatureSpec
) -> list[Any]:
    try:
        return [inst[f.name] for inst in instances]
    except (KeyError, ValueError):
        # the count matched, so a missing name means another one is unknown
        _unknown(features, instances)
        raise InvalidInput(f"missing feature '{f.name}'", "missing_feature") from None


_NUMBER = (float, int)
_STR = {str}


def _matrix(
    features: Sequence[FeatureSpec],
    instances: Sequence[Mapping[str, Any]],
    specs: Sequence[FeatureSpec],
) -> np.ndarray:
    """One packed input: ``[rows, len(specs)]`` in the specs' column order."""
    dtype = specs[0].datatype.dtype
    names = [f.name for f in specs]
    try:
        rows = [[inst[n] for n in names] for inst in instances]
    except (KeyError, ValueError):
        rows = None
    if rows is not None and all(type(v) in _NUMBER for row in rows for v in row):
        try:
            arr = np.array(rows, dtype=dtype)
        except (OverflowError, ValueError):
            arr = None
        if arr is not None and (
            arr.dtype.kind != "f"
            or (
                all(map(math.isfinite, arr.ravel().tolist()))
                if arr.size <= 32
                else np.isfinite(arr).all()
            )
        ):
            return arr
    # the slow path: the same checks and messages as features of their own
    out = np.empty((len(instances), len(specs)), dtype=dtype)
    for j, f in enumerate(specs):
        out[:, j] = _array(f, _column(features, instances, f))
    return out


def _array(f: FeatureSpec, column: list[Any]) -> np.ndarray:
    """One feature's values as a 1-D array of its datatype."""
    if f.kind == "categorical" or f.datatype.name == "BYTES":
        try:
            # all strings (the usual case): nothing to convert, checked at C speed
            values = column if set(map(type, column)) <= _STR else [_category(v) for v in column]
        except TypeError as exc:
            raise InvalidInput(
                f"feature '{f.name}' must be a string or number, got {exc}", "value_type"
            ) from None
        arr = np.array(values, dtype=object)
        if f.datatype.name != "BYTES":
            arr = _numeric(f, values)
    else:
        _check_numbers(f, column)
        arr = _numeric(f, column)
    return arr


def _check_numbers(f: FeatureSpec, column: list[Any]) -> None:
    for v in column:
        t = type(v)
        # None becomes NaN and is reported as a null by _numeric; a string may hold a
        # number ("2.5"), which _numeric parses or refuses
        if t is not float and t is not int and t is not str and v is not None:
            raise InvalidInput(
                f"feature '{f.name}' must be numeric, got {json_kind(v)}", "value_type"
            )


def _numeric(f: FeatureSpec, column: list[Any]) -> np.ndarray:
    try:
        arr = np.array(column, dtype=f.datatype.dtype)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"feature '{f.name}' must be numeric", "value_type") from None
    if arr.dtype.kind == "f" and not (
        # few rows: a Python loop beats numpy's per-call overhead
        all(map(math.isfinite, arr.tolist())) if len(arr) <= 32 else np.isfinite(arr).all()
    ):
        raise InvalidInput(f"feature '{f.name}' has a null, NaN or Inf value", "non_finite")
    return arr


class Columns:
    """Rows in columnar form (Predict's ``inputs``): feature name -> one value per row.

    Built by :func:`columns_of`, which checks that every feature has a list and that all
    lists have the same length; :meth:`InferenceCore.predict` takes it in place of the
    instances, and ``len()`` is the row count either way.
    """

    __slots__ = ("rows", "values")

    def __init__(self, values: Mapping[str, Any], rows: int) -> None:
        self.values = values
        self.rows = rows

    def __len__(self) -> int:
        return self.rows


def columns_of(inputs: Any) -> Columns:
    """A ``google.protobuf.Struct`` (or a mapping of lists) of columns -> :class:`Columns`."""
    fields = getattr(inputs, "fields", None)
    values: dict[str, Any] = {}
    if fields is not None:  # Struct: keep each ListValue for the vectorised decode
        for name, value in fields.items():
            if value.WhichOneof("kind") != "list_value":
                raise InvalidInput(
                    f"inputs: feature '{name}' must be a list with one value per row, "
                    f"got {json_kind(inputs[name])}",
                    "value_type",
                )
            values[name] = value.list_value
    else:
        for name, column in inputs.items():
            if isinstance(column, (str, bytes)) or not isinstance(column, Sequence):
                raise InvalidInput(
                    f"inputs: feature '{name}' must be a list with one value per row, "
                    f"got {json_kind(column)}",
                    "value_type",
                )
            values[name] = column
    rows = -1
    first = ""
    for name, column in values.items():
        n = len(column.values) if fields is not None else len(column)
        if rows < 0:
            rows, first = n, name
        elif n != rows:
            raise InvalidInput(
                f"inputs: feature '{name}' has {n} values, feature '{first}' has {rows}; "
                "every feature needs one value per row",
                "shape",
            )
    return Columns(values, max(rows, 0))


# A ListValue of numbers serialises as one 11-byte record per value: the tag and length
# of the repeated ``values`` field (0x0a, 0x09), the tag of ``number_value`` (field 2,
# fixed64: 0x11) and the little-endian double. Reading that buffer with numpy decodes a
# numeric column without a Python object per value; anything else (a null, a string, a
# bool) breaks the pattern and takes the per-value path.
_NUMBER_RECORD = np.dtype([("tag", "u1", (3,)), ("value", "<f8")])
_NUMBER_TAG = np.array([0x0A, 0x09, 0x11], dtype=np.uint8)


def _fast_numbers(f: FeatureSpec, column: Any) -> np.ndarray | None:
    if not f.datatype.is_float or not hasattr(column, "SerializeToString"):
        return None
    buf = column.SerializeToString()
    if len(buf) != 11 * len(column.values):
        return None
    records = np.frombuffer(buf, dtype=_NUMBER_RECORD)
    if not (records["tag"] == _NUMBER_TAG).all():
        return None
    arr = records["value"].astype(f.datatype.dtype)
    return arr if np.isfinite(arr).all() else None


def _fast_strings(f: FeatureSpec, column: Any) -> np.ndarray | None:
    if f.datatype.name != "BYTES" or not hasattr(column, "values"):
        return None
    # a value of another kind reads as "" here, so only a column without "" is surely
    # all strings; a column with one goes value by value
    strings = [v.string_value for v in column.values]
    return None if "" in strings else np.array(strings, dtype=object)


def _column_array(f: FeatureSpec, column: Any) -> np.ndarray:
    if f.kind == "categorical" or f.datatype.name == "BYTES":
        arr = _fast_strings(f, column)
    else:
        arr = _fast_numbers(f, column)
    return arr if arr is not None else _array(f, list(column))


def columns_from_inputs(
    features: Sequence[FeatureSpec],
    columns: Columns,
    packed: Mapping[str, Sequence[FeatureSpec]] | None = None,
) -> dict[str, np.ndarray]:
    """The model's inputs from columnar rows: the same arrays, checks and messages as
    :func:`columns_from_instances`, decoded one column at a time."""
    values = columns.values
    known = {f.name for f in features}
    extra = sorted(k for k in values if k not in known)
    if extra:
        raise InvalidInput(f"inputs: unknown features: {', '.join(extra)}", "unknown_feature")
    missing = [f.name for f in features if f.name not in values]
    if missing:
        raise InvalidInput(f"inputs: missing features: {', '.join(missing)}", "missing_feature")
    feeds: dict[str, np.ndarray] = {}
    matrices: dict[str, np.ndarray] = {}
    for name, specs in (packed or {}).items():
        matrices[name] = np.empty((columns.rows, len(specs)), dtype=specs[0].datatype.dtype)
    for f in features:
        arr = _column_array(f, values[f.name])
        if f.packed_in is not None:
            matrices[f.packed_in][:, f.index] = arr
        else:
            feeds[f.name] = arr.reshape(-1, 1)
    feeds.update(matrices)
    return feeds
