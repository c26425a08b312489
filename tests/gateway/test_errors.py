"""Errors reach REST callers as JSON google.rpc.Status bodies with the mapped HTTP code."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from server.generated.pronto.v1 import prediction_pb2, prediction_pb2_grpc
from tests.gateway.harness import Gateway, Reply, Server, request, run_gateway
from tests.gateway.modelgen import MODEL, instance

pytestmark = pytest.mark.integration

PREDICT = f"/v1/models/{MODEL}:predict"

# HTTP status -> gRPC code carried in the body.
GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 429: 8, 503: 14, 504: 4}


def assert_status(reply: Reply, status: int, fragment: str = "") -> None:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert isinstance(reply.body, dict) and reply.body["code"] == GRPC_CODE[status], reply.body
    assert fragment in reply.body["message"], reply.body
    # the Open Inference Protocol's REST error key, read by KServe's and Triton's clients
    assert reply.body["error"] == reply.body["message"], reply.body


@pytest.fixture(scope="module")
def limited(server: Server) -> Iterator[Gateway]:
    flags = ["--max-request-bytes", "4096", "--rate-limit-rps", "1", "--rate-limit-burst", "4"]
    with run_gateway(server, *flags) as running:
        yield running


@pytest.fixture(scope="module")
def impatient(server: Server) -> Iterator[Gateway]:
    with run_gateway(server, "--infer-timeout", "0.001") as running:
        yield running


@pytest.fixture(scope="module")
def nobody_home() -> Iterator[Gateway]:
    with run_gateway(None, workers=2, healthy=False) as running:
        yield running


def test_malformed_json_is_400(gateway: Gateway) -> None:
    assert_status(request(gateway, "POST", PREDICT, b'{"instances": [{'), 400)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (PREDICT, {"instances": [instance()], "instance": []}, '"instance"'),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [{"name": "hour", "shape": [1], "datatype": "FP32", "data": [1], "x": 1}]},
            '"x"',
        ),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [{"name": "hour", "contents": {"fp32_contents": [1]}, "data": [1]}]},
            '"data"',
        ),
        (
            f"/v2/models/{MODEL}/infer",
            {"inputs": [], "parameters": {"p": {"bool_param": True, "typo": 1}}},
            '"typo"',
        ),
    ],
    ids=["top-level", "nested", "nested-proto3-form", "map-value"],
)
def test_unknown_json_field_is_400_not_dropped(
    gateway: Gateway, path: str, body: object, field: str
) -> None:
    assert_status(request(gateway, "POST", path, body), 400, field)


def test_free_form_instances_keep_any_key(gateway: Gateway) -> None:
    # Struct values are the caller's features: the guard must not judge their keys.
    reply = request(gateway, "POST", PREDICT, {"instances": [{**instance(), "carrier_x": "a"}]})
    assert reply.status != 400 or "unknown field" not in reply.body["message"]


def test_unknown_query_parameter_is_400(gateway: Gateway) -> None:
    assert_status(request(gateway, "GET", "/v1/models?verbose=1"), 400, "verbose")


def test_invalid_argument_from_the_server_is_400(gateway: Gateway) -> None:
    assert_status(
        request(gateway, "POST", PREDICT, {"instances": [{"carrier": "Sky Airline"}]}), 400
    )


def test_unknown_model_is_404(gateway: Gateway) -> None:
    assert_status(request(gateway, "GET", "/v1/models/nope"), 404, "nope")
    assert_status(request(gateway, "POST", "/v1/models/nope:predict", {"instances": []}), 404)


def test_unknown_route_is_404(gateway: Gateway) -> None:
    assert_status(request(gateway, "GET", "/v3/whatever"), 404, "/v3/whatever")
    assert_status(request(gateway, "DELETE", f"/v1/models/{MODEL}"), 404)


def test_body_over_the_limit_is_413(limited: Gateway) -> None:
    body = {"instances": [instance(i) for i in range(200)]}
    assert_status(request(limited, "POST", PREDICT, body), 413)


def test_rate_limit_is_429_and_spares_health(limited: Gateway) -> None:
    replies = [request(limited, "GET", "/v1/models") for _ in range(8)]
    statuses = [r.status for r in replies]
    assert 200 in statuses and 429 in statuses, statuses
    assert_status(next(r for r in replies if r.status == 429), 429)
    assert request(limited, "GET", "/v2/health/ready").status == 200
    with grpc.insecure_channel(limited.address) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            for _ in range(8):
                stub.ListModels(prediction_pb2.ListModelsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_no_healthy_worker_is_503(nobody_home: Gateway) -> None:
    assert_status(request(nobody_home, "GET", "/v1/models"), 503)
    with grpc.insecure_channel(nobody_home.address) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListModels(prediction_pb2.ListModelsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_upstream_timeout_is_504(impatient: Gateway) -> None:
    rows = [instance(i) for i in range(20000)]
    assert_status(request(impatient, "POST", PREDICT, {"instances": rows}), 504)
    with grpc.insecure_channel(impatient.address) as channel:
        message = prediction_pb2.PredictRequest(name=MODEL)
        for row in rows:
            message.instances.add().update(row)
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(message, timeout=10)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
