"""Domain errors and their one mapping to gRPC status codes.

The core raises these; :func:`rpc` wraps every servicer method, so no transport code
decides on a status by itself (the kserve interceptor pattern, without the per-call cost
of a grpc interceptor). Anything unexpected becomes ``INTERNAL`` with a fixed message:
tracebacks go to the log, never to the caller. The same wrapper times the call and hands
the outcome to the servicer's recorder (in-process counters, see :mod:`server.metrics`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from server.registration import Undecodable

__all__ = [
    "EXIT_FATAL",
    "INTERNAL_MESSAGE",
    "InvalidInput",
    "ModelNotFound",
    "Overloaded",
    "ProntoError",
    "Recorder",
    "ResourceExhausted",
    "ServerNotReady",
    "rpc",
    "status_for",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

INTERNAL_MESSAGE = "Internal server error"

#: exit status of a worker that cannot work at all (no loadable model, port unavailable):
#: restarting it would not help, so the supervisor stops
EXIT_FATAL = 3


class ProntoError(Exception):
    """Base of errors whose message is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: short label for the validation-error metric
    reason: str = "error"
    #: trailing metadata sent with the status (e.g. a retry hint)
    trailers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidInput(ProntoError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid"


class ModelNotFound(ProntoError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "model_not_found"


class Overloaded(ProntoError):
    """Refused without being run: the worker's queueing delay is past its bound.

    ``retry-after`` reaches REST callers as a header through Envoy's transcoder.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "overloaded"
    trailers = (("retry-after", "1"),)


class ServerNotReady(ProntoError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "not_ready"


class ResourceExhausted(ProntoError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "too_large"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and caller-visible message for ``exc``."""
    if isinstance(exc, ProntoError):
        return exc.code, exc.message
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


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
    method = fn.__name__
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
            code, error = exc.code, exc
            if exc.trailers:
                await context.abort(exc.code, exc.message, exc.trailers)
            await context.abort(exc.code, exc.message)
        except asyncio.CancelledError:
            # the caller went away, or shutdown outlived the grace period
            code = grpc.StatusCode.CANCELLED
            raise
        except (grpc.aio.AbortError, AssertionError):
            raise
        except Exception:
            log.exception("unexpected error in %s", method)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, INTERNAL_MESSAGE)
        finally:
            recorder.in_flight -= 1
            recorder.observe(method, request, response, code, perf_counter() - start, error)
        raise AssertionError("unreachable: context.abort raises")

    return call
