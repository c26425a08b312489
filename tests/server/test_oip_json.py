"""REST infer bodies read by the worker: the protocol's REST form (``data``, and Triton's
binary tensor data extension) decodes to exactly what the same tensors give over gRPC,
the proto3 JSON form to exactly what the transcoder made of it, and anything either form
does not allow is a 400 with the reason."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core import InferenceCore, InferRequest, InferResponse, Tensor
from server.datatypes import DATATYPES, encode_bytes_raw
from server.errors import InvalidInput
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.metrics import RequestRecorder
from server.oip_codec import decode_infer_request, encode_infer_response
from server.oip_json import (
    InferBody,
    InferReply,
    _quick_message,
    metadata_json,
    parse_infer_body,
)
from server.servicers import InferenceServicer, MetadataReplies, PredictionServicer
from tests.server.oip_requests import infer_request, rows

LIMIT = 1 << 22
WORDS = ["", "Sky Airline", "Ñuñoa", "日本語", "a\x00b"]


def _parse(body: object, header: str | None = None, data: bytes | None = None) -> InferBody:
    raw = data if data is not None else json.dumps(body).encode()
    return parse_infer_body("m", "", raw, header, LIMIT, 1 << 16)


def _rest(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """The REST form of :func:`infer_request`'s tensors."""
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(values), 1],
                "datatype": "BYTES" if isinstance(values[0], str) else "FP32",
                "data": values,
            }
            for name, values in columns.items()
        ]
    }


def _same(ours: InferRequest, theirs: InferRequest) -> None:
    assert [t.name for t in ours.inputs] == [t.name for t in theirs.inputs]
    for a, b in zip(ours.inputs, theirs.inputs, strict=True):
        assert a.datatype is b.datatype, a.name
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
        np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)


def test_the_rest_form_decodes_as_the_grpc_request() -> None:
    columns = rows(5)
    body = _parse(_rest(columns))
    assert body.rest_form and body.binary_outputs == frozenset()
    _same(body.request, decode_infer_request(infer_request(columns), LIMIT, 1 << 16))


def _values(dt: str) -> st.SearchStrategy[Any]:
    if dt == "BYTES":
        return st.one_of(st.sampled_from(WORDS), st.text(max_size=8))
    if dt == "BOOL":
        return st.booleans()
    if dt.startswith("FP"):
        width = {"FP16": 16, "FP32": 32, "FP64": 64}[dt]
        return st.floats(-1e4, 1e4, allow_nan=False, width=width)  # type: ignore[arg-type]
    info = np.iinfo(DATATYPES[dt].dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, tuple[int, int], list[Any]]:
    dt = draw(st.sampled_from(sorted(DATATYPES)))
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 3)))
    values = draw(st.lists(_values(dt), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
    return dt, shape, values


def _raw(dt: str, values: list[Any]) -> bytes:
    datatype = DATATYPES[dt]
    if not datatype.itemsize:
        return encode_bytes_raw(np.array(values, dtype=object))
    return np.array(values, dtype=datatype.dtype).tobytes()


@settings(max_examples=200, deadline=None)
@given(tensor=tensors(), nested=st.booleans())
def test_data_and_binary_data_decode_as_raw_contents(
    tensor: tuple[str, tuple[int, int], list[Any]], nested: bool
) -> None:
    """Every datatype: flat or nested ``data``, and binary tensor data, give exactly what
    the same values in ``raw_input_contents`` give over gRPC."""
    dt, shape, values = tensor
    grpc = pb.ModelInferRequest(model_name="m")
    grpc.inputs.add(name="x", datatype=dt, shape=shape)
    grpc.raw_input_contents.append(_raw(dt, values))
    expected = decode_infer_request(grpc, LIMIT, 1 << 16)
    data: list[Any] = values
    if nested:
        data = [values[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])]
    typed = _parse({"inputs": [{"name": "x", "shape": list(shape), "datatype": dt, "data": data}]})
    _same(typed.request, expected)
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": list(shape), "datatype": dt,
                     "parameters": {"binary_data_size": len(grpc.raw_input_contents[0])}}]}
    ).encode()  # fmt: skip
    binary = _parse(None, str(len(header)), header + grpc.raw_input_contents[0])
    _same(binary.request, expected)


