"""`pronto rollout`: shadow and canary releases of a model version.

Each operation changes ``<model-repository>/<model>/rollout.json`` (every server reading
that repository follows within its poll interval), or, with ``--address``, asks a running
server's ``pronto.v1.RolloutService`` to do it. ``wait`` blocks until the automatic
analysis has promoted (exit 0) or aborted (exit 1) the rollout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PRONTO_{name}", default)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="Shadow and canary releases of a model version: start, promote, abort, status.",
        description="Roll a candidate model version out next to the stable one: shadow "
        "(scored off the response path and compared) or canary (a sticky share of requests, "
        "by prediction id), optionally stepped, promoted or aborted by the automatic analysis.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", help="Model name.")
    common.add_argument(
        "--model-repository",
        type=Path,
        default=Path(_env("MODEL_REPOSITORY", "models")),
        help="Model repository root whose <model>/rollout.json is changed "
        "(env PRONTO_MODEL_REPOSITORY; default: models).",
    )
    common.add_argument(
        "--address",
        default=_env("ROLLOUT_ADDRESS", ""),
        help="host:port of a server: use its admin RolloutService instead of the files "
        "(env PRONTO_ROLLOUT_ADDRESS).",
    )
    common.add_argument("--json", action="store_true", help="Print the whole state as JSON.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = sub.add_parser("start", parents=[common], help="Start a rollout of a candidate.")
    start.add_argument("--candidate", type=int, required=True, help="Candidate version.")
    start.add_argument("--mode", choices=("shadow", "canary"), required=True)
    start.add_argument(
        "--weight", type=float, help="Canary: percent of requests (default: first step with "
        "--auto, else 0).",
    )  # fmt: skip
    start.add_argument("--auto", action="store_true", help="Step, promote or abort automatically.")
    start.add_argument("--stable", type=int, help="Stable version (default: current/older).")
    start.add_argument("--steps", help="Comma-separated canary weights (default 5,25,50,100).")
    start.add_argument("--step-seconds", type=float, help="Seconds per step (default 60).")
    start.add_argument("--shadow-sample", type=float, help="Shadow: share scored (default 1).")
    start.add_argument("--max-error-rate", type=float, help="Default 0.01.")
    start.add_argument("--max-latency-p99-seconds", type=float, help="Default 0.25.")
    start.add_argument("--min-agreement", type=float, help="Default 0.9.")
    start.add_argument("--max-quality-drop", type=float, help="Default 0.05.")
    start.add_argument("--min-requests", type=int, help="Default 50.")
    for name, text in (
        ("promote", "Make the candidate stable for every request."),
        ("abort", "Send every request back to stable."),
    ):
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("--reason", default="operator", help="Recorded in the history.")
    sub.add_parser("status", parents=[common], help="Show the rollout state.")
    wait = sub.add_parser(
        "wait",
        parents=[common],
        help="Wait until the rollout is promoted (exit 0) or aborted (exit 1).",
    )
    wait.add_argument(
        "--candidate",
        type=int,
        help="The version expected: a rollout of it that already ended still reports its "
        "outcome (default: the candidate in progress).",
    )
    wait.add_argument("--timeout", type=float, default=1800.0, help="Seconds (exit 2 after).")
    wait.add_argument("--interval", type=float, default=5.0, help="Seconds between checks.")
    parser.set_defaults(handler=_run)


_THRESHOLDS = (
    "max_error_rate",
    "max_latency_p99_seconds",
    "min_agreement",
    "max_quality_drop",
    "min_requests",
)


def _start_request(args: argparse.Namespace) -> Any:
    from server.generated.pronto.v1 import rollout_pb2 as rpb

    request = rpb.StartRolloutRequest(
        name=args.model, candidate=args.candidate, mode=args.mode, auto=args.auto
    )
    for field in ("weight", "stable", "step_seconds", "shadow_sample", *_THRESHOLDS):
        value = getattr(args, field)
        if value is not None:
            setattr(request, field, value)
    if args.steps:
        request.steps.extend(float(s) for s in args.steps.split(","))
    return request


def _call(args: argparse.Namespace) -> dict[str, Any] | None:
    """The operation through the admin service; the state as a dict (None: no state)."""
    import grpc

    from server.generated.pronto.v1 import rollout_pb2 as rpb
    from server.generated.pronto.v1 import rollout_pb2_grpc as rpb_grpc

    with grpc.insecure_channel(args.address) as channel:
        stub = rpb_grpc.RolloutServiceStub(channel)
        if args.action == "start":
            reply = stub.StartRollout(_start_request(args), timeout=10)
        elif args.action == "promote":
            reply = stub.PromoteRollout(
                rpb.PromoteRolloutRequest(name=args.model, reason=args.reason), timeout=10
            )
        elif args.action == "abort":
            reply = stub.AbortRollout(
                rpb.AbortRolloutRequest(name=args.model, reason=args.reason), timeout=10
            )
        else:
            reply = stub.GetRollout(rpb.GetRolloutRequest(name=args.model), timeout=10)
    text = reply.rollout.state_json
    return json.loads(text) if text else None


def _local(args: argparse.Namespace) -> dict[str, Any] | None:
    from server.rollout_admin import thresholds_from
    from server.rollout_state import Mode, RolloutState, abort, promote, read_state, start

    root = args.model_repository
    state: RolloutState | None
    if args.action == "start":
        request = _start_request(args)
        state = start(
            root,
            args.model,
            args.candidate,
            Mode(args.mode),
            weight=args.weight,
            auto=args.auto,
            stable=args.stable,
            shadow_sample=args.shadow_sample,
            steps=list(request.steps) or None,
            step_seconds=args.step_seconds,
            thresholds=thresholds_from(request),
            actor="cli",
        )
    elif args.action == "promote":
        state = promote(root, args.model, args.reason, "cli")
    elif args.action == "abort":
        state = abort(root, args.model, args.reason, "cli")
    else:
        state = read_state(root, args.model)
    return state.model_dump(mode="json") if state is not None else None


def _summary(model: str, state: dict[str, Any] | None) -> str:
    if state is None:
        return f"{model}: no rollout state (unversioned requests get the newest version)"
    line = f"{model}: stable {state['stable']}"
    if state.get("candidate") is not None:
        line += f", candidate {state['candidate']} in {state['mode']}"
        if state["mode"] == "canary":
            line += f" at {state['weight']:g}%"
        if state.get("auto"):
            line += " (automatic analysis)"
    else:
        line += ", no rollout in progress"
    history = state.get("history") or []
    if history:
        last = history[-1]
        line += f"; last: {last['action']}" + (f" ({last['reason']})" if last["reason"] else "")
    return line


def _run(args: argparse.Namespace) -> int:
    import grpc

    from server.rollout_state import RolloutError

    op = _call if args.address else _local
    try:
        if args.action == "wait":
            return _wait(args, op)
        state = op(args)
    except RolloutError as exc:
        print(f"pronto rollout {args.action}: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"pronto rollout {args.action}: {exc.code().name}: {exc.details()}",
              file=sys.stderr)  # fmt: skip
        return 2
    print(json.dumps(state, indent=2) if args.json else _summary(args.model, state))
    return 0


def _wait(args: argparse.Namespace, op: Any) -> int:
    args.action = "status"
    candidate = args.candidate
    if candidate is None:
        first = op(args)
        if first is None or first.get("candidate") is None:
            print(f"{args.model}: no rollout in progress", file=sys.stderr)
            return 2
        candidate = first["candidate"]
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        state = op(args)
        line = _summary(args.model, state)
        if line != last:
            print(line, flush=True)
            last = line
        if state is None or state.get("candidate") != candidate:
            promoted = state is not None and state["stable"] == candidate
            return 0 if promoted else 1
        time.sleep(args.interval)
    print(f"{args.model}: still rolling out after {args.timeout:g}s", file=sys.stderr)
    return 2
