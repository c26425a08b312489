"""Categorical inputs as integer codes: the native vocabulary, the graph rewrite and the
session that runs it give exactly what the plain text path gives."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from server.datatypes import decode_bytes_raw
from server.errors import InvalidInput
from server.generated.inference import grpc_service_pb2 as pb
from server.model import DirectSession, ModelHandle, load_model
from server.oip_codec import decode_infer_request
from server.textcodes import (
    VOCABULARY,
    CodedSession,
    CodeTable,
    RewrittenModel,
    TextArray,
    rewrite_categorical,
    split_known,
)
from tests.server.modelgen import CATEGORIES

# known names, names close to them, empty, non-ASCII and NUL-bearing text
KNOWN = ["Grupo LATAM", "Sky Airline", "Copa Air", "Avianca", "N", "I", "Ñuñoa", "日本語"]
ODD = ["", "Sky airline", "Sky Airline ", "\x00", "a\x00b", "Ñ", "I" * 300]
WORD = st.one_of(st.sampled_from(KNOWN + ODD), st.text(max_size=6))


def _layout(words: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(w)) + w for w in words)


def _plain(raw: bytes, count: int) -> list[str] | None:
    try:
        return [b.decode() for b in decode_bytes_raw(raw, count)]
    except ValueError:  # malformed or not UTF-8
        return None


def _split(raw: bytes, count: int) -> tuple[list[str] | None, list[int]]:
    slots = np.full(count, -7, np.int64)
    items = VOCABULARY.split(raw, count, slots)
    return items, slots.tolist()


def test_the_native_vocabulary_is_built() -> None:
    # an install that lost its compiler would fall back silently: make that a failure here
    assert VOCABULARY is not None, (
        "server/_textcodes.c was not built: make setup needs gcc and Python's headers"
    )


def test_vocabulary_numbers_each_name_once() -> None:
    first = VOCABULARY.add("vocabulary test: α")
    assert VOCABULARY.add("vocabulary test: α") == first
    assert VOCABULARY.add("vocabulary test: β") == first + 1
    assert VOCABULARY.word(first) == "vocabulary test: α" and len(VOCABULARY) == first + 2
    with pytest.raises(TypeError):
        VOCABULARY.add(b"bytes")
    with pytest.raises(IndexError):
        VOCABULARY.word(len(VOCABULARY))


def test_split_shares_the_vocabulary_s_objects_and_numbers_unknown_names_zero() -> None:
    ids = [VOCABULARY.add(w) for w in KNOWN]
    words = [*KNOWN, "not a category", ""]
    items, slots = _split(_layout([w.encode() for w in words]), len(words))
    assert items == words
    assert all(items[i] is VOCABULARY.word(ids[i]) for i in range(len(KNOWN)))
    assert slots == [i + 1 for i in ids] + [0, 0]


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (b"\x03\x00\x00\x00ab", 1),  # element runs past the end
        (b"\x01\x00\x00", 1),  # prefix cut short
        (b"\x01\x00\x00\x00ab", 1),  # bytes after the last element
        (b"\x01\x00\x00\x00\xff", 1),  # not UTF-8
        (b"\x02\x00\x00\x00\xc3\xa9\xff\xff\xff\xff", 2),  # a length past any buffer
    ],
)
def test_split_leaves_what_it_does_not_handle_to_the_plain_decoder(raw: bytes, count: int) -> None:
    assert _plain(raw, count) is None
    assert _split(raw, count)[0] is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 6))
def test_split_is_the_plain_decoder_on_arbitrary_buffers(raw: bytes, count: int) -> None:
    assert _split(raw, count)[0] == _plain(raw, count)


@settings(max_examples=400, deadline=None)
@given(st.lists(WORD, max_size=12), st.integers(-1, 1), st.binary(max_size=2))
def test_split_is_the_plain_decoder_near_well_formed(
    words: list[str], count_delta: int, tail: bytes
) -> None:
    for w in KNOWN:
        VOCABULARY.add(w)
    raw = _layout([w.encode() for w in words]) + tail
    count = max(0, len(words) + count_delta)
    items, slots = _split(raw, count)
    assert items == _plain(raw, count)
    if items is not None:  # each slot names its element, or 0 for a name not known
        # the vocabulary is the process's: other tests' models add their categories to it
        # too, and Hypothesis draws words from the project's literals (e.g. "Sydney")
        names = {VOCABULARY.word(i) for i in range(len(VOCABULARY))}
        assert set(KNOWN) <= names
        assert [VOCABULARY.word(s - 1) if s else None for s in slots] == [
            w if w in names else None for w in items
        ]


def test_ids_of_text_items() -> None:
    known = VOCABULARY.add("Avianca")
    slots = np.full(3, -7, np.int64)
    assert VOCABULARY.ids(["Avianca", "nope", ""], slots)
    assert slots.tolist()[:2] == [known + 1, 0] and slots[2] >= 0
    with pytest.raises(UnicodeEncodeError):  # no UTF-8 form: ONNX Runtime's error too
        VOCABULARY.ids(["Avianca", "\udc80"], slots)
    # anything but str is the caller's to stringify (ONNX Runtime reads b"x" as "b'x'")
    assert not VOCABULARY.ids(["Avianca", b"Avianca"], np.zeros(2, np.int64))
    assert not VOCABULARY.ids([3], np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="int64"):
        VOCABULARY.ids(["Avianca"], np.zeros(1, np.int32))


def _one_hot_graph(zeros: int = 1, extra_reader: bool = False) -> onnx.ModelProto:
    """x (string) one-hot over three names, plus y (float) added to each column."""
    nodes = [
        helper.make_node(
            "OneHotEncoder",
            ["x"],
            ["hot"],
            domain="ai.onnx.ml",
            cats_strings=["red", "green", "blue"],
            zeros=zeros,
        ),
        helper.make_node("Reshape", ["hot", "shape"], ["flat"]),
        helper.make_node("Add", ["flat", "y"], ["out"]),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3])]
    if extra_reader:
        nodes.append(helper.make_node("Identity", ["x"], ["x_again"]))
        outputs.append(helper.make_tensor_value_info("x_again", TensorProto.STRING, [None, 1]))
    graph = helper.make_graph(
        nodes,
        "one_hot",
        [
            helper.make_tensor_value_info("x", TensorProto.STRING, [None, 1]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1]),
        ],
        outputs,
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        ir_version=8,
    )


def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_rewrite_gives_the_one_hot_graph_int64_codes() -> None:
    model = _one_hot_graph().SerializeToString()
    rewritten = rewrite_categorical(model)
    assert rewritten is not None and rewritten.categories == {"x": ("red", "green", "blue")}
    plain, coded = _session(model), _session(rewritten.model)
    assert [i.type for i in coded.get_inputs()] == ["tensor(int64)", "tensor(float)"]
    session = CodedSession(coded, {"x": CodeTable("x", ("red", "green", "blue"))})
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("x", "tensor(string)"), ("y", "tensor(float)"),
    ]  # fmt: skip
    x = np.array([["blue"], ["red"], ["purple"], [""], ["green"]], dtype=object)
    y = np.arange(5, dtype=np.float32).reshape(5, 1)
    expected = plain.run(None, {"x": x, "y": y})[0]
    assert expected[2].tolist() == [2.0, 2.0, 2.0]  # an unknown name: no column set
    np.testing.assert_array_equal(session.run(None, {"x": x, "y": y})[0], expected)


_ONE_HOT = _one_hot_graph().SerializeToString()
_COLOURS = ["red", "green", "blue", "Red", "", "vert", "ñ", "\x00"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(_COLOURS), st.text(max_size=4)), min_size=1, max_size=40),
    st.sampled_from(["raw", "text", "bytes"]),
)
def test_coded_session_is_the_plain_session_on_any_text(words: list[str], form: str) -> None:
    rewritten = rewrite_categorical(_ONE_HOT)
    assert rewritten is not None
    plain = _session(_ONE_HOT)
    coded = CodedSession(_session(rewritten.model), {"x": CodeTable("x", ("red", "green", "blue"))})
    n = len(words)
    if form == "raw":
        raw = _layout([w.encode("utf-8", "surrogatepass") for w in words])
        x = split_known(raw, n, (n, 1))
        if x is None:  # lone surrogates are not UTF-8: the plain decoder's error
            assert _plain(raw, n) is None
            return
    elif form == "text":
        x = np.array(words, dtype=object).reshape(n, 1)
    else:
        x = np.array([w.encode("utf-8", "surrogatepass") for w in words], dtype=object)
        x = x.reshape(n, 1)
    y = np.zeros((n, 1), np.float32)
    expected = plain.run(None, {"x": x, "y": y})[0]
    np.testing.assert_array_equal(coded.run(None, {"x": x, "y": y})[0], expected)


@pytest.mark.parametrize(
    "model",
    [_one_hot_graph(zeros=0), _one_hot_graph(extra_reader=True)],
    ids=["unknown-names-are-errors", "input-read-twice"],
)
def test_rewrite_leaves_graphs_it_cannot_match(model: onnx.ModelProto) -> None:
    assert rewrite_categorical(model.SerializeToString()) is None


def test_rewrite_keeps_every_other_field(model_repo: Path) -> None:
    """Only the rewritten inputs and their encoders change: the schema this module reads
    is a small part of ONNX's, and protobuf must carry the rest through untouched."""
    path = model_repo / "flights" / "1" / "model.onnx"
    original = onnx.load(path)
    rewritten = rewrite_categorical(path.read_bytes())
    assert rewritten is not None and set(rewritten.categories) == set(CATEGORIES)
    model = onnx.load_from_string(rewritten.model)
    for value in model.graph.input:
        if value.name in CATEGORIES:
            value.type.tensor_type.elem_type = TensorProto.STRING
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name == "cats_int64s":
                attribute.name, attribute.type = "cats_strings", onnx.AttributeProto.STRINGS
                attribute.strings.extend(c.encode() for c in rewritten.categories[node.input[0]])
                del attribute.ints[:]
    assert model == original


