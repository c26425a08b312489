"""Every REST route and native gRPC through one Envoy listener, and per-request balancing."""

from __future__ import annotations

import base64
import http.client
import json

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.render import PACKAGED_DESCRIPTOR_SET
from loadtest import envoy_stats
from server.generated.inference import grpc_service_pb2 as oip
from server.generated.inference import grpc_service_pb2_grpc as oip_grpc
from server.generated.pronto.v1 import prediction_pb2, prediction_pb2_grpc
from tests.gateway.harness import Gateway, request, upstream_requests
from tests.gateway.modelgen import MODEL, instance

pytestmark = pytest.mark.integration


def _infer_body() -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "carrier",
                "datatype": "BYTES",
                "shape": [2, 1],
                "contents": {
                    "bytes_contents": [
                        base64.b64encode(b"Copa Air").decode(),
                        base64.b64encode(b"Sky Airline").decode(),
                    ]
                },
            },
            {
                "name": "hour",
                "datatype": "FP32",
                "shape": [2, 1],
                "contents": {"fp32_contents": [3, 20]},
            },
        ]
    }


def _feedback_body(gateway: Gateway) -> dict[str, object]:
    """Labels for a prediction this gateway served a moment ago."""
    served = request(
        gateway, "POST", f"/v1/models/{MODEL}:predict",
        {"id": "route-check", "instances": [instance(3), instance(4)]},
    )  # fmt: skip
    assert served.status == 200 and served.body["id"] == "route-check", served.body
    return {"feedback": [{"id": "route-check", "labels": ["1", "0"]}]}


# One call per REST binding of the protos: (verb, template) -> (path, body, check); a
# callable body is built against the gateway first.
CALLS = {
    ("GET", "/v2/health/live"): ("/v2/health/live", None, lambda b: b == {"live": True}),
    ("GET", "/v2/health/ready"): ("/v2/health/ready", None, lambda b: b == {"ready": True}),
    ("GET", "/v2"): ("/v2", None, lambda b: "name" in b and "version" in b),
    ("GET", "/v2/models/{name}"): (
        f"/v2/models/{MODEL}",
        None,  # shapes are JSON numbers, as OIP's REST form has them
        lambda b: b["name"] == MODEL and b["inputs"][0]["shape"] == [-1, 1],
    ),
    ("GET", "/v2/models/{name}/versions/{version}"): (
        f"/v2/models/{MODEL}/versions/1", None, lambda b: b["name"] == MODEL,
    ),
    ("GET", "/v2/models/{name}/ready"): (f"/v2/models/{MODEL}/ready", None, lambda b: b["ready"]),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): (
        f"/v2/models/{MODEL}/versions/1/ready", None, lambda b: b["ready"],
    ),
    ("POST", "/v2/models/{model_name}/infer"): (
        f"/v2/models/{MODEL}/infer", _infer_body(), lambda b: len(b["outputs"]) == 2,
    ),
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"): (
        f"/v2/models/{MODEL}/versions/1/infer", _infer_body(), lambda b: b["model_version"] == "1",
    ),
    ("POST", "/v1/models/{name}:predict"): (
        f"/v1/models/{MODEL}:predict",
        {"instances": [instance(0), instance(1)]},
        lambda b: [set(p["probabilities"]) for p in b["predictions"]] == [{"0", "1"}] * 2,
    ),
    ("POST", "/v1/models/{name}:feedback"): (
        f"/v1/models/{MODEL}:feedback", _feedback_body, lambda b: int(b["labels"]) == 2,
    ),
    ("GET", "/v1/models"): (
        "/v1/models", None, lambda b: [m["name"] for m in b["models"]] == [MODEL],
    ),
    ("GET", "/v1/models/{name}"): (
        f"/v1/models/{MODEL}", None, lambda b: b["model"]["classes"] == ["0", "1"],
    ),
}  # fmt: skip


def _bindings() -> set[tuple[str, str]]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(PACKAGED_DESCRIPTOR_SET.read_bytes())
    found = set()
    for file in fds.file:
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    if verb:
                        found.add((verb.upper(), getattr(binding, verb)))
    return found


def test_every_rest_binding_of_the_protos_is_exercised() -> None:
    assert _bindings() == set(CALLS)


@pytest.mark.parametrize("binding", sorted(CALLS), ids=lambda b: f"{b[0]} {b[1]}")
def test_rest_route(gateway: Gateway, binding: tuple[str, str]) -> None:
    path, body, check = CALLS[binding]
    if callable(body):
        body = body(gateway)
    reply = request(gateway, binding[0], path, body)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert check(reply.body), reply.body