def test_binary_inputs_take_their_bytes_in_order_and_mix_with_data() -> None:
    columns = rows(3)
    inputs: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for name, values in columns.items():
        if name == "DIA":  # one input stays in JSON
            inputs.append({"name": name, "shape": [3, 1], "datatype": "FP32", "data": values})
            continue
        dt = "BYTES" if isinstance(values[0], str) else "FP32"
        buffers.append(_raw(dt, values))
        inputs.append(
            {"name": name, "shape": [3, 1], "datatype": dt,
             "parameters": {"binary_data_size": len(buffers[-1])}}
        )  # fmt: skip
    header = json.dumps({"inputs": inputs, "id": "r-1"}).encode()
    body = _parse(None, str(len(header)), header + b"".join(buffers))
    assert body.request.id == "r-1"
    _same(body.request, decode_infer_request(infer_request(columns), LIMIT, 1 << 16))


def test_requested_outputs_and_binary_ones_are_read() -> None:
    body = _rest(rows(1))
    body["outputs"] = [
        {"name": "label"},
        {"name": "probabilities", "parameters": {"binary_data": True}},
    ]
    parsed = _parse(body)
    assert parsed.request.outputs == ["label", "probabilities"]
    assert parsed.binary_outputs == frozenset({"probabilities"})
    body["parameters"] = {"binary_data_output": True}
    assert _parse(body).binary_outputs is None


def _bad(**edit: Any) -> dict[str, Any]:
    body = _rest(rows(2))
    first = body["inputs"][0]
    for key, value in edit.items():
        if key.startswith("input_"):
            first[key[6:]] = value
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "fragment", "reason"),
    [
        (b'{"inputs": [{', "not valid JSON", "decode"),
        (b"[1]", "must be an object, got a list", "request"),
        (_bad(tensors=[]), 'unknown field "tensors" in the inference request', "unknown_field"),
        (_bad(input_dtype="x"), 'unknown field "dtype" in input 0', "unknown_field"),
        (_bad(outputs=[{"name": "label", "shape": [1]}]), 'unknown field "shape" in output 0',
         "unknown_field"),
        (_bad(inputs={"a": 1}), "inputs must be a list, got an object", "request"),
        ({}, "request has no inputs", "missing_input"),
        (_bad(id=7), "id must be a string, got a number", "request"),
        (_bad(input_datatype="FP99"), "unknown datatype 'FP99'", "datatype"),
        (_bad(input_shape=[2, "1"]), "shape must be a list of integers", "shape"),
        (_bad(input_shape=[3, 1]), "has 2 values, shape [3, 1] needs 3", "shape_mismatch"),
        (_bad(input_shape=[-1, 1]), "negative dimension", "shape"),
        (_bad(input_shape=[2**40, 2**20]), "is too large", "shape"),
        (_bad(input_data=[1, "N"]), "BYTES: its data must be strings, got a number", "datatype"),
        (_bad(input_datatype="FP32", input_data=["x", "y"]),
         "FP32: its data must be numbers, got a string", "datatype"),
        (_bad(input_datatype="FP32", input_data=[1.0, True]),
         "FP32: its data must be numbers, got a boolean", "datatype"),
        (_bad(input_datatype="INT32", input_data=[1, 2.5]),
         "INT32: its data must be integers, got a number", "datatype"),
        (_bad(input_datatype="BOOL", input_data=[1, 0]),
         "BOOL: its data must be booleans, got a number", "datatype"),
        (_bad(input_datatype="INT8", input_data=[1, 300]), "out of range for INT8", "range"),
        (_bad(input_datatype="UINT8", input_data=[1, -1]), "out of range for UINT8", "range"),
        (_bad(input_datatype="FP32", input_data=[1.0, 1e300]), "out of range for FP32", "range"),
        (_bad(input_data=[["N"], "I"]), "nests lists and values alike", "shape"),
        (_bad(input_data=[[["N"]], [["I"]]]), "must be strings, got a list", "datatype"),
        (_bad(input_data=json.loads("[" * 900 + "]" * 900)), "has 1 values", "shape_mismatch"),
        (_bad(input_data="N"), "data must be a list, got a string", "request"),
        (_bad(input_data=None, input_parameters=None), "has no data", "missing_input"),
        (_bad(input_parameters={"binary_data_size": 4}), "both data and binary_data_size",
         "raw_size"),
        (_bad(input_parameters={"p": [1]}), 'parameter "p" of input \'OPERA\' must be a boolean',
         "request"),
        (_bad(parameters={"binary_data_output": "yes"}),
         'parameter "binary_data_output" of the request must be a boolean, got a string',
         "request"),
    ],
    ids=["truncated", "list", "unknown-top", "unknown-input", "unknown-output", "inputs-object",
         "no-inputs", "id-number", "datatype", "shape-string", "count", "negative", "huge",
         "bytes-number", "fp32-string", "fp32-bool", "int-float", "bool-number", "int8-range",
         "uint8-negative", "fp32-overflow", "ragged", "deeper-than-shape", "900-levels",
         "data-string", "no-data", "data-and-binary",
         "parameter-list", "binary-flag-string"],
)  # fmt: skip
def test_bad_rest_bodies_are_invalid_input_with_the_reason(
    body: object, fragment: str, reason: str
) -> None:
    if isinstance(body, dict) and body.get("inputs") and isinstance(body["inputs"], list):
        body["inputs"][0] = {k: v for k, v in body["inputs"][0].items() if v is not None}
    with pytest.raises(InvalidInput) as caught:
        _parse(None, data=body) if isinstance(body, bytes) else _parse(body)
    assert fragment in caught.value.message
    assert caught.value.reason == reason


