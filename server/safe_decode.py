"""Register servicers so that an undecodable request is the caller's error.

grpc calls the generated ``FromString`` deserializer before any servicer code runs;
when the bytes are not a valid message it logs a traceback and answers ``UNKNOWN``.
A truncated or garbage body is bad input like any other, so the deserializers are
wrapped: a failure yields an :class:`Undecodable` marker that :func:`server.status.rpc`
turns into ``INVALID_ARGUMENT`` (and counts), keeping the one mapping of errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.shedding import note_arrival

__all__ = ["Undecodable", "add_servicer"]


class Undecodable:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        note_arrival()  # the queueing delay ends here: parsing is the request's own work
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return parse


class _Capture:
    """Collects what a generated ``add_*_to_server`` function registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive through add_registered_method_handlers

    def add_registered_method_handlers(
        self, name: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.services[name] = handlers


def add_servicer(
    add_fn: Callable[[Any, Any], None],
    servicer: Any,
    server: Any,
    serializers: Mapping[str, Callable[[Any], bytes]] | None = None,
    deserializers: Mapping[str, Callable[[bytes], Any]] | None = None,
) -> None:
    """``add_fn(servicer, server)`` with deserializers that never raise; ``serializers``
    replaces the response serializer of the methods it names (a reply that writes its own
    wire bytes), ``deserializers`` the request deserializer (a method that reads the wire
    bytes itself: it must not raise either)."""
    capture = _Capture()
    add_fn(servicer, capture)
    serializers = serializers or {}
    deserializers = deserializers or {}
    for name, handlers in capture.services.items():
        safe = {
            method: handler._replace(  # type: ignore[attr-defined]
                request_deserializer=_safe(deserializers.get(method, handler.request_deserializer)),
                response_serializer=serializers.get(method, handler.response_serializer),
            )
            for method, handler in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, safe),))
        server.add_registered_method_handlers(name, safe)
