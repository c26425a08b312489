"""Single-row throughput of several git revisions of the server, side by side.

    python -m loadtest.revisions --model-repository models --rev 97f7cca~1 --rev . \\
        --seconds 2 --rounds 6

Each revision is checked out (``git worktree add --detach``) into a temporary folder
and served from there by this interpreter (its packages come first on ``PYTHONPATH``;
third-party packages are this environment's, so the revisions compared must share their
pins; each checkout's native extension is compiled in it, or it would load this tree's).
``.`` is the working tree as it is. Every server runs one worker; h2load sends the
same single-row ``ModelInfer`` bytes (tritonclient's raw form) to each, in rounds whose
order alternates, and each round reads the server's CPU time (supervisor, template and
worker) over the measured window. The table gives requests per second and server CPU
microseconds per request per round, and the median over rounds of the ratio to the first
revision in the same round: on a shared machine rounds drift together, ratios less, and
CPU per request least (it does not count time spent waiting for a core). A second table
gives the worker's resident memory as each round ends: what a revision keeps hold of
under that load. Servers have no metrics port, so they keep neither metrics nor drift,
unless ``--metrics`` gives each one (as deployed).

With ``--profile SECONDS`` each revision's worker is then sampled with py-spy (GIL-holding
samples only) while h2load drives it alone, once per request body (``--request`` and any
``--profile-request``), and a table puts the busiest frames of every revision side by side:
where the time went before and after a change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loadtest.h2load import (
    H2loadRun,
    check_request,
    raw_request_from_json,
    run_h2load,
    write_request,
)
from loadtest.runner import DATA_DIR, machine_description
from loadtest.trace_cost import add_side_by_side_arguments, alternating_rounds, ratio_table
from pronto_cli.procs import free_port, stop_process, wait_for_grpc_health

__all__ = [
    "BASELINE",
    "add_metrics_argument",
    "bench",
    "main",
    "measure",
    "profile",
    "profile_table",
    "rss_table",
    "served",
]

ROOT = Path(__file__).resolve().parents[1]
# The request path as it was before the single-row and batch work measured against the
# Python gRPC floor: the "before" of `pronto bench profile`.
BASELINE = "c128a66"


def _entry_point(tree: Path) -> list[str]:
    """The command line of the revision's own ``pronto`` script, run by this interpreter."""
    scripts = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["pronto"].split(":")
    code = f"import sys; from {module} import {func} as main; sys.exit(main())"
    return [sys.executable, "-c", code]


