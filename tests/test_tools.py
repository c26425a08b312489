"""A missing external tool skips its test locally and fails it in CI (tests/tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tools

ROOT = Path(__file__).resolve().parents[1]


def test_a_missing_tool_skips_with_the_reason_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "REQUIRE_TOOLS", False)
    with pytest.raises(pytest.skip.Exception, match="helm is not installed"):
        tools.missing_tool("helm is not installed")


def test_a_missing_tool_fails_when_tools_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "REQUIRE_TOOLS", True)
    with pytest.raises(pytest.fail.Exception, match=r"not installed.*PRONTO_REQUIRE_TOOLS=1"):
        tools.missing_tool("helm is not installed")


def test_ci_requires_every_tool() -> None:
    """`make test` installs the tools, so CI must not let a broken setup pass as skips."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "export PRONTO_REQUIRE_TOOLS=1" in lines
    assert lines.index("export PRONTO_REQUIRE_TOOLS=1") < next(
        i for i, ln in enumerate(lines) if ln.startswith("part ")
    )
