"""The Open Inference Protocol's REST infer through Envoy, as KServe's and Triton's REST
clients call it: tensors in ``data``, Triton's binary tensor data both ways, and
tritonclient's own HTTP client; every answer equal to gRPC ModelInfer's for the same rows."""

from __future__ import annotations

import http.client
import json
import struct

import grpc
import numpy as np
import pytest
import tritonclient.http as triton_http

from server.generated.inference import grpc_service_pb2 as oip
from server.generated.inference import grpc_service_pb2_grpc as oip_grpc
from tests.gateway.harness import Gateway, Server, request
from tests.gateway.modelgen import CARRIERS, MODEL

pytestmark = pytest.mark.integration

CARRIER = [CARRIERS[i % 3] for i in range(5)]
HOUR = [3.0, 20.0, 7.5, 23.0, 0.0]


def _grpc_answer(server: Server) -> tuple[np.ndarray, np.ndarray]:
    """label and probabilities of the rows, from gRPC ModelInfer straight to a worker."""
    call = oip.ModelInferRequest(model_name=MODEL)
    carrier = call.inputs.add(name="carrier", datatype="BYTES", shape=[5, 1])
    carrier.contents.bytes_contents.extend(c.encode() for c in CARRIER)
    hour = call.inputs.add(name="hour", datatype="FP32", shape=[5, 1])
    hour.contents.fp32_contents.extend(HOUR)
    with grpc.insecure_channel(f"127.0.0.1:{server.base_port}") as channel:
        reply = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(call, timeout=10)
    outputs = {o.name: o for o in reply.outputs}
    label = np.array(outputs["label"].contents.int64_contents, dtype=np.int64)
    proba = np.array(outputs["probabilities"].contents.fp32_contents, dtype=np.float32)
    return label, proba.reshape(5, 2)


@pytest.fixture(scope="module")
def expected(server: Server) -> tuple[np.ndarray, np.ndarray]:
    return _grpc_answer(server)


def _rest_body(**extra: object) -> dict[str, object]:
    return {
        "id": "kserve-1",
        "inputs": [
            {"name": "carrier", "shape": [5, 1], "datatype": "BYTES", "data": CARRIER},
            {"name": "hour", "shape": [5, 1], "datatype": "FP32", "data": [[h] for h in HOUR]},
        ],
        **extra,
    }


