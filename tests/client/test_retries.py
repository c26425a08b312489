"""Retries: the server's retry hint, Envoy's rate limit and a worker killed mid-traffic."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import pronto
from pronto_cli.predict import CHANNEL_OPTIONS, RETRY_SERVICE_CONFIG
from server.generated.pronto.v1 import prediction_pb2 as pv1
from server.generated.pronto.v1 import prediction_pb2_grpc as pv1_grpc
from tests.gateway.harness import Server, run_gateway, run_server
from tests.gateway.modelgen import MODEL

pytestmark = pytest.mark.integration

ROW = {"carrier": "Copa Air", "hour": 20.0}


class Overloaded(pv1_grpc.PredictionServiceServicer):
    """Refuses the first ``refusals`` calls with RESOURCE_EXHAUSTED and the given trailers."""

    def __init__(self, refusals: int, trailers: list[tuple[str, str | bytes]]) -> None:
        self.refusals, self.trailers = refusals, trailers
        self.calls: list[float] = []

    def Predict(
        self, request: pv1.PredictRequest, context: grpc.ServicerContext
    ) -> pv1.PredictResponse:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.refusals:
            context.set_trailing_metadata(self.trailers)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "shedding load")
        return pv1.PredictResponse(model_name=request.name, model_version="7")


@pytest.fixture
def overloaded() -> Iterator[tuple[str, list[Overloaded]]]:
    """A real gRPC server on a free port; tests install the servicer they want."""
    current: list[Overloaded] = []

    class Router(pv1_grpc.PredictionServiceServicer):
        def Predict(
            self, request: pv1.PredictRequest, context: grpc.ServicerContext
        ) -> pv1.PredictResponse:
            return current[0].Predict(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pv1_grpc.add_PredictionServiceServicer_to_server(Router(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", current
    finally:
        server.stop(None)


def _retry_info(seconds: float) -> bytes:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(seconds * 1e9)))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="shedding load")
    status.details.add().Pack(info)
    return status.SerializeToString()


@pytest.mark.parametrize(
    ("trailers", "hint"),
    [
        ([("grpc-retry-pushback-ms", "300")], 0.3),
        ([("retry-after", "0.25")], 0.25),
        ([("grpc-status-details-bin", _retry_info(0.2))], 0.2),
    ],
    ids=["pushback", "retry-after", "retry-info"],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retry_hint_is_honoured(
    overloaded: tuple[str, list[Overloaded]],
    trailers: list[tuple[str, str | bytes]],
    hint: float,
    mode: str,
) -> None:
    address, current = overloaded
    servicer = Overloaded(1, trailers)
    current.append(servicer)
    events: list[pronto.RetryEvent] = []
    policy = pronto.RetryPolicy(initial_backoff=0.001, on_retry=events.append)
    if mode == "sync":
        with pronto.Client(address, retry=policy) as client:
            result = client.predict(MODEL, ROW)
    else:

        async def main() -> pronto.PredictResult:
            async with pronto.AsyncClient(address, retry=policy) as client:
                return await client.predict(MODEL, ROW)

        result = asyncio.run(main())
    assert result.model_version == "7"
    assert [(e.attempt, e.error.code, e.delay) for e in events] == [(1, "RESOURCE_EXHAUSTED", hint)]
    assert servicer.calls[1] - servicer.calls[0] >= hint


class Reset(pv1_grpc.PredictionServiceServicer):
    """Answers its first ``resets`` calls with CANCELLED and nothing else, as a stopping
    worker's gRPC core answers the calls it had received but not started."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.calls = 0

    def Predict(
        self, request: pv1.PredictRequest, context: grpc.ServicerContext
    ) -> pv1.PredictResponse:
        self.calls += 1
        if self.calls <= self.resets:
            context.abort(grpc.StatusCode.CANCELLED, "Server Shutdown")
        return pv1.PredictResponse(model_name=request.name, model_version="7")


@pytest.mark.parametrize("caller", ["pronto.Client", "published service config"])
def test_a_call_a_stopping_server_resets_is_retried(
    overloaded: tuple[str, list[Any]], caller: str
) -> None:
    address, current = overloaded
    servicer = Reset(2)
    current.append(servicer)
    if caller == "pronto.Client":
        with pronto.Client(address, retry=pronto.RetryPolicy(initial_backoff=0.001)) as client:
            assert client.predict(MODEL, ROW).model_version == "7"
    else:
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pv1_grpc.PredictionServiceStub(channel)
            reply = stub.Predict(pv1.PredictRequest(name=MODEL), timeout=10)
            assert reply.model_version == "7"
    assert servicer.calls == 3
    # a policy without it lets the reset through
    servicer.calls = 0
    policy = pronto.RetryPolicy(retryable=frozenset({"UNAVAILABLE"}))
    with pronto.Client(address, retry=policy) as c, pytest.raises(pronto.InferenceError) as caught:
        c.predict(MODEL, ROW)
    assert caught.value.code == "CANCELLED" and servicer.calls == 1


