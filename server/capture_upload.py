"""Closed capture files copied to a ``gs://`` prefix (the models bucket), off the request path.

A worker's capture writer hands each file it closes (rotation by size or age, shutdown) to
:class:`CaptureUploader`, whose thread uploads it to
``gs://<bucket>/<prefix>/<model>/<version>/<file name>`` with google-cloud-storage (imported
in that thread, after the fork; credentials from the environment: Workload Identity in a
pod, ``STORAGE_EMULATOR_HOST`` for an emulator). An uploaded file gets an empty
``<file>.uploaded`` marker beside it; the local file stays, since ``pronto dataset`` joins it
with the local prediction index. Failures are retried with backoff and counted; a file a
crashed worker left behind (its process gone, no marker) is uploaded by the next uploader
that starts on the same directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CaptureUploader", "parse_gs_url"]

log = logging.getLogger(__name__)

MARKER = ".uploaded"
_NAME = re.compile(r"capture-[0-9TZ]+-(\d+)\.jsonl")


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    m = re.fullmatch(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(.*))?", url.strip())
    if m is None:
        raise ValueError(f"not a gs://bucket[/prefix] URL: {url!r}")
    return m[1], (m[2] or "").strip("/")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CaptureUploader:
    """One thread per worker that copies closed capture files to GCS."""

    def __init__(
        self,
        url: str,
        directory: Path,
        metrics: Any = None,
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
    ) -> None:
        self.bucket_name, self.prefix = parse_gs_url(url)
        self.directory = directory
        self.metrics = metrics
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._bucket: Any = None
        self.uploaded = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capture-upload", daemon=True)
        self._thread.start()
        for path in self.leftovers():
            self.submit(path)

    def leftovers(self) -> list[Path]:
        """Capture files without a marker whose writing process is gone."""
        found = []
        for path in sorted(self.directory.glob("*/*/capture-*.jsonl")):
            m = _NAME.fullmatch(path.name)
            if m is None or int(m[1]) == os.getpid() or _alive(int(m[1])):
                continue
            if not path.with_name(path.name + MARKER).exists():
                found.append(path)
        return found

    def submit(self, path: Path) -> None:
        """Upload ``path`` (a closed capture file) in the background."""
        self._queue.put(path)

    def close(self, timeout: float = 30.0) -> None:
        """Upload what is queued, waiting at most ``timeout`` seconds."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("capture upload: %d file(s) not uploaded at shutdown", self._queue.qsize())

    def object_name(self, path: Path) -> str:
        relative = path.relative_to(self.directory).as_posix()  # <model>/<version>/<file>
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            if path is None:
                return
            self._upload_with_retries(path)

    def _upload_with_retries(self, path: Path) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._upload(path)
            except Exception as exc:
                if attempt == self.attempts:
                    self.failed += 1
                    self._count("failed")
                    log.warning("capture upload: %s not uploaded after %d attempts: %r",
                                path.name, attempt, exc)  # fmt: skip
                    return
                time.sleep(self.backoff * 2 ** (attempt - 1))
            else:
                self.uploaded += 1
                self._count("uploaded")
                path.with_name(path.name + MARKER).touch()
                return

    def _upload(self, path: Path) -> None:
        if self._bucket is None:
            from google.cloud import storage

            self._bucket = storage.Client().bucket(self.bucket_name)
        from google.api_core.exceptions import PreconditionFailed

        blob = self._bucket.blob(self.object_name(path))
        # never overwrite: names are unique, and a retry after a lost reply finds it there;
        # the retries are ours (counted, with backoff), not the library's
        with contextlib.suppress(PreconditionFailed):
            blob.upload_from_filename(
                str(path),
                content_type="application/x-ndjson",
                if_generation_match=0,
                retry=None,
                timeout=self.timeout,
            )

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.uploads.labels(outcome).inc()
