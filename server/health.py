"""``grpc.health.v1.Health`` that confirms nothing but the overall status to the public.

Envoy lets ``Health/Check`` through without credentials (probes and load balancers carry
none) and marks such requests with :data:`PUBLIC_HEALTH_HEADER`, a header it removes from
every client request first. Per-model service names would tell an anonymous caller which
models this server holds, so a marked request gets an answer for the overall service
("") only; every named service, loaded or not, is NOT_FOUND. Envoy's own health checks,
kubelet probes and authenticated callers (``ModelReady``) are unaffected.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

__all__ = ["PUBLIC_HEALTH_HEADER", "GatewayAwareHealth"]

PUBLIC_HEALTH_HEADER = "x-pronto-public-health"


class GatewayAwareHealth(HealthServicer):
    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service and _is_public(context):
            await context.abort(grpc.StatusCode.NOT_FOUND)
        return await super().Check(request, context)


def _is_public(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    return any(key == PUBLIC_HEALTH_HEADER for key, _ in context.invocation_metadata() or ())
