"""The fault table: printed after a run, kept as Markdown and JSON next to ghz's reports."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from loadtest.chaos.faults import ChaosConfig, FaultResult

__all__ = ["failed", "table", "update_doc", "write"]

_HEADER = "| fault | sent | succeeded | failed | p99 ms | verdict | detail |"


def _errors(result: FaultResult) -> str:
    # ghz reports status names and, separately, messages that repeat them: keep the names
    codes = {k: v for k, v in result.errors.items() if " " not in k}
    if not codes:
        return ""
    return " (" + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())) + ")"


def table(results: list[FaultResult]) -> str:
    lines = [_HEADER, "|" + " --- |" * 7]
    for r in results:
        if r.verdict == "not run":
            lines.append(f"| {r.fault} | - | - | - | - | not run | {r.detail} |")
            continue
        lines.append(
            f"| {r.fault} | {r.sent} | {r.succeeded} | {r.failed}{_errors(r)} | "
            f"{r.p99_ms:.1f} | {r.verdict} | {r.detail} |"
        )
    return "\n".join(lines)


def failed(results: list[FaultResult]) -> bool:
    """A fault lost requests (or broke its own check). "not run" is not a failure here:
    the caller prints it, and the table says so."""
    return any(r.verdict == "FAIL" for r in results)


def write(results: list[FaultResult], out: Path, machine: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(
        json.dumps({"machine": machine, "faults": [r.as_dict() for r in results]}, indent=1)
    )
    path = out / "chaos.md"
    path.write_text(f"Machine: {machine}\n\n{table(results)}\n")
    return path


def update_doc(
    doc: Path, section: str, results: list[FaultResult], machine: str, cfg: ChaosConfig
) -> None:
    """Replace the table between ``<!-- chaos:SECTION -->`` and ``<!-- /chaos:SECTION -->``."""
    start, end = f"<!-- chaos:{section} -->", f"<!-- /chaos:{section} -->"
    text = doc.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{doc} has no {start} ... {end} block")
    seconds = cfg.duration_s if section == "crash" else cfg.overload_duration_s
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"{start}\n_Written by `make chaos` on {stamp}: {seconds:g} s of load per run, "
        f"{cfg.workers} workers. Machine: {machine}._\n\n{table(results)}\n{end}"
    )
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(head + body + tail)
