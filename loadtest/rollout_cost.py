"""What a rollout costs the caller: single-row throughput with no rollout, shadow at 100%
sampling and canary at 50%, side by side in alternating rounds on one server.

    python -m loadtest.rollout_cost --model-repository models --model flight-delay \\
        --candidate 2 --seconds 3 --rounds 4

The load comes from h2load by default (a C HTTP/2 client that leaves the cores to the
server; it sends the same pre-framed request bytes every time, built from the first
request of ``loadtest/data/<payload>.json``); ``--load ghz`` drives the same request
through ghz instead (heavier on the CPU, but with latency percentiles). Each round also
reads the worker's own CPU time, so the table shows the worker's CPU microseconds per
request next to the throughput: on a shared machine that figure moves far less than the
requests per second, because it does not depend on how much CPU the worker was given.

The candidate must be a version folder of the model (a copy of stable will do). The
model's ``rollout.json`` is replaced during the run and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import json_format

from loadtest.ghz import LoadResult, find_tool
from loadtest.h2load import H2loadRun, grpc_frame, raw_request_from_json, run_h2load
from loadtest.profile import top_frames
from loadtest.runner import DATA_DIR, machine_description
from pronto_cli.procs import PRONTO, free_port, stop_process, wait_until
from pronto_contract import list_versions, version_dir
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.rollout_state import Mode, start, state_path
from server.template import worker_processes

__all__ = ["Round", "main", "summarize"]

ROOT = Path(__file__).resolve().parents[1]
PROTOSET = ROOT / "gateway" / "generated" / "pronto.pb"
VARIANTS = ("none", "shadow", "canary")
#: gRPC method per payload: (path for h2load, call for ghz)
_METHODS = {
    "predict": ("/pronto.v1.PredictionService/Predict", "pronto.v1.PredictionService/Predict"),
    "oip": (
        "/inference.GRPCInferenceService/ModelInfer",
        "inference.GRPCInferenceService/ModelInfer",
    ),
}


@dataclass
class Round:
    """One measured round of one variant."""

    variant: str
    rps: float
    requests: int
    errors: int
    #: worker CPU (user + system, all threads) per request over the measured window
    cpu_us_per_request: float
    #: shadow samples the candidate scored / dropped during the round (from /metrics)
    shadow_scored: int = 0
    shadow_dropped: int = 0


def _first_request(payload: str, model: str) -> dict[str, Any]:
    request: dict[str, Any] = json.loads((DATA_DIR / f"{payload}.json").read_text())[0]
    request["model_name" if payload == "oip" else "name"] = model
    request.pop("id", None)  # every request gets a new id: the canary hash must vary
    return request


def _message(payload: str, request: dict[str, Any]) -> Any:
    if payload == "oip":
        return raw_request_from_json(request)  # tritonclient's raw form, as the benchmarks
    return json_format.ParseDict(request, ppb.PredictRequest())


def _send(address: str, path: str, message: bytes, timeout: float = 10) -> bytes:
    with grpc.insecure_channel(address) as channel:
        reply: bytes = channel.unary_unary(path)(message, timeout=timeout)
    return reply


def _version_of(payload: str, reply: bytes) -> str:
    if payload == "oip":
        from server.generated.inference import grpc_service_pb2 as pb

        return str(pb.ModelInferResponse.FromString(reply).model_version)
    return str(ppb.PredictResponse.FromString(reply).model_version)


def _metric(metrics_url: str, name: str, model: str) -> int:
    """Sum of a counter's samples for ``model`` in the supervisor's merged /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model") == model:
                total += sample.value
    return int(total)


