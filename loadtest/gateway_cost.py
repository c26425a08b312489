"""What the gateway costs per REST request: Envoy's CPU and the server's per request, with
the configuration as rendered and with the Lua filter (the JSON guard) taken out.

    python -m loadtest.gateway_cost [--model-repository models] [--seconds 4] [--rounds 3]
                                    [--rows 256] [--variant "as rendered"]

Starts ``pronto serve`` (two workers) and, per variant, Envoy on the rendered
configuration (``pronto gateway --render``, no authentication, as ``pronto up`` runs it)
with ``--concurrency 2``. wrk (16 connections) sends the single-row (or, with
``--rows 256``, 256-row) REST bodies of the load data: OIP ``/v2/models/{model}/infer`` in
the proto3 JSON form of ``ModelInferRequest`` and in the protocol's REST form (values in
``data``), and REST Predict. All three are passed through to the worker (the guard only
waits for the body; the transcoder wraps it in a ``google.api.HttpBody``). Rounds alternate
the variant order. Each run reads Envoy's CPU time and the server's (supervisor, template
and workers), so the figures are each side's own microseconds per request; the difference
between the variants is what the guard costs.
Taking the guard out is only for this measurement: without it the transcoder drops
unknown JSON fields of the bodies it does transcode (feedback) without a word.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from loadtest.runner import DATA_DIR, machine_description
from loadtest.stack import local_stack
from loadtest.trace_cost import _tree_cpu
from loadtest.wrk import WrkRun, run_wrk
from pronto_cli.procs import PRONTO, free_port, stop_process, wait_for_http

__all__ = ["GUARD", "VARIANTS", "main", "measure", "table", "without"]

ROOT = Path(__file__).resolve().parents[1]
GUARD = "envoy.filters.http.lua"
#: variant name -> HTTP filters taken out of the rendered configuration
VARIANTS: dict[str, tuple[str, ...]] = {"as rendered": (), "without the guard": (GUARD,)}
#: request form -> (REST path template, body file of the load data)
FORMS: dict[str, tuple[str, str]] = {
    "REST OIP, proto3 JSON form": ("/v2/models/{model}/infer", "rest_oip.jsonl"),
    "REST OIP, REST form (data)": ("/v2/models/{model}/infer", "rest_oip_data.jsonl"),
    "REST Predict": ("/v1/models/{model}:predict", "rest_predict.jsonl"),
}


def without(config: dict[str, Any], filters: tuple[str, ...]) -> dict[str, Any]:
    """``config`` with the named HTTP filters taken out of every HTTP connection manager."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net in chain["filters"]:
                manager = net.get("typed_config", {})
                if "http_filters" in manager:
                    manager["http_filters"] = [
                        f for f in manager["http_filters"] if f["name"] not in filters
                    ]
    return config


@contextlib.contextmanager
def _envoy(config: Path, listen: int, log: Path) -> Iterator[int]:
    """Envoy on ``config`` with two worker threads; yields its pid once it is ready."""
    from gateway.launcher import envoy_binary

    cmd = [envoy_binary(), "--config-path", str(config), "--log-level", "warning"]
    cmd += ["--concurrency", "2"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    try:
        wait_for_http(listen, "/v2/health/ready", proc=proc)
        yield proc.pid
    finally:
        stop_process(proc)


def _bodies(name: str, rows: int) -> Path:
    """The load data's body file of ``name`` (``rest_oip.jsonl``) for ``rows`` per request."""
    return DATA_DIR / (name if rows == 1 else name.replace(".jsonl", f"_b{rows}.jsonl"))


def measure(
    repository: Path,
    model: str,
    seconds: float,
    rounds: int,
    out: Path,
    rows: int = 1,
    variants: list[str] | None = None,
) -> dict[str, dict[str, list[list[float]]]]:
    """Per request form and variant (all of :data:`VARIANTS` unless named), ``[requests/s,
    Envoy CPU µs per request, server CPU µs per request]`` per round."""
    out.mkdir(parents=True, exist_ok=True)
    names = variants or list(VARIANTS)
    found: dict[str, dict[str, list[list[float]]]] = {
        form: {name: [] for name in names} for form in FORMS
    }
    with local_stack(repository, 2, False, out / "logs") as stack:
        (server,) = stack.server_pids
        listen = free_port()
        rendered = out / "envoy.yaml"
        render = [
            *PRONTO, "gateway", "--render", str(rendered), "--listen-port", str(listen),
            "--admin-port", str(free_port()), "--stats-port", str(free_port()),
            "--workers", "2", "--worker-base-port", str(stack.worker_base_port),
            "--upstream-host", "127.0.0.1",
        ]  # fmt: skip
        subprocess.run(render, check=True, capture_output=True)
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                config = without(yaml.safe_load(rendered.read_text()), VARIANTS[name])
                variant = out / f"envoy-{names.index(name)}.yaml"
                variant.write_text(yaml.safe_dump(config))
                with _envoy(variant, listen, out / "envoy.log") as pid:
                    for form, (path, bodies) in FORMS.items():
                        run = WrkRun(
                            url=f"http://127.0.0.1:{listen}",
                            path=path.format(model=model),
                            bodies_file=_bodies(bodies, rows),
                            duration_s=seconds,
                            connections=16,
                            threads=1,
                            content_type="application/json",
                        )
                        before, served = _tree_cpu(pid), _tree_cpu(server)
                        result = run_wrk(run, out, f"{name}-{form}-{round_}".replace(" ", "_"))
                        used, served = _tree_cpu(pid) - before, _tree_cpu(server) - served
                        if result.errors or not result.count:
                            raise RuntimeError(f"{name}, {form}: {result.errors} failed requests")
                        n = result.count
                        found[form][name].append([result.rps, 1e6 * used / n, 1e6 * served / n])
    return found


def table(found: dict[str, dict[str, list[list[float]]]]) -> str:
    """Markdown: per form and variant, requests/s and Envoy CPU per request in each round,
    the median of the latter, and the median of the server's CPU per request."""
    lines = [
        "| request | Envoy configuration | requests/s per round | Envoy CPU µs/request per "
        "round | median µs | server CPU µs/request, median |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for form, variants in found.items():
        for name, runs in variants.items():
            rps = ", ".join(f"{run[0]:.0f}" for run in runs)
            cpu = ", ".join(f"{run[1]:.0f}" for run in runs)
            envoy = statistics.median(run[1] for run in runs)
            server = statistics.median(run[2] for run in runs)
            lines.append(f"| {form} | {name} | {rps} | {cpu} | {envoy:.0f} | {server:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="flight-delay")
    parser.add_argument("--seconds", type=int, default=4, help="per round, form and variant")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument(
        "--rows", type=int, default=1, choices=(1, 256), help="rows per request body"
    )
    parser.add_argument(
        "--variant", action="append", choices=list(VARIANTS), help="only this one (repeatable)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pronto-gateway-cost-") as tmp:
        found = measure(
            args.model_repository,
            args.model,
            args.seconds,
            args.rounds,
            Path(tmp),
            args.rows,
            args.variant,
        )
    print(table(found))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"envoy_cpu": found, "seconds": args.seconds, "machine": machine_description()}
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
