"""Attacks on a real stack (``pronto serve`` + Envoy with API key and JWT), at a small size:
each reproduces a denial-of-service or exposure path and asserts the service stays correct.
``make chaos`` runs the same attacks larger (``loadtest/chaos/attacks.py``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from loadtest.chaos import attacks
from loadtest.chaos.attacks import API_KEY, AUDIENCE, ISSUER, REST_PREDICT, AttackStack, rest
from loadtest.chaos.stack import Gateway
from loadtest.tokens import Signer
from server.settings import ServeSettings

pytestmark = pytest.mark.integration

ROWS_IN_FLIGHT = 40_000


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def stack(
    repository: Path, tmp_path_factory: pytest.TempPathFactory, signer: Signer
) -> Iterator[AttackStack]:
    folder = tmp_path_factory.mktemp("attacks")
    s = AttackStack(
        repository,
        folder,
        server_extra={"max_rows_in_flight": ROWS_IN_FLIGHT},
        gateway_flags=["--request-headers-timeout", "1"],
    )
    try:
        s.start(signer.write_jwks(folder / "jwks.json"))
        yield s
    finally:
        s.stop()


def _all_ok(legit: dict[str, int], count: int) -> None:
    assert legit == {"OK": count}, legit


def test_anonymous_health_flood_spares_predictions(stack: AttackStack) -> None:
    result = attacks.health_flood(stack, streams=300, checks=300, legit=100)
    # Watch is not public: no anonymous stream reaches a worker
    assert result["watch"] == {"UNAUTHENTICATED": 300}
    # Check is, through its own circuit breaker: answered or shed, never hung
    assert set(result["check"]) <= {"OK", "UNAVAILABLE"}, result
    _all_ok(result["legit"], 100)


def test_rest_health_stays_public_and_watch_needs_a_credential(stack: AttackStack) -> None:
    assert stack.gateway is not None
    port = stack.gateway.listen
    assert rest(port, "GET /v2/health/ready")[0] == 200
    assert rest(port, "GET /v2/health/live")[0] == 200
    # only exact public paths: a metadata path without a key is refused
    assert rest(port, "GET /v2/health/ready/../../models/flight-delay")[0] in (400, 401, 404)
    assert rest(port, f"GET /v2/models/{attacks.MODEL}")[0] == 401


def test_compression_bomb_is_refused_before_inflating(stack: AttackStack) -> None:
    result = attacks.compression_bomb(stack, inflated_mb=64, count=3)
    assert result["compressed_bytes"] < 2**20
    assert result["via_envoy"] == {"UNIMPLEMENTED": 3}, result
    assert result["direct"] == {"UNIMPLEMENTED": 3}, result
    # 3 x 64 MB inflated would show; a refused message costs nothing
    assert result["rss_growth_mb"] < 40, result
    _all_ok(result["legit"], 50)


def test_gzip_rest_body_is_not_inflated(stack: AttackStack) -> None:
    import gzip

    assert stack.gateway is not None
    plain = attacks.rest_predict_body(1)
    key = {"x-api-key": API_KEY}
    # the same body uncompressed is served: the 400 below is the encoding's
    assert rest(stack.gateway.listen, f"POST {REST_PREDICT}", plain, key)[0] == 200
    gz = {**key, "content-encoding": "gzip"}
    status, reply = rest(stack.gateway.listen, f"POST {REST_PREDICT}", gzip.compress(plain), gz)
    assert status == 400, reply


def test_made_up_model_names_do_not_grow_metrics(stack: AttackStack) -> None:
    result = attacks.label_injection(stack, names=200, long_name_bytes=1_000_000)
    assert set(result["codes"]) == {"INVALID_ARGUMENT", "NOT_FOUND", "OK"}, result
    # REST: /v1/models/<made-up>:predict and /v2/models/<made-up>/infer
    assert result["rest_codes"] == {404: 400}, result
    # every made-up request was counted, under the one bounded label
    assert result["other_requests"] == 4 * 200 + 1, result
    assert result["made_up_names_in_metrics"] == 0
    assert "x" * 100 not in stack.metrics()
    # 201 made-up names and a 1 MB one add a handful of series, not thousands of them
    assert result["metrics_bytes_after"] - result["metrics_bytes_before"] < 64_000, result


def test_metrics_publish_no_library_versions(stack: AttackStack) -> None:
    text = stack.metrics()
    build = [line for line in text.splitlines() if line.startswith("pronto_build_info{")]
    assert build, "pronto_build_info missing"
    for label in ("python=", "onnxruntime=", "grpcio="):
        assert label not in build[0]


def test_unauthenticated_bodies_cost_no_parsing(stack: AttackStack) -> None:
    result = attacks.unauthenticated_bodies(stack, callers=4, rows=10_000, rounds=4)
    assert result["body_bytes"] > 2**20
    assert result["statuses"] == {401: 16}, result
    assert not result["leaks_schema"], "a schema error reached an anonymous caller"
    # parsing and transcoding a body this size costs Envoy tens of ms; refusing it at the
    # headers costs well under that
    assert result["envoy_cpu_ms_per_request"] < 25, result
    _all_ok(result["legit"], 50)


def test_unauthenticated_grpc_gets_no_schema_answer(stack: AttackStack) -> None:
    body = attacks.predict_request(5000).SerializeToString()

    async def call() -> str:
        async with grpc.aio.insecure_channel(stack.address) as channel:
            return await attacks._unary(channel, attacks.PREDICT, body)

    assert asyncio.run(call()) == "UNAUTHENTICATED"


def test_slow_headers_are_cut_off(stack: AttackStack) -> None:
    result = attacks.slow_headers(stack, connections=100, timeout=8.0)
    assert result["still_open"] == 0, result
    assert result["max_seconds_open"] < 5, result  # header timeout 1 s in this stack
    _all_ok(result["legit"], 50)


def test_rows_in_flight_are_bounded_and_memory_returned(stack: AttackStack) -> None:
    sizes = [30_000, ROWS_IN_FLIGHT + 5_000] + [30_000] * 5
    big = len(attacks.infer_request(ROWS_IN_FLIGHT + 5_000).SerializeToString())
    assert big < 4 * 2**20  # under every message cap: the row bound refuses it
    result = attacks.big_batches(stack, sizes, concurrent=[25_000, 25_000])
    codes = [result[f"batch{i}"]["code"] for i in range(len(sizes))]
    assert codes == ["OK", "RESOURCE_EXHAUSTED"] + ["OK"] * 5, result
    # two at once: both served on two workers, the second refused where both reach one
    assert sorted(result["concurrent"]["codes"]) in (["OK", "OK"], ["OK", "RESOURCE_EXHAUSTED"])
    _all_ok(result["legit"], 20)
    # memory stays bounded: two workers, each holding at most one large batch's worth, and
    # once each has run one, more batches do not pile memory up
    rss = [result[f"batch{i}"]["rss_mb"] for i in range(len(sizes))]
    assert max(rss) < result["rss_start_mb"] + 250, result
    assert rss[-1] < max(rss[:4]) + 60, result
    assert result["concurrent"]["rss_mb"] < result["rss_start_mb"] + 250, result


def test_rest_body_just_under_the_cap_is_served(stack: AttackStack) -> None:
    assert stack.gateway is not None
    one = len(attacks.rest_predict_body(1))
    rows = (4 * 2**20 - 64) // (one - 14)  # instance list: about one row per (one - 14)
    body = attacks.rest_predict_body(rows)
    while len(body) >= 4 * 2**20:
        rows -= 10
        body = attacks.rest_predict_body(rows)
    assert len(body) > 4 * 2**20 - 64 * 1024
    status, reply = rest(stack.gateway.listen, f"POST {REST_PREDICT}", body, {"x-api-key": API_KEY})
    assert status == 200, reply[:300]
    assert len(json.loads(reply)["predictions"]) == rows


def test_jwt_without_expiry_is_refused(stack: AttackStack, signer: Signer) -> None:
    assert stack.gateway is not None
    port = stack.gateway.listen
    good = signer.token(ISSUER, AUDIENCE)
    forever = signer.token(ISSUER, AUDIENCE, exp=None)
    assert "exp" not in json.loads(_b64decode(forever.split(".")[1]))
    body = attacks.rest_predict_body(1)
    assert rest(port, f"POST {REST_PREDICT}", body, {"authorization": f"Bearer {good}"})[0] == 200
    assert (
        rest(port, f"POST {REST_PREDICT}", body, {"authorization": f"Bearer {forever}"})[0] == 401
    )

    async def grpc_call(token: str) -> str:
        request = attacks.predict_request(1).SerializeToString()
        async with grpc.aio.insecure_channel(stack.address) as channel:
            metadata = (("authorization", f"Bearer {token}"),)
            return await attacks._unary(channel, attacks.PREDICT, request, metadata)

    assert asyncio.run(grpc_call(good)) == "OK"
    assert asyncio.run(grpc_call(forever)) == "UNAUTHENTICATED"


def _b64decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_identity_comes_from_the_credential_and_the_log_cannot_be_forged(
    stack: AttackStack, signer: Signer
) -> None:
    assert stack.gateway is not None
    port = stack.gateway.listen
    body = attacks.rest_predict_body(1)
    forged = {"x-pronto-client": "admin", "x-request-id": 'r1", "client": "admin',
              "user-agent": 'ua", "status": 200, "x": "'}  # fmt: skip
    token = signer.token(ISSUER, AUDIENCE, sub="svc-billing")
    sent = [
        ({"x-api-key": API_KEY, **forged}, f"POST {REST_PREDICT}", 200, "tester"),
        ({"authorization": f"Bearer {token}", **forged}, f"POST {REST_PREDICT}", 200,
         "svc-billing"),
        (forged, "GET /v2/health/ready", 200, None),
        (forged, f"POST {REST_PREDICT}", 401, None),
    ]  # fmt: skip
    marker = "attack-log-marker"
    for headers, target, status, _ in sent:
        headers = {**headers, "x-request-id": marker + headers["x-request-id"]}
        payload = body if target.startswith("POST") else b""
        assert rest(port, target, payload, headers)[0] == status
    assert stack.gateway.log is not None
    lines = _wait_log_lines(stack.gateway.log, marker, len(sent))
    for line, (_, _, status, client) in zip(lines, sent, strict=True):
        record = json.loads(line)  # one JSON object: the quotes did not break out
        assert record["status"] == status
        assert record["client"] == client, record
        assert record["request_id"].startswith(marker)


def _wait_log_lines(log: Path, marker: str, count: int) -> list[str]:
    def found() -> list[str]:
        return [line for line in log.read_text().splitlines() if marker in line]

    attacks._wait_for(lambda: len(found()) >= count, timeout=10)
    return found()


def test_public_health_check_confirms_no_model_name(stack: AttackStack) -> None:
    def check(address: str, service: str, metadata: tuple[tuple[str, str], ...] = ()) -> str:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service), metadata=metadata, timeout=5
                )
            except grpc.RpcError as exc:
                return str(exc.code().name)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    assert check(stack.address, "") == "SERVING"
    assert check(stack.address, attacks.MODEL) == check(stack.address, "no-such-model")
    assert check(stack.address, attacks.MODEL) == "NOT_FOUND"
    # a client cannot opt out of the mark, nor claim it to hide a model from Envoy
    assert check(stack.address, attacks.MODEL, KEY_AND_MARK) == "NOT_FOUND"
    # Envoy's own health checks and kubelet probes reach the workers directly
    assert check(stack.private(0), attacks.MODEL) == "SERVING"


KEY_AND_MARK = (("x-api-key", API_KEY), ("x-pronto-public-health", "0"))


def test_server_ports_bind_loopback_by_default(stack: AttackStack) -> None:
    defaults = ServeSettings()
    assert (defaults.host, defaults.worker_host, defaults.metrics_host) == ("127.0.0.1",) * 3
    assert stack.server is not None
    listening = set()
    for pid in [stack.server.pid, *stack.server.worker_pids()]:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                listening.add(conn.laddr.ip.removeprefix("::ffff:"))  # gRPC binds dual-stack
    assert listening == {"127.0.0.1"}, listening


#: a memory guard below any worker's resident memory: every large request meets it
GUARD_MB = 16


@pytest.fixture(scope="module")
def capturing(
    repository: Path, tmp_path_factory: pytest.TempPathFactory, signer: Signer
) -> Iterator[AttackStack]:
    """One worker with capture on (half the predictions sampled, the rest not) and a memory
    guard it is always over."""
    folder = tmp_path_factory.mktemp("feedback-attack")
    extra = {
        "capture_dir": folder / "capture",
        "capture_sample_rate": 0.5,
        "memory_limit_mb": GUARD_MB,
    }
    s = AttackStack(repository, folder, workers=1, server_extra=extra)
    try:
        s.start(signer.write_jwks(folder / "jwks.json"))
        yield s
    finally:
        s.stop()


def test_feedback_for_made_up_models_does_not_grow_metrics(capturing: AttackStack) -> None:
    result = attacks.feedback_injection(capturing, names=200, long_name_bytes=1_000_000)
    # ids outside the sample are acknowledged whatever the name, as before
    assert result["codes"] == {"OK": 201}, result
    assert result["rest_codes"] == {200: 200}, result
    assert result["other_unsampled"] == 401, result
    assert result["made_up_names_in_metrics"] == 0
    assert "x" * 100 not in capturing.metrics()
    assert result["metrics_bytes_after"] - result["metrics_bytes_before"] < 16_000, result


def test_memory_guard_refuses_large_batches_and_serves_small_ones(capturing: AttackStack) -> None:
    large = ServeSettings().offload_rows  # the guard applies from this many rows up
    assert capturing.worker_rss() > GUARD_MB * 2**20
    assert capturing.gateway is not None
    key = {"x-api-key": API_KEY}

    async def run() -> list[str]:
        async with attacks._channel(capturing.address) as channel:
            codes = []
            for rows in (large, 1, large - 1, 10 * large, 1):
                body = attacks.infer_request(rows).SerializeToString()
                codes.append(await attacks._unary(channel, attacks.INFER, body, attacks.KEY))
            return codes

    assert asyncio.run(run()) == ["RESOURCE_EXHAUSTED", "OK", "OK", "RESOURCE_EXHAUSTED", "OK"]
    port = capturing.gateway.listen
    status, reply = rest(port, f"POST {REST_PREDICT}", attacks.rest_predict_body(large), key)
    assert status == 429, reply
    assert b"short of memory" in reply
    assert rest(port, f"POST {REST_PREDICT}", attacks.rest_predict_body(3), key)[0] == 200


class _RecordingHealth(health.HealthServicer):
    def __init__(self, seen: list[dict[str, str]]) -> None:
        super().__init__()
        self.seen = seen

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.service == "recorded":  # Envoy's own checks are not recorded
            self.seen.append(dict(context.invocation_metadata()))
            request = health_pb2.HealthCheckRequest()
        return super().Check(request, context)


def test_client_sent_identity_never_reaches_the_worker_over_grpc(
    tmp_path: Path, signer: Signer
) -> None:
    """Envoy in front of a stand-in worker that records the metadata it receives."""
    seen: list[dict[str, str]] = []

    def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        return b""

    upstream = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(_RecordingHealth(seen), upstream)
    upstream.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "pronto.v1.PredictionService",
                {"Predict": grpc.unary_unary_rpc_method_handler(predict)},
            )
        ]
    )
    port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    keys = tmp_path / "api-keys"
    keys.write_text(f"tester:{API_KEY}\n")
    jwks = signer.write_jwks(tmp_path / "jwks.json")
    flags = ["--api-keys-file", str(keys), "--jwt-jwks-file", str(jwks)]
    flags += ["--jwt-issuer", ISSUER, "--jwt-audiences", AUDIENCE, "--require-auth"]
    gateway = Gateway(port, 1, tmp_path / "envoy.log", flags=flags)
    forged = (("x-pronto-client", "admin"),)
    token = signer.token(ISSUER, AUDIENCE, sub="svc-billing")
    bearer = (("authorization", f"Bearer {token}"), *forged)
    body = attacks.predict_request(1).SerializeToString()
    check = health_pb2.HealthCheckRequest(service="recorded").SerializeToString()
    try:
        gateway.start()

        async def run() -> list[str]:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                return [
                    await attacks._unary(channel, attacks.PREDICT, body, bearer),
                    await attacks._unary(channel, attacks.PREDICT, body, (*attacks.KEY, *forged)),
                    await attacks._unary(channel, attacks.CHECK, check, forged),
                ]

        assert asyncio.run(run()) == ["OK"] * 3
    finally:
        gateway.stop()
        upstream.stop(0)
    # JWT: the verified subject; API key: the key's client; public path: nobody
    assert [m.get("x-pronto-client") for m in seen] == ["svc-billing", "tester", None], seen
