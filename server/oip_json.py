"""REST infer of the Open Inference Protocol: the body parsed in the worker, the reply
written by it.

The gateway passes ``POST /v2/models/{name}[/versions/{v}]/infer`` bodies through untouched
(``ModelInferJson`` takes a ``google.api.HttpBody``), so the worker reads both forms a REST
caller may send:

- the protocol's REST form, which KServe's, Triton's and MLServer's REST clients send:
  tensors carry their values in ``data`` (flat, or nested row-major lists), parameters are
  plain JSON values. With Triton's binary tensor data extension an input instead names its
  ``binary_data_size`` and its bytes follow the JSON, whose length the request's
  ``Inference-Header-Content-Length`` header gives; outputs asked for with
  ``binary_data`` (or all of them, with the request parameter ``binary_data_output``) come
  back the same way.
- the proto3 JSON form of ``inference.ModelInferRequest`` (``contents`` per input, or
  ``raw_input_contents`` in base64), which is what Envoy's transcoder accepted when it
  carried this path.

A request is in the proto3 form when it has ``raw_input_contents`` or an input with
``contents``, or has inputs with neither ``data`` nor a ``binary_data_size`` and no binary
part; otherwise it is in the REST form. The reply takes the request's form. Both decode
into the same core request, so shapes, datatypes and values are checked exactly as for gRPC
callers (:mod:`server.oip_codec`).

Neither form goes through protobuf's JSON code on the common path: REST-form values become
arrays with one numpy call per tensor, a proto3 body in the usual shape becomes its message
with one ``extend`` per tensor (anything unusual takes ``json_format.ParseDict``, whose
semantics and errors the proto3 form keeps), and replies are written with orjson.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format

from server.core import InferRequest, InferResponse, Tensor
from server.datatypes import DATATYPES, Datatype, encode_bytes_raw
from server.errors import InvalidInput
from server.features import json_kind
from server.generated.inference import grpc_service_pb2 as pb
from server.oip_codec import (
    decode_infer_request,
    decode_raw,
    tensor_shape,
)
from server.predict_json import JSON_CONTENT_TYPE, HttpBodyReply

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "InferBody",
    "InferReply",
    "metadata_json",
    "parse_infer_body",
]

#: the request header (gRPC metadata key once through Envoy) and reply header of Triton's
#: binary tensor data extension: how many leading bytes of the body are JSON
HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/octet-stream"
_MESSAGE = "the inference request"
_REQUEST_FIELDS = frozenset(("id", "parameters", "inputs", "outputs"))
_INPUT_FIELDS = frozenset(("name", "shape", "datatype", "parameters", "data"))
_OUTPUT_FIELDS = frozenset(("name", "parameters"))
_PROTO3_FIELDS = ("raw_input_contents", "rawInputContents")
_BINARY_SIZE = "binary_data_size"
_BINARY_OUTPUT = "binary_data_output"
_BINARY = "binary_data"


def _json_names(message: Any, *fields: str) -> dict[str, str]:
    """proto3 JSON names (proto and lowerCamel) -> field, for ``fields`` of ``message``
    (all of them when none is named)."""
    return {
        n: f.name
        for f in message.DESCRIPTOR.fields
        if not fields or f.name in fields
        for n in (f.name, f.json_name)
    }


# the fields of a body in the common shape (no parameters)
_P3_REQUEST = _json_names(
    pb.ModelInferRequest, "id", "inputs", "outputs", "model_name", "model_version",
    "raw_input_contents",
)  # fmt: skip
_P3_INPUT = _json_names(
    pb.ModelInferRequest.InferInputTensor, "name", "datatype", "shape", "contents"
)
_P3_OUTPUT = _json_names(pb.ModelInferRequest.InferRequestedOutputTensor, "name")
_P3_CONTENTS = _json_names(pb.InferTensorContents)
# JSON values each repeated field takes as they are (bool is not an int here)
_CONTENT_TYPES: dict[str, set[type]] = {
    "shape": {int},
    "bool_contents": {bool},
    "int_contents": {int},
    "int64_contents": {int},
    "uint_contents": {int},
    "uint64_contents": {int},
    "fp32_contents": {int, float},
    "fp64_contents": {int, float},
}
_STR = {str}
_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64
# InferTensorContents' fields in field-number order, as proto3 JSON prints them
_CONTENT_FIELDS = tuple(f.name for f in pb.InferTensorContents.DESCRIPTOR.fields)
_STRING_FIELDS = frozenset(("int64_contents", "uint64_contents"))  # 64-bit: strings in JSON
_EMPTY: list[Any] = []
# base64 in either alphabet (proto3 JSON accepts both), padded or not
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/_-]{4})*(?:[A-Za-z0-9+/_-]{2,3})?={0,2}")
# the JSON values a tensor's data may hold, by numpy kind of its datatype
_JSON_TYPES: dict[str, set[type]] = {
    "O": {str},
    "b": {bool},
    "i": {int},
    "u": {int},
    "f": {int, float},
}
_JSON_NAMES = {"O": "strings", "b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}


@dataclass(frozen=True, slots=True)
class InferBody:
    """What a REST infer body asks for, and in which form to answer."""

    request: InferRequest
    #: the protocol's REST form (``data``); False for the proto3 JSON form
    rest_form: bool
    #: outputs to send as binary tensor data (REST form); None: every output
    binary_outputs: frozenset[str] | None = frozenset()


def _unknown(body: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    if not body.keys() <= allowed:
        unknown = sorted(body.keys() - allowed)[0]
        raise InvalidInput(f'unknown field "{unknown}" in {where}', "unknown_field")


def _object(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise InvalidInput(f"{what} must be an object, got {json_kind(value)}", "request")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise InvalidInput(f"{what} must be a list, got {json_kind(value)}", "request")
    return value


def _string(value: Any, what: str) -> str:
    if type(value) is not str:
        raise InvalidInput(f"{what} must be a string, got {json_kind(value)}", "request")
    return value


def _parameters(value: Any, what: str) -> dict[str, Any]:
    """A REST-form parameters object: each value a boolean, number or string."""
    if value is None:
        return {}
    params = _object(value, f"{what} parameters")
    for key, item in params.items():
        if type(item) not in (bool, int, float, str):
            raise InvalidInput(
                f'parameter "{key}" of {what} must be a boolean, number or string, '
                f"got {json_kind(item)}",
                "request",
            )
    return params


def _flag(params: dict[str, Any], key: str, what: str) -> bool:
    value = params.get(key, False)
    if type(value) is not bool:
        raise InvalidInput(
            f'parameter "{key}" of {what} must be a boolean, got {json_kind(value)}', "request"
        )
    return value


def _flat(data: list[Any], name: str, rank: int) -> list[Any]:
    """Row-major values of nested lists (the REST form allows both flat and nested), the
    outer list and one level per further dimension at most: lists nested deeper are left
    for the type check."""
    for _ in range(rank - 1):
        if not data or type(data[0]) is not list:
            break
        out: list[Any] = []
        for item in data:
            if type(item) is not list:
                raise InvalidInput(f"input '{name}': data nests lists and values alike", "shape")
            out.extend(item)
        data = out
    return data


def _typed(name: str, dt: Datatype, data: Any, shape: tuple[int, ...], count: int) -> np.ndarray:
    """An input's ``data`` as an array of ``shape``: strings for BYTES, booleans for BOOL,
    integers for the integer types, numbers for the floating-point ones."""
    values = _flat(_list(data, f"input '{name}' data"), name, len(shape))
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}' has {len(values)} values, shape {list(shape)} needs {count}",
            "shape_mismatch",
        )
    allowed = _JSON_TYPES[dt.dtype.kind]
    if not set(map(type, values)) <= allowed:
        bad = next(v for v in values if type(v) not in allowed)
        raise InvalidInput(
            f"input '{name}' is {dt.name}: its data must be {_JSON_NAMES[dt.dtype.kind]}, "
            f"got {json_kind(bad)}",
            "datatype",
        )
    try:
        with np.errstate(over="ignore"):
            parsed = np.array(values, dtype=dt.dtype)
    except OverflowError:
        parsed = None
    # JSON has no NaN or Infinity: a value that is not finite here did not fit the type
    if parsed is None or (dt.is_float and not np.isfinite(parsed).all()):
        raise InvalidInput(f"input '{name}' has values out of range for {dt.name}", "range")
    return parsed.reshape(shape)


def _header_length(value: str | None, size: int) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > size:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be a length within the body's {size} "
            f"bytes, got {value[:32]!r}",
            "request",
        )
    return int(value)


def _loads(data: bytes) -> Any:
    if not data or data.isspace():
        return {}
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", "decode") from None


def _is_proto3(body: dict[str, Any], binary: bool) -> bool:
    """Whether a body is in the proto3 JSON form (see the module's docstring); never when
    binary data follows it (an extension of the REST form)."""
    if binary:
        return False
    if any(key in body for key in _PROTO3_FIELDS):
        return True
    inputs = body.get("inputs")
    if type(inputs) is not list:
        return False  # the REST form's error says what is wrong
    rest = False
    for inp in inputs:
        if type(inp) is not dict:
            return False
        if "contents" in inp:
            return True
        params = inp.get("parameters")
        rest = rest or "data" in inp or (type(params) is dict and _BINARY_SIZE in params)
    return not rest


def _base64(body: dict[str, Any]) -> None:
    """Refuse what is not base64 where the proto3 form has bytes: protobuf's parser drops
    characters outside the alphabet (``"@@@"`` reads as no bytes), the transcoder refused
    them."""
    texts: list[Any] = []
    for key in _PROTO3_FIELDS:
        raw = body.get(key)
        if type(raw) is list:
            texts.extend(raw)
    inputs = body.get("inputs")
    for inp in inputs if type(inputs) is list else ():
        contents = inp.get("contents") if type(inp) is dict else None
        if type(contents) is dict:
            for key in ("bytes_contents", "bytesContents"):
                if type(contents.get(key)) is list:
                    texts.extend(contents[key])
    for text in texts:
        if type(text) is str and not _BASE64.fullmatch(text):
            raise InvalidInput(f"not valid base64 where bytes belong: {text[:32]!r}", "request")


def _texts(values: list[Any]) -> list[bytes]:
    """Standard, padded base64 strings as bytes; raises ``ValueError`` for anything else."""
    if not set(map(type, values)) <= _STR:
        raise ValueError("not strings")
    return [_a2b(v, strict_mode=True) for v in values]


def _numbers(values: list[Any], field_name: str) -> list[Any]:
    """Values the field takes as they are in proto3 JSON; raises ``ValueError`` for the
    rest (64-bit integers as strings, NaN as a string, ...), which the plain parser reads."""
    if not set(map(type, values)) <= _CONTENT_TYPES[field_name]:
        raise ValueError("values the plain parser reads")
    return values


def _fields(body: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``body`` keyed by field name; raises ``ValueError`` for an unknown key, or a field
    given under both its names."""
    fields = {names[key]: value for key, value in body.items()}
    if len(fields) != len(body):
        raise ValueError("a field under both names")
    return fields


def _quick_message(body: dict[str, Any]) -> pb.ModelInferRequest:
    """The ``ModelInferRequest`` of a proto3 JSON body in the common shape (strings where
    the message has strings, numbers in numeric contents, standard base64, no parameters),
    built with one ``extend`` per tensor. ``json_format.ParseDict`` takes Python work per
    value (140 µs for one row of flight-delay, 2.6 ms for 256); this takes a few. Raises
    ``ValueError``, ``TypeError`` or ``KeyError`` for any other body, which
    :func:`_proto3` then hands to ``ParseDict`` for its exact semantics and errors."""
    message = pb.ModelInferRequest()
    for key, value in _fields(body, _P3_REQUEST).items():
        if key == "inputs":
            for item in value:
                inp = _fields(item, _P3_INPUT)
                tensor = message.inputs.add(
                    name=inp.get("name", ""), datatype=inp.get("datatype", "")
                )
                tensor.shape.extend(_numbers(inp.get("shape", []), "shape"))
                contents = inp.get("contents")
                if contents is None:
                    continue
                tensor.contents.SetInParent()
                for field_name, values in _fields(contents, _P3_CONTENTS).items():
                    if type(values) is not list:
                        raise TypeError("contents must be lists")
                    data = (
                        _texts(values)
                        if field_name == "bytes_contents"
                        else _numbers(values, field_name)
                    )
                    getattr(tensor.contents, field_name).extend(data)
        elif key == "outputs":
            for item in value:
                message.outputs.add(name=_fields(item, _P3_OUTPUT)["name"])
        elif key == "raw_input_contents":
            message.raw_input_contents.extend(_texts(value))
        else:
            setattr(message, key, value)
    return message


def _proto3(
    model_name: str, model_version: str, body: dict[str, Any], max_elements: int, max_batch: int
) -> InferBody:
    try:
        message = _quick_message(body)
    except (ValueError, TypeError, KeyError, AttributeError):
        _base64(body)
        message = pb.ModelInferRequest()
        try:
            json_format.ParseDict(body, message)
        except json_format.ParseError as exc:
            text = str(exc).split("\n", 1)[0]
            reason = "unknown_field" if "has no field named" in text else "request"
            message_text = f"request body is not an inference.ModelInferRequest: {text}"
            raise InvalidInput(message_text, reason) from None
    for key, path in (("model_name", model_name), ("model_version", model_version)):
        named = getattr(message, key)
        if named and path and named != path:
            raise InvalidInput(
                f'{key} "{named}" in the body differs from "{path}" in the path', "request"
            )
    message.model_name = model_name
    if model_version:
        message.model_version = model_version
    return InferBody(decode_infer_request(message, max_elements, max_batch), rest_form=False)


def parse_infer_body(
    model_name: str,
    model_version: str,
    data: bytes,
    header_length: str | None,
    max_elements: int,
    max_batch: int,
) -> InferBody:
    """The request a REST infer body carries; raises :class:`InvalidInput` with the reason
    for anything neither form allows. ``header_length`` is the request's
    ``Inference-Header-Content-Length`` header, if it had one."""
    split = _header_length(header_length, len(data))
    body = _object(_loads(data if split is None else data[:split]), "request body")
    binary = memoryview(data)[len(data) if split is None else split :]
    if _is_proto3(body, split is not None):
        return _proto3(model_name, model_version, body, max_elements, max_batch)
    _unknown(body, _REQUEST_FIELDS, _MESSAGE)
    request_id = _string(body.get("id", ""), "id")
    params = _parameters(body.get("parameters"), "the request")
    binary_all = _flag(params, _BINARY_OUTPUT, "the request")
    inputs = _list(body.get("inputs", []), "inputs")
    if not inputs:
        raise InvalidInput("request has no inputs", "missing_input")
    tensors: list[Tensor] = []
    offset = 0
    for i, item in enumerate(inputs):
        inp = _object(item, f"input {i}")
        _unknown(inp, _INPUT_FIELDS, f"input {i}")
        name = _string(inp.get("name"), f"input {i} name")
        dt = DATATYPES.get(_string(inp.get("datatype"), f"input '{name}' datatype"))
        if dt is None:
            raise InvalidInput(
                f"input '{name}' has unknown datatype '{inp['datatype']}'", "datatype"
            )
        dims = _list(inp.get("shape"), f"input '{name}' shape")
        if not all(type(d) is int for d in dims):
            raise InvalidInput(f"input '{name}' shape must be a list of integers", "shape")
        shape, count = tensor_shape(name, dims, max_elements, max_batch)
        size = _parameters(inp.get("parameters"), f"input '{name}'").get(_BINARY_SIZE)
        if size is not None:
            if "data" in inp:
                raise InvalidInput(f"input '{name}' has both data and {_BINARY_SIZE}", "raw_size")
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input '{name}': {_BINARY_SIZE} {size} runs past the binary data "
                    f"({len(binary) - offset} bytes left)",
                    "raw_size",
                )
            raw = bytes(binary[offset : offset + size])
            offset += size
            tensors.append(Tensor(name, dt, decode_raw(name, dt, raw, shape, count)))
        elif "data" in inp:
            tensors.append(Tensor(name, dt, _typed(name, dt, inp["data"], shape, count)))
        else:
            raise InvalidInput(f"input '{name}' has no data", "missing_input")
    if offset != len(binary):
        raise InvalidInput(
            f"the binary data holds {len(binary)} bytes, the inputs' {_BINARY_SIZE} "
            f"add up to {offset}",
            "raw_size",
        )
    outputs: list[str] = []
    binary_outputs: set[str] = set()
    for i, item in enumerate(_list(body.get("outputs", []), "outputs")):
        out = _object(item, f"output {i}")
        _unknown(out, _OUTPUT_FIELDS, f"output {i}")
        name = _string(out.get("name"), f"output {i} name")
        outputs.append(name)
        what = f"output '{name}'"
        if _flag(_parameters(out.get("parameters"), what), _BINARY, what):
            binary_outputs.add(name)
    request = InferRequest(model_name, model_version, tensors, outputs, request_id)
    return InferBody(request, True, None if binary_all else frozenset(binary_outputs))


