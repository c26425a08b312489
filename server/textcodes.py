"""Categorical inputs as integer codes: ONNX Runtime without string tensors.

A scikit-learn pipeline exported by skl2onnx one-hot encodes each categorical column with
an ``ai.onnx.ml.OneHotEncoder`` over the column's category names. ONNX Runtime spends most
of a batch's time on those string tensors (converting each Python str to a C++ string,
then comparing strings). :func:`rewrite_categorical` gives the same graph with each such
input taking ``int64`` codes instead (the encoder's ``cats_strings`` become ``cats_int64s``
0..k-1), and :class:`CodedSession` runs it: it maps the request's text to codes through
one process-wide :data:`VOCABULARY` of every category name the loaded models know, then
runs the rewritten graph. A name outside the encoder's categories gets a code outside them
too, which the encoder turns into the same all-zero row as the unknown string. Clients
see no difference: the model's inputs are still BYTES.

The vocabulary is native (``server/_textcodes.c``). With it the request decoder splits a
raw BYTES buffer into the vocabulary's own str objects (no allocation for a known name)
and each element's vocabulary slot at once (:func:`split_known`), so a model run needs no
string work at all; text that arrives otherwise (typed ``bytes_contents``, REST) is looked
up in one native pass. Without the extension (an install with no C compiler) nothing is
rewritten and every path works on text as before.

The graph is edited through a minimal description of ONNX's protobuf schema (only the
fields read or changed here): protobuf keeps every other field as it was, so the package
``onnx`` is not needed at serving time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

try:
    from server._textcodes import Vocabulary
except ImportError:  # built without a C compiler: text stays text
    Vocabulary = None

__all__ = [
    "VOCABULARY",
    "CodeTable",
    "CodedSession",
    "RewrittenModel",
    "TextArray",
    "rewrite_categorical",
    "split_known",
]

log = logging.getLogger(__name__)

#: every category name of every rewritten model input, numbered in the order they were
#: added; None when the native extension is not built
VOCABULARY: Any = Vocabulary() if Vocabulary is not None else None


class TextArray(np.ndarray):  # type: ignore[type-arg]
    """An object array of str that also carries each element's :data:`VOCABULARY` slot
    (the name's id + 1; 0 for a name not in the vocabulary).

    ``slots`` belongs to the array as decoded, which is read-only so that they keep
    describing it; any copy, view or result derived from it (a slice, a concatenation) has
    ``slots`` None and is looked up again when a model needs codes.
    """

    slots: np.ndarray | None = None


def split_known(raw: bytes, count: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The ``count`` elements of a raw BYTES buffer as a :class:`TextArray` of ``shape``;
    None when the vocabulary is not built or the buffer is one it leaves to the plain
    decoder (malformed, or not UTF-8), which then raises its precise error."""
    if VOCABULARY is None or count * 4 > len(raw):
        # every element needs its 4-byte prefix: a shape the buffer cannot hold allocates
        # nothing here, and the plain decoder says what is wrong
        return None
    slots = np.empty(count, np.int64)
    items = VOCABULARY.split(raw, count, slots)
    if items is None:
        return None
    data = np.array(items, dtype=object).reshape(shape).view(TextArray)
    data.slots = slots
    data.flags.writeable = False  # the slots must keep describing the elements
    return data


class CodeTable:
    """One rewritten input: the encoder's code of each vocabulary slot, -1 for a name
    that is not one of its categories."""

    def __init__(self, name: str, categories: Sequence[str]) -> None:
        self.name = name
        self.categories = tuple(categories)
        ids = [VOCABULARY.add(c) for c in self.categories]
        # slot 0 is "unknown", and every slot numbered after this table was built is
        # clipped onto the last entry: neither can be one of these names
        self._codes = np.full(len(VOCABULARY) + 2, -1, np.int64)
        self._codes[np.asarray(ids, np.int64) + 1] = np.arange(len(ids), dtype=np.int64)
        self._by_name = {category: code for code, category in enumerate(self.categories)}
        # one row's codes, ready made (read-only: ONNX Runtime only reads its inputs);
        # the last is "unknown", at index -1
        self._cells = np.append(np.arange(len(ids), dtype=np.int64), -1).reshape(-1, 1, 1)
        self._cells.flags.writeable = False

    def codes(self, data: np.ndarray) -> np.ndarray:
        """``data`` (any shape) as int64 codes of the same shape. An element that is not a
        str counts as ``str(element)``, as ONNX Runtime reads it in a string tensor."""
        slots = data.slots if type(data) is TextArray else None
        if slots is None or slots.size != data.size:
            if data.shape == (1, 1):  # one row: a dict lookup beats any array work
                item = data.item()
                text = item if isinstance(item, str) else str(item)
                code = self._by_name.get(text, -1)
                if code < 0:
                    text.encode()  # lone surrogates raise here, as in ONNX Runtime
                return self._cells[code]  # type: ignore[no-any-return]
            items = data.ravel().tolist()
            slots = np.empty(len(items), np.int64)
            if not VOCABULARY.ids(items, slots):
                VOCABULARY.ids([x if isinstance(x, str) else str(x) for x in items], slots)
        return self._codes.take(slots, mode="clip").reshape(data.shape)


@dataclass(frozen=True, slots=True)
class _Arg:
    """What :func:`server.model._tensor_specs` reads of an ONNX Runtime input."""

    name: str
    type: str
    shape: list[Any]


class CodedSession:
    """An ONNX Runtime session over a rewritten graph that is called with text, as the
    original graph is (``run``, ``get_inputs``, ``get_outputs`` of ``InferenceSession``)."""

    def __init__(self, session: Any, tables: dict[str, CodeTable]) -> None:
        self.session = session
        self.tables = tables
        self._inputs = [
            _Arg(a.name, "tensor(string)", a.shape) if a.name in tables else a
            for a in session.get_inputs()
        ]

    def get_inputs(self) -> list[Any]:
        return list(self._inputs)

    def get_outputs(self) -> list[Any]:
        return self.session.get_outputs()  # type: ignore[no-any-return]

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[Any]:
        coded = dict(feeds)
        for name, table in self.tables.items():
            data = feeds.get(name)
            if data is not None:  # a missing input is ONNX Runtime's error to raise
                coded[name] = table.codes(data)
        return self.session.run(outputs, coded)  # type: ignore[no-any-return]


# ONNX's protobuf schema, only the fields read or written here (proto2, like onnx.proto)
_ONNX_STRING = 8
_ONNX_INT64 = 7
_ATTRIBUTE_INTS = 7
_ATTRIBUTE_GRAPH_KINDS = (5, 10)  # GRAPH, GRAPHS: subgraphs are not looked into
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


@cache
def _schema() -> dict[str, Any]:
    f = descriptor_pb2.FileDescriptorProto(
        name="pronto_onnx_subset.proto", package="pronto_onnx_subset", syntax="proto2"
    )
    kinds = descriptor_pb2.FieldDescriptorProto
    scalar = {
        "string": kinds.TYPE_STRING,
        "bytes": kinds.TYPE_BYTES,
        "int64": kinds.TYPE_INT64,
        "int32": kinds.TYPE_INT32,
    }
    messages = {
        "Model": [("graph", 7, "Graph", False)],
        "Graph": [
            ("node", 1, "Node", True),
            ("initializer", 5, "Tensor", True),
            ("input", 11, "ValueInfo", True),
            ("output", 12, "ValueInfo", True),
        ],
        "Node": [
            ("input", 1, "string", True),
            ("op_type", 4, "string", False),
            ("attribute", 5, "Attribute", True),
            ("domain", 7, "string", False),
        ],
        "Attribute": [
            ("name", 1, "string", False),
            ("i", 3, "int64", False),
            ("ints", 8, "int64", True),
            ("strings", 9, "bytes", True),
            ("type", 20, "int32", False),
        ],
        "Tensor": [("data_location", 14, "int32", False)],
        "ValueInfo": [("name", 1, "string", False), ("type", 2, "Type", False)],
        "Type": [("tensor_type", 1, "TensorType", False)],
        "TensorType": [("elem_type", 1, "int32", False)],
    }
    for name, fields in messages.items():
        message = f.message_type.add(name=name)
        for field, number, kind, repeated in fields:
            label = kinds.LABEL_REPEATED if repeated else kinds.LABEL_OPTIONAL
            if kind in scalar:
                message.field.add(name=field, number=number, label=label, type=scalar[kind])
            else:
                message.field.add(
                    name=field,
                    number=number,
                    label=label,
                    type=kinds.TYPE_MESSAGE,
                    type_name=f".pronto_onnx_subset.{kind}",
                )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"pronto_onnx_subset.{name}")
        )
        for name in messages
    }


