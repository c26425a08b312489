"""Version policies: parsing, selection, and a server that pins versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pronto_contract import VersionPolicy, select_versions
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from tests.server.conftest import start_server
from tests.server.oip_requests import predict_request
from tests.server.test_reload import all_workers_serve, publish, served_version, wait_until
from tests.support import stop_process


def copy_repo(model_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name in ("flights", "echo"):
        shutil.copytree(model_repo / name, root / name)
    return root


@pytest.mark.parametrize(
    ("text", "versions", "selected"),
    [
        ("latest", [1, 3, 2], [3]),
        ("latest:2", [1, 3, 2], [3, 2]),
        ("latest:5", [1, 2], [2, 1]),
        ("pinned:1,3", [1, 2, 3, 4], [3, 1]),
        ("pinned:7", [1, 2], []),
        ("all", [1, 3, 2], [3, 2, 1]),
    ],
)
def test_policy_selects(text: str, versions: list[int], selected: list[int]) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(versions) == selected
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["", "newest", "latest:0", "latest:x", "pinned:", "pinned:a", "all:2"]
)
def test_policy_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="version policy"):
        VersionPolicy.parse(text)


def test_scan_with_per_model_policy(model_repo: Path) -> None:
    root = model_repo
    found = select_versions(
        root, None, VersionPolicy(latest=2), {"flights": VersionPolicy.parse("pinned:1")}
    )
    assert list(found["flights"]) == [1]
    assert list(found["echo"]) == [1]


@pytest.mark.integration
def test_pinned_versions_answer_by_version(model_repo: Path, tmp_path: Path) -> None:
    repo = copy_repo(model_repo, tmp_path)
    srv = start_server(
        repo,
        tmp_path / "serve.log",
        2,
        "--model-poll-interval", "0.2",
        "--version-policy", "latest",
        "--model-version-policies", json.dumps({"flights": "pinned:1,3"}),
    )  # fmt: skip
    try:
        # only version 1 exists of the pinned ones
        assert all_workers_serve(srv, "1")
        publish(repo, 3, source=2)
        wait_until(lambda: all_workers_serve(srv, "3"))
        publish(repo, 4, source=2)  # not pinned: never served
        with grpc.insecure_channel(srv.address) as channel:
            oip = pb_grpc.GRPCInferenceServiceStub(channel)
            meta = oip.ModelMetadata(pb.ModelMetadataRequest(name="flights"))
            assert list(meta.versions) == ["3", "1"]
            assert served_version(srv.address, "1") == "1"
            assert served_version(srv.address, "3") == "3"
            for missing in ("2", "4"):
                with pytest.raises(grpc.RpcError) as err:
                    served_version(srv.address, missing)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert oip.ModelReady(pb.ModelReadyRequest(name="flights", version="3")).ready
            assert not oip.ModelReady(pb.ModelReadyRequest(name="flights", version="2")).ready
            predict = ppb_grpc.PredictionServiceStub(channel)
            reply = predict.Predict(predict_request(version="1"))
            assert reply.model_version == "1"
            # per-model readiness in grpc.health.v1: the service name is the model name
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("flights", "echo"):
                status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
                assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stop_process(srv.proc)


@pytest.mark.integration
def test_removed_model_turns_not_serving(model_repo: Path, tmp_path: Path) -> None:
    repo = copy_repo(model_repo, tmp_path)
    srv = start_server(repo, tmp_path / "serve.log", 2, "--model-poll-interval", "0.2")
    try:
        shutil.rmtree(repo / "echo")

        def not_serving() -> bool:
            for i in range(srv.workers):
                with grpc.insecure_channel(srv.worker_address(i)) as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    status = health.Check(health_pb2.HealthCheckRequest(service="echo")).status
                    if status != health_pb2.HealthCheckResponse.NOT_SERVING:
                        return False
            return True

        wait_until(not_serving)
        assert all_workers_serve(srv, "2")
    finally:
        stop_process(srv.proc)


@pytest.mark.integration
def test_strict_readiness_needs_every_named_model(model_repo: Path, tmp_path: Path) -> None:
    """With --strict-readiness the overall health and ServerReady follow the least ready
    named model (a pod probe then covers every model); per-model readiness stays per model."""
    repo = copy_repo(model_repo, tmp_path)
    srv = start_server(
        repo,
        tmp_path / "serve.log",
        1,
        "--model-poll-interval", "0.2",
        "--models", "flights", "echo",
        "--strict-readiness",
    )  # fmt: skip
    saved = tmp_path / "echo-saved"
    try:
        with grpc.insecure_channel(srv.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            oip = pb_grpc.GRPCInferenceServiceStub(channel)

            def overall() -> int:
                return int(health.Check(health_pb2.HealthCheckRequest()).status)

            assert overall() == health_pb2.HealthCheckResponse.SERVING
            assert oip.ServerReady(pb.ServerReadyRequest()).ready
            shutil.move(repo / "echo", saved)
            wait_until(lambda: overall() == health_pb2.HealthCheckResponse.NOT_SERVING)
            assert not oip.ServerReady(pb.ServerReadyRequest()).ready
            assert oip.ModelReady(pb.ModelReadyRequest(name="flights")).ready
            assert not oip.ModelReady(pb.ModelReadyRequest(name="echo")).ready
            status = health.Check(health_pb2.HealthCheckRequest(service="flights")).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            assert served_version(srv.address) == "2"  # the loaded model still answers
            shutil.move(saved, repo / "echo")
            wait_until(lambda: overall() == health_pb2.HealthCheckResponse.SERVING)
            assert oip.ServerReady(pb.ServerReadyRequest()).ready
    finally:
        stop_process(srv.proc)
