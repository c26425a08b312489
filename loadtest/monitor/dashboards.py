"""The chart's Grafana dashboards, read as data: panel queries for tests and reports, and
Grafana provisioning files for a local Grafana."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtest.monitor.prometheus import DASHBOARDS_DIR

__all__ = ["PanelQuery", "panel_queries", "write_grafana_provisioning"]

#: what Grafana substitutes for the dashboards' variables, for queries run outside Grafana
DEFAULT_VARIABLES = {
    "$__rate_interval": "1m",
    "$model": ".*",
    "$version": ".*",
    "$feature": ".*",
}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool


def panel_queries(
    directory: Path = DASHBOARDS_DIR, variables: Mapping[str, str] = DEFAULT_VARIABLES
) -> Iterator[PanelQuery]:
    """Every target of every panel, with the dashboard variables substituted."""
    # longest names first: "$model" must not eat the start of a "$models"
    names = sorted(variables, key=len, reverse=True)
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name in names:
                    expr = expr.replace(name, variables[name])
                yield PanelQuery(
                    doc["uid"], panel["title"], target["refId"], expr, bool(target.get("instant"))
                )


def write_grafana_provisioning(
    root: Path, prometheus_url: str, dashboards: Path = DASHBOARDS_DIR
) -> Path:
    """Datasource and dashboard provider files for ``grafana-server`` (paths.provisioning)."""
    (root / "datasources").mkdir(parents=True, exist_ok=True)
    (root / "dashboards").mkdir(parents=True, exist_ok=True)
    datasource = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
            }
        ],
    }
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "pronto",
                "folder": "Pronto",
                "type": "file",
                "options": {"path": str(dashboards)},
            }
        ],
    }
    # JSON is YAML: Grafana reads these as its usual provisioning files
    (root / "datasources" / "pronto.yaml").write_text(json.dumps(datasource, indent=2))
    (root / "dashboards" / "pronto.yaml").write_text(json.dumps(provider, indent=2))
    return root
