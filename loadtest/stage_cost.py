"""Where a single-row ModelInfer's server CPU goes under load: workers whose ModelInfer
stops after each stage of the request path, side by side with the bare grpc.aio floor.

    python -m loadtest.stage_cost --model-repository models --seconds 4 --rounds 4

Each arm is one process on a port of its own, driven by h2load (2 connections x 8 streams,
the same single-row request bytes, tritonclient's raw form) in rounds whose order
alternates; CPU per request is the arm's process tree over the measured window.

- ``floor``: the bare grpc.aio server (``loadtest.compare.bare_server``, on uvloop as the
  workers are), whose ModelInfer returns a constant reply;
- ``reply``: a Pronto worker, served as deployed (metrics, drift, health, every service),
  whose ModelInfer returns the floor's constant reply at once;
- ``decode``: the same after decoding the request (``decode_infer_request``);
- ``feeds``: ... and checking its inputs against the model (``InferenceCore._feeds``);
- ``run``: ... and ONNX Runtime's run;
- ``full``: the unchanged request path (prediction id, drift and capture hooks, the reply).

An arm's CPU per request minus the previous arm's is that stage's cost under load. The
stages are then timed in process, without gRPC, twice each: hot (the same call repeated, as
a micro-benchmark runs it) and cold (a pass over 8 MiB of memory before each call evicts the
caches, as the rest of a served request's work does: gRPC's C core, the event loop, the
kernel and the load generator on the same cores).

The patched arms are started through this module (``--serve STAGE -- ARGS``: the patch,
then ``pronto serve ARGS``); workers fork from that process, so they inherit it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.h2load import raw_request_from_json, write_request
from loadtest.runner import machine_description
from loadtest.trace_cost import add_side_by_side_arguments, alternating_rounds, ratio_table, serving
from pronto_cli.procs import free_port

__all__ = ["ARMS", "STAGES", "in_process", "main", "measure", "patch", "stage_table"]

#: the request path's stages, in order; a worker arm stops after its stage
STAGES = ("reply", "decode", "feeds", "run", "full")
ARMS = ("floor", *STAGES)
#: what an evicting pass reads before each cold call
EVICT_BYTES = 8 << 20


def patch(stage: str) -> None:
    """Make ``InferenceServicer.ModelInfer`` stop after ``stage`` (``full``: unchanged)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    if stage == "full":
        return
    from loadtest.compare.bare_server import constant_reply
    from server import servicers
    from server.oip_codec import decode_infer
    from server.status import rpc

    reply = constant_reply()
    upto = STAGES.index(stage)

    @rpc
    async def ModelInfer(self: Any, request: Any, context: Any) -> Any:
        if upto >= STAGES.index("decode"):
            req = decode_infer(request, self.max_elements, self.core.max_batch_size)
            if upto >= STAGES.index("feeds"):
                core = self.core
                handle = core.registry.get(req.model_name, req.model_version)
                feeds = core._feeds(handle, req)
                if upto >= STAGES.index("run"):
                    handle.run(feeds, req.outputs or handle.output_names)
        return reply

    servicers.InferenceServicer.ModelInfer = ModelInfer  # type: ignore[method-assign]


def serve(stage: str, args: list[str]) -> int:
    """``pronto serve args`` with ModelInfer stopping after ``stage``."""
    from pronto_cli.main import main as pronto

    patch(stage)
    return pronto(["serve", *args])


@contextmanager
def _arm(name: str, repository: Path, model: str) -> Iterator[tuple[str, int]]:
    """One arm's server: the address h2load talks to, and the pid whose tree is measured."""
    port = free_port()
    if name == "floor":
        cmd = [sys.executable, "-m", "loadtest.compare.bare_server", "--port", str(port)]
        cmd += ["--workers", "1", "--event-loop", "uvloop"]
    else:
        cmd = [sys.executable, "-m", "loadtest.stage_cost", "--serve", name, "--"]
        cmd += ["--model-repository", str(repository), "--models", model, "--workers", "1"]
        cmd += ["--port", str(port), "--worker-base-port", str(free_port())]
        cmd += ["--metrics-port", str(free_port()), "--log-level", "WARNING"]
    with serving(cmd, port) as pid:
        yield f"127.0.0.1:{port}", pid


def measure(
    repository: Path, model: str, seconds: float, rounds: int, request: dict[str, Any]
) -> dict[str, Any]:
    """Requests per second and server CPU µs per request of every arm, per round; and which
    model answered each arm's check (the floor and the patched arms answer ``bare``)."""
    with tempfile.TemporaryDirectory(prefix="stage-cost-") as tmp, ExitStack() as stack:
        body = write_request(raw_request_from_json(request), Path(tmp) / "request.bin")
        arms = {name: stack.enter_context(_arm(name, repository, model)) for name in ARMS}
        replies, rps, cpu_us = alternating_rounds(arms, body, seconds, rounds)
    answered = {name: reply.model_name for name, reply in replies.items()}
    return {"rps": rps, "cpu_us_per_request": cpu_us, "answered_by": answered}


