"""The fast decode paths give exactly what the plain paths give, errors included.

``split_bytes_raw`` and ``split_text_raw`` (the request path's BYTES splitters) are checked
against ``decode_bytes_raw`` (the plain element-by-element parser) on arbitrary buffers;
whole requests are checked raw against typed, every datatype in one request.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.datatypes import (
    DATATYPES,
    FRAMED_FROM,
    decode_bytes_raw,
    encode_bytes_raw,
    frame_texts,
    split_bytes_raw,
    split_text_raw,
)
from server.errors import InvalidInput
from server.generated.inference import grpc_service_pb2 as pb
from server.oip_codec import decode_infer_request

LIMIT = 1 << 22
WORDS = ["", "Sky Airline", "Ñuñoa", "日本語", "", "a\x00", "\x00"]


def _layout(words: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(w)) + w for w in words)


def _outcome(fn: Any, raw: bytes, count: int) -> tuple[str, Any]:
    try:
        return "ok", fn(raw, count)
    except ValueError as exc:  # UnicodeDecodeError included
        return type(exc).__name__, str(exc)


def _plain_text(raw: bytes, count: int) -> list[str]:
    return [b.decode() for b in decode_bytes_raw(raw, count)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=48), st.integers(0, 8))
def test_split_matches_plain_parser_on_arbitrary_buffers(raw: bytes, count: int) -> None:
    assert _outcome(split_bytes_raw, raw, count) == _outcome(decode_bytes_raw, raw, count)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=12), st.integers(-2, 2), st.binary(max_size=3))
def test_split_matches_plain_parser_near_well_formed(
    items: list[str], count_delta: int, tail: bytes
) -> None:
    raw = _layout([s.encode() for s in items]) + tail
    count = max(0, len(items) + count_delta)
    assert _outcome(split_bytes_raw, raw, count) == _outcome(decode_bytes_raw, raw, count)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=48), st.integers(0, 8))
def test_text_split_matches_plain_parser_on_arbitrary_buffers(raw: bytes, count: int) -> None:
    assert _outcome(split_text_raw, raw, count) == _outcome(_plain_text, raw, count)


_ASCII = st.text(st.characters(max_codepoint=127), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_ASCII, st.text(max_size=4)), max_size=12),
    st.integers(-2, 2),
    st.binary(max_size=3),
    st.booleans(),
)
def test_text_split_matches_plain_parser_near_well_formed(
    items: list[str], count_delta: int, tail: bytes, long_item: bool
) -> None:
    # mostly ASCII buffers (the sliced path), some not; one element past 127 bytes makes a
    # length prefix non-ASCII
    words = [s.encode() for s in items] + ([b"x" * 130] if long_item else [])
    raw = _layout(words) + tail
    count = max(0, len(words) + count_delta)
    assert _outcome(split_text_raw, raw, count) == _outcome(_plain_text, raw, count)


# short text without NULs: the framed path; anything else must make it step aside
_SHORT = st.text(st.characters(codec="utf-8", min_codepoint=1), min_size=1, max_size=5)
_WORD = st.one_of(
    _SHORT,
    _SHORT.map(lambda w: w.encode()),
    st.sampled_from([b"", b"\x00", b"a\x00b", b"\x00\x00\x00", b"\xff", b"\xc3", b"y" * 256]),
)


def _framed(raw: bytes, count: int) -> list[str] | None:
    framed = frame_texts([raw], [count])
    return None if framed is None else framed[0]


def _framed_or_plain(raw: bytes, count: int) -> list[str]:
    items = _framed(raw, count)
    return _plain_text(raw, count) if items is None else items


@settings(max_examples=800, deadline=None)
@given(
    st.lists(_WORD, min_size=1, max_size=10),
    st.integers(-1, 1),
    st.binary(max_size=2),
    st.binary(max_size=4),
    st.tuples(st.integers(0, 9), st.sampled_from([0, 0, 0, -1, 1, 3, 256])),
)
def test_framed_split_is_the_plain_parser_or_steps_aside(
    words: list[str | bytes],
    count_delta: int,
    head: bytes,
    tail: bytes,
    lie: tuple[int, int],
) -> None:
    """Well-formed short text is split; a count that is off, bytes before or after the
    elements, or one length prefix that lies must give the plain parser's outcome."""
    encoded = [w.encode() if isinstance(w, str) else w for w in words]
    which, delta = lie
    prefixes = [len(w) + (delta if i == which % len(encoded) else 0) for i, w in enumerate(encoded)]
    layout = b"".join(
        struct.pack("<I", max(0, n)) + w for n, w in zip(prefixes, encoded, strict=True)
    )
    raw = head + layout + tail
    count = max(1, len(encoded) + count_delta)
    assert _outcome(_framed_or_plain, raw, count) == _outcome(_plain_text, raw, count)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(1, 8))