def _binary_body(sizes: list[int], tail: bytes) -> tuple[bytes, str]:
    inputs = [
        {"name": f"x{i}", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": n}}
        for i, n in enumerate(sizes)
    ]
    header = json.dumps({"inputs": inputs}).encode()
    return header + tail, str(len(header))


@pytest.mark.parametrize(
    ("sizes", "tail", "header", "fragment"),
    [
        ([4, 4], b"\0" * 4, None, "runs past the binary data (0 bytes left)"),
        ([4], b"\0" * 6, None, "holds 6 bytes, the inputs' binary_data_size add up to 4"),
        ([3], b"\0" * 3, None, "raw contents hold 3 bytes"),
        ([4], b"\0" * 4, "12x", "Inference-Header-Content-Length must be a length"),
        ([4], b"\0" * 4, "999999", "Inference-Header-Content-Length must be a length"),
        ([4], b"\0" * 4, "1²", "Inference-Header-Content-Length must be a length"),
        ([-1], b"", None, "binary_data_size -1 runs past"),
    ],
    ids=["past-the-end", "left-over", "short-for-shape", "header-not-a-number", "header-too-long",
         "header-not-ascii",
         "negative-size"],
)  # fmt: skip
def test_bad_binary_data_is_invalid_input(
    sizes: list[int], tail: bytes, header: str | None, fragment: str
) -> None:
    data, length = _binary_body(sizes, tail)
    with pytest.raises(InvalidInput) as caught:
        _parse(None, header or length, data)
    assert fragment in caught.value.message


def test_binary_data_without_the_header_is_refused() -> None:
    data, _ = _binary_body([4], b"\0" * 4)
    with pytest.raises(InvalidInput) as caught:
        _parse(None, None, data)
    assert caught.value.reason == "decode"  # the JSON is followed by bytes that are not JSON


def test_binary_data_follows_only_the_rest_form() -> None:
    header = json.dumps({"raw_input_contents": ["AAAAAA=="], "inputs": [{"name": "x"}]}).encode()
    with pytest.raises(InvalidInput) as caught:
        _parse(None, str(len(header)), header + b"\0" * 4)
    assert 'unknown field "raw_input_contents"' in caught.value.message


def _proto3(request: pb.ModelInferRequest) -> dict[str, Any]:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw_input_contents"])
def test_the_proto3_form_decodes_as_the_transcoder_made_it(raw: bool) -> None:
    request = infer_request(rows(4), raw=raw, model="m", version="")
    request.id = "p-9"
    body = _parse(_proto3(request))
    assert not body.rest_form
    expected = decode_infer_request(request, LIMIT, 1 << 16)
    _same(body.request, expected)
    assert (body.request.id, body.request.raw_output) == ("p-9", raw)


@pytest.mark.parametrize(
    ("body", "fragment", "reason"),
    [
        ({"inputs": [{"name": "a", "contents": {"fp32_contents": [1]}, "dtype": 1}]},
         'has no field named "dtype"', "unknown_field"),
        ({"inputs": [], "parameters": {"p": {"bool_param": True, "typo": 1}}},
         '"typo"', "unknown_field"),
        ({"raw_input_contents": ["@@@"], "inputs": [{"name": "a"}]}, "not valid base64",
         "request"),
        ({"inputs": [{"name": "a", "contents": {"bytesContents": ["QQ==", "Q@=="]}}]},
         "not valid base64", "request"),
        ({"model_name": "other", "inputs": [{"name": "a", "contents": {}}]},
         'model_name "other" in the body differs from "m" in the path', "request"),
    ],
    ids=["unknown-nested", "unknown-in-map", "raw-not-base64", "bytes-not-base64", "other-model"],
)  # fmt: skip
def test_bad_proto3_bodies_are_invalid_input(body: object, fragment: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _parse(body)
    assert fragment in caught.value.message
    assert caught.value.reason == reason


def test_the_path_s_version_and_name_win() -> None:
    request = infer_request(rows(1), model="m")
    body = parse_infer_body("m", "3", json.dumps(_proto3(request)).encode(), None, LIMIT, 64)
    assert (body.request.model_name, body.request.model_version) == ("m", "3")
    body = parse_infer_body("m", "3", json.dumps(_rest(rows(1))).encode(), None, LIMIT, 64)
    assert (body.request.model_name, body.request.model_version) == ("m", "3")


def _response(raw: bool = False) -> InferResponse:
    labels = np.array(["late", "on time"], dtype=object).reshape(2, 1)
    proba = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    outputs = [
        Tensor("label", DATATYPES["BYTES"], labels),
        Tensor("probabilities", DATATYPES["FP32"], proba),
    ]
    return InferResponse("m", "2", "p-1", outputs, raw)


def test_the_rest_reply_carries_data() -> None:
    reply = InferReply(_parse(_rest(rows(2))), _response())
    assert (reply.content_type, reply.header_length) == ("application/json", None)
    assert json.loads(reply.data) == {
        "model_name": "m",
        "model_version": "2",
        "id": "p-1",
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [2, 1], "data": ["late", "on time"]},
            {"name": "probabilities", "datatype": "FP32", "shape": [2, 2],
             "data": [0.25, 0.75, 0.5, 0.5]},
        ],
    }  # fmt: skip


