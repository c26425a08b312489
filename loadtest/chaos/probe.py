"""Single gRPC calls through Envoy: one inference, one readiness question."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc

__all__ = ["infer_once", "model_ready", "recovery_seconds", "timed_call"]

DATA = Path(__file__).resolve().parents[1] / "data" / "oip.json"


@functools.cache
def _request() -> pb.ModelInferRequest:
    first = json.loads(DATA.read_text())[0]
    return json_format.ParseDict(first, pb.ModelInferRequest())


def infer_once(address: str, timeout: float = 2.0) -> pb.ModelInferResponse:
    """One ModelInfer of the default model; raises ``grpc.RpcError`` on failure."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(_request(), timeout=timeout)


def model_ready(address: str, name: str, version: str = "", timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            request = pb.ModelReadyRequest(name=name, version=version)
            reply = stub.ModelReady(request, timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.ready)


def recovery_seconds(address: str, limit: float = 30.0, attempt_timeout: float = 1.0) -> float:
    """Seconds until a fast request succeeds again (short deadlines, retried); ``inf``
    when none does within ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            infer_once(address, timeout=attempt_timeout)
            return time.monotonic() - start
        except grpc.RpcError:
            time.sleep(0.1)
    return float("inf")


def timed_call(address: str, data_file: Path, timeout: float) -> tuple[float, str]:
    """Seconds the client waited for the first request of ``data_file``, and the status."""
    request = json_format.ParseDict(json.loads(data_file.read_text())[0], pb.ModelInferRequest())
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=5)
        start = time.monotonic()
        try:
            stub.ModelInfer(request, timeout=timeout)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        return time.monotonic() - start, code
