"""Per-worker admission bounds: rows in flight and resident memory.

One batch of a few hundred thousand rows makes ONNX Runtime and numpy allocate hundreds of
megabytes; several at once, or one after another with glibc keeping the freed arenas,
would take the pod to its memory limit and every request on it down with it. A worker
admits rows up to a budget and refuses large requests while its resident memory is above
a guard, and hands freed memory back to the system after large requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os

from server.errors import ResourceExhausted

__all__ = ["AdmissionGuard", "resident_bytes", "return_free_memory"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
#: seconds after a large request before freed memory is handed back
TRIM_DELAY = 0.05


#: this process's /proc/self/statm, opened on first use and read again in place: one
#: ``pread`` instead of an open, a read and a close (a seventh of the cost) per large request
_statm: int | None = None


def _forget_statm() -> None:
    """In a forked child the inherited descriptor still reads the parent's figures."""
    global _statm
    if _statm is not None:
        with contextlib.suppress(OSError):
            os.close(_statm)
        _statm = None


os.register_at_fork(after_in_child=_forget_statm)


def resident_bytes() -> int:
    """This process's resident set size (one small read of /proc)."""
    global _statm
    if _statm is None:
        _statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    return int(os.pread(_statm, 64, 0).split()[1]) * _PAGE


def _load_malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    return None


_malloc_trim = _load_malloc_trim()


def return_free_memory() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class AdmissionGuard:
    """Counts rows in flight; refuses what would pass the row budget or the memory guard."""

    def __init__(self, max_rows: int, memory_limit_bytes: int, large_rows: int) -> None:
        self.max_rows = max_rows
        self.memory_limit_bytes = memory_limit_bytes
        self.large_rows = large_rows
        self.rows_in_flight = 0
        self._trim: asyncio.TimerHandle | None = None
        self._trim_again = False

    def _check_memory(self) -> None:
        if not self.memory_limit_bytes or resident_bytes() <= self.memory_limit_bytes:
            return
        return_free_memory()
        if resident_bytes() > self.memory_limit_bytes:
            raise ResourceExhausted(
                "the server is short of memory for a batch this large; retry later or "
                "send smaller batches",
                "memory",
            )

    def check(self, rows: int) -> None:
        """Refuse ``rows`` now if they would not be admitted (before decoding them)."""
        if rows > self.max_rows:
            raise ResourceExhausted(
                f"{rows} rows exceed this server's limit of {self.max_rows} rows in flight; "
                "split the batch",
                "rows_in_flight",
            )
        if self.rows_in_flight + rows > self.max_rows:
            raise ResourceExhausted(
                f"too many rows in flight ({self.rows_in_flight}); retry later",
                "rows_in_flight",
            )

    def admit(self, rows: int) -> _Admission:
        """Hold ``rows`` of the budget while the ``with`` block runs (an object with
        ``__enter__`` and ``__exit__``: a third of what a generator-based context manager
        costs on every request)."""
        return _Admission(self, rows)

    def _schedule_trim(self) -> None:
        """Trim once the request and reply messages are freed (after the RPC completes, so
        after this block): at most one trim every ``TRIM_DELAY``, and always one at least
        ``TRIM_DELAY`` after the last large request. A trim walks the whole heap; at
        hundreds of large requests a second one per request was a few percent of the CPU."""
        if self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._run_trim)
        else:
            self._trim_again = True

    def _run_trim(self) -> None:
        return_free_memory()
        if self._trim_again:
            self._trim_again = False
            self._trim = asyncio.get_running_loop().call_later(TRIM_DELAY, self._run_trim)
        else:
            self._trim = None

    async def run_trimmer(self, interval: float, growth_bytes: int = 8 * 2**20) -> None:
        """Every ``interval`` seconds, hand freed memory back while resident memory is
        ``growth_bytes`` above the lowest it has been after a trim: a large reply is freed
        only after it is sent, and large messages that were refused or failed decoding
        leave freed heap behind too."""
        floor = resident_bytes()
        while True:
            await asyncio.sleep(interval)
            if resident_bytes() > floor + growth_bytes:
                return_free_memory()
                floor = min(floor, resident_bytes())


class _Admission:
    """``rows`` held from an :class:`AdmissionGuard`'s budget; see ``admit``."""

    __slots__ = ("guard", "large", "rows")

    def __init__(self, guard: AdmissionGuard, rows: int) -> None:
        self.guard = guard
        self.rows = rows
        self.large = False

    def __enter__(self) -> None:
        guard, rows = self.guard, self.rows
        guard.check(rows)
        self.large = rows >= guard.large_rows
        if self.large:
            guard._check_memory()
        guard.rows_in_flight += rows

    def __exit__(self, *_: object) -> None:
        guard = self.guard
        guard.rows_in_flight -= self.rows
        if self.large:
            guard._schedule_trim()