def test_framed_split_steps_aside_on_arbitrary_buffers(raw: bytes, count: int) -> None:
    assert _outcome(_framed_or_plain, raw, count) == _outcome(_plain_text, raw, count)


def test_framed_split_takes_short_text_and_leaves_the_rest() -> None:
    words = ["Grupo LATAM", "Sky Airline", "Ñuñoa", "日本語", "I"] * 20
    raw = _layout([w.encode() for w in words])
    assert _framed(raw, len(words)) == words
    assert split_text_raw(raw, len(words)) == words and len(words) >= FRAMED_FROM
    # what it does not take: empty, 256 bytes or longer, NUL inside, not UTF-8, wrong count
    for odd in (b"", b"x" * 256, b"a\x00", b"\xff"):
        bad = _layout([w.encode() for w in words[:-1]] + [odd])
        assert _framed(bad, len(words)) is None
        assert _outcome(split_text_raw, bad, len(words)) == _outcome(_plain_text, bad, len(words))
    assert _framed(raw, len(words) + 1) is None
    assert _framed(b"", 0) is None and _framed(b"abc", 0) is None
    assert _framed(raw + b"\x01\x00\x00\x00", len(words)) is None
    assert _framed(b"X" + raw, len(words)) is None  # a stray byte first
    # three NULs, as one length prefix would have, but not after the length byte
    assert _framed(b"\x03\x00a\x00bc\x00", 1) is None
    assert _outcome(_framed_or_plain, b"\x03\x00a\x00bc\x00", 1)[0] == "ValueError"
    # one NUL more than three per element: a chain of two on the NULs' positions, for one
    assert _framed(b"\x01\x00\x00\x00a\x02\x00bcde", 1) is None
    with pytest.raises(ValueError, match="holds 100 elements, shape says 101"):
        split_text_raw(raw, len(words) + 1)


def _plain_or_none(raw: bytes, count: int) -> list[str] | None:
    try:
        return _plain_text(raw, count)
    except ValueError:
        return None


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.lists(_WORD, min_size=1, max_size=6), min_size=1, max_size=4),
    st.integers(0, 3),
    st.sampled_from([0, 0, -1, 1]),
)
def test_framing_several_buffers_is_framing_each(
    columns: list[list[str | bytes]], which: int, shift: int
) -> None:
    """Buffers framed together give each buffer's own elements, or step aside. A shifted
    boundary (one element counted in the wrong buffer, or a byte moved across) is not a
    chain that happens to run on: it must step aside too."""
    raws = [_layout([w.encode() if isinstance(w, str) else w for w in ws]) for ws in columns]
    counts = [len(ws) for ws in columns]
    k = which % len(raws)
    if shift and k + 1 < len(raws):  # the boundary between buffers k and k + 1
        if which % 2:
            counts[k] += shift
            counts[k + 1] -= shift
        elif shift > 0:
            raws[k], raws[k + 1] = raws[k] + raws[k + 1][:1], raws[k + 1][1:]
        else:
            raws[k], raws[k + 1] = raws[k][:-1], raws[k][-1:] + raws[k + 1]
    framed = frame_texts(raws, counts)
    alone = [_framed(r, c) if c >= 1 else None for r, c in zip(raws, counts, strict=True)]
    if all(a is not None for a in alone):
        assert framed == alone
    else:
        assert framed is None
    if framed is not None:
        assert framed == [_plain_or_none(r, c) for r, c in zip(raws, counts, strict=True)]


def test_framing_several_buffers_checks_where_each_starts() -> None:
    first, second = ["Grupo LATAM", "Sky Airline"] * 40, ["SCL", "LIM"] * 40
    raws = [_layout([w.encode() for w in first]), _layout([w.encode() for w in second])]
    assert frame_texts(raws, [80, 80]) == [first, second]
    # the same bytes form one valid chain, but these counts (or the moved prefix) put a
    # buffer's first element elsewhere than where that buffer starts
    assert frame_texts(raws, [79, 81]) is None
    assert frame_texts(raws, [81, 79]) is None
    assert frame_texts([raws[0] + raws[1][:4], raws[1][4:]], [81, 79]) is None
    assert frame_texts([], []) is None
    assert frame_texts(raws, [80, 0]) is None


def test_text_split_slices_ascii_and_decodes_the_rest() -> None:
    ascii_words = ["", "Sky Airline", "a\x00", "\x00", "I", ""]
    out = split_text_raw(_layout([w.encode() for w in ascii_words]), len(ascii_words))
    assert out == ascii_words and all(type(w) is str for w in out)
    assert split_text_raw(_layout([w.encode() for w in WORDS]), len(WORDS)) == WORDS
    with pytest.raises(UnicodeDecodeError):
        split_text_raw(_layout([b"ok", b"\xff"]), 2)
    with pytest.raises(ValueError, match="holds 2 elements, shape says 3"):
        split_text_raw(_layout([b"a", b"b"]), 3)


