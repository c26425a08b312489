"""Metric label values are bounded: only models and versions the registry holds appear."""

from __future__ import annotations

from pathlib import Path

import grpc

from server.generated.inference import grpc_service_pb2 as pb
from server.metrics import OTHER, RequestRecorder
from server.repository import Registry, load_repository


def _recorder(model_repo: Path) -> RequestRecorder:
    handles, failures = load_repository(model_repo, versions=2)
    assert not failures
    registry = Registry()
    registry.replace(handles)
    return RequestRecorder(None, registry)


def test_unknown_names_and_versions_share_one_label(model_repo: Path) -> None:
    recorder = _recorder(model_repo)
    name = recorder.registry.names()[0]  # type: ignore[union-attr]
    version = recorder.registry.versions(name)[0]  # type: ignore[union-attr]
    assert recorder.labels(name, version) == (name, version)
    assert recorder.labels(name, "") == (name, "")
    assert recorder.labels(name, "999") == (name, OTHER)
    assert recorder.labels(name, "x" * 10_000) == (name, OTHER)
    assert recorder.labels("made-up", "1") == (OTHER, OTHER)
    assert recorder.labels("y" * 1_000_000, "") == (OTHER, OTHER)
    assert recorder.labels("", "") == ("", "")


def test_failed_requests_record_no_caller_chosen_label(model_repo: Path) -> None:
    recorder = _recorder(model_repo)
    for i in range(1000):
        request = pb.ModelInferRequest(model_name=f"made-up-{i}", model_version=str(i))
        code = grpc.StatusCode.INVALID_ARGUMENT if i % 2 else grpc.StatusCode.NOT_FOUND
        recorder.observe("ModelInfer", request, None, code, 0.001, None)
    assert {key[:2] for key in recorder._counts} == {(OTHER, OTHER)}


def test_without_a_registry_values_are_cut() -> None:
    model, version = RequestRecorder().labels("m" * 1000, "1" * 1000)
    assert len(model) == len(version) == 64
