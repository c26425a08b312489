"""Traffic for the observability tests: generated flights over gRPC (direct and through
Envoy), a few requests of every failing kind, and REST calls through Envoy."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from typing import Any

import grpc
import pandas as pd

from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from tests.server.oip_requests import infer_request, predict_request
from trainer.features import flight_features
from trainer.flights import generate_flights

__all__ = [
    "bad_requests",
    "flight_rows",
    "rest_json",
    "rest_predict",
    "rest_requests",
    "send_rows",
]

CATEGORICAL = ["OPERA", "TIPOVUELO", "SIGLADES", "DIANOM", "period_of_day"]
NUMERIC = ["MES", "hour", "high_season"]
FEATURES = [*CATEGORICAL, *NUMERIC]


def flight_rows(n: int, seed: int, drift: bool) -> pd.DataFrame:
    """Feature rows the way clients send them (numbers as floats)."""
    frame = flight_features(generate_flights(n, seed=seed, drift=drift))[FEATURES]
    for col in NUMERIC:
        frame[col] = frame[col].astype(float)
    return frame


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    return {c: frame[c].tolist() for c in frame.columns}


def send_rows(address: str, frame: pd.DataFrame, model: str, batch: int = 50) -> None:
    """Every row once: Predict in batches, every fifth batch as ModelInfer instead."""
    with grpc.insecure_channel(address) as channel:
        predict = ppb_grpc.PredictionServiceStub(channel)
        infer = pb_grpc.GRPCInferenceServiceStub(channel)
        for n, start in enumerate(range(0, len(frame), batch)):
            cols = _columns(frame.iloc[start : start + batch])
            if n % 5 == 4:
                infer.ModelInfer(infer_request(cols, model=model), timeout=10)
            else:
                predict.Predict(predict_request(cols, model=model), timeout=10)


def bad_requests(address: str, model: str, sample: pd.DataFrame) -> None:
    """INVALID_ARGUMENT (missing feature, wrong type) and NOT_FOUND (unknown model)."""
    cols = _columns(sample.iloc[:2])
    missing = {k: v for k, v in cols.items() if k != "MES"}
    wrong = {**cols, "MES": ["x", "y"]}
    with grpc.insecure_channel(address) as channel:
        predict = ppb_grpc.PredictionServiceStub(channel)
        for req in (
            predict_request(missing, model=model),
            predict_request(wrong, model=model),
            predict_request(cols, model="no-such-model"),
        ):
            with contextlib.suppress(grpc.RpcError):
                predict.Predict(req, timeout=10)


def rest_requests(port: int, model: str, sample: pd.DataFrame) -> list[int]:
    """One good and one malformed REST predict through Envoy; returns the HTTP statuses."""
    instances = sample.iloc[:2].to_dict("records")
    statuses = []
    for body in (json.dumps({"instances": instances}), "{not json"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST", f"/v1/models/{model}:predict", body, {"content-type": "application/json"}
        )
        statuses.append(conn.getresponse().status)
        conn.close()
    return statuses


def rest_json(port: int, path: str, body: Any) -> tuple[int, Any]:
    """POST a JSON body through Envoy; returns the status and the decoded reply."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        conn.close()


def rest_feedback(port: int, model: str, feedback: list[Any], timeout: float = 30.0) -> Any:
    """POST labels through Envoy and return the reply, which must be a 200. The server
    waits a moment for a prediction served just before to reach its index (written on
    the capture timer); past that it answers 404, and feedback is all or nothing, so a
    404 is sent again until ``timeout``: a host stalled for longer is not what is tested.
    """
    deadline = time.monotonic() + timeout
    while True:
        status, body = rest_json(port, f"/v1/models/{model}:feedback", {"feedback": feedback})
        if status != 404 or time.monotonic() > deadline:
            assert status == 200, body
            return body


def rest_predict(
    port: int, model: str, frame: pd.DataFrame, positive: str = "1"
) -> tuple[str, list[str], list[float]]:
    """One REST predict of every row; returns its prediction id, labels and positive scores."""
    status, body = rest_json(
        port, f"/v1/models/{model}:predict", {"instances": frame.to_dict("records")}
    )
    assert status == 200, body
    predictions = body["predictions"]
    return (
        body["id"],
        [p["label"] for p in predictions],
        [p["probabilities"][positive] for p in predictions],
    )
