"""OpenTelemetry spans per inference request, exported over OTLP/gRPC when configured.

Tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set (the SDK's own variables, e.g. ``http://collector:4317``; ``OTEL_SERVICE_NAME``
names the service, default ``pronto-server``). Off, the servicers and the core test one
module-level boolean per request and import nothing from OpenTelemetry.

On, each ``ModelInfer`` / ``Predict`` call gets a server span that continues the caller's
W3C ``traceparent`` (Envoy sends one), with children ``decode``, ``queue`` (waiting for the
model: helper thread or micro-batch), ``run`` (ONNX Runtime) and ``encode``; a request the
sampler drops keeps only the (non-recording) server span. The exporter is created lazily in
each worker process, after the fork. Errors logged while a request is traced, or that
carries a ``traceparent`` header, carry its trace id (:func:`log_trace`).

Captured payloads carry the request's trace (:data:`CURRENT`): with tracing on, the worker's
server span (sampled or not: its trace id is the caller's); off, the caller's ``traceparent``
header, when there is one. Only a reference is kept per request (the span context, or the
request metadata); the writer thread turns it into ids (:func:`trace_ids`) for the
predictions it captures.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from server.core import InferenceCore
    from server.model import ModelHandle

__all__ = [
    "CURRENT",
    "ENABLED",
    "TraceIdFilter",
    "install_log_filter",
    "log_trace",
    "note_traceparent",
    "recording",
    "trace_ids",
    "traced",
    "traced_infer",
    "traced_run",
]

ENABLED = bool(
    os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
)

F = TypeVar("F", bound=Callable[..., Any])

#: the trace of the request being served, for payload capture: the server span's context
#: (tracing on), the request's metadata (tracing off: its ``traceparent``, if any), or None.
#: Each RPC runs in its own task, so a value set in a handler stays with that request.
CURRENT: ContextVar[Any] = ContextVar("pronto_trace", default=None)

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")

_state: dict[str, Any] = {"pid": None, "tracer": None}


def _tracer() -> Any:
    if _state["pid"] != os.getpid():  # first use in this (forked) worker
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = os.environ.get("OTEL_SERVICE_NAME", "pronto-server")
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _state.update(pid=os.getpid(), tracer=provider.get_tracer("pronto.server"))
    return _state["tracer"]


class TraceIdFilter(logging.Filter):
    """Appends the current trace id to error records, to find the request's trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid and record.levelno >= logging.WARNING:
            record.msg = f"{record.msg} [trace_id={context.trace_id:032x}]"
        return True


def install_log_filter(logger: str = "server.errors") -> None:
    """Trace ids on the records of ``logger`` (where unexpected errors are logged)."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, TraceIdFilter) for f in target.filters):
        target.addFilter(TraceIdFilter())


def note_traceparent(metadata: Any) -> None:
    """Tracing off: keep the request metadata for capture, by reference; the capture writer
    looks for ``traceparent`` in it for the predictions it keeps (:func:`trace_ids`)."""
    CURRENT.set(metadata)


def trace_ids(value: Any) -> tuple[str, str, str] | None:
    """``(trace_id, span_id, traceparent)`` of a :data:`CURRENT` value, or None when it is
    absent or not a valid W3C trace context (then nothing is recorded)."""
    if hasattr(value, "trace_id"):  # an OpenTelemetry SpanContext (itself a tuple)
        if not value.is_valid:
            return None
        trace_id, span_id = f"{value.trace_id:032x}", f"{value.span_id:016x}"
        return trace_id, span_id, f"00-{trace_id}-{span_id}-{int(value.trace_flags):02x}"
    if isinstance(value, tuple | list):  # request metadata: (key, value) pairs
        value = next((v for k, v in value if k == "traceparent"), None)
    if value is None:
        return None
    if isinstance(value, str | bytes):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        m = _TRACEPARENT.fullmatch(text.strip())
        # version ff is invalid; version 00 has exactly four fields; all-zero ids are invalid
        if (
            m is None
            or m[1] == "ff"
            or (m[1] == "00" and m[5])
            or m[2] == "0" * 32
            or m[3] == "0" * 16
        ):
            return None
        return m[2], m[3], f"00-{m[2]}-{m[3]}-{m[4]}"
    return None


def log_trace(context: Any) -> str:
    """`` [trace_id=<hex>]`` for an error logged while serving a request that carries a
    trace (the server span's with tracing on, else the caller's ``traceparent``), else ``""``.
    For error paths only: it reads the request metadata."""
    ids = None
    if ENABLED:
        from opentelemetry import trace

        ids = trace_ids(trace.get_current_span().get_span_context())
    else:
        metadata = getattr(context, "invocation_metadata", None)
        ids = trace_ids(tuple(metadata() or ())) if metadata is not None else None
    return f" [trace_id={ids[0]}]" if ids else ""


def recording() -> bool:
    """Whether the current request's span is sampled. An unsampled request (most of them
    at a low sampling ratio) skips the child spans and takes the untraced path."""
    from opentelemetry import trace

    return bool(trace.get_current_span().is_recording())


def _parent(context: Any) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return TraceContextTextMapPropagator().extract(carrier)


def traced(name: str) -> Callable[[F], F]:
    """Decorator: a server span per call of an RPC method; off, the method itself."""

    def decorate(method: F) -> F:
        if not ENABLED:
            return method

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: Any) -> Any:
            from opentelemetry.trace import SpanKind

            with _tracer().start_as_current_span(
                f"pronto/{name}", context=_parent(context), kind=SpanKind.SERVER
            ) as span:
                model = getattr(request, "model_name", None) or getattr(request, "name", "")
                span.set_attribute("pronto.model", model)
                CURRENT.set(span.get_span_context())
                return await method(self, request, context)

        return wrapper  # type: ignore[return-value]

    return decorate


async def traced_infer(servicer: Any, request: Any, queued_at: float = 0.0) -> Any:
    """The body of ``ModelInfer`` with ``decode`` and ``encode`` spans."""
    from server.oip_codec import decode_infer, encode_infer_response

    tracer = _tracer()
    with tracer.start_as_current_span("decode"):
        req = decode_infer(request, servicer.max_elements, servicer.core.max_batch_size)
    response = await servicer.core.infer(req, queued_at)
    with tracer.start_as_current_span("encode"):
        return encode_infer_response(response)


async def traced_run(
    core: InferenceCore, handle: ModelHandle, feeds: Any, outputs: list[str], rows: int
) -> Any:
    """``InferenceCore.run`` with ``queue`` and ``run`` spans (mirrors its three paths)."""
    from server.model import ort_executor

    tracer = _tracer()
    queued = time.time_ns()
    if handle.batcher is not None:  # queue and run interleave with other requests
        with tracer.start_as_current_span("queue+run", attributes={"pronto.rows": rows}):
            return await handle.batcher.run(feeds, outputs, rows)
    marks: dict[str, int] = {}

    def run() -> Any:
        marks["start"] = time.time_ns()
        try:
            return handle.run(feeds, outputs)
        finally:
            marks["end"] = time.time_ns()

    if handle.runs_inline(rows, core.offload_rows):
        result = run()
    else:
        result = await asyncio.get_running_loop().run_in_executor(ort_executor(), run)
    tracer.start_span("queue", start_time=queued).end(end_time=marks["start"])
    tracer.start_span("run", start_time=marks["start"], attributes={"pronto.rows": rows}).end(
        end_time=marks["end"]
    )
    return result
