"""`pronto up` on an empty repository: trains, serves, fronts with Envoy, stops cleanly."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import free_port, free_port_block, wait_for_grpc_health, wait_for_http

pytestmark = pytest.mark.integration

INSTANCE = {
    "OPERA": "Sky Airline",
    "TIPOVUELO": "N",
    "SIGLADES": "Antofagasta",
    "DIANOM": "Viernes",
    "period_of_day": "afternoon",
    "MES": 7,
    "hour": 15,
    "high_season": 1,
}


def _post(port: int, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def test_up_trains_serves_and_stops(tmp_path: Path) -> None:
    grpc_port, rest_port, metrics, admin, stats = (free_port() for _ in range(5))
    base = free_port_block(2)
    env = dict(os.environ, PRONTO_ROWS="4000")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pronto_cli",
            "up",
            "--workers",
            "2",
            "--port",
            str(grpc_port),
            "--worker-base-port",
            str(base),
            "--metrics-port",
            str(metrics),
            "--listen-port",
            str(rest_port),
            "--admin-port",
            str(admin),
            "--stats-port",
            str(stats),
            # Envoy on every interface: nothing else may follow it there
            "--listen-address",
            "0.0.0.0",
        ],
        cwd=tmp_path,
        env=env,
    )
    try:
        wait_for_http(rest_port, "/v2/health/ready", timeout=240, proc=proc)
        assert (tmp_path / "models" / "flight-delay" / "1" / "model.onnx").exists()
        wait_for_grpc_health(f"127.0.0.1:{grpc_port}", proc=proc)
        status, body = _post(
            rest_port,
            "/v1/models/flight-delay:predict",
            {"instances": [INSTANCE, {**INSTANCE, "hour": 3}]},
        )
        assert status == 200, body
        predictions = body["predictions"]
        assert isinstance(predictions, list) and len(predictions) == 2
        assert abs(sum(predictions[0]["probabilities"].values()) - 1) < 1e-5
        listening = _listening(proc.pid)
        # Envoy's listeners (API and /stats/prometheus) follow --listen-address; the
        # unauthenticated server ports (shared, workers, metrics) and Envoy's admin stay on
        # loopback
        exposed = {port for ip, port in listening if ip != "127.0.0.1"}
        assert exposed == {rest_port, stats}, listening
        ports = {port for _, port in listening}
        assert {grpc_port, base, base + 1, metrics, admin} <= ports, listening
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``pid`` and its descendants."""
    root = psutil.Process(pid)
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port))
    return found
