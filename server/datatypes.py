"""Open Inference Protocol datatypes: numpy dtypes, contents fields, ONNX type names.

Tables are built once at import so the hot path does dictionary look-ups only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

__all__ = [
    "DATATYPES",
    "FRAMED_FROM",
    "ONNX_TO_DATATYPE",
    "Datatype",
    "decode_bytes_raw",
    "encode_bytes_raw",
    "frame_texts",
    "split_bytes_raw",
    "split_text_raw",
]


@dataclass(frozen=True, slots=True)
class Datatype:
    """One OIP datatype and how it travels."""

    name: str
    #: numpy dtype of decoded arrays (object for BYTES: ONNX Runtime wants ``str`` items)
    dtype: np.dtype
    #: field of ``InferTensorContents`` for typed contents (None: raw only)
    field: str | None
    #: bytes per element in raw contents (0 for BYTES, which is length-prefixed)
    itemsize: int
    #: floating point: NaN/Inf are checked
    is_float: bool


def _dt(name: str, dtype: str, field: str | None) -> Datatype:
    d = np.dtype(dtype)
    return Datatype(name, d, field, 0 if d.kind == "O" else d.itemsize, d.kind == "f")


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", "bool", "bool_contents"),
        _dt("UINT8", "<u1", "uint_contents"),
        _dt("UINT16", "<u2", "uint_contents"),
        _dt("UINT32", "<u4", "uint_contents"),
        _dt("UINT64", "<u8", "uint64_contents"),
        _dt("INT8", "<i1", "int_contents"),
        _dt("INT16", "<i2", "int_contents"),
        _dt("INT32", "<i4", "int_contents"),
        _dt("INT64", "<i8", "int64_contents"),
        _dt("FP16", "<f2", None),
        _dt("FP32", "<f4", "fp32_contents"),
        _dt("FP64", "<f8", "fp64_contents"),
        _dt("BYTES", "object", "bytes_contents"),
    )
}

ONNX_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_KIND_TO_DATATYPE: dict[tuple[str, int], str] = {
    (d.dtype.kind, d.dtype.itemsize): d.name for d in DATATYPES.values() if d.name != "BYTES"
}


_LEN = struct.Struct("<I")


def decode_bytes_raw(raw: bytes, count: int) -> list[bytes]:
    """Split Triton's raw BYTES layout (4-byte little-endian length, then the bytes).

    Raises ``ValueError`` when the buffer does not hold exactly ``count`` elements.
    """
    items: list[bytes] = []
    pos, end = 0, len(raw)
    unpack = _LEN.unpack_from
    while pos < end:
        if pos + 4 > end:
            raise ValueError("truncated length prefix")
        (n,) = unpack(raw, pos)
        pos += 4
        if pos + n > end:
            raise ValueError("element runs past the end of the buffer")
        items.append(raw[pos : pos + n])
        pos += n
        if len(items) > count:
            break
    if len(items) != count:
        raise ValueError(f"holds {len(items)} elements, shape says {count}")
    return items


def _chain(raw: bytes, source: Any, count: int) -> list[Any] | None:
    """The ``count`` elements of a well-formed raw BYTES buffer as slices of ``source``
    (``raw`` itself, or its text when byte and character positions agree); None for a
    malformed buffer.

    The layout is a chain (each length says where the next one starts), so some loop
    is unavoidable; this one does one unpack, one slice and one store per element and
    checks bounds once at the end: positions only grow, so an element that ran past
    the end leaves the final position past the end too.
    """
    items: list[Any] = [None] * count
    unpack = _LEN.unpack_from
    pos = 0
    try:
        for i in range(count):
            start = pos + 4
            pos = start + unpack(raw, pos)[0]
            items[i] = source[start:pos]
    except struct.error:
        return None
    return items if pos == len(raw) else None


def split_bytes_raw(raw: bytes, count: int) -> list[bytes]:
    """:func:`decode_bytes_raw` with the per-element work cut to the bone (:func:`_chain`).

    Any malformed buffer is handed to :func:`decode_bytes_raw`, which raises the same
    precise error it always has; a well-formed one gives exactly its result.
    """
    size = len(raw)
    if count == 1:  # one row: the common case on the request path
        if size >= 4 and _LEN.unpack_from(raw, 0)[0] == size - 4:
            return [raw[4:]]
        return decode_bytes_raw(raw, count)
    if count * 4 > size:  # every element needs its 4-byte prefix
        return decode_bytes_raw(raw, count)
    items = _chain(raw, raw, count)
    return decode_bytes_raw(raw, count) if items is None else items


#: from this many elements, :func:`frame_texts` beats :func:`_chain`
FRAMED_FROM = 64
_SEPARATOR = "\x00" * 4


def frame_texts(raws: list[bytes], counts: list[int]) -> list[list[str]] | None:
    """The elements of several raw BYTES buffers (``counts[k]`` in ``raws[k]``), decoded
    as UTF-8, with no Python work per element; None when any buffer is not of the shape
    this handles. One call for all of a request's BYTES tensors pays numpy's per-call cost
    once.

    Handled: every element 1 to 255 bytes long and free of NUL bytes (category names and
    other short text). Then a length prefix is its length byte and three NULs, and they
    are the buffers' only NULs: their positions give every element's start, the chain of
    lengths is checked against them in one pass (and each buffer's first element against
    where that buffer starts), and the length bytes are overwritten with NUL so that each
    element is preceded by four NULs, which cannot occur elsewhere. The buffers are decoded
    at once and split at them. An element that is not valid UTF-8 on its own makes the
    whole decode fail (the next byte is a NUL, never a continuation byte), so each result
    is exactly that element's ``bytes.decode``.
    """
    total = sum(counts)
    if not raws or min(counts) < 1:
        return None
    buf = bytearray().join(raws)
    data = np.frombuffer(buf, np.uint8)
    nul = data == 0
    if np.count_nonzero(nul) != 3 * total:
        return None  # an empty or long element, or a NUL in one
    zeros = np.flatnonzero(nul)
    starts = zeros[::3]
    if not (zeros[2::3] - starts == 2).all():
        return None  # NULs that are not in triples
    starts -= 1
    ends = data[starts] + starts  # int64: the uint8 length cannot wrap
    ends += 4
    if starts[0] != 0 or ends[-1] != len(buf) or not (starts[1:] == ends[:-1]).all():
        return None  # malformed, or triples that are not the length prefixes
    if len(raws) > 1:  # each buffer's first element starts where that buffer does
        firsts = list(accumulate(counts[:-1]))
        if starts[firsts].tolist() != list(accumulate(map(len, raws[:-1]))):
            return None
    data[starts] = 0
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError:
        return None
    items = text.split(_SEPARATOR)
    if len(raws) == 1:
        del items[0]  # the buffer starts with a separator
        return [items]
    out, pos = [], 1
    for count in counts:
        out.append(items[pos : pos + count])
        pos += count
    return out


def split_text_raw(raw: bytes, count: int) -> list[str]:
    """:func:`split_bytes_raw`, each element decoded as UTF-8: what the request path needs.

    From :data:`FRAMED_FROM` elements of short text, :func:`frame_texts` splits the whole
    buffer at once. Otherwise, when the whole buffer is ASCII (every length prefix under
    128 is, and so are most category names), byte and character positions agree: the
    buffer is decoded once and each element is a slice of that text, with no bytes object
    or decode call per element. Any other buffer, malformed ones too, takes
    :func:`split_bytes_raw` and ``bytes.decode``, so results and errors (``ValueError``,
    ``UnicodeDecodeError``) are theirs.
    """
    if count >= FRAMED_FROM:
        framed = frame_texts([raw], [count])
        if framed is not None:
            return framed[0]
    if count > 1 and raw.isascii():
        items = _chain(raw, raw.decode("ascii"), count)
        if items is not None:
            return items
    return list(map(bytes.decode, split_bytes_raw(raw, count)))


def encode_bytes_raw(items: np.ndarray) -> bytes:
    """Triton's raw BYTES layout for an array of str/bytes."""
    parts: list[bytes] = []
    for item in items.ravel().tolist():
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)
