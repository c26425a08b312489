"""Server reflection that also resolves method names (what ghz asks for).

grpcio-reflection looks symbols up in protobuf's default pool; the upb-backed pool finds
services and messages but not ``package.Service.Method``, so ghz's
``FileContainingSymbol("inference.GRPCInferenceService.ModelInfer")`` fails with
NOT_FOUND. A method lives in its service's file, so on a miss we retry with the parent
name.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection

__all__ = ["enable_reflection"]


class _MethodAwarePool:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            parent, _, method = name.rpartition(".")
            if not parent:
                raise
            service = self._pool.FindServiceByName(parent)  # KeyError if not a service
            if method not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """Serve ``grpc.reflection.v1alpha`` for ``service_names`` (plus reflection itself)."""
    reflection.enable_server_reflection(
        (*service_names, reflection.SERVICE_NAME),
        server,
        pool=_MethodAwarePool(descriptor_pool.Default()),
    )
