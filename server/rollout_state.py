"""Rollout state of a model: ``<root>/<model>/rollout.json``, typed and written atomically.

The file is the one place where a rollout lives: every worker of every server that reads
the repository re-reads it on its reload pass, so all of them route the same way. Writers
(``pronto rollout``, the admin service, the automatic analysis) change it under an
exclusive ``flock`` on ``<root>/<model>/.rollout.lock`` and publish it with a rename, so a
reader sees the old or the new state, never half of one.

Pure Python (pydantic only): the supervisor reads it without numpy or onnxruntime.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pronto_contract import list_versions

__all__ = [
    "DEFAULT_STEPS",
    "STATE_FILENAME",
    "Decision",
    "Lease",
    "Mode",
    "RolloutError",
    "RolloutState",
    "Thresholds",
    "abort",
    "promote",
    "read_state",
    "start",
    "state_path",
    "update_state",
    "write_state",
]

STATE_FILENAME = "rollout.json"
LOCK_FILENAME = ".rollout.lock"
#: canary weights (percent of requests) the automatic analysis steps through
DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)
#: decisions kept in the file (the newest ones)
HISTORY = 50


class RolloutError(ValueError):
    """A rollout operation that cannot be done (message safe to show to the caller)."""


class Mode(StrEnum):
    #: no candidate: every request goes to ``stable``
    OFF = "off"
    #: ``stable`` answers; the candidate scores a sample of requests off the response path
    SHADOW = "shadow"
    #: ``weight`` percent of the requests (by a hash of the prediction id) go to the candidate
    CANARY = "canary"


class Thresholds(BaseModel):
    """Limits the automatic analysis holds the candidate to, over each analysis window."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Candidate errors / candidate requests."
    )
    max_latency_p99_seconds: float = Field(
        0.25, gt=0, description="Upper bound of the candidate's 99th latency percentile."
    )
    min_agreement: float = Field(
        0.9, ge=0, le=1, description="Rows where candidate and stable give the same label."
    )
    max_quality_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest fall of estimated accuracy (candidate vs stable) where the "
        "quality loop provides it.",
    )
    min_requests: int = Field(
        50, ge=1, description="Candidate requests a window needs before it is judged."
    )


class Decision(BaseModel):
    """One change of the rollout, by whom and why."""

    at: float
    action: str  # start | step | promote | abort
    weight: float = 0.0
    reason: str = ""
    actor: str = ""


class Lease(BaseModel):
    """Who runs the automatic analysis, until when (renewed while it runs)."""

    owner: str = ""
    until: float = 0.0


class RolloutState(BaseModel):
    """What ``<root>/<model>/rollout.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    model: str
    #: the version unversioned requests get when they are not in a canary
    stable: int = Field(ge=0)
    candidate: int | None = Field(None, ge=0)
    mode: Mode = Mode.OFF
    #: canary: percent of requests sent to the candidate
    weight: float = Field(0.0, ge=0, le=100)
    #: shadow: share of requests the candidate also scores
    shadow_sample: float = Field(1.0, ge=0, le=1)
    auto: bool = False
    steps: list[float] = Field(default_factory=lambda: list(DEFAULT_STEPS))
    #: seconds each step must stay within thresholds before the next one
    step_seconds: float = Field(60.0, gt=0)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    started_at: float = 0.0
    step_started_at: float = 0.0
    updated_at: float = 0.0
    #: bumped by every write; the analysis starts a new window when it changes
    generation: int = 0
    lease: Lease = Field(default_factory=Lease)
    history: list[Decision] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RolloutState:
        if self.mode is not Mode.OFF and self.candidate is None:
            raise ValueError(f"mode {self.mode.value} needs a candidate version")
        if self.candidate is not None and self.candidate == self.stable:
            raise ValueError("candidate and stable are the same version")
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps must be percentages in (0, 100]")
        if sorted(self.steps) != self.steps:
            raise ValueError("steps must increase")
        return self

    @property
    def active(self) -> bool:
        return self.mode is not Mode.OFF and self.candidate is not None

    def decide(self, action: str, reason: str = "", actor: str = "", now: float = 0.0) -> None:
        now = now or time.time()
        self.history.append(Decision(at=now, action=action, weight=self.weight, reason=reason,
                                     actor=actor))  # fmt: skip
        del self.history[:-HISTORY]


def state_path(root: Path, model: str) -> Path:
    return root / model / STATE_FILENAME


def read_state(root: Path, model: str) -> RolloutState | None:
    """The model's rollout state, None when it has none; RolloutError when it is malformed."""
    path = state_path(root, model)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return RolloutState.model_validate_json(text)
    except ValidationError as exc:
        raise RolloutError(f"{path}: {exc}") from exc


