"""Label feedback: validation in process; gRPC, REST through Envoy and live quality on real
processes, with labels sent to a different worker than the one that served."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from pronto_contract import Manifest
from pronto_contract.labels import LabelStore, is_sampled
from server.errors import InvalidInput, ProntoError
from server.feedback import FeedbackCore, FeedbackDisabled, PredictionNotFound
from server.feedback_peers import FeedbackPeers, PeersUnavailable
from server.generated.pronto.v1 import feedback_pb2 as fpb
from server.generated.pronto.v1 import feedback_pb2_grpc as fpb_grpc
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.settings import ServeSettings, parse_peers
from tests.gateway import harness
from tests.server.conftest import Server, start_server
from tests.server.modelgen import sample_rows
from tests.server.oip_requests import predict_request, rows
from tests.support import free_port, stop_process

MANIFEST = Manifest.parse({"metrics": {"positive_class": "1", "accuracy": 0.8, "f1": 0.5}})


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    store = LabelStore(tmp_path)
    store.create()
    store.add_model("m", "1", ["0", "1"], MANIFEST)
    now = time.time()
    store.add_predictions(
        [
            ("a", 0, "m", "1", now, "1", 0.9),
            ("b", 0, "m", "1", now, "0", 0.2),
            ("b", 1, "m", "1", now, "1", 0.7),
        ]
    )
    store.close()
    return tmp_path


def _feedback(core: FeedbackCore, name: str, entries: list) -> tuple[int, int, int]:
    return asyncio.run(core.feedback(name, entries))


def test_labels_join_by_id_and_row(store_dir: Path) -> None:
    core = FeedbackCore(store_dir, 0.01)
    assert _feedback(core, "m", [("a", ["0"]), ("b", ["0", "1"])]) == (2, 3, 0)
    core.close()
    labeled = LabelStore(store_dir).labeled("m", "1", 0, 10)
    assert sorted(labeled) == [("0", 0.2, "0"), ("1", 0.7, "1"), ("1", 0.9, "0")]


@pytest.mark.parametrize(
    ("name", "entries", "error", "reason"),
    [
        ("m", [("zzz", ["1"])], PredictionNotFound, "unknown_id"),
        ("other", [("a", ["1"])], PredictionNotFound, "unknown_id"),
        ("m", [("b", ["1"])], InvalidInput, "label_count"),
        ("m", [("a", ["yes"])], InvalidInput, "label_class"),
        ("m", [("a", [])], InvalidInput, "label_count"),
        ("m", [("a", ["1"]), ("a", ["0"])], InvalidInput, "duplicate_id"),
        ("m", [("", ["1"])], InvalidInput, "id"),
        ("m", [], InvalidInput, "feedback"),
        ("", [("a", ["1"])], InvalidInput, "feedback"),
    ],
)
def test_bad_feedback_writes_nothing(
    store_dir: Path, name: str, entries: list, error: type[ProntoError], reason: str
) -> None:
    core = FeedbackCore(store_dir, 0.01)
    # a good entry first: all or nothing
    good = ("a", ["0"]) if any(pid == "b" for pid, _ in entries) else ("b", ["0", "0"])
    with pytest.raises(error) as err:
        _feedback(core, name, [good, *entries] if entries else entries)
    core.close()
    assert err.value.reason == reason
    assert LabelStore(store_dir).labeled("m", "1", 0, 10) == []


def test_unsampled_predictions_are_acknowledged_not_stored(store_dir: Path) -> None:
    rate = 0.95
    assert is_sampled("a", rate) and is_sampled("b", rate)  # the stored ones
    outside = next(f"x{i}" for i in range(100) if not is_sampled(f"x{i}", rate))
    inside = next(f"y{i}" for i in range(100) if is_sampled(f"y{i}", rate))
    core = FeedbackCore(store_dir, 0.01, sample_rate=rate)
    assert _feedback(core, "m", [("a", ["1"]), (outside, ["1", "0"])]) == (1, 1, 1)
    with pytest.raises(PredictionNotFound):  # sampled, so it should be in the index
        _feedback(core, "m", [(inside, ["1"])])
    core.close()


class _Counters:
    """Stand-in for the feedback metric families: label values seen, per family."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {"labels": [], "unsampled": [], "rejected": []}
        for family in self.seen:
            setattr(self, family, self._family(family))

    def _family(self, family: str) -> object:
        seen = self.seen[family]

        class Family:
            def labels(self, value: str) -> object:
                seen.append(value)
                return type("Child", (), {"inc": lambda self, n=1: None})()

        return Family()


