"""The client package stands alone: light imports, typed, no server runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pronto
from pronto import _codec
from tests.gateway.harness import Server

ROOT = Path(__file__).resolve().parents[2]


def test_import_pulls_in_no_server_runtime() -> None:
    """Protects the promise that `pip install pronto-serving[client]` is enough: importing
    the client must not load ONNX Runtime, pydantic settings, Prometheus or pandas."""
    code = (
        "import sys, pronto; "
        "heavy = {'onnxruntime', 'pydantic', 'pydantic_settings', 'prometheus_client', "
        "'pandas', 'sklearn', 'trainer', 'server.core', 'server.settings'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.integration
def test_client_extra_installs_and_works_alone(tmp_path: Path, server: Server) -> None:
    """`pronto-serving[client]` in a fresh environment: no ONNX Runtime, pydantic or
    Prometheus client gets installed, and the client answers a real server."""
    venv, uv = tmp_path / "venv", Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(uv), "pip", "install", "-q", "-p", str(python), "-c", ".ci/constraints.txt"]
    # setuptools builds in ./build unless told otherwise: keep the work tree clean
    config = tmp_path / "build.cfg"
    config.write_text(f"[build]\nbuild_base = {tmp_path / 'build'}\n")
    env = {**os.environ, "DIST_EXTRA_CONFIG": str(config)}
    done = subprocess.run(
        [*install, ".[client]"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    code = (
        "import importlib.util as u, pronto; "
        "print([m for m in ('onnxruntime', 'pydantic', 'prometheus_client') if u.find_spec(m)]); "
        f"c = pronto.Client('127.0.0.1:{server.port}'); "
        "print(c.predict('delays', {'carrier': 'Copa Air', 'hour': 20.0}).labels)"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "['1']"]


def test_typed_package() -> None:
    assert (Path(pronto.__file__).parent / "py.typed").is_file()
    assert set(pronto.__all__) <= set(dir(pronto))


def test_raw_and_typed_requests_carry_the_same_tensors() -> None:
    inputs = {"s": np.array([["a"], ["bé"]]), "x": np.array([[1.5], [2.0]], dtype=np.float32)}
    raw = _codec.build_infer_request("m", inputs, raw=True)
    typed = _codec.build_infer_request("m", inputs, raw=False)
    assert [(t.name, t.datatype, list(t.shape)) for t in raw.inputs] == [
        ("s", "BYTES", [2, 1]),
        ("x", "FP32", [2, 1]),
    ]
    assert raw.raw_input_contents[0] == b"\x01\x00\x00\x00a\x03\x00\x00\x00b\xc3\xa9"
    assert np.frombuffer(raw.raw_input_contents[1], "<f4").tolist() == [1.5, 2.0]
    assert list(typed.inputs[0].contents.bytes_contents) == [b"a", "bé".encode()]
    assert list(typed.inputs[1].contents.fp32_contents) == [1.5, 2.0]
    assert not typed.raw_input_contents


def test_unsupported_inputs_are_refused_before_sending() -> None:
    with pytest.raises(TypeError, match="complex"):
        _codec.build_infer_request("m", {"z": np.array([1j])})
    with pytest.raises(TypeError, match="raw"):
        _codec.build_infer_request("m", {"h": np.array([1.0], dtype=np.float16)}, raw=False)
    with pytest.raises(ValueError, match="at least one input"):
        _codec.build_infer_request("m", {})
    with pytest.raises(TypeError, match="mappings"):
        _codec.build_predict_request("m", [1, 2])
    with pytest.raises(TypeError, match="list of values"):
        _codec.build_predict_request("m", {"a": [1, 2], "b": 3})
    with pytest.raises(ValueError, match="one length"):
        _codec.build_predict_request("m", {"a": [1, 2], "b": [3]})


def test_a_mapping_of_lists_is_the_columnar_form() -> None:
    columns = {"carrier": ["x", "y"], "hour": np.array([1.0, 2.5])}
    request = _codec.build_predict_request("m", columns)
    assert not request.instances
    assert list(request.inputs["carrier"]) == ["x", "y"]
    assert list(request.inputs["hour"]) == [1.0, 2.5]
    row = _codec.build_predict_request("m", {"carrier": "x", "hour": 1.0})
    assert len(row.instances) == 1 and not row.inputs


def test_backoff_grows_and_is_capped() -> None:
    policy = pronto.RetryPolicy(initial_backoff=0.1, max_backoff=0.3, jitter=0, max_attempts=5)
    error = pronto.InferenceError("UNAVAILABLE", "down")
    assert [policy.delay(n, error) for n in range(1, 6)] == [0.1, 0.2, 0.3, 0.3, None]
    assert policy.delay(1, pronto.InferenceError("INVALID_ARGUMENT", "bad")) is None
    too_large = pronto.InferenceError("RESOURCE_EXHAUSTED", "body too large", http_status=413)
    assert policy.delay(1, too_large) is None
    hinted = pronto.InferenceError("RESOURCE_EXHAUSTED", "busy", retry_after=0.7)
    assert policy.delay(1, hinted) == 0.7


def _as_transcoded(body: dict[str, object]) -> dict[str, object]:
    """``body`` as a PredictRequest's JSON: what the client sent before it wrote the body
    itself (every number a double, as in a Struct)."""
    from google.protobuf import json_format

    from server.generated.pronto.v1 import prediction_pb2 as pv1

    message = json_format.ParseDict(body, pv1.PredictRequest())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@pytest.mark.parametrize(
    ("instances", "form"),
    [
        ({"carrier": ["x", "y"], "hour": np.array([1, 2], dtype=np.int64)}, "inputs"),
        ([{"carrier": "x", "hour": np.float32(1.5)}, {"carrier": "y", "hour": 7}], "instances"),
        ({"carrier": "x", "hour": 3}, "instances"),
    ],
    ids=["columns", "rows", "one-row"],
)
def test_rest_predict_body_is_the_request_s_json(instances: object, form: str) -> None:
    body = _codec.predict_body(instances, version="2", request_id="p-1")
    request = _codec.build_predict_request("m", instances, version="2", request_id="p-1")
    from google.protobuf import json_format

    sent = json_format.MessageToDict(request, preserving_proto_field_name=True)
    sent.pop("name")
    assert _as_transcoded(body) == sent
    assert form in body
    json.dumps(body)  # plain JSON: no numpy scalars left


def test_rest_predict_reply_is_read_as_the_message_was() -> None:
    from google.protobuf import json_format

    from server.generated.pronto.v1 import prediction_pb2 as pv1

    reply = {
        "model_name": "m",
        "model_version": "3",
        "predictions": [
            {"label": "1", "probabilities": {"0": 0.25, "1": 0.75}},
            {"label": "0", "probabilities": {"0": 1, "1": 0}},
        ],
        "id": "p-9",
    }
    want = _codec.parse_predict_response(json_format.ParseDict(reply, pv1.PredictResponse()))
    got = _codec.parse_predict_json(reply)
    assert got == want
    assert all(type(v) is float for p in got.predictions for v in p.probabilities.values())
