"""Suite-wide rule: a test that starts processes is marked ``integration``.

``pytest -m "not integration"`` is the fast, process-free run. This checks that it really
is: a test without the mark that leaves a child process running when its body ends (a
server, Envoy, Prometheus, started by the test or one of its fixtures) fails, naming them.
One-shot tools that have exited by then (helm, promtool, envoy --mode validate) are not
counted.

Also: a test marked ``needs_tool`` whose tool is missing is skipped, or failed under
``PRONTO_REQUIRE_TOOLS=1`` (tests/tools.py). Property tests have no per-example deadline:
on a shared machine one slow example says nothing about the code.
"""

from __future__ import annotations

from collections.abc import Generator

import psutil
import pytest
from hypothesis import settings

from tests.tools import missing_tool

settings.register_profile("pronto", deadline=None)
settings.load_profile("pronto")

_BEFORE = pytest.StashKey[set[int]]()


def _alive_children() -> dict[int, str]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found[child.pid] = " ".join(child.cmdline()[:4])
        except psutil.Error:
            continue
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_tool(found, reason): needs an external tool; skipped without it, "
        "failed under PRONTO_REQUIRE_TOOLS=1 (tests/tools.py)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    for mark in item.iter_markers("needs_tool"):
        if not mark.kwargs["found"]:
            missing_tool(mark.kwargs["reason"])
    item.stash[_BEFORE] = set(_alive_children())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    result = yield
    if item.get_closest_marker("integration") is None:
        started = {
            pid: cmd
            for pid, cmd in _alive_children().items()
            if pid not in item.stash.get(_BEFORE, set())
        }
        if started:
            pytest.fail(
                f"{item.nodeid} starts processes but is not marked integration: "
                + "; ".join(started.values()),
                pytrace=False,
            )
    return result
