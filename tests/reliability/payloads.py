"""Building blocks of the bad-input corpus: the case record, good requests taken from the
load-test request files, and edits that change a good request in exactly one way."""

from __future__ import annotations

import copy
import functools
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from server.generated.inference import grpc_service_pb2 as pb
from server.generated.pronto.v1 import prediction_pb2 as ppb

__all__ = [
    "DATA",
    "INFER",
    "MES",
    "MODEL",
    "OPERA",
    "PREDICT",
    "REST_INFER",
    "REST_PREDICT",
    "C",
    "Case",
    "as_raw",
    "bytes_value",
    "drop_input",
    "fp32_values",
    "good_infer",
    "good_predict",
    "good_rest_predict",
    "infer_body",
    "nested",
    "predict_body",
    "raw_edit",
    "rest_form_body",
    "rest_infer_body",
    "rest_predict_body",
    "set_at",
    "struct_value",
    "tensor",
    "with_datatype",
    "with_shape",
]

DATA = Path(__file__).resolve().parents[2] / "loadtest" / "data"
MODEL = "flight-delay"
INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/pronto.v1.PredictionService/Predict"
REST_INFER = f"/v2/models/{MODEL}/infer"
REST_PREDICT = f"/v1/models/{MODEL}:predict"

C = grpc.StatusCode


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str  # "grpc" or "rest"
    target: str  # gRPC method path, or "METHOD /path"
    body: bytes
    expect: C | int
    #: {"auth": ...}: send the valid API key; otherwise exactly these headers
    headers: dict[str, str] = field(default_factory=lambda: {"auth": "key"})
    #: a known server bug fails this case today: the test runs it as a strict xfail
    bug: str = ""


@functools.cache
def _infer_json() -> dict[str, Any]:
    first: dict[str, Any] = json.loads((DATA / "oip.json").read_text())[0]
    return first


@functools.cache
def _predict_json() -> dict[str, Any]:
    first: dict[str, Any] = json.loads((DATA / "predict.json").read_text())[0]
    return first


def good_infer() -> pb.ModelInferRequest:
    return json_format.ParseDict(_infer_json(), pb.ModelInferRequest())


def good_predict() -> ppb.PredictRequest:
    return json_format.ParseDict(_predict_json(), ppb.PredictRequest())


def tensor(req: pb.ModelInferRequest, name: str) -> Any:
    return next(t for t in req.inputs if t.name == name)


def infer_body(edit: Callable[[pb.ModelInferRequest], None]) -> bytes:
    req = good_infer()
    edit(req)
    return req.SerializeToString()


def as_raw(req: pb.ModelInferRequest) -> pb.ModelInferRequest:
    """The same request with every tensor in ``raw_input_contents``."""
    for t in req.inputs:
        if t.datatype == "BYTES":
            items = list(t.contents.bytes_contents)
            raw = b"".join(struct.pack("<I", len(b)) + b for b in items)
        else:
            import numpy as np

            raw = np.array(t.contents.fp32_contents, dtype="<f4").tobytes()
        req.raw_input_contents.append(raw)
        t.ClearField("contents")
    return req


def predict_body(edit: Callable[[ppb.PredictRequest], None]) -> bytes:
    req = good_predict()
    edit(req)
    return req.SerializeToString()


def rest_infer_body(edit: Callable[[dict[str, Any]], None]) -> bytes:
    body = copy.deepcopy(_infer_json())
    body.pop("model_name", None)
    edit(body)
    return json.dumps(body).encode()


def rest_form_body(edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The good infer request in the protocol's REST form (values in ``data``)."""
    good = good_infer()
    body: dict[str, Any] = {"inputs": []}
    for t in good.inputs:
        values: list[Any] = (
            [b.decode() for b in t.contents.bytes_contents]
            if t.datatype == "BYTES"
            else list(t.contents.fp32_contents)
        )
        body["inputs"].append(
            {"name": t.name, "shape": list(t.shape), "datatype": t.datatype, "data": values}
        )
    edit(body)
    return json.dumps(body).encode()


def good_rest_predict() -> bytes:
    return rest_predict_body(lambda b: None)


def rest_predict_body(edit: Callable[[dict[str, Any]], None]) -> bytes:
    body = copy.deepcopy(_predict_json())
    body.pop("name", None)
    edit(body)
    return json.dumps(body).encode()


def set_at(path: list[Any], value: Any) -> Callable[[Any], None]:
    def edit(obj: Any) -> None:
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value

    return edit


def _input_index(name: str) -> int:
    return next(i for i, t in enumerate(_infer_json()["inputs"]) if t["name"] == name)


MES = _input_index("MES")
OPERA = _input_index("OPERA")


def fp32_values(name: str, values: list[float]) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        t = tensor(req, name)
        del t.contents.fp32_contents[:]
        t.contents.fp32_contents.extend(values)

    return edit


def with_shape(name: str, shape: list[int]) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        t = tensor(req, name)
        del t.shape[:]
        t.shape.extend(shape)

    return edit


def with_datatype(name: str, datatype: str) -> Callable[[pb.ModelInferRequest], None]:
    return lambda req: setattr(tensor(req, name), "datatype", datatype)


def bytes_value(name: str, value: bytes) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        t = tensor(req, name)
        t.contents.bytes_contents[0] = value

    return edit


def raw_edit(fn: Callable[[pb.ModelInferRequest], None]) -> Callable[[pb.ModelInferRequest], None]:
    return lambda req: fn(as_raw(req))


def drop_input(name: str) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        keep = [t for t in req.inputs if t.name != name]
        del req.inputs[:]
        req.inputs.extend(keep)

    return edit


def struct_value(feature: str, value: Any) -> Callable[[ppb.PredictRequest], None]:
    def edit(req: ppb.PredictRequest) -> None:
        req.instances[0].update({feature: value})

    return edit


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()