def test_metric_labels_of_feedback_are_bounded(store_dir: Path) -> None:
    rate = 0.5
    outside = [f"x{i}" for i in range(100) if not is_sampled(f"x{i}", rate)][:3]
    metrics = _Counters()
    core = FeedbackCore(
        store_dir, 0.01, metrics, rate, model_label=lambda n: n if n == "m" else "_other"
    )
    # an unsampled id is acknowledged without a lookup, whatever model it names
    assert _feedback(core, "made-up", [(outside[0], ["1"])]) == (0, 0, 1)
    assert _feedback(core, "m" * 10_000, [(outside[1], ["1"])]) == (0, 0, 1)
    assert _feedback(core, "m", [(outside[2], ["1"])]) == (0, 0, 1)
    core.close()
    assert metrics.seen["unsampled"] == ["_other", "_other", "m"]
    assert set(metrics.seen["labels"]) == {"_other", "m"}
    # without a registry to consult, values are cut short
    plain = FeedbackCore(store_dir, 0.01, metrics, rate)
    _feedback(plain, "y" * 10_000, [(outside[0], ["1"])])
    plain.close()
    assert metrics.seen["unsampled"][-1] == "y" * 64


def test_feedback_without_capture_dir() -> None:
    with pytest.raises(FeedbackDisabled):
        _feedback(FeedbackCore(None, 0.01), "m", [("a", ["1"])])


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("", []),
        ("pronto-peers.ns.svc:50051", [("pronto-peers.ns.svc", 50051)]),
        ("a:1, [::1]:2 ,", [("a", 1), ("::1", 2)]),
    ],
)
def test_peer_list_parses(spec: str, parsed: list[tuple[str, int]]) -> None:
    assert parse_peers(spec) == parsed
    assert ServeSettings(feedback_peers=spec).feedback_peers == spec


@pytest.mark.parametrize("spec", ["nohost", "a:", ":1", "a:http", "a:70000"])
def test_bad_peer_list_is_refused_at_startup(spec: str) -> None:
    with pytest.raises(ValidationError, match="is not host:port"):
        ServeSettings(feedback_peers=spec)


def test_a_peer_name_that_does_not_resolve_makes_unknown_ids_retryable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_dns(*args: object, **kwargs: object) -> list[object]:
        raise OSError("Name or service not known")

    async def run() -> None:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
        peers = FeedbackPeers([("pronto-peers.ns.svc", 50051)])
        assert await peers.addresses() == []
        with pytest.raises(PeersUnavailable, match="did not answer"):
            await peers.locate("m", [("a", ["1"])])

    asyncio.run(run())


# -- real processes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop_server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("feedback")
    srv = start_server(
        model_repo, base / "serve.log", 2,
        "--capture-dir", str(base / "capture"), "--capture-sample-rate", "1",
        "--capture-flush-interval", "0.2", "--quality-refresh-seconds", "0",
    )  # fmt: skip
    yield srv
    stop_process(srv.proc)


def _scrape(server: Server) -> dict[tuple[str, ...], float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(f"{k}={v}" for k, v in s.labels.items()))] = s.value
    return out


def _quality(server: Server, version: str, source: str) -> dict[str, float]:
    out = {}
    for key, value in _scrape(server).items():
        wanted = ("model=flights", f"version={version}", f"source={source}")
        if key[0] == "pronto_model_quality" and all(w in key for w in wanted):
            out[next(k for k in key if k.startswith("metric="))[7:]] = value
    return out


