"""The bad-input corpus: malformed gRPC and REST requests, each with its expected status.

Every case is data: a protocol, a target, the exact bytes (or JSON) sent, the headers,
and the status a client must get. Cases are built from the load-test request files so
they differ from a good request in exactly one way.
"""

from __future__ import annotations

import base64
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
    "CASES",
    "MODEL",
    "NUMERIC_CONTAINER",
    "Case",
    "good_infer",
    "good_predict",
    "good_rest_predict",
]

# grpc.aio decodes the request before the servicer runs; a DecodeError there becomes UNKNOWN
# with the exception's class in the message, and a traceback at ERROR in the worker's log.
UNDECODABLE = (
    "server: undecodable protobuf answers UNKNOWN (not INVALID_ARGUMENT) and logs a traceback"
)
NUMERIC_CONTAINER = "server/features.py: a list or object for a numeric feature escapes as INTERNAL"
LENIENT_CATEGORY = "server/features.py: a list or a boolean is accepted as a category value"

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
    #: a known server bug makes this case fail today (the test is a strict xfail)
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


def _tensor(req: pb.ModelInferRequest, name: str) -> Any:
    return next(t for t in req.inputs if t.name == name)


def _infer(edit: Callable[[pb.ModelInferRequest], None]) -> bytes:
    req = good_infer()
    edit(req)
    return req.SerializeToString()


def _raw(req: pb.ModelInferRequest) -> pb.ModelInferRequest:
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


def _predict(edit: Callable[[ppb.PredictRequest], None]) -> bytes:
    req = good_predict()
    edit(req)
    return req.SerializeToString()


def _rest_infer(edit: Callable[[dict[str, Any]], None]) -> bytes:
    body = copy.deepcopy(_infer_json())
    body.pop("model_name", None)
    edit(body)
    return json.dumps(body).encode()


def good_rest_predict() -> bytes:
    return _rest_predict(lambda b: None)


def _rest_predict(edit: Callable[[dict[str, Any]], None]) -> bytes:
    body = copy.deepcopy(_predict_json())
    body.pop("name", None)
    edit(body)
    return json.dumps(body).encode()


def _set(path: list[Any], value: Any) -> Callable[[Any], None]:
    def edit(obj: Any) -> None:
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value

    return edit


def _input_index(name: str) -> int:
    return next(i for i, t in enumerate(_infer_json()["inputs"]) if t["name"] == name)


MES = _input_index("MES")
OPERA = _input_index("OPERA")


def _fp32(name: str, values: list[float]) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        t = _tensor(req, name)
        del t.contents.fp32_contents[:]
        t.contents.fp32_contents.extend(values)

    return edit


def _shape(name: str, shape: list[int]) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        t = _tensor(req, name)
        del t.shape[:]
        t.shape.extend(shape)

    return edit


def _datatype(name: str, datatype: str) -> Callable[[pb.ModelInferRequest], None]:
    return lambda req: setattr(_tensor(req, name), "datatype", datatype)


def _bytes_value(name: str, value: bytes) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        t = _tensor(req, name)
        t.contents.bytes_contents[0] = value

    return edit


def _raw_edit(fn: Callable[[pb.ModelInferRequest], None]) -> Callable[[pb.ModelInferRequest], None]:
    return lambda req: fn(_raw(req))


def _drop_input(name: str) -> Callable[[pb.ModelInferRequest], None]:
    def edit(req: pb.ModelInferRequest) -> None:
        keep = [t for t in req.inputs if t.name != name]
        del req.inputs[:]
        req.inputs.extend(keep)

    return edit


