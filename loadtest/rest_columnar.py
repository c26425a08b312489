"""HTTP/1.1 through Envoy with 256-row bodies: REST Predict as ``instances`` (rows) and as
``inputs`` (columns), REST infer in the protocol's REST form (``data``), and OIP ModelInfer
as binary gRPC-Web.

    python -m loadtest.rest_columnar [--rounds 3] [--seconds 3] [--workers 2]

Trains the flight-delay model on a generated data set into a temporary repository, starts
``pronto serve`` with Envoy in front, and sends the 32 distinct 256-row Predict bodies of
``loadtest/data/rest_predict_b256.jsonl`` through wrk, once as they are (``instances``)
and once turned into the columnar form (``inputs``: feature -> 256 values); the 256-row
REST infer bodies of ``loadtest/data/rest_oip_data_b256.jsonl`` (one tensor per input,
values in ``data``, as KServe's and Triton's REST clients send); then the
256-row OIP requests of ``loadtest/data/oip_b256.json`` in tritonclient's raw form,
framed as gRPC-Web (``application/grpc-web+proto``: no JSON on either side), each body
checked once for grpc-status 0 first (wrk sees only HTTP statuses). The four forms run
in alternating rounds, so a busy machine hits them alike. Then, in this process, it times
the server's decode of one body in each form (the REST JSON bytes, and the gRPC Predict
message, in; model inputs out; for REST infer, the core's request out) and the ``pronto``
client's building of the request from a DataFrame in each form, variants alternating,
best of the rounds, in process CPU time.
Writes ``summary.json`` and wrk's reports under ``--out`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtest import grpc_web
from loadtest.h2load import INFER_PATH, grpc_frame, raw_request_from_json
from pronto_contract import version_dir

__all__ = ["bench", "columnar_body", "decode_costs", "grpc_web_bodies", "main", "report"]

ROWS = 256
MODEL = "flight-delay"
DATA = Path(__file__).resolve().parent / "data" / "rest_predict_b256.jsonl"
OIP_DATA = Path(__file__).resolve().parent / "data" / "oip_b256.json"
REST_INFER_DATA = Path(__file__).resolve().parent / "data" / "rest_oip_data_b256.jsonl"
#: the REST forms the target is about (gRPC-Web is reported next to them)
REST_FORMS = ("instances", "inputs", "oip-data")
TARGET_ROWS_PER_S = 250_000  # REST through Envoy, 256-row bodies, best request form


def columnar_body(body: dict[str, Any]) -> dict[str, Any]:
    """The same rows as ``{"inputs": {feature: [values]}}``."""
    rows = body["instances"]
    out = {k: v for k, v in body.items() if k != "instances"}
    out["inputs"] = {k: [r[k] for r in rows] for k in rows[0]}
    return out


def _train(root: Path) -> Path:
    from trainer.flights import write_flights_csv
    from trainer.settings import TrainSettings
    from trainer.train import train

    csv = write_flights_csv(root / "flights.csv", rows=20_000, seed=2017)
    repo = root / "models"
    train(TrainSettings(data=csv, name=MODEL, model_repository=repo), log=lambda _: None)
    return repo


def decode_costs(repo: Path, body: dict[str, Any], rounds: int = 7) -> dict[str, float]:
    """µs of process CPU to turn one 256-row body into the model's inputs, per form: from
    the JSON bytes a REST caller sends (what the server does for REST) and from the
    protobuf message a gRPC Predict caller sends; and for the ``pronto`` client to build
    the request from a DataFrame in each form, as REST JSON and as the gRPC message."""
    import time
    import timeit

    from google.protobuf import json_format

    from server.features import columns_from_inputs, columns_from_instances, columns_of
    from server.generated.pronto.v1 import prediction_pb2 as ppb
    from server.model import load_model
    from server.oip_json import parse_infer_body
    from server.predict_json import parse_predict_body

    handle = load_model(MODEL, 1, version_dir(repo, MODEL, 1))
    json_rows = json.dumps(body).encode()
    json_cols = json.dumps(columnar_body(body)).encode()
    rows = json_format.ParseDict(body, ppb.PredictRequest(name=MODEL))
    cols = json_format.ParseDict(columnar_body(body), ppb.PredictRequest(name=MODEL))
    features, packed = handle.features, handle.packed_features
    import pandas as pd

    from pronto._codec import build_predict_request, predict_body

    frame = pd.DataFrame(body["instances"])
    infer = REST_INFER_DATA.read_text().splitlines()[0].encode()
    cases = {
        "server decode, REST JSON body: instances": lambda: columns_from_instances(
            features,
            parse_predict_body(MODEL, json_rows).rows,  # type: ignore[arg-type]
            packed,
        ),
        "server decode, REST JSON body: inputs": lambda: columns_from_inputs(
            features,
            parse_predict_body(MODEL, json_cols).rows,  # type: ignore[arg-type]
            packed,
        ),
        "server decode, REST infer body: data": lambda: parse_infer_body(
            MODEL, "", infer, None, 1 << 24, 1 << 16
        ),
        "server decode, gRPC Predict message: instances": lambda: columns_from_instances(
            features,
            rows.instances,  # type: ignore[arg-type]
            packed,
        ),
        "server decode, gRPC Predict message: inputs": lambda: columns_from_inputs(
            features, columns_of(cols.inputs), packed
        ),
        # what the client did with a DataFrame before it used the columnar form
        "client, REST JSON body from a DataFrame: instances": lambda: json.dumps(
            predict_body(frame.to_dict("records"))
        ),
        "client, REST JSON body from a DataFrame: inputs": lambda: json.dumps(predict_body(frame)),
        "client, gRPC Predict message from a DataFrame: instances": lambda: build_predict_request(
            MODEL, frame.to_dict("records")
        ),
        "client, gRPC Predict message from a DataFrame: inputs": lambda: build_predict_request(
            MODEL, frame
        ),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():
            t = timeit.timeit(fn, number=50, timer=time.process_time) / 50
            best[name] = min(best[name], t)
    return {name: round(t * 1e6, 1) for name, t in best.items()}


def run(rounds: int, seconds: float, workers: int, out_dir: Path) -> dict[str, Any]:
    from loadtest.stack import local_stack
    from loadtest.wrk import WrkRun, run_wrk

    out_dir.mkdir(parents=True, exist_ok=True)
    bodies = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    files = {"instances": out_dir / "instances.jsonl", "inputs": out_dir / "inputs.jsonl"}
    files["instances"].write_text("".join(json.dumps(b) + "\n" for b in bodies))
    files["inputs"].write_text("".join(json.dumps(columnar_body(b)) + "\n" for b in bodies))
    files["oip-data"] = REST_INFER_DATA
    web = grpc_web_bodies()
    files["grpc-web"] = out_dir / "grpc-web.hex"
    files["grpc-web"].write_text("".join(grpc_frame(b).hex() + "\n" for b in web))
    forms = {
        "instances": (f"/v1/models/{MODEL}:predict", "application/json"),
        "inputs": (f"/v1/models/{MODEL}:predict", "application/json"),
        "oip-data": (f"/v2/models/{MODEL}/infer", "application/json"),
        "grpc-web": (INFER_PATH, grpc_web.CONTENT_TYPE),
    }
    rps: dict[str, list[float]] = {name: [] for name in files}
    errors = 0
    with tempfile.TemporaryDirectory(prefix="pronto-columnar-") as tmp:
        repo = _train(Path(tmp))
        with local_stack(repo, workers, True, out_dir / "logs") as stack:
            assert stack.envoy is not None  # started with the gateway
            host, _, port = stack.envoy.rpartition(":")
            for body in web:  # wrk counts HTTP statuses; a gRPC error is HTTP 200
                reply = grpc_web.call(host, int(port), INFER_PATH, body)
                if reply.grpc_status != 0:
                    raise RuntimeError(f"gRPC-Web body refused: {reply.grpc_message}")
            for i in range(rounds):
                for name, bodies_file in files.items():
                    path, content_type = forms[name]
                    wrk = WrkRun(
                        url=f"http://{stack.envoy}",
                        path=path,
                        bodies_file=bodies_file,
                        duration_s=seconds,
                        connections=8,
                        threads=1,
                        content_type=content_type,
                        hex_bodies=name == "grpc-web",
                    )
                    result = run_wrk(wrk, out_dir, f"{name}-{i}")
                    rps[name].append(result.rps)
                    errors += result.errors
        costs = decode_costs(repo, bodies[0])
    ratios = [c / r for c, r in zip(rps["inputs"], rps["instances"], strict=True) if r]
    web_ratios = [w / c for w, c in zip(rps["grpc-web"], rps["inputs"], strict=True) if c]
    summary = {
        "rounds": rounds,
        "seconds": seconds,
        "workers": workers,
        "errors": errors,
        "rows_per_s": {k: [round(v * ROWS) for v in vs] for k, vs in rps.items()},
        "inputs_vs_instances_median": round(statistics.median(ratios), 3) if ratios else 0.0,
        "grpc_web_vs_inputs_median": (
            round(statistics.median(web_ratios), 3) if web_ratios else 0.0
        ),
        "decode_us": costs,
    }
    return summary


def grpc_web_bodies() -> list[bytes]:
    """The 256-row OIP requests in tritonclient's raw form, serialized."""
    requests = json.loads(OIP_DATA.read_text())
    return [raw_request_from_json(r).SerializeToString() for r in requests]


