"""``python -m trainer gate``: publish a candidate only when it is at least as good as production.

Both models are scored by their ONNX graphs (what the server runs) on the *same* held-out rows:
the test split that the candidate's own parameters (``test_size``, ``seed``) cut from the data
it was trained on. The metric and the tolerance come from ``params.yaml`` (``gate:``), so a
change to the bar is reviewed like any other parameter change.

The verdict goes to ``gate.json`` (machine-readable, read by the training workflow) and
``gate.md`` (the table the pull-request report shows). The exit status is 0 when the candidate
passes, 1 when it is worse than production by more than the tolerance, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOWER_IS_BETTER", "GateParams", "Verdict", "compare", "load_params", "register"]

#: Metrics of ``trainer.metrics.compute_metrics`` where smaller values are better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})
#: Every scalar quality metric the gate may be asked to compare.
METRICS = frozenset({"roc_auc", "pr_auc", "accuracy", "f1", "precision", "recall"}) | (
    LOWER_IS_BETTER
)


@dataclass(frozen=True)
class GateParams:
    """The bar a candidate has to clear (``gate:`` in params.yaml)."""

    metric: str
    tolerance: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"gate.metric must be one of {sorted(METRICS)}, not {self.metric!r}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"gate.tolerance must be in [0, 1), not {self.tolerance}")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one comparison; ``production`` is None when nothing is in production yet."""

    metric: str
    tolerance: float
    candidate: float
    production: float | None
    passed: bool
    reason: str


def load_params(path: Path) -> GateParams:
    """``gate.metric`` and ``gate.tolerance`` from a DVC params file."""
    import yaml

    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    gate = document.get("gate")
    if not isinstance(gate, dict) or "metric" not in gate or "tolerance" not in gate:
        raise ValueError(f"{path}: needs a 'gate:' section with 'metric' and 'tolerance'")
    return GateParams(metric=str(gate["metric"]), tolerance=float(gate["tolerance"]))


def compare(params: GateParams, candidate: float, production: float | None) -> Verdict:
    """Candidate against production: it passes when it is no worse than ``tolerance``."""
    name, tol = params.metric, params.tolerance
    if production is None:
        return Verdict(name, tol, candidate, None, True, "no model in production yet")
    if name in LOWER_IS_BETTER:
        passed = candidate <= production + tol
        delta = production - candidate
    else:
        passed = candidate >= production - tol
        delta = candidate - production
    word = "passes" if passed else "fails"
    reason = f"candidate {word}: {name} {candidate:.4f} vs {production:.4f} ({delta:+.4f} better)"
    return Verdict(name, tol, candidate, production, passed, reason)


def _score(model_dir: Path, data: Path, split_params: dict[str, Any]) -> dict[str, Any]:
    """Metrics of ``model_dir``'s ONNX graph on the test split ``split_params`` cuts from data."""
    from pronto_contract import MODEL_FILE, read_manifest
    from trainer.data import load_dataset
    from trainer.metrics import compute_metrics
    from trainer.model import Split
    from trainer.onnx_export import run_onnx

    manifest = read_manifest(model_dir)
    params = manifest.params
    if params["data_kind"] == "flights":
        dataset = load_dataset(data)
    else:
        dataset = load_dataset(data, params["target"], params["categorical"], params["numeric"])
    split = Split(dataset, split_params["test_size"], split_params["seed"])
    labels, probabilities = run_onnx(
        (model_dir / MODEL_FILE).read_bytes(),
        split.X_test,
        dataset.categorical,
        dataset.numeric,
        next(iter(manifest.signature.packed), None),
    )
    classes = manifest.signature.classes or []
    return compute_metrics(split.y_test.to_numpy(), probabilities, labels, classes)


def run_gate(
    candidate: Path, production: Path | None, data: Path, params: GateParams
) -> tuple[Verdict, dict[str, Any], dict[str, Any] | None]:
    """Score both models on the candidate's held-out rows and compare them."""
    from pronto_contract import MANIFEST_FILE, read_manifest

    manifest = read_manifest(candidate)
    split = {k: manifest.params[k] for k in ("test_size", "seed")}
    cand = _score(candidate, data, split)
    has_production = production is not None and (production / MANIFEST_FILE).is_file()
    prod = _score(production, data, split) if has_production and production else None
    prod_value = None if prod is None else float(prod[params.metric])
    verdict = compare(params, float(cand[params.metric]), prod_value)
    return verdict, cand, prod


def _markdown(verdict: Verdict, cand: dict[str, Any], prod: dict[str, Any] | None) -> str:
    shown = ["roc_auc", "pr_auc", "accuracy", "f1", "log_loss", "brier", "rows"]
    lines = [
        "### Training gate",
        "",
        f"**{'PASS' if verdict.passed else 'FAIL'}**: {verdict.reason} "
        f"(metric `{verdict.metric}`, tolerance {verdict.tolerance}).",
        "",
        "| metric | candidate | production |",
        "| --- | ---: | ---: |",
    ]
    for key in shown:
        if key not in cand:
            continue
        fmt = "{:d}" if key == "rows" else "{:.4f}"
        p = "n/a" if prod is None or key not in prod else fmt.format(prod[key])
        mark = " (gate)" if key == verdict.metric else ""
        lines.append(f"| {key}{mark} | {fmt.format(cand[key])} | {p} |")
    return "\n".join(lines) + "\n"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gate", help="Compare a candidate with the production model on the same held-out rows."
    )
    parser.add_argument("--candidate", type=Path, required=True, help="candidate model folder")
    parser.add_argument(
        "--production",
        type=Path,
        default=None,
        help="production model folder; missing or empty means nothing is in production yet",
    )
    parser.add_argument("--data", type=Path, required=True, help="the candidate's training CSV")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="gate: section")
    parser.add_argument("--out", type=Path, required=True, help="folder for gate.json, gate.md")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from trainer.errors import TrainerError

    try:
        params = load_params(args.params)
        verdict, cand, prod = run_gate(args.candidate, args.production, args.data, params)
    except (TrainerError, ValueError, OSError, KeyError) as exc:
        print(f"gate: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate.json").write_text(json.dumps(asdict(verdict), indent=2) + "\n")
    (args.out / "gate.md").write_text(_markdown(verdict, cand, prod))
    print(f"gate: {verdict.reason}")
    return 0 if verdict.passed else 1
