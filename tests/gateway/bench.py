"""Side-by-side latency and throughput of the gateway's security options (not a test).

    .venv/bin/python -m tests.gateway.bench --rounds 3 --duration 5 --rate 400

Starts one `pronto serve` (2 workers) and, side by side, one Envoy per variant on the
same machine (idle Envoys cost next to nothing). Then, round after round, drives each
variant in turn for a few seconds: REST with wrk, native gRPC with ghz, one request of
one row each, the same number of keep-alive connections, first as fast as possible,
then paced. Alternating in rounds spreads the machine's background noise over all
variants; the table gives the median of the rounds (and the RPS range). TLS to the
workers goes through a TLS-terminating Envoy in front of each worker's private port
(the server speaks plaintext); the "relay" baseline has the same hop without TLS, so
the difference between the two is TLS alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.launcher import envoy_binary
from gateway.render import PACKAGED_DESCRIPTOR_SET
from loadtest.ghz import find_tool
from loadtest.tokens import Signer
from loadtest.wrk import WrkRun, run_wrk
from tests.gateway.harness import Server, run_gateway, run_server
from tests.gateway.modelgen import MODEL, build_repository, instance
from tests.gateway.tls import SERVER_NAME, relay_config, write_certificates
from tests.support import free_port_block, stop_process, wait_for_port

ISSUER, AUDIENCE, API_KEY = "https://issuer.bench", "pronto", "bench-key-1"


def wrk(
    port: int, seconds: int, conns: int, headers: dict[str, str], rate: int = 0
) -> dict[str, float]:
    """One wrk run through the load tests' body-rotating script, which also holds ``rate``."""
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text(json.dumps({"instances": [instance(3)]}) + "\n")
        run = WrkRun(
            url=f"http://127.0.0.1:{port}",
            path=f"/v1/models/{MODEL}:predict",
            bodies_file=bodies,
            duration_s=seconds,
            connections=conns,
            rate=rate or None,
            headers=headers,
        )
        result = run_wrk(run, Path(tmp), "bench")
    return {
        "rps": result.rps,
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "errors": result.errors,
    }


def ghz(
    port: int, seconds: int, conns: int, metadata: dict[str, str], rate: int = 0
) -> dict[str, float]:
    cmd = [find_tool("ghz"), "--insecure", "--protoset", str(PACKAGED_DESCRIPTOR_SET)]
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


Measure = Callable[[int], dict[str, float]]  # rate (0 = as fast as possible) -> result


def _summary(results: list[dict[str, float]]) -> str:
    rps = [r["rps"] for r in results]
    med = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms")}
    errors = sum(r["errors"] for r in results)
    return (
        f"{med['rps']:.0f} ({min(rps):.0f}–{max(rps):.0f}) | {med['p50_ms']:.2f} | "
        f"{med['p99_ms']:.2f} | {errors:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=400, help="requests/s of the paced rows")
    args = parser.parse_args()
    secs, conns = args.duration, args.connections
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        signer = Signer()
        jwks = signer.write_jwks(tmp / "jwks.json")
        (tmp / "keys").write_text(f"bench:{API_KEY}\n")
        certs = write_certificates(tmp / "certs")
        token = signer.token(ISSUER, AUDIENCE, lifetime=3600)
        jwt_flags = ["--jwt-jwks-file", str(jwks), "--jwt-issuer", ISSUER]
        jwt_flags += ["--jwt-audiences", AUDIENCE]
        tls_flags = ["--upstream-tls", "--upstream-tls-ca-file", str(certs["ca"])]
        tls_flags += ["--upstream-tls-server-name", SERVER_NAME]
        server = stack.enter_context(run_server(build_repository(tmp / "models"), workers=2))
        relayed = {
            tls: Server(
                server.proc, server.port, stack.enter_context(tls_relay(server, certs, tls)), 2
            )
            for tls in (False, True)
        }

        def gateway(target: Server, *flags: str) -> int:
            return stack.enter_context(run_gateway(target, *flags)).port

        open_port = gateway(server)
        variants: list[tuple[str, Measure]] = [
            ("gRPC direct, shared port", lambda r: ghz(server.port, secs, conns, {}, r)),
            ("REST via Envoy, no auth", lambda r: wrk(open_port, secs, conns, {}, r)),
            ("gRPC via Envoy, no auth", lambda r: ghz(open_port, secs, conns, {}, r)),
        ]
        jwt_port = gateway(server, *jwt_flags)
        key_port = gateway(server, "--api-keys-file", str(tmp / "keys"))
        relay_port = gateway(relayed[False])
        tls_port = gateway(relayed[True], *tls_flags)
        auth = {"authorization": f"Bearer {token}"}
        variants += [
            ("REST via Envoy, JWT (RS256)", lambda r: wrk(jwt_port, secs, conns, auth, r)),
            (
                "REST via Envoy, API key",
                lambda r: wrk(key_port, secs, conns, {"x-api-key": API_KEY}, r),
            ),
            ("REST via Envoy, relay (extra hop)", lambda r: wrk(relay_port, secs, conns, {}, r)),
            (
                "REST via Envoy, TLS upstream (extra hop)",
                lambda r: wrk(tls_port, secs, conns, {}, r),
            ),
        ]
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for rate in (0, args.rate):
            for _ in range(args.rounds):
                for label, measure in variants:
                    results.setdefault((label, rate), []).append(measure(rate))
    print(
        f"\n{conns} connections, {args.rounds} rounds of {secs} s, one row per request, 2 workers"
    )
    print("medians of the rounds; RPS range in brackets\n")
    print("| path | offered load (req/s) | RPS | p50 (ms) | p99 (ms) | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (label, rate), runs in results.items():
        print(f"| {label} | {rate or 'max'} | {_summary(runs)} |")


if __name__ == "__main__":
    main()
