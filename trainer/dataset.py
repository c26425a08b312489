"""`pronto dataset`: captured inputs joined with their labels, as a training CSV.

Reads the capture directory of ``pronto serve --capture-dir``: the request events of the
JSON-lines capture files (inputs by feature name, keyed by prediction id) and the labels
recorded through FeedbackService in the prediction index. Every captured row that has a
label becomes one CSV row: the model's input features, then the label in the target
column. ``pronto train --data FILE --target <column> --name <model>`` trains a new version
on it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DatasetSummary", "build_dataset", "register"]

REQUEST_TYPE = "org.kubeflow.serving.inference.request"


@dataclass(frozen=True)
class DatasetSummary:
    rows: int
    captured_rows: int
    columns: list[str]


def _requests(directory: Path, model: str | None) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.rglob("capture-*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    # the last line of a file being written when the server crashed
                    print(f"pronto dataset: skipping {path}:{number}: not JSON", file=sys.stderr)
                    continue
                if event.get("type") != REQUEST_TYPE:
                    continue
                if model is not None and event.get("inferenceservicename") != model:
                    continue
                yield event


def build_dataset(
    captures: Path, out: Path, *, target: str = "label", model: str | None = None
) -> DatasetSummary:
    """Write the labeled captured rows of ``captures`` to ``out``; returns what was written."""
    from server.labels import INDEX_FILENAME, LabelStore

    if not (captures / INDEX_FILENAME).exists():
        raise FileNotFoundError(f"{captures}: no prediction index ({INDEX_FILENAME})")
    store = LabelStore(captures)
    try:
        labels = store.all_labels()
    finally:
        store.close()
    models: set[str] = set()
    columns: list[str] | None = None
    rows: list[list[Any]] = []
    captured = 0
    for event in _requests(captures, model):
        models.add(str(event.get("inferenceservicename")))
        if len(models) > 1:
            raise ValueError(
                f"{captures} holds captures of several models ({', '.join(sorted(models))}): "
                "choose one with --model"
            )
        for i, instance in enumerate(event["data"]["instances"]):
            captured += 1
            label = labels.get((event["id"], i))
            if label is None:
                continue
            if columns is None:
                columns = list(instance)
                if target in columns:
                    raise ValueError(f"target column '{target}' is also an input feature")
            rows.append([instance.get(c) for c in columns] + [label])
    if columns is None:
        raise ValueError(f"{captures}: no captured row has a label yet")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*columns, target])
        writer.writerows(rows)
    return DatasetSummary(len(rows), captured, [*columns, target])


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="Join captured inputs with their labels into a training CSV.",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--captures", type=Path, required=True, help="Capture directory of `pronto serve`."
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write.")
    parser.add_argument(
        "--target", default="label", help="Name of the label column (default: label)."
    )
    parser.add_argument(
        "--model", default=None, help="Model whose captures to use (needed if there are several)."
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        summary = build_dataset(args.captures, args.out, target=args.target, model=args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"pronto dataset: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.rows} labeled rows of {summary.captured_rows} captured to {args.out} "
        f"(columns: {', '.join(summary.columns)})"
    )
    return 0