def _rows(n: int, seed: int) -> dict[str, list[str] | list[float]]:
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for name, cats in CATEGORIES.items():
        pool = [*cats, "", "unknown", "Ñuñoa", cats[0].lower()]
        cols[name] = [pool[i] for i in rng.integers(0, len(pool), n)]
    cols["MES"] = rng.integers(1, 13, n).astype(np.float32).tolist()
    cols["DIA"] = rng.integers(1, 32, n).astype(np.float32).tolist()
    return cols


def _raw_request(cols: dict[str, Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="flights")
    for name, values in cols.items():
        n = len(values)
        if name in CATEGORIES:
            request.inputs.add(name=name, datatype="BYTES", shape=[n, 1])
            request.raw_input_contents.append(_layout([v.encode() for v in values]))
        else:
            request.inputs.add(name=name, datatype="FP32", shape=[n, 1])
            request.raw_input_contents.append(np.asarray(values, np.float32).tobytes())
    return request


@pytest.fixture(scope="module")
def handles(model_repo: Path) -> tuple[ModelHandle, ModelHandle]:
    path = model_repo / "flights" / "1"
    coded = load_model("flights", 1, path)
    plain = load_model("flights", 1, path, category_codes=False)
    assert isinstance(coded.session, CodedSession)
    assert isinstance(plain.session, DirectSession)
    assert isinstance(plain.session.session, ort.InferenceSession)
    return coded, plain


def test_a_coded_model_describes_the_same_inputs(handles: tuple[ModelHandle, ModelHandle]) -> None:
    coded, plain = handles
    assert coded.inputs == plain.inputs and coded.outputs == plain.outputs
    assert coded.features == plain.features
    assert {n: s.datatype.name for n, s in coded.inputs.items() if n in CATEGORIES} == {
        n: "BYTES" for n in CATEGORIES
    }


@pytest.mark.parametrize("rows", [1, 2, 3, 64, 256])
@pytest.mark.parametrize("form", ["raw request", "object arrays", "sliced"])
def test_coded_model_gives_exactly_the_plain_model_s_outputs(
    handles: tuple[ModelHandle, ModelHandle], rows: int, form: str
) -> None:
    coded, plain = handles
    cols = _rows(rows, seed=rows)
    if form == "raw request":
        decoded = decode_infer_request(_raw_request(cols), 1 << 20, 1 << 20)
        feeds = {t.name: t.data for t in decoded.inputs}
        if rows > 1:  # decoded with each element's vocabulary slot
            assert all(type(feeds[n]) is TextArray for n in CATEGORIES)
    else:
        feeds = {
            name: np.asarray(values, dtype=object if name in CATEGORIES else np.float32).reshape(
                -1, 1
            )
            for name, values in cols.items()
        }
    if form == "sliced":  # a view of a decoded array carries no slots and is looked up
        wide = decode_infer_request(_raw_request(_rows(rows + 2, 7)), 1 << 20, 1 << 20)
        for t in wide.inputs:
            if t.name in CATEGORIES:
                feeds[t.name] = t.data[1 : rows + 1]
                assert feeds[t.name].slots is None
    outputs = plain.output_names
    expected = plain.run(feeds, outputs)
    got = coded.run(feeds, outputs)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rows", [1, 3])
def test_text_without_a_utf8_form_fails_as_in_onnx_runtime(
    handles: tuple[ModelHandle, ModelHandle], rows: int
) -> None:
    coded, plain = handles
    feeds = plain.sample_feeds(rows)
    feeds["OPERA"] = np.array(["\udc80", "Avianca", "x"][:rows], dtype=object).reshape(rows, 1)
    for handle in (plain, coded):
        with pytest.raises(UnicodeEncodeError):
            handle.run(feeds, handle.output_names)


@pytest.mark.parametrize("rows", [1, 3])
def test_values_that_are_not_str_count_as_onnx_runtime_reads_them(
    handles: tuple[ModelHandle, ModelHandle], rows: int
) -> None:
    """ONNX Runtime reads any other object in a string tensor as ``str(object)``."""
    coded, plain = handles
    feeds = plain.sample_feeds(rows)
    values: list[object] = [b"Avianca", 3, "Avianca"][:rows] if rows > 1 else [b"Avianca"]
    feeds["OPERA"] = np.array(values, dtype=object).reshape(rows, 1)
    outputs = plain.output_names
    for a, b in zip(coded.run(feeds, outputs), plain.run(feeds, outputs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_count_the_buffer_cannot_hold_allocates_nothing() -> None:
    """A few bytes that claim millions of elements must not make the worker allocate for
    them: refused before any list or id array is built."""
    import tracemalloc

    raw = _layout([b"N"])
    tracemalloc.start()
    try:
        assert split_known(raw, 50_000_000, (50_000_000, 1)) is None
        slots = np.empty(1, np.int64)
        assert VOCABULARY.split(raw, 50_000_000, slots) is None  # the native check alone
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(InvalidInput, match="OPERA"):  # the plain decoder's error, as before
        decode_infer_request(_huge_shape_request(raw), 1 << 30, 1 << 30)


def _huge_shape_request(raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="flights")
    request.inputs.add(name="OPERA", datatype="BYTES", shape=[50_000_000, 1])
    request.raw_input_contents.append(raw)
    return request


def test_split_known_shapes_and_steps_aside() -> None:
    raw = _layout([b"N", b"I", b"zz", b"N"])
    data = split_known(raw, 4, (2, 2))
    assert data is not None and data.shape == (2, 2) and data.tolist() == [["N", "I"], ["zz", "N"]]
    assert data.slots is not None and data.slots[2] == 0 and data.slots[0] == data.slots[3] > 0
    assert not data.flags.writeable  # an edit would leave the slots describing old text
    assert split_known(raw + b"\x00", 4, (4, 1)) is None


def test_a_rewrite_onnx_runtime_refuses_leaves_the_model_as_it_is(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.model

    broken = RewrittenModel(b"not a graph", {"OPERA": ("Avianca",)})
    monkeypatch.setattr(server.model, "rewrite_categorical", lambda _: broken)
    handle = load_model("flights", 1, model_repo / "flights" / "1")
    assert isinstance(handle.session, DirectSession)
    assert handle.run(handle.sample_feeds(2), handle.output_names)[0].shape[0] == 2