def build_extension(tree: Path) -> None:
    """Compile the revision's ``server/_textcodes.c`` into its checkout, by the revision's
    own build configuration (its ``setup.py``, or ``pyproject.toml`` before it had one), so
    that every revision runs with its own native code, as installed. A worktree has sources
    only, and without a build of its own the editable install's finder would load the
    working tree's extension into the older revision."""
    if not (tree / "server" / "_textcodes.c").exists():
        return
    script = (
        ["setup.py"]
        if (tree / "setup.py").exists()
        else ["-c", "import setuptools; setuptools.setup()"]
    )
    subprocess.run(
        [sys.executable, *script, "-q", "build_ext", "--inplace"], cwd=tree, check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


@contextmanager
def checkout(rev: str) -> Iterator[tuple[str, Path]]:
    """``(commit, tree)``: the revision in a temporary worktree; ``.`` is this tree."""
    if rev == ".":
        head = subprocess.run(
            ["git", "describe", "--always"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        # changed code, not the results and pages the benchmarks themselves rewrite
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!loadtest/results", ":!docs"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        name = f"working tree at {head}{'-dirty' if changed else ''}" if head else "working tree"
        yield name, ROOT
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix=f"rev-{commit}-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(tree), commit],
            cwd=ROOT,
            check=True,
        )
        try:
            build_extension(tree)
            yield commit, tree
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )


@contextmanager
def serve(
    tree: Path, repository: Path, model: str, *flags: str, metrics: bool = False
) -> Iterator[tuple[str, int]]:
    """One single-worker server of the revision in ``tree`` (with ``flags`` added to its
    command line): its worker's address and the supervisor's pid. Without ``metrics`` it
    has no metrics port, so neither metrics nor drift are kept."""
    port, worker = free_port(), free_port()
    metrics_port = free_port() if metrics else 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRONTO_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [
        *_entry_point(tree), "serve", "--model-repository", str(repository.resolve()),
        "--models", model, "--workers", "1", "--port", str(port),
        "--worker-base-port", str(worker), "--metrics-port", str(metrics_port),
        "--log-level", "WARNING",
        *flags,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tree, env=env)
    try:
        address = f"127.0.0.1:{worker}"
        wait_for_grpc_health(address, timeout=120, proc=proc)
        yield address, proc.pid
    finally:
        stop_process(proc)


Servers = dict[str, tuple[str, int]]


@contextmanager
def served(
    revs: list[str], repository: Path, model: str, metrics: bool = False
) -> Iterator[Servers]:
    """Each revision checked out and served (:func:`serve`), by name: its worker's address
    and the supervisor's pid; all stopped and removed when the block ends."""
    with contextlib.ExitStack() as stack:
        servers: Servers = {}
        for rev in revs:
            commit, tree = stack.enter_context(checkout(rev))
            if commit in servers:
                raise ValueError(f"{rev} is {commit} again: give each revision once")
            servers[commit] = stack.enter_context(serve(tree, repository, model, metrics=metrics))
        yield servers


def measure(servers: Servers, seconds: float, rounds: int, request: Any) -> dict[str, Any]:
    """Per revision (named by commit), requests/s, server CPU µs/request and the worker's
    resident memory (MiB, read as each round ends) per round."""
    import psutil

    from server.template import worker_processes

    with tempfile.TemporaryDirectory() as tmp:
        body = write_request(raw_request_from_json(request), Path(tmp) / "request.bin")
        rss_mib: dict[str, list[float]] = {name: [] for name in servers}

        def read_rss(name: str, pid: int) -> None:
            (worker,) = worker_processes(psutil.Process(pid))
            rss_mib[name].append(worker.memory_info().rss / 2**20)

        _, rps, cpu_us = alternating_rounds(servers, body, seconds, rounds, after_each=read_rss)
    return {"rps": rps, "cpu_us_per_request": cpu_us, "worker_rss_mib": rss_mib}


def rss_table(rss_mib: dict[str, list[float]], kind: str = "revision") -> str:
    """Markdown: each revision's (``kind``'s) worker resident memory as each round ended,
    and the most."""
    lines = [f"| {kind} | worker RSS MiB per round | most |", "| --- | --- | ---: |"]
    for name, values in rss_mib.items():
        listed = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {name} | {listed} | {max(values):.0f} |")
    return "\n".join(lines)


def profile(
    servers: Servers, seconds: int, requests: dict[str, Any], out_dir: Path
) -> dict[str, dict[str, list[list[Any]]]]:
    """Per request body and revision, the worker's busiest frames under h2load:
    ``[frame, own %, inclusive %]``; the collapsed stacks stay in ``out_dir``."""
    import threading

    import psutil

    from loadtest.profile import top_frames
    from server.template import worker_processes

    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, list[list[Any]]]] = {label: {} for label in requests}
    for label, request in requests.items():
        body = write_request(raw_request_from_json(request), out_dir / f"{label}.grpc")
        for position, (name, (address, pid)) in enumerate(servers.items()):
            check_request(address, body)
            (worker,) = worker_processes(psutil.Process(pid))
            run = H2loadRun(address=address, body=body, duration_s=seconds + 2, warmup_s=0.5)
            load = threading.Thread(target=run_h2load, args=(run,))
            load.start()
            # the working tree and HEAD share a commit: the position keeps them apart
            slug = f"{position + 1}-{name.split()[-1]}"
            collapsed = out_dir / f"worker-{label}-{slug}.txt"
            spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid"]
            spy += [str(worker.pid), "--gil", "--duration", str(seconds), "--rate", "500"]
            spy += ["--format", "raw", "--output", str(collapsed)]
            proc = subprocess.run(spy, capture_output=True, text=True, check=False)
            load.join()
            if proc.returncode != 0:
                raise RuntimeError(f"py-spy failed: {proc.stderr.strip()[-1000:]}")
            rows, total = top_frames(collapsed, limit=12)
            found[label][name] = [
                [f, round(100 * own / total, 1), round(100 * incl / total, 1)]
                for f, own, incl in rows
            ]
    return found