class _Bench:
    """One single-worker server and the request it is measured with."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root: Path = args.model_repository
        self.model: str = args.model
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.path, self.call = _METHODS[args.payload]
        self.request = _first_request(args.payload, self.model)
        self.message = _message(args.payload, self.request).SerializeToString()
        #: the version unversioned requests get without a rollout
        self.default = ""

    @contextmanager
    def serving(self) -> Iterator[_Bench]:
        state_path(self.root, self.model).unlink(missing_ok=True)
        cmd = [
            *PRONTO, "serve", "--model-repository", str(self.root),
            "--models", self.model, "--workers", "1", "--host", "127.0.0.1",
            "--port", str(self.port), "--worker-base-port", "0",
            "--metrics-port", str(self.metrics_port), "--metrics-flush-interval", "0.2",
            "--model-poll-interval", "0.2", "--log-level", "WARNING", *self.args.server_arg,
        ]  # fmt: skip
        server = subprocess.Popen(cmd, cwd=ROOT)

        def answered() -> bool:
            try:
                reply = _send(self.address, self.path, self.message)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise  # the request itself is refused: no load run would count it
                return False
            self.default = _version_of(self.args.payload, reply)
            return True

        try:
            wait_until(answered, f"{self.model} on {self.address}", 60, [server], interval=0.2)
            workers = worker_processes(psutil.Process(server.pid))
            if len(workers) != 1:
                raise RuntimeError(f"expected one worker, found {len(workers)}")
            self.worker = workers[0]
            yield self
        finally:
            state_path(self.root, self.model).unlink(missing_ok=True)
            stop_process(server)

    # -- rollout states ---------------------------------------------------------------
    def _versions(self, want: set[str], timeout: float = 30) -> None:
        """Until unversioned requests are answered by exactly ``want`` (ids vary the hash)."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            call = channel.unary_unary(self.path)
            while time.monotonic() < deadline:
                seen = {
                    _version_of(self.args.payload, call(self.message, timeout=5)) for _ in range(64)
                }
                if seen == want:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"versions {want} not reached")

    def _shadowing(self, active: bool, timeout: float = 30) -> None:
        """Until the worker scores requests in shadow (or has stopped doing so)."""
        deadline = time.monotonic() + timeout
        name = "pronto_rollout_candidate_requests_total"
        while time.monotonic() < deadline:
            before = _metric(self.metrics_url, name, self.model)
            for _ in range(16):
                _send(self.address, self.path, self.message)
            time.sleep(0.5)  # two metric flushes of the worker
            grew = _metric(self.metrics_url, name, self.model) > before
            if grew == active:
                return
        raise TimeoutError(f"shadow scoring still {'off' if active else 'on'}")

    def set_variant(self, variant: str) -> None:
        state_path(self.root, self.model).unlink(missing_ok=True)
        candidate = self.args.candidate
        if variant == "shadow":
            start(self.root, self.model, candidate, Mode.SHADOW, shadow_sample=self.args.sample)
            self._shadowing(True)
        elif variant == "canary":
            state = start(self.root, self.model, candidate, Mode.CANARY, weight=self.args.weight)
            self._versions({str(state.stable), str(candidate)})
        else:
            self._versions({self.default})
            self._shadowing(False)

    # -- load ---------------------------------------------------------------------------
    def _cpu(self) -> float:
        times = self.worker.cpu_times()
        return float(times.user + times.system)

    def _load(self, workdir: Path, name: str) -> tuple[LoadResult, float, float]:
        """(result, worker CPU seconds, wall seconds) of one load run, warm-up excluded."""
        args = self.args
        window: dict[str, float] = {}
        if args.load == "h2load":
            body = workdir / "request.grpc"
            if not body.exists():
                body.write_bytes(grpc_frame(self.message))
            run = H2loadRun(
                address=self.address,
                body=body,
                duration_s=args.seconds,
                warmup_s=args.warmup,
                clients=args.clients,
                streams=args.streams,
                path=self.path,
            )
            # the measured window opens after the warm-up and closes when h2load stops
            opener = threading.Timer(
                args.warmup, lambda: window.update(cpu=self._cpu(), at=time.monotonic())
            )
            opener.start()
            try:
                result = run_h2load(run)
            finally:
                opener.cancel()
            window.setdefault("cpu", self._cpu())
            window.setdefault("at", time.monotonic())
        else:
            window.update(cpu=self._cpu(), at=time.monotonic())
            result = self._ghz(name)
        return result, self._cpu() - window["cpu"], time.monotonic() - window["at"]

    def _ghz(self, name: str) -> LoadResult:
        from loadtest.ghz import parse_ghz_report

        args = self.args
        cmd = [
            find_tool("ghz"), "--insecure", "--protoset", str(PROTOSET), "--call", self.call,
            "-c", str(args.clients * args.streams), "--connections", str(args.clients),
            "-z", f"{args.seconds}s", "-O", "json", "-d", json.dumps(self.request), self.address,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return parse_ghz_report(json.loads(done.stdout))

    def profile(self, variant: str, workdir: Path, out: Path) -> Path:
        """py-spy samples (GIL holders only) of the worker during one load run of ``variant``."""
        out.mkdir(parents=True, exist_ok=True)
        stacks = out / f"worker-{self.args.payload}-{variant}.txt"
        spy = [
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(self.worker.pid),
            "--gil", "--rate", "250", "--duration", str(max(1, round(self.args.seconds))),
            "--format", "raw", "--output", str(stacks),
        ]  # fmt: skip
        with subprocess.Popen(spy, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            self._load(workdir, f"{variant}-profile")
            _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode().strip()[-1000:]}")
        return stacks

    def measure(self, variant: str, workdir: Path, index: int) -> Round:
        scored0 = _metric(self.metrics_url, "pronto_rollout_candidate_requests_total", self.model)
        dropped0 = _metric(self.metrics_url, "pronto_rollout_shadow_dropped_total", self.model)
        result, cpu, wall = self._load(workdir, f"{variant}-{index}")
        time.sleep(0.5)  # the worker's last metric flush of the round
        scored = _metric(self.metrics_url, "pronto_rollout_candidate_requests_total", self.model)
        dropped = _metric(self.metrics_url, "pronto_rollout_shadow_dropped_total", self.model)
        served = result.rps * wall
        errors = result.errors
        if self.args.load == "ghz":
            # ghz ends a timed run by closing its connections under the calls still in
            # flight ("the client connection is closing", "use of closed network
            # connection"): the client's doing, not failures
            closed = sum(
                n
                for kind, n in result.error_kinds.items()
                if "connection is closing" in kind or "use of closed network connection" in kind
            )
            errors -= min(closed, self.args.clients * self.args.streams)
        return Round(
            variant=variant,
            rps=result.rps,
            requests=result.count,
            errors=errors,
            cpu_us_per_request=1e6 * cpu / served if served else 0.0,
            shadow_scored=scored - scored0 if variant == "shadow" else 0,
            shadow_dropped=dropped - dropped0,
        )


def shadow_path_cost(
    root: Path, model: str, candidate: int, sizes: list[int], samples: int = 4000
) -> dict[int, float]:
    """CPU microseconds per single-row sample of the worker's shadow path, in process.

    For each drain size ``k``: ``k`` Predict requests' worth of samples are recorded, one
    drain scores them, and the counters are flushed to Prometheus (multiprocess mode, as in
    a worker) every 200 drains. Stable's own run is not counted, nor the event loop's idle
    turns. Best of five repetitions: unlike throughput, this hardly depends on how busy
    the machine is.
    """
    import asyncio
    import os
    import shutil

    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client already imported: multiprocess mode cannot apply")
    work = Path(tempfile.mkdtemp(prefix="rollout-cost-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")
    (work / "metrics").mkdir()
    from server.features import columns_from_instances
    from server.model import load_model
    from server.monitoring.rollout_metrics import RolloutMetrics
    from server.repository import Registry
    from server.rollout import RolloutRouter

    try:
        repo = work / "models"
        stable_version = max(
            list_versions(root, [model]).get(model, {}), key=lambda v: (v != candidate, v)
        )
        for version in (stable_version, candidate):
            shutil.copytree(version_dir(root, model, version), version_dir(repo, model, version))
        registry = Registry()
        registry.replace(
            load_model(model, v, version_dir(repo, model, v)) for v in (stable_version, candidate)
        )
        start(repo, model, candidate, Mode.SHADOW, stable=stable_version)
        router = RolloutRouter(repo, registry, RolloutMetrics())
        router.refresh([model])
        stable = registry.get(model)
        instances = _first_request("predict", model)["instances"]
        outputs = [n for n in (stable.label_output, stable.proba_output) if n]

        async def turns(n: int) -> float:
            began = time.process_time()
            for _ in range(n):
                await asyncio.sleep(0)
            return time.process_time() - began

        async def run(k: int, drains: int) -> float:
            # each sample: its own feeds and stable outputs, as requests would hold them
            held: list[tuple[Any, ...]] = []
            for _ in range(k):
                columns = columns_from_instances(stable.features, instances)
                held.append((columns, *stable.run(columns, outputs)))
            router.shadow_delay = 0.0  # the drain size is k, not what a timer collects
            began = time.process_time()
            for i in range(drains):
                for feeds, label, proba in held:
                    router.record("id", stable, feeds, label, proba, 1)
                await asyncio.sleep(0)  # the drain's turn
                if i % 200 == 199:
                    router.flush()
            router.flush()
            return time.process_time() - began - await turns(drains)

        async def measure() -> dict[int, float]:
            await run(1, 200)  # warm up
            out = {}
            for k in sizes:
                drains = max(50, samples // k)
                best = min([await run(k, drains) for _ in range(5)])
                out[k] = round(1e6 * best / (drains * k), 2)
            return out

        return asyncio.run(measure())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(rounds: list[Round]) -> dict[str, Any]:
    """Means and ratios against ``none`` per variant (ratios also per round, then median)."""
    by: dict[str, list[Round]] = {}
    for r in rounds:
        by.setdefault(r.variant, []).append(r)
    base = by["none"]
    base_rps = statistics.mean(r.rps for r in base)
    base_cpu = statistics.mean(r.cpu_us_per_request for r in base)
    out: dict[str, Any] = {}
    for variant, rs in by.items():
        rps = statistics.mean(r.rps for r in rs)
        cpu = statistics.mean(r.cpu_us_per_request for r in rs)
        # each round against the none round of the same pass: the load of a shared machine
        # moves slowly, so neighbouring rounds see about the same
        paired = [r.rps / b.rps - 1 for r, b in zip(rs, base, strict=False) if b.rps]
        paired_cpu = [
            r.cpu_us_per_request / b.cpu_us_per_request - 1
            for r, b in zip(rs, base, strict=False)
            if b.cpu_us_per_request
        ]
        out[variant] = {
            "rps": [round(r.rps) for r in rs],
            "rps_mean": round(rps, 1),
            "rps_vs_none": round(rps / base_rps - 1, 4) if base_rps else 0.0,
            "rps_vs_none_median_of_rounds": round(statistics.median(paired), 4) if paired else 0.0,
            "cpu_us_per_request": [round(r.cpu_us_per_request, 1) for r in rs],
            "cpu_us_mean": round(cpu, 1),
            "cpu_vs_none": round(cpu / base_cpu - 1, 4) if base_cpu else 0.0,
            "cpu_vs_none_median_of_rounds": (
                round(statistics.median(paired_cpu), 4) if paired_cpu else 0.0
            ),
            "errors": sum(r.errors for r in rs),
            "shadow_scored": sum(r.shadow_scored for r in rs),
            "shadow_dropped": sum(r.shadow_dropped for r in rs),
        }
    return out


def table(summary: dict[str, Any], labels: dict[str, str]) -> str:
    """Markdown: throughput and worker CPU per request, each against ``none`` twice: the
    ratio of the means, and the median of the per-round ratios."""
    lines = [
        "| variant | req/s per round | mean | vs none | median of rounds "
        "| worker CPU µs/request per round | mean | vs none | median of rounds |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]

    def pct(value: float, base: bool) -> str:
        return "—" if base else f"{value:+.1%}"

    for variant, s in summary.items():
        base = variant == "none"
        lines.append(
            f"| {labels[variant]} | {', '.join(f'{v:,}' for v in s['rps'])}"
            f" | {s['rps_mean']:,.0f} | {pct(s['rps_vs_none'], base)}"
            f" | {pct(s['rps_vs_none_median_of_rounds'], base)}"
            f" | {', '.join(f'{v:.0f}' for v in s['cpu_us_per_request'])}"
            f" | {s['cpu_us_mean']:.0f} | {pct(s['cpu_vs_none'], base)}"
            f" | {pct(s['cpu_vs_none_median_of_rounds'], base)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--candidate", type=int, required=True)
    parser.add_argument(
        "--payload",
        choices=sorted(_METHODS),
        default="predict",
        help="single-row request: named-feature Predict or OIP ModelInfer",
    )
    parser.add_argument("--load", choices=("h2load", "ghz"), default="h2load")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=0.5, help="h2load warm-up per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="connections")
    parser.add_argument("--streams", type=int, default=8, help="requests in flight per connection")
    parser.add_argument("--sample", type=float, default=1.0, help="shadow sampling (0-1]")
    parser.add_argument("--weight", type=float, default=50.0, help="canary weight (percent)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, measured in this order in every round",
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `pronto serve` argument (repeat)"
    )
    parser.add_argument("--json", type=Path, help="also write the rounds and summary here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the rounds, one more load run per variant under py-spy: "
        "collapsed stacks of the worker into DIR and its busiest frames",
    )
    parser.add_argument("--profile-frames", type=int, default=20)
    parser.add_argument(
        "--in-process",
        metavar="SIZES",
        help="instead of a load run: CPU per sample of the shadow path in process, for "
        "these samples-per-drain (comma-separated, e.g. 1,4,16,64)",
    )
    args = parser.parse_args(argv)
    if args.in_process:
        sizes = [int(k) for k in args.in_process.split(",")]
        costs = shadow_path_cost(args.model_repository, args.model, args.candidate, sizes)
        print("| samples per drain | shadow path CPU µs per sample |\n| ---: | ---: |")
        for k, us in costs.items():
            print(f"| {k} | {us:.1f} |")
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "none" not in variants or set(variants) - set(VARIANTS):
        parser.error(f"--variants: a subset of {','.join(VARIANTS)} that includes none")
    labels = {
        "none": "none",
        "shadow": f"shadow {args.sample:.0%}",
        "canary": f"canary {args.weight:g}%",
    }
    bench = _Bench(args)
    rounds: list[Round] = []
    with bench.serving(), tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for variant in variants:
                bench.set_variant(variant)
                rounds.append(bench.measure(variant, Path(tmp), i))
                r = rounds[-1]
                print(
                    f"round {i + 1} {labels[variant]}: {r.rps:.0f} req/s, "
                    f"{r.cpu_us_per_request:.0f} µs CPU/request",
                    file=sys.stderr,
                )
        profiles = {}
        if args.profile:
            for variant in variants:
                bench.set_variant(variant)
                profiles[variant] = bench.profile(variant, Path(tmp), args.profile)
    summary = summarize(rounds)
    command = "python -m loadtest.rollout_cost " + " ".join(argv or sys.argv[1:])
    print(
        f"{args.load}, {args.payload}, {args.clients}×{args.streams} in flight, "
        f"{args.rounds} rounds × {args.seconds:g} s, one worker"
    )
    print(table(summary, labels))
    for variant, s in summary.items():
        if s["errors"] or s["shadow_dropped"]:
            print(
                f"{labels[variant]}: {s['errors']} errors, "
                f"{s['shadow_dropped']} shadow samples dropped"
            )
    for variant, stacks in profiles.items():
        rows, total = top_frames(stacks, limit=args.profile_frames)
        print(f"\nworker profile, {labels[variant]} ({total} samples, {stacks}):\n")
        print("| frame | own % | inclusive % |\n| --- | ---: | ---: |")
        for frame, own, incl in rows:
            print(f"| `{frame[:90]}` | {own / total:.1%} | {incl / total:.1%} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine_description(),
                    "rounds": [asdict(r) for r in rounds],
                    "summary": summary,
                },
                indent=1,
            )
        )
    errors = sum(s["errors"] for s in summary.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
