"""Fast in-process tests of the core: decoding, validation, registry, features, settings."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pronto_cli.flags import add_settings_arguments, settings_from_args
from pronto_cli.procs import serve_command
from pronto_contract import ManifestError, VersionPolicy, select_versions
from server.core import InferenceCore
from server.datatypes import DATATYPES, decode_bytes_raw, encode_bytes_raw
from server.errors import (
    INTERNAL_MESSAGE,
    InvalidInput,
    ModelNotFound,
    ProntoError,
    ServerNotReady,
)
from server.features import columns_from_instances
from server.generated.inference import grpc_service_pb2 as pb
from server.metrics import RequestRecorder
from server.model import FeatureSpec, inline_rows, load_model
from server.oip_codec import decode_infer_request, encode_infer_response
from server.repository import Registry
from server.settings import ServeSettings
from server.status import rpc
from tests.server.oip_requests import infer_request, rows
from tests.support import load_models

LIMIT = 1 << 22

NUMERIC = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64,
           "BOOL": np.bool_}  # fmt: skip


@pytest.fixture(scope="module")
def core(model_repo: Path) -> InferenceCore:
    registry = Registry()
    handles = load_models(model_repo, latest=2)
    for handle in handles:
        handle.inline_rows = 0  # offload_rows alone decides what leaves the event loop
    registry.replace(handles)
    c = InferenceCore(registry, offload_rows=64)
    c.ready = True
    return c


def _tensor_request(arr: np.ndarray, datatype: str, raw: bool) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype=datatype, shape=list(arr.shape))
    dt = DATATYPES[datatype]
    if raw:
        req.raw_input_contents.append(
            encode_bytes_raw(arr) if datatype == "BYTES" else arr.astype(dt.dtype).tobytes()
        )
    elif datatype == "BYTES":
        t.contents.bytes_contents.extend(s.encode() for s in arr.ravel())
    else:
        getattr(t.contents, dt.field).extend(arr.ravel().tolist())  # type: ignore[arg-type]
    return req


@settings(max_examples=60, deadline=None)
@given(
    datatype=st.sampled_from(sorted(NUMERIC)),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5),
    raw=st.booleans(),
    data=st.data(),
)
def test_numeric_decode_round_trip(datatype: str, shape: Any, raw: bool, data: Any) -> None:
    dtype = NUMERIC[datatype]
    elements = (
        st.floats(allow_nan=False, allow_infinity=False, width=32 if dtype is np.float32 else 64)
        if np.dtype(dtype).kind == "f"
        else None
    )
    arr = data.draw(hnp.arrays(dtype, shape, elements=elements))
    decoded = decode_infer_request(_tensor_request(arr, datatype, raw), LIMIT, LIMIT)
    (tensor,) = decoded.inputs
    assert tensor.datatype.name == datatype
    np.testing.assert_array_equal(tensor.data, arr)
    assert decoded.raw_output is raw


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=12), st.booleans())
def test_bytes_decode_round_trip(items: list[str], raw: bool) -> None:
    arr = np.array(items, dtype=object).reshape(-1, 1)
    decoded = decode_infer_request(_tensor_request(arr, "BYTES", raw), LIMIT, LIMIT)
    assert decoded.inputs[0].data.ravel().tolist() == items
    assert decode_bytes_raw(encode_bytes_raw(arr), len(items)) == [s.encode() for s in items]


@given(st.binary(max_size=40), st.integers(0, 6))
def test_raw_bytes_parser_never_crashes(raw: bytes, count: int) -> None:
    try:
        items = decode_bytes_raw(raw, count)
    except ValueError:
        return
    assert len(items) == count


def test_float_raw_decode_does_not_copy() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(3, 2)
    req = _tensor_request(arr, "FP32", raw=True)
    tensor = decode_infer_request(req, LIMIT, LIMIT).inputs[0]
    assert not tensor.data.flags.owndata  # a view over the request's bytes


@pytest.mark.parametrize("raw", [False, True])
def test_core_infer_matches_onnxruntime(core: InferenceCore, model_repo: Path, raw: bool) -> None:
    cols = rows(100)  # above offload_rows: exercises the helper thread
    request = decode_infer_request(infer_request(cols, raw=raw, version="1"), LIMIT, LIMIT)
    response = asyncio.run(core.infer(request))
    assert response.model_version == "1" and response.raw_output is raw
    sess = ort.InferenceSession(str(model_repo / "flights" / "1" / "model.onnx"))
    feeds = {t.name: t.data for t in request.inputs}
    label, proba = sess.run(["label", "probabilities"], feeds)
    got = {t.name: t.data for t in response.outputs}
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_array_equal(got["probabilities"], proba)
    msg = encode_infer_response(response)
    if raw:
        assert (
            np.frombuffer(msg.raw_output_contents[1], np.float32).tolist() == proba.ravel().tolist()
        )
    else:
        assert list(msg.outputs[1].contents.fp32_contents) == proba.ravel().tolist()


def test_core_predict(core: InferenceCore) -> None:
    cols = rows(4)
    instances = [{k: v[i] for k, v in cols.items()} for i in range(4)]
    result = asyncio.run(core.predict("flights", "", instances))
    assert result.classes == ["0", "1"] and len(result.labels) == 4
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_core_not_ready(model_repo: Path) -> None:
    c = InferenceCore(Registry())
    request = decode_infer_request(infer_request(), LIMIT, LIMIT)
    with pytest.raises(ServerNotReady):
        asyncio.run(c.infer(request))
    assert not c.server_ready() and not c.model_ready("flights")


def test_registry_versions_and_swap(core: InferenceCore) -> None:
    reg = core.registry
    assert reg.get("flights").version == 2
    assert reg.get("flights", "1").version == 1
    assert reg.versions("flights") == ["2", "1"]
    for name, version in [("nope", ""), ("flights", "3"), ("flights", "x")]:
        with pytest.raises(ModelNotFound):
            reg.get(name, version)
    swapped = Registry()
    swapped.replace([reg.get("flights", "1")])
    assert swapped.get("flights").version == 1 and swapped.names() == ["flights"]


def test_select_versions(model_repo: Path, tmp_path: Path) -> None:
    found = select_versions(model_repo, policy=VersionPolicy(latest=5))
    assert sorted(found) == ["bare", "echo", "flights"]
    assert list(found["flights"]) == [2, 1]  # ".tmp-3" is ignored
    assert list(select_versions(model_repo, ["flights"])["flights"]) == [2]
    with pytest.raises(FileNotFoundError, match="missing"):
        select_versions(model_repo, ["missing"])
    with pytest.raises(FileNotFoundError):
        select_versions(tmp_path / "absent")


FEATURES = (
    FeatureSpec("cat", "categorical", ("a",), DATATYPES["BYTES"]),
    FeatureSpec("num", "numeric", (), DATATYPES["FP32"]),
)


def test_columns_from_instances() -> None:
    feeds = columns_from_instances(FEATURES, [{"cat": 7.0, "num": 1}, {"cat": "b", "num": "2.5"}])
    assert feeds["cat"].tolist() == [["7"], ["b"]]
    assert feeds["num"].dtype == np.float32 and feeds["num"].tolist() == [[1.0], [2.5]]


@pytest.mark.parametrize(
    "instances, message",
    [
        ([{"cat": "a"}], "instance 0: missing features: num"),
        ([{"cat": "a", "num": 1, "x": 2}], "instance 0: unknown features: x"),
        ([{"cat": "a", "x": 2}], "unknown features: x"),
        ([{"cat": "a", "num": "abc"}], "feature 'num' must be numeric"),
        ([{"cat": "a", "num": float("inf")}], "feature 'num' has a null, NaN or Inf"),
        ([{"cat": None, "num": 1}], "feature 'cat' must be a string or number"),
    ],
)
def test_columns_errors(instances: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        columns_from_instances(FEATURES, instances)


class _Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise grpc.aio.AbortError()


class _Servicer:
    def __init__(self) -> None:
        self.recorder = RequestRecorder()

    @rpc
    async def Boom(self, request: Any, context: Any) -> Any:
        raise KeyError("secret internals")

    @rpc
    async def Bad(self, request: Any, context: Any) -> Any:
        raise InvalidInput("bad thing", "bad")

    @rpc
    async def Assert(self, request: Any, context: Any) -> Any:
        assert request.model_name == "other", "internal detail"


def _logged_errors(caplog: pytest.LogCaptureFixture) -> list[tuple[str, type | None, str]]:
    """(message, exception type, traceback text) of each ERROR record of the mapping."""
    logged = []
    for r in caplog.records:
        if r.name == "server.status" and r.levelno >= logging.ERROR:
            kind = r.exc_info[0] if r.exc_info else None
            trace = logging.Formatter().formatException(r.exc_info) if r.exc_info else ""
            logged.append((r.getMessage(), kind, trace))
    caplog.clear()
    return logged


def test_errors_map_to_status_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="server.status")
    servicer, ctx = _Servicer(), _Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(servicer.Boom(pb.ModelInferRequest(model_name="m"), ctx))
    assert ctx.aborted == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    # the caller gets the generic message; the log gets the method and the traceback
    [(message, kind, trace)] = _logged_errors(caplog)
    assert message.startswith("unexpected error in Boom") and kind is KeyError
    assert "Traceback" in trace and "secret internals" in trace
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(servicer.Bad(pb.ModelInferRequest(model_name="m"), ctx))
    assert ctx.aborted == (grpc.StatusCode.INVALID_ARGUMENT, "bad thing")
    assert _logged_errors(caplog) == []  # a refused request is no error of the server
    # a failed assertion is a bug like any other: INTERNAL, never UNKNOWN with its text
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(servicer.Assert(pb.ModelInferRequest(model_name="m"), ctx))
    assert ctx.aborted == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    [(message, kind, trace)] = _logged_errors(caplog)
    assert message.startswith("unexpected error in Assert") and kind is AssertionError
    assert "internal detail" in trace
    rec = servicer.recorder
    assert rec.in_flight == 0
    assert rec._counts[("m", "", "Boom", "INTERNAL")] == 1
    assert rec._counts[("m", "", "Assert", "INTERNAL")] == 1
    assert rec._reasons["bad"] == 1


def test_settings_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRONTO_WORKERS", "3")
    monkeypatch.setenv("PRONTO_PORT", "6000")
    monkeypatch.setenv("PRONTO_MODELS", '["a", "b"]')
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ServeSettings)
    s = settings_from_args(ServeSettings, parser.parse_args(["--port", "7000"]))
    assert (s.workers, s.port, s.models) == (3, 7000, ["a", "b"])
    assert s.grace_period == 20.0 and s.max_message_bytes == 16 * 1024 * 1024
    for name, field in ServeSettings.model_fields.items():
        assert field.description, name


def test_serve_command() -> None:
    cmd = serve_command(ServeSettings(workers=2, port=1234, models=["a"]))
    assert cmd[-6:] == ["--models", "a", "--workers", "2", "--port", "1234"]


_NAMES = ["OPERA", "TIPOVUELO", "MES", "DIA", "OTHER"]
_TYPES = [*sorted(DATATYPES), "FP99"]


@st.composite
def _any_request(draw: Any) -> pb.ModelInferRequest:
    """Arbitrary, mostly malformed, ModelInferRequests for the flights model."""
    req = pb.ModelInferRequest(model_name="flights")
    raw = draw(st.booleans())
    for name in draw(st.lists(st.sampled_from(_NAMES), max_size=5)):
        t = req.inputs.add(name=name, datatype=draw(st.sampled_from(_TYPES)))
        t.shape.extend(draw(st.lists(st.integers(-2, 4), max_size=3)))
        if raw:
            req.raw_input_contents.append(draw(st.binary(max_size=40)))
        elif t.datatype == "BYTES":
            t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=6), max_size=5)))
        else:
            floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
            t.contents.fp32_contents.extend(draw(st.lists(floats, max_size=5)))
            t.contents.int64_contents.extend(draw(st.lists(st.integers(-5, 5), max_size=5)))
    return req


@settings(max_examples=300, deadline=None)
@given(_any_request())
def test_arbitrary_requests_fail_only_with_domain_errors(
    core: InferenceCore, request: pb.ModelInferRequest
) -> None:
    # whatever arrives, the answer is a result or a ProntoError (a status), never a crash
    with contextlib.suppress(ProntoError):
        asyncio.run(core.infer(decode_infer_request(request, LIMIT, 1000)))


def test_manifest_classes_that_disagree_with_the_graph(model_repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m" / "1"
    shutil.copytree(model_repo / "flights" / "1", folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["signature"]["classes"] = ["a", "b", "c"]
    (folder / "model.json").write_text(json.dumps(manifest))
    handle = load_model("m", 1, folder)
    assert handle.classes is None
    assert [f.kind for f in handle.features] == ["categorical", "categorical", "numeric", "numeric"]


def test_a_manifest_from_a_newer_trainer_is_not_served(model_repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m" / "1"
    shutil.copytree(model_repo / "flights" / "1", folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["schema_version"] = 99
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="schema_version 99 is newer"):
        load_model("m", 1, folder)


def test_observer_sees_every_served_batch(core: InferenceCore) -> None:
    seen: list[tuple[str, list[str], Any, int]] = []

    class Observer:
        def observe(self, handle: Any, feeds: Any, proba: Any, rows: int) -> None:
            seen.append((handle.name, sorted(feeds), None if proba is None else proba.shape, rows))

    observed = InferenceCore(core.registry, observer=Observer())
    observed.ready = True
    asyncio.run(observed.infer(decode_infer_request(infer_request(rows(3)), LIMIT, LIMIT)))
    cols = rows(2)
    asyncio.run(
        observed.predict("flights", "", [{k: v[i] for k, v in cols.items()} for i in range(2)])
    )
    request = decode_infer_request(infer_request(rows(1)), LIMIT, LIMIT)
    request.outputs = ["label"]
    asyncio.run(observed.infer(request))
    features = sorted(rows(1))
    assert seen == [
        ("flights", features, (3, 2), 3),
        ("flights", features, (2, 2), 2),
        ("flights", features, None, 1),
    ]


def test_cheap_runs_stay_on_the_event_loop_past_the_offload_size(model_repo: Path) -> None:
    """Below ``--offload-rows`` a run stays on the event loop's thread; past it, as long as
    the warm-up's timing puts it within the budget (``inline_rows``); beyond, the helper
    thread runs it."""
    registry = Registry()
    registry.replace(load_models(model_repo))
    handle = registry.get("flights")
    assert handle.inline_rows > 0  # timed at load: a single row runs far under 2 ms
    threads: list[str] = []
    session = handle.session

    class Recorded:
        def run(self, outputs: Any, feeds: Any) -> Any:
            threads.append(threading.current_thread().name)
            return session.run(outputs, feeds)

    handle.session = Recorded()  # type: ignore[assignment]
    handle.inline_rows = 300  # as if the warm-up had timed 300 rows within the budget
    core = InferenceCore(registry)
    core.ready = True
    assert core.offload_rows == ServeSettings().offload_rows == 256
    try:
        for n in (1, 255, 256, 300, 301):
            request = decode_infer_request(infer_request(rows(n)), 1 << 20, 1 << 20)
            assert len(asyncio.run(core.infer(request)).outputs[0].data) == n
        handle.inline_rows = 0  # a model too slow for any run past the offload size
        request = decode_infer_request(infer_request(rows(256)), 1 << 20, 1 << 20)
        asyncio.run(core.infer(request))
    finally:
        core.close()
    main = threading.current_thread().name
    assert threads[:4] == [main] * 4
    assert threads[4] != main and threads[4].startswith("ort")
    assert threads[5] != main and threads[5].startswith("ort")


@pytest.mark.parametrize(
    ("one", "per_row", "expected"),
    [
        (0.0001, 0.000001, 1901),  # 0.1 ms fixed + 1 µs per row: (2 - 0.1) ms / 1 µs + 1
        (0.0001, 0.0, 16_384),  # no measurable cost per row: the cap
        (0.0025, 0.000001, 0),  # one row already takes more than the budget
        (0.0001, 0.0005, 4),  # 0.5 ms per row
    ],
)
def test_inline_rows_from_timed_runs(one: float, per_row: float, expected: int) -> None:
    calls: list[int] = []

    def run_seconds(rows: int) -> float:
        calls.append(rows)
        return one + per_row * (rows - 1)

    assert inline_rows(run_seconds, budget=0.002) == expected
    assert sorted(set(calls)) == ([1] if one >= 0.002 else [1, 64])
    # the best of three: one stall in the timing does not shrink the estimate
    stalls = iter([1.0] + [0.0] * 5)
    assert inline_rows(lambda rows: next(stalls) + one + per_row * (rows - 1), 0.002) == expected


@pytest.mark.parametrize(("batch", "timed"), [(None, True), (4, False)])
def test_only_models_with_a_free_batch_axis_are_timed(
    tmp_path: Path, batch: int | None, timed: bool
) -> None:
    """The warm-up times bigger runs only when the batch axis can grow; a fixed one keeps
    every run past ``--offload-rows`` on the helper thread."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    save(model, str(folder / "model.onnx"))
    handle = load_model("m", 1, folder)
    assert (handle.inline_rows > 0) is timed
