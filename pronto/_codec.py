"""Arrays and frames ↔ Open Inference Protocol and Predict messages.

The same messages travel over gRPC and, as proto3 JSON, over Envoy's REST routes, so both
transports share this module. Requests default to ``raw_input_contents``: the server decodes
those with one ``np.frombuffer`` per input, the cheapest form it accepts.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from server.generated.inference import grpc_service_pb2 as oip
from server.generated.pronto.v1 import prediction_pb2 as pv1

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "InferResult",
    "ModelMetadata",
    "PredictResult",
    "Prediction",
    "TensorMetadata",
    "build_infer_request",
    "build_predict_request",
    "parse_infer_response",
    "parse_metadata",
    "parse_predict_json",
    "parse_predict_response",
    "predict_body",
]

# OIP datatype -> (numpy dtype, typed contents field); BYTES travels as length-prefixed raw.
_DATATYPES: dict[str, tuple[np.dtype[Any], str | None]] = {
    "BOOL": (np.dtype("bool"), "bool_contents"),
    "UINT8": (np.dtype("<u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("<i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP16": (np.dtype("<f2"), None),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
    "BYTES": (np.dtype("object"), "bytes_contents"),
}
_BY_KIND = {(dt.kind, dt.itemsize): name for name, (dt, _) in _DATATYPES.items() if name != "BYTES"}
_LEN = struct.Struct("<I")


def _datatype_of(arr: np.ndarray) -> str:
    if arr.dtype.kind in "OUS":
        return "BYTES"
    try:
        return _BY_KIND[(arr.dtype.kind, arr.dtype.itemsize)]
    except KeyError:
        raise TypeError(f"arrays of dtype {arr.dtype} have no OIP datatype") from None


def _as_bytes_list(arr: np.ndarray) -> list[bytes]:
    return [x if isinstance(x, bytes) else str(x).encode() for x in arr.ravel().tolist()]


def _split_bytes(raw: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        (n,) = _LEN.unpack_from(raw, pos)
        items.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return items


@dataclass(frozen=True)
class TensorMetadata:
    """Name, OIP datatype and shape (``-1`` = any size) of one model input or output."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    #: an input that packs several named features: their names, in column order
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelMetadata:
    """What ``ModelMetadata`` says about a model."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


def parse_metadata(msg: oip.ModelMetadataResponse) -> ModelMetadata:
    def tensors(items: Iterable[Any]) -> tuple[TensorMetadata, ...]:
        return tuple(TensorMetadata(t.name, t.datatype, tuple(t.shape), _columns(t)) for t in items)

    return ModelMetadata(
        msg.name, tuple(msg.versions), msg.platform, tensors(msg.inputs), tensors(msg.outputs)
    )


def _columns(t: Any) -> tuple[str, ...] | None:
    if "columns" not in t.parameters:
        return None
    return tuple(json.loads(t.parameters["columns"].string_param))


def _frame_inputs(frame: pd.DataFrame, metadata: ModelMetadata | None) -> dict[str, np.ndarray]:
    """One ``[rows, 1]`` tensor per model input, typed as the model declares it; an input
    that packs several features gets those columns as one ``[rows, k]`` matrix."""
    if metadata is None:
        return {str(c): frame[c].to_numpy().reshape(-1, 1) for c in frame.columns}
    missing = [
        c for t in metadata.inputs for c in (t.columns or (t.name,)) if c not in frame.columns
    ]
    if missing:
        raise ValueError(f"the DataFrame lacks model input column(s) {missing}")
    inputs = {}
    for t in metadata.inputs:
        if t.columns is not None:
            dtype = _DATATYPES[t.datatype][0] if t.datatype in _DATATYPES else None
            inputs[t.name] = np.ascontiguousarray(frame[list(t.columns)].to_numpy(dtype=dtype))
            continue
        column = frame[t.name].to_numpy()
        dtype = _DATATYPES[t.datatype][0] if t.datatype in _DATATYPES else None
        if t.datatype == "BYTES":
            column = column.astype(str).astype(object)
        elif dtype is not None:
            column = column.astype(dtype)
        inputs[t.name] = column.reshape(-1, 1)
    return inputs


def _is_frame(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def build_infer_request(
    model: str,
    inputs: Mapping[str, Any] | pd.DataFrame,
    *,
    version: str = "",
    outputs: Sequence[str] | None = None,
    request_id: str = "",
    raw: bool = True,
    metadata: ModelMetadata | None = None,
) -> oip.ModelInferRequest:
    """A ``ModelInferRequest``; ``inputs`` maps input names to arrays, or is a DataFrame.

    With ``raw`` (the default) tensors go in ``raw_input_contents`` and the server answers in
    ``raw_output_contents``; otherwise both use the typed ``contents`` fields.
    """
    arrays = (
        _frame_inputs(inputs, metadata)  # type: ignore[arg-type]
        if _is_frame(inputs)
        else {name: np.asarray(value) for name, value in inputs.items()}  # type: ignore[union-attr]
    )
    if not arrays:
        raise ValueError("an inference request needs at least one input")
    request = oip.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, arr in arrays.items():
        if arr.ndim == 0:
            arr = arr.reshape(1)
        datatype = _datatype_of(arr)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=arr.shape)
        if datatype == "BYTES":
            items = _as_bytes_list(arr)
            if raw:
                request.raw_input_contents.append(b"".join(_LEN.pack(len(b)) + b for b in items))
            else:
                tensor.contents.bytes_contents.extend(items)
            continue
        dtype, contents_field = _DATATYPES[datatype]
        if raw:
            request.raw_input_contents.append(np.ascontiguousarray(arr, dtype=dtype).tobytes())
        elif contents_field is None:
            raise TypeError(f"{datatype} inputs can only be sent as raw contents")
        else:
            getattr(tensor.contents, contents_field).extend(arr.ravel().tolist())
    for out in outputs or ():
        request.outputs.add(name=out)
    return request


@dataclass(frozen=True)
class InferResult:
    """A ``ModelInferResponse`` decoded into numpy arrays."""

    model_name: str
    model_version: str
    #: the request id the server echoed (or generated) for this inference
    id: str
    outputs: dict[str, np.ndarray]
    datatypes: dict[str, str] = field(default_factory=dict)

    def as_numpy(self, name: str) -> np.ndarray:
        """One output tensor (strings come back as ``str`` items of an object array)."""
        return self.outputs[name]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per batch item: 1-wide outputs become a column, ``k``-wide ones ``name_i``."""
        import pandas as pd

        columns: dict[str, Any] = {}
        for name, arr in self.outputs.items():
            flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
            if flat.shape[1] == 1:
                columns[name] = flat[:, 0]
            else:
                for i in range(flat.shape[1]):
                    columns[f"{name}_{i}"] = flat[:, i]
        return pd.DataFrame(columns)


