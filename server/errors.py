"""Domain errors of the server, independent of any transport.

The core raises these. Each carries a :class:`ErrorKind` (what went wrong, for the edge to
map to a status) and a ``reason`` (a short label for the validation-error metric); the
message is safe to show to the caller. The one mapping to gRPC status codes lives at the
gRPC edge, :mod:`server.status`; Envoy maps those statuses to HTTP codes.
"""

from __future__ import annotations

import enum

__all__ = [
    "EXIT_FATAL",
    "INTERNAL_MESSAGE",
    "ErrorKind",
    "InvalidInput",
    "ModelNotFound",
    "Overloaded",
    "PredictionNotFound",
    "ProntoError",
    "ResourceExhausted",
    "ServerNotReady",
]

#: what the caller sees for anything unexpected; the traceback goes to the log
INTERNAL_MESSAGE = "Internal server error"

#: exit status of a worker that cannot work at all (no loadable model, port unavailable):
#: restarting it would not help, so the supervisor stops
EXIT_FATAL = 3


class ErrorKind(enum.Enum):
    """Classes of failure a caller can act on (KServe's error classes, transport-free)."""

    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    NOT_READY = "not_ready"
    #: the server is not set up for the call (e.g. feedback without a capture directory)
    PRECONDITION = "precondition"
    #: the caller may not make this call from where it is (e.g. admin calls from off-host)
    FORBIDDEN = "forbidden"
    OVERLOADED = "overloaded"
    #: a service this call depends on did not answer; the call may succeed if retried
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ProntoError(Exception):
    """Base of errors whose message is safe to show to the caller."""

    kind: ErrorKind = ErrorKind.INTERNAL
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
    kind = ErrorKind.INVALID_INPUT
    reason = "invalid"


class ModelNotFound(ProntoError):
    kind = ErrorKind.NOT_FOUND
    reason = "model_not_found"


class PredictionNotFound(ProntoError):
    """A label names a prediction no index holds (unknown, or past the retention)."""

    kind = ErrorKind.NOT_FOUND
    reason = "unknown_id"


class Overloaded(ProntoError):
    """Refused without being run: the worker's queueing delay is past its bound.

    ``retry-after`` reaches REST callers as a header through Envoy's transcoder.
    """

    kind = ErrorKind.OVERLOADED
    reason = "overloaded"
    trailers = (("retry-after", "1"),)


class ResourceExhausted(ProntoError):
    """Refused for want of capacity (rows in flight, memory); the caller may retry."""

    kind = ErrorKind.OVERLOADED
    reason = "too_large"


class ServerNotReady(ProntoError):
    kind = ErrorKind.NOT_READY
    reason = "not_ready"
