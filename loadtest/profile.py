"""Where a worker's time goes under load: py-spy samples while h2load (or ghz) drives the server.

    python -m loadtest.profile [--payload oip|oip_b256|predict] [--seconds 10] [--label before]

OIP payloads go through h2load with tritonclient-form request bytes (light on the
CPU the worker needs); the named-feature Predict payload through ghz.

Writes the collapsed stacks (input for flamegraph.pl or speedscope) under
``loadtest/results/profile/``, and a table of the functions with the most samples
(own time and inclusive time) into the summary, so docs/benchmarks.md shows it.
Only samples that hold the GIL are kept: time in gRPC's Cython layer shows up under the
frame that dispatches the event loop's callbacks (asyncio's `Handle._run`; with uvloop, whose
loop calls them from C, the `Runner.run` that started it), counted as one row
:data:`EVENT_LOOP` so that tables of either loop compare; time in ONNX Runtime shows under
`Session.run` (the frame of ONNX Runtime's Python wrapper, or of the server's
``DirectSession.run``, which calls the binding without it: one row, so that revisions
compare).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from loadtest.ghz import GhzRun, run_ghz
from loadtest.h2load import H2loadRun, raw_request_from_json, run_h2load, write_request
from loadtest.report import update_benchmarks_doc, write_summary
from loadtest.runner import DATA_DIR, machine_description
from loadtest.stack import local_stack
from server.template import worker_processes

__all__ = ["EVENT_LOOP", "main", "top_frames"]

#: the row of the event loop's own frames, where gRPC's Cython layer is counted
EVENT_LOOP = "event loop (gRPC's Cython layer)"
#: asyncio dispatches each callback from ``Handle._run``; uvloop from C, so its callbacks
#: sit right under the ``Runner.run`` of ``uvloop.run`` (under asyncio that frame has no
#: time of its own: it only waits in ``run_until_complete``)
_LOOP_FRAMES = frozenset({"Handle._run", "Runner.run"})
#: the Python frame under which ONNX Runtime runs, by the name older revisions give it
_RUN_FRAMES = {"DirectSession.run": "Session.run"}

_CALLS = {
    "oip": "inference.GRPCInferenceService.ModelInfer",
    "oip_b256": "inference.GRPCInferenceService.ModelInfer",
    "predict": "pronto.v1.PredictionService.Predict",
}


def _h2load_thread(args: argparse.Namespace, address: str, out: Path) -> threading.Thread:
    first = json.loads((DATA_DIR / f"{args.payload}.json").read_text())[0]
    body = write_request(raw_request_from_json(first), out / f"{args.payload}.grpc")
    h2 = H2loadRun(address=address, body=body, duration_s=args.seconds + 4, warmup_s=0.5)
    return threading.Thread(target=run_h2load, args=(h2, out, f"load-{args.payload}"))


def top_frames(collapsed: Path, limit: int = 15) -> tuple[list[tuple[str, int, int]], int]:
    """(frame, own samples, inclusive samples) of the busiest frames, and the total."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] for f in stack.split(";")]
        frames = [EVENT_LOOP if f in _LOOP_FRAMES else _RUN_FRAMES.get(f, f) for f in frames]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    rows = [(f, own[f], incl[f]) for f, _ in own.most_common(limit)]
    return rows, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--payload", choices=sorted(_CALLS), default="oip")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--label", default="", help="suffix of the stacks file (before/after)")
    parser.add_argument("--results-dir", type=Path, default=Path("loadtest/results"))
    args = parser.parse_args(argv)
    out = args.results_dir / "profile"
    out.mkdir(parents=True, exist_ok=True)
    with local_stack(args.model_repository, args.workers, False, out / "logs") as stack:
        worker = worker_processes(psutil.Process(stack.server_pids[0]))[0].pid
        run = GhzRun(
            address=stack.grpc,
            call=_CALLS[args.payload],
            data_file=DATA_DIR / f"{args.payload}.json",
            concurrency=50,
            connections=4,
            duration_s=args.seconds + 4,
        )
        load = threading.Thread(target=run_ghz, args=(run, out, f"load-{args.payload}"))
        if args.payload.startswith("oip"):  # light on the CPU the worker needs
            load = _h2load_thread(args, stack.grpc, out)
        load.start()
        collapsed = out / f"worker-{args.payload}{'-' + args.label if args.label else ''}.txt"
        spy = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(worker),
            "--gil",
            "--duration",
            str(args.seconds),
            "--rate",
            "500",
        ]
        proc = subprocess.run(
            [*spy, "--format", "raw", "--output", str(collapsed)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed: {proc.stderr.strip()[-1000:]}")
        load.join()
    rows, total = top_frames(collapsed)
    table = ["| frame | own % | inclusive % |", "| --- | ---: | ---: |"]
    table += [f"| `{f[:90]}` | {o / total:.1%} | {i / total:.1%} |" for f, o, i in rows]
    print("\n".join(table))
    scenario = {"name": "profile", "description": __doc__.split("\n\n")[2].replace("\n", " ")}
    write_summary(
        scenario,
        [],
        machine_description(),
        " ".join(["python -m loadtest.profile", *(argv or sys.argv[1:])]),
        out,
        {"tables": ["\n".join(table)]},
    )
    update_benchmarks_doc(results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
