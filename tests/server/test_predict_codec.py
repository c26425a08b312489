"""The Predict response built from the wire format equals the one built message by
message, for any labels, classes and probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core import Prediction
from server.predict_codec import plain_response, predict_response

TEXT = st.text(max_size=12)
# short and long names (a long one takes the plain path), non-ASCII, empty
CLASSES = st.lists(st.one_of(TEXT, st.text(min_size=117, max_size=130)), min_size=1, max_size=5)
DOUBLES = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def responses(draw: st.DrawFn) -> tuple[list[str], list[str], np.ndarray]:
    classes = draw(CLASSES)
    rows = draw(st.integers(0, 40))
    # labels are usually class names; any string must still work
    labels = draw(st.lists(st.one_of(st.sampled_from(classes), TEXT), min_size=rows, max_size=rows))
    values = draw(st.lists(DOUBLES, min_size=rows * len(classes), max_size=rows * len(classes)))
    proba = np.array(values, dtype=np.float64).reshape(rows, len(classes))
    return labels, classes, proba


def _same(a: object, b: object) -> bool:
    """Message equality, NaN equal to NaN (protobuf compares doubles with ==)."""
    if a == b:
        return True
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@settings(max_examples=300, deadline=None)
@given(responses(), TEXT, TEXT, TEXT)
def test_fast_response_equals_the_plain_one(
    case: tuple[list[str], list[str], np.ndarray], name: str, version: str, id: str
) -> None:
    labels, classes, proba = case
    result = Prediction(name, version, labels, classes, proba, id)
    fast = predict_response(result)
    plain = plain_response(result)
    assert _same(fast, plain), (fast, plain)


def test_a_256_row_response_keeps_every_row_in_order() -> None:
    rng = np.random.default_rng(3)
    proba = rng.random((256, 2))
    labels = ["1" if p[1] > p[0] else "0" for p in proba]
    fast = predict_response(Prediction("flight-delay", "1", labels, ["0", "1"], proba, "abc"))
    assert (fast.model_name, fast.model_version, fast.id) == ("flight-delay", "1", "abc")
    assert len(fast.predictions) == 256
    for row, label, prediction in zip(proba, labels, fast.predictions, strict=True):
        assert prediction.label == label
        assert dict(prediction.probabilities) == {"0": row[0], "1": row[1]}


def test_probabilities_that_do_not_match_the_rows_are_refused_as_in_the_plain_path() -> None:
    labels = ["0"] * 16
    with pytest.raises(ValueError):
        predict_response(Prediction("m", "1", labels, ["0", "1"], np.zeros((15, 2))))
    with pytest.raises(ValueError):
        predict_response(Prediction("m", "1", labels, ["0", "1"], np.zeros((16, 3))))
