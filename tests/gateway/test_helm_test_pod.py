"""The chart's `helm test` pod, run against a real server behind a real Envoy.

The script and its environment come from the rendered chart, so what runs here is what the
cluster runs; only the address and the mounted file paths are pointed at the local stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.tokens import Signer
from tests.chart.helm import find_all, needs_helm, render
from tests.gateway.harness import Gateway, Server, run_gateway
from tests.gateway.modelgen import MODEL, instance

pytestmark = [pytest.mark.integration, needs_helm]


def _test_pod(*sets: str) -> dict[str, Any]:
    objects = render(
        sets=(f"model.name={MODEL}", f"helmTest.instance.carrier={instance()['carrier']}",
              "helmTest.instance.hour=8", *sets),
    )  # fmt: skip
    pods = [
        o
        for o in find_all(objects, "Pod")
        if o["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    assert len(pods) == 1
    return pods[0]


def _run(pod: dict[str, Any], gateway: Gateway, files: dict[str, Path]) -> tuple[int, str]:
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "-c"]
    env = {e["name"]: e["value"] for e in c["env"]}
    env["PRONTO_TEST_ADDRESS"] = gateway.address
    for name, path in files.items():
        env[name] = str(path)
    # The chart's instance has the default model's features; the test model has two.
    env["PRONTO_TEST_INSTANCE"] = json.dumps(instance())
    proc = subprocess.run(
        [sys.executable, "-c", c["args"][0]],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text("# client:key\nhelm-test:k-5e1d0a\n")
    return path


@pytest.fixture(scope="module")
def keyed(server: Server, keys_file: Path) -> Iterator[Gateway]:
    with run_gateway(server, "--api-keys-file", str(keys_file)) as running:
        yield running


def test_helm_test_passes_against_an_authenticated_release(keyed: Gateway, keys_file: Path) -> None:
    code, out = _run(_test_pod(), keyed, {"PRONTO_TEST_API_KEYS_FILE": keys_file})
    assert code == 0, out
    assert "ok   grpc health through Envoy: SERVING" in out
    assert f"ok   model {MODEL} ready through Envoy" in out
    assert "ok   prediction through Envoy (api-key)" in out
    assert "ok   unauthenticated call refused: HTTP 401" in out


def test_helm_test_fails_when_anonymous_calls_get_through(
    gateway: Gateway, keys_file: Path
) -> None:
    # The shared gateway fixture has no authentication: the release must not pass its test.
    code, out = _run(_test_pod(), gateway, {"PRONTO_TEST_API_KEYS_FILE": keys_file})
    assert code == 1, out
    assert "FAIL unauthenticated call: HTTP 200" in out


def test_helm_test_fails_with_a_wrong_key(keyed: Gateway, tmp_path: Path) -> None:
    wrong = tmp_path / "api-keys"
    wrong.write_text("helm-test:k-not-valid\n")
    code, out = _run(_test_pod(), keyed, {"PRONTO_TEST_API_KEYS_FILE": wrong})
    assert code == 1 and f"FAIL model {MODEL} ready through Envoy: HTTP 401" in out, out


def test_helm_test_without_auth_skips_only_the_refusal(gateway: Gateway) -> None:
    code, out = _run(_test_pod("gateway.auth.mode=none"), gateway, {})
    assert code == 0, out
    assert "skip unauthenticated call: gateway.auth.mode is none" in out


def test_helm_test_checks_every_listed_model(keyed: Gateway, keys_file: Path) -> None:
    """With a `models` list, each model must be ready through Envoy; one the release does
    not serve fails the test (the prediction goes to the first listed model)."""
    pod = _test_pod(
        f"models[0].name={MODEL}", "models[0].versionPolicy=latest", "models[1].name=absent"
    )
    code, out = _run(pod, keyed, {"PRONTO_TEST_API_KEYS_FILE": keys_file})
    assert code == 1, out
    assert f"ok   model {MODEL} ready through Envoy" in out
    assert "FAIL model absent ready through Envoy" in out


ISSUER = "https://issuer.pronto.test"
AUDIENCE = "pronto"
JWT_VALUES = ("gateway.auth.mode=jwt", f"gateway.auth.jwt.issuer={ISSUER}",
              f"gateway.auth.jwt.audiences={{{AUDIENCE}}}")  # fmt: skip


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def jwt_gateway(
    server: Server, signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """Envoy as the chart runs it with gateway.auth.mode=jwt: JWTs only, auth required."""
    jwks = signer.write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json")
    flags = ["--jwt-jwks-file", str(jwks), "--jwt-issuer", ISSUER, "--jwt-audiences", AUDIENCE,
             "--require-auth"]  # fmt: skip
    with run_gateway(server, *flags) as running:
        yield running


def _token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")  # a Secret made with --from-file often ends in a newline
    return path


def test_helm_test_passes_against_a_jwt_release(
    jwt_gateway: Gateway, signer: Signer, tmp_path: Path
) -> None:
    pod = _test_pod(*JWT_VALUES)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["PRONTO_TEST_AUTH_MODE"] == "jwt"
    # The script reads the token where the chart mounts the token Secret.
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert str(Path(env["PRONTO_TEST_JWT_FILE"]).parent) in mounts
    token = _token_file(tmp_path, signer.token(ISSUER, AUDIENCE))
    code, out = _run(pod, jwt_gateway, {"PRONTO_TEST_JWT_FILE": token})
    assert code == 0, out
    assert "ok   grpc health through Envoy: SERVING" in out
    assert f"ok   model {MODEL} ready through Envoy" in out
    assert "ok   prediction through Envoy (jwt)" in out
    assert "ok   unauthenticated call refused: HTTP 401" in out


def test_helm_test_fails_with_a_token_envoy_does_not_accept(
    jwt_gateway: Gateway, signer: Signer, tmp_path: Path
) -> None:
    pod = _test_pod(*JWT_VALUES)
    wrong_audience = _token_file(tmp_path, signer.token(ISSUER, "someone-else"))
    code, out = _run(pod, jwt_gateway, {"PRONTO_TEST_JWT_FILE": wrong_audience})
    assert code == 1 and f"FAIL model {MODEL} ready through Envoy: HTTP 403" in out, out
    expired = _token_file(tmp_path, signer.token(ISSUER, AUDIENCE, lifetime=-600))
    code, out = _run(pod, jwt_gateway, {"PRONTO_TEST_JWT_FILE": expired})
    assert code == 1 and f"FAIL model {MODEL} ready through Envoy: HTTP 401" in out, out
