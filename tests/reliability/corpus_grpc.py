"""gRPC half of the bad-input corpus: ModelInfer and Predict messages, sent through Envoy."""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable

from server.generated.inference import grpc_service_pb2 as pb
from server.generated.pronto.v1 import prediction_pb2 as ppb
from tests.reliability.payloads import (
    INFER,
    MES,
    OPERA,
    PREDICT,
    C,
    Case,
    as_raw,
    bytes_value,
    drop_input,
    fp32_values,
    good_infer,
    good_predict,
    infer_body,
    predict_body,
    raw_edit,
    struct_value,
    with_datatype,
    with_shape,
)

__all__ = ["grpc_cases"]


def grpc_cases() -> list[Case]:
    bad = C.INVALID_ARGUMENT
    whole = good_infer().SerializeToString()

    def infer(id: str, edit: Callable[[pb.ModelInferRequest], None], expect: C = bad) -> Case:
        return Case(f"grpc-infer-{id}", "grpc", INFER, infer_body(edit), expect)

    def predict(id: str, edit: Callable[[ppb.PredictRequest], None], expect: C = bad) -> Case:
        return Case(f"grpc-predict-{id}", "grpc", PREDICT, predict_body(edit), expect)

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
        as_raw(req).inputs[MES].contents.fp32_contents.append(1.0)

    def batch_mismatch(req: pb.ModelInferRequest) -> None:
        with_shape("MES", [2, 1])(req)
        fp32_values("MES", [1.0, 2.0])(req)

    def unknown_output(req: pb.ModelInferRequest) -> None:
        del req.outputs[:]
        req.outputs.add(name="no_such_output")

    return [
        infer("unknown-datatype", with_datatype("MES", "FP99")),
        infer("datatype-mismatch-fp64", with_datatype("MES", "FP64")),
        infer("datatype-int32-no-values", with_datatype("MES", "INT32")),
        infer("bytes-sent-as-fp32", with_datatype("OPERA", "FP32")),
        infer("too-few-values", fp32_values("MES", [])),
        infer("too-many-values", fp32_values("MES", [1.0, 2.0])),
        infer("rank-1", with_shape("MES", [1])),
        infer("rank-3", with_shape("MES", [1, 1, 1])),
        infer("no-shape", with_shape("MES", [])),
        infer("negative-dim", with_shape("MES", [-1, 1])),
        infer("huge-dims", with_shape("MES", [2**40, 2**20])),
        infer("int64-max-dim", with_shape("MES", [2**63 - 1, 1])),
        infer("zero-batch", with_shape("MES", [0, 1])),
        infer(
            "batch-mismatch",
            lambda r: (with_shape("MES", [2, 1])(r), fp32_values("MES", [1, 2])(r)),
        ),
        infer("nan", fp32_values("MES", [float("nan")])),
        infer("plus-inf", fp32_values("hour", [float("inf")])),
        infer("minus-inf", fp32_values("high_season", [float("-inf")])),
        infer("raw-wrong-length", raw_edit(raw_short)),
        infer("raw-count-mismatch", raw_edit(lambda r: r.raw_input_contents.pop())),
        infer("raw-and-contents", both),
        infer("raw-bytes-bad-prefix", raw_edit(raw_bytes_prefix)),
        infer("raw-bytes-invalid-utf8", raw_edit(raw_bad_utf8)),
        infer(
            "raw-nan",
            raw_edit(
                lambda r: r.raw_input_contents.__setitem__(MES, struct.pack("<f", float("nan")))
            ),
        ),
        infer("invalid-utf8", bytes_value("OPERA", b"\xff\xfe")),
        infer("lone-surrogate-utf8", bytes_value("OPERA", b"\xed\xa0\x80")),
        infer("missing-input", drop_input("MES")),
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
        ),
        Case("grpc-infer-garbage-protobuf", "grpc", INFER, b"\xff" * 64, bad),
        Case("grpc-infer-empty-message", "grpc", INFER, b"", bad),
        Case(
            "grpc-infer-17mb-message",
            "grpc",
            INFER,
            infer_body(bytes_value("OPERA", b"x" * (17 * 2**20))),
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
        predict("unknown-feature", struct_value("NOT_A_FEATURE", 1)),
        predict("missing-feature", lambda r: r.instances[0].__delitem__("MES")),
        predict("nan-feature", struct_value("MES", float("nan"))),
        predict("inf-feature", struct_value("hour", float("inf"))),
        predict("null-feature", struct_value("MES", None)),
        predict("nested-feature", struct_value("OPERA", {"a": {"b": 1}})),
        Case(
            "grpc-predict-list-feature",
            "grpc",
            PREDICT,
            predict_body(struct_value("OPERA", [1, 2])),
            bad,
        ),
        predict("string-for-number", struct_value("MES", "January")),
        Case(
            "grpc-predict-object-for-number",
            "grpc",
            PREDICT,
            predict_body(struct_value("high_season", {"0": None})),
            bad,
        ),
        predict("no-instances", lambda r: r.ClearField("instances")),
        predict("unknown-model", lambda r: setattr(r, "name", "nope"), C.NOT_FOUND),
        Case(
            "grpc-predict-truncated-protobuf",
            "grpc",
            PREDICT,
            good_predict().SerializeToString()[:-7],
            bad,
        ),
        Case(
            "grpc-unknown-method",
            "grpc",
            "/inference.GRPCInferenceService/Nope",
            whole,
            C.UNIMPLEMENTED,
        ),
    ]
