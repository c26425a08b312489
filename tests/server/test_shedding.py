"""Load shedding in the worker: a standing queue is refused fast, probes keep answering."""

from __future__ import annotations

import asyncio
import contextvars
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server import shedding
from server.core import InferenceCore
from server.errors import Overloaded
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.metrics import RequestRecorder
from server.oip_codec import decode_infer_request
from server.repository import Registry
from server.safe_decode import add_servicer
from server.shedding import QUEUED_AT_HEADER, QueueDelayGuard, note_arrival, queued_at
from server.status import STATUS
from server.template import worker_processes
from tests.server.conftest import Server, start_server
from tests.server.modelgen import SLOW_WIDTH, build_slow_model
from tests.server.oip_requests import infer_request, rows
from tests.support import load_models, stop_process

LIMIT = 1 << 22


def test_guard_trips_on_a_standing_queue_only() -> None:
    guard = QueueDelayGuard(0.05)
    guard.observe(lowest=0.001, highest=0.4, samples=9)  # a burst that drained in the window
    assert not guard.overloaded
    guard.observe(lowest=0.06, highest=0.08, samples=9)  # late for the whole window
    assert guard.overloaded
    guard.observe(lowest=0.0, highest=0.06, samples=9)
    assert not guard.overloaded
    # one computation that held the loop for the whole window: one late sample, no queue
    guard.observe(lowest=2.5, highest=2.5, samples=1)
    assert not guard.overloaded
    off = QueueDelayGuard(0.0)
    off.observe(lowest=10.0, highest=10.0, samples=9)
    assert not off.enabled and not off.overloaded


def test_guard_sees_a_blocked_event_loop() -> None:
    async def scenario() -> tuple[bool, bool]:
        guard = QueueDelayGuard(0.02, window=0.3)
        task = asyncio.create_task(guard.run())
        await asyncio.sleep(0.02)
        tripped = False
        for _ in range(60):  # the loop is busy 0.05 s at a time, turn after turn: a queue
            guard.refuse(0.0)  # of requests without a stamp, each judged as it starts
            time.sleep(0.05)
            await asyncio.sleep(0)
            if guard.overloaded:
                tripped = True
                break
        deadline = time.monotonic() + 10
        while guard.overloaded and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # idle again: the next window clears it
        recovered = not guard.overloaded
        task.cancel()
        return tripped, recovered

    tripped, recovered = asyncio.run(scenario())
    assert tripped and recovered


