"""Side-by-side latency and throughput of the gateway's security options (not a test).

    .venv/bin/python -m tests.gateway.bench --duration 15 --connections 32

Starts one `pronto serve` (2 workers) and, one after the other, an Envoy per variant
on the same machine; drives REST with wrk and native gRPC with ghz, one request of
one row each, the same number of keep-alive connections each time. Prints a Markdown
table for docs/security.md. TLS to the workers goes through a TLS-terminating Envoy in
front of each worker's private port (the server speaks plaintext); the "relay"
baseline uses the same hop without TLS, so the difference between them is TLS alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.launcher import envoy_binary
from gateway.render import PACKAGED_DESCRIPTOR_SET
from tests.gateway.harness import Server, run_gateway, run_server
from tests.gateway.modelgen import MODEL, build_repository, instance
from tests.gateway.tls import SERVER_NAME, relay_config, write_certificates
from tests.gateway.tokens import Signer
from tests.support import free_port_block, stop_process, wait_for_port

HERE = Path(__file__).resolve().parent
ISSUER, AUDIENCE, API_KEY = "https://issuer.bench", "pronto", "bench-key-1"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(HERE.parents[1] / ".tools/bin"))
    if not found:
        raise SystemExit(f"{name} not found")
    return found


def wrk(
    port: int, seconds: int, conns: int, headers: dict[str, str], rate: int = 0
) -> dict[str, float]:
    env = dict(os.environ)
    env["BENCH_BODY"] = json.dumps({"instances": [instance(3)]})
    env["BENCH_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    # wrk cannot hold a rate; a pause of conns/rate per request approximates one.
    env["BENCH_DELAY_MS"] = str(int(conns * 1000 / rate)) if rate else "0"
    cmd = [_tool("wrk"), "-t", "2", "-c", str(conns), "-d", f"{seconds}s"]
    cmd += [
        "-s",
        str(HERE / "wrk_report.lua"),
        f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": data["errors"],
    }


def ghz(
    port: int, seconds: int, conns: int, metadata: dict[str, str], rate: int = 0
) -> dict[str, float]:
    cmd = [_tool("ghz"), "--insecure", "--protoset", str(PACKAGED_DESCRIPTOR_SET)]
    cmd += ["--call", "pronto.v1.PredictionService/Predict", "-c", str(conns)]
    cmd += ["--connections", str(conns), "-z", f"{seconds}s", "-O", "json"]
    cmd += ["-d", json.dumps({"name": MODEL, "instances": [instance(3)]})]
    if rate:
        cmd += ["-r", str(rate)]
    if metadata:
        cmd += ["-m", json.dumps(metadata)]
    out = subprocess.run([*cmd, f"127.0.0.1:{port}"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    percentiles = {p["percentage"]: p["latency"] for p in data["latencyDistribution"]}
    # ghz closes its connections when the duration ends, failing the calls still in flight
    # ("use of closed network connection"); those are not server errors.
    errors = data.get("errorDistribution") or {}
    failed = sum(n for msg, n in errors.items() if "closed network connection" not in msg)
    return {
        "rps": data["rps"],
        "p50_ms": percentiles[50] / 1e6,
        "p99_ms": percentiles[99] / 1e6,
        "errors": failed,
    }


@contextlib.contextmanager
def tls_relay(server: Server, certs: dict[str, Path], tls: bool) -> Iterator[int]:
    """An Envoy listening on base+i (TLS or not) that forwards to worker i."""
    base = free_port_block(server.workers)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "relay.yaml"
        config.write_text(relay_config(server.base_port, base, server.workers, certs, tls))
        cmd = [envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart"]
        proc = subprocess.Popen([*cmd, "--log-level", "error"])
        try:
            for i in range(server.workers):
                wait_for_port(base + i)
            yield base
        finally:
            stop_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per row")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=500, help="requests/s of the paced rows")
    args = parser.parse_args()
    secs, conns, rate = args.duration, args.connections, args.rate
    rows: list[tuple[str, str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        signer = Signer()
        jwks = signer.write_jwks(tmp / "jwks.json")
        (tmp / "keys").write_text(f"bench:{API_KEY}\n")
        certs = write_certificates(tmp / "certs")
        token = signer.token(ISSUER, AUDIENCE, lifetime=3600)
        jwt_flags = ["--jwt-jwks-file", str(jwks), "--jwt-issuer", ISSUER]
        jwt_flags += ["--jwt-audiences", AUDIENCE]
        with run_server(build_repository(tmp / "models"), workers=2) as server:

            def grpc_direct(tag: str) -> None:
                rows.append(
                    (f"gRPC direct, shared port{tag}", "max", ghz(server.port, secs, conns, {}))
                )
                rows.append(
                    (
                        f"gRPC direct, shared port{tag}",
                        str(rate),
                        ghz(server.port, secs, conns, {}, rate),
                    )
                )

            grpc_direct("")
            variants: list[tuple[str, list[str], dict[str, str]]] = [
                ("REST via Envoy, no auth", [], {}),
                ("REST via Envoy, JWT (RS256)", jwt_flags, {"authorization": f"Bearer {token}"}),
                ("REST via Envoy, API key", ["--api-keys-file", str(tmp / "keys")],
                 {"x-api-key": API_KEY}),
            ]  # fmt: skip
            for label, flags, headers in variants:
                with run_gateway(server, *flags) as gateway:
                    rows.append((label, "max", wrk(gateway.port, secs, conns, headers)))
                    rows.append((label, str(rate), wrk(gateway.port, secs, conns, headers, rate)))
                    if not flags:
                        grpc_label = "gRPC via Envoy, no auth"
                        rows.append((grpc_label, "max", ghz(gateway.port, secs, conns, {})))
            for tls in (False, True):
                with tls_relay(server, certs, tls) as base:
                    tls_flags = ["--upstream-tls", "--upstream-tls-ca-file", str(certs["ca"])]
                    tls_flags += ["--upstream-tls-server-name", SERVER_NAME]
                    relayed = Server(server.proc, server.port, base, server.workers)
                    with run_gateway(relayed, *(tls_flags if tls else [])) as gateway:
                        label = "REST via Envoy, TLS upstream" if tls else "REST via Envoy, relay"
                        label += " (extra hop)"
                        rows.append((label, "max", wrk(gateway.port, secs, conns, {})))
                        rows.append((label, str(rate), wrk(gateway.port, secs, conns, {}, rate)))
            grpc_direct(" (again)")
    print(f"\n{conns} connections, {secs} s per row, one row per request, 2 workers\n")
    print("| path | offered load (req/s) | RPS | p50 (ms) | p99 (ms) | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, load, r in rows:
        cells = f"{r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']:.0f}"
        print(f"| {label} | {load} | {cells} |")


if __name__ == "__main__":
    main()