def test_split_keeps_empty_and_non_ascii_strings() -> None:
    encoded = [w.encode() for w in WORDS]
    assert split_bytes_raw(_layout(encoded), len(WORDS)) == encoded
    assert split_bytes_raw(_layout([b""]), 1) == [b""]
    assert split_bytes_raw(_layout(["é".encode()]), 1) == ["é".encode()]


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x05\x00\x00\x00ab", 1, "element runs past the end of the buffer"),
        (b"\x01\x00\x00", 1, "truncated length prefix"),
        (_layout([b"a", b"b"]), 1, "holds 2 elements, shape says 1"),
        (_layout([b"a"]), 3, "holds 1 elements, shape says 3"),
        (_layout([b"a", b"b"]) + b"\x00", 2, "truncated length prefix"),
    ],
)
def test_split_errors_are_the_plain_parser_errors(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_bytes_raw(raw, count)


# -- whole requests: raw and typed forms decode to the same tensors ----------------

_FIELD_VALUES = {
    "BOOL": st.booleans(),
    "UINT8": st.integers(0, 2**8 - 1),
    "UINT16": st.integers(0, 2**16 - 1),
    "UINT32": st.integers(0, 2**32 - 1),
    "UINT64": st.integers(0, 2**64 - 1),
    "INT8": st.integers(-(2**7), 2**7 - 1),
    "INT16": st.integers(-(2**15), 2**15 - 1),
    "INT32": st.integers(-(2**31), 2**31 - 1),
    "INT64": st.integers(-(2**63), 2**63 - 1),
    "FP32": st.floats(allow_nan=False, allow_infinity=False, width=32),
    "FP64": st.floats(allow_nan=False, allow_infinity=False),
    "BYTES": st.text(max_size=5),
}


def _request(columns: list[tuple[str, list[Any]]], rows: int, raw: bool) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    for i, (datatype, values) in enumerate(columns):
        t = req.inputs.add(name=f"x{i}", datatype=datatype, shape=[rows, len(values) // rows])
        dt = DATATYPES[datatype]
        if datatype == "BYTES":
            if raw:
                req.raw_input_contents.append(encode_bytes_raw(np.array(values, dtype=object)))
            else:
                t.contents.bytes_contents.extend(v.encode() for v in values)
        elif raw:
            req.raw_input_contents.append(np.array(values, dtype=dt.dtype).tobytes())
        else:
            getattr(t.contents, dt.field).extend(values)  # type: ignore[arg-type]
    return req


@st.composite
def _columns(draw: Any) -> tuple[list[tuple[str, list[Any]]], int]:
    rows = draw(st.integers(1, 4))
    datatypes = draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), min_size=1, max_size=6))
    columns = []
    for datatype in datatypes:
        width = draw(st.integers(1, 3))
        values = draw(
            st.lists(_FIELD_VALUES[datatype], min_size=rows * width, max_size=rows * width)
        )
        columns.append((datatype, values))
    return columns, rows