def parse_infer_response(msg: oip.ModelInferResponse) -> InferResult:
    outputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    raw = msg.raw_output_contents
    for i, out in enumerate(msg.outputs):
        shape = tuple(out.shape)
        datatypes[out.name] = out.datatype
        dtype, contents_field = _DATATYPES.get(out.datatype, (np.dtype("object"), None))
        if raw:
            if out.datatype == "BYTES":
                data = np.array([b.decode() for b in _split_bytes(raw[i])], dtype=object)
            else:
                data = np.frombuffer(raw[i], dtype=dtype)
        elif out.datatype == "BYTES":
            data = np.array([b.decode() for b in out.contents.bytes_contents], dtype=object)
        else:
            data = np.array(getattr(out.contents, contents_field or "fp32_contents"), dtype=dtype)
        outputs[out.name] = data.reshape(shape) if shape else data
    return InferResult(msg.model_name, msg.model_version, msg.id, outputs, datatypes)


def _native(value: Any) -> Any:
    # Struct accepts only Python scalars; numpy and pandas hand out their own.
    return value.item() if isinstance(value, np.generic) else value


def columns_of(instances: Any) -> dict[str, list[Any]] | None:
    """The columnar form of Predict's instances, or ``None`` for rows.

    A DataFrame, or a mapping whose every value is a list, tuple or 1-d array (a feature's
    values, one per row, as in the REST body ``{"inputs": {...}}``), is columnar. A row's
    features are scalars, so the two forms cannot be confused; a mapping that mixes both is
    refused.
    """
    if _is_frame(instances):
        if not len(instances):
            return None
        return {str(c): [_native(v) for v in instances[c].tolist()] for c in instances.columns}
    if not isinstance(instances, Mapping) or not instances:
        return None
    sequences = [isinstance(v, list | tuple | np.ndarray) for v in instances.values()]
    if not any(sequences):
        return None
    if not all(sequences):
        raise TypeError(
            "columnar instances map every feature to a list of values; "
            "a row maps every feature to one value"
        )
    columns = {str(k): [_native(v) for v in np.asarray(vs).tolist()] for k, vs in instances.items()}
    lengths = {len(vs) for vs in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"columnar instances need one length for every feature, got {lengths}")
    return columns


