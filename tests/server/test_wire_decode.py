"""ModelInfer read straight from its wire bytes gives exactly the plain path's result.

:func:`server.oip_codec.decode_infer` hands an :class:`~server.oip_codec.InferWire` to the
native decoder first; whatever that decoder takes must decode to the very tensors the
protobuf message and :func:`~server.oip_codec.decode_infer_request` give, and whatever it
leaves (other forms, and every request with something wrong) must reach the plain path,
whose errors are the ones callers see. Checked on generated requests of every datatype,
on mutations of their bytes and on arbitrary bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from server import oip_codec
from server.core import InferRequest
from server.datatypes import DATATYPES
from server.errors import InvalidInput
from server.generated.inference import grpc_service_pb2 as pb
from server.oip_codec import InferWire, decode_infer, decode_infer_request
from server.textcodes import VOCABULARY, TextArray
from tests.server.test_fast_decode import _columns, _request

LIMIT = 1 << 22
#: the datatypes the native decoder reads itself (BOOL and FP16 take the plain path)
NATIVE = sorted(set(DATATYPES) - {"BOOL", "FP16"})


def _native(data: bytes, max_elements: int = LIMIT, max_batch: int = LIMIT) -> Any:
    """What the native decoder alone makes of ``data`` (None: left to the plain path)."""
    assert oip_codec._decode_wire is not None, "the native extension is built by make setup"
    return oip_codec._decode_wire(VOCABULARY, data, max_elements, max_batch)


def _outcome(decode: Any, data: bytes, max_elements: int, max_batch: int) -> tuple[str, Any]:
    try:
        return "ok", decode(data, max_elements, max_batch)
    except InvalidInput as exc:
        return "error", (exc.message, exc.reason)


def _via_wire(data: bytes, max_elements: int, max_batch: int) -> InferRequest:
    return decode_infer(InferWire(data), max_elements, max_batch)


def _plain(data: bytes, max_elements: int, max_batch: int) -> InferRequest:
    return decode_infer_request(InferWire(data).message(), max_elements, max_batch)


def _assert_same(a: InferRequest, b: InferRequest) -> None:
    assert (a.model_name, a.model_version, a.id, a.outputs, a.raw_output) == (
        b.model_name,
        b.model_version,
        b.id,
        b.outputs,
        b.raw_output,
    )
    assert len(a.inputs) == len(b.inputs)
    for x, y in zip(a.inputs, b.inputs, strict=True):
        assert x.name == y.name
        assert x.datatype is y.datatype
        assert type(x.data) is type(y.data)
        assert x.data.dtype == y.data.dtype and x.data.shape == y.data.shape
        assert x.data.tobytes() == y.data.tobytes() if x.data.dtype != object else True
        assert x.data.ravel().tolist() == y.data.ravel().tolist()
        assert [type(v) for v in x.data.ravel().tolist()] == [
            type(v) for v in y.data.ravel().tolist()
        ]
        if type(x.data) is TextArray:
            assert x.data.slots is not None and y.data.slots is not None
            assert x.data.slots.tolist() == y.data.slots.tolist()
            assert not x.data.flags.writeable and not y.data.flags.writeable


def _assert_agree(data: bytes, max_elements: int = LIMIT, max_batch: int = LIMIT) -> str:
    """The wire path and the plain path agree on ``data``; which of the two answered."""
    wire = _outcome(_via_wire, data, max_elements, max_batch)
    plain = _outcome(_plain, data, max_elements, max_batch)
    assert wire[0] == plain[0], (wire, plain)
    if wire[0] == "ok":
        _assert_same(wire[1], plain[1])
    else:
        assert wire[1] == plain[1]
    native = _native(data, max_elements, max_batch)
    if native is not None:  # taken natively: only ever a request the plain path accepts
        assert plain[0] == "ok"
    return "native" if native is not None else "plain"


def _raw_request(
    columns: list[tuple[str, list[Any]]], rows: int, raw: bool = True
) -> pb.ModelInferRequest:
    req = _request(columns, rows, raw=raw)
    req.id = "req-1"
    req.model_version = "3"
    req.outputs.add(name="probabilities")
    return req


@settings(max_examples=300, deadline=None)
@given(_columns(), st.booleans())
def test_every_natively_read_datatype_gives_the_plain_tensors(
    drawn: tuple[list[tuple[str, list[Any]]], int], raw: bool
) -> None:
    columns, rows = drawn
    data = _raw_request(columns, rows, raw).SerializeToString()
    taken = _assert_agree(data)
    assert taken == ("native" if {d for d, _ in columns} <= set(NATIVE) else "plain")


@settings(max_examples=500, deadline=None)
@given(_columns(), st.booleans(), st.data())
def test_mutated_bytes_get_the_plain_answer(
    drawn: tuple[list[tuple[str, list[Any]]], int], raw: bool, data: st.DataObject
) -> None:
    columns, rows = drawn
    wire = bytearray(_raw_request(columns, rows, raw).SerializeToString())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire)))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "drop"]))
        if kind == "flip" and at < len(wire):
            wire[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del wire[at:]
        elif kind == "insert":
            wire[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif kind == "drop":
            del wire[at : at + data.draw(st.integers(1, 4))]
    limit = data.draw(st.sampled_from([LIMIT, 4, 1]))
    _assert_agree(bytes(wire), max_elements=limit, max_batch=limit)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=96))
def test_arbitrary_bytes_get_the_plain_answer(data: bytes) -> None:
    _assert_agree(data)


def _key(field: int, wire_type: int) -> bytes:
    return bytes([field << 3 | wire_type])


def _delimited(field: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return _key(field, 2) + bytes([len(payload)]) + payload


def test_a_single_row_request_is_read_natively_with_vocabulary_text() -> None:
    word = "Sky Airline"
    VOCABULARY.add(word)
    req = _raw_request([("BYTES", [word]), ("FP32", [2.5]), ("INT64", [7])], 1)
    data = req.SerializeToString()
    assert _assert_agree(data) == "native"
    decoded = decode_infer(InferWire(data), LIMIT, LIMIT)
    text = decoded.inputs[0].data
    assert type(text) is np.ndarray and text.shape == (1, 1)
    assert text[0, 0] is VOCABULARY.word(VOCABULARY.add(word))  # the vocabulary's own str
    assert decoded.inputs[1].data.dtype == np.float32 and decoded.inputs[1].data[0, 0] == 2.5
    assert (decoded.model_version, decoded.id, decoded.outputs) == ("3", "req-1", ["probabilities"])


def test_many_rows_of_text_carry_their_vocabulary_slots() -> None:
    known = VOCABULARY.word(VOCABULARY.add("Copa Air"))
    values = [known, "never seen before", "", "Ñuñoa"]
    data = _raw_request([("BYTES", values)], 4).SerializeToString()
    assert _assert_agree(data) == "native"
    (tensor,) = decode_infer(InferWire(data), LIMIT, LIMIT).inputs
    assert type(tensor.data) is TextArray and tensor.data.ravel().tolist() == values
    expected = np.empty(len(values), np.int64)
    assert VOCABULARY.ids(values, expected)
    assert tensor.data.slots.tolist() == expected.tolist()
    assert tensor.data.slots[0] == VOCABULARY.add("Copa Air") + 1
    assert tensor.data[0, 0] is known


def test_a_shape_sent_unpacked_is_read_like_a_packed_one() -> None:
    raw = np.array([[1.0, 2.0]], dtype="<f4").tobytes()
    tensor = (
        _delimited(1, b"x") + _delimited(2, b"FP32") + _key(3, 0) + b"\x01" + _key(3, 0) + b"\x02"
    )
    data = _delimited(1, b"m") + _delimited(5, tensor) + _delimited(7, raw)
    assert _assert_agree(data) == "native"
    (x,) = decode_infer(InferWire(data), LIMIT, LIMIT).inputs
    assert x.data.tolist() == [[1.0, 2.0]]


def test_a_field_sent_twice_keeps_its_last_value() -> None:
    data = _raw_request([("FP32", [1.0])], 1).SerializeToString()
    data = _delimited(1, b"first") + data + _delimited(3, b"last-id")
    assert _assert_agree(data) == "native"
    decoded = decode_infer(InferWire(data), LIMIT, LIMIT)
    assert (decoded.model_name, decoded.id) == ("m", "last-id")


@pytest.mark.parametrize(
    "change",
    [
        "request parameters",
        "input parameters",
        "output parameters",
        "BOOL",
        "FP16",
        "unknown field",
        "typed, unpacked",
        "typed, in two parts",
        "typed, another field too",
    ],
)
def test_other_forms_take_the_plain_path(change: str) -> None:
    req = _raw_request([("FP32", [1.0, 2.0])], 2)
    typed = _raw_request([("INT64", [1, 2])], 2, raw=False)
    if change == "request parameters":
        req.parameters["binary_data_output"].bool_param = True
    elif change == "input parameters":
        req.inputs[0].parameters["x"].int64_param = 1
    elif change == "output parameters":
        req.outputs[0].parameters["binary_data"].bool_param = True
    elif change == "typed, another field too":
        req = typed
        req.inputs[0].contents.fp32_contents.append(1.0)  # ignored by the plain path
    elif change in ("BOOL", "FP16"):
        req.inputs[0].datatype = change
        req.raw_input_contents[0] = bytes(2 * DATATYPES[change].itemsize)
    data = req.SerializeToString()
    if change == "unknown field":
        data += _delimited(15, b"future")
    elif change in ("typed, unpacked", "typed, in two parts"):
        values = _key(3, 0) + b"\x01" + _key(3, 0) + b"\x02"  # int64_contents, unpacked
        if change == "typed, in two parts":
            values = _delimited(3, b"\x01") + _delimited(3, b"\x02")
        tensor = _delimited(1, b"x") + _delimited(2, b"INT64") + _delimited(3, b"\x02\x01")
        data = _delimited(1, b"m") + _delimited(5, tensor + _delimited(5, values))
    assert _native(data) is None
    assert _assert_agree(data) == "plain"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("datatype", "input 'x0' has unknown datatype 'FP99'"),
        ("negative", "input 'x0' has a negative dimension in [-1, 1]"),
        ("empty batch", "empty batch: input 'x0' has shape [0, 1]"),
        ("too large", "input 'x0' shape [3, 1] is too large"),
        ("raw size", "input 'x0': raw contents hold 8 bytes, shape [3, 1] of FP32 needs 12"),
        ("nan", "input 'x0' contains NaN or Inf"),
        ("bad text", "input 'x1': bad raw BYTES contents"),
        ("text and more", "input 'x1': bad raw BYTES contents"),
        ("one text and more", "input 'x1': bad raw BYTES contents"),
        ("raw count", "1 raw_input_contents for 2 inputs"),
        ("raw and typed", "input 'x0' has both contents and raw_input_contents"),
        ("not a message", "request is not a valid message"),
        ("typed count", "input 'x0' has 3 values, shape [2, 1] needs 2"),
        ("typed nan", "input 'x0' contains NaN or Inf"),
        ("typed range", "input 'x2' has values out of range for INT8"),
        ("typed text", "input 'x1' is not valid UTF-8"),
        ("typed none", "input 'x0' has 0 values, shape [2, 1] needs 2"),
    ],
)
def test_refused_requests_get_the_plain_paths_errors(change: str, message: str) -> None:
    req = _raw_request([("FP32", [1.0, 2.0]), ("BYTES", ["a", "b"])], 2)
    limit = LIMIT
    if change == "datatype":
        req.inputs[0].datatype = "FP99"
    elif change == "negative":
        req.inputs[0].shape[:] = [-1, 1]
    elif change == "empty batch":
        req.inputs[0].shape[:] = [0, 1]
    elif change in ("too large", "raw size"):
        req.inputs[0].shape[:] = [3, 1]
        limit = 2 if change == "too large" else LIMIT
    elif change == "nan":
        req.raw_input_contents[0] = struct.pack("<2f", 1.0, float("nan"))
    elif change == "bad text":
        req.raw_input_contents[1] = struct.pack("<I", 1) + b"\xff" + struct.pack("<I", 0)
    elif change == "text and more":
        req.raw_input_contents[1] += b"\x00"
    elif change == "one text and more":
        req = _raw_request([("FP32", [1.0]), ("BYTES", ["a"])], 1)
        req.raw_input_contents[1] += b"\x00"
    elif change == "raw count":
        del req.raw_input_contents[1]
    elif change == "raw and typed":
        req.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
    elif change.startswith("typed"):
        req = _raw_request(
            [("FP32", [1.0, 2.0]), ("BYTES", ["a", "b"]), ("INT8", [1, 2])], 2, False
        )
        contents = [t.contents for t in req.inputs]
        if change == "typed count":
            contents[0].fp32_contents.append(3.0)
        elif change == "typed nan":
            contents[0].fp32_contents[1] = float("inf")
        elif change == "typed range":
            contents[2].int_contents[0] = 300
        elif change == "typed text":
            contents[1].bytes_contents[0] = b"\xff"
        elif change == "typed none":
            req.inputs[0].ClearField("contents")
    data = req.SerializeToString()
    if change == "not a message":
        data = data[:-3]
    assert _native(data, limit, limit) is None
    with pytest.raises(InvalidInput) as raised:
        decode_infer(InferWire(data), limit, limit)
    assert raised.value.message.startswith(message)
    assert _assert_agree(data, limit, limit) == "plain"


def test_the_wire_request_names_its_model_for_the_metrics() -> None:
    good = _raw_request([("FP32", [1.0])], 1)
    assert InferWire(good.SerializeToString()).model_name == "m"
    assert InferWire(good.SerializeToString()).model_version == "3"
    broken = InferWire(good.SerializeToString()[:-2])
    assert (broken.model_name, broken.model_version) == ("", "")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.mark.parametrize(
    ("datatype", "field", "wire", "expected"),
    [
        ("INT16", 2, 2**32 + 5, 5),  # an int32 field keeps the low 32 bits, as protobuf does
        ("INT16", 2, 2**64 - 1, -1),  # -1 as a ten-byte varint
        ("UINT8", 4, 2**32 + 7, 7),  # so does a uint32 field
        ("INT64", 3, 2**64 - 2, -2),
        ("UINT64", 5, 2**64 - 2, 2**64 - 2),
    ],
)
def test_typed_integers_are_read_as_protobuf_reads_them(
    datatype: str, field: int, wire: int, expected: int
) -> None:
    values = _delimited(field, _varint(wire))
    tensor = _delimited(1, b"x") + _delimited(2, datatype.encode()) + _delimited(3, b"\x01\x01")
    data = _delimited(1, b"m") + _delimited(5, tensor + _delimited(5, values))
    assert _assert_agree(data) == "native"
    (x,) = decode_infer(InferWire(data), LIMIT, LIMIT).inputs
    assert x.data.tolist() == [[expected]]


def _padded(value: int, size: int) -> bytes:
    """``value`` as a varint of exactly ``size`` bytes (protobuf allows padding)."""
    out = bytearray()
    for i in range(size):
        out.append((value & 0x7F) | (0x80 if i < size - 1 else 0))
        value >>= 7
    return bytes(out)


@pytest.mark.parametrize("size", [1, 5, 6, 10])
@pytest.mark.parametrize("where", ["tag", "length", "shape value"])
def test_padded_varints_are_read_as_protobuf_reads_them(where: str, size: int) -> None:
    """Protobuf takes a length or a value padded up to ten bytes, and a tag of at most
    five: the native decoder must never accept a request the message parser refuses."""
    raw = _delimited(7, struct.pack("<f", 1.0))
    shape = _delimited(3, b"\x01\x01")
    if where == "shape value":
        shape = _key(3, 0) + _padded(1, size) + _key(3, 0) + b"\x01"
    tensor = _delimited(5, _delimited(1, b"x") + _delimited(2, b"FP32") + shape)
    name = _delimited(1, b"m")
    if where == "tag":
        name = _padded(1 << 3 | 2, size) + b"\x01m"
    elif where == "length":
        name = _key(1, 2) + _padded(1, size) + b"m"
    data = name + tensor + raw
    taken = _assert_agree(data)
    assert taken == ("plain" if where == "tag" and size > 5 else "native")
    if taken == "plain":
        with pytest.raises(InvalidInput, match="request is not a valid message"):
            decode_infer(InferWire(data), LIMIT, LIMIT)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


#: the fields that hold messages, by the message they are in (None: the request itself)
_NESTED = {None: {5: "input", 6: "output"}, "input": {5: "contents"}}


def _fields(data: bytes, kind: str | None) -> list[tuple[int, int, Any]]:
    """A well-formed message as ``(number, wire type, value)``, nested messages split too."""
    fields: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _read_varint(data, i)
        else:
            assert wire == 2
            size, i = _read_varint(data, i)
            value, i = data[i : i + size], i + size
            inner = _NESTED.get(kind, {}).get(number)
            if inner is not None:
                value = _fields(value, inner)
        fields.append((number, wire, value))
    return fields


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _reencode(fields: list[tuple[int, int, Any]], draw: Any) -> bytes:
    """The same fields in another valid (or, for a tag over five bytes, invalid) encoding:
    any order, varints padded."""
    order = draw(st.permutations(range(len(fields))))
    out = bytearray()
    for k in order:
        number, wire, value = fields[k]
        key = number << 3 | wire
        too_long = draw(st.integers(0, 31)) == 0  # now and then a tag protobuf refuses
        out += _padded(key, 6 if too_long else draw(st.integers(_varint_size(key), 5)))
        if wire == 0:
            out += _padded(value, draw(st.integers(_varint_size(value), 10)))
        else:
            payload = _reencode(value, draw) if isinstance(value, list) else value
            out += _padded(len(payload), draw(st.integers(_varint_size(len(payload)), 10)))
            out += payload
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(_columns(), st.booleans(), st.data())
def test_any_encoding_of_a_request_gets_the_plain_answer(
    drawn: tuple[list[tuple[str, list[Any]]], int], raw: bool, data: st.DataObject
) -> None:
    """Field order, repeated fields and padded varints as any protobuf writer may produce
    them: the two parsers agree on every encoding."""
    columns, rows = drawn
    fields = _fields(_raw_request(columns, rows, raw).SerializeToString(), None)
    if data.draw(st.booleans()):  # the first input's shape, one unpacked value per dimension
        tensor = fields[[f[0] for f in fields].index(5)][2]
        shape = next(v for n, w, v in tensor if n == 3)
        dims, i = [], 0
        while i < len(shape):
            d, i = _read_varint(shape, i)
            dims.append(d)
        tensor[:] = [f for f in tensor if f[0] != 3] + [(3, 0, d) for d in dims]
    taken = _assert_agree(_reencode(fields, data.draw))
    event(taken)


def test_without_the_native_decoder_every_request_takes_the_plain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An install built without a C compiler has no native decoder: same results."""
    data = _raw_request([("FP32", [1.0, 2.0]), ("BYTES", ["a", "b"])], 2).SerializeToString()
    native = decode_infer(InferWire(data), LIMIT, LIMIT)
    monkeypatch.setattr(oip_codec, "_decode_wire", None)
    _assert_same(decode_infer(InferWire(data), LIMIT, LIMIT), native)
    with pytest.raises(InvalidInput, match="request is not a valid message"):
        decode_infer(InferWire(data[:-1]), LIMIT, LIMIT)
