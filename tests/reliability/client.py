"""Send a corpus case (or a good request) through Envoy and read the status back."""

from __future__ import annotations

import contextlib
import socket
import threading

import grpc

from tests.reliability.conftest import API_KEY, SecuredStack
from tests.reliability.corpus import REST_PREDICT, Case, good_infer, good_predict

__all__ = ["good_requests_succeed", "send"]


def _headers(case: Case) -> dict[str, str]:
    headers = dict(case.headers)
    if headers.pop("auth", None):
        headers["x-api-key"] = API_KEY
    return headers


def _grpc(stack: SecuredStack, method: str, body: bytes, headers: dict[str, str]) -> str:
    with grpc.insecure_channel(
        stack.address, options=[("grpc.max_send_message_length", 64 * 2**20)]
    ) as channel:
        call = channel.unary_unary(method)  # no serializers: bytes go out as they are
        try:
            call(body, metadata=tuple(headers.items()), timeout=10)
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"


def _rest(stack: SecuredStack, target: str, body: bytes, headers: dict[str, str]) -> int:
    """HTTP/1.1 over a plain socket. The body is written from a thread while the reply is
    read: Envoy answers a 10 MB body with 413 before reading it all and then resets, and a
    client that finishes writing first would see only the reset."""
    method, path = target.split(" ", 1)
    all_headers = {"content-type": "application/json", **headers}
    all_headers |= {"host": "127.0.0.1", "content-length": str(len(body)), "connection": "close"}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in all_headers.items()
    )
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:

        def write() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(head.encode() + b"\r\n" + body)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        writer.join(timeout=30)
    status_line = reply.split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1])


def send(stack: SecuredStack, case: Case) -> str | int:
    """The gRPC status name or HTTP status the client got."""
    if case.protocol == "grpc":
        return _grpc(stack, case.target, case.body, _headers(case))
    return _rest(stack, case.target, case.body, _headers(case))


def good_requests_succeed(stack: SecuredStack) -> None:
    key = {"x-api-key": API_KEY}
    infer = "/inference.GRPCInferenceService/ModelInfer"
    assert _grpc(stack, infer, good_infer().SerializeToString(), key) == "OK"
    assert _grpc(stack, "/pronto.v1.PredictionService/Predict",
                 good_predict().SerializeToString(), key) == "OK"  # fmt: skip
    from tests.reliability.payloads import rest_predict_body

    assert _rest(stack, f"POST {REST_PREDICT}", rest_predict_body(lambda b: None), key) == 200
