"""Errors the trainer reports to the user as a message and a non-zero exit."""

from __future__ import annotations

__all__ = ["DataError", "ParityError", "TrainerError"]


class TrainerError(Exception):
    """A problem the user can act on; the CLI prints it without a traceback."""


class DataError(TrainerError):
    """The input data cannot be used (missing column, bad values, one class, not a CSV...)."""


class ParityError(TrainerError):
    """The ONNX graph does not reproduce scikit-learn's outputs; nothing may be published."""
