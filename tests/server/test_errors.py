"""Every kind of bad request gets its documented status and message; workers survive."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import psutil
import pytest

from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.template import worker_processes
from tests.server.conftest import Server
from tests.server.requests import infer_request, predict_request, rows

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _with(fn: Callable[[pb.ModelInferRequest], None], raw: bool = False) -> pb.ModelInferRequest:
    req = infer_request(raw=raw)
    fn(req)
    return req


def _input(req: pb.ModelInferRequest, name: str) -> Any:
    return next(i for i in req.inputs if i.name == name)


def _drop(req: pb.ModelInferRequest, name: str) -> None:
    keep = [i for i in req.inputs if i.name != name]
    del req.inputs[:]
    req.inputs.extend(keep)


def _set_fp32(req: pb.ModelInferRequest, name: str, values: list[float]) -> None:
    t = _input(req, name)
    del t.contents.fp32_contents[:]
    t.contents.fp32_contents.extend(values)


def _wrong_datatype(req: pb.ModelInferRequest) -> None:
    t = _input(req, "MES")
    t.datatype = "FP64"
    t.contents.fp64_contents.extend(t.contents.fp32_contents)
    del t.contents.fp32_contents[:]


def _raw_short(req: pb.ModelInferRequest) -> None:
    req.raw_input_contents[2] = req.raw_input_contents[2][:-1]


def _extra(req: pb.ModelInferRequest) -> None:
    t = req.inputs.add(name="EXTRA", datatype="FP32", shape=[3, 1])
    t.contents.fp32_contents.extend([1, 2, 3])


def _shape(name: str, shape: list[int]) -> Callable[[pb.ModelInferRequest], None]:
    def apply(req: pb.ModelInferRequest) -> None:
        t = _input(req, name)
        del t.shape[:]
        t.shape.extend(shape)

    return apply


def _duplicate(req: pb.ModelInferRequest) -> None:
    req.inputs.add().CopyFrom(req.inputs[0])


INFER_CASES: dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, str]] = {
    "unknown model": (
        infer_request(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'",
    ),
    "unknown version": (
        infer_request(version="9"), grpc.StatusCode.NOT_FOUND,
        "unknown version '9' of model 'flights'",
    ),
    "non-numeric version": (
        infer_request(version="latest"), grpc.StatusCode.NOT_FOUND, "unknown version 'latest'",
    ),
    "missing input": (
        _with(lambda r: _drop(r, "DIA")), INVALID, "missing inputs for model 'flights': DIA",
    ),
    "extra input": (_with(_extra), INVALID, "unexpected input 'EXTRA' for model 'flights'"),
    "wrong input name": (
        _with(lambda r: setattr(_input(r, "MES"), "name", "MONTH")), INVALID,
        "unexpected input 'MONTH'",
    ),
    "duplicate input": (_with(_duplicate), INVALID, "duplicate input names"),
    "wrong datatype": (
        _with(_wrong_datatype), INVALID,
        "input 'MES' has datatype FP64, model 'flights' expects FP32",
    ),
    "unknown datatype": (
        _with(lambda r: setattr(_input(r, "MES"), "datatype", "FP99")), INVALID,
        "input 'MES' has unknown datatype 'FP99'",
    ),
    "shape vs data length": (
        _with(lambda r: _set_fp32(r, "MES", [1.0])), INVALID,
        "input 'MES' has 1 values, shape [3, 1] needs 3",
    ),
    "wrong rank": (
        _with(_shape("MES", [3])), INVALID,
        "input 'MES' has shape [3], model 'flights' expects [-1, 1]",
    ),
    "batch mismatch": (
        _with(lambda r: (_shape("MES", [1, 1])(r), _set_fp32(r, "MES", [1.0]))), INVALID,
        "input 'MES' has batch size 1, other inputs have 3",
    ),
    "negative dimension": (
        _with(_shape("MES", [-3, 1])), INVALID, "input 'MES' has a negative dimension in [-3, 1]",
    ),
    "absurd dimension": (
        _with(_shape("MES", [1 << 40, 1 << 20])), INVALID, "is too large",
    ),
    "empty batch": (
        _with(lambda r: (_shape("MES", [0, 1])(r), _set_fp32(r, "MES", []))), INVALID,
        "empty batch: input 'MES' has shape [0, 1]",
    ),
    "raw length": (
        _with(_raw_short, raw=True), INVALID,
        "input 'MES': raw contents hold 11 bytes, shape [3, 1] of FP32 needs 12",
    ),
    "raw count": (
        _with(lambda r: r.raw_input_contents.pop(), raw=True), INVALID,
        "3 raw_input_contents for 4 inputs",
    ),
    "raw bytes garbage": (
        _with(lambda r: r.raw_input_contents.__setitem__(0, b"\xff\xff\xff\xff"), raw=True),
        INVALID, "input 'OPERA': bad raw BYTES contents",
    ),
    "NaN": (_with(lambda r: _set_fp32(r, "MES", [1.0, float("nan"), 2.0])), INVALID,
            "input 'MES' contains NaN or Inf"),
    "Inf raw": (
        _with(lambda r: r.raw_input_contents.__setitem__(
            3, np.array([1, np.inf, 2], dtype=np.float32).tobytes()), raw=True),
        INVALID, "input 'DIA' contains NaN or Inf",
    ),
    "unknown output": (
        _with(lambda r: r.outputs.add(name="logits")), INVALID,
        "unknown output 'logits' for model 'flights'",
    ),
    "no inputs": (pb.ModelInferRequest(model_name="flights"), INVALID, "request has no inputs"),
}  # fmt: skip


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.mark.parametrize("case", list(INFER_CASES))
def test_bad_infer_request(channel: grpc.Channel, case: str) -> None:
    request, code, message = INFER_CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert info.value.code() == code
    assert message in info.value.details()
    assert "Traceback" not in info.value.details()


def test_message_over_limit(channel: grpc.Channel) -> None:
    cols = rows(3)
    req = infer_request(cols)
    req.raw_input_contents.append(b"\0" * (17 * 1024 * 1024))  # over the 16 MiB default
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _instances(*items: dict[str, Any]) -> ppb.PredictRequest:
    req = ppb.PredictRequest(name="flights")
    for item in items:
        req.instances.add().update(item)
    return req


GOOD = {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 3, "DIA": 4}

PREDICT_CASES: dict[str, tuple[ppb.PredictRequest, grpc.StatusCode, str]] = {
    "missing feature": (
        _instances(GOOD, {k: v for k, v in GOOD.items() if k != "DIA"}), INVALID,
        "instance 1: missing features: DIA",
    ),
    "unknown feature": (_instances({**GOOD, "GATE": "A1"}), INVALID,
                        "instance 0: unknown features: GATE"),
    "renamed feature": (
        _instances({**{k: v for k, v in GOOD.items() if k != "MES"}, "MONTH": 3}), INVALID,
        "unknown features: MONTH",
    ),
    "non-numeric value": (_instances({**GOOD, "MES": "march"}), INVALID,
                          "feature 'MES' must be numeric"),
    "null value": (_instances({**GOOD, "DIA": None}), INVALID, "feature 'DIA' has a null"),
    "nested value": (_instances({**GOOD, "OPERA": {"a": 1}}), INVALID,
                     "feature 'OPERA' must be a string or number"),
    "empty batch": (ppb.PredictRequest(name="flights"), INVALID, "empty batch"),
    "unknown model": (predict_request(model="nope"), grpc.StatusCode.NOT_FOUND,
                      "unknown model 'nope'"),
    "unknown version": (predict_request(version="7"), grpc.StatusCode.NOT_FOUND,
                        "unknown version '7'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_bad_predict_request(channel: grpc.Channel, case: str) -> None:
    request, code, message = PREDICT_CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        ppb_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    assert info.value.code() == code
    assert message in info.value.details()


def test_workers_survive_bad_requests(server: Server, channel: grpc.Channel) -> None:
    before = {p.pid for p in worker_processes(psutil.Process(server.proc.pid))}
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    futures = [stub.ModelInfer.future(req, timeout=10) for req, _, _ in INFER_CASES.values()]
    good = [stub.ModelInfer.future(infer_request(), timeout=10) for _ in range(20)]
    for f in futures:
        assert f.exception() is not None
    for f in good:
        assert len(f.result().outputs) == 2
    after = {p.pid for p in worker_processes(psutil.Process(server.proc.pid))}
    assert before == after and len(after) == server.workers
