"""Request payloads for the load scenarios, built from real feature rows.

Every request carries different rows (no single repeated payload), in the
JSON forms the tools send: protobuf JSON for ghz (OIP ModelInfer and
pronto.v1 Predict) and REST bodies, one per line, for wrk: REST infer both in
the proto3 JSON form of ``ModelInferRequest`` (``rest_oip``) and in the
protocol's REST form, values in ``data`` (``rest_oip_data``, as KServe's and
Triton's REST clients send).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pronto_contract import Manifest
from pronto_contract.manifest import InputSpec

__all__ = ["PayloadSet", "build_payloads", "rest_form", "write_payloads"]

PayloadSet = dict[str, list[dict[str, Any]]]


def _chunks(
    rows: Sequence[dict[str, Any]], size: int, count: int
) -> Iterable[list[dict[str, Any]]]:
    n = len(rows)
    for i in range(count):
        start = (i * size) % n
        chunk = [rows[(start + j) % n] for j in range(size)]
        yield chunk


def _b64(value: Any) -> str:
    return base64.b64encode(str(value).encode()).decode()


def _oip_request(model: str, inputs: list[InputSpec], rows: list[dict[str, Any]]) -> dict[str, Any]:
    tensors = []
    contents: dict[str, list[Any]]
    for spec in inputs:
        name, dtype = spec.name, spec.datatype
        if spec.columns is not None:  # a packed input: the features' values row by row
            values = [row[c] for row in rows for c in spec.columns]
            key = "fp32_contents" if dtype == "FP32" else "fp64_contents"
            shape = [len(rows), len(spec.columns)]
            contents = {key: [float(v) for v in values]}
            tensors.append({"name": name, "datatype": dtype, "shape": shape, "contents": contents})
            continue
        values = [row[name] for row in rows]  # rows are already keyed by feature name
        if dtype == "BYTES":
            contents = {
                "bytes_contents": [base64.b64encode(str(v).encode()).decode() for v in values]
            }
        elif dtype in ("FP32", "FP64"):
            key = "fp32_contents" if dtype == "FP32" else "fp64_contents"
            contents = {key: [float(v) for v in values]}
        elif dtype == "INT64":
            contents = {"int64_contents": [str(int(v)) for v in values]}
        elif dtype == "INT32":
            contents = {"int_contents": [int(v) for v in values]}
        elif dtype == "BOOL":
            contents = {"bool_contents": [bool(v) for v in values]}
        else:
            raise ValueError(f"unsupported datatype {dtype} for input {name}")
        tensors.append(
            {"name": name, "datatype": dtype, "shape": [len(rows), 1], "contents": contents}
        )
    return {"model_name": model, "inputs": tensors, "outputs": [{"name": "probabilities"}]}


def rest_form(request: dict[str, Any]) -> dict[str, Any]:
    """The protocol's REST form of a proto3-JSON ``ModelInferRequest`` (built by
    :func:`_oip_request`): each tensor's values in ``data``, strings as text."""
    tensors = []
    for tensor in request["inputs"]:
        ((key, values),) = tensor["contents"].items()
        if key == "bytes_contents":
            values = [base64.b64decode(v).decode() for v in values]
        elif key == "int64_contents":
            values = [int(v) for v in values]
        tensors.append({k: v for k, v in tensor.items() if k != "contents"} | {"data": values})
    return {"inputs": tensors, "outputs": request["outputs"]}


def _features(manifest: Manifest) -> list[InputSpec]:
    """The named features: each input, or the columns of a packed input."""
    signature = manifest.signature
    out: list[InputSpec] = []
    for spec in signature.inputs:
        if spec.columns is None:
            out.append(spec)
        else:
            out += [signature.feature(c) or InputSpec(name=c) for c in spec.columns]
    return out


def _clean(row: dict[str, Any], inputs: list[InputSpec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in inputs:
        v = row[spec.column or spec.name]
        if spec.datatype == "BYTES":
            out[spec.name] = str(v)
        else:
            f = float(v)
            out[spec.name] = int(f) if f.is_integer() and not math.isinf(f) else f
    return out


def build_payloads(
    manifest: Manifest, rows: Sequence[dict[str, Any]], batch: int, count: int
) -> PayloadSet:
    """``count`` requests of ``batch`` rows each, per protocol."""
    model = manifest.name
    inputs = manifest.signature.inputs
    clean = [_clean(r, _features(manifest)) for r in rows]
    oip, predict, rest_predict, rest_oip, rest_oip_data = [], [], [], [], []
    for chunk in _chunks(clean, batch, count):
        req = _oip_request(model, inputs, chunk)
        oip.append(req)
        rest_oip.append({k: v for k, v in req.items() if k != "model_name"})
        rest_oip_data.append(rest_form(req))
        predict.append({"name": model, "instances": chunk})
        rest_predict.append({"instances": chunk})
    return {
        "oip": oip,
        "predict": predict,
        "rest_oip": rest_oip,
        "rest_oip_data": rest_oip_data,
        "rest_predict": rest_predict,
    }


def write_payloads(payloads: PayloadSet, out_dir: Path, suffix: str) -> dict[str, Path]:
    """ghz reads a JSON array (one element per request, round-robin); wrk's
    script reads one body per line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind, items in payloads.items():
        if kind.startswith("rest_"):
            path = out_dir / f"{kind}{suffix}.jsonl"
            path.write_text("".join(json.dumps(i, separators=(",", ":")) + "\n" for i in items))
        else:
            path = out_dir / f"{kind}{suffix}.json"
            path.write_text(json.dumps(items, separators=(",", ":")))
        paths[kind] = path
    return paths
