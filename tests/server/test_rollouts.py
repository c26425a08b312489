"""Model rollouts on real server processes: shadow, canary, automatic analysis, ghz load.

One server (two workers, fast polling and analysis) serves several copies of the test
model; each test rolls out its own copy, so the tests do not depend on one another.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import onnx
import pytest
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from loadtest.ghz import find_tool
from loadtest.monitor.dashboards import panel_queries
from loadtest.monitor.prometheus import LocalPrometheus, prometheus_config
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import rollout_pb2 as rpb
from server.generated.pronto.v1 import rollout_pb2_grpc as rpb_grpc
from server.rollout_state import read_state
from tests.server.conftest import ROOT, Server, start_server
from tests.server.modelgen import build_version
from tests.server.oip_requests import infer_request, rows
from tests.support import eventually, free_port, stop_process

pytestmark = pytest.mark.integration

MODELS = ("shadowed", "canaried", "broken", "promoted", "loaded", "admin")


def _add_unused_input(folder: Path) -> None:
    """A candidate whose signature changed: it needs an input the callers do not send."""
    model = onnx.load(folder / "model.onnx")
    model.graph.input.append(helper.make_tensor_value_info("EXTRA", TensorProto.FLOAT, [None, 1]))
    onnx.save(model, folder / "model.onnx")


@pytest.fixture(scope="module")
def repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollouts")
    build_version(root, 3, estimator="tree")  # flights/3: another estimator
    for name in MODELS:
        shutil.copytree(model_repo / "flights", root / name, ignore=shutil.ignore_patterns(".*"))
        shutil.copytree(root / "flights" / "3", root / name / "3")
    # the broken candidate waits outside the repository: it is published during its test
    broken = root / ".staged-broken-4"
    shutil.copytree(root / "broken" / "1", broken)
    _add_unused_input(broken)
    shutil.rmtree(root / "flights")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("rollouts-serve") / "serve.log"
    srv = start_server(
        repo, log, 2, "--model-poll-interval", "0.2", "--rollout-analysis-interval", "0.2"
    )
    yield srv
    stop_process(srv.proc)


def rollout_cli(repo: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "pronto_cli", "rollout", *args, "--model-repository", str(repo)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_cli(repo: Path, model: str, candidate: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pronto_cli", "rollout", "wait", model, "--interval", "0.1",
           "--candidate", str(candidate), "--timeout", "60",
           "--model-repository", str(repo)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)


def metrics(server: Server) -> dict[str, list[tuple[dict[str, str], float]]]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(server: Server, name: str, **labels: str) -> float:
    found = metrics(server).get(name, [])
    return sum(v for lab, v in found if all(lab.get(k) == w for k, w in labels.items()))


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def infer(address: str, model: str, ids: list[str], version: str = "") -> list[str]:
    """One ModelInfer per id, many in flight at once; the answering version of each."""
    template = infer_request(rows(1), model=model, version=version)

    async def run() -> list[str]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            limit = asyncio.Semaphore(64)

            async def one(i: str) -> str:
                request = pb.ModelInferRequest()
                request.CopyFrom(template)
                request.id = i
                async with limit:
                    reply = await stub.ModelInfer(request, timeout=10)
                assert not i or reply.id == i
                return str(reply.model_version)

            return list(await asyncio.gather(*(one(i) for i in ids)))

    return asyncio.run(run())


def all_workers_route(server: Server, model: str, version: str) -> Callable[[], bool]:
    """True once every worker has answered some unversioned request with ``version``."""

    def check() -> bool:
        ids = [f"probe-{time.monotonic_ns()}-{i}" for i in range(40)]
        return all(
            version in infer(server.worker_address(w), model, ids) for w in range(server.workers)
        )

    return check


def pinned(server: Server, model: str, version: str) -> Callable[[], bool]:
    """True once every worker answers unversioned requests with ``version`` only."""

    def check() -> bool:
        return all(
            set(infer(server.worker_address(w), model, [""] * 20)) == {version}
            for w in range(server.workers)
        )

    return check


def test_shadow_scores_a_candidate_of_another_estimator(server: Server, repo: Path) -> None:
    rollout_cli(repo, "start", "shadowed", "--candidate", "3", "--mode", "shadow", "--stable", "1")
    compared = ("pronto_rollout_compared_rows_total", {"model": "shadowed", "version": "3"})

    # until each worker has read the state, 3 is the newest version and the default
    wait_until(pinned(server, "shadowed", "1"))
    versions: list[str] = []

    def scored() -> bool:
        for w in range(server.workers):
            versions.extend(infer(server.worker_address(w), "shadowed", [""] * 100))
        return total(server, compared[0], **compared[1]) >= 300

    wait_until(scored)
    # the callers only ever see stable, although versions 2 and 3 are loaded and newer
    assert set(versions) == {"1"}

    # the workers flush on a timer, and a scrape may land between two of a flush's
    # writes: the invariants must hold in some scrape after the traffic stopped
    def consistent() -> None:
        m = metrics(server)

        def of(name: str, **labels: str) -> float:
            found = m.get(name, [])
            return sum(v for lab, v in found if all(lab.get(k) == w for k, w in labels.items()))

        rows_compared = of(compared[0], **compared[1])
        agreed = of("pronto_rollout_agreed_rows_total", model="shadowed", version="3")
        assert 0 < agreed <= rows_compared
        # every compared row has its score difference: one row per request here
        assert of("pronto_rollout_score_difference_count", model="shadowed") == rows_compared
        assert of("pronto_rollout_score_difference_sum", model="shadowed") > 0
        runs = of("pronto_rollout_candidate_latency_seconds_count", model="shadowed", mode="shadow")
        requests = of("pronto_rollout_candidate_requests_total", model="shadowed", mode="shadow")
        assert runs == requests
        assert runs >= rows_compared > 0
        assert of("pronto_rollout_candidate_errors_total", model="shadowed") == 0
        assert of("pronto_rollout_mode", model="shadowed", mode="shadow") == 1

    eventually(consistent, timeout=20, interval=0.1)


def test_canary_share_is_the_weight_and_sticky_per_id(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        admin = rpb_grpc.RolloutServiceStub(channel)
        reply = admin.StartRollout(
            rpb.StartRolloutRequest(
                name="canaried", candidate=2, mode="canary", weight=30, stable=1
            ),
            timeout=10,
        )
    assert (reply.rollout.stable, reply.rollout.candidate, reply.rollout.weight) == (1, 2, 30)
    wait_until(all_workers_route(server, "canaried", "2"))
    ids = [f"c-{i}" for i in range(10_000)]
    half = len(ids) // 2
    started = time.monotonic()
    versions = infer(server.worker_address(0), "canaried", ids[:half]) + infer(
        server.worker_address(1), "canaried", ids[half:]
    )
    elapsed = time.monotonic() - started
    share = versions.count("2") / len(versions)
    assert set(versions) == {"1", "2"}
    assert abs(share - 0.30) <= 0.03, share
    # sticky: the same id gets the same version again, on either worker
    again = infer(server.worker_address(1), "canaried", ids[:2000])
    assert again == versions[:2000]
    # a request that names a version is never rerouted
    canary_ids = [i for i, v in zip(ids, versions, strict=True) if v == "2"][:200]
    assert set(infer(server.address, "canaried", canary_ids, version="1")) == {"1"}
    assert elapsed < 60


def test_broken_candidate_is_aborted_without_client_errors(server: Server, repo: Path) -> None:
    rollout_cli(
        repo, "start", "broken", "--candidate", "4", "--mode", "canary", "--auto",
        "--stable", "1", "--step-seconds", "60", "--min-requests", "20",
    )  # fmt: skip
    # the rollout starts before the version exists, as a deploy job would do it; then the
    # version is published (atomically, as the trainer does)
    waiter = wait_cli(repo, "broken", 4)
    wait_until(pinned(server, "broken", "1"))
    os.rename(repo / ".staged-broken-4", repo / "broken" / "4")
    started = time.monotonic()
    answered: list[str] = []
    batch = 0
    while time.monotonic() - started < 30:
        state = read_state(repo, "broken")
        assert state is not None
        if state.candidate is None:
            break
        ids = [f"b-{batch}-{i}" for i in range(200)]
        answered += infer(server.address, "broken", ids)  # raises on any failed request
        batch += 1
    took = time.monotonic() - started
    state = read_state(repo, "broken")
    assert state is not None and state.candidate is None and state.stable == 1, took
    assert took < 30
    assert waiter.wait(timeout=30) == 1  # `pronto rollout wait`: aborted
    last = state.history[-1]
    assert last.action == "abort" and "error rate" in last.reason
    assert set(answered) == {"1"}  # every answer came from stable, none failed
    wait_until(lambda: total(server, "pronto_rollout_decisions_total", model="broken") >= 1)
    assert total(server, "pronto_rollout_decisions_total", model="broken", decision="abort") == 1
    assert total(server, "pronto_rollout_candidate_errors_total", model="broken") >= 20


def test_healthy_candidate_is_stepped_and_promoted(server: Server, repo: Path) -> None:
    rollout_cli(
        repo, "start", "promoted", "--candidate", "2", "--mode", "canary", "--auto",
        "--stable", "1", "--step-seconds", "0.3", "--min-requests", "10",
    )  # fmt: skip
    waiter = wait_cli(repo, "promoted", 2)
    deadline = time.monotonic() + 30
    batch = 0
    while time.monotonic() < deadline:
        state = read_state(repo, "promoted")
        assert state is not None
        if state.candidate is None:
            break
        infer(server.address, "promoted", [f"p-{batch}-{i}" for i in range(200)])
        batch += 1
    state = read_state(repo, "promoted")
    assert state is not None and state.stable == 2 and state.candidate is None
    assert [(d.action, d.weight) for d in state.history] == [
        ("start", 5.0), ("step", 25.0), ("step", 50.0), ("step", 100.0), ("promote", 0.0)
    ]  # fmt: skip
    assert waiter.wait(timeout=30) == 0  # `pronto rollout wait`: promoted
    wait_until(all_workers_route(server, "promoted", "2"))


def test_admin_service_errors(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        admin = rpb_grpc.RolloutServiceStub(channel)
        cases = [
            (rpb.StartRolloutRequest(name="nope", candidate=2, mode="canary"), "NOT_FOUND"),
            (rpb.StartRolloutRequest(name="admin", candidate=2, mode="blue"), "INVALID_ARGUMENT"),
            (
                rpb.StartRolloutRequest(name="admin", candidate=1, mode="canary", stable=1),
                "FAILED_PRECONDITION",
            ),
            (
                rpb.StartRolloutRequest(name="admin", candidate=2, mode="canary", weight=101),
                "FAILED_PRECONDITION",
            ),
            (
                rpb.StartRolloutRequest(name="admin", candidate=2, mode="canary", min_agreement=2),
                "INVALID_ARGUMENT",
            ),
        ]
        for request, code in cases:
            with pytest.raises(grpc.RpcError) as caught:
                admin.StartRollout(request, timeout=10)
            assert caught.value.code().name == code, (request, caught.value.details())
        with pytest.raises(grpc.RpcError) as caught:
            admin.PromoteRollout(rpb.PromoteRolloutRequest(name="admin"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        status = admin.GetRollout(rpb.GetRolloutRequest(name="admin"), timeout=10).rollout
        assert (status.mode, status.has_candidate) == ("off", False)
    # the CLI speaks the same service with --address
    remote = ("--address", server.address)
    out = rollout_cli(Path("unused"), "start", "admin", "--candidate", "2", "--mode", "shadow",
                      "--stable", "1", "--min-agreement", "0.5", *remote)  # fmt: skip
    assert out.startswith("admin: stable 1, candidate 2 in shadow")
    state = json.loads(rollout_cli(Path("unused"), "status", "admin", "--json", *remote))
    assert state["thresholds"]["min_agreement"] == 0.5 and state["history"][-1]["actor"]
    assert "no rollout in progress" in rollout_cli(Path("unused"), "abort", "admin", *remote)


def test_promote_and_abort_under_ghz_load(server: Server, repo: Path, tmp_path: Path) -> None:
    request = {"name": "loaded", "instances": [{k: v[0] for k, v in rows(1).items()}]}
    cmd = [
        find_tool("ghz"), "--insecure", "--protoset",
        str(ROOT / "gateway" / "generated" / "pronto.pb"),
        "--call", "pronto.v1.PredictionService/Predict", "-c", "4", "--connections", "2",
        "-z", "600s", "--duration-stop", "wait", "-r", "400", "-O", "json",
        "-d", json.dumps(request), server.address,
    ]  # fmt: skip
    # ghz runs until every change has landed, however long that takes on a slow machine;
    # SIGINT then stops it, and it still writes its report
    ghz = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        with grpc.insecure_channel(server.address) as channel:
            admin = rpb_grpc.RolloutServiceStub(channel)
            admin.StartRollout(
                rpb.StartRolloutRequest(name="loaded", candidate=2, mode="canary", weight=50,
                                        stable=1),
                timeout=10,
            )  # fmt: skip
            wait_until(all_workers_route(server, "loaded", "2"))
            admin.PromoteRollout(rpb.PromoteRolloutRequest(name="loaded"), timeout=10)
            wait_until(lambda: set(infer(server.address, "loaded", [""] * 50)) == {"2"})
        rollout_cli(repo, "start", "loaded", "--candidate", "3", "--mode", "canary",
                    "--weight", "50")  # fmt: skip
        wait_until(all_workers_route(server, "loaded", "3"))
        rollout_cli(repo, "abort", "loaded", "--reason", "test")
        wait_until(lambda: set(infer(server.address, "loaded", [""] * 50)) == {"2"})
        assert ghz.poll() is None, "ghz stopped before the changes were made"
        # at least 8 s of load in all (at 400/s), however quickly the changes were made
        time.sleep(max(0.0, started + 8 - time.monotonic()))
        ghz.send_signal(signal.SIGINT)
        out, _ = ghz.communicate(timeout=60)
    finally:
        if ghz.poll() is None:
            ghz.kill()
    report = json.loads(out)
    errors = report.get("errorDistribution") or {}
    # ghz waits for the calls in flight when stopped; closed connections are its own doing
    failed = {m: n for m, n in errors.items() if "closed network connection" not in m}
    assert failed == {}, failed
    assert report["count"] > 1000
    state = read_state(repo, "loaded")
    assert state is not None and state.stable == 2 and state.candidate is None
    assert [d.action for d in state.history] == ["start", "promote", "start", "abort"]


def test_rollout_dashboard_panels_have_data(server: Server, repo: Path) -> None:
    """Every panel of the rollout dashboard, against a real Prometheus scraping the server
    after the rollouts above: "shadowed" still in shadow, "canaried" still at 30%."""
    config = prometheus_config(
        [f"127.0.0.1:{server.metrics_port}"], scrape_interval="1s", evaluation_interval="1s"
    )
    with LocalPrometheus(config, port=free_port()) as prom:
        api = prom.api
        started = time.time()

        def traffic_seen() -> bool:
            for model in ("shadowed", "canaried"):
                infer(server.address, model, [f"d-{time.monotonic_ns()}-{i}" for i in range(50)])
            shadow = api.query("sum(rate(pronto_rollout_compared_rows_total[5s])) > 0")
            canary = api.query(
                'sum(rate(pronto_rollout_candidate_requests_total{mode="canary"}[5s])) > 0'
            )
            return bool(shadow and canary)

        wait_until(traffic_seen, timeout=60)
        empty = []
        for q in panel_queries():
            if q.dashboard != "pronto-rollouts":
                continue
            expr = q.expr.replace("[1m]", "[5s]")  # seconds of data, not minutes

            def answered(expr: str = expr, instant: bool = q.instant) -> bool:
                now = time.time()
                return bool(api.query(expr) if instant else api.query_range(expr, started, now))

            try:
                wait_until(answered, timeout=15)
            except TimeoutError:
                empty.append(f"{q.panel} / {q.ref}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