@pytest.mark.parametrize("everything", [False, True])
def test_binary_outputs_follow_the_json(everything: bool) -> None:
    body = _rest(rows(2))
    if everything:
        body["parameters"] = {"binary_data_output": True}
    else:
        body["outputs"] = [
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ]
    response = _response()
    reply = InferReply(_parse(body), response)
    assert reply.content_type == "application/octet-stream"
    assert reply.header_length is not None
    head = json.loads(reply.data[: reply.header_length])
    tail = reply.data[reply.header_length :]
    outputs = {o["name"]: o for o in head["outputs"]}
    proba = response.outputs[1].data.tobytes()
    assert outputs["probabilities"]["parameters"] == {"binary_data_size": len(proba)}
    assert "data" not in outputs["probabilities"]
    if everything:
        labels = b"".join(struct.pack("<I", len(w)) + w for w in (b"late", b"on time"))
        assert outputs["label"]["parameters"] == {"binary_data_size": len(labels)}
        assert tail == labels + proba
    else:
        assert outputs["label"]["data"] == ["late", "on time"]
        assert tail == proba


@pytest.mark.parametrize("raw", [False, True])
def test_the_proto3_reply_is_what_the_transcoder_printed(raw: bool) -> None:
    request = infer_request(rows(2), raw=raw, model="m")
    response = _response(raw)
    reply = InferReply(_parse(_proto3(request)), response)
    assert reply.content_type == "application/json" and reply.header_length is None
    printed = json_format.MessageToDict(
        encode_infer_response(response),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    assert json.loads(reply.data) == printed


def test_the_reply_serialises_as_an_http_body() -> None:
    from google.api import httpbody_pb2

    reply = InferReply(_parse(_rest(rows(1))), _response())
    parsed = httpbody_pb2.HttpBody.FromString(InferReply.serialize(reply))
    assert (parsed.content_type, parsed.data) == ("application/json", reply.data)


# The proto3 form's quick paths against protobuf's own JSON parser and printer.

_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.one_of(
        st.integers(-(10**6), 10**6), st.floats(-(2.0**100), 2.0**100, width=32)
    ),
    "fp64_contents": st.floats(allow_nan=False, allow_infinity=False),
    "bytes_contents": st.binary(max_size=12),
}


