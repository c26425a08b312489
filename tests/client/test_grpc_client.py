"""The gRPC clients against a real `pronto serve`: typed and raw OIP, Predict, DataFrames,
ids, errors, deadlines, and the asyncio client under concurrency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

import pronto
from tests.gateway.harness import Server
from tests.gateway.modelgen import CARRIERS, MODEL

pytestmark = pytest.mark.integration

ROWS = 12


def frame(rows: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "carrier": [CARRIERS[i % 3] for i in range(rows)],
            "hour": [float(i * 2 % 24) for i in range(rows)],
        }
    )


def reference(repository: Path, data: pd.DataFrame) -> dict[str, np.ndarray]:
    """What ONNX Runtime itself answers for these rows: the oracle for every transport."""
    session = ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"))
    feeds = {
        "carrier": data["carrier"].to_numpy(dtype=object).reshape(-1, 1),
        "hour": data["hour"].to_numpy(dtype=np.float32).reshape(-1, 1),
    }
    label, probabilities = session.run(["label", "probabilities"], feeds)
    return {"label": label, "probabilities": probabilities}


def arrays(data: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "carrier": data["carrier"].to_numpy().astype(str).reshape(-1, 1),
        "hour": data["hour"].to_numpy(dtype=np.float32).reshape(-1, 1),
    }


@pytest.fixture(scope="module")
def client(server: Server) -> pronto.Client:
    with pronto.Client(f"127.0.0.1:{server.port}", connections=2) as c:
        yield c  # type: ignore[misc]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_infer_matches_onnx_runtime(client: pronto.Client, repository: Path, raw: bool) -> None:
    data = frame()
    want = reference(repository, data)
    result = client.infer(MODEL, arrays(data), raw=raw)
    assert result.model_name == MODEL and result.model_version == "1"
    np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)
    assert result.as_numpy("probabilities").shape == (ROWS, 2)
    assert result.datatypes == {"label": "INT64", "probabilities": "FP32"}


def test_dataframe_round_trip(client: pronto.Client, repository: Path) -> None:
    data = frame()
    # Columns in another order and an int column: metadata decides names and datatypes.
    data_in = data[["hour", "carrier"]].assign(hour=data["hour"].astype(int))
    out = client.infer(MODEL, data_in, outputs=["label", "probabilities"]).to_dataframe()
    want = reference(repository, data)
    assert list(out.columns) == ["label", "probabilities_0", "probabilities_1"]
    np.testing.assert_array_equal(out["label"].to_numpy(), want["label"])
    np.testing.assert_allclose(
        out["probabilities_1"].to_numpy(), want["probabilities"][:, 1], rtol=1e-6
    )

    predicted = client.predict(MODEL, data).to_dataframe()
    assert len(predicted) == ROWS
    assert predicted["label"].tolist() == [str(x) for x in want["label"]]
    np.testing.assert_allclose(predicted["probability_1"], want["probabilities"][:, 1], rtol=1e-5)


def test_requested_outputs_only(client: pronto.Client) -> None:
    result = client.infer(MODEL, arrays(frame(3)), outputs=["probabilities"])
    assert list(result.outputs) == ["probabilities"]


def test_predict_instances_and_ids(client: pronto.Client, repository: Path) -> None:
    data = frame(4)
    result = client.predict(MODEL, data.to_dict("records"))
    want = reference(repository, data)
    assert result.labels == [str(x) for x in want["label"]]
    assert all(set(p.probabilities) == {"0", "1"} for p in result.predictions)
    assert client.predict(MODEL, data.iloc[0].to_dict()).labels == result.labels[:1]
    assert isinstance(result.id, str)  # filled in when the server returns prediction ids
    echoed = client.infer(MODEL, arrays(data), request_id="req-42")
    assert echoed.id == "req-42"


def test_metadata_and_health(client: pronto.Client) -> None:
    assert client.server_live() and client.server_ready()
    assert client.model_ready(MODEL) and not client.model_ready(MODEL, "9")
    md = client.model_metadata(MODEL)
    assert md.versions == ("1",)
    assert [(t.name, t.datatype) for t in md.inputs] == [("carrier", "BYTES"), ("hour", "FP32")]
    assert [m.name for m in client.list_models()] == [MODEL]


def test_errors_carry_the_status_and_are_not_retried(server: Server) -> None:
    events: list[pronto.RetryEvent] = []
    policy = pronto.RetryPolicy(on_retry=events.append)
    with pronto.Client(f"127.0.0.1:{server.port}", retry=policy) as c:
        with pytest.raises(pronto.InferenceError) as missing:
            c.predict("no-such-model", {"carrier": "Copa Air", "hour": 3.0})
        assert missing.value.code == "NOT_FOUND"
        with pytest.raises(pronto.InferenceError) as bad:
            c.predict(MODEL, {"carrier": "Copa Air", "hour": "late"})
        assert bad.value.code == "INVALID_ARGUMENT" and "hour" in bad.value.message
    assert events == []


def test_deadline(server: Server) -> None:
    """A call whose work outlasts its deadline ends with DEADLINE_EXCEEDED at the deadline."""
    big = arrays(frame(100_000))  # about 2 MB of raw contents: far more than 20 ms of work
    with pronto.Client(f"127.0.0.1:{server.port}", timeout=0.02) as client:
        started = time.monotonic()
        with pytest.raises(pronto.InferenceError) as caught:
            client.infer(MODEL, big)
        assert caught.value.code == "DEADLINE_EXCEEDED"
        assert time.monotonic() - started < 1.0
        # the deadline was the call's, not the client's end: a later call with time succeeds
        assert client.infer(MODEL, arrays(frame(2)), timeout=10).as_numpy("label").shape == (2,)


def test_async_client_under_concurrency(server: Server, repository: Path) -> None:
    data = frame(24)
    want = reference(repository, data)

    async def main() -> list[pronto.PredictResult | pronto.InferResult]:
        async with pronto.AsyncClient(f"127.0.0.1:{server.port}", connections=2) as c:
            assert await c.server_live() and await c.model_ready(MODEL)
            assert [m.name for m in await c.list_models()] == [MODEL]
            assert (await c.get_model(MODEL)).classes == ["0", "1"]
            assert (await c.server_metadata())["name"]
            calls = []
            for i in range(len(data)):
                row = data.iloc[[i]]
                calls.append(c.predict(MODEL, row) if i % 2 else c.infer(MODEL, row))
            return list(await asyncio.gather(*(calls * 8)))

    results = asyncio.run(main())
    assert len(results) == 24 * 8
    for n, result in enumerate(results):
        i = n % 24
        if isinstance(result, pronto.PredictResult):
            assert result.labels == [str(want["label"][i])]
        else:
            assert result.as_numpy("label").tolist() == [want["label"][i]]


def test_dataframes_travel_in_columnar_form(client: pronto.Client) -> None:
    from pronto._codec import build_predict_request

    data = frame()
    request = build_predict_request(MODEL, data)
    assert not request.instances and set(request.inputs.keys()) == set(data.columns)
    by_columns = client.predict(MODEL, data)
    by_rows = client.predict(MODEL, data.to_dict("records"))
    assert by_columns.labels == by_rows.labels
    assert [p.probabilities for p in by_columns.predictions] == [
        p.probabilities for p in by_rows.predictions
    ]