def instances_of(instances: Any) -> list[dict[str, Any]]:
    """Rows for Predict from a DataFrame, one mapping or a sequence of mappings."""
    if _is_frame(instances):
        records = instances.to_dict("records")
        return [{str(k): _native(v) for k, v in row.items()} for row in records]
    if isinstance(instances, Mapping):
        return [{str(k): _native(v) for k, v in instances.items()}]
    rows = list(instances)
    if not all(isinstance(r, Mapping) for r in rows):
        raise TypeError("instances must be a DataFrame, a mapping or a sequence of mappings")
    return [{str(k): _native(v) for k, v in r.items()} for r in rows]


_PREDICT_HAS_ID = "id" in pv1.PredictRequest.DESCRIPTOR.fields_by_name


def build_predict_request(
    model: str, instances: Any, *, version: str = "", request_id: str = ""
) -> pv1.PredictRequest:
    request = pv1.PredictRequest(name=model, version=version)
    if request_id and _PREDICT_HAS_ID:
        request.id = request_id  # type: ignore[attr-defined]
    columns = columns_of(instances)
    if columns is not None:
        # A DataFrame (or a mapping of columns) travels in columnar form: about half the
        # bytes of one object per row, built in about half the time, and decoded a column
        # at a time by the server.
        request.inputs.update(columns)
        return request
    for row in instances_of(instances):
        request.instances.add().update(row)
    return request


def predict_body(instances: Any, *, version: str = "", request_id: str = "") -> dict[str, Any]:
    """The REST body of Predict (the JSON form of ``PredictRequest``, without the name,
    which travels in the URL), built from the rows as they are: the server parses the JSON
    itself, so nothing goes through protobuf's ``Struct`` on either side."""
    body: dict[str, Any] = {}
    if version:
        body["version"] = version
    if request_id:
        body["id"] = request_id
    columns = columns_of(instances)
    if columns is not None:
        body["inputs"] = columns
    else:
        body["instances"] = instances_of(instances)
    return body


@dataclass(frozen=True)
class Prediction:
    """One instance's label and class probabilities."""

    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class PredictResult:
    """A ``PredictResponse``: one prediction per instance, in request order."""

    model_name: str
    model_version: str
    predictions: list[Prediction]
    #: prediction id when the server returns one, else ``""``
    id: str = ""

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.predictions]

    def to_dataframe(self) -> pd.DataFrame:
        """Columns ``label`` and ``probability_<class>``, one row per instance."""
        import pandas as pd

        classes = sorted({c for p in self.predictions for c in p.probabilities})
        data: dict[str, list[Any]] = {"label": self.labels}
        for c in classes:
            data[f"probability_{c}"] = [p.probabilities.get(c) for p in self.predictions]
        return pd.DataFrame(data)


def parse_predict_json(body: Mapping[str, Any]) -> PredictResult:
    """A REST Predict reply (the JSON form of ``PredictResponse``)."""
    predictions = [
        Prediction(
            str(p.get("label", "")),
            {str(k): float(v) for k, v in (p.get("probabilities") or {}).items()},
        )
        for p in body.get("predictions") or ()
    ]
    return PredictResult(
        str(body.get("model_name", "")),
        str(body.get("model_version", "")),
        predictions,
        str(body.get("id", "") or ""),
    )


def parse_predict_response(msg: pv1.PredictResponse) -> PredictResult:
    predictions = [Prediction(p.label, dict(p.probabilities)) for p in msg.predictions]
    return PredictResult(
        msg.model_name, msg.model_version, predictions, str(getattr(msg, "id", "") or "")
    )
