"""CPU seconds and peak RSS of a process tree while a load runs (the whole tree's, and the
largest single process's: a worker, or the template that holds the same models).

Workers may die and be replaced during a run, so the sampler keeps the last
CPU reading of every pid it has seen and sums them at the end.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import psutil

__all__ = ["ProcessSampler", "TreeStats"]


@dataclass
class TreeStats:
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    peak_process_rss_mib: float = 0.0
    processes: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_seconds": round(self.cpu_seconds, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "peak_process_rss_mib": round(self.peak_process_rss_mib, 1),
            "processes": self.processes,
        }


@dataclass
class ProcessSampler:
    """Samples ``root_pids`` and their descendants every ``interval`` seconds."""

    root_pids: list[int]
    interval: float = 0.25
    _start_cpu: dict[int, float] = field(default_factory=dict)
    _last_cpu: dict[int, float] = field(default_factory=dict)
    _peak_rss: int = 0
    _peak_process_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tree(self) -> list[psutil.Process]:
        procs: list[psutil.Process] = []
        for pid in self.root_pids:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs.append(root)
                procs.extend(root.children(recursive=True))
        return procs

    def _sample(self) -> None:
        rss = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    t = proc.cpu_times()
                    cpu = t.user + t.system
                    one = proc.memory_info().rss
                    rss += one
                    self._peak_process_rss = max(self._peak_process_rss, one)
                self._start_cpu.setdefault(proc.pid, cpu)
                self._last_cpu[proc.pid] = cpu
        self._peak_rss = max(self._peak_rss, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ProcessSampler:
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()

    @property
    def stats(self) -> TreeStats:
        cpu = sum(self._last_cpu[p] - self._start_cpu.get(p, 0.0) for p in self._last_cpu)
        return TreeStats(
            cpu_seconds=cpu,
            peak_rss_mib=self._peak_rss / 2**20,
            peak_process_rss_mib=self._peak_process_rss / 2**20,
            processes=len(self._last_cpu),
        )
