"""h2load as the gRPC load generator: request bytes, framing, report parsing,
and one short run against the bare grpc.aio floor server."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.compare.run import floor_summary
from loadtest.ghz import LoadResult
from loadtest.h2load import (
    H2loadRun,
    check_request,
    grpc_frame,
    parse_h2load,
    raw_request_from_json,
    run_h2load,
    write_request,
)
from pronto_cli.procs import free_port, stop_process, wait_for_grpc_health
from server.generated.inference import grpc_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]

REPORT = """\
finished in 4.00s, 4785.33 req/s, 500.75KB/s
requests: 14356 total, 14356 started, 14356 done, 14350 succeeded, 6 failed, 0 errored, 0 timeout
status codes: 14350 2xx, 0 3xx, 0 4xx, 6 5xx
traffic: 1.47MB (1538298) total, 53.19KB (54468) headers, 934.54KB (956968) data
                     min         max         mean         sd        +/- sd
time for request:      356us    111.34ms     13.33ms     11.35ms    79.37%
"""


WORDS = ["", "élé", "a"]


def _b64(word: str) -> str:
    return base64.b64encode(word.encode()).decode()


def test_raw_request_matches_tritonclient_layout() -> None:
    typed = {
        "model_name": "m",
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [3, 1],
                "contents": {"bytes_contents": [_b64(w) for w in WORDS]},
            },
            {
                "name": "f",
                "datatype": "FP32",
                "shape": [3, 1],
                "contents": {"fp32_contents": [1.5, -2, 0]},
            },
            {
                "name": "i",
                "datatype": "INT64",
                "shape": [3, 1],
                "contents": {"int64_contents": ["1", "-7", "9"]},
            },
            {
                "name": "b",
                "datatype": "BOOL",
                "shape": [3, 1],
                "contents": {"bool_contents": [True, False, True]},
            },
        ],
        "outputs": [{"name": "probabilities"}],
    }
    req = raw_request_from_json(typed)
    assert [i.name for i in req.inputs] == ["s", "f", "i", "b"]
    assert all(not i.HasField("contents") for i in req.inputs)
    assert [list(i.shape) for i in req.inputs] == [[3, 1]] * 4
    assert req.raw_input_contents[0] == b"".join(
        struct.pack("<I", len(w.encode())) + w.encode() for w in WORDS
    )
    assert np.frombuffer(req.raw_input_contents[1], "<f4").tolist() == [1.5, -2.0, 0.0]
    assert np.frombuffer(req.raw_input_contents[2], "<i8").tolist() == [1, -7, 9]
    assert np.frombuffer(req.raw_input_contents[3], np.bool_).tolist() == [True, False, True]
    assert [o.name for o in req.outputs] == ["probabilities"]


def test_frame_is_grpc_length_prefixed(tmp_path: Path) -> None:
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    req = pb.ModelInferRequest(model_name="m")
    body = write_request(req, tmp_path / "body.grpc").read_bytes()
    assert body[0] == 0
    assert struct.unpack(">I", body[1:5])[0] == len(body) - 5
    assert pb.ModelInferRequest.FromString(body[5:]) == req


def test_parse_report_counts_failures_and_uses_measured_rate() -> None:
    r = parse_h2load(REPORT)
    assert (r.tool, r.count, r.ok, r.errors) == ("h2load", 14356, 14350, 6)
    assert r.error_kinds == {"http 5xx": 6}
    assert r.rps == pytest.approx(4785.33 * 14350 / 14356)
    assert r.latency_ms == {"min": 0.356, "max": 111.34, "mean": 13.33}
    with pytest.raises(ValueError):
        parse_h2load("connect failed\n")


def test_floor_summary_takes_per_round_ratios() -> None:
    def res(rps: float) -> LoadResult:
        return LoadResult("h2load", 10, 10, 0, 1.0, rps, {})

    s = floor_summary(
        {
            "pronto": [res(500), res(900), res(600)],
            "bare-grpc-aio": [res(1000), res(1000), res(1000)],
            "pronto-b256": [res(10), res(20), res(30)],
        }
    )
    assert s["ratio_per_round"] == [0.5, 0.9, 0.6]
    assert s["ratio_median"] == 0.6
    assert s["b256_rows_per_s"] == [2560, 5120, 7680]


@pytest.mark.integration
def test_short_run_against_the_floor_server(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.compare.bare_server",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=ROOT,
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_for_grpc_health(address, timeout=60, proc=proc)
        first = json.loads((ROOT / "loadtest" / "data" / "oip.json").read_text())[0]
        body = write_request(raw_request_from_json(first), tmp_path / "single.grpc")
        assert check_request(address, body).model_name == "bare"
        run = H2loadRun(
            address=address, body=body, duration_s=1, warmup_s=0.2, clients=1, streams=4
        )
        result = run_h2load(run, tmp_path, "floor")
        assert result.ok > 0 and result.errors == 0
        assert (tmp_path / "floor.h2load.txt").exists()
    finally:
        stop_process(proc)


def test_decode_cost_table_covers_every_case() -> None:
    from loadtest.decode_cost import measure

    table = measure(ROOT / "loadtest" / "data", rounds=1)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 12
    assert any("request path" in r for r in rows) and any("plain parser" in r for r in rows)
    assert any("one by one" in r for r in rows)
    assert all(float(r.rsplit("|", 2)[1]) > 0 for r in rows)


def test_wide_bodies_follow_the_metadata_column_order() -> None:
    """The wide-model benchmark builds what a tritonclient user builds from ModelMetadata:
    the packed matrix in the order of the input's ``columns`` parameter."""
    import json

    import numpy as np

    from loadtest.wide import _request_from_metadata
    from server.generated.inference import grpc_service_pb2 as pb

    row = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    packed = pb.ModelMetadataResponse(name="p")
    packed.inputs.add(name="numeric_features", datatype="FP32", shape=[-1, 3])
    packed.inputs[0].parameters["columns"].string_param = json.dumps(["c", "a", "d"])
    req = _request_from_metadata(packed, row)
    assert [list(i.shape) for i in req.inputs] == [[1, 3]]
    assert np.frombuffer(req.raw_input_contents[0], "<f4").tolist() == [3.0, 1.0, 4.0]

    columns = pb.ModelMetadataResponse(name="c")
    for name in ("b", "a"):
        columns.inputs.add(name=name, datatype="FP32", shape=[-1, 1])
    req = _request_from_metadata(columns, row)
    assert [i.name for i in req.inputs] == ["b", "a"] and len(req.raw_input_contents) == 2
    assert np.frombuffer(req.raw_input_contents[1], "<f4").tolist() == [1.0]
    assert [o.name for o in req.outputs] == ["probabilities"]