def _camel(name: str, camel: bool) -> str:
    if not camel:
        return name
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@st.composite
def proto3_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies in the common shape: numbers as numbers, standard base64, either spelling."""
    camel = draw(st.booleans())
    inputs = []
    for i in range(draw(st.integers(0, 3))):
        inp: dict[str, Any] = {
            "name": f"x{i}",
            "datatype": draw(st.sampled_from(sorted(DATATYPES))),
        }
        inp["shape"] = draw(st.lists(st.integers(0, 5), max_size=3))
        if draw(st.booleans()):
            fields = draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), max_size=2, unique=True))
            contents = {}
            for name in fields:
                values = draw(st.lists(_FIELD_VALUES[name], max_size=6))
                if name == "bytes_contents":
                    values = [base64.b64encode(v).decode() for v in values]
                contents[_camel(name, camel)] = values
            inp["contents"] = contents
        inputs.append(inp)
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        body["outputs"] = [{"name": n} for n in draw(st.lists(st.sampled_from("abc"), max_size=2))]
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=5))
    if draw(st.booleans()):
        body[_camel("model_name", camel)] = "m"
    if draw(st.booleans()):
        raw = draw(st.lists(st.binary(max_size=9), max_size=3))
        body[_camel("raw_input_contents", camel)] = [base64.b64encode(r).decode() for r in raw]
    return body


@settings(max_examples=300, deadline=None)
@given(body=proto3_bodies())
def test_the_quick_proto3_parser_builds_the_plain_parser_s_message(body: dict[str, Any]) -> None:
    expected = json_format.ParseDict(body, pb.ModelInferRequest())
    assert _quick_message(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"name": "a", "contents": {"int64_contents": ["5"]}}]},  # 64-bit as string
        {"inputs": [{"name": "a", "contents": {"fp32_contents": ["NaN", 1]}}]},
        {"inputs": [{"name": "a", "contents": {"int_contents": [True]}}]},
        {"inputs": [{"name": "a", "contents": {"bytes_contents": ["QQ"]}}]},  # unpadded
        {"inputs": [{"name": "a", "contents": {"bytes_contents": ["-_8="]}}]},  # URL alphabet
        {"inputs": [{"name": None, "shape": ["2"]}]},
        {"inputs": [{"name": "a", "parameters": {"p": {"bool_param": True}}}]},
        {"inputs": [], "model_name": "m", "modelName": "m"},
    ],
    ids=["int64-string", "nan-string", "bool-in-int", "unpadded", "url-alphabet",
         "null-and-string-shape", "parameters", "both-spellings"],
)  # fmt: skip
def test_other_proto3_bodies_take_the_plain_parser(body: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, AttributeError)):
        _quick_message(body)
    try:
        expected: InferBody | str = InferBody(
            decode_infer_request(json_format.ParseDict(body, pb.ModelInferRequest()), LIMIT, 64),
            rest_form=False,
        )
    except (json_format.ParseError, InvalidInput) as exc:
        expected = type(exc).__name__
    try:
        got: InferBody | str = _parse(body)
    except InvalidInput as exc:
        got = (
            "ParseError" if "not an inference.ModelInferRequest" in exc.message else "InvalidInput"
        )
    if isinstance(expected, str):
        assert got == expected
    else:
        assert isinstance(got, InferBody)
        _same(got.request, expected.request)


def _array(dt: str, draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    values = draw(st.lists(_values(dt), min_size=count, max_size=count))
    datatype = DATATYPES[dt]
    return np.array(values, dtype=datatype.dtype).reshape(shape)


@st.composite
def responses(draw: st.DrawFn) -> InferResponse:
    outputs = []
    for i in range(draw(st.integers(1, 3))):
        dt = draw(st.sampled_from(sorted(DATATYPES)))
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 2)))
        outputs.append(Tensor(f"y{i}", DATATYPES[dt], _array(dt, draw, shape)))
    return InferResponse("m", "3", draw(st.text(max_size=4)), outputs, draw(st.booleans()))


def _float32_lists(value: Any) -> Any:
    """``value`` with every fp32_contents list as float32: the printers may write another
    decimal for the same float32 (protobuf from 6 digits up, orjson the shortest)."""
    if isinstance(value, dict):
        return {
            k: np.array(v, dtype=np.float32).tolist() if k == "fp32_contents" else _float32_lists(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_float32_lists(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(response=responses())
def test_the_quick_proto3_reply_is_what_protobuf_prints(response: InferResponse) -> None:
    printed = json_format.MessageToDict(
        encode_infer_response(response),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    ours = json.loads(InferReply(InferBody(InferRequest("m", "", []), False), response).data)
    assert _float32_lists(ours) == _float32_lists(printed)


class _Context:
    """What ``ModelInferJson`` reads of a grpc.aio servicer context."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.metadata = metadata
        self.sent: tuple[tuple[str, str], ...] | None = None
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.sent = metadata

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise grpc.aio.AbortError()


