"""Named-feature Predict, model discovery, health, reflection, metrics and the CLI client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from tests.server.conftest import ROOT, Server
from tests.server.oip_requests import infer_request, predict_request, rows
from tests.tools import needs_tool

pytestmark = pytest.mark.integration

GHZ = ROOT / ".tools" / "bin" / "ghz"


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _infer_proba(channel: grpc.Channel, columns: dict, version: str = "") -> np.ndarray:
    reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        infer_request(columns, raw=True, version=version), timeout=10
    )
    idx = [o.name for o in reply.outputs].index("probabilities")
    shape = list(reply.outputs[idx].shape)
    return np.frombuffer(reply.raw_output_contents[idx], dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("version", ["", "1", "2"])
def test_predict_matches_model_infer(channel: grpc.Channel, version: str) -> None:
    columns = rows(7)
    reply = ppb_grpc.PredictionServiceStub(channel).Predict(
        predict_request(columns, version=version), timeout=10
    )
    assert reply.model_name == "flights" and reply.model_version == (version or "2")
    proba = _infer_proba(channel, columns, version)
    assert len(reply.predictions) == 7
    for pred, row in zip(reply.predictions, proba, strict=True):
        assert set(pred.probabilities) == {"0", "1"}
        assert pred.probabilities["0"] == pytest.approx(float(row[0]), abs=1e-7)
        assert pred.probabilities["1"] == pytest.approx(float(row[1]), abs=1e-7)
        assert pred.label == ("1" if row[1] > row[0] else "0")


def test_predict_on_a_model_without_manifest(channel: grpc.Channel) -> None:
    reply = ppb_grpc.PredictionServiceStub(channel).Predict(
        predict_request(model="bare"), timeout=10
    )
    assert len(reply.predictions) == 3
    for pred in reply.predictions:
        assert set(pred.probabilities) == {"0", "1"}
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert pred.label in {"0", "1"}


def test_predict_accepts_numbers_for_categories(channel: grpc.Channel) -> None:
    req = ppb.PredictRequest(name="flights")
    req.instances.add().update({"OPERA": 7, "TIPOVUELO": "N", "MES": "3", "DIA": 4})
    assert len(ppb_grpc.PredictionServiceStub(channel).Predict(req, timeout=10).predictions) == 1


def test_list_and_get_models(channel: grpc.Channel) -> None:
    stub = ppb_grpc.PredictionServiceStub(channel)
    listed = stub.ListModels(ppb.ListModelsRequest(), timeout=10)
    assert [m.name for m in listed.models] == ["bare", "echo", "flights"]
    model = stub.GetModel(ppb.GetModelRequest(name="flights"), timeout=10).model
    assert list(model.versions) == ["2", "1"]
    assert list(model.classes) == ["0", "1"]
    assert [(f.name, f.kind) for f in model.features] == [
        ("OPERA", "categorical"),
        ("TIPOVUELO", "categorical"),
        ("MES", "numeric"),
        ("DIA", "numeric"),
    ]
    assert "Avianca" in model.features[0].categories
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModel(ppb.GetModelRequest(name="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "service, status",
    [
        ("", "SERVING"),
        ("inference.GRPCInferenceService", "SERVING"),
        ("pronto.v1.PredictionService", "SERVING"),
        ("flights", "SERVING"),
        ("echo", "SERVING"),
    ],
)
def test_health(channel: grpc.Channel, service: str, status: str) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    assert health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status) == status


def test_health_unknown_model(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="nope"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {
        "inference.GRPCInferenceService",
        "pronto.v1.PredictionService",
        "pronto.v1.FeedbackService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_reflection_resolves_methods(channel: grpc.Channel) -> None:
    # ghz asks for the file of "package.Service.Method"
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    symbol = "inference.GRPCInferenceService.ModelInfer"
    (reply,) = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)]), timeout=5
    )
    assert reply.WhichOneof("message_response") == "file_descriptor_response"
    (missing,) = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol + "X")]),
        timeout=5,
    )
    assert missing.WhichOneof("message_response") == "error_response"


@needs_tool(GHZ.exists(), "ghz is not installed (make setup-go)")
def test_ghz_through_reflection(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "request.json"
    data.write_text(json_format.MessageToJson(infer_request(rows(1))))
    done = subprocess.run(
        [str(GHZ), "--insecure", "--call", "inference.GRPCInferenceService/ModelInfer",
         "-D", str(data), "-n", "50", "-c", "5", "--format", "json", server.address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["statusCodeDistribution"] == {"OK": 50}


def test_private_worker_ports_answer(server: Server) -> None:
    for i in range(server.workers):
        with grpc.insecure_channel(server.worker_address(i)) as ch:
            reply = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(infer_request(), timeout=10)
            assert reply.model_version == "2"


def _scrape(server: Server) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_metrics(server: Server, channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    for _ in range(5):
        stub.ModelInfer(infer_request(version="1"), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(infer_request(columns={**rows(), "MES": [1.0, float("nan"), 2.0]}))
    deadline = time.monotonic() + 10
    while True:
        text = _scrape(server)
        if 'reason="non_finite"' in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    ok = [
        line
        for line in text.splitlines()
        if line.startswith("pronto_requests_total{")
        and 'method="ModelInfer"' in line
        and 'code="OK"' in line
        and 'version="1"' in line
    ]
    assert ok and float(ok[0].split()[-1]) >= 5
    assert 'pronto_validation_errors_total{reason="non_finite"}' in text
    assert "pronto_request_duration_seconds_bucket{" in text
    assert 'le="0.0001"' in text and 'le="5.0"' in text
    assert f"pronto_workers_ready {float(server.workers)}" in text
    assert 'pronto_model_load_seconds{model="flights",version="2"}' in text
    assert "pronto_build_info{" in text
    assert "pronto_worker_restarts_total" in text


def test_predict_cli(server: Server) -> None:
    instances = json.dumps(
        {"instances": [{"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 3, "DIA": 4}]}
    )
    done = subprocess.run(
        [sys.executable, "-m", "pronto_cli", "predict", "--address", server.address,
         "--model", "flights"],
        input=instances, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["model_name"] == "flights"
    assert set(reply["predictions"][0]["probabilities"]) == {"0", "1"}
    bad = subprocess.run(
        [sys.executable, "-m", "pronto_cli", "predict", "--address", server.address,
         "--model", "flights", '{"OPERA": "x"}'],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr
