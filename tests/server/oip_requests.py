"""Request builders shared by the server tests (our own stubs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from server.generated.inference import grpc_service_pb2 as pb
from server.generated.pronto.v1 import prediction_pb2 as ppb

__all__ = ["infer_request", "predict_request", "rows"]

ROWS: dict[str, list[Any]] = {
    "OPERA": ["Sky Airline", "Avianca", "Copa Air"],
    "TIPOVUELO": ["N", "I", "N"],
    "MES": [1.0, 12.0, 6.0],
    "DIA": [1.0, 31.0, 15.0],
}


def rows(n: int = 3) -> dict[str, list[Any]]:
    return {k: (v * n)[:n] for k, v in ROWS.items()}


def infer_request(
    columns: dict[str, list[Any]] | None = None,
    *,
    raw: bool = False,
    model: str = "flights",
    version: str = "",
) -> pb.ModelInferRequest:
    columns = columns if columns is not None else rows()
    req = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, values in columns.items():
        is_str = isinstance(values[0], str)
        t = req.inputs.add(
            name=name, datatype="BYTES" if is_str else "FP32", shape=[len(values), 1]
        )
        if raw:
            if is_str:
                req.raw_input_contents.append(
                    b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in values)
                )
            else:
                req.raw_input_contents.append(np.array(values, dtype=np.float32).tobytes())
        elif is_str:
            t.contents.bytes_contents.extend(s.encode() for s in values)
        else:
            t.contents.fp32_contents.extend(values)
    return req


def predict_request(
    columns: dict[str, list[Any]] | None = None, model: str = "flights", version: str = ""
) -> ppb.PredictRequest:
    columns = columns if columns is not None else rows()
    req = ppb.PredictRequest(name=model, version=version)
    n = len(next(iter(columns.values())))
    for i in range(n):
        req.instances.add().update({k: v[i] for k, v in columns.items()})
    return req
