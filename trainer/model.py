"""The scikit-learn pipeline: ``ColumnTransformer`` preprocessing and a classifier."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trainer.data import Dataset
from trainer.settings import TrainSettings

__all__ = ["Split", "build_pipeline", "estimator_params", "split"]


class Split:
    """A seeded, stratified train/test split of a dataset."""

    def __init__(self, data: Dataset, test_size: float, seed: int) -> None:
        counts = data.y.value_counts()
        # Stratifying needs two rows of every class; rare classes fall back to a plain split.
        stratify = data.y if counts.min() >= 2 else None
        self.X_train, self.X_test, self.y_train, self.y_test = train_test_split(
            data.X, data.y, test_size=test_size, random_state=seed, stratify=stratify
        )


def split(data: Dataset, test_size: float, seed: int) -> Split:
    return Split(data, test_size, seed)


def estimator_params(settings: TrainSettings) -> dict[str, Any]:
    """The estimator's hyper-parameters as recorded in the manifest."""
    weight = None if settings.class_weight == "none" else "balanced"
    if settings.estimator == "hist_gradient_boosting":
        return {
            "max_iter": settings.max_iter or 100,
            "learning_rate": settings.learning_rate,
            # Same weighting as the default model, so the 0.5 threshold means the same thing.
            "class_weight": weight,
            "random_state": settings.seed,
        }
    return {
        "C": settings.lr_c,
        "max_iter": settings.max_iter or 1000,
        "class_weight": weight,
        "random_state": settings.seed,
    }


def build_pipeline(
    categorical: list[str],
    numeric: list[str],
    estimator: str,
    params: dict[str, Any],
    packed: bool = False,
) -> Pipeline:
    """The pipeline to fit on a frame whose columns are ``categorical + numeric``, in order.

    ``packed``: the numeric columns are selected by position instead of by name. skl2onnx
    resolves a name only against a graph input of that name, but a position against the
    inputs laid end to end, so positions let the exported graph take every numeric column
    from one ``[N, k]`` input (see :func:`trainer.onnx_export.export_onnx`).
    """
    cat_columns: list[Any] = list(categorical)
    num_columns: list[Any] = list(numeric)
    if packed:
        cat_columns = list(range(len(categorical)))
        num_columns = list(range(len(categorical), len(categorical) + len(numeric)))
    transformers: list[tuple[str, Any, list[Any]]] = []
    if categorical:
        # min_frequency would fold rare values into one column, which skl2onnx cannot express.
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", onehot, cat_columns))
    if numeric:
        scale = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        transformers.append(("numeric", scale, num_columns))
    classifier: Any
    if estimator == "hist_gradient_boosting":
        classifier = HistGradientBoostingClassifier(**params)
    else:
        classifier = LogisticRegression(**params)
    return Pipeline(
        [
            ("preprocess", ColumnTransformer(transformers, sparse_threshold=0)),
            ("classifier", classifier),
        ]
    )
