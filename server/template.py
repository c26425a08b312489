"""The warm template: replacement workers fork from a process that is already warm.

A fresh worker pays for importing numpy, onnxruntime and grpc and for loading and
warming every model: a second or more on a busy machine, during which Envoy has one
worker fewer. The supervisor therefore forks one *template* process at start. The
template imports the runtime, loads the models the version policy selects, and then
waits on a socket. For each ``spawn`` request it forks the worker, which starts with
the runtime imported and the model sessions in memory (shared copy-on-write), so it
serves within tens of milliseconds of the request.

The template never creates a gRPC object, and loading the models starts no thread (ONNX
Runtime sessions use one intra-op thread, the calling one; the template refuses to serve
if loading started any), so a worker forked from it holds no lock that another thread
held at the fork. Workers are forked through a short-lived intermediate process, so they
are orphaned at once and adopted by the supervisor, which is a child subreaper: the
supervisor waits for them, signals them and sees their exit status exactly as if it had
forked them itself.

Before each fork the template freezes its objects (:func:`freeze_for_fork`): the garbage
collector of a worker then never walks, and so never writes to, the objects it shares with
the template, and those pages stay shared instead of being copied into every worker.

Wire protocol on the socket pair (one line each): the template says ``ready`` once
warm; the supervisor sends a worker index; the template answers with the new worker's
pid, or ``error``.

The supervisor side (:class:`Template`) imports nothing heavy: numpy, onnxruntime and
the model code are imported in the template process only.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.settings import ServeSettings

if TYPE_CHECKING:
    from server.model import ModelHandle

__all__ = [
    "TEMPLATE_NAME",
    "WORKER_NAME",
    "Preloaded",
    "Template",
    "become_subreaper",
    "cached_handle",
    "freeze_for_fork",
    "set_process_name",
    "worker_processes",
]

log = logging.getLogger(__name__)

#: (model, version) -> (identity of the folder's files, loaded handle)
Preloaded = dict[tuple[str, int], tuple[tuple[int, ...], "ModelHandle"]]

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
TEMPLATE_NAME = "pronto-template"
WORKER_NAME = "pronto-worker"


def _prctl(option: int, value: int | bytes) -> bool:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    return False


def become_subreaper() -> bool:
    """Adopt orphaned descendants (workers forked by the template) as direct children."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_process_name(name: str) -> None:
    """The name ``ps``/``psutil`` show (``comm``), so tools can tell template from workers."""
    _prctl(PR_SET_NAME, name.encode()[:15])


def worker_processes(supervisor: Any) -> list[Any]:
    """The worker processes (``psutil.Process``) of a supervisor: its children but the template."""
    found = []
    for process in supervisor.children():
        try:
            if process.name() != TEMPLATE_NAME:
                found.append(process)
        except Exception:  # psutil.NoSuchProcess: it exited while being listed
            continue
    return found


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # pragma: no cover - non-Linux
        return 1


