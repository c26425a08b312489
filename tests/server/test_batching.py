"""Micro-batching: every caller gets exactly its own rows, equal to an unbatched run."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace as Namespace
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from pronto_contract import Manifest
from server.batching import Batcher, BatchingConfig
from server.core import InferenceCore, InferRequest
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.model import ModelHandle, load_model
from server.oip_codec import decode_infer_request
from server.repository import Registry
from tests.server.conftest import start_server
from tests.server.modelgen import CATEGORIES, sample_rows
from tests.server.oip_requests import infer_request
from tests.support import stop_process

OUTPUT_CHOICES = [
    ["label", "probabilities"],
    ["probabilities"],
    ["label"],
    ["probabilities", "label"],
]


@pytest.fixture(scope="module")
def repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batching")
    shutil.copytree(model_repo / "flights", root / "flights")
    widths = root / "widths" / "1"
    widths.mkdir(parents=True)
    onnx.save(_widths_model(), widths / "model.onnx")
    return root


@pytest.fixture(scope="module")
def flights(repo: Path) -> ModelHandle:
    handle = load_model("flights", 2, repo / "flights" / "2")
    handle.inline_rows = 0  # the tests' offload_rows alone decides what leaves the loop
    return handle


def _widths_model() -> onnx.ModelProto:
    """y = 2x over FP32 [N, any]: requests of different widths must never share a run."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "widths", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def decode(request: Any) -> InferRequest:
    return decode_infer_request(request, 10**7, 10**6)


def flight_feeds(rows: int, seed: int) -> dict[str, np.ndarray]:
    cols = sample_rows(rows, seed)
    feeds: dict[str, np.ndarray] = {}
    for name, values in cols.items():
        dtype: Any = object if name in CATEGORIES else np.float32
        feeds[name] = np.array(values, dtype=dtype).reshape(rows, 1)
    return feeds


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        # a batched run may round float32 differently in the last bit (vectorised kernels)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@given(
    requests=st.lists(
        st.tuples(
            st.integers(1, 6),
            st.integers(0, 10_000),
            st.sampled_from(range(len(OUTPUT_CHOICES))),
        ),
        min_size=1,
        max_size=40,
    ),
    max_batch=st.integers(2, 24),
    delay_us=st.sampled_from([0, 50, 300]),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_request_mixes(
    flights: ModelHandle, requests: list[tuple[int, int, int]], max_batch: int, delay_us: int
) -> None:
    batcher = Batcher(flights, BatchingConfig(max_batch, delay_us), offload_rows=16)
    cases = [(flight_feeds(rows, seed), OUTPUT_CHOICES[o], rows) for rows, seed, o in requests]

    async def main() -> list[list[np.ndarray]]:
        return await asyncio.gather(*(batcher.run(f, list(o), r) for f, o, r in cases))

    results = asyncio.run(main())
    for (feeds, outputs, _), got in zip(cases, results, strict=True):
        assert_same(got, flights.run(feeds, list(outputs)))
    assert batcher.requests <= len(cases)  # requests at or above max_batch run alone


def test_concurrent_callers_are_merged(flights: ModelHandle) -> None:
    batcher = Batcher(flights, BatchingConfig(64, 2000), offload_rows=256)
    cases = [flight_feeds(1 + i % 3, i) for i in range(40)]
    outputs = ["label", "probabilities"]

    async def main() -> list[list[np.ndarray]]:
        return await asyncio.gather(*(batcher.run(f, outputs, len(f["MES"])) for f in cases))

    for feeds, got in zip(cases, asyncio.run(main()), strict=True):
        assert_same(got, flights.run(feeds, outputs))
    assert batcher.requests == 40 and batcher.batches <= 2


def test_different_shapes_are_not_mixed(repo: Path) -> None:
    handle = load_model("widths", 1, repo / "widths" / "1")
    batcher = Batcher(handle, BatchingConfig(32, 1000), offload_rows=256)
    rng = np.random.default_rng(0)
    cases = [rng.random((1 + i % 2, 1 + i % 4), dtype=np.float32) for i in range(24)]

    async def main() -> list[list[np.ndarray]]:
        return await asyncio.gather(*(batcher.run({"x": x}, ["y"], x.shape[0]) for x in cases))

    for x, (y,) in zip(cases, asyncio.run(main()), strict=True):
        np.testing.assert_array_equal(y, 2 * x)
    assert batcher.batches == 4  # one per width


