"""One error type for both transports, with the server's retry hint when it sent one."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CODE_NAMES", "InferenceError", "hint_from_grpc_metadata", "hint_from_http"]

# gRPC status numbers -> names (google.rpc.Code), for errors that arrive as REST JSON.
CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
# HTTP statuses without a JSON body (a proxy in between): the usual gRPC equivalents.
_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class InferenceError(Exception):
    """A call that failed: its gRPC status name, the server's message and any retry hint.

    ``code`` is the gRPC status name (``"UNAVAILABLE"``) for gRPC and REST calls alike;
    ``http_status`` is set for REST calls; ``retry_after`` is the delay in seconds the server
    asked for before a retry, or None when it gave no hint.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after
        self.attempts = attempts

    @classmethod
    def from_http(cls, status: int, headers: Mapping[str, str], body: Any) -> InferenceError:
        code, message = _HTTP_CODES.get(status, "UNKNOWN"), f"HTTP {status}"
        details: Iterable[Any] = ()
        if isinstance(body, dict):
            if isinstance(body.get("code"), int):
                code = CODE_NAMES.get(body["code"], code)
            message = str(body.get("message", message))
            details = body.get("details") or ()
        elif isinstance(body, str) and body:
            message = body.strip()
        hint = hint_from_http(headers, details)
        return cls(code, message, http_status=status, retry_after=hint)


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _retry_info_delay(payload: bytes) -> float | None:
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status()
    try:
        status.ParseFromString(payload)
    except Exception:  # a malformed trailer must not hide the call's own error
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def hint_from_grpc_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """Retry delay from trailers: ``grpc-retry-pushback-ms`` (gRPC's own; negative means
    "do not retry", returned as -1), ``retry-after`` seconds, or a ``google.rpc.RetryInfo``
    in ``grpc-status-details-bin``."""
    for key, value in metadata or ():
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if key == "grpc-retry-pushback-ms":
            ms = _seconds(text)
            if ms is not None:
                return -1.0 if ms < 0 else ms / 1000.0
        elif key == "retry-after":
            seconds = _seconds(text)
            if seconds is not None:
                return max(seconds, 0.0)
        elif key == "grpc-status-details-bin" and isinstance(value, bytes):
            delay = _retry_info_delay(value)
            if delay is not None:
                return delay
    return None


def _duration(text: str) -> float | None:
    return _seconds(text[:-1]) if text.endswith("s") else None


def hint_from_http(headers: Mapping[str, str], details: Iterable[Any] = ()) -> float | None:
    """Retry delay from ``Retry-After`` (seconds or an HTTP date) or a JSON RetryInfo."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is not None:
        seconds = _seconds(value)
        if seconds is not None:
            return max(seconds, 0.0)
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            pass
    for detail in details:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = _duration(str(detail.get("retryDelay", detail.get("retry_delay", ""))))
            if delay is not None:
                return delay
    return None