@pytest.mark.integration
def test_quality_from_labels_equals_sklearn(loop_server: Server) -> None:
    rng = np.random.default_rng(5)
    cols = sample_rows(60, seed=11)
    served: list[tuple[str, list[str], list[float]]] = []
    with grpc.insecure_channel(loop_server.worker_address(0)) as ch:
        predict = ppb_grpc.PredictionServiceStub(ch).Predict
        for start in range(0, 60, 3):  # multi-row predictions
            reply = predict(
                predict_request({k: v[start : start + 3] for k, v in cols.items()}), timeout=10
            )
            scores = [p.probabilities["1"] for p in reply.predictions]
            served.append((reply.id, [p.label for p in reply.predictions], scores))
    truth = [[str(int(rng.random() < s)) for s in scores] for _, _, scores in served]
    # labels go to the other worker: the index is shared
    with grpc.insecure_channel(loop_server.worker_address(1)) as ch:
        feedback = fpb_grpc.FeedbackServiceStub(ch).Feedback
        labeled = fpb.FeedbackRequest(
            name="flights",
            feedback=[
                fpb.LabeledPrediction(id=pid, labels=labels)
                for (pid, _, _), labels in zip(served, truth, strict=True)
            ],
        )
        # the writer indexes predictions on its timer and the server waits for it a
        # moment; a host stalled past that answers NOT_FOUND, and nothing was written
        # (feedback is all or nothing): send again
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = feedback(labeled, timeout=10)
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
        assert (reply.predictions, reply.labels) == (20, 60)
        first = served[0][0]
        for bad, code in [
            (fpb.LabeledPrediction(id="never-served", labels=["1"]), grpc.StatusCode.NOT_FOUND),
            (fpb.LabeledPrediction(id=first, labels=["1"]), grpc.StatusCode.INVALID_ARGUMENT),
            (
                fpb.LabeledPrediction(id=first, labels=["1", "0", "maybe"]),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                feedback(fpb.FeedbackRequest(name="flights", feedback=[bad]), timeout=10)
            assert err.value.code() == code, err.value.details()

    y = [v for labels in truth for v in labels]
    pred = [v for _, labels, _ in served for v in labels]
    score = [v for _, _, scores in served for v in scores]
    expected = {
        "accuracy": accuracy_score(y, pred),
        "precision": precision_score(y, pred, pos_label="1", zero_division=0),
        "recall": recall_score(y, pred, pos_label="1", zero_division=0),
        "f1": f1_score(y, pred, pos_label="1", zero_division=0),
        "roc_auc": roc_auc_score([int(v) for v in y], score),
    }
    assert _quality(loop_server, "2", "labels") == pytest.approx(expected, abs=1e-9)
    estimated = _quality(loop_server, "2", "estimated")
    assert set(estimated) == set(expected) and 0 < estimated["accuracy"] <= 1

    deadline = time.monotonic() + 10
    while True:  # worker counters reach /metrics on the flush timer
        metrics = _scrape(loop_server)
        rejected = metrics.get(("pronto_feedback_rejected_total", "reason=unknown_id"), 0)
        if rejected >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rejected == 1
    assert metrics[("pronto_feedback_rejected_total", "reason=label_count")] == 1
    assert metrics[("pronto_feedback_rejected_total", "reason=label_class")] == 1
    assert metrics[("pronto_feedback_labels_total", "model=flights")] == 60
    assert sum(v for k, v in metrics.items() if k[0] == "pronto_capture_records_total") > 0


@pytest.mark.integration
def test_feedback_rest_through_envoy(loop_server: Server) -> None:
    upstream = harness.Server(
        loop_server.proc, loop_server.port, loop_server.base_port, loop_server.workers
    )
    with harness.run_gateway(upstream) as gw:
        instance = {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 11, "DIA": 3}
        predicted = harness.request(
            gw, "POST", "/v1/models/flights:predict", {"instances": [instance, instance]}
        )
        assert predicted.status == 200, predicted.body
        pid = predicted.body["id"]
        assert pid
        mine = harness.request(
            gw, "POST", "/v1/models/flights:predict", {"instances": [instance], "id": "rest-7"}
        )
        assert mine.body["id"] == "rest-7"

        ok = harness.request(
            gw,
            "POST",
            "/v1/models/flights:feedback",
            {"feedback": [{"id": pid, "labels": ["1", "0"]}, {"id": "rest-7", "labels": ["1"]}]},
        )
        assert ok.status == 200, ok.body
        assert ok.body == {"predictions": "2", "labels": "3", "unsampled": "0"}  # int64: string

        for body, status in [
            ({"feedback": [{"id": "nope", "labels": ["1"]}]}, 404),
            ({"feedback": [{"id": pid, "labels": ["1"]}]}, 400),
            ({"feedback": [{"id": pid, "labels": ["1", "2"]}]}, 400),
            ({"feedback": []}, 400),
            ({"feedback": [{"id": pid, "labels": "1"}]}, 400),
            ({"feedbacks": []}, 400),
        ]:
            reply = harness.request(gw, "POST", "/v1/models/flights:feedback", body)
            assert reply.status == status, (body, reply.body)
            assert isinstance(reply.body, dict) and reply.body.get("message"), reply.body


# -- labels for predictions another pod served ------------------------------------------------


@pytest.fixture(scope="module")
def pods(
    model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server, Path]]:
    """Two servers, each with its own index, peers of each other (the last test of this
    file stops the first)."""
    base = tmp_path_factory.mktemp("peers")
    ports = [free_port(), free_port()]
    peers = ",".join(f"localhost:{p}" for p in ports)
    started: list[Server] = []
    try:
        for i in range(2):
            started.append(
                start_server(
                    model_repo,
                    base / f"serve-{i}.log",
                    1,
                    "--capture-dir",
                    str(base / f"capture-{i}"),
                    "--capture-sample-rate",
                    "1",
                    "--capture-flush-interval",
                    "0.2",
                    "--feedback-peers",
                    peers,
                    port=ports[i],
                )
            )
        yield started[0], started[1], base
    finally:
        for srv in started:
            stop_process(srv.proc)


def _predict_ids(server: Server, n: int, index: Path) -> list[tuple[str, int]]:
    """Ids and row counts of ``n`` predictions, once the pod's ``index`` holds them all
    (its capture writer indexes them on a timer): what a peer is asked for is there."""
    with grpc.insecure_channel(server.address) as ch:
        predict = ppb_grpc.PredictionServiceStub(ch).Predict
        out = []
        for i in range(n):
            reply = predict(predict_request(rows(i % 3 + 1)), timeout=10)
            out.append((reply.id, len(reply.predictions)))
    entries = [(pid, ["1"] * rows_) for pid, rows_ in out]
    deadline = time.monotonic() + 30
    while True:
        store = LabelStore(index)
        try:
            held = store.check("flights", entries)
        finally:
            store.close()
        if len(held) == len(entries):
            return out
        assert time.monotonic() < deadline, f"{index} never indexed {entries}"
        time.sleep(0.05)


def _send(server: Server, entries: list[tuple[str, list[str]]]) -> fpb.FeedbackResponse:
    with grpc.insecure_channel(server.address) as ch:
        req = fpb.FeedbackRequest(name="flights")
        for pid, labels in entries:
            req.feedback.add(id=pid, labels=labels)
        return fpb_grpc.FeedbackServiceStub(ch).Feedback(req, timeout=30)


@pytest.mark.integration
def test_labels_reach_the_pod_that_served_the_prediction(
    pods: tuple[Server, Server, Path],
) -> None:
    a, b, base = pods
    served_a = _predict_ids(a, 4, base / "capture-0")
    served_b = _predict_ids(b, 3, base / "capture-1")
    # one request mixing predictions of both pods, sent to b
    entries = [(pid, ["1"] * n) for pid, n in served_a + served_b]
    reply = _send(b, entries)
    assert (reply.predictions, reply.labels, reply.unsampled) == (
        7,
        sum(n for _, n in served_a + served_b),
        0,
    )
    # each label sits in the index of the pod that served the prediction, nowhere else
    for folder, served, other in (
        ("capture-0", served_a, served_b),
        ("capture-1", served_b, served_a),
    ):
        store = LabelStore(base / folder)
        labels = store.all_labels()
        store.close()
        assert {pid for pid, _ in labels} == {pid for pid, _ in served}
        assert not {pid for pid, _ in labels} & {pid for pid, _ in other}
        assert set(labels.values()) == {"1"}


@pytest.mark.integration
def test_bad_labels_for_a_peer_prediction_write_nothing(
    pods: tuple[Server, Server, Path],
) -> None:
    a, b, base = pods
    ((pid_a, n_a),) = _predict_ids(a, 1, base / "capture-0")
    ((pid_b, n_b),) = _predict_ids(b, 1, base / "capture-1")
    cases = [
        # wrong label count on the peer's prediction: INVALID_ARGUMENT, b's own not written
        ([(pid_b, ["0"] * n_b), (pid_a, ["0"] * (n_a + 1))], grpc.StatusCode.INVALID_ARGUMENT),
        ([(pid_b, ["0"] * n_b), (pid_a, ["maybe"] * n_a)], grpc.StatusCode.INVALID_ARGUMENT),
        # an id no pod holds
        ([(pid_b, ["0"] * n_b), ("never-served", ["0"])], grpc.StatusCode.NOT_FOUND),
    ]
    for entries, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            _send(b, entries)
        assert err.value.code() == code, err.value.details()
    for folder in ("capture-0", "capture-1"):
        store = LabelStore(base / folder)
        labels = store.all_labels()
        store.close()
        assert not {pid for pid, _ in labels} & {pid_a, pid_b}


@pytest.mark.integration
def test_an_unreachable_peer_makes_unknown_ids_retryable(
    pods: tuple[Server, Server, Path],
) -> None:
    a, b, base = pods
    ((pid_a, n_a),) = _predict_ids(a, 1, base / "capture-0")
    stop_process(a.proc)
    # a is gone: its ids cannot be found now, but that is no proof that they do not exist:
    # UNAVAILABLE, so the caller retries
    with pytest.raises(grpc.RpcError) as err:
        _send(b, [(pid_a, ["1"] * n_a)])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert "did not answer" in (err.value.details() or "")
