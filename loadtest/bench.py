"""Glue between a scenario, a running (or started) stack and the reports."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.html_report import write_html_report
from loadtest.monitor.scrape import latency_markdown, scraping
from loadtest.report import update_benchmarks_doc, write_summary
from loadtest.runner import load_scenario, machine_description, run_scenario
from loadtest.stack import Stack, local_stack

if TYPE_CHECKING:
    from loadtest.cli import BenchSettings

__all__ = ["run_bench", "stack_for"]


@contextlib.contextmanager
def stack_for(settings: BenchSettings, gateway: bool, log_dir: Path) -> Iterator[Stack]:
    if settings.address:
        yield Stack(settings.address, settings.envoy_address)
        return
    from pronto_contract.fields import usable_cpus

    workers = settings.workers or usable_cpus()
    with local_stack(settings.model_repository, workers, gateway, log_dir) as stack:
        yield stack


def run_bench(name: str, settings: BenchSettings, command: str) -> bool:
    if name == "compare":
        from loadtest.compare.run import run_compare

        return run_compare(settings, command)
    if name == "capture":
        from loadtest.monitor.capture_bench import run_from_settings

        return run_from_settings(settings, command)
    if name == "wide":
        from loadtest import wide

        return wide.bench(settings.results_dir, settings.workers or 2)
    if name == "rest_columnar":
        from loadtest import rest_columnar

        return rest_columnar.bench(settings.results_dir, settings.workers or 2)
    if name == "profile":
        from loadtest import revisions

        return revisions.bench(settings.results_dir, settings.model_repository, settings.model)
    scenario = load_scenario(name)
    out_dir = settings.results_dir / scenario["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    needs_envoy = any(r.get("target") == "envoy" for r in scenario["runs"])
    tables: list[str] = []
    with stack_for(settings, needs_envoy, out_dir / "logs") as stack:
        if stack.metrics and scenario.get("latency_plot", True):
            # a Prometheus scraping the server draws p50/p95/p99 over the whole run
            with scraping(stack) as prom:
                started = time.time()
                outcomes = run_scenario(
                    scenario, stack, out_dir, settings.data_dir, settings.headers
                )
                title = f"{scenario['name']}: server-side latency over the run"
                tables.append(latency_markdown(prom, started, time.time(), out_dir, title))
        else:
            outcomes = run_scenario(scenario, stack, out_dir, settings.data_dir, settings.headers)
    runs = [o.as_dict() for o in outcomes]
    path = write_summary(
        scenario, runs, machine_description(), command, out_dir, {"tables": tables}
    )
    for o in outcomes:
        r = o.result
        status = "ok  " if o.passed else "FAIL"
        print(
            f"{status} {o.name:28s} {r.count:8d} req {r.errors:5d} err {r.rps:9.1f} rps "
            f"p99 {r.latency_ms.get('p99', 0):7.2f} ms  {'; '.join(o.failures)}"
        )
    print(f"summary: {path}")
    print(f"report:  {write_html_report(path)}")
    if settings.update_docs:
        update_benchmarks_doc(results_dir=settings.results_dir)
    return all(o.passed for o in outcomes)
