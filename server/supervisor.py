"""The supervisor: fork workers, restart the dead, serve /metrics, drain on signals.

Workers are forked before any gRPC object exists in this process (gRPC's C core does
not survive fork with live channels or servers; see grpc/grpc
examples/python/multiprocessing). The supervisor itself never creates one, and never
imports numpy or onnxruntime: workers fork from a warm template process that has
(:mod:`server.template`), so a replacement serves within milliseconds. When the template
is not available (still warming up, or dead and being replaced) a worker is forked from
the supervisor directly and imports and loads everything itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pronto_contract import select_versions
from server import __version__
from server.errors import EXIT_FATAL
from server.metrics import (
    ServerMetrics,
    mark_worker_dead,
    prepare_multiprocess_dir,
    start_metrics_server,
)
from server.quality import supervisor_collectors
from server.reload import version_policies
from server.rollout_analysis import Analyst
from server.settings import ServeSettings, usable_cpus
from server.template import WORKER_NAME, Template, become_subreaper, set_process_name

__all__ = ["Supervisor", "serve"]

log = logging.getLogger(__name__)

#: longest sleep of the main loop; a worker's death (SIGCHLD) wakes it at once
POLL_SECONDS = 0.05
#: how long the first workers wait for the template to load the models
TEMPLATE_WARMUP_SECONDS = 300.0
#: a worker that dies sooner than this after starting counts as crash-looping (one forked
#: from the template serves within tens of milliseconds: one that lived longer had served,
#: and is replaced at once however often it is killed)
QUICK_DEATH_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0


@dataclass
class _Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Owns the worker processes of one ``pronto serve``."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.workers = settings.workers or usable_cpus()
        self.slots = [_Slot(i) for i in range(self.workers)]
        self._stopping = False
        self._metrics: ServerMetrics | None = None
        self._http: object | None = None
        self._own_metrics_dir: Path | None = None
        self._analyst: Analyst | None = None
        self._template = Template(settings, self._close_in_child)
        self._wakeup: tuple[int, int] | None = None

    # -- process management --------------------------------------------------
    def _close_in_child(self) -> None:
        """In a freshly forked child: drop what belongs to the supervisor alone."""
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in self._wakeup:
                os.close(fd)
        if self._http is not None:
            self._http.socket.close()  # type: ignore[attr-defined]

    def _spawn(self, slot: _Slot) -> None:
        if self._template.poll_ready():
            pid = self._template.spawn(slot.index)
            if pid is not None:
                slot.pid, slot.started = pid, time.monotonic()
                log.info("started worker %d (pid %d) from the template", slot.index, pid)
                return
        self._spawn_cold(slot)

    def _spawn_cold(self, slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # until the worker installs its own reload handler, a SIGHUP is moot: it
                # is about to read the repository anyway
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                self._close_in_child()
                set_process_name(WORKER_NAME)
                # numpy/OpenBLAS and onnxruntime start native threads on import; importing
                # them only here keeps the supervisor single-threaded when it forks.
                for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                    os.environ.setdefault(var, "1")
                from server.worker import run_worker

                code = run_worker(self.settings, slot.index)
            except BaseException:
                log.exception("worker %d crashed", slot.index)
            finally:
                logging.shutdown()
                os._exit(code)
        slot.pid, slot.started = pid, time.monotonic()
        log.info("started worker %d (pid %d)", slot.index, pid)

    def _on_exit(self, slot: _Slot, status: int) -> bool:
        """Handle a dead worker; False means the whole server must stop."""
        code = os.waitstatus_to_exitcode(status)
        mark_worker_dead(slot.pid)
        level = logging.INFO if self._stopping and code == 0 else logging.WARNING
        log.log(level, "worker %d (pid %d) exited with %d", slot.index, slot.pid, code)
        slot.pid = 0
        if self._stopping:
            slot.exit_codes.append(code)
            return True
        if code == EXIT_FATAL:
            log.error("worker %d cannot start (see above); stopping", slot.index)
            return False
        now = time.monotonic()
        slot.quick_deaths = slot.quick_deaths + 1 if now - slot.started < QUICK_DEATH_SECONDS else 0
        delay = (
            0.0 if slot.quick_deaths < 2 else min(MAX_BACKOFF_SECONDS, 0.25 * 2**slot.quick_deaths)
        )
        slot.restart_at = now + delay
        if self._metrics is not None:
            self._metrics.worker_restarts.inc()
        return True

    def _reap(self) -> bool:
        ok = True
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return ok
            if pid == 0:
                return ok
            if pid == self._template.pid:
                self._on_template_exit(status)
                continue
            for slot in self.slots:
                if slot.pid == pid:
                    ok = self._on_exit(slot, status) and ok

    def _on_template_exit(self, status: int) -> None:
        self._template.lost()
        self._template.pid = 0
        if self._stopping or not self._template.warmed:
            return
        log.warning(
            "worker template exited with %d; starting another (workers start cold meanwhile)",
            os.waitstatus_to_exitcode(status),
        )
        self._template.start()

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when a child exits (SIGCHLD writes to the pipe)."""
        if self._wakeup is None:
            time.sleep(seconds)
            return
        if select.select([self._wakeup[0]], [], [], seconds)[0]:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wakeup[0], 512)

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: draining", signal.Signals(signum).name)
        self._stopping = True

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP: every worker rescans the model repository."""
        log.info("received SIGHUP: workers rescan %s", self.settings.model_repository)
        for slot in self.slots:
            if slot.pid:
                os.kill(slot.pid, signal.SIGHUP)

    # -- main loop -----------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        # a reload request before the workers exist must not kill the supervisor
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            policy, policies = version_policies(s)
            models = select_versions(s.model_repository, s.models, policy, policies)
        except (FileNotFoundError, ValueError) as exc:
            log.error("%s", exc)
            return 2
        if not models:
            log.error("no models found in %s", s.model_repository)
            return 2
        if s.metrics_port:
            path = prepare_multiprocess_dir(s.metrics_dir)
            self._own_metrics_dir = path if s.metrics_dir is None else None
            self._metrics = ServerMetrics()
            self._metrics.set_build_info(__version__)
            log.info("metrics in %s", path)
        collectors = supervisor_collectors(s)  # before the fork: workers find the index
        if s.metrics_port and s.rollout_analysis_interval:
            self._analyst = Analyst.for_supervisor(s, path, collectors)
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        become_subreaper()
        # The template loads the models once; the first workers fork from it as well, so
        # their sessions share memory with it.
        self._template.start()
        deadline = time.monotonic() + TEMPLATE_WARMUP_SECONDS
        while not self._stopping and time.monotonic() < deadline:
            if self._template.poll_ready(0.05) or not self._template.warming:
                break
            self._reap()
        signal.signal(signal.SIGHUP, self._reload)
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (read_fd, write_fd)
        signal.set_wakeup_fd(write_fd)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for slot in self.slots:
            self._spawn(slot)
        if s.metrics_port:
            # after the first fork so no worker starts with the HTTP thread's state
            self._http = start_metrics_server(s.metrics_port, s.metrics_host, collectors)
        log.info(
            "serving %s on %s:%d with %d workers",
            ", ".join(models),
            s.host,
            s.port,
            self.workers,
        )
        healthy = True
        while not self._stopping:
            if not self._reap():
                healthy = False
                break
            now = time.monotonic()
            for slot in self.slots:
                if slot.pid == 0 and now >= slot.restart_at and not self._stopping:
                    self._spawn(slot)
            if self._analyst is not None:
                self._analyst.maybe_tick(now)
            self._sleep(POLL_SECONDS)
        return self._shutdown(healthy)

    def _shutdown(self, healthy: bool) -> int:
        self._stopping = True
        self._template.stop()
        for slot in self.slots:
            if slot.pid:
                os.kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_period + self.settings.drain_delay + 5
        while any(slot.pid for slot in self.slots) and time.monotonic() < deadline:
            self._reap()
            self._sleep(POLL_SECONDS)
        for slot in self.slots:
            if slot.pid:
                log.error("worker %d did not stop in time; killing it", slot.index)
                os.kill(slot.pid, signal.SIGKILL)
                os.waitpid(slot.pid, 0)
                mark_worker_dead(slot.pid)
                slot.pid = 0
                healthy = False
        if self._template.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._template.pid, 0)
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]
        if self._own_metrics_dir is not None:
            shutil.rmtree(self._own_metrics_dir, ignore_errors=True)
        # -SIGTERM: a worker stopped while still loading, before it had anything to drain
        clean = all(c in (0, -signal.SIGTERM) for slot in self.slots for c in slot.exit_codes)
        log.info("stopped")
        return 0 if healthy and clean else 1


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )


def serve(settings: ServeSettings) -> int:
    """Run the server in this process until SIGTERM/SIGINT; returns the exit status."""
    configure_logging(settings.log_level)
    return Supervisor(settings).run()
