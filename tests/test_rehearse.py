"""The rehearsal's own parts (`make rehearse` runs the workflows with them; CI runs it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.chart.helm import needs_helm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rehearse() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rehearse", ROOT / ".github/scripts/rehearse.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["rehearse"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_steps_said_to_be_impossible_here_exist(rehearse: ModuleType) -> None:
    """A renamed step must not silently lose its reason (or start running for real)."""
    for workflow, name in [*rehearse.CANNOT_RUN, *rehearse.STAND_IN_STEPS]:
        doc = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
        names = {s.get("name") for job in doc["jobs"].values() for s in job.get("steps", [])}
        assert name in names, f"{workflow}: no step named {name!r}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github.ref == 'refs/heads/main' && github.event_name != 'pull_request'", True),
        ("github.event_name == 'pull_request' && 'training-check' || 'training'", "training"),
        ("!cancelled() && steps.gate.outcome != 'skipped'", True),
        ("failure() && steps.helm.outcome == 'success'", False),
        ("steps.pushed.outputs.digest || steps.build.outputs.digest", "sha256:b"),
        ("steps.pushed.outputs.digest == ''", True),
    ],
)
def test_expressions(rehearse: ModuleType, text: str, expected: object) -> None:
    context = {
        "github": {"ref": "refs/heads/main", "event_name": "push"},
        "steps": {
            "gate": {"outcome": "failure"},
            "helm": {"outcome": "success"},
            "build": {"outputs": {"digest": "sha256:b"}},
        },
    }
    assert rehearse.Expr(context, "success").eval(text) == expected


def test_gcloud_stand_in_maps_buckets_to_folders(rehearse: ModuleType, tmp_path: Path) -> None:
    rehearse.write_shims(tmp_path, tmp_path / "bin")
    gcloud = str(tmp_path / "bin" / "gcloud")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [gcloud, "storage", *args], input=stdin, capture_output=True, text=True, check=False
        )

    assert run("ls", "gs://models/m/").returncode == 1  # empty registry: like gcloud, an error
    model = tmp_path / "model"
    (model / "plots").mkdir(parents=True)
    (model / "model.onnx").write_text("onnx")
    (model / "plots" / "roc.png").write_text("png")
    assert (
        run("cp", "--recursive", "--no-clobber", f"{model}/*", "gs://models/m/1/").returncode == 0
    )
    assert run("cp", "-", "gs://models/m/LATEST", stdin="1\n").returncode == 0
    assert run("cat", "gs://models/m/LATEST").stdout == "1\n"
    assert run("ls", "gs://models/m/").stdout.split() == [
        "gs://models/m/1/",
        "gs://models/m/LATEST",
    ]
    assert (tmp_path / "gcs" / "models" / "m" / "1" / "plots" / "roc.png").is_file()
    assert run("cat", "gs://models/m/2/model.json").returncode == 1


def test_registry_stand_in_keeps_tags_immutable(rehearse: ModuleType, tmp_path: Path) -> None:
    rehearse.write_shims(tmp_path, tmp_path / "bin")
    docker = [str(tmp_path / "bin" / "docker"), "buildx", "imagetools"]
    ref = "europe-west1-docker.pkg.dev/p/r/pronto:v1"
    assert subprocess.run([*docker, "inspect", ref], capture_output=True).returncode == 1
    create = [*docker, "create", "--tag", ref, "europe-west1-docker.pkg.dev/p/r/pronto@sha256:a"]
    assert subprocess.run(create, capture_output=True).returncode == 0
    found = subprocess.run([*docker, "inspect", ref], capture_output=True, text=True)
    assert found.stdout.strip() == "sha256:a"
    assert subprocess.run(create, capture_output=True).returncode == 1


def test_cml_stand_in_refuses_commit_comments_and_image_hosting(
    rehearse: ModuleType, tmp_path: Path
) -> None:
    rehearse.write_shims(tmp_path, tmp_path / "bin")
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    cml = [sys.executable, str(tmp_path / "bin" / "cml"), "comment", "create"]
    assert subprocess.run([*cml, "--target=commit", str(report)], capture_output=True).returncode
    assert subprocess.run(
        [*cml, "--publish", "--target=pr", str(report)], capture_output=True
    ).returncode
    assert not subprocess.run([*cml, "--target=pr", str(report)], capture_output=True).returncode
    assert (tmp_path / "out" / "pr-comment.md").read_text() == "# report\n"


def test_every_job_is_rehearsed_or_said_why_not(rehearse: ModuleType) -> None:
    """A job the rehearsal skips is printed with its reason, never skipped silently."""
    for workflow, job in [*rehearse.REHEARSED_JOBS, *rehearse.JOBS_NOT_RUN]:
        doc = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
        assert job in doc["jobs"], f"{workflow}: no job {job!r}"
    not_run = {
        (workflow, job)
        for workflow in ("train.yml", "deploy.yml")
        for job, _ in rehearse.jobs_not_run(workflow)
    }
    assert ("deploy.yml", "model-canary") in not_run
    assert not_run == set(rehearse.JOBS_NOT_RUN)


def test_jobs_not_run_refuses_an_unexplained_job(
    rehearse: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(rehearse.JOBS_NOT_RUN, ("deploy.yml", "model-canary"))
    with pytest.raises(SystemExit, match="model-canary"):
        rehearse.jobs_not_run("deploy.yml")


@pytest.mark.parametrize(
    ("workflow", "event", "ref", "environment", "refused"),
    [
        ("train.yml", "push", "refs/heads/main", "training", None),
        ("train.yml", "workflow_dispatch", "refs/heads/main", "training", None),
        ("train.yml", "repository_dispatch", "refs/heads/main", "training", None),
        ("train.yml", "pull_request", "refs/pull/7/merge", "training-check", None),
        ("train.yml", "push", "refs/heads/feature", "training", "workflow_ref"),
        ("train.yml", "pull_request", "refs/pull/7/merge", "training", "workflow_ref"),
        ("train.yml", "schedule", "refs/heads/main", "training", "events"),
        ("deploy.yml", "push", "refs/heads/api", "production", None),
        ("deploy.yml", "push", "refs/tags/v1.2.0", "production", None),
        ("deploy.yml", "workflow_dispatch", "refs/heads/main", "production", "refs"),
        ("deploy.yml", "push", "refs/heads/api", "staging", "environment"),
    ],
)
def test_token_exchange_stand_in_reads_the_terraform_conditions(
    rehearse: ModuleType, workflow: str, event: str, ref: str, environment: str, refused: str
) -> None:
    why = rehearse.wif_refusal(workflow, event, ref, environment)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why, why


@needs_helm
def test_helm_stand_in_keeps_history_and_rolls_back(rehearse: ModuleType, tmp_path: Path) -> None:
    """What the deploy job's "Roll back when the gate fails" step runs must work on the
    stand-in: history (table and JSON), a failing helm test, rollback to the revision before."""
    rehearse.write_shims(tmp_path, tmp_path / "bin")
    helm = str(tmp_path / "bin" / "helm")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [helm, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=120
        )

    assert run("-n", "pronto", "history", "pronto", "--max", "5").returncode == 1  # no release
    for version in ("1", "2"):
        up = run("upgrade", "--install", "pronto", "charts/pronto", "--namespace", "pronto",
                 "--atomic", "--wait", "--timeout", "15m", "--set-string",
                 f"model.version={version}")  # fmt: skip
        assert up.returncode == 0, up.stderr
    listed = run("-n", "pronto", "history", "pronto", "--max", "2", "-o", "json")
    assert [h["revision"] for h in json.loads(listed.stdout)] == [1, 2]
    assert "deployed" in run("-n", "pronto", "history", "pronto", "--max", "5").stdout
    assert run("test", "pronto", "--namespace", "pronto", "--logs").returncode == 0
    (tmp_path / "helm-test-fails").touch()
    assert run("test", "pronto", "--namespace", "pronto", "--logs").returncode == 1
    back = run("-n", "pronto", "rollback", "pronto", "--wait", "--timeout", "10m")
    assert back.returncode == 0, back.stderr
    history = json.loads(run("-n", "pronto", "history", "pronto", "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "deployed"),
    ]
    assert history[-1]["description"] == "Rollback to 1"
    assert 'pronto.dev/model: "flight-delay/1"' in (tmp_path / "out" / "rendered.yaml").read_text()
    assert run("-n", "pronto", "status", "pronto").returncode != 0  # not stood in for: says so