def write_state(root: Path, state: RolloutState) -> None:
    """Publish ``state`` atomically: write a hidden temporary file, fsync, rename."""
    folder = root / state.model
    data = state.model_dump_json(indent=2).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=".rollout-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / STATE_FILENAME)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash only then
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(root: Path, model: str) -> Iterator[None]:
    folder = root / model
    if not folder.is_dir():
        raise RolloutError(f"unknown model '{model}' in {root}")
    with open(folder / LOCK_FILENAME, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_state(
    root: Path,
    model: str,
    change: Callable[[RolloutState | None], RolloutState | None],
) -> RolloutState | None:
    """Read, change and write the state under the model's lock; ``change`` may raise
    RolloutError, or return None (or the unchanged object) to write nothing."""
    with _locked(root, model):
        before = read_state(root, model)
        snapshot = before.model_copy(deep=True) if before is not None else None
        after = change(before)
        if after is None or (snapshot is not None and after == snapshot):
            return after
        after.generation = (snapshot.generation if snapshot else 0) + 1
        after.updated_at = time.time()
        # validate the whole object again: ``change`` may have assigned fields directly
        after = RolloutState.model_validate(after.model_dump())
        write_state(root, after)
        return after


def start(
    root: Path,
    model: str,
    candidate: int,
    mode: Mode,
    *,
    weight: float | None = None,
    auto: bool = False,
    stable: int | None = None,
    shadow_sample: float | None = None,
    steps: list[float] | None = None,
    step_seconds: float | None = None,
    thresholds: Thresholds | None = None,
    actor: str = "",
) -> RolloutState:
    """Start (or restart) a rollout of ``candidate``.

    The stable version is ``stable``, else the current state's stable, else the newest
    version on disk older than the candidate. The candidate need not be on disk yet:
    until every server has loaded it, its share goes to stable.
    """
    if mode is Mode.OFF:
        raise RolloutError("a rollout runs in shadow or canary mode")

    def change(state: RolloutState | None) -> RolloutState:
        base = stable
        if base is None and state is not None:
            base = state.stable
        if base is None:
            on_disk = sorted(list_versions(root, [model]).get(model, {}))
            older = [v for v in on_disk if v != candidate]
            older = [v for v in older if v < candidate] or older
            if not older:
                raise RolloutError(
                    f"model '{model}' has no version besides {candidate} to keep as stable"
                )
            base = older[-1]
        if base == candidate:
            raise RolloutError(f"version {candidate} of '{model}' is already stable")
        chosen_steps = list(steps) if steps else list(DEFAULT_STEPS)
        if mode is Mode.CANARY:
            w = weight if weight is not None else (chosen_steps[0] if auto else 0.0)
        else:
            w = 0.0
        now = time.time()
        try:
            new = RolloutState(
                model=model,
                stable=base,
                candidate=candidate,
                mode=mode,
                weight=w,
                shadow_sample=1.0 if shadow_sample is None else shadow_sample,
                auto=auto,
                steps=chosen_steps,
                step_seconds=step_seconds if step_seconds is not None else 60.0,
                thresholds=thresholds or Thresholds(),
                started_at=now,
                step_started_at=now,
                history=list(state.history) if state else [],
            )
        except ValidationError as exc:
            raise RolloutError(_first_error(exc)) from exc
        new.decide("start", f"{mode.value} of version {candidate}", actor, now)
        return new

    result = update_state(root, model, change)
    assert result is not None
    return result


def _finish(
    root: Path, model: str, action: str, reason: str, actor: str, expect: int | None
) -> RolloutState:
    def change(state: RolloutState | None) -> RolloutState | None:
        if state is None or state.candidate is None:
            if action == "abort":
                return state  # nothing to abort: idempotent
            raise RolloutError(f"model '{model}' has no rollout in progress")
        if expect is not None and state.candidate != expect:
            return state  # someone else already changed the rollout
        new = state.model_copy(deep=True)
        if action == "promote":
            new.stable, new.candidate = state.candidate, None
        else:
            new.candidate = None
        new.mode, new.weight, new.auto = Mode.OFF, 0.0, False
        new.lease = Lease()
        new.decide(action, reason, actor)
        return new

    result = update_state(root, model, change)
    if result is None:
        raise RolloutError(f"model '{model}' has no rollout state")
    return result


def promote(
    root: Path, model: str, reason: str = "", actor: str = "", expect: int | None = None
) -> RolloutState:
    """The candidate becomes stable for every request."""
    return _finish(root, model, "promote", reason, actor, expect)


def abort(
    root: Path, model: str, reason: str = "", actor: str = "", expect: int | None = None
) -> RolloutState:
    """Every request goes back to stable; the candidate stays on disk."""
    return _finish(root, model, "abort", reason, actor, expect)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def describe(state: RolloutState | None) -> str:
    """Human-readable status (``pronto rollout status``)."""
    if state is None:
        return "no rollout state"
    return json.dumps(state.model_dump(mode="json"), indent=2)
