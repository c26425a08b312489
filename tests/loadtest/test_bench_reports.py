"""The h2load/wrk side studies run by `pronto bench` (wide, rest_columnar) report in the
form of every other scenario: a summary with a verdict against the target, and tables in
the generated part of docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import rest_columnar, revisions, wide
from loadtest.report import render_markdown


def _rest(inputs: list[int], errors: int = 0, data: list[int] | None = None) -> dict:
    return {
        "rounds": len(inputs),
        "seconds": 1.0,
        "workers": 2,
        "errors": errors,
        "rows_per_s": {
            "instances": [v // 2 for v in inputs],
            "inputs": inputs,
            "oip-data": data if data is not None else [v // 4 for v in inputs],
            "grpc-web": [v * 3 for v in inputs],
        },
        "inputs_vs_instances_median": 2.0,
        "grpc_web_vs_inputs_median": 3.0,
        "decode_us": {"server decode: instances": 1300.0, "server decode: inputs": 250.0},
    }


def test_rest_columnar_verdict_follows_the_median_of_the_best_rest_form(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results" / "rest_columnar"
    out.mkdir(parents=True)
    assert not rest_columnar.report(_rest([90_000, 300_000, 100_000]), "cmd", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "rest_columnar" and summary["passed"] is False
    assert "inputs: 100,000" in summary["description"] and "missed" in summary["description"]
    assert rest_columnar.report(_rest([260_000, 300_000, 100_000]), "cmd", out)
    assert rest_columnar.report(_rest([260_000]), "cmd", out)
    assert not rest_columnar.report(_rest([260_000], errors=1), "cmd", out)
    # REST infer's form alone over the target is enough; gRPC-Web is not REST
    assert rest_columnar.report(_rest([100_000], data=[255_000]), "cmd", out)
    summary = json.loads((out / "summary.json").read_text())
    assert "oip-data: 255,000" in summary["description"] and "met" in summary["description"]
    markdown = render_markdown(tmp_path / "results")
    assert "### rest_columnar" in markdown
    assert "| 1 | 50,000 | 100,000 | 255,000 | 300,000 | 2.00 | 3.00 |" in markdown
    assert "gRPC-Web median: 300,000 rows/s" in markdown


def test_wide_verdict_follows_the_packed_to_floor_median(tmp_path: Path) -> None:
    out = tmp_path / "results" / "wide"
    out.mkdir(parents=True)
    summary = {
        "rounds": 1,
        "seconds": 1.0,
        "workers": 2,
        "errors": 0,
        "rps": {"wide-columns": [1000.0], "wide-packed": [3000.0], "floor": [5000.0]},
        "in_process_us": {"packed: request path": 23.0},
        "profile": [],
        "median": {"packed_vs_columns": 3.0, "packed_vs_floor": 0.6, "columns_vs_floor": 0.2},
    }
    assert not wide.report(summary, "cmd", out)
    summary["median"]["packed_vs_floor"] = 0.7
    assert wide.report(summary, "cmd", out)
    written = json.loads((out / "summary.json").read_text())
    assert written["scenario"] == "wide" and written["passed"] is True
    markdown = render_markdown(tmp_path / "results")
    assert (
        "### wide" in markdown and "| 1 | 1,000 | 3,000 | 5,000 | 3.00 | 0.60 | 0.20 |" in markdown
    )


def test_result_files_of_other_tools_are_left_out_of_the_tables(tmp_path: Path) -> None:
    """`python -m loadtest.trace_cost --out results/trace-cost/summary.json` and the like
    write plain figures next to the scenarios; the page is rendered from the rest."""
    results = tmp_path / "results"
    (results / "trace-cost").mkdir(parents=True)
    (results / "trace-cost" / "summary.json").write_text(json.dumps({"rps": {"off": [1.0]}}))
    out = results / "rest_columnar"
    out.mkdir()
    rest_columnar.report(_rest([300_000]), "cmd", out)
    markdown = render_markdown(results)
    assert "### rest_columnar" in markdown and "trace-cost" not in markdown


def test_the_profile_study_says_what_to_do_when_its_baseline_is_missing(tmp_path: Path) -> None:
    """A shallow clone lacks the 'before' revision: a clear message, not a git traceback."""
    with pytest.raises(RuntimeError, match="git fetch --unshallow"):
        revisions.bench(tmp_path, tmp_path / "models", "m", baseline="0" * 40)
    assert not (tmp_path / "profile").exists()
