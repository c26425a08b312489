"""The tracing-cost benchmark runs every variant against real servers, and its tracing-on
server really exports spans (else "on" would measure the same thing as "off")."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from loadtest.trace_cost import VARIANTS, measure, table
from tests.gateway.modelgen import MODEL, build_repository

#: one single-row request of the test model, as ghz-style JSON
REQUEST = {
    "model_name": MODEL,
    "inputs": [
        {
            "name": "carrier",
            "datatype": "BYTES",
            "shape": [1, 1],
            "contents": {"bytes_contents": [base64.b64encode(b"Copa Air").decode()]},
        },
        {
            "name": "hour",
            "datatype": "FP32",
            "shape": [1, 1],
            "contents": {"fp32_contents": [8]},
        },
    ],
}


@pytest.mark.integration
def test_every_variant_runs_and_tracing_on_exports(tmp_path: Path) -> None:
    found = measure(build_repository(tmp_path / "models"), MODEL, 0.3, 1, REQUEST)
    assert set(found["rps"]) == set(VARIANTS)
    assert all(len(v) == 1 and v[0] > 0 for v in found["rps"].values())
    assert all(len(v) == 1 and v[0] > 0 for v in found["cpu_us_per_request"].values())
    assert found["spans_exported"] > 0
    text = table(found["rps"], found["cpu_us_per_request"])
    assert text.count("\n") == len(VARIANTS) + 1 and "| off | " in text