def _text(item: Any) -> str:
    return item.decode(errors="replace") if isinstance(item, bytes) else str(item)


def _rest_reply(body: InferBody, response: InferResponse) -> tuple[bytes, int | None]:
    """The REST form's reply, and the length of its JSON when binary data follows it."""
    binary = body.binary_outputs
    outputs = []
    buffers: list[bytes] = []
    for t in response.outputs:
        entry: dict[str, Any] = {
            "name": t.name,
            "datatype": t.datatype.name,
            "shape": list(t.data.shape),
        }
        if binary is None or t.name in binary:
            if t.datatype.itemsize:
                raw = np.ascontiguousarray(t.data, dtype=t.datatype.dtype).tobytes()
            else:
                raw = encode_bytes_raw(t.data)
            entry["parameters"] = {_BINARY_SIZE: len(raw)}
            buffers.append(raw)
        elif t.datatype.itemsize:
            entry["data"] = np.ascontiguousarray(t.data).ravel()
        else:
            entry["data"] = list(map(_text, t.data.ravel().tolist()))
        outputs.append(entry)
    head = orjson.dumps(
        {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "id": response.id,
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not buffers:
        return head, None
    return head + b"".join(buffers), len(head)


def _proto3_reply(response: InferResponse) -> bytes:
    """The proto3 JSON of ``encode_infer_response(response)`` as the transcoder printed it
    (proto field names, every field without presence printed, 64-bit integers and shapes
    as strings, bytes in base64), written from the arrays with orjson:
    ``json_format.MessageToJson`` took 1.3 ms for 256 rows."""
    outputs = []
    raw: list[str] = []
    for t in response.outputs:
        contents: dict[str, Any] = dict.fromkeys(_CONTENT_FIELDS, _EMPTY)
        entry: dict[str, Any] = {
            "name": t.name,
            "datatype": t.datatype.name,
            "shape": [str(d) for d in t.data.shape],
            "parameters": {},
        }
        data = t.data
        if response.raw_output:
            if t.datatype.itemsize:
                buffer = np.ascontiguousarray(data, dtype=t.datatype.dtype).tobytes()
            else:
                buffer = encode_bytes_raw(data)
            raw.append(_b2a(buffer, newline=False).decode())
        elif not t.datatype.itemsize:
            contents["bytes_contents"] = [
                _b2a(x if isinstance(x, bytes) else str(x).encode(), newline=False).decode()
                for x in data.ravel().tolist()
            ]
            entry["contents"] = contents
        else:
            name = t.datatype.field or "fp32_contents"
            if name in _STRING_FIELDS:
                contents[name] = list(map(str, data.ravel().tolist()))
            else:
                # FP16 travels in fp32_contents
                values = data.astype(np.float32) if t.datatype.field is None else data
                contents[name] = np.ascontiguousarray(values).ravel()
            entry["contents"] = contents
        outputs.append(entry)
    return orjson.dumps(
        {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "id": response.id,
            "parameters": {},
            "outputs": outputs,
            "raw_output_contents": raw,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


class InferReply(HttpBodyReply):
    """``ModelInferJson``'s reply, in the form of the request; when binary tensor data
    follows the JSON, ``header_length`` is the JSON's length (for the reply header)."""

    __slots__ = ("header_length",)

    def __init__(self, body: InferBody, response: InferResponse) -> None:
        self.header_length: int | None = None
        if body.rest_form:
            data, self.header_length = _rest_reply(body, response)
        else:
            data = _proto3_reply(response)
        kind = JSON_CONTENT_TYPE if self.header_length is None else BINARY_CONTENT_TYPE
        super().__init__(data, response.model_name, response.model_version, kind)


def metadata_json(reply: pb.ModelMetadataResponse) -> bytes:
    """REST model metadata: the proto3 JSON of ``reply`` as the transcoder printed it
    (proto field names, every field without presence printed), except that shapes are
    JSON numbers, as the protocol's REST form (and every REST client of it) has them."""
    body = json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for key in ("inputs", "outputs"):
        for tensor in body[key]:
            tensor["shape"] = [int(d) for d in tensor["shape"]]
    return orjson.dumps(body)
