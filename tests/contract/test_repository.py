"""Atomic publishing: integer versions, hidden staging, readers never see half a model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pronto_contract import read_manifest, repository


def _write_model(folder: Path, payload: bytes = b"onnx") -> None:
    (folder / repository.MODEL_FILE).write_bytes(payload)
    (folder / repository.MANIFEST_FILE).write_text(json.dumps({"name": "m", "version": 0}))


def _publish(root: Path, payload: bytes = b"onnx") -> int:
    with repository.staging(root, "m") as tmp:
        assert tmp.name.startswith(".")  # the server skips hidden folders
        _write_model(tmp, payload)
        version, _ = repository.commit(tmp, root, "m")
    return version


def test_versions_are_consecutive_integers(tmp_path: Path) -> None:
    assert repository.published_versions(tmp_path, "m") == []
    assert [_publish(tmp_path) for _ in range(3)] == [1, 2, 3]
    (tmp_path / "m" / "notes").mkdir()  # non-integer folders are not versions
    assert repository.published_versions(tmp_path, "m") == [1, 2, 3]
    assert repository.latest_manifest(tmp_path, "m").version == 3
    assert read_manifest(repository.version_dir(tmp_path, "m", 2)).version == 2
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "3", "notes"]


def test_failure_while_writing_publishes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), repository.staging(tmp_path, "m") as tmp:
        (tmp / repository.MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list((tmp_path / "m").iterdir()) == []


def test_incomplete_folder_is_refused(tmp_path: Path) -> None:
    with repository.staging(tmp_path, "m") as tmp:
        (tmp / repository.MODEL_FILE).write_bytes(b"onnx")
        with pytest.raises(FileNotFoundError, match=r"model\.json"):
            repository.commit(tmp, tmp_path, "m")
    assert repository.published_versions(tmp_path, "m") == []


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            version = _publish(tmp_path)
            with lock:
                results.append(version)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 21))
    for v in results:
        assert json.loads((tmp_path / "m" / str(v) / "model.json").read_text())["version"] == v


def test_poller_never_sees_a_partial_version(tmp_path: Path) -> None:
    payload = b"x" * 16_000_000  # big enough that a non-atomic copy is caught mid-write
    stop = threading.Event()
    partial: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            for version in repository.published_versions(tmp_path, "m"):
                folder = tmp_path / "m" / str(version)
                onnx_file, manifest = folder / "model.onnx", folder / "model.json"
                if not manifest.exists() or onnx_file.stat().st_size != len(payload):
                    partial.append(str(folder))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(8):
            _publish(tmp_path, payload)
    finally:
        stop.set()
        poller.join()
    assert partial == []
    assert repository.published_versions(tmp_path, "m") == list(range(1, 9))


def test_a_version_appears_in_one_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(tmp_path)
    renames: list[tuple[str, str]] = []
    real_rename = repository.os.rename

    def spy(src: str | Path, dst: str | Path) -> None:
        renames.append((Path(src).name, Path(dst).name))
        real_rename(src, dst)

    monkeypatch.setattr(repository.os, "rename", spy)
    with repository.staging(tmp_path, "m") as tmp:
        _write_model(tmp)
        assert repository.published_versions(tmp_path, "m") == [1]  # staged, still invisible
        repository.commit(tmp, tmp_path, "m")
    assert renames == [(tmp.name, "2")]
    assert repository.published_versions(tmp_path, "m") == [1, 2]


def test_publish_dir_copies_a_built_model(tmp_path: Path) -> None:
    built = tmp_path / "build"
    built.mkdir()
    _write_model(built)
    (built / "report.md").write_text("# report")
    assert repository.publish_dir(built, tmp_path / "repo", "m") == (1, tmp_path / "repo/m/1")
    assert (tmp_path / "repo/m/1/report.md").exists()
    assert repository.latest_manifest(tmp_path / "repo", "m").version == 1
    assert (built / "model.json").exists()  # the source stays
