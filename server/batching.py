"""Adaptive micro-batching: concurrent requests to one model version share one ORT run.

Requests queue by *signature*: input names, datatypes and every dimension but the first,
plus the requested outputs in order. Only requests with equal signatures are concatenated
along axis 0, so a batch is always a valid input for the model and every output row
belongs to exactly one caller. A queue is run when it holds ``max_batch_size`` rows or its
first request has waited ``max_queue_delay_us`` (0: requests that arrive in the same event
loop iteration are merged). Small batches run on the event loop (a tabular model costs
microseconds, a thread hop costs more); large ones on a helper thread.

The wait adapts to the traffic: while recent batches held a single request (one caller, or
callers too far apart to meet), a request that finds no queue runs at once, exactly like an
unbatched one, and one request in :data:`PROBE_EVERY` queues and waits to find out whether
concurrency came back. Without this a lone caller would pay the delay, and an extra event
loop turn, on every request for nothing.

Off by default: ``model.json`` may carry ``"batching": {"max_batch_size": 64,
"max_queue_delay_us": 500}``, and the server settings give the default for the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pronto_contract import Manifest
from server import batch_stats
from server.model import ort_executor, stays_inline

if TYPE_CHECKING:
    from server.model import ModelHandle

__all__ = ["Batcher", "BatchingConfig"]


Feeds = dict[str, np.ndarray]
Key = tuple[tuple[str, ...], tuple[tuple[str, str, tuple[int, ...]], ...]]

#: one queue in this many waits the full delay even when batches have been singletons
PROBE_EVERY = 64
#: weight of the newest batch in the moving average of requests per batch
SMOOTHING = 0.2


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    max_batch_size: int
    max_queue_delay_us: int = 500

    @classmethod
    def resolve(
        cls, manifest: Manifest, max_batch_size: int, max_queue_delay_us: int
    ) -> BatchingConfig | None:
        """The manifest's ``batching`` entry wins over the server defaults; None is off."""
        if manifest.has_batching_entry:
            entry = manifest.batching
            max_batch_size = entry.max_batch_size if entry is not None else 0
            if entry is not None and entry.max_queue_delay_us is not None:
                max_queue_delay_us = entry.max_queue_delay_us
        if max_batch_size <= 1:
            return None
        return cls(max_batch_size, max(0, max_queue_delay_us))


@dataclass(slots=True)
class _Queue:
    key: Key
    feeds: list[Feeds] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    futures: list[asyncio.Future[list[np.ndarray]]] = field(default_factory=list)
    total: int = 0
    timer: asyncio.Handle | None = None
    started: float = 0.0


