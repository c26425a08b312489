"""`.github/scripts/wait-rollout.sh` (deploy.yml job `model-canary`) against a kubectl stand-in.

The script polls every pod's rollout analysis with `kubectl exec`. A refusal that waiting
cannot cure (RBAC without `pods/exec`, a failing `pronto rollout status`) must end it at
once, not leave it polling until the job's timeout; a pod that went away is looked at again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.tools import needs_tool

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".github" / "scripts" / "wait-rollout.sh"

pytestmark = needs_tool(shutil.which("jq") is not None, "jq is not installed")

# Answers one call per line of the plan: `get pods` lists plan["pods"] (or is refused when
# plan["get"] says so); each `exec` into a pod takes the next answer of that pod's list (the
# last one repeats); every call is logged.
KUBECTL = r"""
import json, sys
from pathlib import Path
folder = Path(__file__).parent
plan = json.loads((folder / "plan.json").read_text())
args = sys.argv[1:]
with open(folder / "calls.log", "a") as log:
    log.write(" ".join(args) + "\n")
if "get" in args and "pods" in args:
    if plan.get("get"):
        print(plan["get"], file=sys.stderr); sys.exit(1)
    print("\n".join(f"pod/{p}" for p in plan["pods"])); sys.exit(0)
if "exec" in args:
    pod = args[args.index("exec") + 1].removeprefix("pod/")
    if "abort" in args:
        sys.exit(0)
    answers = plan["exec"][pod]
    answer = answers.pop(0) if len(answers) > 1 else answers[0]
    (folder / "plan.json").write_text(json.dumps(plan))
    sys.stdout.write(answer.get("stdout", "")); sys.stderr.write(answer.get("stderr", ""))
    sys.exit(answer.get("rc", 0))
sys.exit(f"kubectl stand-in: {args}")
"""

FORBIDDEN = (
    'Error from server (Forbidden): pods "pronto-a" is forbidden: User '
    '"pronto-dev-deploy@example.iam.gserviceaccount.com" cannot create resource "pods/exec" '
    'in API group "" in the namespace "pronto"\n'
)
GONE = 'Error from server (NotFound): pods "pronto-a" not found\n'


def state(stable: str, candidate: str | None = None, weight: int = 0) -> dict[str, Any]:
    body = {"stable": stable, "candidate": candidate, "weight": weight,
            "history": [{"event": "abort", "reason": "error rate"}]}  # fmt: skip
    return {"stdout": json.dumps(body)}


def run(tmp_path: Path, plan: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f"#!{sys.executable}\n{KUBECTL}")
    (bin_dir / "kubectl").chmod(0o755)
    (bin_dir / "plan.json").write_text(json.dumps(plan))
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", POLL_SECONDS="0.05")
    # A timeout of 600 s: a script that polls on instead of failing runs into pytest's own.
    proc = subprocess.run(
        ["bash", str(SCRIPT), "pronto", "pronto", "flight-delay", "2", "600"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    calls = (bin_dir / "calls.log").read_text() if (bin_dir / "calls.log").exists() else ""
    return proc, calls


def test_a_refused_exec_fails_at_once(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, {"pods": ["pronto-a"], "exec": {"pronto-a": [
        {"rc": 1, "stderr": FORBIDDEN}]}})  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert 'cannot create resource "pods/exec"' in proc.stderr
    assert calls.count(" exec ") == 1  # no second look


def test_a_refused_pod_list_fails_at_once(tmp_path: Path) -> None:
    forbidden = 'Error from server (Forbidden): pods is forbidden: cannot list resource "pods"'
    proc, _ = run(tmp_path, {"pods": [], "get": forbidden, "exec": {}})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot list the pods of release pronto" in proc.stderr


def test_a_failing_status_command_fails_at_once(tmp_path: Path) -> None:
    proc, _ = run(tmp_path, {"pods": ["pronto-a"], "exec": {"pronto-a": [
        {"rc": 1, "stderr": "error: model flight-delay has no rollout\n"}]}})  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "has no rollout" in proc.stderr


def test_a_pod_that_went_away_is_looked_at_again(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, {"pods": ["pronto-a", "pronto-b"], "exec": {
        "pronto-a": [{"rc": 1, "stderr": GONE}, state("1", "2", 25), state("2")],
        "pronto-b": [state("1", "2", 25), state("2")],
    }})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every pod promoted version 2" in proc.stdout
    assert calls.count("exec pod/pronto-a") == 3


def test_an_abort_in_one_pod_aborts_every_pod(tmp_path: Path) -> None:
    proc, calls = run(tmp_path, {"pods": ["pronto-a", "pronto-b"], "exec": {
        "pronto-a": [state("1")], "pronto-b": [state("1", "2", 5)],
    }})  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pod/pronto-a aborted version 2" in proc.stdout
    aborts = [ln for ln in calls.splitlines() if "rollout abort" in ln]
    assert {ln.split()[3] for ln in aborts} == {"pod/pronto-a", "pod/pronto-b"}
