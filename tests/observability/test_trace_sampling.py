"""Sampling as the chart configures it (tracing.samplingRatio): Envoy's random sampling and
the server's parentbased_traceidratio sampler decide for new traces, and a caller's sampled
traceparent is followed by both."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import pronto
from tests.gateway.harness import run_gateway, run_server
from tests.gateway.modelgen import MODEL, build_repository
from tests.observability.test_tracing import CALLER_SPAN, TRACE_ID, Receiver, receiver

__all__ = ["receiver"]  # the fixture, shared with test_tracing


@pytest.mark.integration
def test_ratio_zero_keeps_only_traces_the_caller_sampled(
    receiver: tuple[int, Receiver], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, sink = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    inputs = {"carrier": np.array([["Copa Air"]]), "hour": np.array([[20.0]], dtype=np.float32)}
    with (
        run_server(build_repository(tmp_path), workers=1) as server,
        run_gateway(
            server, "--otlp-endpoint", f"127.0.0.1:{port}", "--trace-sampling", "0"
        ) as gateway,
        pronto.Client(gateway.address) as client,
    ):
        for _ in range(20):  # new traces: none kept at ratio 0
            client.infer(MODEL, inputs)
        unsampled = f"00-{'1' * 32}-{CALLER_SPAN}-00"
        client.infer(MODEL, inputs, metadata=[("traceparent", unsampled)])
        sampled = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
        client.infer(MODEL, inputs, metadata=[("traceparent", sampled)])
        # Envoy flushes every 5 s: the sampled trace's spans from both services arrive in
        # the same export as any span of the earlier requests would have
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sink.lock:
                services = {s[0] for s in sink.spans if s[2] == TRACE_ID}
            if {"pronto-gateway", "pronto-server"} <= services:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # one more server export period, for stray spans to show up
    with sink.lock:
        traces = {s[2] for s in sink.spans}
        services = {s[0] for s in sink.spans}
    assert {"pronto-gateway", "pronto-server"} <= services
    assert traces == {TRACE_ID}


def test_unsampled_requests_take_the_untraced_path() -> None:
    """The servicer and the core create child spans only under a sampled (recording)
    server span; a dropped request runs the plain path."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from server import tracing

    assert not tracing.recording()  # outside any request
    for sampler, expected in ((ALWAYS_ON, True), (ALWAYS_OFF, False)):
        with TracerProvider(sampler=sampler).get_tracer("t").start_as_current_span("request"):
            assert tracing.recording() is expected
