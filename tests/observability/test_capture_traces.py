"""Captured payloads carry the trace of their request.

Tracing off, the caller's ``traceparent`` header gives the ids; tracing on, the worker's own
server span (the one exported to the collector). Invalid headers record nothing and fail
nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pronto
from pronto_contract.labels import LabelStore
from server import tracing
from server.capture import CaptureConfig, CaptureSink
from tests.gateway.harness import run_gateway, run_server
from tests.gateway.modelgen import MODEL, build_repository, instance
from tests.observability.test_tracing import Receiver, receiver  # noqa: F401 (fixture)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, (TRACE_ID, CALLER_SPAN, TRACEPARENT)),
        (TRACEPARENT.encode(), (TRACE_ID, CALLER_SPAN, TRACEPARENT)),
        # a later version may add fields; its first four are read
        (f"01-{TRACE_ID}-{CALLER_SPAN}-00-x", (TRACE_ID, CALLER_SPAN, TRACEPARENT[:-2] + "00")),
        (None, None),
        ("", None),
        ("garbage", None),
        (f"00-{TRACE_ID.upper()}-{CALLER_SPAN}-01", None),  # upper-case hex is invalid
        (f"00-{'0' * 32}-{CALLER_SPAN}-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"ff-{TRACE_ID}-{CALLER_SPAN}-01", None),
        (f"00-{TRACE_ID}-{CALLER_SPAN}-01-extra", None),
        # request metadata, as the servicer keeps it
        ((("x-api-key", "k"), ("traceparent", TRACEPARENT)), (TRACE_ID, CALLER_SPAN, TRACEPARENT)),
        ((("x-api-key", "k"),), None),
        ((), None),
    ],
)
def test_trace_ids_from_a_header(value: Any, expected: Any) -> None:
    assert tracing.trace_ids(value) == expected


def test_trace_ids_from_a_span_context() -> None:
    from opentelemetry.trace import SpanContext, TraceFlags

    context = SpanContext(int(TRACE_ID, 16), int(CALLER_SPAN, 16), False, TraceFlags(1))
    assert tracing.trace_ids(context) == (TRACE_ID, CALLER_SPAN, TRACEPARENT)
    invalid = SpanContext(0, 0, False)
    assert tracing.trace_ids(invalid) is None


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Path]:
    yield build_repository(tmp_path / "repo")


def _events(directory: Path) -> list[dict[str, Any]]:
    files = sorted(directory.glob("*/*/capture-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_capture_records_the_trace_of_each_request(repository: Path, tmp_path: Path) -> None:
    """In process: two concurrent requests, one traced, keep their own trace."""
    from server.core import InferenceCore
    from server.repository import Registry
    from tests.support import load_models

    capture = tmp_path / "capture"
    LabelStore(capture).create()
    sink = CaptureSink(CaptureConfig(capture, sample_rate=1.0))
    registry = Registry()
    registry.replace(load_models(repository))
    core = InferenceCore(registry, sink=sink)
    core.ready = True

    async def one(pid: str, header: str | None) -> None:
        tracing.CURRENT.set(header)
        await asyncio.sleep(0)  # let the other request run in between
        await core.predict(MODEL, "", [instance(0)], pid)

    async def both() -> None:
        await asyncio.gather(one("traced", TRACEPARENT), one("plain", None))

    asyncio.run(both())
    sink.close()
    events = {(e["id"], e["type"].rsplit(".", 1)[1]): e for e in _events(capture)}
    for kind in ("request", "response"):
        traced = events[("traced", kind)]
        assert (traced["traceid"], traced["spanid"]) == (TRACE_ID, CALLER_SPAN)
        assert traced["traceparent"] == TRACEPARENT
        assert not {"traceid", "spanid", "traceparent"} & set(events[("plain", kind)])


def _wait_captured(directory: Path, ids: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """The request events of ``ids`` once the writer has flushed them all."""
    deadline = time.monotonic() + timeout
    while True:
        found = {e["id"]: e for e in _events(directory) if e["type"].endswith(".request")}
        if ids <= set(found):
            return found
        assert time.monotonic() < deadline, f"not captured after {timeout}s: {ids - set(found)}"
        time.sleep(0.05)


CAPTURE_FLAGS = ("--capture-sample-rate", "1", "--capture-flush-interval", "0.1")


@pytest.mark.integration
def test_tracing_off_captures_the_callers_trace(repository: Path, tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    inputs = {"carrier": np.array([["Copa Air"]]), "hour": np.array([[20.0]], dtype=np.float32)}
    with (
        run_server(repository, 1, "--capture-dir", str(capture), *CAPTURE_FLAGS) as server,
        pronto.Client(f"127.0.0.1:{server.port}") as client,
    ):
        traced = client.infer(MODEL, inputs, metadata=[("traceparent", TRACEPARENT)]).id
        predicted = client.predict(MODEL, instance(1), metadata=[("traceparent", TRACEPARENT)])
        plain = client.infer(MODEL, inputs).id
        # a malformed header is ignored: the request is served, nothing is recorded
        odd = client.infer(MODEL, inputs, metadata=[("traceparent", "00-nonsense")]).id
        with pytest.raises(pronto.InferenceError, match="NOT_FOUND"):  # errors as usual
            client.infer("no-such-model", inputs, metadata=[("traceparent", TRACEPARENT)])
        events = _wait_captured(capture, {traced, predicted.id, plain, odd})
    for pid in (traced, predicted.id):
        assert (events[pid]["traceid"], events[pid]["spanid"]) == (TRACE_ID, CALLER_SPAN)
    for pid in (plain, odd):
        assert "traceid" not in events[pid]


@pytest.mark.integration
def test_tracing_on_captures_the_workers_span(
    repository: Path,
    tmp_path: Path,
    receiver: tuple[int, Receiver],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through Envoy with tracing on: the captured ids are those of the worker's server
    span in the exported trace, which continues the caller's."""
    port, sink = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    capture = tmp_path / "capture"
    with (
        run_server(repository, 1, "--capture-dir", str(capture), *CAPTURE_FLAGS) as server,
        run_gateway(server, "--otlp-endpoint", f"127.0.0.1:{port}") as gateway,
        pronto.Client(gateway.address) as client,
    ):
        pid = client.predict(MODEL, instance(2), metadata=[("traceparent", TRACEPARENT)]).id
        event = _wait_captured(capture, {pid})[pid]
        deadline = time.monotonic() + 20
        while True:
            with sink.lock:
                spans = [s for s in sink.spans if s[1] == "pronto/Predict" and s[2] == TRACE_ID]
            if spans or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    [(_, _, trace_id, span_id, _)] = spans
    assert (event["traceid"], event["spanid"]) == (trace_id, span_id)
    assert trace_id == TRACE_ID
    assert event["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"


def test_unexpected_errors_are_logged_with_the_callers_trace_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tracing off: the error log line of a request with a ``traceparent`` names its trace."""
    import grpc

    from server.metrics import RequestRecorder
    from server.status import rpc

    class Context:
        def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
            self.metadata = metadata

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return self.metadata

        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            raise grpc.aio.AbortError()

    class Servicer:
        recorder = RequestRecorder()

        @rpc
        async def Boom(self, request: Any, context: Any) -> Any:
            raise KeyError("bug")

    assert not tracing.ENABLED
    for metadata in ((("traceparent", TRACEPARENT),), (), (("traceparent", "junk"),)):
        with pytest.raises(grpc.aio.AbortError):
            asyncio.run(Servicer().Boom(object(), Context(metadata)))
    lines = [r.getMessage() for r in caplog.records if r.name == "server.status"]
    assert lines == [
        f"unexpected error in Boom [trace_id={TRACE_ID}]",
        "unexpected error in Boom",
        "unexpected error in Boom",
    ]
