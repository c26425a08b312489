"""Settings of ``pronto train``: one class, every field a ``--flag`` and a ``PRONTO_*`` variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronto_contract.fields import ModelRepository

__all__ = ["DEFAULT_DATA", "DEFAULT_MODEL_NAME", "Estimator", "NumericInput", "TrainSettings"]

DEFAULT_MODEL_NAME = "flight-delay"
#: where the generated flights data set is written (and tracked by DVC)
DEFAULT_DATA = Path("data/flights.csv")

Estimator = Literal["logistic_regression", "hist_gradient_boosting"]
NumericInput = Literal["per-column", "packed"]


class TrainSettings(BaseSettings):
    """What to train on, how, and where to publish the result."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    data: Path | None = Field(
        default=None,
        description="Training CSV. Without it the flights data set at data/flights.csv is used, "
        "generated (seeded) when the file does not exist.",
    )
    target: str | None = Field(
        default=None,
        description="Target column. May be omitted for a CSV with the SCL flights schema, whose "
        "target (departure more than 15 minutes late) is derived from Fecha-I and Fecha-O.",
    )
    categorical: list[str] | None = Field(
        default=None,
        description="Categorical feature columns (one-hot encoded, unknown values ignored). "
        "When neither --categorical nor --numeric is given, text columns are categorical and "
        "number columns numeric. Env value is a JSON list.",
    )
    numeric: list[str] | None = Field(
        default=None,
        description="Numeric feature columns (median-imputed and standardised). Env value is a "
        "JSON list.",
    )
    numeric_input: NumericInput = Field(
        default="per-column",
        description="How the ONNX model takes numeric features: per-column (one [N, 1] FP32 "
        "input per column, named like the column) or packed (all numeric columns as one "
        "[N, k] FP32 input named numeric_features, column order in model.json and in the "
        "input's ModelMetadata parameters). Packed is much cheaper to call for models with "
        "many numeric columns; categorical columns stay one string input each.",
    )
    name: str = Field(default=DEFAULT_MODEL_NAME, description="Model name in the repository.")
    model_repository: ModelRepository = Path("models")
    output_dir: Path | None = Field(
        default=None,
        description="Write the model folder here (replacing it) instead of publishing a new "
        "version to the repository; used by the DVC pipeline.",
    )
    estimator: Estimator = Field(
        default="logistic_regression",
        description="logistic_regression or hist_gradient_boosting.",
    )
    class_weight: Literal["balanced", "none"] = Field(
        default="balanced",
        description="balanced: weigh classes inversely to their frequency (higher recall of "
        "the rare class, probabilities not calibrated); none: calibrated probabilities, which "
        "the server's estimated quality assumes.",
    )
    lr_c: float = Field(default=1.0, gt=0, description="Inverse regularisation strength (LR).")
    max_iter: int | None = Field(
        default=None,
        gt=0,
        description="Iterations: solver iterations for LR (default 1000), boosting rounds for "
        "HGB (default 100).",
    )
    learning_rate: float = Field(default=0.1, gt=0, description="Learning rate (HGB only).")
    test_size: float = Field(
        default=0.2, gt=0, lt=1, description="Fraction held out (stratified) for evaluation."
    )
    seed: int = Field(default=42, description="Seed of the split and the estimator.")
    rows: int = Field(
        default=68_000, gt=0, description="Rows of the flights data set generated when missing."
    )
    data_seed: int = Field(default=2017, description="Seed of the generated flights data set.")
    parity_tolerance: float = Field(
        default=1e-5,
        gt=0,
        description="Largest allowed absolute difference between ONNX and scikit-learn "
        "probabilities on the test split.",
    )
