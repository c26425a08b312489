"""One HTML page per ``pronto bench`` run: verdicts, figures, plots and the tool reports.

The page is built from ``summary.json`` and the files next to it; each gRPC run links to
ghz's own HTML report and each REST run to wrk's output, so a person opens one file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

__all__ = ["write_html_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 80em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.pass { color: #1a7f37; } .fail { color: #cf222e; font-weight: bold; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
"""


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _reports(out_dir: Path, name: str) -> str:
    links = []
    for suffix, label in ((".ghz.html", "ghz report"), (".wrk.txt", "wrk output")):
        if (out_dir / f"{name}{suffix}").exists():
            href = html.escape(f"{name}{suffix}", quote=True)
            links.append(f'<a href="{href}">{label}</a>')
    return " · ".join(links) or "–"


def _row(run: dict[str, Any], out_dir: Path) -> str:
    r, s, spec = run["result"], run["server"], run["spec"]
    lat = r["latency_ms"]
    verdict = (
        '<span class="pass">pass</span>'
        if run["passed"]
        else f'<span class="fail">FAIL: {html.escape("; ".join(run["failures"]))}</span>'
    )
    cells = [
        html.escape(run["name"]),
        html.escape(r["tool"]),
        html.escape(str(spec.get("rps") or "unpaced")),
        f"{r['count']:,}",
        str(r["errors"]),
        _num(r["rps"], 0),
        _num(lat.get("p50")),
        _num(lat.get("p95")),
        _num(lat.get("p99")),
        _num(s.get("cpu_seconds"), 1),
        _num(s.get("peak_rss_mib"), 0),
    ]
    tds = "".join(f"<td>{c}</td>" for c in cells)
    links = _reports(out_dir, run["name"])
    return f'<tr>{tds}<td class="text">{verdict}</td><td class="text">{links}</td></tr>'


def write_html_report(summary_path: Path) -> Path:
    """Write ``report.html`` next to ``summary_path`` and return its path."""
    out_dir = summary_path.parent
    summary = json.loads(summary_path.read_text())
    machine = summary["machine"]
    title = f"pronto bench {summary['scenario']}"
    verdict = (
        '<span class="pass">all thresholds met</span>'
        if summary["passed"]
        else '<span class="fail">thresholds missed</span>'
    )
    head = (
        "<tr><th>run</th><th>tool</th><th>target RPS</th><th>requests</th><th>errors</th>"
        "<th>RPS</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>server CPU s</th>"
        "<th>server peak RSS MiB</th><th>verdict</th><th>tool report</th></tr>"
    )
    rows = "".join(_row(run, out_dir) for run in summary["runs"])
    plots = "".join(
        f'<h2>{html.escape(png.stem)}</h2><img alt="{html.escape(png.stem)}" '
        f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
        for png in sorted(out_dir.glob("*.png"))
    )
    tables = "".join(f"<pre>{html.escape(t)}</pre>" for t in summary.get("tables", []))
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(summary.get('description', ''))}</p>"
        f"<p>Command: <code>{html.escape(summary['command'])}</code> · finished "
        f"{html.escape(summary['finished_at'])} · machine: {html.escape(str(machine['cpu']))}, "
        f"{machine['cores']} cores, {machine['memory_gib']} GiB, load generator on the same "
        f"machine · {verdict}</p><table>{head}{rows}</table>{plots}{tables}</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return path