class Batcher:
    """Merges concurrent runs of one model version (one per handle, per worker)."""

    def __init__(self, handle: ModelHandle, config: BatchingConfig, offload_rows: int) -> None:
        # the session, not the handle: no reference cycle, so an unloaded version is freed
        # as soon as its last request finishes
        self._session = handle.session
        self._labels = (handle.name, handle.version_str)
        self.config = config
        self.offload_rows = offload_rows
        self._inline_rows = handle.inline_rows
        self._delay = config.max_queue_delay_us / 1e6
        self._queues: dict[Key, _Queue] = {}
        #: runs and rows merged so far (for tests and the benchmark)
        self.batches = 0
        self.requests = 0
        self._merged = 2.0  # moving average of requests per batch; start out waiting
        self._since_probe = 0

    def _run(self, feeds: Feeds, outputs: list[str]) -> list[np.ndarray]:
        return self._session.run(outputs, feeds)  # type: ignore[no-any-return]

    async def run(self, feeds: Feeds, outputs: list[str], rows: int) -> list[np.ndarray]:
        """Run ``feeds`` (``rows`` rows) as part of a batch; returns this caller's rows."""
        loop = asyncio.get_running_loop()
        limit = self.config.max_batch_size
        if rows <= 0 or rows >= limit:  # nothing to gain from waiting
            return await self._direct(loop, feeds, outputs, rows)
        # the key is only needed when a queue may exist or one is about to start
        key: Key | None = _key(feeds, outputs) if self._queues else None
        queue = self._queues.get(key) if key is not None else None
        if queue is None and not self._wait():
            # no company lately: run now, like an unbatched request
            self._note(1)
            return await self._direct(loop, feeds, outputs, rows)
        if queue is not None and queue.total + rows > limit:
            self._flush(loop, queue)
            queue = None
        if queue is None:
            key = key if key is not None else _key(feeds, outputs)
            queue = self._queues[key] = _Queue(key, started=loop.time())
            if self._delay:
                queue.timer = loop.call_later(self._delay, self._flush, loop, queue)
            else:
                queue.timer = loop.call_soon(self._flush, loop, queue)
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        queue.feeds.append(feeds)
        queue.rows.append(rows)
        queue.futures.append(future)
        queue.total += rows
        if queue.total >= limit:
            self._flush(loop, queue)
        return await future

    def _note(self, requests: int) -> None:
        self.batches += 1
        self.requests += requests
        self._merged += SMOOTHING * (requests - self._merged)
        if requests > 1:  # any merge proves there is company: wait again at once
            self._merged = max(self._merged, 2.0)

    def _wait(self) -> bool:
        """Whether a request that finds no queue should start one and wait for company."""
        if self._merged >= 1.5:
            return True
        self._since_probe += 1
        if self._since_probe >= PROBE_EVERY:
            self._since_probe = 0
            return True
        return False

    async def _direct(
        self, loop: asyncio.AbstractEventLoop, feeds: Feeds, outputs: list[str], rows: int
    ) -> list[np.ndarray]:
        if stays_inline(rows, self.offload_rows, self._inline_rows):
            return self._run(feeds, outputs)
        return await loop.run_in_executor(ort_executor(), self._run, feeds, outputs)

    def _flush(self, loop: asyncio.AbstractEventLoop, queue: _Queue) -> None:
        if self._queues.get(queue.key) is queue:
            del self._queues[queue.key]
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        if not queue.futures:
            return
        outputs = list(queue.key[0])
        if len(queue.feeds) == 1:
            merged = queue.feeds[0]
        else:
            merged = {n: np.concatenate([f[n] for f in queue.feeds]) for n in queue.feeds[0]}
        self._note(len(queue.futures))
        batch_stats.record(
            *self._labels, queue.total, len(queue.futures), loop.time() - queue.started
        )
        if stays_inline(queue.total, self.offload_rows, self._inline_rows):
            try:
                results = self._run(merged, outputs)
            except Exception as exc:
                self._failed(queue, outputs, exc)
                return
            self._split(queue, outputs, results)
            return
        done = loop.run_in_executor(ort_executor(), self._run, merged, outputs)
        done.add_done_callback(lambda f: self._finish(queue, outputs, f))

    def _finish(
        self, queue: _Queue, outputs: list[str], done: asyncio.Future[list[np.ndarray]]
    ) -> None:
        if done.cancelled():
            _fail(queue, asyncio.CancelledError())
        elif (exc := done.exception()) is not None:
            self._failed(queue, outputs, exc)
        else:
            self._split(queue, outputs, done.result())

    def _one_by_one(self, queue: _Queue, outputs: list[str]) -> None:
        for feeds, future in zip(queue.feeds, queue.futures, strict=True):
            if not future.done():
                try:
                    future.set_result(self._run(feeds, outputs))
                except Exception as exc:
                    future.set_exception(exc)

    def _failed(self, queue: _Queue, outputs: list[str], exc: BaseException) -> None:
        # one caller's bad values must not fail the others it was merged with
        if len(queue.futures) > 1:
            self._one_by_one(queue, outputs)
        else:
            _fail(queue, exc)

    def _split(self, queue: _Queue, outputs: list[str], results: list[np.ndarray]) -> None:
        if len(queue.futures) > 1 and any(
            r.ndim == 0 or r.shape[0] != queue.total for r in results
        ):
            # an output without a batch axis cannot be cut per caller: run them one by one
            self._one_by_one(queue, outputs)
            return
        start = 0
        for rows, future in zip(queue.rows, queue.futures, strict=True):
            end = start + rows
            if not future.done():  # the caller may have been cancelled meanwhile
                future.set_result([r[start:end] for r in results])
            start = end


def _key(feeds: Feeds, outputs: list[str]) -> Key:
    """Requests merge only with equal keys: same outputs, names, datatypes, trailing dims."""
    return (
        tuple(outputs),
        tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(feeds.items())),
    )


def _fail(queue: _Queue, exc: BaseException) -> None:
    for future in queue.futures:
        if not future.done():
            future.set_exception(exc)