def test_rest_infer_is_served_and_counted_as_model_infer(flights_core: InferenceCore) -> None:
    """Through the servicer: the reply, the header length of a binary reply, and the
    request metrics under ``ModelInfer`` with the model's labels and the refusal's reason."""
    recorder = RequestRecorder(None, flights_core.registry)
    servicer = PredictionServicer(flights_core, recorder, LIMIT)
    version = flights_core.registry.versions("flights")[0]

    def call(body: dict[str, Any], context: _Context) -> Any:
        request = ppb.ModelInferJsonRequest(model_name="flights")
        request.body.data = json.dumps(body).encode()

        async def served() -> Any:
            return await servicer.ModelInferJson(request, context)

        return asyncio.run(served())

    reply = call(_rest(rows(2)), _Context())
    assert json.loads(reply.data)["model_name"] == "flights" and reply.header_length is None
    binary = call(
        {**_rest(rows(2)), "parameters": {"binary_data_output": True}}, context := _Context()
    )
    assert context.sent == (("inference-header-content-length", str(binary.header_length)),)
    bad = _rest(rows(2))
    bad["inputs"][0]["data"] = [1, 2]
    with pytest.raises(grpc.aio.AbortError):
        call(bad, context := _Context())
    assert context.aborted is not None and context.aborted[0] is grpc.StatusCode.INVALID_ARGUMENT
    counts = recorder._counts
    assert counts[("flights", version, "ModelInfer", "OK")] == 2
    assert counts[("flights", "", "ModelInfer", "INVALID_ARGUMENT")] == 1
    assert recorder._reasons["datatype"] == 1


def test_rest_metadata_is_the_proto3_json_with_shapes_as_numbers() -> None:
    reply = pb.ModelMetadataResponse(name="m", versions=["2", "1"], platform="onnxruntime_onnx")
    reply.inputs.add(name="x", datatype="FP32", shape=[-1, 3]).parameters[
        "columns"
    ].string_param = '["a", "b", "c"]'
    reply.outputs.add(name="label", datatype="INT64", shape=[-1])
    printed = json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    ours = json.loads(metadata_json(reply))
    assert ours["inputs"][0]["shape"] == [-1, 3] and ours["outputs"][0]["shape"] == [-1]
    for key in ("inputs", "outputs"):
        for tensor in printed[key]:
            tensor["shape"] = [int(d) for d in tensor["shape"]]
    assert ours == printed
    # a proto3 JSON parser reads it back as the same message (numbers where int64 goes)
    assert json_format.Parse(metadata_json(reply), pb.ModelMetadataResponse()) == reply


def test_rest_metadata_is_served_from_the_grpc_reply_and_counted_as_model_metadata(
    flights_core: InferenceCore,
) -> None:
    recorder = RequestRecorder(None, flights_core.registry)
    metadata = MetadataReplies(flights_core)
    rest = PredictionServicer(flights_core, recorder, LIMIT, metadata)
    grpc_side = InferenceServicer(flights_core, recorder, LIMIT, metadata)

    async def both() -> tuple[Any, Any]:
        body = await rest.ModelMetadataJson(
            ppb.ModelMetadataJsonRequest(name="flights"), _Context()
        )
        reply = await grpc_side.ModelMetadata(pb.ModelMetadataRequest(name="flights"), _Context())
        return body, reply

    body, reply = asyncio.run(both())
    assert json.loads(body.data) == json.loads(metadata_json(reply))
    assert all(type(d) is int for t in json.loads(body.data)["inputs"] for d in t["shape"])
    assert recorder._counts[("flights", "", "ModelMetadata", "OK")] == 2