def report(summary: dict[str, Any], command: str, out_dir: Path) -> bool:
    """``summary.json`` in the form of ``pronto bench`` (tables for docs/benchmarks.md);
    whether the best REST form (by its median) reached the REST rows/s target, without
    errors (gRPC-Web is reported next to it: binary bodies over HTTP/1.1, but not REST)."""
    from loadtest.report import write_study

    medians = {
        form: statistics.median(summary["rows_per_s"][form])
        for form in REST_FORMS
        if summary["rows_per_s"].get(form)
    }
    form, best = max(medians.items(), key=lambda item: item[1])
    passed = not summary["errors"] and best >= TARGET_ROWS_PER_S
    web = statistics.median(summary["rows_per_s"]["grpc-web"])
    description = (
        "HTTP/1.1 through Envoy with 256-row bodies: REST Predict as rows (`instances`) and "
        "as columns (`inputs`) and REST infer in the protocol's REST form (`oip-data`: one "
        "tensor per input, values in `data`), passed through by Envoy and parsed by the "
        "worker, and OIP ModelInfer as binary gRPC-Web (no JSON on either side); wrk with 8 "
        "connections, alternating rounds; then the server's decode of one body in each form, "
        "in process, from the REST JSON and from the gRPC Predict message. Target for REST: "
        f"{TARGET_ROWS_PER_S:,} rows/s "
        f"(median of the best REST form, {form}: {best:,.0f}, "
        f"{'met' if passed else 'missed'}); gRPC-Web median: {web:,.0f} rows/s."
    )
    tables = [_table(summary)]
    write_study("rest_columnar", description, passed, tables, summary, command, out_dir)
    return passed


