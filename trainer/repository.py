"""The model repository: ``<root>/<name>/<version>/model.onnx`` + ``model.json``.

Versions are integer folder names. A version is written into a hidden staging folder
(``<root>/<name>/.tmp-<uuid>``, ignored by the server) and renamed into place, so a server polling
the folder sees either nothing or a complete model. The staging folder sits next to the version
folders so the rename stays on one filesystem and is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST",
    "MODEL_FILE",
    "commit",
    "latest_version",
    "list_versions",
    "next_version",
    "publish_dir",
    "read_manifest",
    "staging",
]

MODEL_FILE = "model.onnx"
MANIFEST = "model.json"


def list_versions(root: Path, name: str) -> list[int]:
    """Published versions of ``name``, ascending (hidden and non-integer folders are skipped)."""
    folder = Path(root) / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(root: Path, name: str) -> int | None:
    versions = list_versions(root, name)
    return versions[-1] if versions else None


def next_version(root: Path, name: str) -> int:
    return (latest_version(root, name) or 0) + 1


def read_manifest(root: Path, name: str, version: int | None = None) -> dict[str, Any]:
    """The manifest of one version (default: the latest)."""
    version = latest_version(root, name) if version is None else version
    if version is None:
        raise FileNotFoundError(f"no published version of {name!r} under {root}")
    result: dict[str, Any] = json.loads((Path(root) / name / str(version) / MANIFEST).read_text())
    return result


@contextlib.contextmanager
def staging(root: Path, name: str) -> Iterator[Path]:
    """A hidden folder to write a model into; removed unless :func:`commit` moved it away."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _set_version(folder: Path, version: int) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["version"] = version
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def commit(tmp: Path, root: Path, name: str) -> tuple[int, Path]:
    """Rename a complete staging folder to the next free version; returns (version, folder)."""
    for file in (MODEL_FILE, MANIFEST):
        if not (tmp / file).is_file():
            raise FileNotFoundError(f"{tmp} lacks {file}; refusing to publish")
    while True:
        version = next_version(root, name)
        _set_version(tmp, version)
        target = Path(root) / name / str(version)
        try:
            os.rename(tmp, target)  # fails if another publisher took this version meanwhile
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                continue
            raise
        return version, target


def publish_dir(source: Path, root: Path, name: str) -> tuple[int, Path]:
    """Publish a model folder built elsewhere (e.g. by ``dvc repro``) as the next version."""
    with staging(root, name) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        return commit(tmp, root, name)
