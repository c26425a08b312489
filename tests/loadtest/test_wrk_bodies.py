"""The wrk script sends exactly the bodies it is given: JSON lines, or binary ones (hex)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from loadtest.grpc_web import CONTENT_TYPE, grpc_frame
from loadtest.wrk import WrkRun, run_wrk

pytestmark = pytest.mark.integration


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    seen: ClassVar[list[tuple[str, str, bytes]]] = []  # each test makes a subclass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    seen: list[tuple[str, str, bytes]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_binary_bodies_arrive_byte_for_byte(
    recorder: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = recorder
    # every byte value, newlines and NULs included: nothing may be cut or re-encoded
    bodies = [grpc_frame(bytes(range(256))), grpc_frame(b"\n\r\x00" * 40), grpc_frame(b"")]
    bodies_file = tmp_path / "bodies.hex"
    bodies_file.write_text("".join(b.hex() + "\n" for b in bodies))
    run = WrkRun(
        url=url,
        path="/inference.GRPCInferenceService/ModelInfer",
        bodies_file=bodies_file,
        duration_s=1,
        connections=1,
        threads=1,
        content_type=CONTENT_TYPE,
        hex_bodies=True,
    )
    result = run_wrk(run, tmp_path / "out", "hex")
    assert result.errors == 0 and result.ok >= len(bodies), result
    assert {path for path, _, _ in seen} == {run.path}
    assert {kind for _, kind, _ in seen} == {CONTENT_TYPE}
    assert {body for _, _, body in seen} == set(bodies)  # each one sent, nothing else


def test_json_lines_are_sent_as_they_are(
    recorder: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    url, seen = recorder
    lines = ['{"instances": [{"a": 1}]}', '{"inputs": {"a": [1, 2]}}']
    bodies_file = tmp_path / "bodies.jsonl"
    bodies_file.write_text("\n".join(lines) + "\n")
    run = WrkRun(
        url=url, path="/p", bodies_file=bodies_file, duration_s=1, connections=1, threads=1
    )
    result = run_wrk(run, tmp_path / "out", "json")
    assert result.errors == 0 and result.ok >= len(lines), result
    assert {kind for _, kind, _ in seen} == {"application/json"}
    assert {body.decode() for _, _, body in seen} == set(lines)


def test_paced_runs_hold_their_rate_whatever_the_latency(tmp_path: Path) -> None:
    """A paced wrk run sends ``rate`` requests a second even when every answer takes a
    while: its connections share one schedule of send times. A fixed pause of
    connections / rate after each answer (how this script paced before) would send about
    13 a second here instead of 20. The connections could carry twice the rate, so a slow
    host has room to keep it."""
    latency, rate, seconds, connections = 0.1, 20, 3.0, 4
    sent: list[float] = []

    class Slow(_Recorder):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            sent.append(time.monotonic())
            time.sleep(latency)  # the server's own latency, what pacing must absorb
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bodies_file = tmp_path / "bodies.jsonl"
    bodies_file.write_text('{"a": 1}\n')
    run = WrkRun(
        url=f"http://127.0.0.1:{server.server_address[1]}",
        path="/p",
        bodies_file=bodies_file,
        duration_s=seconds,
        connections=connections,
        threads=1,
        rate=rate,
    )
    try:
        result = run_wrk(run, tmp_path / "out", "paced")
    finally:
        server.shutdown()
        server.server_close()
    assert result.errors == 0, result
    # never faster than the schedule (the first request of each connection goes at once)
    assert len(sent) <= rate * seconds + run.connections + 1
    # and not held back by the latency: a host would have to stall for most of a second
    assert len(sent) >= 0.8 * rate * seconds, len(sent)
