"""h2load as a gRPC load generator: identical request bytes for every server.

h2load (nghttp2) is a C HTTP/2 client that costs a fraction of ghz's CPU, so on a
small machine it leaves the cores to the servers being compared. It knows nothing
of gRPC: it POSTs one pre-framed body over and over with the gRPC headers, and
counts HTTP statuses. A gRPC error arrives as HTTP 200 with a non-zero
``grpc-status`` trailer, which h2load cannot see, so :func:`check_request` sends
the very same bytes once through a real gRPC client first and refuses a body the
server rejects.

Request bodies are built the way tritonclient builds them: one tensor per model
input, data in ``raw_input_contents`` (numbers little-endian, BYTES as 4-byte
little-endian length prefixes followed by the bytes), outputs asked by name.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.ghz import LoadResult, find_tool

__all__ = [
    "H2loadRun",
    "check_request",
    "grpc_frame",
    "parse_h2load",
    "raw_request_from_json",
    "run_h2load",
    "write_request",
]

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"

_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
_LEN = struct.Struct("<I")


def _serialize_bytes(values: Any) -> bytes:
    # tritonclient.utils.serialize_byte_tensor: <u4 length, then the bytes, C order
    return b"".join(_LEN.pack(len(v)) + v for v in values)


def raw_request_from_json(request: dict[str, Any]) -> Any:
    """A ModelInferRequest with ``raw_input_contents`` from a typed (ghz JSON) one."""
    from google.protobuf import json_format

    from server.generated.inference import grpc_service_pb2 as pb

    typed = json_format.ParseDict(request, pb.ModelInferRequest())
    out = pb.ModelInferRequest(
        model_name=typed.model_name, model_version=typed.model_version, id=typed.id
    )
    for inp in typed.inputs:
        out.inputs.add(name=inp.name, datatype=inp.datatype, shape=list(inp.shape))
        contents = inp.contents
        if inp.datatype == "BYTES":
            out.raw_input_contents.append(_serialize_bytes(contents.bytes_contents))
            continue
        values: Any = next((getattr(contents, f) for f in _FIELDS if len(getattr(contents, f))), [])
        array: np.ndarray = np.asarray(list(values), dtype=_NUMPY[inp.datatype])
        out.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    for o in typed.outputs:
        out.outputs.add(name=o.name)
    return out


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def write_request(request: Any, path: Path) -> Path:
    """The framed body h2load sends; the same file goes to every server compared."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(grpc_frame(request.SerializeToString()))
    return path


def check_request(address: str, body: Path, timeout: float = 10.0) -> Any:
    """Send the framed body once through grpcio; returns the decoded response.

    Raises ``grpc.RpcError`` when the server rejects it, so a load run never counts
    errors as successes.
    """
    import grpc

    from server.generated.inference import grpc_service_pb2 as pb

    message = body.read_bytes()[5:]
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(INFER_PATH)  # bytes in, bytes out: no re-serialisation
        reply = call(message, timeout=timeout)
    return pb.ModelInferResponse.FromString(reply)


@dataclass
class H2loadRun:
    """One h2load invocation: ``clients`` connections, ``streams`` in flight on each."""

    address: str
    body: Path
    duration_s: float = 10.0
    warmup_s: float = 1.0
    clients: int = 4
    streams: int = 16
    threads: int = 1
    path: str = INFER_PATH
    headers: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        cmd = [
            find_tool("h2load"),
            # h2load takes whole numbers with a unit
            f"--duration={round(self.duration_s * 1000)}ms",
            f"--warm-up-time={round(self.warmup_s * 1000)}ms",
            f"--clients={self.clients}",
            f"--max-concurrent-streams={self.streams}",
            f"--threads={self.threads}",
            f"--data={self.body}",
            "--header=content-type: application/grpc",
            "--header=te: trailers",
        ]
        cmd += [f"--header={k}: {v}" for k, v in self.headers.items()]
        cmd.append(f"http://{self.address}{self.path}")
        return cmd


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_REQ_TIME = re.compile(
    r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)"
)
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_h2load(text: str) -> LoadResult:
    """Reduce h2load's report to a :class:`LoadResult` (latency: min/mean/max only)."""
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    if not finished or not requests:
        raise ValueError(f"unrecognised h2load output:\n{text[-2000:]}")
    done, ok = int(requests.group(3)), int(requests.group(4))
    # "finished in" counts the warm-up too; req/s is over the measured window only
    req_s = float(finished.group(3))
    duration = done / req_s if req_s else 0.0
    failed, errored, timeout = (int(requests.group(i)) for i in (5, 6, 7))
    kinds: dict[str, int] = {}
    status = _STATUS.search(text)
    if status:
        for label, value in zip(("3xx", "4xx", "5xx"), status.groups()[1:], strict=True):
            if int(value):
                kinds[f"http {label}"] = int(value)
    if errored:
        kinds["errored"] = errored
    if timeout:
        kinds["timeout"] = timeout
    latency: dict[str, float] = {}
    req_time = _REQ_TIME.search(text)
    if req_time:
        g = req_time.groups()
        for key, (v, u) in zip(
            ("min", "max", "mean"), ((g[0], g[1]), (g[2], g[3]), (g[4], g[5])), strict=True
        ):
            latency[key] = float(v) * _UNIT_MS[u]
    return LoadResult(
        tool="h2load",
        count=done,
        ok=ok,
        errors=failed + errored + timeout,
        duration_s=duration,
        rps=req_s * ok / done if done else 0.0,
        latency_ms=latency,
        error_kinds=kinds,
    )


def run_h2load(run: H2loadRun, out_dir: Path | None = None, name: str = "h2load") -> LoadResult:
    """Run h2load to completion; keeps its report next to the summaries when asked."""
    proc = subprocess.run(
        run.command(),
        capture_output=True,
        text=True,
        timeout=run.duration_s + run.warmup_s + 60,
        check=False,
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.h2load.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load exited with {proc.returncode}: {proc.stderr[-1000:]}")
    return parse_h2load(proc.stdout)
