"""`pronto synth`: synthetic rows from a real CSV with a Gaussian copula, plus an HTML report.

Fits :class:`trainer.copula.GaussianCopula` to every column of the CSV (categorical columns
included), writes ``--rows`` synthetic rows, and an HTML page that compares real and
synthetic distributions column by column (KS statistic or total variation distance, and a
histogram of each). The flights generator's drift mode stays the tool for tests; this is for
sharing data that looks like a real file without being it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="Generate synthetic rows like a real CSV (Gaussian copula) with an HTML report.",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="source", type=Path, required=True, help="Real CSV.")
    parser.add_argument("--rows", type=int, required=True, help="Synthetic rows to write.")
    parser.add_argument("--out", type=Path, required=True, help="Synthetic CSV to write.")
    parser.add_argument(
        "--report", type=Path, default=None, help="HTML report (default: OUT with .html)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.rows < 1:
        print("pronto synth: error: --rows must be at least 1", file=sys.stderr)
        return 2
    import pandas as pd

    from trainer.copula import GaussianCopula, synth_report

    try:
        real = pd.read_csv(args.source)
        copula = GaussianCopula(args.seed).fit(real)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        print(f"pronto synth: error: {exc}", file=sys.stderr)
        return 1
    synth = copula.sample(args.rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    synth.to_csv(args.out, index=False)
    report = args.report or args.out.with_suffix(".html")
    report.write_text(synth_report(real, synth, copula), encoding="utf-8")
    print(f"wrote {args.rows} synthetic rows to {args.out} and the report to {report}")
    return 0
