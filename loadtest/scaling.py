"""Throughput across worker counts, the load generator on cores of its own.

    python -m loadtest.scaling --workers 1 2 4 8 12 --seconds 4 --rounds 2

For each worker count N, Pronto (``pronto serve --workers N`` on the model repository,
with a metrics port, so that metrics and drift are on as deployed) and the bare grpc.aio
floor (``loadtest.compare.bare_server``, N processes on uvloop, as Pronto's workers run)
are started as ``pronto bench compare`` starts them, pinned to the first N cores; h2load
runs pinned to the cores left (at least one; with ``--colocate``, on the servers' cores),
with ``4 N`` connections of 8 streams each, on one thread per load core up to N. Both
servers share one port across their processes (SO_REUSEPORT), and h2load talks to that
port. Three arms take alternating rounds: the floor and Pronto with the single-row
flight-delay body, and Pronto with the 256-row body (tritonclient's raw form; the first
requests of the load data's ``oip.json`` and ``oip_b256.json``, as ``pronto bench
compare`` sends them). Per arm and round: requests per second and the server's CPU µs per
request (its process tree over the round).

The table gives, per N, the medians over rounds: requests/s of each arm, Pronto's ratio
to the floor (median of per-round ratios), Pronto's requests/s per worker, 256-row rows/s,
and the scaling efficiency (per-worker throughput against the smallest N's). It needs
N + 1 cores for the largest N (N with ``--colocate``): on a 2-core machine only N = 1
runs, or ``--colocate --workers 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from loadtest.compare.run import bare_floor
from loadtest.h2load import raw_request_from_json, write_request
from loadtest.runner import DATA_DIR, machine_description
from loadtest.stack import local_stack
from loadtest.trace_cost import ROOT, alternating_rounds

__all__ = ["ARMS", "load_shape", "main", "measure", "plan", "table"]

ARMS = ("floor", "pronto", "pronto-256")
STREAMS = 8


def plan(cpus: list[int], workers: int, colocate: bool = False) -> tuple[set[int], set[int]]:
    """The cores the servers run on (the first ``workers``) and the load generator's (the
    rest; with ``colocate``, the servers' own). Raises ``ValueError`` when the cores do not
    suffice."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if colocate:
        if workers > len(cpus):
            raise ValueError(f"{workers} workers need {workers} cores; there are {len(cpus)}")
        return set(cpus[:workers]), set(cpus[:workers])
    if workers >= len(cpus):
        raise ValueError(
            f"{workers} workers need {workers + 1} cores (one for h2load); "
            f"this process may use {len(cpus)}"
        )
    return set(cpus[:workers]), set(cpus[workers:])


def load_shape(workers: int, load_cpus: int) -> dict[str, int]:
    """h2load's shape for ``workers`` servers: ``4 N`` connections (enough for the kernel
    to spread them over N listening sockets) of :data:`STREAMS` streams, on one thread per
    load core up to N (``clients`` is a multiple of ``threads``, as h2load requires)."""
    threads = max(1, min(load_cpus, workers))
    clients = 4 * workers
    clients += -clients % threads
    return {"clients": clients, "streams": STREAMS, "threads": threads}