def test_large_batches_run_off_the_loop(flights: ModelHandle) -> None:
    batcher = Batcher(flights, BatchingConfig(40, 1000), offload_rows=8)
    cases = [flight_feeds(5, i) for i in range(16)]

    async def main() -> list[list[np.ndarray]]:
        return await asyncio.gather(*(batcher.run(f, ["probabilities"], 5) for f in cases))

    for feeds, got in zip(cases, asyncio.run(main()), strict=True):
        assert_same(got, flights.run(feeds, ["probabilities"]))


def test_core_uses_the_batcher(flights: ModelHandle, repo: Path) -> None:
    handle = load_model("flights", 1, repo / "flights" / "1")
    handle.batcher = Batcher(handle, BatchingConfig(32, 500), offload_rows=256)
    registry = Registry()
    registry.replace([handle])
    core = InferenceCore(registry)
    core.ready = True
    proto = [decode(infer_request(sample_rows(1 + i % 3, i), version="1")) for i in range(10)]

    async def main() -> list[Any]:
        return await asyncio.gather(*(core.infer(r) for r in proto))

    replies = asyncio.run(main())
    assert handle.batcher.batches == 1
    for request, reply in zip(proto, replies, strict=True):
        want = handle.run({t.name: t.data for t in request.inputs}, handle.output_names)
        assert_same([t.data for t in reply.outputs], want)
    core.close()


def test_config_from_manifest_wins() -> None:
    none = Manifest.parse({})
    assert BatchingConfig.resolve(none, 0, 500) is None
    assert BatchingConfig.resolve(none, 32, 100) == BatchingConfig(32, 100)
    on = Manifest.parse({"batching": {"max_batch_size": 8, "max_queue_delay_us": 50}})
    assert BatchingConfig.resolve(on, 0, 500) == BatchingConfig(8, 50)
    # an explicit null turns batching off for this model, whatever the server default
    off = Manifest.parse({"batching": None})
    assert BatchingConfig.resolve(off, 32, 100) is None
    # and survives a write and a read (absent and null must not collapse into one)
    assert BatchingConfig.resolve(Manifest.parse(json.loads(off.to_json())), 32, 100) is None
    assert Manifest.parse(json.loads(none.to_json())).has_batching_entry is False


@pytest.mark.integration
def test_server_with_batching(repo: Path, tmp_path: Path) -> None:
    """Real workers, many concurrent callers with distinct rows, each gets its own answer."""
    served = tmp_path / "models"
    shutil.copytree(repo / "flights", served / "flights")
    manifest = served / "flights" / "2" / "model.json"
    data = json.loads(manifest.read_text())
    # a long delay: the callers below meet however slowly this host starts their requests
    # (a queue also runs as soon as it holds 32 rows, so the test does not wait it out)
    data["batching"] = {"max_batch_size": 32, "max_queue_delay_us": 200_000}
    manifest.write_text(json.dumps(data))
    local = load_model("flights", 2, served / "flights" / "2")
    srv = start_server(served, tmp_path / "serve.log", 2)
    try:
        columns = [sample_rows(1 + i % 4, 100 + i) for i in range(64)]

        async def main() -> list[Any]:
            async with grpc.aio.insecure_channel(srv.worker_address(0)) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                calls = [stub.ModelInfer(infer_request(c, version="2")) for c in columns]
                return await asyncio.gather(*calls)

        replies = asyncio.run(main())
        assert "flights version 2: micro-batching" in srv.log.read_text()
        for cols, reply in zip(columns, replies, strict=True):
            feeds = {t.name: t.data for t in decode(infer_request(cols)).inputs}
            label, proba = local.run(feeds, ["label", "probabilities"])
            outputs = {o.name: o for o in reply.outputs}
            got_proba = np.array(outputs["probabilities"].contents.fp32_contents).reshape(-1, 2)
            np.testing.assert_allclose(got_proba, proba, rtol=1e-5, atol=1e-6)
            assert list(outputs["label"].contents.int64_contents) == label.tolist()
        # merged runs reach /metrics: requests per run, and the queue delay. Workers flush
        # their metrics on a timer, so a poll may see the first run alone: wait for a run
        # that merged callers (more requests recorded than runs)
        series = '{model="flights",version="2"}'
        deadline = time.monotonic() + 30
        while True:
            text = (
                urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics")
                .read()
                .decode()
            )
            requests = _metric(text, f"pronto_batch_requests_sum{series}") or 0.0
            runs = _metric(text, f"pronto_batch_requests_count{series}") or 0.0
            if 0 < runs < requests or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert 0 < runs < requests <= len(columns)
        assert (_metric(text, f"pronto_batch_queue_delay_seconds_count{series}") or 0) > 0
    finally:
        stop_process(srv.proc)


