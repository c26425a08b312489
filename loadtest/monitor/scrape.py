"""A Prometheus that scrapes a benchmark's server, for the latency PNG of any scenario.

Wiring it into a scenario run takes three lines::

    with scraping(stack, out_dir) as prom:
        started = time.time()
        ...run the scenario...
    summary_tables.append(latency_markdown(prom, started, time.time(), out_dir, "title"))
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loadtest.monitor.latency_plot import render_latency_png
from loadtest.monitor.prometheus import LocalPrometheus, prometheus_config
from loadtest.stack import Stack
from pronto_cli.procs import free_port

__all__ = ["latency_markdown", "scraping"]

DOCS = Path(__file__).resolve().parents[2] / "docs"


@contextlib.contextmanager
def scraping(stack: Stack, interval: str = "1s") -> Iterator[LocalPrometheus]:
    """Prometheus scraping ``stack.metrics`` every ``interval`` until the block ends.

    The data directory is removed afterwards, so query (or render) inside the block.
    """
    if stack.metrics is None:
        raise ValueError("the stack has no metrics endpoint")
    config = prometheus_config([stack.metrics], scrape_interval=interval)
    with tempfile.TemporaryDirectory(prefix="pronto-bench-prometheus-") as tmp:
        prom = LocalPrometheus(config, port=free_port(), workdir=Path(tmp))
        with prom:
            deadline = time.monotonic() + 15
            while not prom.api.query("pronto_workers_ready") and time.monotonic() < deadline:
                time.sleep(0.25)  # the first scrape, so the run's first seconds are on the curve
            yield prom


def latency_markdown(
    prom: LocalPrometheus, start: float, end: float, out_dir: Path, title: str
) -> str:
    """Render ``latency.png`` into ``out_dir``; the markdown that shows it in docs/."""
    png = render_latency_png(prom.api, start, end, out_dir / "latency.png", title)
    return f"![{title}]({os.path.relpath(png, DOCS)})"
