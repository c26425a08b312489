"""The rule files the chart ships: promtool checks them, and unit tests make each alert fire."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import needs_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "charts" / "pronto" / "files" / "rules").glob("*.yaml"))
TESTS = sorted((Path(__file__).parent / "rules").glob("*_test.yaml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = needs_tool(
    PROMTOOL is not None, "promtool is not installed (Debian prometheus, make setup-apt)"
)


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


@needs_promtool
def test_promtool_check_rules_all_files_together() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "check", "rules", *map(str, RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_group_and_record_names_are_unique_across_files() -> None:
    # the chart merges all files into one object: a duplicate group would be rejected
    groups = [g["name"] for p in RULES for g in yaml.safe_load(p.read_text())["groups"]]
    assert len(groups) == len(set(groups))
    records = [r["record"] for r in rules() if "record" in r]
    assert len(records) == len(set(records))


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"page", "ticket"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert rule["annotations"]["runbook"].startswith("docs/slo.md#runbook-")


def test_every_alert_has_a_firing_unit_test() -> None:
    fired = {
        case["alertname"]
        for path in TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in alerts()} <= fired


def test_every_rule_file_is_tested() -> None:
    covered = {
        (path.parent / f).resolve()
        for path in TESTS
        for f in yaml.safe_load(path.read_text())["rule_files"]
    }
    assert set(RULES) <= covered
