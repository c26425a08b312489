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

__all__ = ["columns_from_instances"]


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (str, int, float)):
        return type(value).__name__
    # google.protobuf.Struct / ListValue, or plain containers from in-process callers
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
    raise TypeError(_kind(value))


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
            values = [_category(v) for v in column]
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
            raise InvalidInput(f"feature '{f.name}' must be numeric, got {_kind(v)}", "value_type")


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
