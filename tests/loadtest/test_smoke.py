"""A short load through every path: ghz direct, wrk through Envoy.

No timing assertions: the test proves the harness, the stack and the reports
work end to end, and that a few thousand requests see zero errors.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from loadtest.gateway_cost import FORMS, VARIANTS, measure
from loadtest.ghz import find_tool
from loadtest.report import render_markdown
from pronto_cli.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "loadtest" / "data"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flight-delay model trained on a small generated data set (same features)."""
    root = tmp_path_factory.mktemp("repo")
    csv = root / "flights.csv"
    subprocess.run(
        [sys.executable, "-m", "trainer", "generate", "--out", str(csv), "--rows", "4000"],
        check=True,
        cwd=ROOT,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pronto_cli",
            "train",
            "--data",
            str(csv),
            "--model-repository",
            str(root / "models"),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return root / "models"


def test_request_files_hold_distinct_realistic_rows() -> None:
    predict = json.loads((DATA_DIR / "predict.json").read_text())
    assert len(predict) >= 1000
    rows = {json.dumps(r["instances"][0], sort_keys=True) for r in predict}
    assert len(rows) > 0.9 * len(predict), "requests should not repeat one payload"
    oip = json.loads((DATA_DIR / "oip_b256.json").read_text())
    assert all(t["shape"] == [256, 1] for req in oip for t in req["inputs"])


def test_smoke_scenario_passes_with_zero_errors(repository: Path, tmp_path: Path) -> None:
    find_tool("ghz"), find_tool("wrk")
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pronto_cli",
            "bench",
            "smoke",
            "--workers",
            "2",
            "--model-repository",
            str(repository),
            "--results-dir",
            str(results),
            "--data-dir",
            str(DATA_DIR),
            "--no-update-docs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((results / "smoke" / "summary.json").read_text())
    assert summary["passed"] and summary["machine"]["cores"] >= 1
    by_tool = {r["result"]["tool"] for r in summary["runs"]}
    assert by_tool == {"ghz", "wrk"}
    for run in summary["runs"]:
        assert run["result"]["errors"] == 0
        assert run["result"]["count"] >= run["spec"]["thresholds"]["min_count"]
        assert run["result"]["latency_ms"]["p99"] > 0
        assert run["server"]["cpu_seconds"] > 0 and run["server"]["peak_rss_mib"] > 0
        # the largest process is one of several (supervisor, template, workers)
        assert 0 < run["server"]["peak_process_rss_mib"] < run["server"]["peak_rss_mib"]
        # the server's own histogram, this run's requests only
        server_side = run["server_latency_ms"]
        assert 0 < server_side["p50"] <= server_side["p99"], server_side
    report = json.loads((results / "smoke" / "grpc-oip-smoke.ghz.json").read_text())
    assert report["statusCodeDistribution"] == {"OK": 2000}
    # ghz's own HTML report (its template and charts), from the same run as the JSON
    ghz_html = (results / "smoke" / "grpc-oip-smoke.ghz.html").read_text()
    assert "britecharts" in ghz_html and "github.com/bojand/ghz" in ghz_html
    assert "2000" in ghz_html
    page = (results / "smoke" / "report.html").read_text()
    for run in summary["runs"]:
        assert f"<td>{run['name']}</td>" in page
    assert 'href="grpc-oip-smoke.ghz.html"' in page and 'href="rest-oip-smoke.wrk.txt"' in page
    markdown = render_markdown(results)
    assert "| grpc-predict-smoke |" in markdown and "FAIL" not in markdown
    assert "server-side p50 / p99 ms" in markdown


def test_a_terminated_bench_leaves_no_process_behind(repository: Path, tmp_path: Path) -> None:
    """SIGTERM mid-run (a CI timeout, `kill`): the server, Envoy and load generator it
    started are stopped, not orphaned."""
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        "name: long\nlatency_plot: false\nruns:\n"
        "  - {name: grpc-long, tool: ghz, target: grpc, payload: oip, duration_s: 120,\n"
        "     concurrency: 2, connections: 1, thresholds: {max_errors: 0}}\n"
    )
    bench = subprocess.Popen(
        [
            sys.executable, "-m", "pronto_cli", "bench", str(scenario), "--workers", "1",
            "--model-repository", str(repository), "--results-dir", str(tmp_path / "results"),
            "--data-dir", str(DATA_DIR), "--no-update-docs",
        ],
        cwd=ROOT,
    )  # fmt: skip
    try:
        parent = psutil.Process(bench.pid)
        wait_until(
            lambda: any(p.name() == "ghz" for p in parent.children(recursive=True)),
            what="ghz under the bench",
            timeout=120,
            procs=[bench],
        )
        started = parent.children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "serve" in names and "ghz" in names, names
        bench.terminate()
        assert bench.wait(timeout=60) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if bench.poll() is None:
            bench.kill()


def test_gateway_cost_reads_envoy_s_cpu_for_each_form_and_variant(
    repository: Path, tmp_path: Path
) -> None:
    found = measure(repository, "flight-delay", 1, 2, tmp_path)
    assert list(found) == list(FORMS)
    for form, variants in found.items():
        assert list(variants) == list(VARIANTS), form
        for name, runs in variants.items():
            assert len(runs) == 2, (form, name)
            assert all(rps > 0 and envoy > 0 and server > 0 for rps, envoy, server in runs), runs
    # each variant ran on its own configuration, the guard's taken out of the second
    assert "envoy.filters.http.lua" in (tmp_path / "envoy-0.yaml").read_text()
    assert "envoy.filters.http.lua" not in (tmp_path / "envoy-1.yaml").read_text()