PATHS = [f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/1/infer"]


@pytest.mark.parametrize("path", PATHS)
def test_the_rest_form_is_answered_in_the_rest_form(
    gateway: Gateway, expected: tuple[np.ndarray, np.ndarray], path: str
) -> None:
    reply = request(gateway, "POST", path, _rest_body())
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.body
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "1", "kserve-1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [5]
    assert outputs["probabilities"]["shape"] == [5, 2]
    np.testing.assert_array_equal(outputs["label"]["data"], expected[0])
    np.testing.assert_array_equal(
        np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(5, 2), expected[1]
    )


def test_binary_tensor_data_goes_both_ways(
    gateway: Gateway, expected: tuple[np.ndarray, np.ndarray]
) -> None:
    carrier = b"".join(struct.pack("<I", len(c)) + c.encode() for c in CARRIER)
    hour = np.array(HOUR, dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "carrier", "shape": [5, 1], "datatype": "BYTES",
                 "parameters": {"binary_data_size": len(carrier)}},
                {"name": "hour", "shape": [5, 1], "datatype": "FP32",
                 "parameters": {"binary_data_size": len(hour)}},
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request(
            "POST",
            f"/v2/models/{MODEL}/infer",
            body=header + carrier + hour,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            },
        )
        reply = conn.getresponse()
        data = reply.read()
        length = reply.getheader("inference-header-content-length")
        assert reply.status == 200, data
    finally:
        conn.close()
    assert length is not None and reply.getheader("content-type") == "application/octet-stream"
    head = json.loads(data[: int(length)])
    (output,) = head["outputs"]
    assert output["name"] == "probabilities" and "data" not in output
    assert output["parameters"] == {"binary_data_size": 40}
    np.testing.assert_array_equal(
        np.frombuffer(data[int(length) :], dtype=np.float32).reshape(5, 2), expected[1]
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_calls_the_gateway(
    gateway: Gateway, expected: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    """tritonclient's HTTP client as its users call it: binary tensor data is its default
    both ways; ``binary_data=False`` sends and asks for ``data``."""
    client = triton_http.InferenceServerClient(url=gateway.address)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL)
        # inputs built from the model's metadata, as its users do
        metadata = client.get_model_metadata(MODEL)
        specs = {i["name"]: i for i in metadata["inputs"]}
        assert specs["carrier"]["shape"] == [-1, 1] and specs["hour"]["datatype"] == "FP32"
        values = {
            "carrier": np.array(CARRIER, dtype=object).reshape(5, 1),
            "hour": np.array(HOUR, dtype=np.float32).reshape(5, 1),
        }
        inputs = []
        for name, spec in specs.items():
            shape = [5 if d == -1 else d for d in spec["shape"]]
            inputs.append(triton_http.InferInput(name, shape, spec["datatype"]))
            inputs[-1].set_data_from_numpy(values[name], binary)
        outputs = [
            triton_http.InferRequestedOutput("label", binary_data=binary),
            triton_http.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer(MODEL, inputs, outputs=outputs, request_id="t-1")
        default = client.infer(MODEL, inputs)  # every output, in binary
    finally:
        client.close()
    for answer in (result, default):
        np.testing.assert_array_equal(answer.as_numpy("label"), expected[0])
        np.testing.assert_array_equal(answer.as_numpy("probabilities"), expected[1])
    assert result.get_response()["id"] == "t-1"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_rest_body(inputs=[{"name": "hour", "shape": [1, 1], "datatype": "FP32", "data": ["x"]}]),
         "its data must be numbers, got a string"),
        (_rest_body(inputs=[{"name": "hour", "shape": [2, 1], "datatype": "FP32", "data": [1]}]),
         "has 1 values, shape [2, 1] needs 2"),
        (_rest_body(outputs=[{"name": "nope"}]), "nope"),
    ],
    ids=["string-in-fp32", "count", "unknown-output"],
)  # fmt: skip
def test_bad_rest_bodies_are_400_with_the_reason(
    gateway: Gateway, body: dict[str, object], fragment: str
) -> None:
    reply = request(gateway, "POST", f"/v2/models/{MODEL}/infer", body)
    assert reply.status == 400, reply.body
    assert reply.body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0], reply.body
    assert fragment in reply.body["message"], reply.body


def test_binary_data_past_its_header_is_400(gateway: Gateway) -> None:
    header = json.dumps(
        {"inputs": [{"name": "hour", "shape": [1, 1], "datatype": "FP32",
                     "parameters": {"binary_data_size": 8}}]}
    ).encode()  # fmt: skip
    reply = request(
        gateway, "POST", f"/v2/models/{MODEL}/infer", header + b"\0" * 4,
        {"inference-header-content-length": str(len(header))},
    )  # fmt: skip
    assert reply.status == 400, reply.body
    assert "binary_data_size 8 runs past the binary data" in reply.body["message"], reply.body


def test_tritonclient_http_reads_the_error_of_a_refused_request(gateway: Gateway) -> None:
    """OIP's REST errors carry "error", which tritonclient raises with the server's text."""
    from tritonclient.utils import InferenceServerException

    client = triton_http.InferenceServerClient(url=gateway.address)
    try:
        hour = triton_http.InferInput("hour", [1, 1], "FP32")
        hour.set_data_from_numpy(np.array([[3.0]], dtype=np.float32), binary_data=False)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [hour])
        with pytest.raises(InferenceServerException) as missing:
            client.get_model_metadata("nope")
    finally:
        client.close()
    # the server's text itself, not the client's note that it could not read the reply
    for error, status, word in ((caught, "400", "carrier"), (missing, "404", "nope")):
        text = error.value.message()
        assert error.value.status() == status and word in text, text
        assert "exception occurred in the client" not in text, text
