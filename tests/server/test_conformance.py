"""Open Inference Protocol conformance, checked with tritonclient in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import Server

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("triton_check.py")


def test_tritonclient_conformance(server: Server, model_repo: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), server.address, str(model_repo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = json.loads(done.stdout.strip().splitlines()[-1])
    assert passed == [
        "health",
        "server_metadata",
        "model_metadata",
        "infer_raw",
        "requested_outputs",
        "infer_typed",
        "datatypes_raw",
        "errors",
    ]
