"""Publishing a new model version the way the trainer does, and waiting for it to serve.

The server rescans its repository every ``--model-poll-interval`` seconds and on SIGHUP
(``server/reload.py``). The interface is looked up rather than assumed, so against a
server without it the fault reports "not run" instead of pretending.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from loadtest.chaos.probe import model_ready
from loadtest.chaos.stack import MODEL

__all__ = ["POLL_FIELD", "publish_version", "wait_version_ready"]

POLL_FIELD = "model_poll_interval"


def publish_version(repository: Path, supervisor: int | None = None) -> str:
    """Copy the newest version to the next number: written under a temporary name, then
    renamed, so a scan never sees half a model. With ``supervisor``, SIGHUP it so it
    rescans at once instead of at its next poll."""
    folder = repository / MODEL
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    new = versions[-1] + 1
    tmp = folder / f".tmp-{new}"
    shutil.copytree(folder / str(versions[-1]), tmp)
    os.rename(tmp, folder / str(new))
    if supervisor is not None:
        os.kill(supervisor, signal.SIGHUP)
    return str(new)


def wait_version_ready(addresses: list[str], version: str, timeout: float = 30.0) -> float:
    """Seconds until every address (each worker's private port) reports ``version`` ready."""
    start = time.monotonic()
    pending = list(addresses)
    while pending and time.monotonic() - start < timeout:
        pending = [a for a in pending if not model_ready(a, MODEL, version)]
        if pending:
            time.sleep(0.1)
    if pending:
        raise TimeoutError(f"version {version} not ready on {pending} after {timeout:.0f}s")
    return time.monotonic() - start