@contextmanager
def _pinned(cpus: set[int]) -> Iterator[None]:
    """Run the block (and whatever it starts) on ``cpus``; children inherit the mask."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _tree_affinity(pids: list[int]) -> list[int]:
    """Every core any process of these trees may run on (supervisors, templates, workers)."""
    import psutil

    cores: set[int] = set()
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            cores.update(proc.cpu_affinity() or [])
    return sorted(cores)


@contextmanager
def _servers(repository: Path, workers: int, log_dir: Path) -> Iterator[dict[str, tuple[str, int]]]:
    """The floor and Pronto (as ``pronto bench compare`` starts them: metrics on, logs in
    ``log_dir``) with ``workers`` processes each: address and pid by name."""
    with (
        bare_floor(workers, log_dir / "bare.log", "uvloop") as floor,
        local_stack(repository, workers, False, log_dir) as pronto,
    ):
        yield {"floor": floor, "pronto": (pronto.grpc, pronto.server_pids[0])}


def measure(
    repository: Path,
    model: str,
    workers: list[int],
    seconds: float,
    rounds: int,
    requests: dict[str, dict[str, Any]],
    colocate: bool = False,
) -> dict[str, Any]:
    """Per worker count: requests/s and server CPU µs per request of every arm, per round,
    the cores each side ran on and the h2load shape. ``requests`` holds the ``single`` and
    the ``b256`` request (ghz-style JSON), sent in tritonclient's raw form."""
    cpus = sorted(os.sched_getaffinity(0))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        bodies = {
            kind: write_request(raw_request_from_json(request), Path(tmp) / f"{kind}.grpc")
            for kind, request in requests.items()
        }
        for n in workers:
            server_cpus, load_cpus = plan(cpus, n, colocate)
            shape = load_shape(n, len(load_cpus))
            with ExitStack() as stack:
                logs = Path(tmp) / f"logs-{n}"
                logs.mkdir()
                with _pinned(server_cpus):
                    servers = stack.enter_context(_servers(repository, n, logs))
                ran_on = _tree_affinity([pid for _, pid in servers.values()])
                arms = {
                    "floor": servers["floor"],
                    "pronto": servers["pronto"],
                    "pronto-256": servers["pronto"],
                }
                per_arm = {
                    "floor": bodies["single"],
                    "pronto": bodies["single"],
                    "pronto-256": bodies["b256"],
                }
                with _pinned(load_cpus):
                    replies, rps, cpu_us = alternating_rounds(
                        arms, per_arm, seconds, rounds, load=shape
                    )
            if replies["pronto"].model_name != model:
                raise RuntimeError(f"Pronto answered for {replies['pronto'].model_name!r}")
            results[str(n)] = {
                "server_cpus": sorted(server_cpus),
                "server_affinity": ran_on,
                "load_cpus": sorted(load_cpus),
                "h2load": shape,
                "rps": rps,
                "cpu_us_per_request": cpu_us,
            }
    return results


def _ratio(values: list[float], base: list[float]) -> float:
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


def table(results: dict[str, Any]) -> str:
    """Markdown: one line per worker count (medians over rounds)."""
    lines = [
        "| workers | h2load cores | floor req/s | Pronto req/s | Pronto / floor "
        "| Pronto req/s per worker | efficiency | Pronto CPU µs/req | floor CPU µs/req "
        "| 256-row rows/s | 256-row rows/s per worker |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first: float | None = None
    for n, r in sorted(results.items(), key=lambda item: int(item[0])):
        workers = int(n)
        rps, cpu = r["rps"], r["cpu_us_per_request"]
        per_worker = statistics.median(rps["pronto"]) / workers
        first = per_worker if first is None else first
        rows = 256 * statistics.median(rps["pronto-256"])
        lines.append(
            f"| {workers} | {len(r['load_cpus'])} | {statistics.median(rps['floor']):,.0f} "
            f"| {statistics.median(rps['pronto']):,.0f} "
            f"| {_ratio(rps['pronto'], rps['floor']):.2f} | {per_worker:,.0f} "
            f"| {per_worker / first:.2f} | {statistics.median(cpu['pronto']):.0f} "
            f"| {statistics.median(cpu['floor']):.0f} | {rows:,.0f} | {rows / workers:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="flight-delay")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and arm")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument(
        "--colocate",
        action="store_true",
        help="run h2load on the servers' cores (as on a machine with nothing else) instead "
        "of the cores left over",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    where = "the servers' cores" if args.colocate else "cores of its own"
    machine = machine_description() | {"load_generator": f"same machine, {where}"}
    cpus = sorted(os.sched_getaffinity(0))
    for n in args.workers:
        plan(cpus, n, args.colocate)  # refuse a count this machine cannot hold, before any run
    requests = {
        kind: json.loads((DATA_DIR / source).read_text())[0] | {"model_name": args.model}
        for kind, source in (("single", "oip.json"), ("b256", "oip_b256.json"))
    }
    results = measure(
        args.model_repository,
        args.model,
        args.workers,
        args.seconds,
        args.rounds,
        requests,
        args.colocate,
    )
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "results": results,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "machine": machine,
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
