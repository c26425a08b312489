"""gRPC-Web through the gateway: binary bodies over HTTP/1.1, treated exactly like gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from loadtest.grpc_web import Reply, call, decode_text, grpc_frame, unframe
from server.datatypes import encode_bytes_raw
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from tests.gateway.harness import Gateway, Server, run_gateway
from tests.gateway.modelgen import CARRIERS, MODEL, instance

pytestmark = pytest.mark.integration

INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/pronto.v1.PredictionService/Predict"


def _infer_request(rows: int, model: str = MODEL) -> pb.ModelInferRequest:
    """tritonclient's raw form: BYTES length-prefixed, numbers little-endian."""
    req = pb.ModelInferRequest(model_name=model)
    carriers = np.array([CARRIERS[i % len(CARRIERS)] for i in range(rows)], dtype=object)
    raw = encode_bytes_raw(carriers)
    req.inputs.add(name="carrier", datatype="BYTES", shape=[rows, 1])
    req.inputs.add(name="hour", datatype="FP32", shape=[rows, 1])
    req.raw_input_contents.extend([raw, (np.arange(rows, dtype=np.float32) % 24).tobytes()])
    return req


def _web(gateway: Gateway, method: str, message: bytes, **headers: str) -> Reply:
    return call("127.0.0.1", gateway.port, method, message, headers)


def test_model_infer_answers_as_over_grpc(gateway: Gateway) -> None:
    req = _infer_request(64)
    reply = _web(gateway, INFER, req.SerializeToString())
    assert (reply.http_status, reply.grpc_status) == (200, 0), reply
    assert reply.headers["content-type"].startswith("application/grpc-web"), reply.headers
    assert len(reply.messages) == 1
    web = pb.ModelInferResponse.FromString(reply.messages[0])
    with grpc.insecure_channel(gateway.address) as channel:
        native = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert [o.name for o in web.outputs] == [o.name for o in native.outputs]
    assert list(web.raw_output_contents) == list(native.raw_output_contents)
    assert web.id and web.id != native.id  # each prediction has its own id
    probabilities = np.frombuffer(web.raw_output_contents[1], np.float32).reshape(64, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_named_feature_predict_over_grpc_web(gateway: Gateway) -> None:
    req = ppb.PredictRequest(name=MODEL)
    req.instances.add().update(instance(2))
    reply = _web(gateway, PREDICT, req.SerializeToString())
    assert reply.grpc_status == 0, reply
    answer = ppb.PredictResponse.FromString(reply.messages[0])
    assert len(answer.predictions) == 1 and answer.predictions[0].label in ("0", "1")


def test_errors_keep_their_grpc_status_and_message(gateway: Gateway) -> None:
    unknown = _web(gateway, INFER, _infer_request(1, model="no-such-model").SerializeToString())
    assert unknown.http_status == 200 and not unknown.messages
    assert unknown.grpc_status == grpc.StatusCode.NOT_FOUND.value[0], unknown
    assert "no-such-model" in unknown.grpc_message
    bad = _infer_request(2)
    bad.inputs[1].shape[:] = [3, 1]  # 2 values sent, 3 announced
    invalid = _web(gateway, INFER, bad.SerializeToString())
    assert invalid.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0], invalid
    assert "hour" in invalid.grpc_message
    garbage = _web(gateway, INFER, b"\xff\xff\xff not a protobuf message")
    assert garbage.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0], garbage
    # the gateway and its workers still serve
    assert _web(gateway, INFER, _infer_request(1).SerializeToString()).grpc_status == 0


def test_grpc_web_text_is_accepted_too(gateway: Gateway) -> None:
    """The base64 form that browsers use when they cannot read binary streams."""
    import base64
    import http.client

    body = base64.b64encode(grpc_frame(_infer_request(3).SerializeToString()))
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        text = "application/grpc-web-text"
        conn.request("POST", INFER, body, {"content-type": text, "accept": text})
        response = conn.getresponse()
        payload = decode_text(response.read())
    finally:
        conn.close()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith(text)
    messages, trailers = unframe(payload)
    assert trailers.get("grpc-status") == "0", trailers
    assert len(pb.ModelInferResponse.FromString(messages[0]).outputs) == 2


@pytest.fixture(scope="module")
def keyed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    keys: Path = tmp_path_factory.mktemp("web-keys") / "api-keys.txt"
    keys.write_text("browser-app:k-web-51d\n")
    with run_gateway(server, "--api-keys-file", str(keys), "--require-auth") as running:
        yield running


def test_grpc_web_is_authenticated_like_grpc(keyed: Gateway) -> None:
    message = _infer_request(1).SerializeToString()
    refused = _web(keyed, INFER, message)
    assert refused.grpc_status == grpc.StatusCode.UNAUTHENTICATED.value[0], refused
    assert not refused.messages
    wrong = _web(keyed, INFER, message, **{"x-api-key": "k-guessed"})
    assert wrong.grpc_status == grpc.StatusCode.UNAUTHENTICATED.value[0], wrong
    accepted = _web(keyed, INFER, message, **{"x-api-key": "k-web-51d"})
    assert accepted.grpc_status == 0, accepted
    assert len(accepted.messages) == 1
