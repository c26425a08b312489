"""The prediction index: every served prediction's rows, joined with labels as they arrive.

One SQLite database in the capture directory (WAL mode) is shared by every worker of a
server: each worker's capture thread appends the rows it served, a feedback call on any
worker validates its ids against the index and writes the labels, and the supervisor reads
it to compute live quality (:mod:`server.quality`). A row keeps the predicted label and the
positive-class score, so a label that arrives hours later still joins, as long as the row
is younger than the retention.

Pure Python and the standard library only: the supervisor imports this module and must not
load numpy. It lives in the contract because both sides use it: the server writes the index
and labels, the trainer (``pronto dataset``) reads them back into a training set.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pronto_contract.manifest import Manifest

__all__ = [
    "INDEX_FILENAME",
    "LabelStore",
    "ModelInfo",
    "UnknownPrediction",
    "WrongLabels",
    "is_sampled",
    "positive_class",
]

INDEX_FILENAME = "predictions.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    classes TEXT NOT NULL,        -- JSON list
    positive TEXT,                -- positive class of a binary classifier
    reference TEXT NOT NULL,      -- JSON: training-time test metrics
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT NOT NULL,
    row INTEGER NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    ts REAL NOT NULL,
    predicted TEXT,
    score REAL,                   -- probability of the positive class
    label TEXT,
    labeled_at REAL,
    PRIMARY KEY (id, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (model, version, ts);
CREATE INDEX IF NOT EXISTS predictions_by_label
    ON predictions (model, version, labeled_at) WHERE labeled_at IS NOT NULL;
"""

#: training-time metrics copied into the index, the reference of quality alerts
REFERENCE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def is_sampled(prediction_id: str, rate: float) -> bool:
    """Whether a prediction falls in the capture sample: a hash of its id, so that every
    worker (the one that served it, the one that takes its labels) decides the same."""
    if rate >= 1.0:
        return True
    return rate > 0.0 and zlib.crc32(prediction_id.encode()) < rate * 4_294_967_296


def positive_class(manifest: Manifest, classes: Sequence[str]) -> str | None:
    """The positive class of a binary classifier: the manifest's, else the larger label."""
    if len(classes) != 2:
        return None
    named = manifest.signature.positive_class or manifest.metrics.positive_class
    if named is not None and str(named) in classes:
        return str(named)
    return max(classes)


@dataclass(frozen=True)
class ModelInfo:
    model: str
    version: str
    classes: tuple[str, ...]
    positive: str | None
    reference: dict[str, float]


class UnknownPrediction(LookupError):
    """A feedback id that the index does not hold (never served, other model, or expired)."""


