"""Property-based tests of the request-decoding core, on the trained flight-delay model.

``tests/server/test_core.py`` checks round trips and that arbitrary requests fail only with
domain errors. These add exact acceptance rules (a shape or raw buffer is accepted iff it
is consistent), mutations of real wire bytes, and the named-feature path fed arbitrary
JSON, which must agree between the REST (dict) and gRPC (Struct) forms.
"""

from __future__ import annotations

import asyncio
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core import InferenceCore
from server.errors import InvalidInput, ProntoError
from server.features import columns_from_instances
from server.generated.inference import grpc_service_pb2 as pb
from server.oip_codec import decode_infer_request
from server.repository import Registry
from tests.reliability.corpus import good_infer, good_predict
from tests.support import load_models

LIMIT = 1 << 20
FIXTURES = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def core(repository: Path) -> InferenceCore:
    handles = load_models(repository)
    assert handles
    registry = Registry()
    registry.replace(handles)
    c = InferenceCore(registry)
    c.ready = True
    return c


def _one_tensor(shape: list[int], values: list[float]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype="FP32", shape=shape)
    t.contents.fp32_contents.extend(values)
    return req


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 2**62), min_size=0, max_size=4), st.integers(0, 12))
def test_shape_is_accepted_iff_consistent(dims: list[int], count: int) -> None:
    values = [1.0] * count
    product = math.prod(dims) if dims else 0
    consistent = bool(dims) and min(dims) >= 0 and 0 < dims[0] <= LIMIT and product == count
    # numpy refuses even an empty array whose other sides span more than 2^63 bytes
    consistent = consistent and math.prod(d for d in dims if d) * 4 < 2**63
    try:
        decoded = decode_infer_request(_one_tensor(dims, values), LIMIT, LIMIT)
    except InvalidInput:
        assert not consistent
        return
    assert consistent
    assert decoded.inputs[0].data.shape == tuple(dims)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 8))
def test_raw_fp32_is_accepted_iff_length_fits_and_finite(raw: bytes, rows: int) -> None:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="FP32", shape=[rows, 2])
    req.raw_input_contents.append(raw)
    fits = len(raw) == rows * 2 * 4
    finite = fits and all(math.isfinite(v) for (v,) in struct.iter_unpack("<f", raw))
    try:
        decoded = decode_infer_request(req, LIMIT, LIMIT)
    except InvalidInput:
        assert not (fits and finite)
        return
    assert fits and finite
    np.testing.assert_array_equal(decoded.inputs[0].data.tobytes(), raw)


_WIRE = good_infer().SerializeToString()


@st.composite
def _mutated_wire(draw: Any) -> bytes:
    data = bytearray(_WIRE)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=FIXTURES)
@given(_mutated_wire())
def test_mutated_wire_bytes_give_a_status_never_a_crash(core: InferenceCore, wire: bytes) -> None:
    try:
        request = pb.ModelInferRequest.FromString(wire)
    except DecodeError:
        return  # the server answers INVALID_ARGUMENT before decoding (corpus: *-protobuf)
    try:
        response = asyncio.run(core.infer(decode_infer_request(request, LIMIT, LIMIT)))
    except ProntoError:
        return
    assert response.outputs, "a request that passes validation gets outputs"


_FEATURES = list(good_predict().instances[0].keys())
_SCALARS = st.none() | st.booleans() | st.floats() | st.integers(-(2**53), 2**53)
_SCALARS = _SCALARS | st.text(max_size=6)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _instance(draw: Any) -> dict[str, Any]:
    """A real row with some features replaced, dropped, or joined by unknown ones."""
    row = json_format.MessageToDict(good_predict().instances[0])
    for name in draw(st.lists(st.sampled_from(_FEATURES), max_size=3, unique=True)):
        if draw(st.booleans()):
            row[name] = draw(_JSON)
        else:
            row.pop(name)
    for extra in draw(st.lists(st.text(min_size=1, max_size=5), max_size=2)):
        row[extra] = 1
    return row


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES)
@given(st.lists(_instance(), min_size=1, max_size=4))
def test_arbitrary_instances_predict_or_invalid(
    core: InferenceCore, instances: list[dict[str, Any]]
) -> None:
    try:
        prediction = asyncio.run(core.predict("flight-delay", "", instances))
    except InvalidInput:
        return
    proba = prediction.probabilities
    assert proba.shape == (len(instances), len(prediction.classes))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(prediction.labels) <= set(prediction.classes)


def _outcome(features: Any, instances: list[Any]) -> Any:
    try:
        columns = columns_from_instances(features, instances)
    except InvalidInput as exc:
        return ("invalid", exc.reason)
    return {k: v.tolist() for k, v in columns.items()}


_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=2)
    | st.dictionaries(st.text(max_size=4), inner, min_size=1, max_size=2),
    max_leaves=4,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES)
@given(st.dictionaries(st.sampled_from(_FEATURES), _VALUES, max_size=3))
def test_rest_and_grpc_forms_of_an_instance_agree(
    core: InferenceCore, changes: dict[str, Any]
) -> None:
    row = json_format.MessageToDict(good_predict().instances[0]) | changes
    as_struct = struct_pb2.Struct()
    as_struct.update(row)
    # JSON has one number type: the REST gateway delivers every number as a double
    as_json = json_format.MessageToDict(as_struct)
    features = core.model("flight-delay").features
    assert _outcome(features, [as_json]) == _outcome(features, [as_struct])


@pytest.mark.parametrize("value", [[], [1.0], {"0": None}], ids=["empty-list", "list", "object"])
def test_container_for_a_numeric_feature_is_invalid(core: InferenceCore, value: Any) -> None:
    row = struct_pb2.Struct()
    row.update(json_format.MessageToDict(good_predict().instances[0]) | {"high_season": value})
    with pytest.raises(InvalidInput):
        asyncio.run(core.predict("flight-delay", "", [row]))
