"""The registry of loaded, versioned model handles of one worker.

The repository layout and the choice of versions live in :mod:`pronto_contract`. The
:class:`Registry` keeps an immutable snapshot ``{name: {version: handle}}`` and
replaces it in one assignment, so a later hot reload can swap models while requests read
the old snapshot without locks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from server.errors import ModelNotFound

if TYPE_CHECKING:  # the handles' module imports onnxruntime
    from server.model import ModelHandle

__all__ = ["LoadFailure", "Registry"]


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