class Template:
    """Supervisor side: start the template, ask it for workers, notice when it dies."""

    def __init__(self, settings: ServeSettings, close_in_child: Callable[[], None]) -> None:
        self.settings = settings
        self._close_in_child = close_in_child
        self.pid = 0
        self.ready = False
        #: it was ready once: worth replacing when it dies (a template that cannot warm up
        #: would fail again; workers then start cold)
        self.warmed = False
        self._sock: socket.socket | None = None
        self._buffer = b""

    @property
    def warming(self) -> bool:
        return self._sock is not None and not self.ready

    def start(self) -> None:
        parent, child = socket.socketpair()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                parent.close()
                self._close_in_child()
                code = _template_main(self.settings, child, supervisor)
            except BaseException:
                log.exception("template process crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        child.close()
        self.pid, self.ready, self._sock, self._buffer = pid, False, parent, b""
        log.info("started the worker template (pid %d)", pid)

    def _line(self, timeout: float) -> str | None:
        """The next line from the template, or None after ``timeout`` or on EOF."""
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left < 0 or not select.select([self._sock], [], [], max(left, 0))[0]:
                return None
            try:
                data = self._sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self.lost()
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def poll_ready(self, timeout: float = 0.0) -> bool:
        """True once the template has loaded the models (waits up to ``timeout``)."""
        if not self.ready and self._sock is not None:
            line = self._line(timeout)
            if line == "ready":
                self.ready = self.warmed = True
                log.info("worker template ready (pid %d)", self.pid)
            elif line is not None:
                log.warning("worker template could not warm up: %s", line)
                self.lost()
        return self.ready

    def spawn(self, index: int, timeout: float = 5.0) -> int | None:
        """Fork worker ``index`` from the template; its pid, or None when that failed."""
        if not self.ready or self._sock is None:
            return None
        try:
            self._sock.sendall(f"{index}\n".encode())
        except OSError:
            self.lost()
            return None
        line = self._line(timeout)
        if line is None or not line.isdigit():
            log.warning("worker template did not fork worker %d (%s)", index, line)
            return None
        return int(line)

    def lost(self) -> None:
        """Forget the template (it died or misbehaved); the caller may start another."""
        if self._sock is not None:
            self._sock.close()
        self._sock, self.ready = None, False

    def stop(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        self.lost()


# -- the template process ----------------------------------------------------


def _template_main(settings: ServeSettings, conn: socket.socket, supervisor: int) -> int:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor:
        return 1
    set_process_name(TEMPLATE_NAME)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; the supervisor decides, then sends SIGTERM.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from server.worker import preload_models

    # Importing onnxruntime starts one idle native thread; that one is left behind at each
    # fork, as it would be for any fork after the import. Loading must start no more.
    baseline = _threads()
    preloaded: Preloaded = {}
    try:
        preload_models(settings, preloaded)
    except Exception as exc:
        log.exception("worker template: preloading failed")
        conn.sendall(f"error {type(exc).__name__}\n".encode())
        return 1
    threads = _threads()
    if threads > baseline:  # session thread pools would be copied with their locks mid-use
        conn.sendall(f"error {threads - baseline} threads started by loading\n".encode())
        return 1
    conn.sendall(b"ready\n")
    freeze_for_fork(changed=True)
    reader = conn.makefile("rb")
    for raw in reader:
        index = int(raw.strip())
        changed = True  # unless the refresh says otherwise
        with contextlib.suppress(Exception):
            # versions published since the last spawn
            changed = preload_models(settings, preloaded)
        freeze_for_fork(changed)
        try:
            _fork_worker(settings, index, preloaded, conn, supervisor)
        except OSError as exc:
            log.error("worker template: cannot fork worker %d: %s", index, exc)
            conn.sendall(b"error fork\n")
    return 0


def freeze_for_fork(changed: bool) -> None:
    """Move every object into the collector's permanent generation before a fork.

    A collection in a worker writes to each object it examines, so without this every
    page of the imported runtime and of the loaded models that it walks is copied into
    that worker. ``changed``: models were loaded or dropped since the last freeze, so
    first unfreeze and collect, or the garbage that dropping a version left in
    reference cycles would stay frozen for good.
    """
    if changed:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _fork_worker(
    settings: ServeSettings,
    index: int,
    preloaded: Preloaded,
    conn: socket.socket,
    supervisor: int,
) -> None:
    middle = os.fork()
    if middle:
        os.waitpid(middle, 0)
        return
    # the intermediate: fork the worker, report its pid, exit so the supervisor adopts it
    code = 0
    try:
        pid = os.fork()
        if pid == 0:
            conn.close()
            _worker_main(settings, index, preloaded, supervisor)
        conn.sendall(f"{pid}\n".encode())
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _worker_main(
    settings: ServeSettings, index: int, preloaded: Preloaded, supervisor: int
) -> None:
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # wait for the adoption, so that the death signal is tied to the supervisor
        deadline = time.monotonic() + 5.0
        while os.getppid() != supervisor and time.monotonic() < deadline:
            time.sleep(0.0005)
        if os.getppid() == supervisor:
            set_process_name(WORKER_NAME)
            from server.worker import run_worker

            code = run_worker(settings, index, preloaded)
    except BaseException:
        log.exception("worker %d crashed", index)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)


def cached_handle(
    preloaded: Preloaded | None, name: str, version: int, path: Path
) -> ModelHandle | None:
    """The template's handle for this version, when the files on disk are still the same."""
    if not preloaded:
        return None
    from server.reload import _stamp

    entry = preloaded.get((name, version))
    if entry is None or entry[0] != _stamp(path) or entry[1].path != path:
        return None
    return entry[1]
