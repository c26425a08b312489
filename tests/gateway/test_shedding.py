"""Envoy sheds inference past the workers' in-flight limit; probes keep answering."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from gateway.render import ADMISSION_FORGET_MS
from loadtest import grpc_web
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.shedding import QUEUED_AT_HEADER
from tests.gateway.harness import Gateway, Server, request, run_gateway, run_server
from tests.gateway.modelgen import MODEL, build_repository, instance
from tests.server.modelgen import SLOW_WIDTH, build_slow_model
from tests.support import free_port

pytestmark = pytest.mark.integration

HELD = 2  # the gateway's in-flight limit for the one worker
PREDICT_METHOD = "/pronto.v1.PredictionService/Predict"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Gateway]]:
    root = build_repository(tmp_path_factory.mktemp("shed-models"))
    build_slow_model(root / "slow" / "1", layers=800)  # ~0.5 s per 1,024 rows on one core
    with (
        run_server(root, workers=1) as server,
        # one Envoy thread, so that its share of the limit is all of it
        run_gateway(
            server, "--max-requests-per-worker", str(HELD), "--envoy-concurrency", "1"
        ) as gateway,
    ):
        yield server, gateway


def _active(gateway: Gateway) -> int:
    url = f"http://127.0.0.1:{gateway.admin_port}/stats?filter=^cluster.workers.upstream_rq_active$"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return int(reply.read().decode().split(":")[1])


def _slow_request(rows: int = 1024) -> pb.ModelInferRequest:
    x = np.random.default_rng(0).random((rows, SLOW_WIDTH), dtype=np.float32)
    req = pb.ModelInferRequest(model_name="slow")
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def test_inference_past_the_limit_is_refused_with_a_retry_hint(
    stack: tuple[Server, Gateway],
) -> None:
    _, gateway = stack
    channel = grpc.insecure_channel(gateway.address)
    infer = pb_grpc.GRPCInferenceServiceStub(channel)
    predict = ppb_grpc.PredictionServiceStub(channel)
    infer.ServerLive(pb.ServerLiveRequest(), timeout=10)
    try:
        for _ in range(5):  # in case the held requests finish before the checks do
            with ThreadPoolExecutor(HELD) as pool:
                held: list[Future[pb.ModelInferResponse]] = [
                    pool.submit(infer.ModelInfer, _slow_request(), timeout=60) for _ in range(HELD)
                ]
                # explicit synchronization: Envoy has the limit in flight
                deadline = time.monotonic() + 30
                while _active(gateway) < HELD and time.monotonic() < deadline:
                    time.sleep(0.002)
                sent = time.monotonic()
                rest = request(
                    gateway, "POST", f"/v1/models/{MODEL}:predict", {"instances": [instance()]}
                )
                rest_took = time.monotonic() - sent
                grpc_refusal: grpc.RpcError | None = None
                try:
                    req = ppb.PredictRequest(name=MODEL)
                    req.instances.add().update(instance())
                    predict.Predict(req, timeout=10)
                except grpc.RpcError as exc:
                    grpc_refusal = exc
                web_refusal = grpc_web.call(
                    "127.0.0.1", gateway.port, PREDICT_METHOD, req.SerializeToString()
                )
                probes = [
                    request(gateway, "GET", "/v2/health/ready").status,
                    request(gateway, "GET", f"/v2/models/{MODEL}").status,
                    infer.ServerReady(pb.ServerReadyRequest(), timeout=10).ready,
                ]
                still_held = not any(f.done() for f in held)
                results = [f.result() for f in held]
            assert all(r.model_name == "slow" for r in results)
            if still_held:
                break
        else:
            pytest.fail("the held requests never outlasted the checks")
        assert rest.status == 429, rest
        # held by the gateway (--shed-hold-ms, 50 by default) before it was refused, so a
        # caller that retries at once cannot spin; Envoy's timer never fires early
        assert rest_took >= 0.05 * 0.9, rest_took
        assert rest.headers.get("retry-after") == "1", rest.headers
        assert rest.body["code"] == 8 and "overloaded" in rest.body["message"], rest.body
        assert grpc_refusal is not None
        assert grpc_refusal.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, grpc_refusal
        trailers = dict(grpc_refusal.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert trailers.get("retry-after") == "1", trailers
        # gRPC-Web callers get the same refusal, in their framing
        assert web_refusal.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], web_refusal
        assert web_refusal.headers.get("retry-after") == "1", web_refusal.headers
        assert "overloaded" in web_refusal.grpc_message
        assert probes == [200, 200, True]
        # the load is gone: inference is admitted again
        assert (
            request(
                gateway, "POST", f"/v1/models/{MODEL}:predict", {"instances": [instance()]}
            ).status
            == 200
        )
    finally:
        channel.close()


def test_requests_their_callers_reset_do_not_hold_their_place(
    stack: tuple[Server, Gateway],
) -> None:
    """A caller that cancels, or whose deadline passes, resets its stream: Envoy never
    passes a reply back through the admission filter for it. Its place is taken back all
    the same, so a burst of cancelled calls cannot leave the gateway refusing everything."""
    _, gateway = stack
    channel = grpc.insecure_channel(gateway.address)
    infer = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        infer.ServerLive(pb.ServerLiveRequest(), timeout=10)
        calls = [infer.ModelInfer.future(_slow_request(), timeout=60) for _ in range(HELD)]
        deadline = time.monotonic() + 30
        while _active(gateway) < HELD and time.monotonic() < deadline:
            time.sleep(0.002)
        assert _active(gateway) == HELD, "the calls never reached the worker"
        for call in calls:
            assert call.cancel()  # still running on the worker: a reset, not a reply
        reset = time.monotonic()
        # Envoy dropped the upstream streams: the circuit breaker has room again at once
        while _active(gateway) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert _active(gateway) == 0

        # and the admission filter once the reset calls are older than it counts a call:
        # refused (held, then 429) until then, admitted after, for good
        def predict() -> int:
            body = {"instances": [instance()]}
            return request(gateway, "POST", f"/v1/models/{MODEL}:predict", body).status

        horizon = ADMISSION_FORGET_MS / 1000
        status = predict()
        while status == 429 and time.monotonic() < reset + 10 * horizon:
            status = predict()
        assert status == 200, f"still refused {10 * horizon:g} s after the calls were reset"
        assert [predict() for _ in range(HELD + 1)] == [200] * (HELD + 1)
    finally:
        channel.close()


def test_callers_cannot_mark_their_own_requests_for_refusal(
    stack: tuple[Server, Gateway],
) -> None:
    _, gateway = stack
    marks = {
        "x-pronto-shed": "1",
        "x-envoy-fault-abort-request": "503",
        "x-envoy-fault-delay-request": "5000",
    }
    sent = time.monotonic()
    reply = request(
        gateway, "POST", f"/v1/models/{MODEL}:predict", {"instances": [instance()]}, marks
    )
    assert reply.status == 200, reply
    assert time.monotonic() - sent < 5, "the caller's delay header was honoured"


class _FirstTryFails(ppb_grpc.PredictionServiceServicer):
    """A worker stand-in that records request headers and fails each request's first try."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def Predict(self, request: ppb.PredictRequest, context: Any) -> ppb.PredictResponse:
        headers = {k: v for k, v in context.invocation_metadata() if k.startswith("x-")}
        self.seen.append(headers)
        if headers.get("x-envoy-attempt-count") == "1":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "first try fails")
        return ppb.PredictResponse(model_name=request.name)


