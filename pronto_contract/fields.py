"""Settings fields that several processes read from the same ``PRONTO_*`` variable.

``pronto serve``, ``pronto gateway``, ``pronto up`` and ``pronto bench`` each have a
settings class of their own, but a variable such as ``PRONTO_WORKER_BASE_PORT`` means the
same thing to all of them, so its type, limits and description are defined once here and
used as ``name: Field = default``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field

__all__ = [
    "MetricsPort",
    "ModelRepository",
    "Port",
    "WorkerBasePort",
    "Workers",
    "usable_cpus",
]

ModelRepository = Annotated[
    Path, Field(description="Model repository root: <root>/<model>/<version>/model.onnx.")
]
Workers = Annotated[
    int,
    Field(ge=0, le=256, description="Worker processes; 0 means one per usable CPU."),
]
Port = Annotated[int, Field(ge=1, le=65535, description="gRPC port shared by all workers.")]
WorkerBasePort = Annotated[
    int,
    Field(
        ge=0,
        le=65535,
        description="Worker i also listens on this port + i (0 disables private ports).",
    ),
]
MetricsPort = Annotated[
    int, Field(ge=0, le=65535, description="Port of the /metrics endpoint (0 disables it).")
]


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity masks, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
