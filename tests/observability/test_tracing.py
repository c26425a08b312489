"""One request, one trace: Envoy's span and the worker's spans reach an OTLP receiver."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import pronto
from tests.gateway.harness import run_gateway, run_server
from tests.gateway.modelgen import MODEL, build_repository

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps (service, name, trace, span, parent)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str, str]] = []
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> object:
        with self.lock:
            for rs in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in rs.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        ids = (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex())
                        self.spans.append((service, s.name, *ids))
        return trace_service_pb2.ExportTraceServiceResponse()


#: the spans of the worker's inference steps, children of its ModelInfer span
WORKER_CHILDREN = ("decode", "queue", "run", "encode")


@pytest.fixture
def receiver() -> Iterator[tuple[int, Receiver]]:
    sink = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, sink
    finally:
        server.stop(None)


@pytest.mark.integration
def test_one_trace_across_envoy_and_the_worker(
    receiver: tuple[int, Receiver], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, sink = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s, not 5 s
    with (
        run_server(build_repository(tmp_path), workers=1) as server,
        run_gateway(server, "--otlp-endpoint", f"127.0.0.1:{port}") as gateway,
        pronto.Client(gateway.address) as client,
    ):
        traceparent = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
        inputs = {"carrier": np.array([["Copa Air"]]), "hour": np.array([[20.0]], dtype=np.float32)}
        client.infer(MODEL, inputs, metadata=[("traceparent", traceparent)])
        # Envoy flushes its spans every 5 s, and the worker may export its spans in more
        # than one batch: wait for Envoy's and every one of the worker's
        wanted = {("pronto-server", n) for n in ("pronto/ModelInfer", *WORKER_CHILDREN)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sink.lock:
                seen = {(s[0], s[1]) for s in sink.spans if s[2] == TRACE_ID}
            if wanted <= seen and any(service == "pronto-gateway" for service, _ in seen):
                break
            time.sleep(0.1)
    spans = [s for s in sink.spans if s[2] == TRACE_ID]
    by_name = {(service, name): (span, parent) for service, name, _, span, parent in spans}
    envoy = [v for (service, _), v in by_name.items() if service == "pronto-gateway"]
    assert envoy, spans
    envoy_span, envoy_parent = envoy[0]
    assert envoy_parent == CALLER_SPAN  # Envoy continued the caller's trace
    root_span, root_parent = by_name[("pronto-server", "pronto/ModelInfer")]
    assert root_parent == envoy_span  # the worker continued Envoy's
    for child in WORKER_CHILDREN:
        assert by_name[("pronto-server", child)][1] == root_span, child


def test_tracing_off_costs_no_import() -> None:
    """Without an OTLP endpoint the servicers are the plain methods and OpenTelemetry is
    never imported: the hot path pays one boolean test."""
    code = (
        "import sys; from server import servicers, tracing; "
        "f = lambda self, request, context: None; "
        "print(tracing.ENABLED, any(k.startswith('opentelemetry') for k in sys.modules), "
        "tracing.traced('x')(f) is f)"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]


def test_error_logs_carry_the_trace_id(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from server import tracing

    tracing.install_log_filter("pronto.test.errors")
    log = logging.getLogger("pronto.test.errors")
    with TracerProvider().get_tracer("t").start_as_current_span("request") as span:
        log.error("unexpected error in %s", "ModelInfer")
        trace_id = f"{span.get_span_context().trace_id:032x}"
    log.error("outside any request")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"unexpected error in ModelInfer [trace_id={trace_id}]",
        "outside any request",
    ]
