"""Several models in one release: what the chart renders for a `models` list, that the
single `model.name` / `model.version` values keep working, and that the model-fetch init
container's script (the exact text the chart renders, run by dash as in the gcloud image)
copies the versions each policy chooses from a registry laid out like the real one."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import KUBE_VERSION, container, find, needs_helm, pod_spec, render, run_helm

pytestmark = needs_helm

TWO_MODELS = (
    "models[0].name=flights",
    "models[0].versionPolicy=latest:2",
    "models[1].name=churn",
    r"models[1].versionPolicy=pinned:1\,3",
)


def env_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container(spec, name).get("env", [])}


def test_two_models_are_fetched_and_served_with_their_policies() -> None:
    objects = render(sets=TWO_MODELS)
    spec = pod_spec(objects)
    fetch = env_of(spec, "model-fetch")
    assert fetch["MODELS"].splitlines() == ["flights latest:2", "churn pinned:1,3"]
    server = env_of(spec, "server")
    assert json.loads(server["PRONTO_MODELS"]) == ["flights", "churn"]
    assert json.loads(server["PRONTO_MODEL_VERSION_POLICIES"]) == {
        "flights": "latest:2",
        "churn": "pinned:1,3",
    }
    # readiness covers every listed model: the probes ask the overall service, which the
    # server reports SERVING only while all of PRONTO_MODELS are loaded
    assert server["PRONTO_STRICT_READINESS"] == "true"
    probes = container(spec, "server")
    for probe in ("startupProbe", "readinessProbe"):
        assert probes[probe]["grpc"].get("service", "") == ""
    annotations = find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["pronto.dev/model"] == "flights/latest:2 churn/pinned:1,3"


def test_changing_a_policy_rolls_the_pods() -> None:
    a = find(render(sets=TWO_MODELS), "Deployment")["spec"]["template"]
    b = find(render(sets=(*TWO_MODELS[:3], "models[1].versionPolicy=all")), "Deployment")
    assert a != b["spec"]["template"]


def test_single_model_values_are_a_one_model_list() -> None:
    spec = pod_spec(render(sets=("model.name=churn", "model.version=7")))
    assert env_of(spec, "model-fetch")["MODELS"] == "churn pinned:7"
    server = env_of(spec, "server")
    assert json.loads(server["PRONTO_MODELS"]) == ["churn"]
    assert "PRONTO_MODEL_VERSION_POLICIES" not in server
    assert server["PRONTO_STRICT_READINESS"] == "true"


def test_each_listed_model_can_carry_its_own_rollout() -> None:
    spec = pod_spec(render(("multi-model-values.yaml",)))
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["model-fetch", "rollout-state", "envoy-config", "envoy"]
    assert env_of(spec, "model-fetch")["MODELS"].splitlines() == [
        "flight-delay latest:2",
        "flight-delay-lite pinned:3 4",
    ]
    args = container(spec, "rollout-state")["args"]
    assert args[:3] == ["rollout", "start", "flight-delay-lite"]
    assert {"--candidate=4", "--stable=3", "--weight=5"} <= set(args)
    assert "--auto" not in args
    # promote, abort and the analysis write that model's rollout.json
    mounts = {m["name"]: m for m in container(spec, "server")["volumeMounts"]}
    assert mounts["models"]["readOnly"] is False
    # the model under rollout takes its versions from rollout.json, not from a policy
    policies = json.loads(env_of(spec, "server")["PRONTO_MODEL_VERSION_POLICIES"])
    assert policies == {"flight-delay": "latest:2"}
    two = pod_spec(
        render(
            ("multi-model-values.yaml",),
            ("models[0].versionPolicy=pinned:1", "models[0].rollout.candidate=2"),
        )
    )
    assert [c["name"] for c in two["initContainers"]][:3] == [
        "model-fetch",
        "rollout-state",
        "rollout-state-2",
    ]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ((*TWO_MODELS, "models[1].name=flights"), "listed twice"),
        ((*TWO_MODELS, "models[0].rollout.candidate=3"), "needs versionPolicy pinned"),
        ((*TWO_MODELS, "model.rollout.candidate=2"), "give each entry its own rollout"),
        ((*TWO_MODELS, "models[0].versionPolicy=newest"), "versionPolicy"),
        ((*TWO_MODELS, "models[0].versionPolicy=latest:0"), "versionPolicy"),
        ((*TWO_MODELS, "models[0].versions=2"), "versions"),
    ],
)
def test_bad_model_lists_are_refused(sets: tuple[str, ...], message: str) -> None:
    args = ["template", "t", "charts/pronto", "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# -- the init container's script --------------------------------------------------------


def _registry(root: Path) -> None:
    """gs://bucket/models: flights 1-3 published (LATEST=3) and 4 still uploading;
    churn 1 and 3 without a LATEST marker."""

    def version(model: str, v: int, complete: bool = True) -> None:
        folder = root / "bucket" / "models" / model / str(v)
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(f"{model}-{v}".encode())
        if complete:
            (folder / "model.json").write_text(json.dumps({"name": model, "version": v}))

    for v in (1, 2, 3):
        version("flights", v)
    version("flights", 4, complete=False)
    (root / "bucket" / "models" / "flights" / "LATEST").write_text("3\n")
    for v in (1, 3):
        version("churn", v)


def _run_fetch(
    tmp_path: Path, sets: tuple[str, ...]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    dash = shutil.which("dash") or shutil.which("sh")
    assert dash
    spec = pod_spec(render(sets=("model.registry=gs://bucket/models", *sets)))
    fetch = container(spec, "model-fetch")
    assert fetch["command"] == ["/bin/sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
        "from tests.chart.fake_gcloud import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    _registry(tmp_path / "gcs")
    root = tmp_path / "pod-models"
    env = {e["name"]: e["value"] for e in fetch["env"]}
    env |= {
        "MODEL_ROOT": str(root),
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "FAKE_GCS_ROOT": str(tmp_path / "gcs"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [dash, "-c", fetch["args"][0]], env=env, capture_output=True, text=True, timeout=60
    )
    return proc, root


def _fetched(root: Path) -> dict[str, list[str]]:
    return {
        m.name: sorted(v.name for v in m.iterdir() if (v / "model.json").is_file())
        for m in sorted(root.iterdir())
    }


@pytest.mark.parametrize(
    ("flights", "churn", "expected"),
    [
        ("latest", "pinned:1", {"flights": ["3"], "churn": ["1"]}),
        ("latest:2", "pinned:1\\,3", {"flights": ["2", "3"], "churn": ["1", "3"]}),
        ("all", "latest:5", {"flights": ["1", "2", "3"], "churn": ["1", "3"]}),
    ],
)
def test_fetch_script_copies_what_each_policy_chooses(
    tmp_path: Path, flights: str, churn: str, expected: dict[str, list[str]]
) -> None:
    sets = (
        "models[0].name=flights",
        f"models[0].versionPolicy={flights}",
        "models[1].name=churn",
        f"models[1].versionPolicy={churn}",
    )
    proc, root = _run_fetch(tmp_path, sets)
    assert proc.returncode == 0, proc.stderr
    # version 4 of flights is above LATEST (still uploading): never chosen
    assert _fetched(root) == expected


def test_fetch_script_copies_the_rollout_candidate(tmp_path: Path) -> None:
    sets = ("model.name=flights", "model.version=2", "model.rollout.candidate=3")
    proc, root = _run_fetch(tmp_path, sets)
    assert proc.returncode == 0, proc.stderr
    assert _fetched(root) == {"flights": ["2", "3"]}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("models[0].name=flights", "models[0].versionPolicy=pinned:9"),
            "gs://bucket/models/flights/9",
        ),
        (
            ("models[0].name=flights", "models[0].versionPolicy=pinned:4"),
            "flights/4/ has no model.json",
        ),
        (("models[0].name=nothing",), "no published version of nothing"),
    ],
)
def test_fetch_script_refuses_a_missing_or_incomplete_version(
    tmp_path: Path, sets: tuple[str, ...], message: str
) -> None:
    proc, _ = _run_fetch(tmp_path, sets)
    assert proc.returncode != 0
    assert message in proc.stderr