def test_guard_sampler_rests_until_a_request_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window without inference requests puts the sampler to rest (a slow wake-up
    instead of one every few milliseconds); the next request brings it back."""
    naps: list[float] = []
    sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        naps.append(delay)
        await sleep(delay)

    monkeypatch.setattr(shedding.asyncio, "sleep", recorded)

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "the sampler never changed pace"
            await sleep(0.001)

    async def scenario() -> None:
        fast, slow = shedding.SAMPLE_SECONDS, shedding.IDLE_SAMPLE_SECONDS
        # a window of a hundred naps: only a half-second stall could end it after one
        guard = QueueDelayGuard(0.02, window=0.5)
        task = asyncio.create_task(guard.run())
        await until(lambda: guard.idle and naps.count(slow) >= 3)
        first = naps.index(slow)
        assert first >= 2 and set(naps[:first]) == {fast}  # a whole window at full pace
        assert set(naps[first:]) == {slow}  # then it rests, and stays resting
        # the sampler is in a slow nap now; a request wakes it to full pace
        mark = len(naps)
        assert not guard.refuse(0.0)
        await until(lambda: len(naps) > mark)
        assert not guard.idle and naps[mark] == fast
        task.cancel()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def core(model_repo: Path) -> InferenceCore:
    registry = Registry()
    registry.replace(load_models(model_repo, latest=2))
    c = InferenceCore(registry)
    c.ready = True
    return c


def test_overloaded_core_refuses_inference_but_answers_probes(core: InferenceCore) -> None:
    request = decode_infer_request(infer_request(), LIMIT, LIMIT)
    core.queue_guard = QueueDelayGuard(0.05)
    core.queue_guard.overloaded = True
    try:
        with pytest.raises(Overloaded) as info:
            asyncio.run(core.infer(request))
        assert STATUS[info.value.kind] is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("retry-after", "1") in info.value.trailers
        cols = rows(1)
        with pytest.raises(Overloaded):
            asyncio.run(core.predict("flights", "", [{k: v[0] for k, v in cols.items()}]))
        assert core.server_ready() and core.model_ready("flights")
        assert core.model("flights").name == "flights"
        # a request that waited past the bound is refused, one that did not is served
        core.queue_guard = QueueDelayGuard(5.0)
        with pytest.raises(Overloaded):
            asyncio.run(core.infer(request, queued_at=time.time() - 10))
        assert asyncio.run(core.infer(request, queued_at=time.time())).outputs
    finally:
        core.queue_guard = QueueDelayGuard(0.0)
    assert asyncio.run(core.infer(request, queued_at=time.time() - 10)).outputs  # disabled


def test_shed_requests_are_counted_by_model_and_method() -> None:
    recorder = RequestRecorder()
    request = pb.ModelInferRequest(model_name="flights")
    error = Overloaded("busy")
    for _ in range(3):
        recorder.observe(
            "ModelInfer", request, None, grpc.StatusCode.RESOURCE_EXHAUSTED, 0.0, error
        )
    assert dict(recorder._shed) == {("flights", "ModelInfer"): 3}
    assert recorder._counts[("flights", "", "ModelInfer", "RESOURCE_EXHAUSTED")] == 3


# -- a real worker under more work than it can start in time -----------------


@pytest.fixture(scope="module")
def slow_server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("shed-repo")
    shutil.copytree(model_repo / "flights", root / "flights")
    build_slow_model(root / "slow" / "1", layers=60)
    log = tmp_path_factory.mktemp("shed") / "serve.log"
    # every request runs on the event loop (no helper thread): one worker, one queue
    srv = start_server(
        root, log, 1, "--max-queue-delay-ms", "20", "--offload-rows", "1000000", "--no-drift"
    )
    yield srv
    stop_process(srv.proc)


def _shed_total(server: Server) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^pronto_requests_shed_total\{[^}]*model="slow"[^}]*\} (\S+)$', text, re.M
        )
    )


def _worker(server: Server) -> psutil.Process:
    (worker,) = worker_processes(psutil.Process(server.proc.pid))
    return worker


def _wait_stopped(process: psutil.Process) -> None:
    """Until the kernel reports the process stopped."""
    for _ in range(10_000):
        if process.status() == psutil.STATUS_STOPPED:
            return
        time.sleep(0.001)
    pytest.fail("the worker did not stop")


@pytest.mark.integration
def test_overloaded_worker_sheds_fast_and_keeps_answering_probes(slow_server: Server) -> None:
    """Requests that waited past the bound before the worker could start them are refused
    with RESOURCE_EXHAUSTED and ``retry-after``; probes that waited as long are answered.

    No timing assumption: the worker is held with SIGSTOP (as a CPU-starved or paused pod
    is) while the requests queue on its connection, and released only once the clock has
    passed every request's stamp by ten times the bound, so each of them has waited past
    it when the worker reads it, however fast or slow this host is.
    """
    bound = 0.02  # the fixture's --max-queue-delay-ms
    x = np.random.default_rng(0).random((256, SLOW_WIDTH), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    channel = grpc.insecure_channel(slow_server.worker_address(0))
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    assert stub.ModelReady(pb.ModelReadyRequest(name="slow"), timeout=30).ready
    stamps: list[float] = []
    stamped = threading.Semaphore(0)

    def stamp() -> tuple[tuple[str, str], ...]:
        # the stamp Envoy puts on every request as it passes it on, taken just before sending
        now = time.time()
        stamps.append(now)
        stamped.release()
        return ((QUEUED_AT_HEADER, f"{now:.6f}"),)

    def call() -> tuple[str, tuple[tuple[str, str], ...]]:
        try:
            stub.ModelInfer(request, timeout=120, metadata=stamp())
            return "OK", ()
        except grpc.RpcError as exc:
            return exc.code().name, tuple(exc.trailing_metadata() or ())  # type: ignore[attr-defined]

    def serving() -> object:
        check = health_pb2.HealthCheckRequest(service="slow")
        return health.Check(check, timeout=60, metadata=stamp()).status

    def ready() -> object:
        return stub.ModelReady(
            pb.ModelReadyRequest(name="slow"), timeout=60, metadata=stamp()
        ).ready

    def metadata() -> object:
        return stub.ModelMetadata(
            pb.ModelMetadataRequest(name="slow"), timeout=60, metadata=stamp()
        ).name

    worker = _worker(slow_server)
    worker.suspend()
    try:
        _wait_stopped(worker)
        with ThreadPoolExecutor(35) as pool:
            futures = [pool.submit(call) for _ in range(32)]
            # probes queued behind them, stamped alike: health and metadata are never refused
            probes = [pool.submit(probe) for probe in (serving, ready, metadata)]
            for _ in range(len(futures) + len(probes)):
                assert stamped.acquire(timeout=60), "a client thread never sent its request"
            while time.time() < max(stamps) + 10 * bound:
                time.sleep(bound)
            worker.resume()
            results = [f.result() for f in futures]
            answers = [p.result() for p in probes]
        assert [code for code, _ in results] == ["RESOURCE_EXHAUSTED"] * 32
        assert all(("retry-after", "1") in trailers for _, trailers in results)
        assert answers == [health_pb2.HealthCheckResponse.SERVING, True, "slow"]
        # the worker serves again, and counted every refusal once
        refused = len(results)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                stub.ModelInfer(request, timeout=60)
                break
            except grpc.RpcError as exc:  # the loop's lateness signal may still hold briefly
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                refused += 1
        else:
            pytest.fail("the worker still sheds after the load")
        deadline = time.monotonic() + 30
        while _shed_total(slow_server) < refused and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _shed_total(slow_server) == refused
    finally:
        worker.resume()
        channel.close()


def test_queue_stamp_counts_for_first_tries_only() -> None:
    assert queued_at([(QUEUED_AT_HEADER, "1700000000.25")]) == 1700000000.25
    assert queued_at([(QUEUED_AT_HEADER, "12.5"), ("x-envoy-attempt-count", "1")]) == 12.5
    # a retry's stamp includes Envoy's backoff: it says nothing about this worker's queue
    assert queued_at([("x-envoy-attempt-count", "2"), (QUEUED_AT_HEADER, "12.5")]) == 0.0
    assert queued_at([(QUEUED_AT_HEADER, "soon")]) == 0.0
    assert queued_at([]) == 0.0


def test_the_wait_ends_when_the_message_starts_to_be_read() -> None:
    """Parsing a large message is the request's own work: only the time before counts."""
    guard = QueueDelayGuard(30.0)  # far from every case below: no stall can tip one over

    def judged(waited: float, parsing: float) -> bool:
        arrived = time.time() - parsing  # the worker started reading `parsing` s ago
        stamp = arrived - waited  # Envoy passed it on `waited` s before that

        def refuse() -> bool:
            shedding._ARRIVED.set(arrived)
            return guard.refuse(stamp)

        return contextvars.Context().run(refuse)

    assert not judged(waited=0.2, parsing=90.0)  # slow to parse, quick to start: served
    assert judged(waited=45.0, parsing=0.0)  # waited past the bound: refused
    # without an arrival mark (no deserializer ran), the wait ends now
    assert contextvars.Context().run(guard.refuse, time.time() - 45.0)
    assert not contextvars.Context().run(guard.refuse, time.time() - 0.2)
    mark = contextvars.Context()
    mark.run(note_arrival)
    assert abs(mark[shedding._ARRIVED] - time.time()) < 5


def test_each_rpc_is_judged_by_its_own_arrival() -> None:
    """grpc.aio runs the (wrapped) deserializer in the RPC's own task: the handler sees the
    arrival of its own message, never another RPC's."""
    seen: list[float] = []

    class Probe(pb_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: object, context: object) -> pb.ServerLiveResponse:
            seen.append(shedding._ARRIVED.get())
            return pb.ServerLiveResponse(live=True)

    async def scenario() -> list[tuple[float, float]]:
        server = grpc.aio.server()
        add_servicer(pb_grpc.add_GRPCInferenceServiceServicer_to_server, Probe(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        spans = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                live = pb_grpc.GRPCInferenceServiceStub(channel).ServerLive
                for _ in range(3):
                    before = time.time()
                    await live(pb.ServerLiveRequest(), timeout=10)
                    spans.append((before, time.time()))
        finally:
            await server.stop(0)
        return spans

    spans = asyncio.run(scenario())
    assert len(seen) == 3
    for arrived, (before, after) in zip(seen, spans, strict=True):
        assert before <= arrived <= after  # marked during this very call
