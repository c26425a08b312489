"""The gRPC edge: the one place where errors become gRPC statuses.

:func:`rpc` wraps every servicer method (the KServe interceptor pattern, without the
per-call cost of a grpc interceptor): a :class:`~server.errors.ProntoError` becomes the
status its kind maps to, with its message; anything else (``AssertionError`` included)
becomes ``INTERNAL`` with a fixed message, and its traceback goes to the log, never to the
caller. The same wrapper times the call and hands the outcome to the servicer's recorder
(in-process counters, see :mod:`server.metrics`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from server import tracing
from server.errors import INTERNAL_MESSAGE, ErrorKind, InvalidInput, ProntoError
from server.safe_decode import Undecodable

__all__ = ["STATUS", "Recorder", "rpc", "rpc_as"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: error kind -> gRPC status (Envoy's transcoder turns these into HTTP codes)
STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


class Recorder(Protocol):
    in_flight: int

    def observe(
        self,
        method: str,
        request: Any,
        response: Any,
        code: grpc.StatusCode,
        seconds: float,
        error: ProntoError | None,
    ) -> None: ...


Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


def rpc(fn: Method[T]) -> Method[T]:
    """Wrap an async servicer method: status mapping, timing, in-flight count.

    The servicer instance provides ``recorder`` (a :class:`Recorder`).
    """
    return _wrap(fn, fn.__name__)


def rpc_as(method: str) -> Callable[[Method[T]], Method[T]]:
    """:func:`rpc`, recorded under ``method``: for two RPCs that are one API (Predict and
    its REST form)."""
    return lambda fn: _wrap(fn, method)


def _wrap(fn: Method[T], method: str) -> Method[T]:
    perf_counter = time.perf_counter

    @functools.wraps(fn)
    async def call(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        recorder: Recorder = self.recorder
        recorder.in_flight += 1
        start = perf_counter()
        response = None
        code = grpc.StatusCode.OK
        error: ProntoError | None = None
        try:
            if type(request) is Undecodable:
                raise InvalidInput(f"request is not a valid message: {request.error}", "decode")
            response = await fn(self, request, context)
            return response
        except ProntoError as exc:
            error = exc
            code = STATUS[exc.kind]
        except asyncio.CancelledError:
            # the caller went away, or shutdown outlived the grace period
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise  # the method aborted with a status of its own choosing
        except Exception:  # AssertionError too: a bug is INTERNAL, never UNKNOWN
            log.exception("unexpected error in %s%s", method, tracing.log_trace(context))
            code = grpc.StatusCode.INTERNAL
        finally:
            recorder.in_flight -= 1
            recorder.observe(method, request, response, code, perf_counter() - start, error)
        if error is None:
            await context.abort(code, INTERNAL_MESSAGE)
        elif error.trailers:  # e.g. a retry hint on an overload refusal
            await context.abort(code, error.message, error.trailers)
        else:
            await context.abort(code, error.message)
        raise AssertionError("unreachable: context.abort raises")

    return call
