"""Hot reload: keep each worker's :class:`Registry` in step with the model repository.

One pass lists the versions on disk, applies each model's version policy, loads (and warms
up) what is new on a helper thread, and swaps the whole registry snapshot in one step on
the event loop. Requests that already hold a handle keep it until they finish: the old
ONNX Runtime session is released by Python's reference counting, not by the reload.

A version that fails to load is remembered with the stat of its files, so it is counted
and logged once and retried only when its folder changes; the policy then picks among the
versions that did load, which keeps the previous version serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pronto_contract import MANIFEST_FILE, MODEL_FILE, VersionPolicy, choose_versions, list_versions
from server.repository import LoadFailure, Registry

if TYPE_CHECKING:  # the supervisor imports this module and must not import onnxruntime
    from server.model import ModelHandle
    from server.settings import ServeSettings

__all__ = ["Reloader", "version_policies"]

log = logging.getLogger(__name__)

Models = dict[str, dict[int, "ModelHandle"]]


def version_policies(settings: ServeSettings) -> tuple[VersionPolicy, dict[str, VersionPolicy]]:
    """The default policy and the per-model overrides; ValueError on a malformed one."""
    default = (
        VersionPolicy.parse(settings.version_policy)
        if settings.version_policy
        else VersionPolicy(latest=settings.model_versions)
    )
    per_model = {n: VersionPolicy.parse(p) for n, p in settings.model_version_policies.items()}
    return default, per_model


def _stamp(path: Path) -> tuple[int, ...]:
    """Identity of a version folder's files: a republished folder gets another try."""
    stamp: list[int] = []
    for name in (MODEL_FILE, MANIFEST_FILE):
        try:
            st = (path / name).stat()
            stamp += [st.st_ino, st.st_mtime_ns, st.st_size]
        except OSError:
            stamp += [0, 0, 0]
    return tuple(stamp)


class Reloader:
    """Loads, validates and swaps model versions for one worker."""

    def __init__(
        self,
        registry: Registry,
        root: Path,
        *,
        names: Iterable[str] | None = None,
        policy: VersionPolicy | None = None,
        policies: Mapping[str, VersionPolicy] | None = None,
        load: Callable[[str, int, Path], ModelHandle],
        on_loaded: Callable[[ModelHandle], None] | None = None,
        on_failed: Callable[[LoadFailure], None] | None = None,
        on_installed: Callable[[set[str], set[str]], Awaitable[None]] | None = None,
        pinned: Callable[[list[str]], Mapping[str, set[int]]] | None = None,
    ) -> None:
        self.registry = registry
        self.root = root
        self.names = list(names) if names else None
        self.policy = policy or VersionPolicy()
        self.policies = dict(policies or {})
        self._load = load
        self._on_loaded = on_loaded
        self._on_failed = on_failed
        self._on_installed = on_installed
        # versions served whatever the policy says (a rollout's stable and candidate)
        self._pinned = pinned
        self._failed: dict[tuple[str, int], tuple[int, ...]] = {}
        # outcomes of the last plan, reported from the event loop: callbacks (metrics, drift
        # registration) then never race the loop's own use of the same objects
        self._outcomes: list[ModelHandle | LoadFailure] = []
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        # one thread: loads are rare, and must not compete with each other for the cores
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reload")

    # -- planning (runs on the helper thread) --------------------------------
    def _try_load(self, name: str, version: int, path: Path) -> ModelHandle | None:
        stamp = _stamp(path)
        if self._failed.get((name, version)) == stamp:
            return None
        try:
            handle = self._load(name, version, path)
        except Exception as exc:
            log.exception("failed to load %s version %d; keeping what is served", name, version)
            self._failed[(name, version)] = stamp
            self._outcomes.append(LoadFailure(name, version, f"{type(exc).__name__}: {exc}"))
            return None
        self._failed.pop((name, version), None)
        self._outcomes.append(handle)
        return handle

    def _report(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        for outcome in outcomes:
            if isinstance(outcome, LoadFailure):
                if self._on_failed is not None:
                    self._on_failed(outcome)
            elif self._on_loaded is not None:
                self._on_loaded(outcome)

    def plan(self) -> Models:
        """The models to serve next: the current handles plus newly loaded versions."""
        try:
            on_disk = list_versions(self.root, self.names)
        except OSError as exc:  # a missing or unreadable root must not unload everything
            log.error("cannot scan %s: %s; keeping what is served", self.root, exc)
            return self.current()
        current = self.current()
        pinned = self._pinned(list(on_disk)) if self._pinned is not None else {}
        models: Models = {}
        for name, versions in on_disk.items():
            served = choose_versions(
                versions,
                self.policies.get(name, self.policy),
                current.get(name, {}),
                functools.partial(self._try_load, name),
                pinned.get(name, ()),
            )
            if served:
                models[name] = served
        return models

    def current(self) -> Models:
        return {n: dict(v) for n, v in self.registry.snapshot().items()}

    # -- installing (runs on the event loop) ----------------------------------
    def load_initial(self) -> None:
        """Blocking first load, before the worker serves."""
        self.registry.replace(h for v in self.plan().values() for h in v.values())
        self._report()

    async def reload(self) -> bool:
        """One scan; True when the served set changed. Reloads never overlap."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            models = await loop.run_in_executor(self._pool, self.plan)
            self._report()
            before = self.current()
            if _ids(models) == _ids(before):
                return False
            self.registry.replace(h for v in models.values() for h in v.values())
            for name in sorted(set(models) | set(before)):
                old, new = sorted(before.get(name, {})), sorted(models.get(name, {}))
                if old != new:
                    log.info("%s: serving versions %s (was %s)", name, new or "none", old)
            if self._on_installed is not None:
                await self._on_installed(set(models), set(before) - set(models))
            return True

    def trigger(self) -> None:
        """Schedule a scan now (SIGHUP); it runs after any scan in progress."""
        task = asyncio.get_running_loop().create_task(self._safe_reload())
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _safe_reload(self) -> bool:
        try:
            return await self.reload()
        except Exception:  # a reload bug must never take the worker down
            log.exception("model reload failed")
            return False

    async def run(self, interval: float) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self._safe_reload()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _ids(models: Models) -> dict[str, dict[int, int]]:
    return {n: {v: id(h) for v, h in vs.items()} for n, vs in models.items()}
