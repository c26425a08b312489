"""The clients through real Envoys: REST routes, API key and JWT, TLS, and `pronto predict`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pronto
from loadtest.tokens import Signer
from tests.client.conftest import API_KEY, AUDIENCE, ISSUER, TlsFront
from tests.client.test_grpc_client import arrays, frame, reference
from tests.gateway.harness import Gateway
from tests.gateway.modelgen import MODEL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROW = {"carrier": "Copa Air", "hour": 20.0}


def url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_rest_infer_matches_grpc(gateway: Gateway, repository: Path, raw: bool) -> None:
    data = frame()
    want = reference(repository, data)
    with pronto.RestClient(url(gateway)) as rest:
        result = rest.infer(MODEL, arrays(data), raw=raw, request_id="rest-1")
        assert result.id == "rest-1" and result.model_version == "1"
        np.testing.assert_array_equal(result.as_numpy("label"), want["label"])
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6
        )
        # the DataFrame path fetches /v2/models/{name} to type the columns
        from_frame = rest.infer(MODEL, data[["hour", "carrier"]]).to_dataframe()
        np.testing.assert_array_equal(from_frame["label"].to_numpy(), want["label"])


def test_rest_predict_metadata_and_errors(gateway: Gateway, repository: Path) -> None:
    data = frame(5)
    want = reference(repository, data)
    with pronto.RestClient(f"127.0.0.1:{gateway.port}") as rest:
        assert rest.server_live() and rest.server_ready() and rest.model_ready(MODEL)
        assert rest.model_metadata(MODEL).inputs[1].datatype == "FP32"
        assert [m.name for m in rest.list_models()] == [MODEL]
        assert rest.predict(MODEL, data).labels == [str(x) for x in want["label"]]
        with pytest.raises(pronto.InferenceError) as missing:
            rest.predict("nope", ROW)
        assert (missing.value.code, missing.value.http_status) == ("NOT_FOUND", 404)
        with pytest.raises(pronto.InferenceError) as bad:
            rest.predict(MODEL, {"carrier": "Copa Air", "hour": "late"})
        assert (bad.value.code, bad.value.http_status) == ("INVALID_ARGUMENT", 400)


def test_async_rest_client(secured: Gateway, repository: Path) -> None:
    data = frame(16)
    want = [str(x) for x in reference(repository, data)["label"]]

    async def main() -> list[pronto.PredictResult]:
        async with pronto.AsyncRestClient(url(secured), api_key=API_KEY) as rest:
            assert await rest.server_live() and await rest.server_ready()
            assert await rest.model_ready(MODEL) and not await rest.model_ready(MODEL, "9")
            assert [m.name for m in await rest.list_models()] == [MODEL]
            assert (await rest.model_metadata(MODEL)).versions == ("1",)
            infer = await rest.infer(MODEL, data, raw=False)
            assert [str(x) for x in infer.as_numpy("label")] == want
            return list(
                await asyncio.gather(*(rest.predict(MODEL, data.iloc[[i]]) for i in range(16)))
            )

    results = asyncio.run(main())
    assert [r.labels[0] for r in results] == want


def test_grpc_through_envoy(gateway: Gateway, repository: Path) -> None:
    data = frame(6)
    with pronto.Client(gateway.address) as client:
        got = client.infer(MODEL, arrays(data)).as_numpy("label")
    np.testing.assert_array_equal(got, reference(repository, data)["label"])


def test_api_key_and_jwt(secured: Gateway, signer: Signer) -> None:
    token = signer.token(ISSUER, AUDIENCE)
    for creds in ({"api_key": API_KEY}, {"jwt": token}):
        with pronto.Client(secured.address, **creds) as client:  # type: ignore[arg-type]
            assert client.predict(MODEL, ROW).labels == ["1"]
            assert client.infer(MODEL, arrays(frame(2))).as_numpy("label").shape == (2,)
        with pronto.RestClient(url(secured), **creds) as rest:  # type: ignore[arg-type]
            assert rest.predict(MODEL, ROW).labels == ["1"]
    with pronto.Client(secured.address) as client:
        assert client.server_ready()  # health needs no credentials
        with pytest.raises(pronto.InferenceError) as anonymous:
            client.predict(MODEL, ROW)
        assert anonymous.value.code == "UNAUTHENTICATED"
    with pronto.RestClient(url(secured), api_key="wrong") as rest:
        with pytest.raises(pronto.InferenceError) as wrong:
            rest.predict(MODEL, ROW)
        assert (wrong.value.code, wrong.value.http_status) == ("UNAUTHENTICATED", 401)
    with pronto.RestClient(url(secured), jwt=signer.token(ISSUER, "other")) as rest:
        with pytest.raises(pronto.InferenceError) as denied:
            rest.predict(MODEL, ROW)
        assert denied.value.http_status == 403


def test_tls_with_a_ca_file(tls_front: TlsFront) -> None:
    with pronto.Client(tls_front.address, ca_file=tls_front.ca) as client:
        assert client.predict(MODEL, ROW).labels == ["1"]
    with pronto.RestClient(f"https://{tls_front.address}", ca_file=tls_front.ca) as rest:
        assert rest.predict(MODEL, ROW).labels == ["1"]


def test_tls_refuses_an_unknown_ca(tls_front: TlsFront) -> None:
    # The system roots do not know the test CA: the handshake must fail, not fall back.
    with pronto.Client(tls_front.address, tls=True, timeout=3, retry=pronto.RetryPolicy(1)) as c:
        with pytest.raises(pronto.InferenceError) as caught:
            c.predict(MODEL, ROW)
        assert caught.value.code == "UNAVAILABLE"
        assert "handshake" in caught.value.message.lower(), caught.value.message
    with pronto.RestClient(f"https://{tls_front.address}", retry=pronto.RetryPolicy(1)) as rest:
        with pytest.raises(pronto.InferenceError) as caught:
            rest.predict(MODEL, ROW)
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pronto_cli", "predict", "--model", MODEL, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60, input="")


def test_predict_cli_flags(secured: Gateway, tls_front: TlsFront, signer: Signer) -> None:
    row = json.dumps(ROW)
    over_rest = cli("--rest", "--address", secured.address, "--api-key", API_KEY, row)
    assert over_rest.returncode == 0, over_rest.stderr
    assert json.loads(over_rest.stdout)["predictions"][0]["label"] == "1"
    token = signer.token(ISSUER, AUDIENCE)
    over_grpc = cli("--address", secured.address, "--jwt", token, row)
    assert over_grpc.returncode == 0, over_grpc.stderr
    rows = [ROW, {**ROW, "hour": 3.0}]
    columns = {"inputs": {k: [r[k] for r in rows] for k in ROW}}
    for flags in (["--rest", "--api-key", API_KEY], ["--jwt", token]):
        by_rows = cli("--address", secured.address, *flags, json.dumps({"instances": rows}))
        by_columns = cli("--address", secured.address, *flags, json.dumps(columns))
        assert by_rows.returncode == 0 and by_columns.returncode == 0, by_columns.stderr
        want = json.loads(by_rows.stdout)["predictions"]
        assert len(want) == 2 and json.loads(by_columns.stdout)["predictions"] == want
    ragged = cli("--address", secured.address, '{"inputs": {"carrier": ["a"], "hour": []}}')
    assert ragged.returncode == 2 and "same number of values" in ragged.stderr
    refused = cli("--address", secured.address, row)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    for flags in (["--ca-file", str(tls_front.ca)], ["--rest", "--ca-file", str(tls_front.ca)]):
        done = cli("--address", tls_front.address, *flags, row)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model_name"] == MODEL
