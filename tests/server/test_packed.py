"""Serving a packed model (numeric features as one ``[N, k]`` input): Predict, ModelInfer,
ModelMetadata, errors, drift and capture columns, against the per-column export of the
same data."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer

from server.core import InferenceCore, InferRequest, Tensor
from server.datatypes import DATATYPES
from server.drift import DriftMonitor
from server.errors import InvalidInput
from server.features import columns_from_instances
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.model import ModelHandle, load_model
from server.repository import Registry
from server.rollout import RolloutRouter
from server.rollout_state import Mode
from server.rollout_state import start as start_rollout
from tests.server.conftest import start_server
from tests.support import stop_process
from trainer.onnx_export import PACKED_INPUT
from trainer.settings import TrainSettings
from trainer.train import train

FP32 = DATATYPES["FP32"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``wide`` (30 numeric columns, packed), ``wide-plain`` (the same, per column) and
    ``flights-packed`` (five string inputs and three packed numeric columns)."""
    root = tmp_path_factory.mktemp("packed-repo")
    csv = root.parent / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(csv, index=False)
    from trainer.flights import write_flights_csv

    flights = write_flights_csv(root.parent / "flights.csv", rows=3000, seed=5)
    for name, data, mode, target in (
        ("wide", csv, "packed", "target"),
        ("wide-plain", csv, "per-column", "target"),
        ("flights-packed", flights, "packed", None),
    ):
        settings = TrainSettings(
            data=data,
            target=target,
            name=name,
            model_repository=root,
            numeric_input=mode,  # type: ignore[arg-type]
        )
        train(settings, log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def handles(repo: Path) -> dict[str, ModelHandle]:
    return {n: load_model(n, 1, repo / n / "1") for n in ("wide", "wide-plain", "flights-packed")}


@pytest.fixture(scope="module")
def core(handles: dict[str, ModelHandle]) -> InferenceCore:
    registry = Registry()
    registry.replace(list(handles.values()))
    for handle in handles.values():
        handle.inline_rows = 0  # offload_rows alone decides what leaves the event loop
    c = InferenceCore(registry, offload_rows=64)
    c.ready = True
    return c


def _rows(handle: ModelHandle, n: int) -> list[dict[str, Any]]:
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return [{k: float(v) for k, v in r.items()} for r in frame.iloc[:n].to_dict("records")]


def test_a_packed_model_loads_with_named_features(handles: dict[str, ModelHandle]) -> None:
    wide = handles["wide"]
    assert list(wide.inputs) == [PACKED_INPUT]
    assert wide.inputs[PACKED_INPUT].shape == (-1, 30)
    names = [f.name for f in wide.features]
    assert names == list(wide.packed[PACKED_INPUT]) == list(handles["wide-plain"].inputs)
    assert {f.packed_in for f in wide.features} == {PACKED_INPUT}
    assert [f.index for f in wide.features] == list(range(30))


def test_predict_on_a_packed_model_matches_the_per_column_model(core: InferenceCore) -> None:
    rows = _rows(core.model("wide"), 40)
    packed = asyncio.run(core.predict("wide", "", rows))
    plain = asyncio.run(core.predict("wide-plain", "", rows))
    assert packed.labels == plain.labels
    np.testing.assert_allclose(packed.probabilities, plain.probabilities, atol=1e-5)


def test_model_infer_on_a_packed_model(core: InferenceCore) -> None:
    rows = _rows(core.model("wide"), 5)
    columns = list(core.model("wide").packed[PACKED_INPUT])
    matrix = np.array([[r[c] for c in columns] for r in rows], dtype=np.float32)
    request = InferRequest("wide", "", [Tensor(PACKED_INPUT, FP32, matrix)], ["probabilities"])
    proba = asyncio.run(core.infer(request)).outputs[0].data
    expected = asyncio.run(core.predict("wide", "", rows)).probabilities
    np.testing.assert_allclose(proba, expected, atol=1e-6)


def test_flights_packed_mixes_string_inputs_and_a_packed_input(core: InferenceCore) -> None:
    row = {"OPERA": "Grupo LATAM", "TIPOVUELO": "I", "SIGLADES": "Miami", "DIANOM": "Lunes",
           "period_of_day": "morning", "MES": 7, "hour": 9.0, "high_season": 1}  # fmt: skip
    result = asyncio.run(core.predict("flights-packed", "", [row, {**row, "MES": 1}]))
    assert len(result.labels) == 2 and result.probabilities.shape == (2, 2)
    handle = core.model("flights-packed")
    feeds = columns_from_instances(handle.features, [row], handle.packed_features)
    assert feeds[PACKED_INPUT].tolist() == [[7.0, 9.0, 1.0]]
    assert feeds["OPERA"].tolist() == [["Grupo LATAM"]]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor(PACKED_INPUT, FP32, np.zeros((1, 29), np.float32)),
         r"input 'numeric_features' has shape \[1, 29\], model 'wide' expects \[-1, 30\]"),
        (Tensor(PACKED_INPUT, FP32, np.zeros((30, 1), np.float32)),
         r"has shape \[30, 1\], model 'wide' expects \[-1, 30\]"),
        (Tensor(PACKED_INPUT, DATATYPES["FP64"], np.zeros((1, 30))),
         "has datatype FP64, model 'wide' expects FP32"),
        (Tensor("mean_radius", FP32, np.zeros((1, 1), np.float32)),
         "unexpected input 'mean_radius' for model 'wide'"),
    ],
)  # fmt: skip
def test_model_infer_shape_and_dtype_errors(
    core: InferenceCore, tensor: Tensor, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(core.infer(InferRequest("wide", "", [tensor])))


@pytest.mark.parametrize(
    ("change", "message", "reason"),
    [
        ({"mean_area": None}, "feature 'mean_area' has a null, NaN or Inf value", "non_finite"),
        ({"mean_area": True}, "feature 'mean_area' must be numeric, got a boolean", "value_type"),
        ({"mean_area": "big"}, "feature 'mean_area' must be numeric", "value_type"),
        ({"mean_area": [1.0]}, "feature 'mean_area' must be numeric, got a list", "value_type"),
        ({"mean_area": 1e39}, "feature 'mean_area' has a null, NaN or Inf value", "non_finite"),
        ({"mean_area": 10**400}, "feature 'mean_area' must be numeric", "value_type"),
        ({"extra": 1.0}, "instance 1: unknown features: extra", "unknown_feature"),
    ],
)
def test_predict_errors_on_a_packed_model_name_the_feature(
    core: InferenceCore, change: dict[str, Any], message: str, reason: str
) -> None:
    rows = _rows(core.model("wide"), 2)
    rows[1] = {**rows[1], **change}
    with pytest.raises(InvalidInput, match=message) as info:
        asyncio.run(core.predict("wide", "", rows))
    assert info.value.reason == reason


def test_predict_missing_feature_on_a_packed_model(core: InferenceCore) -> None:
    rows = _rows(core.model("wide"), 1)
    del rows[0]["worst_area"]
    with pytest.raises(InvalidInput, match="instance 0: missing features: worst_area"):
        asyncio.run(core.predict("wide", "", rows))


def test_a_numeric_string_is_accepted_like_a_per_column_model(core: InferenceCore) -> None:
    rows = _rows(core.model("wide"), 1)
    as_text = [{**rows[0], "mean_area": str(rows[0]["mean_area"])}]
    a = asyncio.run(core.predict("wide", "", rows)).probabilities
    b = asyncio.run(core.predict("wide", "", as_text)).probabilities
    np.testing.assert_allclose(a, b)


_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**40), 10**40),
    st.sampled_from(["1.5", "x", "", None, True]),
)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.lists(_value, min_size=3, max_size=3), min_size=1, max_size=4))
def test_the_packed_fast_path_equals_one_column_per_feature(
    handles: dict[str, ModelHandle], values: list[list[Any]]
) -> None:
    """The matrix built in one numpy call holds exactly the per-feature columns, and a
    request it cannot take fails with the per-feature path's error."""
    handle = handles["flights-packed"]
    specs = handle.packed_features[PACKED_INPUT]
    instances = [{f.name: v for f, v in zip(specs, row, strict=True)} for row in values]
    plain = [type(f)(f.name, f.kind, f.categories, f.datatype) for f in specs]

    def run(features: Any, packed: Any) -> Any:
        try:
            return columns_from_instances(features, instances, packed)
        except InvalidInput as exc:
            return (exc.reason, str(exc))

    fast = run(specs, handle.packed_features)
    slow = run(plain, None)
    if isinstance(slow, tuple):
        assert fast == slow
    else:
        expected = np.hstack([slow[f.name] for f in specs])
        assert fast[PACKED_INPUT].dtype == np.float32
        np.testing.assert_array_equal(fast[PACKED_INPUT], expected)


