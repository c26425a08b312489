"""JWT and API-key authentication in front of the workers; health stays open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest.tokens import Signer
from server.generated.pronto.v1 import prediction_pb2, prediction_pb2_grpc
from tests.gateway.harness import Gateway, Server, request, run_gateway
from tests.gateway.modelgen import MODEL, instance
from tests.gateway.test_errors import assert_status

pytestmark = pytest.mark.integration

ISSUER = "https://issuer.pronto.test"
AUDIENCE = "pronto"
PREDICT = f"/v1/models/{MODEL}:predict"
BODY = {"instances": [instance(1)]}


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    path.write_text("# client:key\nbatch-scorer:k-3f9a1c\ndashboard:k-77b2e0\n")
    return path


@pytest.fixture(scope="module")
def secured(
    server: Server, signer: Signer, keys_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    jwks = signer.write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json")
    flags = [
        "--jwt-jwks-file", str(jwks), "--jwt-issuer", ISSUER, "--jwt-audiences", AUDIENCE,
        "--api-keys-file", str(keys_file), "--require-auth",
    ]  # fmt: skip
    with run_gateway(server, *flags) as running:
        yield running


@pytest.fixture(scope="module")
def keys_only(server: Server, keys_file: Path) -> Iterator[Gateway]:
    with run_gateway(server, "--api-keys-file", str(keys_file)) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_valid_jwt_is_accepted(secured: Gateway, signer: Signer) -> None:
    token = signer.token(ISSUER, AUDIENCE)
    reply = request(secured, "POST", PREDICT, BODY, bearer(token))
    assert reply.status == 200, reply.body
    assert request(secured, "GET", "/v1/models", headers=bearer(token)).status == 200


def test_missing_jwt_is_401(secured: Gateway) -> None:
    reply = request(secured, "POST", PREDICT, BODY)
    assert_status(reply, 401, "Jwt is missing")
    assert "www-authenticate" in reply.headers


def test_expired_jwt_is_401(secured: Gateway, signer: Signer) -> None:
    token = signer.token(ISSUER, AUDIENCE, lifetime=-600)
    assert_status(request(secured, "POST", PREDICT, BODY, bearer(token)), 401, "expired")


def test_wrong_audience_is_403(secured: Gateway, signer: Signer) -> None:
    token = signer.token(ISSUER, "someone-else")
    assert_status(request(secured, "POST", PREDICT, BODY, bearer(token)), 403, "Audiences")


def test_wrong_issuer_and_foreign_key_are_401(secured: Gateway, signer: Signer) -> None:
    wrong_issuer = signer.token("https://elsewhere.test", AUDIENCE)
    assert_status(request(secured, "GET", "/v1/models", headers=bearer(wrong_issuer)), 401)
    forged = Signer(kid=signer.kid).token(ISSUER, AUDIENCE)
    assert_status(request(secured, "GET", "/v1/models", headers=bearer(forged)), 401)


def test_api_key_is_an_alternative_to_jwt(secured: Gateway) -> None:
    reply = request(secured, "POST", PREDICT, BODY, {"x-api-key": "k-77b2e0"})
    assert reply.status == 200, reply.body


def test_wrong_api_key_is_401(secured: Gateway, signer: Signer) -> None:
    assert_status(request(secured, "POST", PREDICT, BODY, {"x-api-key": "k-guess"}), 401)
    # A wrong key is refused even next to a valid JWT: the key is what the caller chose.
    headers = {"x-api-key": "k-guess", **bearer(signer.token(ISSUER, AUDIENCE))}
    assert_status(request(secured, "POST", PREDICT, BODY, headers), 401)


def test_health_and_readiness_need_no_credentials(secured: Gateway) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert request(secured, "GET", path).status == 200
    with grpc.insecure_channel(secured.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_native_grpc_needs_credentials_too(secured: Gateway, signer: Signer) -> None:
    with grpc.insecure_channel(secured.address) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListModels(prediction_pb2.ListModelsRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = signer.token(ISSUER, AUDIENCE)
        metadata = (("authorization", f"Bearer {token}"),)
        reply = stub.ListModels(prediction_pb2.ListModelsRequest(), metadata=metadata, timeout=5)
        assert [m.name for m in reply.models] == [MODEL]
        keyed = stub.ListModels(
            prediction_pb2.ListModelsRequest(), metadata=(("x-api-key", "k-3f9a1c"),), timeout=5
        )
        assert [m.name for m in keyed.models] == [MODEL]


def test_api_keys_alone(keys_only: Gateway) -> None:
    assert_status(request(keys_only, "GET", "/v1/models"), 401)
    assert request(keys_only, "GET", "/v1/models", headers={"x-api-key": "k-3f9a1c"}).status == 200
    assert request(keys_only, "GET", "/v2/health/ready").status == 200