class WrongLabels(ValueError):
    """Labels that do not fit their prediction (count or class)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LabelStore:
    """One connection to the index; use one per thread."""

    def __init__(self, directory: Path, *, timeout: float = 10.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / INDEX_FILENAME
        # autocommit off; explicit transactions keep batches atomic and cheap
        # one thread at a time uses a store, but it may be closed from another one
        self.db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed batch survives a process crash; only an OS crash
        # can lose the last transactions
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._models: dict[tuple[str, str], ModelInfo] = {}

    def create(self) -> None:
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- writers ---------------------------------------------------------------
    def add_model(
        self, model: str, version: str, classes: Sequence[str], manifest: Manifest
    ) -> None:
        metrics = manifest.metrics.model_dump()  # the declared metrics and any others
        reference = {
            k: float(v) for k in REFERENCE_METRICS if isinstance(v := metrics.get(k), int | float)
        }
        self.db.execute(
            "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?)",
            (
                model,
                version,
                json.dumps(list(classes)),
                positive_class(manifest, classes),
                json.dumps(reference),
            ),
        )

    def add_predictions(self, rows: Iterable[tuple[str, int, str, str, float, str, Any]]) -> None:
        """Rows of ``(id, row, model, version, ts, predicted, score)`` in one transaction."""
        with self._transaction():
            # a reused caller id replaces the older prediction (and forgets its label)
            self.db.executemany(
                "INSERT OR REPLACE INTO predictions (id, row, model, version, ts, predicted, "
                "score) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def label(
        self, model: str, feedback: Sequence[tuple[str, Sequence[str]]], now: float | None = None
    ) -> int:
        """Record labels for predictions of ``model``; all or nothing. Returns rows labeled.

        Raises :class:`UnknownPrediction` or :class:`WrongLabels` before writing anything.
        """
        now = time.time() if now is None else now
        with self._transaction():
            updates, missing = self._validate(model, feedback, now)
            if missing:
                raise UnknownPrediction(
                    f"no prediction '{missing[0]}' of model '{model}' (unknown, or older than "
                    "the label retention)"
                )
            self.db.executemany(
                "UPDATE predictions SET label = ?, labeled_at = ? WHERE id = ? AND row = ?",
                updates,
            )
        return len(updates)

    def check(self, model: str, feedback: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """Ids of the predictions of ``model`` this index holds; writes nothing.

        Raises :class:`WrongLabels` when the labels of a held prediction are invalid.
        """
        _, missing = self._validate(model, feedback, 0.0)
        absent = set(missing)
        return [pid for pid, _ in feedback if pid not in absent]

    def _validate(
        self, model: str, feedback: Sequence[tuple[str, Sequence[str]]], now: float
    ) -> tuple[list[tuple[str, float, str, int]], list[str]]:
        """The row updates for the held predictions, and the ids not held."""
        updates: list[tuple[str, float, str, int]] = []
        missing: list[str] = []
        for pid, labels in feedback:
            # by primary key only: with "model = ?" SQLite may pick the time index and
            # scan every row of the model
            found = self.db.execute(
                "SELECT version, count(*) FROM predictions WHERE id = ? AND +model = ? "
                "GROUP BY version",
                (pid, model),
            ).fetchone()
            if found is None:
                missing.append(pid)
                continue
            version, rows = found
            if len(labels) != rows:
                raise WrongLabels(
                    f"prediction '{pid}' has {rows} row(s), got {len(labels)} label(s)",
                    "label_count",
                )
            info = self.model_info(model, version)
            if info is not None and info.classes:
                for value in labels:
                    if value not in info.classes:
                        raise WrongLabels(
                            f"label '{value}' of prediction '{pid}' is not a class of "
                            f"model '{model}' ({', '.join(info.classes)})",
                            "label_class",
                        )
            updates.extend((value, now, pid, i) for i, value in enumerate(labels))
        return updates, missing

    def prune(self, older_than: float) -> int:
        """Forget predictions served before ``older_than`` (epoch seconds)."""
        with self._transaction():
            cur = self.db.execute("DELETE FROM predictions WHERE ts < ?", (older_than,))
        return cur.rowcount

    # -- readers ---------------------------------------------------------------
    def model_info(self, model: str, version: str) -> ModelInfo | None:
        info = self._models.get((model, version))
        if info is None:
            found = self.db.execute(
                "SELECT classes, positive, reference FROM models WHERE model = ? AND version = ?",
                (model, version),
            ).fetchone()
            if found is None:
                return None
            classes, positive, reference = found
            info = ModelInfo(
                model, version, tuple(json.loads(classes)), positive, json.loads(reference)
            )
            self._models[(model, version)] = info
        return info

    def models(self) -> list[ModelInfo]:
        keys = self.db.execute("SELECT model, version FROM models ORDER BY model, version")
        return [info for m, v in keys.fetchall() if (info := self.model_info(m, v)) is not None]

    def labeled(
        self, model: str, version: str, since: float, limit: int
    ) -> list[tuple[str, float | None, str]]:
        """``(predicted, score, label)`` of the newest labeled rows, labeled after ``since``."""
        return self.db.execute(
            "SELECT predicted, score, label FROM predictions WHERE model = ? AND version = ? "
            "AND labeled_at >= ? ORDER BY labeled_at DESC LIMIT ?",
            (model, version, since, limit),
        ).fetchall()

    def served(
        self, model: str, version: str, since: float, limit: int
    ) -> list[tuple[str, float | None]]:
        """``(predicted, score)`` of the newest served rows, served after ``since``."""
        return self.db.execute(
            "SELECT predicted, score FROM predictions WHERE model = ? AND version = ? "
            "AND ts >= ? ORDER BY ts DESC LIMIT ?",
            (model, version, since, limit),
        ).fetchall()

    def all_labels(self) -> dict[tuple[str, int], str]:
        """Every recorded label by ``(id, row)`` (for building training data)."""
        rows = self.db.execute("SELECT id, row, label FROM predictions WHERE label IS NOT NULL")
        return {(pid, row): label for pid, row, label in rows}

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    """``BEGIN IMMEDIATE`` (take the write lock up front: no upgrade deadlocks) … COMMIT."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
