"""What tracing costs a single-row request: the same h2load load (raw OIP ``ModelInfer``,
identical request bytes) against a server with tracing off and one with tracing on,
exporting to an OTLP receiver inside this process, in alternating rounds.

    python -m loadtest.trace_cost --model-repository models --seconds 3 --rounds 3

Variants, each a run of ``--seconds`` per round:

- ``off``: no OTLP endpoint (the default deployment);
- ``off + traceparent``: the same server, every request carrying a sampled ``traceparent``
  (what Envoy sends when tracing is on at the gateway but not in the server);
- ``on, unsampled``: tracing on, ``traceparent`` with the sampled flag clear (what most
  requests look like at a sampling ratio of a few percent);
- ``on, sampled``: tracing on, every request sampled, its spans exported.

Each server runs one worker, so a variant's throughput is one worker's. Both servers warm
up first; the order of the variants alternates between rounds. The table goes to
stdout (Markdown) and, with ``--out``, as JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from loadtest.h2load import (
    H2loadRun,
    check_request,
    raw_request_from_json,
    run_h2load,
    write_request,
)
from loadtest.runner import DATA_DIR, machine_description
from pronto_cli.procs import PRONTO, free_port, stop_process, wait_for_grpc_health

__all__ = ["VARIANTS", "alternating_rounds", "h2load_round", "main", "ratio_table", "serving"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
#: name → (server with tracing on, traceparent sent or "")
VARIANTS: dict[str, tuple[bool, str]] = {
    "off": (False, ""),
    "off + traceparent": (False, SAMPLED),
    "on, unsampled": (True, UNSAMPLED),
    "on, sampled": (True, SAMPLED),
}


class _SpanCounter:
    """A minimal OTLP/gRPC trace receiver: counts the spans it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def export(self, request: Any, context: Any) -> Any:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        with self._lock:
            self.spans += sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def _receiver() -> Iterator[tuple[int, _SpanCounter]]:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    counter = _SpanCounter()

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return counter.export(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, counter
    finally:
        server.stop(None)


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _run(
    address: str,
    body: Path,
    seconds: float,
    load: dict[str, int] | None,
    headers: dict[str, str] | None = None,
) -> H2loadRun:
    """An h2load run without warm-up: 2 connections x 8 streams on one thread unless
    ``load`` gives ``clients``, ``streams`` or ``threads``."""
    shape = {"clients": 2, "streams": 8, "threads": 1} | (load or {})
    return H2loadRun(
        address=address,
        body=body,
        duration_s=seconds,
        warmup_s=0,
        clients=shape["clients"],
        streams=shape["streams"],
        threads=shape["threads"],
        headers=headers or {},
    )


def h2load_round(
    name: str,
    address: str,
    pid: int,
    body: Path,
    seconds: float,
    headers: dict[str, str] | None = None,
    load: dict[str, int] | None = None,
) -> tuple[float, float]:
    """One measured round of a side-by-side study: h2load (2 connections x 8 streams on
    one thread unless ``load`` says otherwise: ``clients``, ``streams``, ``threads``; no
    warm-up, so the CPU window is the load's) against ``address``: requests per second
    and server CPU µs per request (``pid``'s process tree)."""
    before = _tree_cpu(pid)
    result = run_h2load(_run(address, body, seconds, load, headers))
    used = _tree_cpu(pid) - before
    if result.errors or not result.count:
        raise RuntimeError(f"{name}: {result.errors} failed requests")
    return result.rps, 1e6 * used / result.count


def alternating_rounds(
    arms: dict[str, tuple[str, int]],
    body: Path | dict[str, Path],
    seconds: float,
    rounds: int,
    headers: dict[str, dict[str, str]] | None = None,
    after_each: Callable[[str, int], None] | None = None,
    load: dict[str, int] | None = None,
) -> tuple[dict[str, Any], dict[str, list[float]], dict[str, list[float]]]:
    """A side-by-side study: each arm (name -> address and server pid) answers its body
    (``body``, or ``body[name]`` when given per arm) once (its reply, by name, is
    returned) and each server takes 0.5 s of unmeasured load; then :func:`h2load_round`
    on every arm, ``rounds`` times, in an order that alternates so no arm always runs
    first or last. Returns the replies, and requests per second and server CPU µs per
    request per arm and round. ``headers`` (by arm name) go with that arm's requests;
    ``after_each(name, pid)`` runs after each measured round; ``load`` shapes h2load
    (:func:`h2load_round`)."""
    bodies = body if isinstance(body, dict) else dict.fromkeys(arms, body)
    replies = {name: check_request(address, bodies[name]) for name, (address, _) in arms.items()}
    for address, warm in dict.fromkeys(
        (address, bodies[name]) for name, (address, _) in arms.items()
    ):
        run_h2load(_run(address, warm, 0.5, load))
    rps: dict[str, list[float]] = {name: [] for name in arms}
    cpu_us: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            address, pid = arms[name]
            extra = (headers or {}).get(name)
            served, cpu = h2load_round(name, address, pid, bodies[name], seconds, extra, load)
            rps[name].append(served)
            cpu_us[name].append(cpu)
            if after_each is not None:
                after_each(name, pid)
    return replies, rps, cpu_us


@contextmanager
def serving(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server command until the block ends, once it answers gRPC health checks on
    ``port``; yields its pid."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=120, proc=proc)
        yield proc.pid
    finally:
        stop_process(proc)


@contextmanager
def _server(repository: Path, model: str, otlp_port: int | None) -> Iterator[tuple[str, int]]:
    """One single-worker server: its worker's address (h2load talks to it) and the
    supervisor's pid."""
    port, worker = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRONTO_", "OTEL_"))}
    if otlp_port is not None:
        env |= {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }
    cmd = [
        *PRONTO, "serve", "--model-repository", str(repository), "--models", model,
        "--workers", "1", "--port", str(port), "--worker-base-port", str(worker),
        "--metrics-port", "0", "--log-level", "WARNING",
    ]  # fmt: skip
    with serving(cmd, worker, env) as pid:
        yield f"127.0.0.1:{worker}", pid


def measure(
    repository: Path, model: str, seconds: float, rounds: int, request: dict[str, Any]
) -> dict[str, Any]:
    """Requests per second and server CPU microseconds per request of each variant, per
    round. CPU time is the server's process tree (supervisor, template, worker) over the
    measured window, which h2load runs without a warm-up for this reason."""
    with tempfile.TemporaryDirectory(prefix="trace-cost-") as tmp:
        body = write_request(raw_request_from_json(request), Path(tmp) / "request.bin")
        with (
            _receiver() as (otlp_port, counter),
            _server(repository, model, None) as off,
            _server(repository, model, otlp_port) as on,
        ):
            arms = {name: on if traced else off for name, (traced, _) in VARIANTS.items()}
            headers = {name: {"traceparent": tp} for name, (_, tp) in VARIANTS.items() if tp}
            _, results, cpu_us = alternating_rounds(arms, body, seconds, rounds, headers)
            spans = counter.spans
    return {"rps": results, "cpu_us_per_request": cpu_us, "spans_exported": spans}


def _median_ratio(values: list[float], base: list[float]) -> float:
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


def ratio_table(
    rps: dict[str, list[float]], cpu_us: dict[str, list[float]], kind: str, base: str
) -> str:
    """Markdown: per ``kind`` (variant, revision), requests/s and server CPU per request in
    each round, and the median over rounds of the ratio to ``base`` in the same round
    (rounds drift together on a shared machine; ratios drift less). CPU per request is the
    steadier of the two there: it does not count time the server spent waiting for a core."""
    lines = [
        f"| {kind} | requests/s per round | ratio to {base} | server CPU µs/request per round "
        f"| ratio to {base} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, values in rps.items():
        cpu = cpu_us[name]
        lines.append(
            f"| {name} | {', '.join(f'{v:.0f}' for v in values)} "
            f"| {_median_ratio(values, rps[base]):.2f} "
            f"| {', '.join(f'{v:.0f}' for v in cpu)} "
            f"| {_median_ratio(cpu, cpu_us[base]):.2f} |"
        )
    return "\n".join(lines)


def table(rps: dict[str, list[float]], cpu_us: dict[str, list[float]]) -> str:
    """:func:`ratio_table` of the variants, against tracing ``off``."""
    return ratio_table(rps, cpu_us, "variant", "off")


def add_side_by_side_arguments(
    parser: argparse.ArgumentParser, seconds: float, rounds: int
) -> None:
    """The options every side-by-side h2load study takes: model, request, rounds, output."""
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="flight-delay")
    parser.add_argument(
        "--request",
        type=Path,
        default=DATA_DIR / "oip.json",
        help="ghz-style JSON requests; the first is sent (default: the load data's first "
        "single-row flight-delay request)",
    )
    parser.add_argument("--seconds", type=float, default=seconds, help="per round and arm")
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_side_by_side_arguments(parser, seconds=3.0, rounds=3)
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text())[0]
    request["model_name"] = args.model
    found = measure(args.model_repository, args.model, args.seconds, args.rounds, request)
    print(table(found["rps"], found["cpu_us_per_request"]))
    print(f"\nspans exported by the tracing-on server: {found['spans_exported']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {**found, "seconds": args.seconds, "machine": machine_description()}
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