def in_process(
    repository: Path, model: str, request: dict[str, Any], calls: int = 1000, rounds: int = 4
) -> dict[str, dict[str, float]]:
    """Median µs of each stage in process, hot and cold (caches evicted before each call),
    over ``rounds`` rounds of ``calls`` hot and ``calls / 8`` cold calls per stage."""
    from pronto_contract import latest_version, version_dir
    from server.core import InferenceCore
    from server.model import load_model
    from server.oip_codec import InferWire, decode_infer, encode_infer_response
    from server.repository import Registry

    version = latest_version(repository, model)
    if version is None:
        raise FileNotFoundError(f"no published version of {model!r} in {repository}")
    handle = load_model(model, version, version_dir(repository, model, version))
    registry = Registry()
    registry.replace([handle])
    core = InferenceCore(registry)
    core.ready = True
    loop = asyncio.new_event_loop()
    data = raw_request_from_json(request).SerializeToString()
    decoded = decode_infer(InferWire(data), 1 << 24, 1 << 20)
    feeds = core._feeds(handle, decoded)
    names = decoded.outputs or handle.output_names
    response = loop.run_until_complete(core.infer(decoded))
    stages: dict[str, Callable[[], object]] = {
        "decode": lambda: decode_infer(InferWire(data), 1 << 24, 1 << 20),  # as served
        "feeds": lambda: core._feeds(handle, decoded),
        "run": lambda: handle.run(feeds, names),
        "full": lambda: loop.run_until_complete(core.infer(decoded)),
        "reply": lambda: encode_infer_response(response).SerializeToString(),
    }
    junk = np.ones(EVICT_BYTES, dtype=np.uint8)
    clock = time.perf_counter
    hot: dict[str, list[float]] = {name: [] for name in stages}
    cold: dict[str, list[float]] = {name: [] for name in stages}
    try:
        for _ in range(rounds):  # stages interleaved, so a slow spell hits each alike
            for name, fn in stages.items():
                for _ in range(calls):
                    start = clock()
                    fn()
                    hot[name].append(clock() - start)
                for _ in range(calls // 8):
                    junk.sum()
                    start = clock()
                    fn()
                    cold[name].append(clock() - start)
    finally:
        loop.close()
    return {
        name: {
            "hot": round(1e6 * statistics.median(hot[name]), 1),
            "cold": round(1e6 * statistics.median(cold[name]), 1),
        }
        for name in stages
    }


#: what each stage adds under load
_ADDED = {
    "decode": "decode the request",
    "feeds": "check the inputs against the model",
    "run": "ONNX Runtime's run",
    "full": "the rest: id, drift and capture hooks, the reply",
}


def _in_process_added(costs: dict[str, dict[str, float]], stage: str, kind: str) -> float:
    """A stage's in-process µs; for ``full``, ``InferenceCore.infer`` less the checks and
    the run, plus encoding the reply (what the served ``full`` arm adds to ``run``)."""
    if stage != "full":
        return costs[stage][kind]
    return costs["full"][kind] - costs["feeds"][kind] - costs["run"][kind] + costs["reply"][kind]


def stage_table(found: dict[str, Any], costs: dict[str, dict[str, float]]) -> str:
    """Markdown: each stage's CPU per request under load (the difference of the arms'
    medians) next to its in-process cost, hot and cold."""
    cpu = {name: statistics.median(v) for name, v in found["cpu_us_per_request"].items()}
    lines = [
        "| stage | served: added CPU µs per request (medians) | in process, hot µs "
        "| in process, cold µs |",
        "| --- | ---: | ---: | ---: |",
        f"| gRPC and the worker around ModelInfer (`reply` arm; the floor: "
        f"{cpu['floor']:.0f}) | {cpu['reply']:.0f} | | |",
    ]
    for prev, name in pairwise(STAGES):
        lines.append(
            f"| {_ADDED[name]} | {cpu[name] - cpu[prev]:.0f} "
            f"| {_in_process_added(costs, name, 'hot'):.1f} "
            f"| {_in_process_added(costs, name, 'cold'):.1f} |"
        )
    lines.append(
        f"| `InferenceCore.infer` as a whole (in process) | | {costs['full']['hot']:.1f} "
        f"| {costs['full']['cold']:.1f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        if len(argv) < 3 or argv[2] != "--":
            print(
                "usage: python -m loadtest.stage_cost --serve STAGE -- SERVE-ARGS", file=sys.stderr
            )
            return 2
        return serve(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_side_by_side_arguments(parser, seconds=4.0, rounds=4)
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text())[0]
    request["model_name"] = args.model
    costs = in_process(args.model_repository, args.model, request)  # before any server runs
    found = measure(args.model_repository, args.model, args.seconds, args.rounds, request)
    print(ratio_table(found["rps"], found["cpu_us_per_request"], "arm", "floor"))
    print()
    print(stage_table(found, costs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            **found,
            "in_process_us": costs,
            "seconds": args.seconds,
            "command": "python -m loadtest.stage_cost " + " ".join(argv),
            "machine": machine_description(),
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