@settings(max_examples=150, deadline=None)
@given(_columns())
def test_raw_and_typed_requests_decode_to_the_same_tensors(
    drawn: tuple[list[tuple[str, list[Any]]], int],
) -> None:
    columns, rows = drawn
    raw = decode_infer_request(_request(columns, rows, raw=True), LIMIT, LIMIT)
    typed = decode_infer_request(_request(columns, rows, raw=False), LIMIT, LIMIT)
    assert [t.name for t in raw.inputs] == [t.name for t in typed.inputs]
    for r, t, (datatype, values) in zip(raw.inputs, typed.inputs, columns, strict=True):
        assert r.datatype is t.datatype is DATATYPES[datatype]
        assert r.data.dtype == t.data.dtype == DATATYPES[datatype].dtype
        assert r.data.shape == t.data.shape == (rows, len(values) // rows)
        assert r.data.ravel().tolist() == t.data.ravel().tolist()
        if datatype == "BYTES":
            assert r.data.ravel().tolist() == values
    assert raw.raw_output and not typed.raw_output


def test_bytes_with_empty_and_non_ascii_strings_in_both_forms() -> None:
    columns = [("BYTES", WORDS)]
    for raw in (True, False):
        (tensor,) = decode_infer_request(_request(columns, 7, raw), LIMIT, LIMIT).inputs
        assert tensor.data.dtype == object
        assert tensor.data.ravel().tolist() == WORDS


@pytest.mark.parametrize("raw", [True, False])
def test_bytes_shape_that_disagrees_with_the_data(raw: bool) -> None:
    req = _request([("BYTES", ["a", "é"])], 2, raw)
    req.inputs[0].shape[:] = [3, 1]
    message = (
        "input 'x0': bad raw BYTES contents: holds 2 elements, shape says 3"
        if raw
        else "input 'x0' has 2 values, shape [3, 1] needs 3"
    )
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_infer_request(req, LIMIT, LIMIT)


def test_invalid_utf8_in_raw_bytes_is_invalid_input() -> None:
    req = _request([("BYTES", ["a"])], 1, raw=True)
    req.raw_input_contents[0] = _layout([b"\xff\xfe"])
    with pytest.raises(InvalidInput, match="bad raw BYTES contents"):
        decode_infer_request(req, LIMIT, LIMIT)


def _text_request(columns: list[list[str]], raw: bool = True) -> pb.ModelInferRequest:
    req = _request([("BYTES", ws) for ws in columns], len(columns[0]), raw)
    req.inputs.add(name="n", datatype="FP32", shape=[len(columns[0]), 1])
    values = np.arange(len(columns[0]), dtype="<f4")
    if raw:
        req.raw_input_contents.append(values.tobytes())
    else:
        req.inputs[-1].contents.fp32_contents.extend(values.tolist())
    return req


@pytest.mark.parametrize("odd", [None, "", "x" * 300, "a\x00b", "Ñuñoa"])
def test_many_raw_bytes_inputs_decode_as_their_typed_form(odd: str | None) -> None:
    """Enough BYTES elements between several inputs to be split at once; an element that
    framing does not take makes every input go its own way, with the same result."""
    rows = FRAMED_FROM // 2 + 1  # each input alone is under the threshold, together over it
    columns = [[f"{c}-{i % 7}" for i in range(rows)] for c in "abc"]
    if odd is not None:
        columns[1][5] = odd
    raw = decode_infer_request(_text_request(columns), LIMIT, LIMIT)
    typed = decode_infer_request(_text_request(columns, raw=False), LIMIT, LIMIT)
    for r, t in zip(raw.inputs, typed.inputs, strict=True):
        assert r.name == t.name and r.datatype is t.datatype
        assert r.data.dtype == t.data.dtype and r.data.shape == t.data.shape
        assert r.data.ravel().tolist() == t.data.ravel().tolist()
    assert [t.data.ravel().tolist() for t in raw.inputs[:3]] == columns


_CELL = st.text(st.characters(codec="utf-8", min_codepoint=1), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(8, 40).flatmap(
        lambda rows: st.lists(st.lists(_CELL, min_size=rows, max_size=rows), min_size=2, max_size=4)
    ),
    st.one_of(st.none(), st.sampled_from(["", "\x00", "a\x00b", "x" * 256])),
    st.integers(0, 10**6),
)
def test_many_raw_bytes_inputs_decode_as_their_typed_form_always(
    columns: list[list[str]], odd: str | None, where: int
) -> None:
    """Many rows across several BYTES inputs (split together when there are enough, each
    its own way when one element is not short NUL-free text) give the typed form's tensors."""
    if odd is not None:
        column = columns[where % len(columns)]
        column[where % len(column)] = odd
    raw = decode_infer_request(_text_request(columns), LIMIT, LIMIT)
    typed = decode_infer_request(_text_request(columns, raw=False), LIMIT, LIMIT)
    assert [t.data.ravel().tolist() for t in raw.inputs] == [
        t.data.ravel().tolist() for t in typed.inputs
    ]
    assert [t.data.ravel().tolist() for t in raw.inputs[:-1]] == columns


def test_the_first_bad_input_is_the_one_reported() -> None:
    rows = FRAMED_FROM
    columns = [[f"{c}{i}" for i in range(rows)] for c in "ab"]
    req = _text_request(columns)
    req.raw_input_contents[0] = req.raw_input_contents[0][:-1]  # x0: truncated
    with pytest.raises(InvalidInput, match="input 'x0': bad raw BYTES contents"):
        decode_infer_request(req, LIMIT, LIMIT)
    req.inputs[2].datatype = "FP99"  # a later input wrong too: x0 still comes first
    with pytest.raises(InvalidInput, match="input 'x0': bad raw BYTES contents"):
        decode_infer_request(req, LIMIT, LIMIT)
    req = _text_request(columns)
    req.inputs[2].datatype = "FP99"  # the BYTES inputs before it are fine
    with pytest.raises(InvalidInput, match="input 'n' has unknown datatype 'FP99'"):
        decode_infer_request(req, LIMIT, LIMIT)
    req = _text_request(columns)
    req.raw_input_contents[1] = _layout([b"ok"] * (rows - 1) + [b"\xff"])
    with pytest.raises(InvalidInput, match="input 'x1': bad raw BYTES contents"):
        decode_infer_request(req, LIMIT, LIMIT)
