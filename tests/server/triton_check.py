"""Open Inference Protocol conformance checks with an independent client (tritonclient).

Run as a script in its own process: tritonclient registers its own copy of the
``inference`` protos in protobuf's default pool, which clashes with the server's stubs.
Usage: ``python triton_check.py ADDRESS MODEL_REPOSITORY``; prints one JSON line with the
names of the checks that passed, exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2

ROWS = {
    "OPERA": ["Sky Airline", "Avianca", "Copa Air", "Grupo LATAM", "Avianca"],
    "TIPOVUELO": ["N", "I", "N", "I", "N"],
    "MES": [1.0, 12.0, 6.0, 10.0, 3.0],
    "DIA": [1.0, 31.0, 15.0, 2.0, 9.0],
}


def _arrays() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, values in ROWS.items():
        if isinstance(values[0], str):
            out[name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            out[name] = np.array(values, dtype=np.float32).reshape(-1, 1)
    return out


def _direct(repo: Path, version: int) -> tuple[np.ndarray, np.ndarray]:
    sess = ort.InferenceSession(str(repo / "flights" / str(version) / "model.onnx"))
    label, proba = sess.run(["label", "probabilities"], _arrays())
    return label, proba


def main(address: str, repo: Path) -> list[str]:
    passed: list[str] = []
    client = tc.InferenceServerClient(address)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("flights")
    assert client.is_model_ready("flights", "1")
    assert not client.is_model_ready("nope")
    passed.append("health")

    meta = client.get_server_metadata()
    assert meta.name == "pronto" and meta.version, meta
    passed.append("server_metadata")

    mm = client.get_model_metadata("flights")
    assert mm.name == "flights" and list(mm.versions) == ["2", "1"], mm
    assert mm.platform == "onnxruntime_onnx"
    assert [(i.name, i.datatype, list(i.shape)) for i in mm.inputs] == [
        ("OPERA", "BYTES", [-1, 1]),
        ("TIPOVUELO", "BYTES", [-1, 1]),
        ("MES", "FP32", [-1, 1]),
        ("DIA", "FP32", [-1, 1]),
    ], mm.inputs
    assert [(o.name, o.datatype, list(o.shape)) for o in mm.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ], mm.outputs
    passed.append("model_metadata")

    # raw contents (tritonclient always sends raw), both versions
    for version in ("", "1", "2"):
        inputs = []
        for name, arr in _arrays().items():
            inp = tc.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        result = client.infer("flights", inputs, model_version=version)
        label, proba = _direct(repo, int(version or 2))
        assert result.get_response().model_version == (version or "2")
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), proba)
    passed.append("infer_raw")

    # requested outputs
    result = client.infer("flights", inputs, outputs=[tc.InferRequestedOutput("probabilities")])
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    passed.append("requested_outputs")

    # typed contents, built with tritonclient's own copy of the protocol
    request = service_pb2.ModelInferRequest(model_name="flights", id="typed-1")
    for name, arr in _arrays().items():
        t = request.inputs.add(name=name, shape=list(arr.shape))
        if arr.dtype == object:
            t.datatype = "BYTES"
            t.contents.bytes_contents.extend(s.encode() for s in arr.ravel())
        else:
            t.datatype = "FP32"
            t.contents.fp32_contents.extend(arr.ravel().tolist())
    reply = client._client_stub.ModelInfer(request)
    label, proba = _direct(repo, 2)
    assert reply.id == "typed-1" and not reply.raw_output_contents
    by_name = {o.name: o for o in reply.outputs}
    assert list(by_name["label"].contents.int64_contents) == label.tolist()
    got = np.array(by_name["probabilities"].contents.fp32_contents, dtype=np.float32)
    np.testing.assert_array_equal(got.reshape(list(by_name["probabilities"].shape)), proba)
    passed.append("infer_typed")

    # every datatype, raw, through the identity model
    echo = {
        "x_fp32": np.array([[1.5, -2.0], [3.25, 0.0]], dtype=np.float32),
        "x_fp64": np.array([[1e300, -2.5], [0.1, 7.0]], dtype=np.float64),
        "x_int32": np.array([[1, -2], [2**31 - 1, 0]], dtype=np.int32),
        "x_int64": np.array([[2**40, -3], [5, 0]], dtype=np.int64),
        "x_bool": np.array([[True, False], [False, True]]),
        "x_bytes": np.array([["a", "é"], ["", "xyz"]], dtype=object),
    }
    dtypes = {"x_fp32": "FP32", "x_fp64": "FP64", "x_int32": "INT32", "x_int64": "INT64",
              "x_bool": "BOOL", "x_bytes": "BYTES"}  # fmt: skip
    inputs = []
    for name, arr in echo.items():
        inp = tc.InferInput(name, list(arr.shape), dtypes[name])
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    result = client.infer("echo", inputs)
    for name, arr in echo.items():
        got = result.as_numpy(name.replace("x_", "y_"))
        if name == "x_bytes":
            got = np.vectorize(lambda b: b.decode())(got).astype(object)
        np.testing.assert_array_equal(got, arr)
    passed.append("datatypes_raw")

    # errors surface as InferenceServerException with the gRPC status
    try:
        client.infer("nope", inputs)
        raise AssertionError("unknown model accepted")
    except tc.InferenceServerException as exc:
        assert exc.status() == "StatusCode.NOT_FOUND", exc.status()
    passed.append("errors")
    client.close()
    return passed


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
