"""`python -m loadtest.variants`: this tree served with different flags, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import psutil
import pytest

from loadtest.variants import main, parse_variant, served
from tests.gateway.modelgen import MODEL, build_repository
from tests.loadtest.test_trace_cost import REQUEST


def test_a_variant_is_a_name_and_the_flags_a_shell_would_split() -> None:
    assert parse_variant("default=") == ("default", [])
    assert parse_variant("every=--drift-sample-requests 1") == (
        "every",
        ["--drift-sample-requests", "1"],
    )
    assert parse_variant("q = --log-level 'WARNING'") == ("q", ["--log-level", "WARNING"])
    for bad in ("no-flags", "=--no-drift", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_variant(bad)


@pytest.mark.integration
def test_variants_are_served_with_their_flags_and_measured_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = build_repository(tmp_path / "models")
    request = tmp_path / "request.json"
    request.write_text(json.dumps([REQUEST]))
    out = tmp_path / "variants.json"
    argv = [
        "--model-repository", str(repository), "--model", MODEL, "--request", str(request),
        "--variant", "default=", "--variant", "off=--no-drift",
        "--metrics", "--seconds", "0.3", "--rounds", "2", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    found = json.loads(out.read_text())
    assert list(found["rps"]) == ["default", "off"]
    assert found["variants"] == {"default": [], "off": ["--no-drift"]}
    for name in ("default", "off"):
        assert len(found["rps"][name]) == 2 and all(v > 0 for v in found["rps"][name]), name
        assert all(c > 0 for c in found["cpu_us_per_request"][name]), name
        assert all(20 < m < 2000 for m in found["worker_rss_mib"][name]), name
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("| variant |") and printed[2].startswith("| default |")
    assert "| 1.00 |" in printed[2] and printed[3].startswith("| off |")
    with pytest.raises(SystemExit):  # one variant has nothing to compare with
        main(["--variant", "default="])


@pytest.mark.integration
def test_each_variant_runs_with_its_own_flags(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "models")
    variants = [("a", []), ("b", ["--no-drift"])]
    with served(variants, repository, MODEL) as servers:
        lines = {name: psutil.Process(pid).cmdline() for name, (_, pid) in servers.items()}
    assert "--no-drift" not in lines["a"] and lines["b"][-1] == "--no-drift"
    with (
        pytest.raises(ValueError, match="differ"),
        served([("a", []), ("a", [])], repository, MODEL),
    ):
        pass
