"""Names that the gateway and the server must spell the same way on the hop between them.

Envoy's configuration (rendered by ``gateway/``) sets these request headers and the workers
(``server/``) read them; neither side imports the other, so the names live here.
"""

from __future__ import annotations

__all__ = ["PUBLIC_HEALTH_HEADER", "QUEUED_AT_HEADER"]

#: when Envoy received an inference request (seconds since the epoch, set over any caller's
#: value); the worker refuses a request that waited longer than its queueing-delay bound
QUEUED_AT_HEADER = "x-pronto-queued-at"
#: set by Envoy on unauthenticated health checks (and removed from every client request):
#: the worker then confirms only the overall status, never a model name
PUBLIC_HEALTH_HEADER = "x-pronto-public-health"
