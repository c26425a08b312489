"""The model repository layout: ``<root>/<model>/<version>/model.onnx`` + ``model.json``.

Versions are integer folder names. Names starting with "." are unfinished publishes and
are skipped by every reader. A version is written into a hidden staging folder next to
the version folders (``<root>/<model>/.tmp-<uuid>``) and renamed into place, so a server
polling the repository sees either nothing or a complete model, and the rename stays on
one filesystem.

Which versions are served is decided in one place, :func:`choose_versions`: the
supervisor uses it to check that there is something to serve, each worker's reloader to
decide what to load (falling back to older versions when a newer one fails to load).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pronto_contract.manifest import Manifest, read_manifest, write_manifest

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "VersionPolicy",
    "choose_versions",
    "commit",
    "has_models",
    "latest_manifest",
    "latest_version",
    "list_versions",
    "next_version",
    "publish_dir",
    "published_versions",
    "select_versions",
    "staging",
    "version_dir",
]

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "model.json"

H = TypeVar("H")


def version_dir(root: Path, name: str, version: int) -> Path:
    return Path(root) / name / str(version)


def _is_version(folder: Path) -> bool:
    return folder.name.isdigit() and folder.is_dir()


def list_versions(root: Path, names: Iterable[str] | None = None) -> dict[str, dict[int, Path]]:
    """Every complete version on disk (one with a ``model.onnx``): ``{model: {version: dir}}``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a directory")
    wanted = set(names) if names else None
    found: dict[str, dict[int, Path]] = {}
    for model_dir in sorted(root.iterdir()):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        if wanted is not None and model_dir.name not in wanted:
            continue
        versions = {
            int(v.name): v
            for v in model_dir.iterdir()
            if _is_version(v) and (v / MODEL_FILE).is_file()
        }
        if versions:
            found[model_dir.name] = versions
    return found


def has_models(root: Path) -> bool:
    """Whether ``root`` holds at least one complete version of any model."""
    try:
        return bool(list_versions(root))
    except FileNotFoundError:
        return False


def published_versions(root: Path, name: str) -> list[int]:
    """Version numbers taken for ``name``, ascending (complete or not: never reuse one)."""
    folder = Path(root) / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if _is_version(p))


def latest_version(root: Path, name: str) -> int | None:
    versions = published_versions(root, name)
    return versions[-1] if versions else None


def next_version(root: Path, name: str) -> int:
    return (latest_version(root, name) or 0) + 1


def latest_manifest(root: Path, name: str) -> Manifest:
    """The manifest of the newest version of ``name`` that has one."""
    for version in reversed(published_versions(root, name)):
        folder = version_dir(root, name, version)
        if (folder / MANIFEST_FILE).is_file():
            return read_manifest(folder)
    raise FileNotFoundError(f"no published version of {name!r} with a manifest under {root}")


# -- publishing ---------------------------------------------------------------


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
    manifest = read_manifest(folder)
    manifest.version = version
    write_manifest(folder, manifest)


def commit(tmp: Path, root: Path, name: str) -> tuple[int, Path]:
    """Rename a complete staging folder to the next free version; returns (version, folder)."""
    for file in (MODEL_FILE, MANIFEST_FILE):
        if not (tmp / file).is_file():
            raise FileNotFoundError(f"{tmp} lacks {file}; refusing to publish")
    while True:
        version = next_version(root, name)
        _set_version(tmp, version)
        target = version_dir(root, name, version)
        try:
            os.rename(tmp, target)  # fails if another publisher took this version meanwhile
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                continue
            raise
        return version, target


def publish_dir(source: Path, root: Path, name: str) -> tuple[int, Path]:
    """Publish a complete model folder built elsewhere as the next version of ``name``."""
    with staging(root, name) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        return commit(tmp, root, name)


# -- which versions to serve -------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions of a model to serve (Triton's ``version_policy``).

    ``latest`` (newest), ``latest:N`` (the N newest), ``pinned:1,3`` (exactly these) or
    ``all`` (every version; ``latest`` 0 without pins).
    """

    latest: int = 1
    pinned: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "all" and not arg:
                return cls(latest=0)
            if kind == "latest":
                n = int(arg) if arg else 1
                if n >= 1:
                    return cls(latest=n)
            elif kind == "pinned":
                pinned = frozenset(int(v) for v in arg.split(",") if v.strip())
                if pinned and min(pinned) >= 0:
                    return cls(latest=0, pinned=pinned)
        except ValueError:
            pass
        raise ValueError(f"bad version policy {text!r}: use latest, latest:N, pinned:V1,V2 or all")

    def select(self, versions: Iterable[int]) -> list[int]:
        """The versions to serve out of ``versions``, newest first."""
        ordered = sorted(set(versions), reverse=True)
        if self.pinned:
            return [v for v in ordered if v in self.pinned]
        return ordered[: self.latest or None]

    def __str__(self) -> str:
        if self.pinned:
            return "pinned:" + ",".join(str(v) for v in sorted(self.pinned))
        if not self.latest:
            return "all"
        return "latest" if self.latest == 1 else f"latest:{self.latest}"


def choose_versions(
    available: Mapping[int, Path],
    policy: VersionPolicy,
    have: Mapping[int, H],
    load: Callable[[int, Path], H | None],
    pinned: Iterable[int] = (),
) -> dict[int, H]:
    """The versions ``policy`` serves out of ``available``, newest first.

    Versions in ``have`` are kept as they are; others are passed to ``load``. A version
    that ``load`` refuses (``None``) is dropped and the policy chooses again among the
    rest, so a broken new version leaves the previous one serving. ``pinned`` versions
    (a rollout's stable and candidate) are served too, whatever the policy says.
    """
    candidates = dict(available)
    chosen: dict[int, H] = {}
    extra = sorted(set(pinned), reverse=True)
    while True:
        wanted = policy.select(candidates)
        wanted += [v for v in extra if v in candidates and v not in wanted]
        missing = [v for v in wanted if v not in have and v not in chosen]
        if not missing:
            return {v: chosen[v] if v in chosen else have[v] for v in wanted}
        for version in missing:
            loaded = load(version, candidates[version])
            if loaded is None:
                del candidates[version]
            else:
                chosen[version] = loaded


def select_versions(
    root: Path,
    names: Iterable[str] | None = None,
    policy: VersionPolicy | None = None,
    policies: Mapping[str, VersionPolicy] | None = None,
) -> dict[str, dict[int, Path]]:
    """``{model: {version: dir}}`` as the policies choose, without loading anything.

    ``FileNotFoundError`` when the root is missing or a named model has no version.
    """
    default = policy or VersionPolicy()
    found: dict[str, dict[int, Path]] = {}
    for name, versions in list_versions(root, names).items():
        chosen = choose_versions(versions, (policies or {}).get(name, default), {}, _path)
        if chosen:
            found[name] = chosen
    if names and (missing := set(names) - set(found)):
        raise FileNotFoundError(f"models not found in {root}: {', '.join(sorted(missing))}")
    return found


def _path(version: int, path: Path) -> Path:
    return path
