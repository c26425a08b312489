"""``model.json``: a typed, versioned description of one published model version.

The trainer fills it, the server validates requests against its signature, the drift
monitor compares live traffic with its reference statistics and micro-batching reads its
``batching`` entry. The file stays JSON; code reads it through :class:`Manifest` only.

Versioning: ``schema_version`` is written by the trainer. A file without it predates the
field and has the same shape as version 1, so it loads as version 1. Version 2 adds packed
inputs: an input whose ``columns`` lists the named features it carries, one per column of
an ``[N, k]`` tensor, with those features described under ``signature.features``. The
trainer writes the oldest version that describes a model (1 unless it has a packed input),
so servers that read only version 1 keep loading per-column models. A file from a newer
trainer (a higher major ``schema_version``) or one that does not match the schema fails
with a :class:`ManifestError` naming the file and the first problems, never with a
``KeyError`` deep in the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "SCHEMA_VERSION",
    "BatchingEntry",
    "ConfusionMatrix",
    "FeatureReference",
    "InputSpec",
    "Manifest",
    "ManifestError",
    "Metrics",
    "OutputSpec",
    "Reference",
    "ScoreReference",
    "Signature",
    "read_manifest",
    "write_manifest",
]

#: the newest schema this code writes and reads
SCHEMA_VERSION = 2


class ManifestError(ValueError):
    """A ``model.json`` that cannot be used, with a message that says why."""


class _Part(BaseModel):
    # extra keys are kept (a newer trainer may add some) but never read by this code
    model_config = ConfigDict(extra="allow")


def _strings(value: Any) -> Any:
    # class labels may be written as numbers (e.g. 0/1); the server keys them as strings
    if isinstance(value, list):
        return [str(v) for v in value]
    return value


class InputSpec(_Part):
    """One model input (an ONNX graph input, and a named feature of the Predict API), or,
    under :attr:`Signature.features`, a named feature carried by a packed input."""

    name: str
    datatype: str = "FP32"
    shape: list[int] = Field(default_factory=lambda: [-1, 1])
    kind: Literal["categorical", "numeric"] | None = None
    categories: list[str] = Field(default_factory=list)
    #: [min, max] seen in training (numeric features)
    range: list[float] | None = None
    #: the CSV column the feature comes from
    column: str | None = None
    #: a packed input (schema 2): the named features it carries, in column order
    columns: list[str] | None = None

    _categories = field_validator("categories", mode="before")(_strings)


class OutputSpec(_Part):
    name: str
    datatype: str = "FP32"
    shape: list[int] = Field(default_factory=list)


class Signature(_Part):
    inputs: list[InputSpec] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(default_factory=list)
    #: named features that are not inputs themselves: the columns of packed inputs (schema 2)
    features: list[InputSpec] = Field(default_factory=list)
    classes: list[str] | None = None
    positive_class: str | None = None

    _classes = field_validator("classes", mode="before")(_strings)

    @field_validator("positive_class", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        return None if value is None else str(value)

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def feature(self, name: str) -> InputSpec | None:
        """A named feature: an input of that name, or a column of a packed input."""
        spec = self.input(name)
        if spec is not None and spec.columns is None:
            return spec
        for spec in self.features:
            if spec.name == name:
                return spec
        return None

    @property
    def packed(self) -> dict[str, list[str]]:
        """Packed input name -> the features it carries, in column order."""
        return {s.name: s.columns for s in self.inputs if s.columns is not None}


class ConfusionMatrix(_Part):
    labels: list[str] = Field(default_factory=list)
    #: rows = true class, columns = predicted class
    matrix: list[list[int]] = Field(default_factory=list)

    _labels = field_validator("labels", mode="before")(_strings)


class Metrics(_Part):
    """Test-split metrics; the trainer's report adds more keys (kept as extras)."""

    rows: int | None = None
    accuracy: float | None = None
    roc_auc: float | None = None
    pr_auc: float | None = None
    f1: float | None = None
    log_loss: float | None = None
    confusion_matrix: ConfusionMatrix | None = None
    positive_class: str | None = None

    @field_validator("positive_class", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        return None if value is None else str(value)

    def predicted_positive_rate(self, positive: str | None) -> float | None:
        """Share of test rows labelled ``positive``, from the confusion matrix."""
        cm = self.confusion_matrix
        if cm is None or positive not in cm.labels or not cm.matrix:
            return None
        j = cm.labels.index(positive)
        total = sum(sum(row) for row in cm.matrix)
        return sum(row[j] for row in cm.matrix) / total if total else None


class FeatureReference(_Part):
    """Training distribution of one feature."""

    kind: Literal["categorical", "numeric"] = "numeric"
    #: categorical: share of each category
    frequencies: dict[str, float] = Field(default_factory=dict)
    #: numeric: histogram edges and counts
    edges: list[float] = Field(default_factory=list)
    counts: list[int] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None


class ScoreReference(_Part):
    """Histogram of the prediction score on the test split."""

    of: Literal["positive_class_probability", "max_probability"] = "positive_class_probability"
    split: str = "test"
    edges: list[float] = Field(default_factory=list)
    counts: list[int] = Field(default_factory=list)


class Reference(_Part):
    features: dict[str, FeatureReference] = Field(default_factory=dict)
    score: ScoreReference | None = None


class BatchingEntry(_Part):
    """Per-model micro-batching; wins over the server's defaults when present."""

    max_batch_size: int = Field(0, ge=0)
    max_queue_delay_us: int | None = Field(None, ge=0)


class Manifest(_Part):
    """The content of ``model.json``. Every field has a default, so a hand-written file
    with just a signature (or an empty one) loads."""

    schema_version: int = Field(1, ge=1)
    name: str = ""
    version: int = 0
    created_at: str | None = None
    code_version: str | None = None
    platform: str = "onnxruntime_onnx"
    data: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=Metrics)
    parity: dict[str, Any] = Field(default_factory=dict)
    signature: Signature = Field(default_factory=Signature)
    reference: Reference = Field(default_factory=Reference)
    training: dict[str, Any] = Field(default_factory=dict)
    #: absent: the server's defaults apply; null or max_batch_size <= 1: off
    batching: BatchingEntry | None = None

    @property
    def has_batching_entry(self) -> bool:
        return "batching" in self.model_fields_set

    @classmethod
    def parse(cls, data: Any, source: str = "model.json") -> Manifest:
        """Validate a decoded ``model.json``; :class:`ManifestError` when it is unusable."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
        found = data.get("schema_version", 1)
        if isinstance(found, int) and found > SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {found} is newer than this version of pronto "
                f"reads ({SCHEMA_VERSION}); upgrade pronto to serve this model"
            )
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise ManifestError(f"{source}: invalid model.json: {problems}") from None
        manifest._check_packed(source)
        return manifest

    def _check_packed(self, source: str) -> None:
        packed = self.signature.packed
        if not packed:
            return
        if self.schema_version < 2:
            # a version-1 reader would take the packed input for one feature
            raise ManifestError(
                f"{source}: input {next(iter(packed))!r} lists columns, which needs "
                f"schema_version 2 (the file says {self.schema_version})"
            )
        described = {s.name for s in self.signature.features}
        for name, columns in packed.items():
            spec = self.signature.input(name)
            width = spec.shape[-1] if spec is not None and spec.shape else -1
            if not columns or width != len(columns) or len(set(columns)) != len(columns):
                raise ManifestError(
                    f"{source}: packed input {name!r} has shape {spec.shape if spec else []} "
                    f"and {len(columns)} column(s); it needs one distinct column per element "
                    "of its last dimension"
                )
            missing = [c for c in columns if c not in described]
            if missing:
                raise ManifestError(
                    f"{source}: packed input {name!r}: column(s) {', '.join(missing)} not "
                    "described under signature.features"
                )

    def to_json(self) -> str:
        """The JSON text of ``model.json``: the fields that were given (read from a file,
        set by the trainer or assigned), so a round trip neither adds keys nor turns an
        absent ``batching`` into an explicit null, stamped with its ``schema_version``."""
        data = self.model_dump(mode="json", exclude_unset=True)
        return json.dumps({"schema_version": self.schema_version, **data}, indent=2) + "\n"


def read_manifest(path: Path) -> Manifest:
    """Read ``path`` (a ``model.json``, or a version folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON: {exc}") from None
    return Manifest.parse(data, str(path))


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Write ``manifest`` to ``path`` (a ``model.json``, or a version folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    path.write_text(manifest.to_json())