def bench(results_dir: Path, workers: int = 2) -> bool:
    """The ``rest_columnar`` scenario of ``pronto bench``."""
    summary = run(3, 3.0, workers, results_dir / "rest_columnar")
    print(_table(summary))
    return report(summary, "pronto bench rest_columnar", results_dir / "rest_columnar")


def _table(summary: dict[str, Any]) -> str:
    rows_s = summary["rows_per_s"]
    web = rows_s["grpc-web"]
    data = rows_s.get("oip-data") or [0] * len(web)
    lines = [
        "| round | instances rows/s | inputs rows/s | REST infer `data` rows/s | gRPC-Web rows/s "
        "| inputs / instances | gRPC-Web / inputs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rounds = zip(rows_s["instances"], rows_s["inputs"], data, web, strict=True)
    for i, (a, b, d, w) in enumerate(rounds):
        lines.append(
            f"| {i + 1} | {a:,} | {b:,} | {d:,} | {w:,} | {b / a if a else 0:.2f} "
            f"| {w / b if b else 0:.2f} |"
        )
    lines.append(
        f"| median | {statistics.median(rows_s['instances']):,.0f} "
        f"| {statistics.median(rows_s['inputs']):,.0f} | {statistics.median(data):,.0f} "
        f"| {statistics.median(web):,.0f} | {summary['inputs_vs_instances_median']:.2f} "
        f"| {summary['grpc_web_vs_inputs_median']:.2f} |"
    )
    lines += ["", "| one 256-row body, in process | µs |", "| --- | ---: |"]
    lines += [f"| {name} | {us} |" for name, us in summary["decode_us"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.rest_columnar",
        description=__doc__.split("\n\n")[2] if __doc__ else "",
    )
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds.")
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk seconds per run.")
    parser.add_argument("--workers", type=int, default=2, help="Server processes.")
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest/results/rest_columnar"), help="Results folder."
    )
    args = parser.parse_args(argv)
    summary = run(args.rounds, args.seconds, args.workers, args.out)
    print(_table(summary))
    command = " ".join(["python -m loadtest.rest_columnar", *(argv or sys.argv[1:])])
    report(summary, command, args.out)
    if summary["errors"]:
        print(f"{summary['errors']} wrk errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