def _struct_value(feature: str, value: Any) -> Callable[[ppb.PredictRequest], None]:
    def edit(req: ppb.PredictRequest) -> None:
        req.instances[0].update({feature: value})

    return edit


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def _grpc_cases() -> list[Case]:
    bad = C.INVALID_ARGUMENT
    whole = good_infer().SerializeToString()

    def infer(id: str, edit: Callable[[pb.ModelInferRequest], None], expect: C = bad) -> Case:
        return Case(f"grpc-infer-{id}", "grpc", INFER, _infer(edit), expect)

    def predict(id: str, edit: Callable[[ppb.PredictRequest], None], expect: C = bad) -> Case:
        return Case(f"grpc-predict-{id}", "grpc", PREDICT, _predict(edit), expect)

    def raw_short(req: pb.ModelInferRequest) -> None:
        req.raw_input_contents[MES] = req.raw_input_contents[MES][:-1]

    def raw_bytes_prefix(req: pb.ModelInferRequest) -> None:
        req.raw_input_contents[OPERA] = struct.pack("<I", 1000) + b"abc"

    def raw_bad_utf8(req: pb.ModelInferRequest) -> None:
        req.raw_input_contents[OPERA] = struct.pack("<I", 2) + b"\xc3\x28"

    def duplicate(req: pb.ModelInferRequest) -> None:
        req.inputs.append(copy.deepcopy(req.inputs[MES]))

    def extra(req: pb.ModelInferRequest) -> None:
        t = req.inputs.add(name="EXTRA", datatype="FP32", shape=[1, 1])
        t.contents.fp32_contents.append(1.0)

    def both(req: pb.ModelInferRequest) -> None:
        _raw(req).inputs[MES].contents.fp32_contents.append(1.0)

    def unknown_output(req: pb.ModelInferRequest) -> None:
        del req.outputs[:]
        req.outputs.add(name="no_such_output")

    return [
        infer("unknown-datatype", _datatype("MES", "FP99")),
        infer("datatype-mismatch-fp64", _datatype("MES", "FP64")),
        infer("datatype-int32-no-values", _datatype("MES", "INT32")),
        infer("bytes-sent-as-fp32", _datatype("OPERA", "FP32")),
        infer("too-few-values", _fp32("MES", [])),
        infer("too-many-values", _fp32("MES", [1.0, 2.0])),
        infer("rank-1", _shape("MES", [1])),
        infer("rank-3", _shape("MES", [1, 1, 1])),
        infer("no-shape", _shape("MES", [])),
        infer("negative-dim", _shape("MES", [-1, 1])),
        infer("huge-dims", _shape("MES", [2**40, 2**20])),
        infer("int64-max-dim", _shape("MES", [2**63 - 1, 1])),
        infer("zero-batch", _shape("MES", [0, 1])),
        infer("batch-mismatch", lambda r: (_shape("MES", [2, 1])(r), _fp32("MES", [1, 2])(r))),
        infer("nan", _fp32("MES", [float("nan")])),
        infer("plus-inf", _fp32("hour", [float("inf")])),
        infer("minus-inf", _fp32("high_season", [float("-inf")])),
        infer("raw-wrong-length", _raw_edit(raw_short)),
        infer("raw-count-mismatch", _raw_edit(lambda r: r.raw_input_contents.pop())),
        infer("raw-and-contents", both),
        infer("raw-bytes-bad-prefix", _raw_edit(raw_bytes_prefix)),
        infer("raw-bytes-invalid-utf8", _raw_edit(raw_bad_utf8)),
        infer(
            "raw-nan",
            _raw_edit(
                lambda r: r.raw_input_contents.__setitem__(MES, struct.pack("<f", float("nan")))
            ),
        ),
        infer("invalid-utf8", _bytes_value("OPERA", b"\xff\xfe")),
        infer("lone-surrogate-utf8", _bytes_value("OPERA", b"\xed\xa0\x80")),
        infer("missing-input", _drop_input("MES")),
        infer("unknown-input", extra),
        infer("duplicate-input", duplicate),
        infer("no-inputs", lambda r: r.ClearField("inputs")),
        infer("unknown-output", unknown_output),
        infer("unknown-model", lambda r: setattr(r, "model_name", "no-such-model"), C.NOT_FOUND),
        infer("unknown-version", lambda r: setattr(r, "model_version", "99"), C.NOT_FOUND),
        infer("non-numeric-version", lambda r: setattr(r, "model_version", "v1"), C.NOT_FOUND),
        Case(
            "grpc-infer-truncated-protobuf",
            "grpc",
            INFER,
            whole[: len(whole) // 2],
            bad,
            bug=UNDECODABLE,
        ),
        Case("grpc-infer-garbage-protobuf", "grpc", INFER, b"\xff" * 64, bad, bug=UNDECODABLE),
        Case("grpc-infer-empty-message", "grpc", INFER, b"", bad),
        Case(
            "grpc-infer-5mb-message",
            "grpc",
            INFER,
            _infer(_bytes_value("OPERA", b"x" * (5 * 2**20))),
            C.RESOURCE_EXHAUSTED,
        ),
        Case("grpc-infer-no-credentials", "grpc", INFER, whole, C.UNAUTHENTICATED, {}),
        Case(
            "grpc-infer-wrong-api-key",
            "grpc",
            INFER,
            whole,
            C.UNAUTHENTICATED,
            {"x-api-key": "k-not-a-key"},
        ),
        Case(
            "grpc-infer-malformed-jwt",
            "grpc",
            INFER,
            whole,
            C.UNAUTHENTICATED,
            {"authorization": "Bearer not.a.jwt"},
        ),
        predict("unknown-feature", _struct_value("NOT_A_FEATURE", 1)),
        predict("missing-feature", lambda r: r.instances[0].__delitem__("MES")),
        predict("nan-feature", _struct_value("MES", float("nan"))),
        predict("inf-feature", _struct_value("hour", float("inf"))),
        predict("null-feature", _struct_value("MES", None)),
        predict("nested-feature", _struct_value("OPERA", {"a": {"b": 1}})),
        Case(
            "grpc-predict-list-feature",
            "grpc",
            PREDICT,
            _predict(_struct_value("OPERA", [1, 2])),
            bad,
            bug=LENIENT_CATEGORY,
        ),
        predict("string-for-number", _struct_value("MES", "January")),
        Case(
            "grpc-predict-object-for-number",
            "grpc",
            PREDICT,
            _predict(_struct_value("high_season", {"0": None})),
            bad,
            bug=NUMERIC_CONTAINER,
        ),
        predict("no-instances", lambda r: r.ClearField("instances")),
        predict("unknown-model", lambda r: setattr(r, "name", "nope"), C.NOT_FOUND),
        Case(
            "grpc-predict-truncated-protobuf",
            "grpc",
            PREDICT,
            good_predict().SerializeToString()[:-7],
            bad,
            bug=UNDECODABLE,
        ),
        Case(
            "grpc-unknown-method",
            "grpc",
            "/inference.GRPCInferenceService/Nope",
            whole,
            C.UNIMPLEMENTED,
        ),
    ]


def _rest_cases() -> list[Case]:
    def infer(id: str, edit: Callable[[dict[str, Any]], None], expect: int = 400) -> Case:
        return Case(f"rest-infer-{id}", "rest", f"POST {REST_INFER}", _rest_infer(edit), expect)

    def predict(id: str, edit: Callable[[dict[str, Any]], None], expect: int = 400) -> Case:
        body = _rest_predict(edit)
        return Case(f"rest-predict-{id}", "rest", f"POST {REST_PREDICT}", body, expect)

    def raw(id: str, body: bytes, expect: int, path: str = REST_PREDICT, **headers: str) -> Case:
        hdrs = {"auth": "key", **{k.replace("_", "-"): v for k, v in headers.items()}}
        return Case(f"rest-{id}", "rest", f"POST {path}", body, expect, hdrs)

    good = _rest_predict(lambda b: None)
    bad_utf8_b64 = base64.b64encode(b"\xff\xfe").decode()
    return [
        infer("unknown-datatype", _set(["inputs", MES, "datatype"], "FP99")),
        infer("datatype-mismatch", _set(["inputs", MES, "datatype"], "FP64")),
        infer("shape-mismatch", _set(["inputs", MES, "shape"], [2, 1])),
        infer("negative-dim", _set(["inputs", MES, "shape"], [-1, 1])),
        infer("huge-dims", _set(["inputs", MES, "shape"], [2**40, 2**20])),
        infer("dim-beyond-int64", _set(["inputs", MES, "shape"], [2**70, 1])),
        infer("string-in-fp32", _set(["inputs", MES, "contents", "fp32_contents"], ["x"])),
        infer("nan-string", _set(["inputs", MES, "contents", "fp32_contents"], ["NaN"])),
        infer("infinity-string", _set(["inputs", MES, "contents", "fp32_contents"], ["Infinity"])),
        infer("number-overflows-fp32", _set(["inputs", MES, "contents", "fp32_contents"], [1e300])),
        infer(
            "invalid-utf8-base64",
            _set(["inputs", OPERA, "contents", "bytes_contents"], [bad_utf8_b64]),
        ),
        infer("not-base64", _set(["inputs", OPERA, "contents", "bytes_contents"], ["@@@"])),
        infer("raw-wrong-length", _set(["raw_input_contents"], ["AAA="] * 8)),
        infer("unknown-field", _set(["tensors"], [])),
        infer("inputs-not-a-list", _set(["inputs"], {"a": 1})),
        raw("unknown-model-infer", _rest_infer(lambda b: None), 404, path="/v2/models/nope/infer"),
        predict("unknown-feature", _set(["instances", 0, "NOT_A_FEATURE"], 1)),
        predict("missing-feature", lambda b: b["instances"][0].pop("MES")),
        predict("null-feature", _set(["instances", 0, "MES"], None)),
        predict("nested-feature", _set(["instances", 0, "OPERA"], {"a": [1, {"b": 2}]})),
        predict("string-for-number", _set(["instances", 0, "hour"], "noon")),
        Case(
            "rest-predict-empty-list-for-number",
            "rest",
            f"POST {REST_PREDICT}",
            _rest_predict(_set(["instances", 0, "high_season"], [])),
            400,
            bug=NUMERIC_CONTAINER,
        ),
        Case(
            "rest-predict-bool-for-category",
            "rest",
            f"POST {REST_PREDICT}",
            _rest_predict(_set(["instances", 0, "OPERA"], True)),
            400,
            bug=LENIENT_CATEGORY,
        ),
        predict("no-instances", _set(["instances"], [])),
        predict("instances-not-a-list", _set(["instances"], "all")),
        predict("instance-not-an-object", _set(["instances"], [1, 2])),
        predict("misspelt-field", lambda b: b.update(instance=b.pop("instances"))),
        raw("nan-literal", good.replace(b'"MES": 1', b'"MES": NaN'), 400),
        raw("infinity-literal", good.replace(b'"MES": 1', b'"MES": Infinity'), 400),
        raw("malformed-json", b'{"instances": [', 400),
        raw("empty-body", b"", 400),
        raw("json-array-body", b"[]", 400),
        raw("invalid-utf8-body", good.replace(b"Sky Airline", b"Sky \xff\xfe"), 400),
        raw("deeply-nested-json", b'{"instances": [{"OPERA": ' + _nested(10_000) + b"}]}", 400),
        raw("10mb-json", b'{"instances": [' + b'{"MES": 1},' * 1_000_000 + b"{}]}", 413),
        # Accepted on purpose: the transcoder reads any body as JSON. A cross-site form can
        # send text/plain, but cannot set the API key or Authorization header it would need.
        raw("text-plain-content-type", good, 200, content_type="text/plain"),
        raw(
            "form-content-type",
            b"instances=1",
            400,
            content_type="application/x-www-form-urlencoded",
        ),
        raw("unknown-model-predict", good, 404, path="/v1/models/nope:predict"),
        raw(
            "unknown-version",
            _rest_infer(lambda b: None),
            404,
            path=f"/v2/models/{MODEL}/versions/99/infer",
        ),
        Case("rest-no-credentials", "rest", f"POST {REST_PREDICT}", good, 401, {}),
        Case(
            "rest-wrong-api-key",
            "rest",
            f"POST {REST_PREDICT}",
            good,
            401,
            {"x-api-key": "k-wrong"},
        ),
        Case(
            "rest-malformed-jwt",
            "rest",
            f"POST {REST_PREDICT}",
            good,
            401,
            {"authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
        ),
        Case("rest-get-on-infer", "rest", f"GET {REST_INFER}", b"", 404),
        Case("rest-unknown-route", "rest", "POST /v3/anything", good, 404),
    ]


CASES: list[Case] = [*_grpc_cases(), *_rest_cases()]
