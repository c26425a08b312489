"""The server's last line against overload: refuse inference that would start too late.

Two signals, either of which refuses a request at once with
:class:`~server.errors.Overloaded` (RESOURCE_EXHAUSTED, with a retry hint):

* **The request's own queueing delay.** Envoy stamps every inference request with the
  time it passed it on (:data:`QUEUED_AT_HEADER`, seconds since the epoch; for REST once
  the whole body was in, so a slow upload is not counted; a caller's own value is
  overwritten; a retry, which Envoy marks with its try number, is not judged by it).
  Requests that a worker cannot take yet wait in gRPC's queue, invisible to Python;
  when one finally starts, the stamp says how long it waited. "Starts" is when the
  worker began reading the request's message (:func:`note_arrival`, called by the
  deserializer): parsing a large message is the request's own work, not waiting. Past
  the bound it is refused instead of run: its caller has waited long enough, and the
  time goes to requests that can still be served in time.
* **A stalled event loop.** A timer that should wake every few milliseconds measures
  how late the loop runs. When it has stayed late by more than the bound for a whole
  window (the minimum over the window, as CoDel does: a burst that drains does not
  count, a standing backlog does; and at least two samples: one computation that held the
  loop for the whole window is not a backlog), inference is refused until a window passes
  in which the loop caught up. This covers direct callers that carry no stamp. After a
  window without any inference request the timer rests (one wake-up every
  :data:`IDLE_SAMPLE_SECONDS` instead of every :data:`SAMPLE_SECONDS`, which cost an idle
  worker a few percent of a core) until a request comes.

Health, metadata and listing calls are never refused: a probe must see the worker alive
and ready while it sheds.

Envoy's circuit breakers cap what reaches a worker in the first place (see
``docs/reliability.md``); this guard is for what gets past them, and for clients that
call the workers directly.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from contextvars import ContextVar

from pronto_contract.wire import QUEUED_AT_HEADER

__all__ = ["ATTEMPT_HEADER", "QUEUED_AT_HEADER", "QueueDelayGuard", "note_arrival", "queued_at"]

#: Envoy's try number; a retried request's stamp includes the backoff, so it is ignored
ATTEMPT_HEADER = "x-envoy-attempt-count"

#: how often the loop's lateness is sampled while inference requests come in
SAMPLE_SECONDS = 0.005
#: how often a resting sampler (no inference request for a whole window) looks for one
IDLE_SAMPLE_SECONDS = 0.1

#: when this RPC's worker began reading its request message (grpc.aio runs the
#: deserializer and the handler in the RPC's own task, so each RPC sees its own value)
_ARRIVED: ContextVar[float] = ContextVar("pronto_request_arrived", default=0.0)


def note_arrival() -> None:
    """Mark now as the moment this RPC's request reached the worker's code."""
    _ARRIVED.set(time.time())


def queued_at(metadata: Iterable[tuple[str, str | bytes]]) -> float:
    """When the gateway received a first try (0.0: no stamp, or a retry)."""
    stamp = 0.0
    for key, value in metadata:
        if key == QUEUED_AT_HEADER:
            try:
                stamp = float(value)
            except ValueError:
                return 0.0
        elif key == ATTEMPT_HEADER and value not in ("1", b"1"):
            return 0.0
    return stamp


class QueueDelayGuard:
    """Tracks whether this worker's requests wait longer than ``max_delay`` to start."""

    def __init__(self, max_delay: float, window: float | None = None) -> None:
        self.max_delay = max_delay
        #: a queue must stand this long before requests are refused
        self.window = window if window is not None else max(0.1, 2 * max_delay)
        self.enabled = max_delay > 0
        self.overloaded = False
        #: the largest lateness seen in the last window (for logs and tests)
        self.last_delay = 0.0
        #: an inference request was judged since the current window began
        self.busy = False
        #: the sampler rests: a whole window passed without an inference request
        self.idle = False

    def refuse(self, queued_at: float) -> bool:
        """Whether to refuse a request received at ``queued_at`` (0: unknown) now; its
        wait ends when its message started to be read (:func:`note_arrival`), or now."""
        self.busy = True
        if self.overloaded:
            return True
        if queued_at <= 0 or not self.enabled:
            return False
        started = _ARRIVED.get() or time.time()
        return started - queued_at > self.max_delay

    def observe(self, lowest: float, highest: float, samples: int) -> None:
        """End of a window of ``samples`` samples, each at least ``lowest`` seconds late.

        One sample is not a queue: a single computation that held the loop for the
        whole window (a huge batch) leaves one late sample and an idle worker behind it,
        which must not refuse the next request.
        """
        self.overloaded = self.enabled and samples > 1 and lowest > self.max_delay
        self.last_delay = highest

    async def run(self) -> None:
        """Sample the loop's lateness for as long as the worker serves."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        while True:
            if self.idle:
                await asyncio.sleep(IDLE_SAMPLE_SECONDS)
                self.idle = not self.busy
                continue
            self.busy = False
            await self._window(loop)
            # no request in the whole window: nothing can be queueing behind the loop
            self.idle = not self.busy and not self.overloaded

    async def _window(self, loop: asyncio.AbstractEventLoop) -> None:
        started = loop.time()
        lowest, highest, samples = math.inf, 0.0, 0
        while True:
            due = loop.time() + SAMPLE_SECONDS
            await asyncio.sleep(SAMPLE_SECONDS)
            now = loop.time()
            late = max(0.0, now - due)
            lowest, highest, samples = min(lowest, late), max(highest, late), samples + 1
            if now - started >= self.window:
                self.observe(lowest, highest, samples)
                return
