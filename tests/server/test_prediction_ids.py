"""Prediction ids: echoed when the caller sends one, generated (unique) otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from server.core import InferenceCore
from server.errors import InvalidInput
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.ids import MAX_ID_LENGTH, IdGenerator
from server.oip_codec import decode_infer_request
from server.repository import Registry, load_repository
from tests.server.conftest import Server
from tests.server.requests import infer_request, predict_request, rows


@pytest.fixture(scope="module")
def core(model_repo: Path) -> InferenceCore:
    handles, failures = load_repository(model_repo, versions=1)
    assert not failures
    registry = Registry()
    registry.replace(handles)
    c = InferenceCore(registry)
    c.ready = True
    return c


def _infer(core: InferenceCore, request_id: str) -> str:
    req = infer_request(rows(2))
    req.id = request_id
    decoded = decode_infer_request(req, 1 << 22, 1000)
    return asyncio.run(core.infer(decoded)).id


def test_generated_ids_are_unique_and_per_process() -> None:
    a, b = IdGenerator(), IdGenerator()
    ids = {a() for _ in range(1000)} | {b() for _ in range(1000)}
    assert len(ids) == 2000
    assert a.prefix != b.prefix


def test_infer_echoes_or_generates(core: InferenceCore) -> None:
    assert _infer(core, "caller-42") == "caller-42"
    first, second = _infer(core, ""), _infer(core, "")
    assert first and second and first != second
    assert first.startswith(core.new_id.prefix)


def test_predict_echoes_or_generates(core: InferenceCore) -> None:
    instances = [{"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 3.0, "DIA": 4.0}]
    assert asyncio.run(core.predict("flights", "", instances, "abc")).id == "abc"
    generated = asyncio.run(core.predict("flights", "", instances)).id
    assert generated.startswith(core.new_id.prefix)


def test_overlong_id_is_invalid(core: InferenceCore) -> None:
    with pytest.raises(InvalidInput) as err:
        _infer(core, "x" * (MAX_ID_LENGTH + 1))
    assert err.value.reason == "id"


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.mark.integration
def test_ids_over_grpc(channel: grpc.Channel) -> None:
    infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    predict = ppb_grpc.PredictionServiceStub(channel).Predict
    req = infer_request()
    req.id = "oip-1"
    assert infer(req, timeout=10).id == "oip-1"
    generated = {infer(infer_request(), timeout=10).id for _ in range(5)}
    assert len(generated) == 5 and "" not in generated
    preq = predict_request()
    preq.id = "mine"
    assert predict(preq, timeout=10).id == "mine"
    assert predict(predict_request(), timeout=10).id not in ("", "mine")
