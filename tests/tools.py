"""External tools the tests call (helm, actionlint, hadolint, amtool, promtool, terraform, ...).

A plain local ``pytest`` run skips a test whose tool is missing and says which and how to
install it. ``make test`` installs every one of them, so in CI a skip would only hide a
broken setup: with ``PRONTO_REQUIRE_TOOLS=1`` (``.ci/run`` exports it) a missing tool fails
the test instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_TOOLS", "missing_tool", "needs_tool"]

REQUIRE_TOOLS = os.environ.get("PRONTO_REQUIRE_TOOLS") == "1"


def missing_tool(reason: str) -> NoReturn:
    """Skip (locally) or fail (PRONTO_REQUIRE_TOOLS=1) the running test for a missing tool."""
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason}; PRONTO_REQUIRE_TOOLS=1 and `make test` installs it", pytrace=False)
    pytest.skip(reason)


def needs_tool(found: bool, reason: str) -> pytest.MarkDecorator:
    """Mark for a test (or a module's ``pytestmark``) that cannot run without a tool; the
    suite's conftest calls :func:`missing_tool` at setup when ``found`` is false."""
    return pytest.mark.needs_tool(found=found, reason=reason)
