"""`pronto train`: Train a model from a CSV and publish it to the model repository."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Train a classifier from a CSV and publish it to the model repository as
<root>/<name>/<version>/ (model.onnx, model.json, metrics.json, report.md, plots/).
Without arguments: the flight-delay model on data/flights.csv (generated when missing).
Any other CSV: --data FILE --target COL [--categorical ...] [--numeric ...] --name NAME.
Nothing is published when the data is unusable or the ONNX graph disagrees with scikit-learn.
"""


def register(subparsers: Any) -> None:
    from pronto_cli.flags import add_settings_arguments
    from trainer.settings import TrainSettings

    parser = subparsers.add_parser(
        "train",
        help="Train a model from a CSV and publish it to the model repository.",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(parser, TrainSettings)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pronto_cli.flags import settings_from_args
    from trainer.errors import TrainerError
    from trainer.settings import TrainSettings

    try:
        settings = settings_from_args(TrainSettings, args)
    except ValidationError as exc:
        print(f"pronto train: error: invalid settings\n{exc}", file=sys.stderr)
        return 2
    from trainer.train import train

    try:
        result = train(settings)
    except TrainerError as exc:
        print(f"pronto train: error: {exc}", file=sys.stderr)
        return 1
    m = result.manifest["metrics"]
    done = (
        f"published {settings.name} version {result.version}"
        if result.version is not None
        else f"wrote {settings.name} (unpublished)"
    )
    print(
        f"{done} to {result.path}: ROC AUC {m['roc_auc']:.4f}, "
        f"PR AUC {m['pr_auc']:.4f}, F1 {m['f1']:.4f} "
        f"(fit {result.manifest['training']['fit_seconds']:.1f}s, "
        f"total {result.manifest['training']['total_seconds']:.1f}s)"
    )
    return 0