@pytest.mark.parametrize("sample_rows", [32, 8])  # 8: the 40-row batch is sampled
def test_drift_counts_packed_columns_like_per_column_inputs(
    core: InferenceCore, sample_rows: int
) -> None:
    rows = _rows(core.model("wide"), 50)
    counts = {}
    for name in ("wide", "wide-plain"):
        handle = core.model(name)
        monitor = DriftMonitor(export=False, sample_rows=sample_rows)
        for start in (0, 1, 2, 10):  # single rows and batches take different paths
            batch = rows[start : start + (1 if start < 10 else 40)]
            feeds = columns_from_instances(handle.features, batch, handle.packed_features)
            monitor.observe(handle, feeds, None, len(batch))
        monitor.process()
        counts[name] = {k: v.tolist() for k, v in monitor._reference(handle).counts.items()}
    assert len(counts["wide"]) == 30
    assert counts["wide"] == counts["wide-plain"]


def test_feature_columns_view_for_capture(handles: dict[str, ModelHandle]) -> None:
    handle = handles["flights-packed"]
    matrix = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    feeds = {"OPERA": np.array([["a"], ["b"]], object), PACKED_INPUT: matrix}
    view = handle.feature_columns(feeds)
    assert view["hour"].tolist() == [[2.0], [5.0]] and view["OPERA"] is feeds["OPERA"]
    assert "OPERA" in view and "high_season" in view and len(view) == 8 - 4  # 4 inputs absent
    plain = handles["wide-plain"]
    assert plain.feature_columns(feeds) is feeds  # no copy, no view: per-column models


