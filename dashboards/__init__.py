"""Pronto's Grafana dashboards as code (grafana-foundation-sdk).

``python -m dashboards`` writes ``charts/pronto/files/dashboards/*.json``; ``--check`` fails
when the committed JSON differs from what the code builds. Edit the modules, never the JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.models.dashboard import Dashboard

__all__ = ["DASHBOARDS", "OUT_DIR", "render_all"]

OUT_DIR = Path(__file__).resolve().parents[1] / "charts" / "pronto" / "files" / "dashboards"


def _builders() -> dict[str, Callable[[], Dashboard]]:
    from dashboards import envoy, model, rollouts, service

    return {
        "pronto-service": service.build,
        "pronto-model": model.build,
        "pronto-envoy": envoy.build,
        "pronto-rollouts": rollouts.build,
    }


DASHBOARDS = ("pronto-service", "pronto-model", "pronto-envoy", "pronto-rollouts")


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    from dashboards.panels import to_json

    return {f"{name}.json": to_json(build()) for name, build in _builders().items()}
