"""Capture files copied to ``gs://``: against fake-gcs-server, a real GCS emulator
(``make setup-go``), in process and from a real server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pronto_contract.labels import LabelStore
from server.capture import CaptureConfig, CaptureSink
from server.capture_upload import MARKER, CaptureUploader, parse_gs_url
from server.core import InferenceCore
from server.repository import Registry
from tests.server.conftest import start_server
from tests.support import free_port, load_models, stop_process, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "pronto-models"
INSTANCE = {"OPERA": "Avianca", "TIPOVUELO": "I", "MES": 11.0, "DIA": 3.0}


def _binary() -> str:
    for candidate in (
        os.environ.get("FAKE_GCS_SERVER", ""),
        str(ROOT / ".tools" / "bin" / "fake-gcs-server"),
        shutil.which("fake-gcs-server") or "",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("fake-gcs-server is not installed: make setup-go")


@dataclass
class Gcs:
    url: str

    def objects(self) -> dict[str, bytes]:
        """Every object of the bucket: name -> content."""
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}/o", timeout=5) as r:
            items = json.load(r).get("items", [])
        out = {}
        for item in items:
            name = urllib.parse.quote(item["name"], safe="")
            media = f"{self.url}/storage/v1/b/{BUCKET}/o/{name}?alt=media"
            with urllib.request.urlopen(media, timeout=5) as r:
                out[item["name"]] = r.read()
        return out


@pytest.fixture
def gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gcs]:
    port = free_port()
    data = tmp_path / "gcs-data"
    (data / BUCKET).mkdir(parents=True)  # the emulator creates a bucket per folder
    cmd = [
        _binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "memory", "-data", str(data), "-log-level", "error",
        "-public-host", f"127.0.0.1:{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_http(port, f"/storage/v1/b/{BUCKET}", timeout=30, proc=proc)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
        yield Gcs(f"http://127.0.0.1:{port}")
    finally:
        stop_process(proc)


def _local(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.glob("*/*/capture-*.jsonl")
    }


def test_gs_urls() -> None:
    assert parse_gs_url("gs://pronto-models/captures/prod/") == ("pronto-models", "captures/prod")
    assert parse_gs_url("gs://pronto-models") == ("pronto-models", "")
    for bad in ("s3://b/p", "gs://", "gs://UPPER/x", "/local/dir"):
        with pytest.raises(ValueError):
            parse_gs_url(bad)


@pytest.mark.integration
def test_rotated_and_last_files_are_uploaded(model_repo: Path, tmp_path: Path, gcs: Gcs) -> None:
    directory = tmp_path / "capture"
    LabelStore(directory).create()
    # only the test flushes (the writer's timer would race its flushes)
    config = CaptureConfig(
        directory,
        sample_rate=1.0,
        max_file_bytes=1,
        upload_url=f"gs://{BUCKET}/captures/a",
        flush_interval=3600.0,
    )
    sink = CaptureSink(config)
    sink.start()
    registry = Registry()
    registry.replace(load_models(model_repo))
    core = InferenceCore(registry, sink=sink)
    core.ready = True
    for i in range(3):
        asyncio.run(core.predict("flights", "", [INSTANCE], f"p-{i}"))
        sink.flush()  # one file per flush: each write rotates the previous file
    sink.close()
    local = _local(directory)
    assert len(local) == 3
    assert gcs.objects() == {f"captures/a/{name}": body for name, body in local.items()}
    assert all((directory / name).with_name(Path(name).name + MARKER).exists() for name in local)
    assert sink.uploader is not None and sink.uploader.uploaded == 3


@pytest.mark.integration
def test_failures_are_retried_then_counted(
    tmp_path: Path, gcs: Gcs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GCS unreachable: retried with backoff, then counted as failed; no marker."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nobody
    path = tmp_path / "m" / "1" / f"capture-20260101T000000Z-{os.getpid()}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")

    class Metrics:
        def __init__(self) -> None:
            self.counts: dict[str, int] = {}
            self.uploads = self

        def labels(self, outcome: str) -> Any:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            return self

        def inc(self) -> None:
            pass

    metrics = Metrics()
    uploader = CaptureUploader(
        f"gs://{BUCKET}/x", tmp_path, metrics, attempts=2, backoff=0.01, timeout=2
    )
    uploader.start()
    uploader.submit(path)
    uploader.close(timeout=30)
    assert uploader.failed == 1 and metrics.counts == {"failed": 1}
    assert not path.with_name(path.name + MARKER).exists()
    assert gcs.objects() == {}


@pytest.mark.integration
def test_files_of_a_dead_worker_are_uploaded_by_the_next(tmp_path: Path, gcs: Gcs) -> None:
    gone = subprocess.Popen(["true"])  # a process that has exited
    gone.wait()
    files = {
        "orphan": f"capture-20260101T000000Z-{gone.pid}.jsonl",
        "done": f"capture-20260101T000001Z-{gone.pid}.jsonl",
        "live": f"capture-20260101T000002Z-{os.getppid()}.jsonl",
    }
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    for kind, name in files.items():
        (folder / name).write_text(f'{{"kind": "{kind}"}}\n')
    (folder / (files["done"] + MARKER)).touch()
    uploader = CaptureUploader(f"gs://{BUCKET}", tmp_path)
    assert [p.name for p in uploader.leftovers()] == [files["orphan"]]
    uploader.start()
    uploader.close(timeout=30)
    assert list(gcs.objects()) == [f"m/1/{files['orphan']}"]


@pytest.mark.integration
def test_server_uploads_rotated_capture_files(model_repo: Path, tmp_path: Path, gcs: Gcs) -> None:
    import grpc

    from server.generated.pronto.v1 import prediction_pb2 as ppb
    from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc

    capture = tmp_path / "capture"
    server = start_server(
        model_repo, tmp_path / "serve.log", 1,
        "--capture-dir", str(capture), "--capture-sample-rate", "1",
        "--capture-flush-interval", "0.1", "--capture-max-file-bytes", "1024",
        "--capture-upload-url", f"gs://{BUCKET}/captures",
    )  # fmt: skip
    try:
        # keep predicting until a rotation (a write after the first file passed 1 KiB) has
        # closed a file and the uploader has copied it, while the server runs
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(server.address) as channel:
            stub = ppb_grpc.PredictionServiceStub(channel)
            i = 0
            while not gcs.objects():
                assert time.monotonic() < deadline, "nothing uploaded while serving"
                request = ppb.PredictRequest(name="flights", id=f"u-{i}")
                request.instances.add().update(INSTANCE)
                stub.Predict(request, timeout=10)
                i += 1
                time.sleep(0.05)
    finally:
        stop_process(server.proc)
    # after a graceful stop every file is uploaded, byte for byte
    local = _local(capture)
    assert len(local) >= 2
    assert gcs.objects() == {f"captures/{name}": body for name, body in local.items()}