@pytest.mark.integration
def test_served_packed_model_over_grpc(repo: Path, tmp_path: Path) -> None:
    """A tritonclient-style client reads the column order from ModelMetadata, sends one raw
    [1, 30] tensor and gets what Predict with named features gives."""
    server = start_server(repo, tmp_path / "serve.log", 1)
    try:
        with grpc.insecure_channel(server.address) as channel:
            oip = pb_grpc.GRPCInferenceServiceStub(channel)
            meta = oip.ModelMetadata(pb.ModelMetadataRequest(name="wide"), timeout=10)
            (inp,) = meta.inputs
            assert (inp.name, inp.datatype, list(inp.shape)) == (PACKED_INPUT, "FP32", [-1, 30])
            columns = json.loads(inp.parameters["columns"].string_param)
            row = _rows(load_model("wide", 1, repo / "wide" / "1"), 1)[0]
            req = pb.ModelInferRequest(model_name="wide")
            req.inputs.add(name=inp.name, datatype="FP32", shape=[1, len(columns)])
            req.raw_input_contents.append(np.array([row[c] for c in columns], "<f4").tobytes())
            req.outputs.add(name="probabilities")
            reply = oip.ModelInfer(req, timeout=10)
            proba = np.frombuffer(reply.raw_output_contents[0], "<f4")

            predict = ppb_grpc.PredictionServiceStub(channel)
            named = ppb.PredictRequest(name="wide")
            named.instances.add().update(row)
            answer = predict.Predict(named, timeout=10).predictions[0]
            np.testing.assert_allclose(
                proba, [answer.probabilities["0"], answer.probabilities["1"]], atol=1e-6
            )
            # flights-packed: per-column string inputs carry no parameters
            flights = oip.ModelMetadata(pb.ModelMetadataRequest(name="flights-packed"))
            assert [dict(i.parameters) == {} for i in flights.inputs][:5] == [True] * 5
            assert json.loads(flights.inputs[5].parameters["columns"].string_param) == [
                "MES", "hour", "high_season"
            ]  # fmt: skip

            # the Python client packs DataFrame columns by the same metadata
            import pandas as pd

            import pronto

            frame = pd.DataFrame(_rows(load_model("wide", 1, repo / "wide" / "1"), 3))
            with pronto.Client(server.address) as client:
                md = client.model_metadata("wide")
                assert md.inputs[0].columns == tuple(columns)
                got = client.infer("wide", frame, outputs=["probabilities"])
                want = client.predict("wide", frame.to_dict("records"))
            np.testing.assert_allclose(
                got.as_numpy("probabilities")[:, 1],
                [p.probabilities["1"] for p in want.predictions],
                atol=1e-6,
            )

            bad = pb.ModelInferRequest(model_name="wide")
            bad.inputs.add(name=PACKED_INPUT, datatype="FP32", shape=[1, 29])
            bad.raw_input_contents.append(np.zeros(29, "<f4").tobytes())
            with pytest.raises(grpc.RpcError) as err:
                oip.ModelInfer(bad, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expects [-1, 30]" in (err.value.details() or "")
    finally:
        stop_process(server.proc)


def test_columnar_predict_fills_the_packed_matrix(core: InferenceCore) -> None:
    from google.protobuf import struct_pb2

    from server.features import columns_of

    rows = _rows(core.model("wide"), 20)
    inputs = struct_pb2.Struct()
    inputs.update({k: [r[k] for r in rows] for k in rows[0]})
    by_columns = asyncio.run(core.predict("wide", "", columns_of(inputs)))
    by_rows = asyncio.run(core.predict("wide", "", rows))
    assert by_columns.labels == by_rows.labels
    np.testing.assert_array_equal(by_columns.probabilities, by_rows.probabilities)


def test_capture_records_packed_features_by_name(
    handles: dict[str, ModelHandle], tmp_path: Path
) -> None:
    from pronto_contract.labels import LabelStore
    from server.capture import CaptureConfig, CaptureSink

    LabelStore(tmp_path).create()
    sink = CaptureSink(CaptureConfig(tmp_path, sample_rate=1.0))
    registry = Registry()
    registry.replace([handles["flights-packed"]])
    c = InferenceCore(registry, sink=sink)
    c.ready = True
    row = {"OPERA": "Sky Airline", "TIPOVUELO": "N", "SIGLADES": "Iquique", "DIANOM": "Lunes",
           "period_of_day": "night", "MES": 3.0, "hour": 22.0, "high_season": 0.0}  # fmt: skip
    asyncio.run(c.predict("flights-packed", "", [row, {**row, "hour": 7.0}], "cap-1"))
    sink.close()
    files = sorted(tmp_path.glob("*/*/capture-*.jsonl"))
    events = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    request = next(e for e in events if e["id"] == "cap-1" and "instances" in e["data"])
    assert request["data"]["instances"] == [row, {**row, "hour": 7.0}]


@pytest.mark.parametrize(("stable", "candidate"), [("wide-plain", "wide"), ("wide", "wide-plain")])
def test_shadow_compares_a_candidate_that_packs_its_inputs_differently(
    repo: Path, tmp_path: Path, stable: str, candidate: str
) -> None:
    """The same estimator exported both ways: the candidate gets the stable's features in
    its own layout, so it agrees on every row and nothing counts as a candidate error."""
    root = tmp_path / "mixed"
    for version, source in ((1, stable), (2, candidate)):
        shutil.copytree(repo / source / "1", root / "wide" / str(version))
    registry = Registry()
    registry.replace(load_model("wide", v, root / "wide" / str(v)) for v in (1, 2))
    router = RolloutRouter(root, registry)
    start_rollout(root, "wide", 2, Mode.SHADOW)
    router.refresh(["wide"])
    core = InferenceCore(registry, sink=router)
    core.ready = True
    core.router = router
    rows = _rows(registry.get("wide"), 20)

    async def main() -> None:
        for i in range(0, 20, 5):
            assert (await core.predict("wide", "", rows[i : i + 5])).model_version == "1"
        while router.shadow_pending:
            await asyncio.sleep(router.shadow_delay / 2)

    asyncio.run(main())
    stats = router._stats
    assert not stats.errors
    assert stats.requests[("wide", "2", "shadow")] == 4
    assert stats.compared[("wide", "2")] == stats.agreed[("wide", "2")] == 20
    assert np.concatenate(stats.score_diff[("wide", "2")]).max() < 1e-5