@dataclass(frozen=True, slots=True)
class RewrittenModel:
    model: bytes  #: the serialized graph with int64 inputs
    categories: dict[str, tuple[str, ...]]  #: rewritten input -> its category names


def rewrite_categorical(model_bytes: bytes) -> RewrittenModel | None:
    """The graph with every string input that only a ``OneHotEncoder`` reads (zeros=1,
    string categories, UTF-8, no duplicates) taking int64 codes; None when no input
    qualifies or the graph is one this leaves alone (subgraphs, external data)."""
    model = _schema()["Model"]()
    model.ParseFromString(model_bytes)
    graph = model.graph
    if any(t.data_location == _EXTERNAL for t in graph.initializer):
        return None  # loaded from bytes, external data would not be found
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        if any(a.type in _ATTRIBUTE_GRAPH_KINDS for a in node.attribute):
            return None
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rewritten: dict[str, tuple[str, ...]] = {}
    for value in graph.input:
        if value.type.tensor_type.elem_type != _ONNX_STRING or value.name in outputs:
            continue
        nodes = readers.get(value.name, [])
        if len(nodes) != 1:
            continue
        node = nodes[0]
        if (
            node.op_type != "OneHotEncoder"
            or node.domain != "ai.onnx.ml"
            or list(node.input) != [value.name]
        ):
            continue
        attributes = {a.name: a for a in node.attribute}
        cats = attributes.get("cats_strings")
        zeros = attributes.get("zeros")
        if cats is None or "cats_int64s" in attributes or (zeros is not None and zeros.i != 1):
            continue
        try:
            names = tuple(c.decode("utf-8") for c in cats.strings)
        except UnicodeDecodeError:
            continue
        if not names or len(set(names)) != len(names):
            continue
        cats.name = "cats_int64s"
        cats.type = _ATTRIBUTE_INTS
        del cats.strings[:]
        cats.ints.extend(range(len(names)))
        value.type.tensor_type.elem_type = _ONNX_INT64
        rewritten[value.name] = names
    if not rewritten:
        return None
    return RewrittenModel(model.SerializeToString(), rewritten)
