"""Model repository scanning and the registry of loaded, versioned model handles.

Layout: ``<root>/<model>/<version>/model.onnx`` (+ ``model.json``); versions are integer
folder names; names starting with "." are unfinished atomic publishes and are skipped.

The :class:`Registry` keeps an immutable snapshot ``{name: {version: handle}}`` and
replaces it in one assignment, so a later hot reload can swap models while requests read
the old snapshot without locks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from server.errors import ModelNotFound

if TYPE_CHECKING:  # the supervisor scans without importing numpy/onnxruntime (see supervisor)
    from server.model import ModelHandle

__all__ = [
    "LoadFailure",
    "Registry",
    "VersionPolicy",
    "list_versions",
    "load_repository",
    "scan_repository",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions of a model to serve (Triton's ``version_policy``).

    ``latest`` (newest), ``latest:N`` (the N newest) or ``pinned:1,3`` (exactly these).
    """

    latest: int = 1
    pinned: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        kind, _, arg = text.strip().partition(":")
        try:
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
        raise ValueError(f"bad version policy {text!r}: use latest, latest:N or pinned:V1,V2")

    def select(self, versions: Iterable[int]) -> list[int]:
        """The versions to serve out of ``versions``, newest first."""
        ordered = sorted(set(versions), reverse=True)
        if self.pinned:
            return [v for v in ordered if v in self.pinned]
        return ordered[: self.latest]

    def __str__(self) -> str:
        if self.pinned:
            return "pinned:" + ",".join(str(v) for v in sorted(self.pinned))
        return "latest" if self.latest == 1 else f"latest:{self.latest}"


def list_versions(root: Path, names: Iterable[str] | None = None) -> dict[str, dict[int, Path]]:
    """Every complete version on disk: ``{model: {version: folder}}``."""
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a directory")
    wanted = set(names) if names else None
    found: dict[str, dict[int, Path]] = {}
    for model_dir in sorted(root.iterdir()):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        if wanted is not None and model_dir.name not in wanted:
            continue
        vers = {}
        for vdir in model_dir.iterdir():
            if vdir.name.startswith(".") or not vdir.name.isdigit():
                continue
            if (vdir / "model.onnx").is_file():
                vers[int(vdir.name)] = vdir
        if vers:
            found[model_dir.name] = vers
    return found


def scan_repository(
    root: Path,
    names: Iterable[str] | None = None,
    versions: int | VersionPolicy = 1,
    policies: Mapping[str, VersionPolicy] | None = None,
) -> dict[str, list[tuple[int, Path]]]:
    """``{model: [(version, folder), ...]}`` newest first, as the version policy selects."""
    default = versions if isinstance(versions, VersionPolicy) else VersionPolicy(latest=versions)
    found: dict[str, list[tuple[int, Path]]] = {}
    for name, vers in list_versions(root, names).items():
        policy = (policies or {}).get(name, default)
        selected = [(v, vers[v]) for v in policy.select(vers)]
        if selected:
            found[name] = selected
    wanted = set(names) if names else None
    if wanted is not None and (missing := wanted - set(found)):
        raise FileNotFoundError(f"models not found in {root}: {', '.join(sorted(missing))}")
    return found


@dataclass(frozen=True, slots=True)
class LoadFailure:
    name: str
    version: int
    error: str


Snapshot = MappingProxyType[str, MappingProxyType[int, "ModelHandle"]]


class Registry:
    """Versioned model handles, swapped atomically as a whole."""

    def __init__(self) -> None:
        self._models: Snapshot = MappingProxyType({})
        # resolved default version per model, kept next to the snapshot it belongs to
        self._latest: dict[str, ModelHandle] = {}
        # model -> version that unversioned requests get instead of the newest (a rollout's
        # stable version, see server.rollout); ignored while that version is not loaded
        self._pins: dict[str, int] = {}

    def replace(self, handles: Iterable[ModelHandle]) -> None:
        """Install a new set of models in one step."""
        models: dict[str, dict[int, ModelHandle]] = {}
        for h in handles:
            models.setdefault(h.name, {})[h.version] = h
        snapshot = MappingProxyType(
            {
                name: MappingProxyType(dict(sorted(v.items(), reverse=True)))
                for name, v in sorted(models.items())
            }
        )
        self._models, self._latest = snapshot, self._defaults(snapshot, self._pins)

    def _defaults(self, snapshot: Snapshot, pins: dict[str, int]) -> dict[str, ModelHandle]:
        latest = {}
        for name, versions in snapshot.items():
            pinned = pins.get(name)
            handle = versions.get(pinned) if pinned is not None else None
            latest[name] = handle if handle is not None else next(iter(versions.values()))
        return latest

    def pin_defaults(self, pins: Mapping[str, int]) -> None:
        """Serve ``pins[name]`` to requests without a version (while it is loaded)."""
        pins = dict(pins)
        if pins != self._pins:
            self._pins = pins
            self._latest = self._defaults(self._models, pins)

    def find(self, name: str, version: int) -> ModelHandle | None:
        """The loaded handle of ``name`` at ``version``, or None."""
        versions = self._models.get(name)
        return versions.get(version) if versions is not None else None

    def get(self, name: str, version: str = "") -> ModelHandle:
        """The handle for ``name`` at ``version`` ("" = newest loaded)."""
        if not version:
            handle = self._latest.get(name)
            if handle is None:
                raise ModelNotFound(f"unknown model '{name}'")
            return handle
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFound(f"unknown model '{name}'")
        handle = versions.get(int(version)) if version.isdigit() else None
        if handle is None:
            raise ModelNotFound(f"unknown version '{version}' of model '{name}'")
        return handle

    def versions(self, name: str) -> list[str]:
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFound(f"unknown model '{name}'")
        return [str(v) for v in versions]

    def names(self) -> list[str]:
        return list(self._models)

    def snapshot(self) -> Snapshot:
        """The current ``{name: {version: handle}}``; never changes once returned."""
        return self._models

    def handles(self) -> list[ModelHandle]:
        return [h for v in self._models.values() for h in v.values()]


def load_repository(
    root: Path,
    names: Iterable[str] | None = None,
    versions: int = 1,
    intra_op_threads: int = 1,
    on_loaded: Callable[[ModelHandle], None] | None = None,
    on_failed: Callable[[LoadFailure], None] | None = None,
) -> tuple[list[ModelHandle], list[LoadFailure]]:
    """Load (and warm up) every selected model version; failures are reported, not raised."""
    from server.model import load_model

    handles, failures = [], []
    for name, vers in scan_repository(root, names, versions).items():
        for version, path in vers:
            try:
                handle = load_model(name, version, path, intra_op_threads)
            except Exception as exc:
                log.exception("failed to load %s version %d", name, version)
                failure = LoadFailure(name, version, f"{type(exc).__name__}: {exc}")
                failures.append(failure)
                if on_failed:
                    on_failed(failure)
                continue
            handles.append(handle)
            if on_loaded:
                on_loaded(handle)
    return handles, failures