def test_negative_pushback_stops_retries(overloaded: tuple[str, list[Overloaded]]) -> None:
    address, current = overloaded
    current.append(Overloaded(1, [("grpc-retry-pushback-ms", "-1")]))
    with pronto.Client(address) as client, pytest.raises(pronto.InferenceError) as caught:
        client.predict(MODEL, ROW)
    assert caught.value.code == "RESOURCE_EXHAUSTED" and len(current[0].calls) == 1


def test_hint_beyond_the_deadline_fails_at_once(overloaded: tuple[str, list[Overloaded]]) -> None:
    address, current = overloaded
    current.append(Overloaded(1, [("grpc-retry-pushback-ms", "60000")]))
    started = time.monotonic()
    with pronto.Client(address, timeout=10.0) as client, pytest.raises(pronto.InferenceError):
        client.predict(MODEL, ROW)
    # neither the minute the hint asks for nor the rest of the ten-second deadline
    assert time.monotonic() - started < 5 and len(current[0].calls) == 1


def test_rest_retry_after_header() -> None:
    calls: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            calls.append(time.monotonic())
            refused = len(calls) == 1
            body = json.dumps(
                {"code": 8, "message": "rate limited"}
                if refused
                else {"model_name": MODEL, "model_version": "1", "predictions": [{"label": "1"}]}
            ).encode()
            self.send_response(429 if refused else 200)
            if refused:
                self.send_header("retry-after", "1")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    events: list[pronto.RetryEvent] = []
    try:
        rest = pronto.RestClient(
            f"127.0.0.1:{httpd.server_port}", retry=pronto.RetryPolicy(on_retry=events.append)
        )
        with rest:
            assert rest.predict(MODEL, ROW).labels == ["1"]
    finally:
        httpd.shutdown()
    assert [(e.error.http_status, e.delay) for e in events] == [(429, 1.0)]
    assert calls[1] - calls[0] >= 1.0


def test_envoy_rate_limit_is_retried_with_backoff(server: Server) -> None:
    """One token per second: a call right after another is refused (RESOURCE_EXHAUSTED /
    429) and retried until the bucket refills. The bucket refills on Envoy's clock, so a
    second call can meet a fresh token: calls go on until one was refused."""
    policy_events: list[pronto.RetryEvent] = []
    policy = pronto.RetryPolicy(
        max_attempts=10, initial_backoff=0.1, max_backoff=0.5, on_retry=policy_events.append
    )
    with run_gateway(server, "--rate-limit-rps", "1", "--rate-limit-burst", "1") as limited:
        with pronto.Client(limited.address, retry=policy) as client:
            for _ in range(5):
                assert client.predict(MODEL, ROW).labels == ["1"]
                if policy_events:
                    break
        grpc_events = list(policy_events)
        policy_events.clear()
        with pronto.RestClient(f"127.0.0.1:{limited.port}", retry=policy) as rest:
            for _ in range(5):
                assert rest.predict(MODEL, ROW).labels == ["1"]
                if policy_events:
                    break
        with pronto.Client(limited.address, retry=pronto.RetryPolicy(max_attempts=1)) as client:
            with pytest.raises(pronto.InferenceError) as caught:
                for _ in range(3):
                    client.predict(MODEL, ROW)
            assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert grpc_events and {e.error.code for e in grpc_events} == {"RESOURCE_EXHAUSTED"}
    assert policy_events and {e.error.http_status for e in policy_events} == {429}


def _listener(supervisor: psutil.Process, port: int) -> psutil.Process:
    for child in supervisor.children():
        if any(
            c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections()
        ):
            return child
    raise LookupError(f"no child of {supervisor.pid} listens on {port}")


def _wait_until_dead(proc: psutil.Process, timeout: float = 10.0) -> None:
    # Its parent is stopped, so the worker stays a zombie: its sockets are closed by then.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise TimeoutError(f"worker {proc.pid} still running")


def test_retry_on_a_killed_worker(repository: Path) -> None:
    """The only worker dies; the supervisor is held until the client's first retry, so the
    first attempt surely fails with UNAVAILABLE and a retry reaches the replacement."""
    with run_server(repository, workers=1) as server:
        supervisor = psutil.Process(server.proc.pid)
        worker = _listener(supervisor, server.base_port)
        events: list[pronto.RetryEvent] = []

        def resume(event: pronto.RetryEvent) -> None:
            events.append(event)
            os.kill(supervisor.pid, signal.SIGCONT)

        policy = pronto.RetryPolicy(
            max_attempts=30, initial_backoff=0.05, max_backoff=0.3, on_retry=resume
        )
        with pronto.Client(f"127.0.0.1:{server.port}", retry=policy, timeout=30) as client:
            assert client.predict(MODEL, ROW).labels == ["1"]
            os.kill(supervisor.pid, signal.SIGSTOP)
            try:
                worker.kill()
                _wait_until_dead(worker)
                assert client.predict(MODEL, ROW).labels == ["1"]
            finally:
                os.kill(supervisor.pid, signal.SIGCONT)
        assert events and events[0].error.code == "UNAVAILABLE"
        assert _listener(supervisor, server.base_port).pid != worker.pid


def test_published_service_config_is_the_one_pronto_predict_applies() -> None:
    """docs/reliability.md gives clients in other languages the same JSON."""
    text = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    block = text.split("**Direct gRPC clients**", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(block) == RETRY_SERVICE_CONFIG
