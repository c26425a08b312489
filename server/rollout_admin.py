"""``pronto.v1.RolloutService``: the rollout operations of ``pronto rollout`` over gRPC.

Every operation changes ``<root>/<model>/rollout.json`` (see :mod:`server.rollout_state`)
and asks this worker to rescan at once; the other workers (and servers sharing the
repository) follow on their next reload pass. The gateway has no route for this service:
it answers only on the server's own ports.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from pydantic import ValidationError

from server.errors import ErrorKind, InvalidInput, ModelNotFound, ProntoError
from server.generated.pronto.v1 import rollout_pb2 as rpb
from server.generated.pronto.v1 import rollout_pb2_grpc as rpb_grpc
from server.rollout_state import (
    Mode,
    RolloutError,
    RolloutState,
    Thresholds,
    abort,
    promote,
    read_state,
    start,
)
from server.status import Recorder, rpc

__all__ = [
    "ROLLOUT_SERVICE",
    "RolloutServicer",
    "is_loopback",
    "rollout_message",
    "thresholds_from",
]

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

ROLLOUT_SERVICE = rpb.DESCRIPTOR.services_by_name["RolloutService"].full_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class NotLocal(ProntoError):
    kind = ErrorKind.FORBIDDEN
    reason = "rollout_not_local"


def is_loopback(peer: str) -> bool:
    """Whether a grpc peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``,
    ``unix:...``) is this host."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if kind == "ipv4":
        return host.startswith("127.")
    if kind == "ipv6":
        return host == "::1" or host.startswith("::ffff:127.")
    return False


class RolloutRejected(ProntoError):
    kind = ErrorKind.PRECONDITION
    reason = "rollout_rejected"


def thresholds_from(request: rpb.StartRolloutRequest) -> Thresholds:
    """The request's thresholds over the defaults (RolloutError when out of range)."""
    given = {
        f: getattr(request, f)
        for f in (
            "max_error_rate",
            "max_latency_p99_seconds",
            "min_agreement",
            "max_quality_drop",
            "min_requests",
        )
        if request.HasField(f)  # type: ignore[arg-type]
    }
    try:
        return Thresholds(**given)
    except ValidationError as exc:
        raise RolloutError(str(exc.errors()[0]["msg"])) from exc


def rollout_message(name: str, state: RolloutState | None) -> rpb.Rollout:
    if state is None:
        return rpb.Rollout(name=name, mode=Mode.OFF.value)
    return rpb.Rollout(
        name=name,
        stable=state.stable,
        candidate=state.candidate or 0,
        has_candidate=state.candidate is not None,
        mode=state.mode.value,
        weight=state.weight,
        auto=state.auto,
        state_json=state.model_dump_json(),
    )


class RolloutServicer(rpb_grpc.RolloutServiceServicer):
    """Admin operations on the rollout state files of ``root``."""

    def __init__(
        self,
        root: Path,
        recorder: Recorder,
        rescan: Callable[[], None],
        actor: str,
        loopback_only: bool = True,
    ) -> None:
        self.loopback_only = loopback_only
        self.root = root
        self.recorder = recorder
        self.rescan = rescan
        self.actor = actor

    async def _apply(
        self, context: Context, name: str, op: Callable[[], RolloutState | None]
    ) -> rpb.Rollout:
        if self.loopback_only and not is_loopback(context.peer()):
            raise NotLocal("the rollout service answers only callers on this host")
        if not _NAME.match(name):
            raise InvalidInput(f"bad model name {name!r}", "model_name")
        if not (self.root / name).is_dir():
            raise ModelNotFound(f"unknown model '{name}'")
        loop = asyncio.get_running_loop()
        try:
            # file lock and fsync: off the event loop
            state = await loop.run_in_executor(None, op)
        except RolloutError as exc:
            raise RolloutRejected(str(exc)) from exc
        self.rescan()
        return rollout_message(name, state)

    @rpc
    async def StartRollout(self, request: rpb.StartRolloutRequest, context: Context) -> Any:
        try:
            mode = Mode(request.mode)
        except ValueError:
            mode = Mode.OFF
        if mode is Mode.OFF:
            raise InvalidInput("mode must be 'shadow' or 'canary'", "rollout_mode")
        try:
            thresholds = thresholds_from(request)
        except RolloutError as exc:
            raise InvalidInput(str(exc), "rollout_thresholds") from exc
        op = functools.partial(
            start,
            self.root,
            request.name,
            int(request.candidate),
            mode,
            weight=request.weight if request.HasField("weight") else None,
            auto=request.auto,
            stable=int(request.stable) if request.HasField("stable") else None,
            step_seconds=request.step_seconds if request.HasField("step_seconds") else None,
            steps=list(request.steps) or None,
            shadow_sample=request.shadow_sample if request.HasField("shadow_sample") else None,
            thresholds=thresholds,
            actor=self.actor,
        )
        return rpb.StartRolloutResponse(rollout=await self._apply(context, request.name, op))

    @rpc
    async def PromoteRollout(self, request: rpb.PromoteRolloutRequest, context: Context) -> Any:
        op = functools.partial(
            promote, self.root, request.name, request.reason or "operator", self.actor
        )
        return rpb.PromoteRolloutResponse(rollout=await self._apply(context, request.name, op))

    @rpc
    async def AbortRollout(self, request: rpb.AbortRolloutRequest, context: Context) -> Any:
        op = functools.partial(
            abort, self.root, request.name, request.reason or "operator", self.actor
        )
        return rpb.AbortRolloutResponse(rollout=await self._apply(context, request.name, op))

    @rpc
    async def GetRollout(self, request: rpb.GetRolloutRequest, context: Context) -> Any:
        op = functools.partial(read_state, self.root, request.name)
        return rpb.GetRolloutResponse(rollout=await self._apply(context, request.name, op))
