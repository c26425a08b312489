"""Summaries under ``loadtest/results/`` and the tables of ``docs/benchmarks.md``.

The markdown is regenerated from the summary files only, so the document
always shows what the last ``pronto bench`` runs measured, with the machine
and command that produced each table.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["render_markdown", "update_benchmarks_doc", "write_study", "write_summary"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "loadtest" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN GENERATED: pronto bench -->", "<!-- END GENERATED: pronto bench -->"


def write_summary(
    scenario: dict[str, Any],
    runs: list[dict[str, Any]],
    machine: dict[str, Any],
    command: str,
    out_dir: Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    summary = {
        "scenario": scenario["name"],
        "description": scenario.get("description", ""),
        "command": command,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "passed": all(r["passed"] for r in runs),
        "runs": runs,
        **(extra or {}),
    }
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def write_study(
    name: str,
    description: str,
    passed: bool,
    tables: list[str],
    data: dict[str, Any],
    command: str,
    out_dir: Path,
) -> None:
    """A study without ghz/wrk runs of its own form (h2load rounds, profiles): its summary
    with a verdict and Markdown ``tables``, and the generated part of docs/benchmarks.md
    renewed when ``out_dir`` is under the project's results."""
    from loadtest.runner import machine_description

    scenario = {"name": name, "description": description}
    extra = {**data, "passed": passed, "tables": tables}
    write_summary(scenario, [], machine_description(), command, out_dir, extra)
    update_benchmarks_doc(results_dir=out_dir.parent)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _table(summary: dict[str, Any]) -> str:
    lines = [
        f"### {summary['scenario']}",
        "",
        summary.get("description", ""),
        "",
        f"Command: `{summary['command']}` · finished {summary['finished_at']} · "
        f"machine: {summary['machine']['cpu']}, {summary['machine']['cores']} cores, "
        f"{summary['machine']['memory_gib']} GiB, load generator on the same machine · "
        f"{'all thresholds met' if summary['passed'] else '**thresholds missed**'}",
    ]
    if not summary["runs"]:
        return "\n".join(lines + [x for t in summary.get("tables", []) for x in ("", t)])
    lines += [
        "",
        "| run | tool | target RPS | requests | errors | RPS | p50 ms | p95 ms | p99 ms "
        "| server-side p50 / p99 ms | server CPU s | server peak RSS MiB (largest process) "
        "| verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in summary["runs"]:
        r, s, spec = run["result"], run["server"], run["spec"]
        lat = r["latency_ms"]
        verdict = "pass" if run["passed"] else "FAIL: " + "; ".join(run["failures"])
        rows = f" ({run['rows_per_s']:,} rows/s)" if "rows_per_s" in run else ""
        peak = f" (peak {run['peak_rps']:,} RPS)" if "peak_rps" in run else ""
        one = s.get("peak_process_rss_mib")
        largest = f" ({_fmt(one, 0)})" if one else ""
        server_side = run.get("server_latency_ms") or {}
        server_ms = (
            f"{_fmt(server_side.get('p50'))} / {_fmt(server_side.get('p99'))}"
            if server_side
            else "–"
        )
        lines.append(
            f"| {run['name']}{peak} | {r['tool']} | {spec.get('rps') or 'unpaced'} "
            f"| {r['count']:,} | {r['errors']} | {_fmt(r['rps'], 0)}{rows} "
            f"| {_fmt(lat.get('p50'))} "
            f"| {_fmt(lat.get('p95'))} | {_fmt(lat.get('p99'))} | {server_ms} "
            f"| {_fmt(s.get('cpu_seconds'), 1)} "
            f"| {_fmt(s.get('peak_rss_mib'), 0)}{largest} | {verdict} |"
        )
    for table in summary.get("tables", []):
        lines += ["", table]
    return "\n".join(lines)


def render_markdown(results_dir: Path = RESULTS_DIR) -> str:
    order = [
        "smoke", "challenge", "peak", "batch", "compare", "wide", "rest_columnar", "profile",
        "batching", "drift",
    ]  # fmt: skip
    summaries = []
    for path in sorted(results_dir.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if "scenario" in summary:  # other tools' result files (trace_cost, revisions --out)
            summaries.append(summary)
    summaries.sort(
        key=lambda s: (order.index(s["scenario"]) if s["scenario"] in order else 99, s["scenario"])
    )
    body = "\n\n".join(_table(s) for s in summaries) or "_No results yet: run `make bench`._"
    return f"{BEGIN}\n{body}\n{END}"


def update_benchmarks_doc(doc: Path = DOC, results_dir: Path = RESULTS_DIR) -> None:
    """Replace the generated block of ``doc`` (hand-written text around it stays).

    Results written elsewhere (a test, a scratch run) never rewrite the project's page.
    """
    if doc == DOC and results_dir.resolve() != RESULTS_DIR.resolve():
        return
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: render_markdown(results_dir), text))
