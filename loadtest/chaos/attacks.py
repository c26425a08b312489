"""Denial-of-service and exposure attacks on a real stack, at a size chosen by the caller.

Each attack runs against one ``pronto serve`` (two workers) behind one Envoy with API-key
and JWT authentication, while legitimate predictions run alongside, and returns what the
attacker and the legitimate callers got. ``tests/reliability/test_attacks.py`` runs them
small and asserts on the results; ``python -m loadtest.chaos.attacks`` (part of
``make chaos``) runs them larger and prints the figures ``docs/reliability.md`` quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2

from loadtest.chaos.stack import Gateway, Instance, port_block
from pronto_cli.procs import free_port
from pronto_contract.labels import is_sampled
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import prediction_pb2 as ppb

__all__ = [
    "API_KEY",
    "AttackStack",
    "big_batches",
    "compression_bomb",
    "feedback_injection",
    "health_flood",
    "label_injection",
    "slow_headers",
    "unauthenticated_bodies",
]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "loadtest" / "data"
MODEL = "flight-delay"
API_KEY = "k-attack-3c9e71b04d"
ISSUER = "https://issuer.test"
AUDIENCE = "pronto"
PREDICT = "/pronto.v1.PredictionService/Predict"
INFER = "/inference.GRPCInferenceService/ModelInfer"
FEEDBACK = "/pronto.v1.FeedbackService/Feedback"
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
REST_PREDICT = f"/v1/models/{MODEL}:predict"
KEY = (("x-api-key", API_KEY),)


def _instance() -> dict[str, Any]:
    first: dict[str, Any] = json.loads((DATA / "predict.json").read_text())[0]
    return dict(first["instances"][0])


def predict_request(rows: int, name: str = MODEL) -> ppb.PredictRequest:
    request = ppb.PredictRequest(name=name)
    row = json_format.ParseDict(_instance(), struct_pb2.Struct())
    request.instances.extend([row] * rows)
    return request


def rest_predict_body(rows: int, **extra: Any) -> bytes:
    return json.dumps({"instances": [_instance()] * rows, **extra}).encode()


@dataclass
class AttackStack:
    """``pronto serve`` + Envoy (API key and JWT, access log), /metrics on, fixed ports."""

    repository: Path
    folder: Path
    workers: int = 2
    server_extra: dict[str, Any] = field(default_factory=dict)
    gateway_flags: list[str] = field(default_factory=list)
    metrics_port: int = field(default_factory=free_port)
    server: Instance | None = None
    gateway: Gateway | None = None
    jwks: Path | None = None

    def start(self, jwks: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = self.folder / "api-keys"
        keys.write_text(f"tester:{API_KEY}\n")
        base = port_block(self.workers)
        extra = {"metrics_port": self.metrics_port, **self.server_extra}
        self.server = Instance(
            self.repository, self.workers, base, self.folder / "server.log", extra=extra
        )
        flags = ["--api-keys-file", str(keys), "--jwt-jwks-file", str(jwks)]
        flags += ["--jwt-issuer", ISSUER, "--jwt-audiences", AUDIENCE, "--require-auth"]
        flags += ["--access-log", *self.gateway_flags]
        self.gateway = Gateway(base, self.workers, self.folder / "envoy.log", flags=flags)
        self.server.start()
        self.gateway.start()

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.server is not None:
            self.server.stop()

    @property
    def address(self) -> str:
        assert self.gateway is not None
        return self.gateway.address

    @property
    def shared(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    def private(self, index: int = 0) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.base_port + index}"

    def worker_rss(self) -> int:
        """Resident bytes of all worker processes together."""
        assert self.server is not None
        total = 0
        for pid in self.server.worker_pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def envoy_cpu(self) -> float:
        """CPU seconds Envoy (and its launcher's children) used so far."""
        assert self.gateway is not None and self.gateway.proc is not None
        root = psutil.Process(self.gateway.proc.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())


# -- clients -------------------------------------------------------------------------------


async def _unary(
    channel: grpc.aio.Channel,
    method: str,
    body: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
    timeout: float = 10.0,
    compression: grpc.Compression | None = None,
) -> str:
    call = channel.unary_unary(method)
    try:
        await call(body, metadata=metadata, timeout=timeout, compression=compression)
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


def _channel(address: str) -> grpc.aio.Channel:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    # a fresh connection per channel, so that streams spread over several connections
    options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(address, options=options)


async def _legitimate(address: str, count: int, concurrency: int = 8) -> Counter[str]:
    """``count`` one-row predictions with the API key; statuses."""
    body = predict_request(1).SerializeToString()
    result: Counter[str] = Counter()
    async with _channel(address) as channel:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                result[await _unary(channel, PREDICT, body, KEY)] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return result


def rest(
    port: int,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh connection; the body is written from a thread while
    the reply is read (Envoy may answer before it has read the body)."""
    method, path = target.split(" ", 1)
    all_headers = {"host": "127.0.0.1", "content-type": "application/json", **(headers or {})}
    all_headers |= {"content-length": str(len(body)), "connection": "close"}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in all_headers.items()
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def write() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(head.encode() + b"\r\n" + body)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                reply += chunk
        writer.join(timeout=timeout)
    status = int(reply.split(b"\r\n", 1)[0].split()[1])
    return status, reply.split(b"\r\n\r\n", 1)[-1]


# -- attacks -------------------------------------------------------------------------------


def health_flood(stack: AttackStack, streams: int, checks: int, legit: int) -> dict[str, Any]:
    """Anonymous Health/Watch streams and Health/Check calls on a few connections, with
    legitimate predictions alongside."""

    async def run() -> dict[str, Any]:
        watch_body = health_pb2.HealthCheckRequest().SerializeToString()
        check_body = watch_body
        channels = [_channel(stack.address) for _ in range(4)]
        watch_codes: Counter[str] = Counter()
        check_codes: Counter[str] = Counter()

        async def watch(channel: grpc.aio.Channel) -> None:
            call = channel.unary_stream(WATCH)(watch_body, timeout=5)
            try:
                async for _ in call:
                    pass
                watch_codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                watch_codes[exc.code().name] += 1

        async def check(channel: grpc.aio.Channel) -> None:
            check_codes[await _unary(channel, CHECK, check_body, timeout=5)] += 1

        try:
            start = time.monotonic()
            attack = [watch(channels[i % 4]) for i in range(streams)]
            attack += [check(channels[i % 4]) for i in range(checks)]
            attacked = asyncio.gather(*attack)
            good = await _legitimate(stack.address, legit)
            await attacked
            seconds = time.monotonic() - start
        finally:
            for channel in channels:
                await channel.close()
        return {
            "watch": dict(watch_codes),
            "check": dict(check_codes),
            "legit": dict(good),
            "seconds": round(seconds, 2),
        }

    return asyncio.run(run())


def _bomb(inflated_bytes: int) -> bytes:
    """A ModelInfer message of ``inflated_bytes`` of zeros; gzip makes it ~1000x smaller."""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.raw_input_contents.append(bytes(inflated_bytes))
    return request.SerializeToString()


def compression_bomb(stack: AttackStack, inflated_mb: int, count: int) -> dict[str, Any]:
    """gzip-encoded gRPC messages that inflate to ``inflated_mb`` MB, through Envoy with a
    key and on the shared port without one; then legitimate predictions."""
    body = _bomb(inflated_mb * 2**20)
    compressed = len(gzip.compress(body, 6))
    rss_before = stack.worker_rss()

    async def run() -> tuple[Counter[str], Counter[str]]:
        via_envoy: Counter[str] = Counter()
        direct: Counter[str] = Counter()
        gz = grpc.Compression.Gzip
        async with _channel(stack.address) as a, _channel(stack.shared) as b:
            for _ in range(count):
                via_envoy[await _unary(a, INFER, body, KEY, compression=gz)] += 1
                direct[await _unary(b, INFER, body, compression=gz)] += 1
        return via_envoy, direct

    via_envoy, direct = asyncio.run(run())
    legit = asyncio.run(_legitimate(stack.address, 50))
    return {
        "compressed_bytes": compressed,
        "inflated_mb": inflated_mb,
        "via_envoy": dict(via_envoy),
        "direct": dict(direct),
        "legit": dict(legit),
        "rss_growth_mb": round((stack.worker_rss() - rss_before) / 2**20, 1),
    }


def label_injection(stack: AttackStack, names: int, long_name_bytes: int) -> dict[str, Any]:
    """Requests naming made-up models, over gRPC (decodable or not) and REST (predict and
    infer), and one very long name."""
    assert stack.gateway is not None
    port = stack.gateway.listen
    size_before = len(stack.metrics())
    other_before = _other_requests(stack.metrics())

    async def run() -> Counter[str]:
        codes: Counter[str] = Counter()
        async with _channel(stack.address) as channel:
            for i in range(names):
                name = f"made-up-{i}"
                bad = pb.ModelInferRequest(model_name=name, model_version=str(i))
                bad.inputs.add(name="x", datatype="FP32", shape=[1, 1])
                bad.raw_input_contents.append(b"\x00")  # wrong length: fails decoding
                codes[await _unary(channel, INFER, bad.SerializeToString(), KEY)] += 1
                unknown = predict_request(1, name).SerializeToString()
                codes[await _unary(channel, PREDICT, unknown, KEY)] += 1
            long = pb.ModelInferRequest(model_name="x" * long_name_bytes)
            codes[await _unary(channel, INFER, long.SerializeToString(), KEY)] += 1
            codes[await _unary(channel, PREDICT, predict_request(1).SerializeToString(), KEY)] += 1
        return codes

    codes = asyncio.run(run())
    key = {"x-api-key": API_KEY}
    rest_codes: Counter[int] = Counter()
    for i in range(names):
        name = f"made-up-rest-{i}"
        rest_codes[rest(port, f"POST /v1/models/{name}:predict", rest_predict_body(1), key)[0]] += 1
        rest_codes[rest(port, f"POST /v2/models/{name}/infer", REST_INFER_BODY, key)[0]] += 1
    # every request above but the last gRPC one is counted under the one bounded label;
    # the workers flush counters to /metrics on a timer: wait until all of them show
    sent = 4 * names + 1
    _wait_for(lambda: _other_requests(stack.metrics()) - other_before >= sent)
    text = stack.metrics()
    series = sum(1 for line in text.splitlines() if line.startswith("pronto_"))
    return {
        "codes": dict(codes),
        "rest_codes": dict(rest_codes),
        "other_requests": _other_requests(text) - other_before,
        "metrics_bytes_before": size_before,
        "metrics_bytes_after": len(text),
        "pronto_series": series,
        "made_up_names_in_metrics": sum(
            f'"made-up-{i}"' in text or f'"made-up-rest-{i}"' in text for i in range(names)
        ),
    }


#: a well-formed REST ``ModelInfer`` body (the model it names is in the path)
_REST_TENSOR = {"name": "x", "datatype": "FP32", "shape": [1, 1]}
REST_INFER_BODY = json.dumps(
    {"inputs": [{**_REST_TENSOR, "contents": {"fp32_contents": [1.0]}}]}
).encode()


def _samples(text: str, family: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (dict(s.labels), s.value)
        for f in text_string_to_metric_families(text)
        if f.name == family
        for s in f.samples
        if s.name == f"{family}_total"
    ]


def _other_requests(text: str) -> float:
    """Requests counted under the bounded label of unknown models."""
    return sum(v for labels, v in _samples(text, "pronto_requests") if labels["model"] == "_other")


def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.2)


def unauthenticated_bodies(
    stack: AttackStack, callers: int, rows: int, rounds: int
) -> dict[str, Any]:
    """Callers without credentials posting large REST bodies (and an unknown field, which
    the JSON guard would answer with a schema error); legitimate predictions alongside."""
    assert stack.gateway is not None
    port = stack.gateway.listen
    big = rest_predict_body(rows)
    with_unknown = rest_predict_body(rows, surprise=1)
    statuses: Counter[int] = Counter()
    bodies: set[bytes] = set()
    lock = threading.Lock()

    def attacker() -> None:
        for i in range(rounds):
            status, reply = rest(port, f"POST {REST_PREDICT}", with_unknown if i % 2 else big)
            with lock:
                statuses[status] += 1
                bodies.add(reply)

    cpu_before = stack.envoy_cpu()
    threads = [threading.Thread(target=attacker) for _ in range(callers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    legit = asyncio.run(_legitimate(stack.address, 50))
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    sent = callers * rounds
    cpu_ms = (stack.envoy_cpu() - cpu_before) * 1000 / sent
    return {
        "body_bytes": len(big),
        "statuses": dict(statuses),
        "legit": dict(legit),
        "envoy_cpu_ms_per_request": round(cpu_ms, 2),
        "seconds": round(seconds, 2),
        "leaks_schema": any(b"surprise" in b for b in bodies),
    }


def slow_headers(stack: AttackStack, connections: int, timeout: float) -> dict[str, Any]:
    """Connections that trickle header bytes and never finish; legitimate requests alongside.
    Returns how long Envoy kept the slow connections open."""
    assert stack.gateway is not None
    port = stack.gateway.listen
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.sendall(f"POST {REST_PREDICT} HTTP/1.1\r\nhost: x\r\n".encode())
        socks.append(sock)
    start = time.monotonic()
    open_socks = list(socks)
    closed_after: list[float] = []

    def trickle() -> None:
        while open_socks and time.monotonic() - start < timeout:
            for sock in list(open_socks):
                try:
                    sock.sendall(b"x")
                    sock.setblocking(False)
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        data = None
                    sock.setblocking(True)
                    if data is not None:  # a reply (408) or EOF: Envoy gave up on it
                        raise ConnectionResetError
                except OSError:
                    open_socks.remove(sock)
                    closed_after.append(time.monotonic() - start)
            time.sleep(0.2)

    thread = threading.Thread(target=trickle)
    thread.start()
    legit = asyncio.run(_legitimate(stack.address, 50))
    thread.join()
    for sock in socks:
        sock.close()
    return {
        "connections": connections,
        "closed": len(closed_after),
        "still_open": len(open_socks),
        "legit": dict(legit),
        "max_seconds_open": round(max(closed_after, default=0.0), 2),
    }


def infer_request(rows: int) -> pb.ModelInferRequest:
    """A ModelInfer request of ``rows`` rows with every tensor in ``raw_input_contents``:
    about 70 bytes a row, so that 200,000 rows fit under the 16 MiB message cap (the same
    rows as a ``Predict`` message of structs would not)."""
    first = json.loads((DATA / "oip.json").read_text())[0]
    template = json_format.ParseDict(first, pb.ModelInferRequest())
    request = pb.ModelInferRequest(model_name=template.model_name)
    request.outputs.extend(template.outputs)
    for t in template.inputs:
        request.inputs.add(name=t.name, datatype=t.datatype, shape=[rows, 1])
        if t.datatype == "BYTES":
            (item,) = t.contents.bytes_contents
            one = struct.pack("<I", len(item)) + item
        else:
            (value,) = t.contents.fp32_contents
            one = struct.pack("<f", value)
        request.raw_input_contents.append(one * rows)
    return request


def big_batches(
    stack: AttackStack, rows: list[int], concurrent: list[int] | None = None
) -> dict[str, Any]:
    """One ModelInfer batch of each of ``rows`` in turn on the same connection, then the
    ``concurrent`` batches all at once; worker RSS after each step."""
    results: dict[str, Any] = {"rss_start_mb": round(stack.worker_rss() / 2**20, 1)}

    async def one(channel: grpc.aio.Channel, n: int) -> str:
        body = infer_request(n).SerializeToString()
        return await _unary(channel, INFER, body, KEY, timeout=60)

    async def run() -> None:
        async with _channel(stack.address) as channel:
            for i, n in enumerate(rows):
                code = await one(channel, n)
                settled = await _settled_rss(stack)
                results[f"batch{i}"] = {"rows": n, "code": code, "rss_mb": settled}
        if concurrent:
            # one connection each, so that Envoy may spread them over the workers
            channels = [_channel(stack.address) for _ in concurrent]
            try:
                pairs = zip(channels, concurrent, strict=True)
                codes = await asyncio.gather(*(one(c, n) for c, n in pairs))
            finally:
                for c in channels:
                    await c.close()
            results["concurrent"] = {
                "rows": concurrent,
                "codes": list(codes),
                "rss_mb": await _settled_rss(stack),
            }

    asyncio.run(run())
    results["legit"] = dict(asyncio.run(_legitimate(stack.address, 20)))
    return results


#: how often a worker hands freed memory back (``AdmissionGuard.run_trimmer`` in the worker)
TRIM_INTERVAL = 1.0


async def _settled_rss(stack: AttackStack, timeout: float = 6.0) -> float:
    """Worker RSS in MB once it has stopped falling, or after ``timeout``.

    A worker returns freed memory 50 ms after a large reply and on its trimmer's tick
    (every :data:`TRIM_INTERVAL`); neither is visible from outside but as RSS falling. So
    RSS is read every 0.1 s and counts as settled once it has not fallen by more than
    1 MiB over a window longer than one trimmer period: a trim still to come would have
    come within it."""
    window = TRIM_INTERVAL + 0.2
    deadline = time.monotonic() + timeout
    reads: list[tuple[float, int]] = [(time.monotonic(), stack.worker_rss())]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = time.monotonic()
        reads.append((now, stack.worker_rss()))
        start = next(i for i, (t, _) in enumerate(reads) if t >= now - window)
        if start > 0:  # the reads span a whole window
            span = [r for _, r in reads[start - 1 :]]
            if span[-1] >= max(span) - 2**20:
                return round(span[-1] / 2**20, 1)
    return round(reads[-1][1] / 2**20, 1)


def feedback_injection(stack: AttackStack, names: int, long_name_bytes: int) -> dict[str, Any]:
    """Label feedback for made-up models over gRPC and REST, each naming an id outside the
    capture sample (acknowledged without an index lookup), and one very long name. The
    stack must run with a capture directory and a sample rate below 1."""
    assert stack.gateway is not None
    rate = float(stack.server_extra["capture_sample_rate"])
    port = stack.gateway.listen
    gen = (pid for pid in (f"fb-{i}" for i in itertools.count()) if not is_sampled(pid, rate))
    unsampled = [next(gen) for _ in range(2 * names + 1)]
    size_before = len(stack.metrics())
    other_before = _other_unsampled(stack.metrics())

    def request(name: str, pid: str) -> bytes:
        return fpb.FeedbackRequest(
            name=name, feedback=[fpb.LabeledPrediction(id=pid, labels=["1"])]
        ).SerializeToString()

    async def run() -> Counter[str]:
        codes: Counter[str] = Counter()
        async with _channel(stack.address) as channel:
            for i in range(names):
                body = request(f"made-up-fb-{i}", unsampled[i])
                codes[await _unary(channel, FEEDBACK, body, KEY)] += 1
            body = request("x" * long_name_bytes, unsampled[-1])
            codes[await _unary(channel, FEEDBACK, body, KEY)] += 1
        return codes

    codes = asyncio.run(run())
    key = {"x-api-key": API_KEY}
    rest_codes: Counter[int] = Counter()
    for i in range(names):
        body = json.dumps({"feedback": [{"id": unsampled[names + i], "labels": ["1"]}]})
        target = f"POST /v1/models/made-up-fbr-{i}:feedback"
        rest_codes[rest(port, target, body.encode(), key)[0]] += 1
    sent = 2 * names + 1
    _wait_for(lambda: _other_unsampled(stack.metrics()) - other_before >= sent)
    text = stack.metrics()
    return {
        "codes": dict(codes),
        "rest_codes": dict(rest_codes),
        "other_unsampled": _other_unsampled(text) - other_before,
        "metrics_bytes_before": size_before,
        "metrics_bytes_after": len(text),
        "made_up_names_in_metrics": sum(
            f'"made-up-fb-{i}"' in text or f'"made-up-fbr-{i}"' in text for i in range(names)
        ),
    }


def _other_unsampled(text: str) -> float:
    samples = _samples(text, "pronto_feedback_unsampled")
    return sum(v for labels, v in samples if labels["model"] == "_other")


#: the sizes ``make chaos`` uses (the tests use smaller ones)
HEAVY: dict[str, dict[str, Any]] = {
    "health_flood": {"streams": 3000, "checks": 3000, "legit": 500},
    "compression_bomb": {"inflated_mb": 256, "count": 2},
    "label_injection": {"names": 1000, "long_name_bytes": 1_000_000},
    "feedback_injection": {"names": 1000, "long_name_bytes": 1_000_000},
    "unauthenticated_bodies": {"callers": 8, "rows": 25_000, "rounds": 8},
    "slow_headers": {"connections": 1000, "timeout": 20.0},
    # 170,000 rows pass the default bound of 100,000 rows in flight; two 60,000-row
    # batches at once pass it where Envoy sends both to one worker
    "big_batches": {"rows": [80_000, 170_000] + [80_000] * 6, "concurrent": [60_000, 60_000]},
}

#: ``--small``: a quick run of every attack (with :data:`SMALL_ROWS_IN_FLIGHT`)
SMALL: dict[str, dict[str, Any]] = {
    "health_flood": {"streams": 200, "checks": 200, "legit": 50},
    "compression_bomb": {"inflated_mb": 32, "count": 2},
    "label_injection": {"names": 50, "long_name_bytes": 100_000},
    "feedback_injection": {"names": 50, "long_name_bytes": 100_000},
    "unauthenticated_bodies": {"callers": 2, "rows": 5_000, "rounds": 2},
    "slow_headers": {"connections": 50, "timeout": 15.0},
    "big_batches": {"rows": [10_000, 25_000, 10_000], "concurrent": [12_000, 12_000]},
}
SMALL_ROWS_IN_FLIGHT = 20_000

ATTACKS: dict[str, Callable[..., dict[str, Any]]] = {
    "health_flood": health_flood,
    "compression_bomb": compression_bomb,
    "label_injection": label_injection,
    "feedback_injection": feedback_injection,
    "unauthenticated_bodies": unauthenticated_bodies,
    "slow_headers": slow_headers,
    "big_batches": big_batches,
}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from loadtest.chaos.stack import prepare_repository
    from loadtest.tokens import Signer

    parser = argparse.ArgumentParser(prog="python -m loadtest.chaos.attacks", description=__doc__)
    parser.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "attacks")
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument(
        "--small",
        action="store_true",
        help=f"small sizes and a bound of {SMALL_ROWS_IN_FLIGHT} rows in flight: a quick check",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    repository = args.model_repository or prepare_repository(args.out / "train")
    out = args.out.resolve()
    # capture on (for the feedback attack) at a low sample rate; the default header
    # timeout (10 s) on the slow-header connections, defaults elsewhere
    extra: dict[str, Any] = {"capture_dir": out / "capture", "capture_sample_rate": 0.01}
    if args.small:
        extra["max_rows_in_flight"] = SMALL_ROWS_IN_FLIGHT
    sizes = SMALL if args.small else HEAVY
    stack = AttackStack(repository.resolve(), out / "stack", server_extra=extra)
    results: dict[str, Any] = {}
    try:
        stack.start(Signer().write_jwks(out / "jwks.json"))
        for name in args.attacks:
            print(f"attack: {name} ...", flush=True)
            started = time.monotonic()
            results[name] = ATTACKS[name](stack, **sizes[name])
            results[name]["wall_s"] = round(time.monotonic() - started, 1)
            print(json.dumps(results[name]), flush=True)
    finally:
        stack.stop()
    path = args.out / "attacks.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")
    failed = [n for n, r in results.items() if "legit" in r and set(r["legit"]) != {"OK"}]
    if failed:
        print(f"FAILED: legitimate requests failed during {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
