"""Payload capture and the prediction index, in process: records, rotation, a full buffer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from server.capture import REQUEST_TYPE, RESPONSE_TYPE, CaptureConfig, CaptureSink
from server.core import InferenceCore
from server.labels import LabelStore, is_sampled
from server.oip_codec import decode_infer_request
from server.repository import Registry, load_repository
from tests.server.requests import infer_request, rows

INSTANCES = [
    {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 11.0, "DIA": 3.0},
    {"OPERA": "Sky Airline", "TIPOVUELO": "N", "MES": 2.0, "DIA": 20.0},
]


def _core(model_repo: Path, sink: CaptureSink) -> InferenceCore:
    handles, failures = load_repository(model_repo, versions=1)
    assert not failures
    registry = Registry()
    registry.replace(handles)
    core = InferenceCore(registry, sink=sink)
    core.ready = True
    return core


def _events(directory: Path) -> list[dict]:
    files = sorted(directory.glob("*/*/capture-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_capture_records_and_index(model_repo: Path, tmp_path: Path) -> None:
    LabelStore(tmp_path).create()
    sink = CaptureSink(CaptureConfig(tmp_path, sample_rate=1.0))
    core = _core(model_repo, sink)
    pred = asyncio.run(core.predict("flights", "", INSTANCES, "p-1"))
    req = infer_request(rows(3))
    req.id = "oip-1"
    oip = asyncio.run(core.infer(decode_infer_request(req, 1 << 22, 100)))
    sink.close()

    events = _events(tmp_path)
    assert [(e["id"], e["type"]) for e in events] == [
        ("p-1", REQUEST_TYPE),
        ("p-1", RESPONSE_TYPE),
        ("oip-1", REQUEST_TYPE),
        ("oip-1", RESPONSE_TYPE),
    ]
    request, response = events[0], events[1]
    assert request["specversion"] == "1.0" and request["inferenceservicename"] == "flights"
    assert request["modelversion"] == pred.model_version
    assert request["data"]["instances"] == INSTANCES
    got = response["data"]["predictions"]
    assert [p["label"] for p in got] == pred.labels
    for row, p in zip(pred.probabilities.tolist(), got, strict=True):
        assert list(p["probabilities"].values()) == pytest.approx(row)
    assert len(events[2]["data"]["instances"]) == 3 and oip.id == "oip-1"

    store = LabelStore(tmp_path)
    served = store.served("flights", pred.model_version, 0, 100)
    assert len(served) == 5  # every row of both predictions
    positive = pred.classes.index(store.model_info("flights", pred.model_version).positive)
    assert all(s is not None for _, s in served)
    assert {round(s, 6) for _, s in served} >= {round(r[positive], 6) for r in pred.probabilities}


def test_sampling_by_id_hash(model_repo: Path, tmp_path: Path) -> None:
    """Sampled predictions are captured and indexed, the others neither; the choice is a
    hash of the id, so the worker taking labels can make it again."""
    LabelStore(tmp_path).create()
    sink = CaptureSink(CaptureConfig(tmp_path, sample_rate=0.3))
    core = _core(model_repo, sink)
    ids = [f"id-{i}" for i in range(200)]
    for pid in ids:
        asyncio.run(core.predict("flights", "", INSTANCES[:1], pid))
    sink.close()
    expected = {pid for pid in ids if is_sampled(pid, 0.3)}
    assert 40 <= len(expected) <= 80
    assert {e["id"] for e in _events(tmp_path)} == expected
    store = LabelStore(tmp_path)
    assert len(store.served("flights", "2", 0, 1000)) == len(expected)
    assert not any(is_sampled(pid, 0.0) for pid in ids)


def test_full_buffer_drops_records_not_requests(model_repo: Path, tmp_path: Path) -> None:
    LabelStore(tmp_path).create()
    sink = CaptureSink(CaptureConfig(tmp_path, sample_rate=1.0, buffer=3))  # writer not started
    core = _core(model_repo, sink)
    replies = [asyncio.run(core.predict("flights", "", INSTANCES, f"id-{i}")) for i in range(10)]
    assert all(len(r.labels) == 2 for r in replies)
    assert sink.dropped == 7
    sink.close()
    assert sorted({e["id"] for e in _events(tmp_path)}) == ["id-0", "id-1", "id-2"]


def test_files_rotate_by_size(model_repo: Path, tmp_path: Path) -> None:
    LabelStore(tmp_path).create()
    sink = CaptureSink(CaptureConfig(tmp_path, sample_rate=1.0, max_file_bytes=1024))
    core = _core(model_repo, sink)
    for i in range(6):
        asyncio.run(core.predict("flights", "", INSTANCES, f"id-{i}"))
        sink.flush()
    sink.close()
    files = sorted(tmp_path.glob("flights/*/capture-*.jsonl"))
    assert len(files) >= 2
    assert all(f.stat().st_size < 1024 + 2048 for f in files)
    assert len({e["id"] for e in _events(tmp_path)}) == 6


def test_files_rotate_by_age(model_repo: Path, tmp_path: Path) -> None:
    LabelStore(tmp_path).create()
    sink = CaptureSink(CaptureConfig(tmp_path, sample_rate=1.0, rotate_seconds=1e-9))
    core = _core(model_repo, sink)
    for i in range(3):
        asyncio.run(core.predict("flights", "", INSTANCES, f"id-{i}"))
        sink.flush()  # every flush finds its file too old
    sink.close()
    files = sorted(tmp_path.glob("flights/*/capture-*.jsonl"))
    assert len(files) == 3
    assert [len(f.read_text().splitlines()) for f in files] == [2, 2, 2]
