"""The workers' event loop: uvloop by default, asyncio's own on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from server.event_loop import run_loop
from server.settings import ServeSettings


async def _running_loop() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_a_worker_runs_on_the_loop_it_is_given(kind: str) -> None:
    loop_type = run_loop(kind, _running_loop())
    assert issubclass(loop_type, uvloop.Loop) == (kind == "uvloop"), loop_type


def test_uvloop_is_the_default_and_asyncio_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeSettings().event_loop == "uvloop"
    monkeypatch.setenv("PRONTO_EVENT_LOOP", "asyncio")
    assert ServeSettings().event_loop == "asyncio"
    monkeypatch.setenv("PRONTO_EVENT_LOOP", "tokio")
    with pytest.raises(ValueError, match="uvloop"):
        ServeSettings()
