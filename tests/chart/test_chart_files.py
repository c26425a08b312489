"""Files the chart ships: descriptor set, rule files, dashboards."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CHART, REPO
from tests.tools import needs_tool

RULES = sorted((CHART / "files" / "rules").glob("*.yaml"))
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))


def test_descriptor_set_matches_generated() -> None:
    """charts/pronto/files/pronto.pb must be the descriptor set `make proto` produces."""
    shipped = (CHART / "files" / "pronto.pb").read_bytes()
    generated = (REPO / "gateway" / "generated" / "pronto.pb").read_bytes()
    assert shipped == generated, (
        "charts/pronto/files/pronto.pb is stale: "
        "cp gateway/generated/pronto.pb charts/pronto/files/"
    )


def test_starter_files_exist() -> None:
    assert RULES and DASHBOARDS


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_rule_file_shape(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["groups"]
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule)
            assert rule["expr"]


@needs_tool(
    shutil.which("promtool") is not None,
    "promtool is not installed (Debian prometheus, make setup-apt)",
)
@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_rule_file_passes_promtool(path: Path) -> None:
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_json(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["title"] and doc["uid"]
    assert len(doc["uid"]) <= 40
    assert all("targets" in panel for panel in doc["panels"] if panel["type"] != "row")
