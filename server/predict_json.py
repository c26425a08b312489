"""REST Predict: the JSON body parsed in the worker, the JSON reply written by it.

The gateway passes ``POST /v1/models/{name}:predict`` bodies through untouched
(``PredictJson`` takes a ``google.api.HttpBody``) instead of transcoding them into a
``PredictRequest``: Envoy's JSON-to-protobuf transcoding of 256 rows cost more CPU than the
whole prediction, and the server then had to read every value back out of a
``google.protobuf.Struct``. Here orjson parses the body into plain lists and dicts, which the
feature decoder (:mod:`server.features`) takes as they are, and the reply is the JSON form
of ``PredictResponse`` (proto field names, every field printed), as the transcoder wrote it.

The body is held to what the transcoder accepted: a JSON object with the fields of
``PredictRequest`` (an unknown one is refused by name), strings where the message has
strings, a list of objects for ``instances`` and an object for ``inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from server.errors import InvalidInput
from server.features import Columns, columns_of, json_kind
from server.predict_codec import field

if TYPE_CHECKING:
    from server.core import Prediction

__all__ = [
    "JSON_CONTENT_TYPE",
    "HttpBodyReply",
    "JsonReply",
    "PredictBody",
    "parse_predict_body",
    "plain_json",
    "predict_json",
]

JSON_CONTENT_TYPE = "application/json"
_MESSAGE = "pronto.v1.PredictRequest"
_FIELDS = frozenset(("name", "version", "instances", "inputs", "id"))

# google.api.HttpBody: content_type = 1, data = 2 (both length-delimited)
_CONTENT_TYPE_TAG = b"\x0a"
_DATA_TAG = b"\x12"
_JSON_FIELD = _CONTENT_TYPE_TAG + bytes([len(JSON_CONTENT_TYPE)]) + JSON_CONTENT_TYPE.encode()


@dataclass(frozen=True, slots=True)
class PredictBody:
    """What a REST Predict body asks for."""

    version: str
    rows: list[dict[str, Any]] | Columns
    id: str


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:  # absent, or JSON null: the field's default
        return ""
    if type(value) is not str:
        raise InvalidInput(f"{key} must be a string, got {json_kind(value)}", "request")
    return value


def parse_predict_body(name: str, data: bytes) -> PredictBody:
    """The request a REST Predict body carries; raises :class:`InvalidInput` with the reason
    for anything ``PredictRequest``'s JSON form does not allow."""
    if not data or data.isspace():  # no copy of a large body
        body: Any = {}
    else:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}", "decode") from None
    if type(body) is not dict:
        raise InvalidInput(f"request body must be a JSON object, got {json_kind(body)}", "request")
    if not body.keys() <= _FIELDS:
        unknown = sorted(body.keys() - _FIELDS)[0]
        raise InvalidInput(f'unknown field "{unknown}" in {_MESSAGE}', "unknown_field")
    named = _string(body, "name")
    if named and named != name:
        raise InvalidInput(
            f'name "{named}" in the body differs from "{name}" in the path', "request"
        )
    instances = body.get("instances")
    inputs = body.get("inputs")
    rows: list[dict[str, Any]] | Columns
    if instances is None:
        instances = []
    elif type(instances) is not list:
        raise InvalidInput(f"instances must be a list, got {json_kind(instances)}", "request")
    if inputs is not None:
        if type(inputs) is not dict:
            raise InvalidInput(f"inputs must be an object, got {json_kind(inputs)}", "request")
        if instances:
            raise InvalidInput("send either instances or inputs, not both", "request")
        rows = columns_of(inputs)
    else:
        for i, instance in enumerate(instances):
            if type(instance) is not dict:
                raise InvalidInput(
                    f"instance {i} must be an object, got {json_kind(instance)}", "request"
                )
        rows = instances
    return PredictBody(_string(body, "version"), rows, _string(body, "id"))


def plain_json(result: Prediction) -> bytes:
    """The reply built from one dict per row (the reference for :func:`predict_json`)."""
    classes = result.classes
    return orjson.dumps(
        {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "predictions": [
                {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
                for label, row in zip(result.labels, result.probabilities.tolist(), strict=True)
            ],
            "id": result.id,
        }
    )


def predict_json(result: Prediction) -> bytes:
    """The JSON form of ``PredictResponse`` for ``result``.

    A dict per row and per probability map cost about a microsecond a row, more than the
    rest of the reply. Every row has the same shape, so its text is fixed pieces (the
    label's head, each class's key) around the probabilities; orjson writes each class's
    column of probabilities at once, and the pieces are interleaved by list slicing.
    """
    dumps = orjson.dumps
    labels = result.labels
    rows = len(labels)
    head = b'{"model_name":%b,"model_version":%b,"predictions":[' % (
        dumps(result.model_name),
        dumps(result.model_version),
    )
    tail = b'],"id":%b}' % dumps(result.id)
    if rows == 0:
        return head + tail
    classes = result.classes
    # per row: the label's head, then a key and a value per class, then the row's end
    width = 2 * len(classes) + 2
    parts: list[bytes] = [b""] * (rows * width)
    heads = {label: b'{"label":%b,"probabilities":{' % dumps(label) for label in set(labels)}
    parts[0::width] = map(heads.__getitem__, labels)
    columns = np.ascontiguousarray(result.probabilities.T, dtype=np.float64)
    for j, name in enumerate(classes):
        parts[2 * j + 1 :: width] = [(b",%b:" if j else b"%b:") % dumps(name)] * rows
        parts[2 * j + 2 :: width] = dumps(columns[j], option=orjson.OPT_SERIALIZE_NUMPY)[
            1:-1
        ].split(b",")
    parts[width - 1 :: width] = [b"}},"] * rows
    parts[-1] = b"}}"
    return head + b"".join(parts) + tail


class HttpBodyReply:
    """A reply that serialises as a ``google.api.HttpBody`` (its content type and bytes),
    naming the model and version it is about, for the request metrics."""

    __slots__ = ("content_type", "data", "model_name", "model_version")

    def __init__(
        self,
        data: bytes,
        model_name: str,
        model_version: str = "",
        content_type: str = JSON_CONTENT_TYPE,
    ) -> None:
        self.data = data
        self.model_name = model_name
        self.model_version = model_version
        self.content_type = content_type

    def SerializeToString(self) -> bytes:
        if self.content_type == JSON_CONTENT_TYPE:
            head = _JSON_FIELD
        else:
            kind = self.content_type.encode()
            head = _CONTENT_TYPE_TAG + bytes([len(kind)]) + kind
        return head + field(_DATA_TAG, self.data)

    @staticmethod
    def serialize(reply: HttpBodyReply) -> bytes:
        """The gRPC response serializer of the methods that answer one."""
        return reply.SerializeToString()


class JsonReply(HttpBodyReply):
    """``PredictJson``'s reply: the JSON form of ``PredictResponse``."""

    __slots__ = ()

    def __init__(self, result: Prediction) -> None:
        super().__init__(predict_json(result), result.model_name, result.model_version)