def profile_table(frames: dict[str, list[list[Any]]]) -> str:
    """Markdown: the busiest frames of any revision, own and inclusive % for each."""
    names = list(frames)
    by_rev = {name: {f: (own, incl) for f, own, incl in rows} for name, rows in frames.items()}
    order: list[str] = []
    for rows in frames.values():
        order += [f for f, _, _ in rows if f not in order]
    order.sort(key=lambda f: -max(by_rev[n].get(f, (0.0, 0.0))[0] for n in names))
    head = " | ".join(f"{n}: own % | {n}: incl. %" for n in names)
    lines = [f"| frame | {head} |", "| --- |" + " ---: | ---: |" * len(names)]
    for f in order:
        cells = []
        for n in names:
            own, incl = by_rev[n].get(f, (None, None))
            cells += ["" if own is None else f"{own}%", "" if incl is None else f"{incl}%"]
        lines.append(f"| `{f[:80]}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rps: dict[str, list[float]], cpu_us: dict[str, list[float]]) -> str:
    """Markdown, one line per revision; ratios against the first revision."""
    return ratio_table(rps, cpu_us, "revision", next(iter(rps)))


def bench(results_dir: Path, repository: Path, model: str, baseline: str = BASELINE) -> bool:
    """The ``profile`` scenario of ``pronto bench``: ``baseline`` against this tree, single-row
    requests/s and server CPU per request in alternating rounds, then each worker's busiest
    frames for single-row and 256-row requests."""
    from loadtest.report import write_study

    known = subprocess.run(
        ["git", "cat-file", "-e", f"{baseline}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if known.returncode != 0:
        raise RuntimeError(
            f"pronto bench profile compares with {baseline}, which this clone does not have "
            "(a shallow clone?): run `git fetch --unshallow` first"
        )
    out = results_dir / "profile"
    requests = {
        label: {**json.loads((DATA_DIR / f"{label}.json").read_text())[0], "model_name": model}
        for label in ("oip", "oip_b256")
    }
    with served([baseline, "."], repository, model) as servers:
        found = measure(servers, 3.0, 4, requests["oip"])
        frames = profile(servers, 6, requests, out / "stacks")
    names = list(found["rps"])
    tables = [
        "Single-row ModelInfer, one worker per revision, h2load (2 connections × 8 streams):\n\n"
        + table(found["rps"], found["cpu_us_per_request"]),
        "Busiest frames, single row (`oip`):\n\n" + profile_table(frames["oip"]),
        "Busiest frames, 256 rows (`oip_b256`):\n\n" + profile_table(frames["oip_b256"]),
    ]
    from loadtest.profile import EVENT_LOOP

    description = (
        f"Before and after: the request path at {names[0]} (before the work measured against "
        f"the Python gRPC floor) and at {names[1]}, each served by one worker from its own "
        "checkout with the same model and request bytes (tritonclient's raw form). Throughput "
        "and server CPU per request come from alternating h2load rounds; then py-spy samples "
        "each worker (GIL-holding samples only: time in gRPC's Cython layer shows under the "
        f"row `{EVENT_LOOP}`, ONNX Runtime under `Session.run`)."
    )
    data = {**found, "profile": frames, "baseline": baseline}
    command = f"pronto bench profile (baseline {baseline})"
    write_study("profile", description, True, tables, data, command, out)
    return True


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    """``--metrics``: the servers keep metrics and drift, as deployed."""
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="serve with a metrics port, so that metrics and drift are kept (off by default)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rev",
        action="append",
        required=True,
        help="a git revision to serve (repeat; the first is the baseline; '.' = this tree)",
    )
    add_side_by_side_arguments(parser, seconds=2.0, rounds=6)
    add_metrics_argument(parser)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="then py-spy each revision's worker this long per request body",
    )
    parser.add_argument(
        "--profile-request",
        type=Path,
        action="append",
        default=[],
        help="another ghz-style JSON request file to profile with (e.g. 256-row requests)",
    )
    args = parser.parse_args(argv)
    if len(args.rev) < 2:
        parser.error("give at least two --rev")
    request = json.loads(args.request.read_text())[0]
    request["model_name"] = args.model
    frames: dict[str, Any] = {}
    with served(args.rev, args.model_repository, args.model, args.metrics) as servers:
        found = measure(servers, args.seconds, args.rounds, request)
        print(table(found["rps"], found["cpu_us_per_request"]))
        print(f"\n{rss_table(found['worker_rss_mib'])}")
        if args.profile:
            requests = {args.request.stem: request}
            for path in args.profile_request:
                extra = json.loads(path.read_text())[0]
                requests[path.stem] = {**extra, "model_name": args.model}
            out = (args.out.parent if args.out else Path(tempfile.mkdtemp())) / "stacks"
            frames = profile(servers, args.profile, requests, out)
            for label, rows in frames.items():
                print(f"\n{label}:\n{profile_table(rows)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            **found,
            "profile": frames,
            "seconds": args.seconds,
            "machine": machine_description(),
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
