"""Payload capture and the prediction index, written off the request path.

The core hands every prediction to :meth:`CaptureSink.record`, which appends one tuple to a
bounded buffer (a full buffer drops the record and counts it; the request never waits). A
writer thread wakes every flush interval and, for the sampled predictions (a hash of the id
below the sample rate, :func:`pronto_contract.labels.is_sampled`, so every worker agrees on it):

- appends their rows (predicted label, positive-class score) to the prediction index
  (:class:`pronto_contract.labels.LabelStore`), so labels sent later can join;
- appends the payload to a JSON-lines file in the
  capture directory: two CloudEvents per prediction in structured JSON form, shaped like
  KServe's inference logger (``org.kubeflow.serving.inference.request`` with the inputs by
  feature name as ``{"instances": [...]}``, then ``...response`` with
  ``{"predictions": [...]}``, both with the prediction id as CloudEvent ``id``). When the
  request carried a trace (:data:`server.tracing.CURRENT`), both events also carry
  ``traceid`` and ``spanid`` (hex) and the CloudEvents distributed-tracing attribute
  ``traceparent``.

Files rotate by size and age (``<dir>/<model>/<version>/capture-<UTC time>-<pid>.jsonl``)
and are flushed after every batch, so a crash loses at most one flush interval. With an
upload URL (``gs://bucket/prefix``) every closed file is also copied there
(:mod:`server.capture_upload`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from pronto_contract.labels import LabelStore, is_sampled, positive_class
from server.capture_upload import CaptureUploader
from server.model import ModelHandle
from server.tracing import CURRENT, trace_ids

__all__ = ["REQUEST_TYPE", "RESPONSE_TYPE", "CaptureConfig", "CaptureSink"]

log = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


@dataclass(frozen=True)
class CaptureConfig:
    directory: Path
    #: share of predictions captured and indexed (by a hash of the prediction id)
    sample_rate: float = 0.1
    #: most predictions waiting for the writer; more are dropped and counted
    buffer: int = 10_000
    flush_interval: float = 1.0
    max_file_bytes: int = 64 * 1024 * 1024
    rotate_seconds: float = 3600.0
    #: ``gs://bucket/prefix`` that closed capture files are copied to ("" = none)
    upload_url: str = ""


@dataclass
class _ModelState:
    """What the writer needs per model version, derived once."""

    classes: list[str]
    positive_index: int | None


class _File:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh: IO[str] = path.open("a", encoding="utf-8")
        self.opened = time.monotonic()
        self.bytes = 0


class CaptureSink:
    """Per-worker capture: bounded buffer on the hot path, one writer thread."""

    def __init__(self, config: CaptureConfig, metrics: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._capacity = config.buffer
        self.dropped = 0
        self._dropped_reported = 0
        self.captured = 0
        self.indexed = 0
        self._files: dict[tuple[str, str], _File] = {}
        self._models: dict[tuple[str, str], _ModelState] = {}
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._store: LabelStore | None = None
        self._source = f"pronto/{socket.gethostname()}/{os.getpid()}"
        self.uploader: CaptureUploader | None = None
        if config.upload_url:
            self.uploader = CaptureUploader(config.upload_url, config.directory, metrics)

    # -- hot path --------------------------------------------------------------
    def record(
        self,
        prediction_id: str,
        handle: ModelHandle,
        feeds: Mapping[str, np.ndarray],
        labels: Any,
        proba: Any,
        rows: int,
    ) -> None:
        # the cheapest bounded append: no clock read, no sampling decision here; the trace
        # is kept as it came and formatted by the writer, for captured predictions only
        buf = self._buffer
        if len(buf) < self._capacity:
            buf.append((prediction_id, handle, feeds, labels, proba, rows, CURRENT.get()))
        else:
            self.dropped += 1

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        if self.uploader is not None:
            self.uploader.start()

    def close(self) -> None:
        """Write what is buffered, close files; call once, after serving stopped."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        else:
            self.flush()
        for f in self._files.values():
            self._closed(f)
        self._files.clear()
        if self.uploader is not None:
            self.uploader.close()
        if self._store is not None:
            self._store.close()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.config.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("capture: write failed")
        self.flush()

    # -- writer thread -------------------------------------------------------------
    @property
    def store(self) -> LabelStore:
        if self._store is None:  # opened in the thread that uses it
            self._store = LabelStore(self.config.directory)
        return self._store

    def flush(self) -> None:
        """Move everything buffered to the index and the capture files."""
        buf = self._buffer
        items = []
        while buf:
            items.append(buf.popleft())
        if items:
            index_rows: list[tuple[str, int, str, str, float, str, Any]] = []
            lines: dict[tuple[str, str], list[str]] = {}
            rate = self.config.sample_rate
            # served at most one flush interval ago: the flush time stands for all of them
            ts = time.time()
            for item in items:
                if not is_sampled(item[0], rate):
                    continue
                try:
                    self._add(ts, item, index_rows, lines)
                except Exception as exc:  # one odd prediction must not lose the batch
                    log.warning("capture: prediction %s skipped: %r", item[0], exc)
            if index_rows:
                self.store.add_predictions(index_rows)
                self.indexed += len(index_rows)
            for key, chunk in lines.items():
                self._write(key, chunk)
        self._report()

    def _state(self, handle: ModelHandle) -> _ModelState:
        key = (handle.name, handle.version_str)
        state = self._models.get(key)
        if state is None:
            classes = list(handle.classes or ())
            positive = positive_class(handle.manifest, classes)
            self.store.add_model(handle.name, handle.version_str, classes, handle.manifest)
            state = self._models[key] = _ModelState(
                classes, classes.index(positive) if positive is not None else None
            )
        return state

    def _add(
        self,
        ts: float,
        item: tuple[Any, ...],
        index_rows: list[tuple[str, int, str, str, float, str, Any]],
        lines: dict[tuple[str, str], list[str]],
    ) -> None:
        pid, handle, feeds, labels, proba, rows, trace = item
        state = self._state(handle)
        p = None if proba is None else np.asarray(proba, dtype=np.float64).reshape(rows, -1)
        if labels is not None:
            predicted = [x if isinstance(x, str) else str(x) for x in labels.ravel().tolist()]
        elif p is not None and state.classes:
            predicted = [state.classes[i] for i in p.argmax(axis=1).tolist()]
        else:
            predicted = []
        scores: list[Any] = (
            p[:, state.positive_index].tolist()
            if p is not None and state.positive_index is not None
            else [None] * rows
        )
        name, version = handle.name, handle.version_str
        if predicted:
            index_rows.extend(
                (pid, i, name, version, ts, predicted[i], scores[i]) for i in range(rows)
            )
        lines.setdefault((name, version), []).extend(
            self._events(
                ts,
                pid,
                name,
                version,
                handle.feature_columns(feeds),
                predicted,
                p,
                state,
                rows,
                trace,
            )
        )

    def _events(
        self,
        ts: float,
        pid: str,
        name: str,
        version: str,
        feeds: Mapping[str, np.ndarray],
        predicted: list[str],
        p: np.ndarray | None,
        state: _ModelState,
        rows: int,
        trace: Any = None,
    ) -> list[str]:
        columns = {k: v.reshape(rows, -1)[:, 0].tolist() for k, v in feeds.items()}
        instances = [{k: col[i] for k, col in columns.items()} for i in range(rows)]
        predictions: list[dict[str, Any]] = []
        probs = p.tolist() if p is not None else None
        for i in range(rows):
            out: dict[str, Any] = {}
            if predicted:
                out["label"] = predicted[i]
            if probs is not None:
                out["probabilities"] = (
                    dict(zip(state.classes, probs[i], strict=True))
                    if len(state.classes) == len(probs[i])
                    else probs[i]
                )
            predictions.append(out)
        when = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
        common = {
            "specversion": "1.0",
            "id": pid,
            "source": self._source,
            "time": when,
            "datacontenttype": "application/json",
            "inferenceservicename": name,
            "modelversion": version,
            "component": "predictor",
        }
        ids = trace_ids(trace)
        if ids is not None:
            # CloudEvents attribute names are lower-case letters and digits only
            common.update(traceid=ids[0], spanid=ids[1], traceparent=ids[2])
        head = json.dumps(common)[:-1]  # both events share these attributes
        return [
            f'{head}, "type": "{REQUEST_TYPE}", "data": {{"instances": {json.dumps(instances)}}}}}',
            f'{head}, "type": "{RESPONSE_TYPE}", "data": '
            f'{{"predictions": {json.dumps(predictions)}}}}}',
        ]

    def _write(self, key: tuple[str, str], chunk: list[str]) -> None:
        f = self._files.get(key)
        cfg = self.config
        if f is not None and (
            f.bytes >= cfg.max_file_bytes or time.monotonic() - f.opened >= cfg.rotate_seconds
        ):
            self._closed(f)
            f = None
        if f is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            path = cfg.directory / key[0] / key[1] / f"capture-{stamp}-{os.getpid()}.jsonl"
            f = self._files[key] = _File(path)
        text = "\n".join(chunk) + "\n"
        f.fh.write(text)
        f.fh.flush()
        f.bytes += len(text)
        self.captured += len(chunk) // 2

    def _closed(self, f: _File) -> None:
        f.fh.close()
        if self.uploader is not None:
            self.uploader.submit(f.path)

    def _report(self) -> None:
        m = self.metrics
        if m is None:
            return
        dropped = self.dropped
        if dropped != self._dropped_reported:
            m.dropped.inc(dropped - self._dropped_reported)
            self._dropped_reported = dropped
        m.buffered.set(len(self._buffer))
        m.report(self.indexed, self.captured)
        self.indexed = self.captured = 0
