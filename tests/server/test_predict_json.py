"""REST Predict's JSON, read and written by the worker: the same rows as the transcoded
``PredictRequest`` gave, the same reply as the transcoder printed, and a 400 with the
reason for any body ``PredictRequest``'s JSON form does not allow."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from google.api import httpbody_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core import InferenceCore, Prediction
from server.errors import InvalidInput
from server.features import Columns, columns_from_inputs, columns_from_instances, columns_of
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.model import ModelHandle
from server.predict_codec import plain_response
from server.predict_json import JsonReply, parse_predict_body, plain_json, predict_json


def _body(data: object) -> bytes:
    return json.dumps(data).encode()


def test_rows_version_and_id_are_read() -> None:
    rows = [{"a": "x", "b": 1}, {"a": "y", "b": 2.5}]
    body = parse_predict_body("m", _body({"instances": rows, "version": "3", "id": "p-1"}))
    assert (body.rows, body.version, body.id) == (rows, "3", "p-1")
    columns = parse_predict_body("m", _body({"inputs": {"a": ["x", "y"], "b": [1, 2]}})).rows
    assert isinstance(columns, Columns) and len(columns) == 2
    assert dict(columns.values) == {"a": ["x", "y"], "b": [1, 2]}


@pytest.mark.parametrize(
    "data", [b"", b"  \n", b"{}", b'{"version": null, "id": null, "instances": null}']
)
def test_empty_fields_take_their_defaults(data: bytes) -> None:
    body = parse_predict_body("m", data)
    assert (body.rows, body.version, body.id) == ([], "", "")


def test_the_path_s_name_may_be_repeated_in_the_body() -> None:
    assert parse_predict_body("m", _body({"name": "m", "instances": []})).rows == []


@pytest.mark.parametrize(
    ("data", "fragment", "reason"),
    [
        (b'{"instances": [{', "not valid JSON", "decode"),
        (b"\x1f\x8b\x08\x00", "not valid JSON", "decode"),
        (b"[1, 2]", "must be a JSON object, got a list", "request"),
        (b'"rows"', "must be a JSON object, got a string", "request"),
        (b'{"instance": []}', 'unknown field "instance" in pronto.v1.Predict', "unknown_field"),
        (b'{"instances": 5}', "instances must be a list, got a number", "request"),
        (b'{"instances": [{"a": 1}, 7]}', "instance 1 must be an object, got a number", "request"),
        (b'{"inputs": [1]}', "inputs must be an object, got a list", "request"),
        (b'{"inputs": {"a": 1}}', "feature 'a' must be a list", "value_type"),
        (b'{"instances": [{}], "inputs": {"a": [1]}}', "either instances or inputs", "request"),
        (b'{"version": 2}', "version must be a string, got a number", "request"),
        (b'{"id": true}', "id must be a string, got a boolean", "request"),
        (b'{"name": "other"}', 'name "other" in the body differs from "m"', "request"),
    ],
    ids=["truncated", "gzip", "list", "string", "unknown", "instances-number", "row-number",
         "inputs-list", "column-scalar", "both", "version-number", "id-bool", "other-name"],
)  # fmt: skip
def test_bad_bodies_are_invalid_input_with_the_reason(
    data: bytes, fragment: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_predict_body("m", data)
    assert fragment in caught.value.message
    assert caught.value.reason == reason


def _feeds(handle: ModelHandle, rows: Any) -> dict[str, np.ndarray]:
    if isinstance(rows, Columns):
        return columns_from_inputs(handle.features, rows, handle.packed_features)
    return columns_from_instances(handle.features, rows, handle.packed_features)


def _transcoded(handle: ModelHandle, data: bytes) -> dict[str, np.ndarray]:
    """What the gateway's transcoder made of the same body: a PredictRequest."""
    request = json_format.Parse(data, ppb.PredictRequest())
    rows: Any = request.instances
    if request.HasField("inputs"):
        rows = columns_of(request.inputs)
    return _feeds(handle, rows)


def _value(handle: ModelHandle, name: str) -> st.SearchStrategy[Any]:
    spec = next(f for f in handle.features if f.name == name)
    if spec.kind == "categorical":
        # a category may come as a number: 7 and 7.0 both mean "7"
        return st.one_of(st.sampled_from(spec.categories or ["x"]), st.integers(0, 99))
    return st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False, width=32))


@st.composite
def bodies(draw: st.DrawFn, handle: ModelHandle) -> bytes:
    names = [f.name for f in handle.features]
    rows = [{n: draw(_value(handle, n)) for n in names} for _ in range(draw(st.integers(1, 20)))]
    if draw(st.booleans()):
        return _body({"inputs": {n: [r[n] for r in rows] for n in names}})
    return _body({"instances": rows})


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_parsed_bodies_feed_the_model_as_the_transcoded_ones(
    flights_handle: ModelHandle, data: st.DataObject
) -> None:
    body = data.draw(bodies(flights_handle))
    ours = _feeds(flights_handle, parse_predict_body("flights", body).rows)
    theirs = _transcoded(flights_handle, body)
    assert ours.keys() == theirs.keys()
    for name, arr in theirs.items():
        assert ours[name].dtype == arr.dtype and ours[name].shape == arr.shape, name
        np.testing.assert_array_equal(ours[name], arr, err_msg=name)


TEXT = st.text(max_size=12)
PROBABILITY = st.floats(0.0, 1.0, width=64)


@st.composite
def predictions(draw: st.DrawFn) -> Prediction:
    classes = draw(st.lists(TEXT, min_size=1, max_size=4, unique=True))
    rows = draw(st.integers(0, 30))
    labels = draw(st.lists(st.one_of(st.sampled_from(classes), TEXT), min_size=rows, max_size=rows))
    values = draw(st.lists(PROBABILITY, min_size=rows * len(classes), max_size=rows * len(classes)))
    proba = np.array(values, dtype=np.float64).reshape(rows, len(classes))
    return Prediction(draw(TEXT), draw(TEXT), labels, classes, proba, draw(TEXT))


@settings(max_examples=300, deadline=None)
@given(predictions())
def test_reply_is_the_json_the_transcoder_printed(result: Prediction) -> None:
    printed = json_format.MessageToDict(
        plain_response(result),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    assert json.loads(predict_json(result)) == printed
    assert json.loads(plain_json(result)) == printed


def test_reply_serialises_as_an_http_body(
    flights_core: InferenceCore, flights_handle: ModelHandle
) -> None:
    rows = [{f.name: (f.categories or ["x"])[0] if f.kind == "categorical" else 1.5
             for f in flights_handle.features}] * 3  # fmt: skip
    result = asyncio.run(flights_core.predict("flights", "", rows, "p-7"))
    reply = JsonReply(result)
    assert (reply.model_name, reply.model_version) == ("flights", result.model_version)
    body = httpbody_pb2.HttpBody.FromString(JsonReply.serialize(reply))
    assert body.content_type == "application/json"
    decoded = json.loads(body.data)
    assert decoded["id"] == "p-7" and decoded["model_name"] == "flights"
    assert [p["label"] for p in decoded["predictions"]] == result.labels
