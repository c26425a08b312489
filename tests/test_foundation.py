"""The contract and toolchain everything else builds on."""

from __future__ import annotations

import importlib.util
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from pronto_cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = ROOT / "gateway" / "generated" / "pronto.pb"


def _services() -> dict[str, descriptor_pb2.ServiceDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    return {f"{f.package}.{s.name}": s for f in fds.file for s in f.service}


def _http_rules(service: descriptor_pb2.ServiceDescriptorProto) -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    for method in service.method:
        rule = method.options.Extensions[annotations_pb2.http]
        paths = []
        for r in [rule, *rule.additional_bindings]:
            verb = r.WhichOneof("pattern")
            if verb:
                paths.append(f"{verb.upper()} {getattr(r, verb)}")
        rules[method.name] = paths
    return rules


def test_stubs_import_and_build_messages() -> None:
    from server.generated.inference import grpc_service_pb2, grpc_service_pb2_grpc
    from server.generated.pronto.v1 import prediction_pb2, prediction_pb2_grpc

    req = grpc_service_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 4])
    assert grpc_service_pb2.ModelInferRequest.FromString(req.SerializeToString()) == req
    assert hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceStub")
    pred = prediction_pb2.PredictRequest(name="m")
    pred.instances.add().update({"OPERA": "Sky Airline", "MES": 7})
    assert pred.instances[0]["MES"] == 7
    assert hasattr(prediction_pb2_grpc, "PredictionServiceStub")


def test_oip_wire_names_match_the_published_protocol() -> None:
    from server.generated.inference import grpc_service_pb2 as pb

    fields = {f.name: f.number for f in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert fields == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    contents = {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}
    assert contents["fp32_contents"] == 6 and contents["bytes_contents"] == 8
    assert pb.DESCRIPTOR.package == "inference"


def test_descriptor_set_has_both_services_with_http_rules() -> None:
    services = _services()
    assert {"inference.GRPCInferenceService", "pronto.v1.PredictionService"} <= set(services)
    oip = _http_rules(services["inference.GRPCInferenceService"])
    assert oip["ServerLive"] == ["GET /v2/health/live"]
    assert oip["ServerReady"] == ["GET /v2/health/ready"]
    assert oip["ModelMetadata"] == []  # its REST path is ModelMetadataJson's
    assert oip["ModelReady"][0] == "GET /v2/models/{name}/ready"
    pronto = _http_rules(services["pronto.v1.PredictionService"])
    # REST Predict is PredictJson and REST infer is ModelInferJson (the body passed
    # through); gRPC's Predict and ModelInfer have no route
    assert pronto["PredictJson"] == ["POST /v1/models/{name}:predict"]
    assert pronto["Predict"] == []
    assert pronto["ModelInferJson"] == [
        "POST /v2/models/{model_name}/infer",
        "POST /v2/models/{model_name}/versions/{model_version}/infer",
    ]
    assert oip["ModelInfer"] == []
    assert pronto["ModelMetadataJson"] == [
        "GET /v2/models/{name}",
        "GET /v2/models/{name}/versions/{version}",
    ]


def test_descriptor_set_includes_imports_for_envoy() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    names = {f.name for f in fds.file}
    assert {
        "google/api/http.proto",
        "google/api/annotations.proto",
        "google/api/httpbody.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/struct.proto",
    } <= names


def test_cli_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pronto_cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("train", "serve", "gateway", "up", "bench", "predict"):
        assert name in COMMANDS
        assert f"    {name}" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_has_help(command: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pronto_cli", command, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert command in proc.stdout


def test_proto_check_passes_in_a_tree_that_has_run_python() -> None:
    """Importing the stubs writes bytecode next to them; the drift check must compare the
    generated files, not the caches beside them, or a second `make test` fails."""
    stub = ROOT / "server" / "generated" / "inference" / "grpc_service_pb2.py"
    pyc = Path(importlib.util.cache_from_source(str(stub)))
    made = not pyc.exists()
    if made:  # this tree has not imported the stub with bytecode on: write it as Python would
        py_compile.compile(str(stub), cfile=str(pyc), doraise=True)
    try:
        result = subprocess.run(
            ["make", "-s", "proto-check"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
    finally:
        if made:
            pyc.unlink(missing_ok=True)
    assert result.returncode == 0, result.stdout + result.stderr
