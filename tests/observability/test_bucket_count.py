"""The vectorised bucket count gives exactly the counts of the plain, value-by-value one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.monitoring.buckets import FeatureBuckets

CATEGORIES = ["Grupo LATAM", "Sky Airline", "Copa Air", "7", ""]

_category_value = st.one_of(
    st.sampled_from(CATEGORIES),
    st.text(max_size=3),
    st.sampled_from([b"Copa Air", b"zz", 7, 7.0, 3.5, True, None]),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_category_value, max_size=300), as_array=st.booleans())
def test_categorical_count_equals_the_plain_count(values: list[Any], as_array: bool) -> None:
    fb = FeatureBuckets.categorical("c", {"Grupo LATAM": 0.5, "Sky Airline": 0.5}, CATEGORIES)
    data: Any = np.array(values, dtype=object) if as_array else values
    assert fb.count(data).tolist() == fb.count_plain(data).tolist()


def test_an_unhashable_value_fails_like_the_plain_rule() -> None:
    fb = FeatureBuckets.categorical("c", {"a": 1.0}, ["a"])
    values = ["a", ["a"]]
    with pytest.raises(TypeError):
        fb.count_plain(values)
    with pytest.raises(TypeError):
        fb.count(values)


_edges = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=12, unique=True).map(
    sorted
)
_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 10),
    st.integers(-20, 20),
)


@settings(max_examples=300, deadline=None)
@given(
    edges=_edges,
    data=st.data(),
    values=st.lists(_number, max_size=300),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_numeric_count_equals_the_plain_count(
    edges: list[float], data: Any, values: list[float], dtype: Any
) -> None:
    counts = data.draw(st.lists(st.integers(0, 50), min_size=len(edges) - 1,
                                max_size=len(edges) - 1))  # fmt: skip
    bounds = data.draw(
        st.one_of(
            st.none(),
            st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)),
            st.just((edges[0], edges[-1])),
        )
    )
    fb = FeatureBuckets.numeric("x", edges, counts, bounds)
    with np.errstate(over="ignore"):
        arr = np.array(values, dtype=dtype)
    assert fb.count(arr).tolist() == fb.count_plain(arr).tolist()
    assert fb.count(arr.tolist()).tolist() == fb.count_plain(arr.tolist()).tolist()
    # values sitting exactly on the edges and bounds
    on_edges = np.array([*edges, fb.low, fb.high, *edges], dtype=np.float64)
    assert fb.count(on_edges).tolist() == fb.count_plain(on_edges).tolist()
