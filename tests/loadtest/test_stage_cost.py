"""The stage-cost study serves every arm for real, and each patched worker really stops
after its stage: the floor and the patched arms answer with the floor's constant reply,
the full path with the model's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.stage_cost import ARMS, STAGES, in_process, main, measure, patch, stage_table
from tests.gateway.modelgen import MODEL, build_repository
from tests.loadtest.test_trace_cost import REQUEST


@pytest.mark.integration
def test_every_arm_runs_and_stops_after_its_stage(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "models")
    found = measure(repository, MODEL, 0.3, 1, REQUEST)
    assert found["answered_by"] == {arm: "bare" for arm in ARMS[:-1]} | {"full": MODEL}
    assert all(len(v) == 1 and v[0] > 0 for v in found["rps"].values())
    assert all(len(v) == 1 and v[0] > 0 for v in found["cpu_us_per_request"].values())
    costs = in_process(repository, MODEL, REQUEST, calls=16, rounds=1)
    assert set(costs) == {"decode", "feeds", "run", "full", "reply"}
    assert all(c["hot"] > 0 and c["cold"] > 0 for c in costs.values()), costs
    text = stage_table(found, costs)
    assert text.count("\n") == len(STAGES) + 2, text
    assert "| ONNX Runtime's run | " in text and "the floor: " in text


def test_unknown_stage_and_bad_serve_usage_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown stage 'parse'"):
        patch("parse")
    assert main(["--serve", "decode", "--model-repository", "models"]) == 2
    assert "usage:" in capsys.readouterr().err