def _metric(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _stub(session: Any) -> Any:
    """A model handle as far as the batcher needs one."""
    return Namespace(session=session, name="stub", version_str="1", inline_rows=0)


class _Picky:
    """A stand-in session: doubles ``x``, refuses negative values, optionally adds a scalar."""

    def __init__(self, scalar: bool = False) -> None:
        self.scalar = scalar
        self.calls = 0

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        x = feeds["x"]
        if (x < 0).any():
            raise ValueError("negative input")
        return [2 * x, np.float32(x.sum())] if self.scalar else [2 * x]


def _gather(batcher: Batcher, xs: list[np.ndarray], outputs: list[str]) -> list[Any]:
    async def main() -> list[Any]:
        calls = (batcher.run({"x": x}, outputs, x.shape[0]) for x in xs)
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(main())


def test_one_bad_request_does_not_fail_the_batch() -> None:
    session = _Picky()
    batcher = Batcher(_stub(session), BatchingConfig(16, 1000), 256)  # type: ignore[arg-type]
    xs = [np.full((2, 3), v, dtype=np.float32) for v in (1.0, -1.0, 3.0)]
    good1, bad, good3 = _gather(batcher, xs, ["y"])
    assert isinstance(bad, ValueError)
    np.testing.assert_array_equal(good1[0], 2 * xs[0])
    np.testing.assert_array_equal(good3[0], 2 * xs[2])
    assert session.calls == 1 + 3  # the merged run, then each caller alone


def test_outputs_without_batch_axis_run_alone() -> None:
    batcher = Batcher(_stub(_Picky(scalar=True)), BatchingConfig(16, 1000), 256)  # type: ignore[arg-type]
    xs = [np.full((1 + i, 2), i, dtype=np.float32) for i in range(4)]
    for x, (y, total) in zip(xs, _gather(batcher, xs, ["y", "sum"]), strict=True):
        np.testing.assert_array_equal(y, 2 * x)
        assert total == x.sum()


def test_lone_caller_stops_waiting() -> None:
    """Sequential callers cannot be merged: after a few batches they no longer wait."""
    batcher = Batcher(_stub(_Picky()), BatchingConfig(16, 200_000), 256)  # type: ignore[arg-type]
    x = np.ones((1, 2), dtype=np.float32)
    waited: list[bool] = []
    decide = batcher._wait

    def recorded() -> bool:
        waited.append(decide())
        return waited[-1]

    batcher._wait = recorded  # type: ignore[method-assign]

    async def main() -> None:
        for _ in range(20):
            await batcher.run({"x": x}, ["y"], 1)

    asyncio.run(main())
    # each lone batch lowers the merge average: the first few wait the 0.2 s delay, the
    # rest run at once (no probe within PROBE_EVERY requests)
    assert len(waited) == 20 and waited[0]
    first_direct = waited.index(False)
    assert first_direct <= 5 and not any(waited[first_direct:]), waited
    assert batcher.batches == 20
    batcher._wait = decide  # type: ignore[method-assign]
    # concurrency that comes back is found by a probe within PROBE_EVERY requests, and
    # from then on callers that arrive together are merged again
    per_burst = []
    for _ in range(8):
        before = batcher.batches
        _gather(batcher, [x] * 10, ["y"])
        per_burst.append(batcher.batches - before)
    assert per_burst[-1] == 1, per_burst