def test_native_grpc_passes_through_the_same_port(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        live = oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest())
        assert live.live
        request_ = prediction_pb2.PredictRequest(name=MODEL)
        request_.instances.add().update(instance(2))
        reply = prediction_pb2_grpc.PredictionServiceStub(channel).Predict(request_, timeout=5)
        assert reply.model_name == MODEL and len(reply.predictions) == 1
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            oip_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                oip.ModelMetadataRequest(name="nope"), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_one_rest_connection_is_spread_over_all_workers(gateway: Gateway) -> None:
    before = upstream_requests(gateway.admin_port)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        for i in range(40):
            reply = request(
                conn, "POST", f"/v1/models/{MODEL}:predict", {"instances": [instance(i)]}
            )
            assert reply.status == 200, reply.body
    finally:
        conn.close()
    after = upstream_requests(gateway.admin_port)
    served = {port: after[port] - before.get(port, 0) for port in after}
    assert len(served) == 2 and sum(served.values()) == 40
    assert all(count >= 5 for count in served.values()), served


def test_prometheus_stats_are_published_and_admin_is_not(gateway: Gateway) -> None:
    stats = http.client.HTTPConnection("127.0.0.1", gateway.stats_port, timeout=5)
    try:
        reply = request(stats, "GET", "/stats/prometheus")
        assert reply.status == 200
        assert "envoy_cluster_upstream_rq_total" in reply.body
        assert request(stats, "GET", "/config_dump").status == 404
    finally:
        stats.close()
    admin = request(gateway, "GET", "/config_dump")
    assert admin.status == 404  # the API listener does not reach the admin interface either


def test_request_times_are_recorded_in_10_ms_steps_up_to_100_ms(gateway: Gateway) -> None:
    """Envoy takes the bucket settings, and the overload faults' reader finds every request
    of the API listener in them once Envoy has flushed its stats."""
    before = envoy_stats.read(gateway.admin_port)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        for i in range(20):
            body = {"instances": [instance(i)]}
            reply = request(conn, "POST", f"/v1/models/{MODEL}:predict", body)
            assert reply.status == 200, reply.body
    finally:
        conn.close()
    delta = envoy_stats.settled(gateway.admin_port, before.count + 20) - before
    assert delta.count >= 20
    assert {50.0, 60.0, 70.0, 80.0, 90.0, 100.0} <= set(delta.bounds)
    p99 = delta.quantile(0.99)
    assert p99 is not None and 0 < p99 < 10_000


def test_camel_case_json_names_are_accepted(gateway: Gateway) -> None:
    # proto3 JSON accepts lowerCamel names as well; the unknown-field guard must too.
    body = _infer_body()
    for tensor in body["inputs"]:  # type: ignore[attr-defined]
        contents = tensor["contents"]
        tensor["contents"] = {
            {"bytes_contents": "bytesContents", "fp32_contents": "fp32Contents"}[k]: v
            for k, v in contents.items()
        }
    body["modelName"] = MODEL
    reply = request(gateway, "POST", f"/v2/models/{MODEL}/infer", body)
    assert reply.status == 200, reply.body


LAYOUTS = {
    "compact": {"separators": (",", ":")},
    "spaced": {},
    "indented": {"indent": 2},
    "tabs-crlf": {"indent": "\t", "separators": (",\t", ":\t")},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_unknown_field_guard_reads_any_json_layout(gateway: Gateway, layout: str) -> None:
    """Compact JSON has no whitespace between tokens, other encoders put spaces, tabs and
    line breaks there: the guard accepts a valid body and names an unknown field in each."""

    def dumps(body: object) -> bytes:
        text = json.dumps(body, **LAYOUTS[layout])  # type: ignore[arg-type]
        return text.replace("\n", "\r\n").encode() if layout == "tabs-crlf" else text.encode()

    # feedback is the transcoded body the guard walks (infer and predict bodies are
    # passed through to the worker, which reads them itself)
    path = f"/v1/models/{MODEL}:feedback"
    reply = request(gateway, "POST", path, dumps(_feedback_body(gateway)))
    assert reply.status == 200, reply.body
    body = _feedback_body(gateway)
    body["feedback"][0]["labelz"] = ["1", "0"]  # type: ignore[index]
    reply = request(gateway, "POST", path, dumps(body))
    assert reply.status == 400, reply.body
    assert '"labelz"' in reply.body["message"], reply.body