def test_envoy_stamps_arrival_and_numbers_retries() -> None:
    """What the server's queue-delay bound relies on: Envoy's own time stamp on every
    inference request (a caller's value is overwritten) and the try number on retries."""

    async def scenario() -> list[dict[str, str]]:
        port = free_port()
        server = grpc.aio.server()
        upstream = _FirstTryFails()
        ppb_grpc.add_PredictionServiceServicer_to_server(upstream, server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stand_in = Server(proc=None, port=port, base_port=port, workers=1)  # type: ignore[arg-type]
        try:
            with run_gateway(stand_in) as gateway:
                async with grpc.aio.insecure_channel(gateway.address) as channel:
                    before = time.time()
                    reply = await ppb_grpc.PredictionServiceStub(channel).Predict(
                        ppb.PredictRequest(name="m"),
                        timeout=10,
                        metadata=((QUEUED_AT_HEADER, "1.0"),),
                    )
                    assert reply.model_name == "m"
                    stamps = [float(h[QUEUED_AT_HEADER]) for h in upstream.seen]
                    assert all(before - 1 <= s <= time.time() for s in stamps), stamps
        finally:
            await server.stop(None)
        return upstream.seen

    seen = asyncio.run(scenario())
    assert [h.get("x-envoy-attempt-count") for h in seen] == ["1", "2"], seen
    assert seen[0][QUEUED_AT_HEADER] == seen[1][QUEUED_AT_HEADER]  # one arrival per request


def test_a_slow_upload_is_not_taken_for_queueing(tmp_path: Path) -> None:
    """The server's queue-delay bound counts from when Envoy passes a request on: a REST
    body that takes longer than the bound to arrive at an idle worker is served, not shed."""
    root = build_repository(tmp_path / "models")
    body = json.dumps({"instances": [instance(i) for i in range(200)]}).encode()
    head = (
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nhost: pronto\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    with (
        run_server(root, 1, "--max-queue-delay-ms", "500") as server,
        run_gateway(server) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as conn,
    ):
        started = time.monotonic()
        conn.sendall(head)
        for part in range(4):  # the caller's upload: 1.5 s, three times the bound
            conn.sendall(body[part * len(body) // 4 : (part + 1) * len(body) // 4])
            if part < 3:
                time.sleep(0.5)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += conn.recv(65536)
        assert time.monotonic() - started >= 1.5
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
