#!/usr/bin/env python3
"""Rehearse the delivery workflows on this machine: `make rehearse`.

Runs the `run:` steps of `.github/workflows/train.yml` and `deploy.yml`, in order, with their
own `if:` conditions, `env:` blocks and step outputs, in a scratch clone of the working tree.
Only what cannot exist here is stood in for, each stand-in said as it happens:

- Google Cloud Storage: `gs://<bucket>/...` is a folder (a `gcloud storage` stand-in for
  cat/ls/cp), and the DVC remote is a local folder;
- Artifact Registry: a folder of tag -> digest records with immutable tags (a `docker buildx
  imagetools` stand-in); the image itself cannot be built without a Docker daemon;
- the cluster: `helm upgrade` becomes `helm template` with the step's own flags, validated
  against the Kubernetes 1.30 schemas, and is recorded as a release revision that `helm
  history` lists and `helm rollback` returns to; `helm test` cannot run without the release's
  pods (the stand-in passes it, or fails it where a scenario says so); `kubectl` answers
  without a cluster;
- Workload Identity Federation: the `auth` action's stand-in admits the job's token only when
  the conditions of terraform/modules/iam do (pipeline by GitHub environment, workflow_ref,
  event, deploy refs);
- GitHub: actions (`uses:`) are stand-ins (checkout, setup-python, ...); `cml` writes the
  pull-request comment to a file, after checking its flags; `npm install --global` is not run.

Jobs not rehearsed (deploy.yml's `ci` and `model-canary`) are listed with the reason.
Scenarios, each with the outcome it must have:
  1. train.yml, push to main: the first candidate passes the gate and is published (v1).
  2. train.yml, pull request: the gate compares with v1, the report goes to the "pull
     request", nothing is published.
  3. train.yml, repository_dispatch from an alert: the identity is admitted, the alert's
     model is checked, the retrained model is published (v2).
  4. train.yml, push to main with a starved model: the gate fails, nothing is published.
  5. deploy.yml, push to api: image "pushed" once, chart rendered and validated with v2.
  6. deploy.yml, the same commit again: the image is found, not pushed again.
  7. deploy.yml, a v* tag on that commit, twice: the release tag is added once.
  8. deploy.yml dispatched on api for v1, `helm test` failing: the gate's rollback steps
     (`helm history`, `helm rollback`) run and the release is back at the revision before.
  9. deploy.yml dispatched on main: the token exchange refuses it; nothing changes.

The data set is cut to a few thousand rows (params.yaml in the scratch copy) to keep the
rehearsal to a few minutes; everything else is the repository's own.
"""

# The stand-ins' sources below are small scripts written one statement to a line.
# ruff: noqa: E501

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
REPOSITORY = "example-org/pronto"
ROWS = 4000

# Jobs rehearsed here; every other job of a rehearsed workflow must say why it is not.
REHEARSED_JOBS = {("train.yml", "train"), ("deploy.yml", "deploy")}
JOBS_NOT_RUN = {
    ("deploy.yml", "ci"): "the whole of ci.yml (make test, lint, image build), which runs on "
    "every pull request and pushes to main; not repeated here",
    ("deploy.yml", "model-canary"): "needs the release's running pods: "
    ".github/scripts/wait-rollout.sh reads each pod's rollout analysis with `kubectl exec`; "
    "tests/test_wait_rollout.py runs that script against a kubectl stand-in, and "
    "tests/chart/test_delivery.py checks that the deploy Role allows what it runs",
}

# Steps whose run: goes to a stand-in that cannot do the real thing (said in the report).
STAND_IN_STEPS = {
    ("deploy.yml", "helm test"): "needs the release's pods; the helm stand-in passes it, or "
    "fails it where a scenario says so; tests/gateway/test_helm_test_pod.py runs the same pod "
    "script against a local server and Envoy",
}

# Steps that cannot run here, by workflow and step name, and why.
CANNOT_RUN = {
    ("deploy.yml", "Install the client side (pronto, ghz, wrk)"): "`make setup` on a fresh "
    "runner; here the checkout's own environment is already set up",
    ("deploy.yml", "Open a tunnel to the service"): "needs the deployed Service (port-forward)",
    ("deploy.yml", "Smoke test REST and gRPC"): "needs the deployed Service; tests/loadtest "
    "runs the same smoke scenario against a local stack",
    ("deploy.yml", "Challenge load as a gate"): "needs the deployed Service",
}


# --- ${{ }} expressions: the subset the workflows use. -----------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*))"
)


class Expr:
    """Evaluates GitHub Actions expressions against a context (a small recursive descent)."""

    def __init__(self, context: dict[str, Any], status: str) -> None:
        self.context, self.status = context, status

    def eval(self, text: str) -> Any:
        self.tokens, pos = [], 0
        while pos < len(text.rstrip()):
            m = TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot parse expression {text!r} at {pos}")
            kind = m.lastgroup
            assert kind is not None
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        value = self._or()
        if self.i != len(self.tokens):
            raise ValueError(f"trailing tokens in {text!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self.i += 1
            right = self._and()
            value = value or right
        return value

    def _and(self) -> Any:
        value = self._cmp()
        while self._peek() == "&&":
            self.i += 1
            right = self._cmp()
            value = value and right
        return value

    def _cmp(self) -> Any:
        value = self._unary()
        while self._peek() in ("==", "!="):
            op = self.tokens[self.i][1]
            self.i += 1
            right = self._unary()
            same = str(value).lower() == str(right).lower() if value is not None else right is None
            value = same if op == "==" else not same
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self.i += 1
            return not self._unary()
        return self._atom()

    def _atom(self) -> Any:
        kind, text = self.tokens[self.i]
        self.i += 1
        if text == "(":
            value = self._or()
            self.i += 1  # ")"
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text)
        if text in ("true", "false"):
            return text == "true"
        if self._peek() == "(":  # status functions
            self.i += 2
            return {
                "success": self.status == "success",
                "failure": self.status == "failure",
                "always": True,
                "cancelled": False,
            }[text]
        found: Any = self.context
        for part in text.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        return "" if found is None else found


def substitute(value: Any, expr: Expr) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)

    def one(m: re.Match[str]) -> str:
        result = expr.eval(m.group(1))
        return "true" if result is True else "false" if result is False else str(result)

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


# --- stand-ins -----------------------------------------------------------------------------

SHIM_GCLOUD = r"""
import shutil, sys
from pathlib import Path
GCS = Path(__SCRATCH__) / "gcs"
def local(uri): return GCS / uri.removeprefix("gs://")
def say(msg): print(f"[stand-in gcloud] {msg}", file=sys.stderr)
args = [a for a in sys.argv[1:]]
if args[:1] != ["storage"]: sys.exit(f"gcloud stand-in: only `gcloud storage` is stood in for: {args}")
verb, rest = args[1], args[2:]
flags = {a for a in rest if a.startswith("--")}
paths = [a for a in rest if not a.startswith("--")]
if verb == "cat":
    p = local(paths[0])
    if not p.is_file(): say(f"no object {paths[0]}"); sys.exit(1)
    sys.stdout.write(p.read_text()); sys.exit(0)
if verb == "ls":
    uri = paths[0]; p = local(uri)
    if p.is_file(): print(uri); sys.exit(0)
    if not p.is_dir() or not any(p.iterdir()): say(f"nothing matches {uri}"); sys.exit(1)
    for c in sorted(p.iterdir()): print(uri.rstrip("/") + "/" + c.name + ("/" if c.is_dir() else ""))
    sys.exit(0)
if verb == "cp":
    src, dst = paths
    if src == "-":
        d = local(dst); d.parent.mkdir(parents=True, exist_ok=True); d.write_text(sys.stdin.read()); sys.exit(0)
    def expand(s):
        base = local(s) if s.startswith("gs://") else Path(s)
        if base.name == "*": return sorted(base.parent.iterdir()) if base.parent.is_dir() else []
        return [base] if base.exists() else []
    sources = expand(src)
    if not sources: say(f"no match for {src}"); sys.exit(1)
    target = local(dst) if dst.startswith("gs://") else Path(dst)
    for s in sources:
        t = target / s.name if dst.endswith("/") or len(sources) > 1 else target
        if "--no-clobber" in flags and t.exists(): say(f"skipping existing {t}"); continue
        t.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            if "--recursive" not in flags: sys.exit(f"{s} is a folder: --recursive needed")
            shutil.copytree(s, t, dirs_exist_ok=True)
        else: shutil.copy2(s, t)
    sys.exit(0)
sys.exit(f"gcloud stand-in: `storage {verb}` is not stood in for")
"""

SHIM_DOCKER = r"""
import hashlib, sys
from pathlib import Path
REG = Path(__SCRATCH__) / "registry"
def path(ref): return REG / ref.replace("/", "_")
args = sys.argv[1:]
if args[:3] == ["buildx", "imagetools", "inspect"]:
    p = path(args[3])
    if not p.is_file(): print(f"ERROR: {args[3]}: not found", file=sys.stderr); sys.exit(1)
    print(p.read_text().strip()); sys.exit(0)
if args[:3] == ["buildx", "imagetools", "create"]:
    tag, src = args[args.index("--tag") + 1], args[-1]
    if path(tag).exists(): print(f"ERROR: tag {tag} is immutable and exists", file=sys.stderr); sys.exit(1)
    REG.mkdir(parents=True, exist_ok=True); path(tag).write_text(src.split("@", 1)[1]); sys.exit(0)
sys.exit(f"docker stand-in: no Docker daemon here; `docker {' '.join(args[:3])}` is not stood in for")
"""

SHIM_CML = r"""
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
if args[:1] != ["comment"] or args[1] not in ("create", "update"): sys.exit(f"cml stand-in: {args}")
if "--publish" in args: sys.exit("cml: --publish uploads the report's images to a third-party host")
if "--target=pr" not in args: sys.exit("cml: the report must go to the pull request (--target=pr)")
report = Path(args[-1])
out = Path(__SCRATCH__) / "out" / "pr-comment.md"
out.parent.mkdir(parents=True, exist_ok=True); shutil.copy(report, out)
print(f"[stand-in cml] pull-request comment written to {out}")
"""

SHIM_NPM = r"""
import sys
args = sys.argv[1:]
if args[:2] == ["install", "--global"] and any(a.startswith(("@dvcorg/cml@", '"@dvcorg/cml@')) or "@dvcorg/cml@" in a for a in args):
    print("[stand-in npm] not installing CML globally here; the cml stand-in checks its flags"); sys.exit(0)
sys.exit(f"npm stand-in: {args}")
"""

SHIM_KUBECTL = r"""
import sys
print(f"[stand-in kubectl] no cluster here: kubectl {' '.join(sys.argv[1:])}")
"""

SHIM_HELM = r'''
import json, subprocess, sys, time
from pathlib import Path
HELM, PY = __HELM__, __PY__
SCRATCH = Path(__SCRATCH__)
def say(msg): print(f"[stand-in helm] {msg}", file=sys.stderr)
# -n/--namespace may come before or after the subcommand, as helm allows.
argv, args, ns, i = sys.argv[1:], [], None, 0
while i < len(argv):
    if argv[i] in ("-n", "--namespace"): ns = argv[i + 1]; i += 2; continue
    if argv[i].startswith("--namespace="): ns = argv[i].split("=", 1)[1]; i += 1; continue
    args.append(argv[i]); i += 1
verb = args[0] if args else ""
if verb not in ("upgrade", "test", "history", "rollback"):
    sys.exit(f"helm stand-in: `helm {verb}` is not stood in for")
if ns is None: sys.exit(f"helm {verb}: no --namespace")
VALUE_FLAGS = {"--timeout", "--max", "-o", "--output", "--set", "--set-string", "-f", "--values", "--version"}
positional, j = [], 1
while j < len(args):
    if args[j] in VALUE_FLAGS: j += 2; continue
    if not args[j].startswith("-"): positional.append(args[j])
    j += 1
release = positional[0]
# A release's history: one record per revision, like the Secrets helm keeps.
store = SCRATCH / "releases" / f"{ns}.{release}.json"
history = json.loads(store.read_text()) if store.is_file() else []
def save(): store.parent.mkdir(parents=True, exist_ok=True); store.write_text(json.dumps(history, indent=1))
def render(template_args):
    cmd = [HELM, "template", *template_args, "--namespace", ns, "--kube-version", "1.30.0"]
    say(" ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode: sys.stderr.write(proc.stderr); sys.exit(proc.returncode)
    rendered = SCRATCH / "out" / "rendered.yaml"
    rendered.parent.mkdir(parents=True, exist_ok=True); rendered.write_text(proc.stdout)
    check = subprocess.run([PY, "-c", """
import sys, yaml, kubernetes_validate
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    kubernetes_validate.validate(d, "1.30.0", strict=True)
print(f"[stand-in helm] {len(docs)} objects valid for Kubernetes 1.30 (strict schemas)")
""", str(rendered)])
    if check.returncode: sys.exit(check.returncode)
def record(template_args, description):
    for h in history: h["status"] = "superseded"
    history.append({"revision": len(history) + 1, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "status": "deployed", "chart": "pronto", "description": description,
                    "template_args": template_args})
    save()
if not history and verb != "upgrade":
    print("Error: release: not found", file=sys.stderr); sys.exit(1)
if verb == "upgrade":
    if "--create-namespace" in args: sys.exit("helm upgrade: the deploy identity cannot create namespaces")
    if not history and "--install" not in args: print(f'Error: UPGRADE FAILED: "{release}" has no deployed releases', file=sys.stderr); sys.exit(1)
    drop = {"upgrade", "--install", "--atomic", "--wait"}
    out, skip = [], False
    for a in args:
        if skip: skip = False; continue
        if a == "--timeout": skip = True; continue
        if a not in drop: out.append(a)
    render(out)
    record(out, "Upgrade complete" if history else "Install complete")
    say(f"release {release} revision {len(history)} recorded (no cluster: nothing applied)")
elif verb == "test":
    if (SCRATCH / "helm-test-fails").exists():
        say("the scenario makes the test pod fail")
        print(f"Error: 1 error occurred:\n\t* pod {release}-pronto-test failed", file=sys.stderr); sys.exit(1)
    say("not run here: helm test needs the release's pods (tests/gateway/test_helm_test_pod.py runs its script)")
elif verb == "history":
    limit = int(args[args.index("--max") + 1]) if "--max" in args else 256
    shown = [{k: v for k, v in h.items() if k != "template_args"} for h in history[-limit:]]
    if "-o" in args and args[args.index("-o") + 1] == "json": print(json.dumps(shown))
    else:
        print("REVISION\tUPDATED\tSTATUS\tCHART\tDESCRIPTION")
        for h in shown: print(f"{h['revision']}\t{h['updated']}\t{h['status']}\t{h['chart']}\t{h['description']}")
elif verb == "rollback":
    target = int(positional[1]) if len(positional) > 1 else len(history) - 1
    if target < 1 or target > len(history): print(f"Error: release has no {target} version", file=sys.stderr); sys.exit(1)
    render(history[target - 1]["template_args"])
    record(history[target - 1]["template_args"], f"Rollback to {target}")
    print("Rollback was a success! Happy Helming!")
'''


def write_shims(scratch: Path, bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    helm = shutil.which("helm", path=str(ROOT / ".tools" / "bin")) or shutil.which("helm")
    if helm is None:
        sys.exit("rehearse: helm is missing (make setup-go)")
    for name, body in (
        ("gcloud", SHIM_GCLOUD),
        ("docker", SHIM_DOCKER),
        ("cml", SHIM_CML),
        ("npm", SHIM_NPM),
        ("kubectl", SHIM_KUBECTL),
        ("helm", SHIM_HELM),
    ):
        text = body.replace("__SCRATCH__", repr(str(scratch)))
        text = text.replace("__HELM__", repr(helm)).replace("__PY__", repr(py))
        (bin_dir / name).write_text(f"#!{py}\n{text}")
        (bin_dir / name).chmod(0o755)
    # setup-python's stand-in: the interpreter this checkout's environment was made from.
    base = Path(getattr(sys, "_base_executable", sys.executable))
    (bin_dir / "python").symlink_to(base)
    (bin_dir / "python3").symlink_to(base)


IAM = ROOT / "terraform" / "modules" / "iam"


def wif_refusal(workflow: str, event: str, ref: str, environment: str | None) -> str | None:
    """Why the Workload Identity Federation token exchange would refuse this job (None: it
    is admitted), from terraform/modules/iam: the pipeline the job's GitHub environment
    belongs to, then that pipeline's workflow_ref, event and ref conditions."""
    variables = (IAM / "variables.tf").read_text()
    conditions = (IAM / "main.tf").read_text()

    def default(name: str) -> str:
        m = re.search(rf'variable "{name}" \{{.*?^  default\s+=\s+(.*?)$', variables, re.S | re.M)
        if not m:
            raise SystemExit(f"rehearse: no default for {name} in {IAM / 'variables.tf'}")
        return m[1].strip()

    environments = {
        "deploy": default("github_deploy_environment").strip('"'),
        "train": default("github_train_environment").strip('"'),
        "train-check": default("github_train_check_environment").strip('"'),
    }
    pipeline = next((p for p, e in environments.items() if e == environment), None)
    if pipeline is None:
        return f"no pipeline uses the GitHub environment {environment!r}"
    body = re.search(rf'^ +{re.escape(pipeline)} = join\(" && ", \[\n(.*?)^ +\]\)',
                     conditions, re.S | re.M)  # fmt: skip
    if not body:
        raise SystemExit(f"rehearse: no condition for pipeline {pipeline} in {IAM / 'main.tf'}")
    where = f"{workflow}@{ref}"
    for m in re.finditer(r"assertion\.workflow_ref(?P<op> == |\.startsWith\()'\$\{local\.workflows\}/(?P<v>[^']*)'", body[1]):  # fmt: skip
        if not (where == m["v"] if m["op"] == " == " else where.startswith(m["v"])):
            return f"pipeline {pipeline} admits workflow_ref .../{m['v']}, not .../{where}"
    events = re.search(r"assertion\.event_name (?:==|in) (\[[^\]]*\]|'[^']*')", body[1])
    if events and event not in re.findall(r"'([^']+)'", events[1]):
        return f"pipeline {pipeline} admits events {events[1]}, not {event}"
    if "deploy_ref_condition" in body[1]:
        refs = re.findall(r'"([^"]+)"', default("github_deploy_refs"))
        if not any(ref == r or (r.endswith("*") and ref.startswith(r[:-1])) for r in refs):
            return f"pipeline {pipeline} admits refs {refs} (github_deploy_refs), not {ref}"
    return None


def uses_stand_in(action: str, step: dict[str, Any], state: Job, expr: Expr) -> tuple[bool, str]:
    """What an action does here: (ok, what happened)."""
    name = action.split("@", 1)[0]
    with_ = {k: substitute(v, expr) for k, v in (step.get("with") or {}).items()}
    if name == "docker/build-push-action":
        tags = [t.strip() for t in with_.get("tags", "").split() if t.strip()]
        if with_.get("push") != "true":
            return True, "no Docker daemon here: the image is not built"
        registry = state.scratch / "registry"
        registry.mkdir(parents=True, exist_ok=True)
        digest = "sha256:" + hashlib.sha256(f"{tags}{time.time()}".encode()).hexdigest()
        for tag in tags:
            record = registry / tag.replace("/", "_")
            if record.exists():  # Artifact Registry with immutable tags refuses this push
                return False, f"push refused: tag {tag} exists and tags are immutable"
            record.write_text(digest)
        state.outputs[step.get("id", "")] = {"digest": digest}
        return True, f"no Docker daemon here: recorded {', '.join(tags)} as {digest[:19]}..."
    if name == "google-github-actions/get-gke-credentials":
        dns = with_.get("use_dns_based_endpoint") == "true"
        if not dns:
            return False, "without use_dns_based_endpoint the runner cannot reach the control plane"
        return True, "no cluster here (DNS endpoint requested)"
    if name == "google-github-actions/auth":
        refused = wif_refusal(state.workflow, state.event, state.ref, state.environment)
        if refused:
            return False, f"the token exchange refuses this job: {refused}"
        return True, f"token admitted by the Workload Identity condition ({state.environment})"
    if name == "azure/setup-helm":
        return True, "helm from .tools/bin (helm upgrade is stood in for by helm template)"
    if name == "actions/upload-artifact":
        return True, f"artifact {with_.get('name')} not uploaded"
    return True, "GitHub action, stood in for"


# --- one job run ---------------------------------------------------------------------------


@dataclass
class Job:
    workflow: str
    job: str
    event: str
    ref: str
    scratch: Path
    work: Path
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    failed_step: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)  # github.event
    environment: str | None = None


def _read_kv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and "=" not in line.split("<<")[0]:
            key, marker = line.split("<<", 1)
            body = []
            i += 1
            while lines[i] != marker:
                body.append(lines[i])
                i += 1
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
        i += 1
    return values


def run_job(state: Job, bin_dir: Path, sha: str) -> Job:
    doc = yaml.safe_load((WORKFLOWS / state.workflow).read_text())
    job = doc["jobs"][state.job]
    ref_type = "tag" if state.ref.startswith("refs/tags/") else "branch"
    ref_name = state.ref.split("/", 2)[2]
    github = {
        "event_name": state.event, "ref": state.ref, "sha": sha, "ref_type": ref_type,
        "ref_name": ref_name, "repository": REPOSITORY, "server_url": "https://github.com",
        "run_id": "1", "workflow": doc["name"], "event": state.payload,
    }  # fmt: skip
    gcs = state.scratch / "gcs"
    context: dict[str, Any] = {
        "github": github,
        "vars": {
            "GCP_WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/p/providers/github-actions",
            "GCP_SERVICE_ACCOUNT": "stand-in@example.iam.gserviceaccount.com",
            "RUNTIME_SERVICE_ACCOUNT": "pronto-runtime@example.iam.gserviceaccount.com",
            "ARTIFACT_REGISTRY": "europe-west1-docker.pkg.dev/example/pronto",
            "MODEL_BUCKET": "example-models",
            # DVC's stand-in remote is a local folder (dvc-gs would need credentials).
            "DVC_REMOTE_URL": str(gcs / "example-dvc" / "dvc"),
            "GCP_PROJECT_ID": "example",
            "GKE_CLUSTER": "pronto-dev",
            "GKE_LOCATION": "europe-west1-b",
        },
        "secrets": {"GITHUB_TOKEN": "stand-in", "PRONTO_API_KEY": "stand-in"},
        "inputs": dict(state.inputs),
        "steps": {},
        "env": {},
    }
    env_base = {
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_SHA": sha,
        "GITHUB_REF": state.ref,
        "GITHUB_REF_NAME": ref_name,
        "GITHUB_REF_TYPE": ref_type,
        "GITHUB_EVENT_NAME": state.event,
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_WORKSPACE": str(state.work),
        "RUNNER_TEMP": str(state.scratch / "tmp"),
        "DVC_NO_ANALYTICS": "1",
    }
    # The machine's own network settings (proxies, CA bundles, package index options), as a
    # runner has its own.
    passthrough = re.compile(r"(?i).*(proxy|_ca_|ca_bundle|cert|^pip_|^uv_|^xdg_).*")
    env_base.update({k: v for k, v in os.environ.items() if passthrough.match(k)})
    path_extra: list[str] = []
    status = "success"
    wf_env = doc.get("env") or {}
    for key, value in wf_env.items():
        context["env"][key] = substitute(value, Expr(context, status))
    for key, value in (job.get("env") or {}).items():
        context["env"][key] = substitute(value, Expr(context, status))
    environment = job.get("environment")
    if environment:
        state.environment = substitute(environment, Expr(context, status))
        state.log.append(("environment", "info", state.environment))
    summary = state.scratch / "out" / f"summary-{state.workflow}-{state.event}.md"
    summary.parent.mkdir(parents=True, exist_ok=True)
    for index, step in enumerate(job["steps"]):
        sid = step.get("id") or f"_{index}"
        label = step.get("name") or step.get("uses") or sid
        expr = Expr(context, status)
        cond = step.get("if")
        if cond is None:
            run_it = status == "success"
        else:
            text = cond.strip()
            text = text[3:-2] if text.startswith("${{") else text
            has_status = re.search(r"\b(success|failure|always|cancelled)\(\)", text)
            run_it = bool(expr.eval(text)) and (has_status is not None or status == "success")
        if not run_it:
            context["steps"][sid] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
            state.log.append((label, "skipped", ""))
            continue
        reason = CANNOT_RUN.get((state.workflow, label))
        if reason:
            context["steps"][sid] = {"outcome": "success", "conclusion": "success", "outputs": {}}
            state.log.append((label, "not here", reason))
            continue
        if "uses" in step:
            ok, what = uses_stand_in(step["uses"], step, state, expr)
            outputs = state.outputs.get(step.get("id", ""), {})
            outcome = "success" if ok else "failure"
            context["steps"][sid] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}
            state.log.append((label, "stand-in" if ok else "FAILED", what))
            if not ok:
                status, state.failed_step = "failure", sid
            continue
        script = step["run"]
        if "${{" in script:
            raise SystemExit(f"{state.workflow}: step {label!r} puts an expression into run:")
        files = {}
        for kind in ("OUTPUT", "ENV", "PATH"):
            files[kind] = state.scratch / "tmp" / f"{sid}.{kind.lower()}"
            files[kind].parent.mkdir(parents=True, exist_ok=True)
            files[kind].write_text("")
        env = dict(env_base)
        env.update(context["env"])
        for key, value in (step.get("env") or {}).items():
            env[key] = substitute(value, expr)
        env["GITHUB_OUTPUT"], env["GITHUB_ENV"] = str(files["OUTPUT"]), str(files["ENV"])
        env["GITHUB_PATH"], env["GITHUB_STEP_SUMMARY"] = str(files["PATH"]), str(summary)
        env["PATH"] = os.pathsep.join(
            [*path_extra, str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"]
        )
        started = time.monotonic()
        print(f"\n--- {state.workflow} [{state.event} {state.ref}] {label}", flush=True)
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=state.work, env=env, check=False,
        )  # fmt: skip
        took = f"{time.monotonic() - started:.0f}s"
        outputs = _read_kv(files["OUTPUT"])
        for key, value in _read_kv(files["ENV"]).items():
            context["env"][key] = value
        path_extra = [p for p in files["PATH"].read_text().splitlines() if p][::-1] + path_extra
        outcome = "success" if proc.returncode == 0 else "failure"
        context["steps"][sid] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}
        state.outcomes[sid] = outcome
        stand_in = STAND_IN_STEPS.get((state.workflow, label))
        if stand_in:
            took = f"{took}; {stand_in}"
        ok_word = "stand-in" if stand_in else "ran"
        state.log.append((label, ok_word if outcome == "success" else "FAILED", took))
        if outcome == "failure":
            status, state.failed_step = "failure", sid
    return state


# --- scenarios -----------------------------------------------------------------------------


def prepare(scratch: Path) -> tuple[Path, str]:
    """A clone of this working tree (committed), with an `origin` that has a `main`."""
    origin = scratch / "origin.git"
    work = scratch / "work"
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "-q", "--bare", str(ROOT), str(origin)], check=True)
    base = "main" if subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "refs/heads/main"], cwd=ROOT, capture_output=True
    ).returncode == 0 else "HEAD"  # fmt: skip
    main = subprocess.run(
        ["git", "rev-parse", base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "update-ref", "refs/heads/main", main], cwd=origin, check=True)
    subprocess.run([*git, "clone", "-q", str(origin), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", "-B", "rehearsal", "HEAD"], cwd=work, check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    params = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(re.sub(r"rows: \d+", f"rows: {ROWS}", params, count=1))
    return work, commit(work, "rehearsal: the working tree, smaller data set")


def commit(work: Path, message: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="rehearsal", GIT_AUTHOR_EMAIL="rehearsal@localhost")
    env.update(GIT_COMMITTER_NAME="rehearsal", GIT_COMMITTER_EMAIL="rehearsal@localhost")
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=work, env=env,
                   check=True)  # fmt: skip
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True)
    return out.stdout.strip()


def report(state: Job) -> None:
    print(f"\n== {state.workflow} [{state.event} {state.ref}]")
    for label, what, note in state.log:
        print(f"   {what:9} {label}" + (f"  ({note})" if note else ""))


def jobs_not_run(workflow: str) -> list[tuple[str, str]]:
    """The jobs of a workflow the rehearsal does not run, each with why; a job that is
    neither rehearsed nor explained stops the rehearsal."""
    doc = yaml.safe_load((WORKFLOWS / workflow).read_text())
    found = []
    for job in doc["jobs"]:
        if (workflow, job) in REHEARSED_JOBS:
            continue
        reason = JOBS_NOT_RUN.get((workflow, job))
        if reason is None:
            raise SystemExit(f"rehearse: {workflow} job {job!r} is neither rehearsed nor said "
                             "why not (JOBS_NOT_RUN)")  # fmt: skip
        found.append((job, reason))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pronto-rehearsal-"))
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        print(f"   {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    def logged(state: Job, step: str) -> str:
        return next((what for label, what, _ in state.log if label == step), "absent")

    try:
        for workflow in ("train.yml", "deploy.yml"):
            for job, reason in jobs_not_run(workflow):
                print(f"== {workflow} job `{job}`: not run here: {reason}")
        bin_dir = scratch / "bin"
        write_shims(scratch, bin_dir)
        work, sha = prepare(scratch)
        registry = scratch / "gcs" / "example-models" / "flight-delay"
        latest = registry / "LATEST"

        # 1. merge to main: the first candidate is published.
        s1 = run_job(
            Job("train.yml", "train", "push", "refs/heads/main", scratch, work), bin_dir, sha
        )
        report(s1)
        expect(s1.failed_step is None, "train on main succeeds")
        expect(
            latest.is_file() and latest.read_text().strip() == "1", "version 1 published, LATEST=1"
        )
        expect((scratch / "gcs" / "example-dvc" / "dvc").is_dir(), "dvc push filled the remote")

        # 2. pull request: compared with production, reported, nothing published.
        s2 = run_job(Job("train.yml", "train", "pull_request", "refs/pull/1/merge", scratch, work),
                     bin_dir, sha)  # fmt: skip
        report(s2)
        comment = scratch / "out" / "pr-comment.md"
        expect(s2.failed_step is None, "train on a pull request succeeds")
        expect(comment.is_file() and "Production: flight-delay version 1" in comment.read_text(),
               "the pull request gets the report against production version 1")  # fmt: skip
        expect(not (registry / "2").exists(), "a pull request publishes nothing")

        # 3. an alert asks for retraining (repository_dispatch from `pronto alert-relay`).
        alert = {"client_payload": {"model": "flight-delay", "version": "1",
                                    "alertname": "ProntoModelQualityDrop"}}  # fmt: skip
        s3 = run_job(Job("train.yml", "train", "repository_dispatch", "refs/heads/main", scratch,
                         work, payload=alert), bin_dir, sha)  # fmt: skip
        report(s3)
        expect(s3.failed_step is None, "retraining after an alert succeeds (identity admitted)")
        expect(logged(s3, "Check the model an alert asked to retrain") == "ran",
               "the alert's model is checked against the one this pipeline trains")  # fmt: skip
        expect(latest.read_text().strip() == "2" and (registry / "2").is_dir(),
               "the retrained model, as good as production, is published as version 2")  # fmt: skip

        # 4. a worse model merged to main: the gate stops it.
        params = (work / "params.yaml").read_text()
        (work / "params.yaml").write_text(re.sub(r"lr_c: [0-9.e-]+", "lr_c: 0.00001", params))
        worse = commit(work, "rehearsal: a starved model")
        s4 = run_job(Job("train.yml", "train", "push", "refs/heads/main", scratch, work), bin_dir,
                     worse)  # fmt: skip
        report(s4)
        expect(s4.failed_step == "gate", "the gate fails a worse candidate")
        expect(latest.read_text().strip() == "2" and not (registry / "3").exists(),
               "nothing published; LATEST stays 2")  # fmt: skip

        # 5. deploy from api; 6. the same commit again.
        for attempt in (1, 2):
            s = run_job(Job("deploy.yml", "deploy", "push", "refs/heads/api", scratch, work),
                        bin_dir, worse)  # fmt: skip
            report(s)
            expect(s.failed_step is None, f"deploy attempt {attempt} succeeds")
            build = next(entry for entry in s.log if "Build and push" in entry[0])
            pushed = build[1] == "stand-in"
            expect(pushed == (attempt == 1),
                   "image pushed on the first attempt only (immutable tags)")  # fmt: skip
        # 7. a release tag on the same commit, twice: the tag is added once, never moved.
        release = scratch / "registry" / "europe-west1-docker.pkg.dev_example_pronto_pronto:v0.1.0"
        for attempt in (1, 2):
            s = run_job(
                Job("deploy.yml", "deploy", "push", "refs/tags/v0.1.0", scratch, work),
                bin_dir,
                worse,
            )
            report(s)
            expect(s.failed_step is None, f"release deploy attempt {attempt} succeeds")
        expect(release.is_file(), "the release tag points at the commit's image")
        rendered = scratch / "out" / "rendered.yaml"
        text = rendered.read_text() if rendered.is_file() else ""
        expect('pronto.dev/model: "flight-delay/2"' in text,
               "the chart was rendered for the published model version (LATEST)")  # fmt: skip

        # 8. a manual deploy of version 1 whose `helm test` fails: the gate's rollback steps
        # run and the release goes back to the revision before.
        history_file = scratch / "releases" / "pronto.pronto.json"
        revisions = len(json.loads(history_file.read_text())) if history_file.is_file() else 0
        (scratch / "helm-test-fails").touch()
        s8 = run_job(Job("deploy.yml", "deploy", "workflow_dispatch", "refs/heads/api", scratch,
                         work, inputs={"model_version": "1"}), bin_dir, worse)  # fmt: skip
        (scratch / "helm-test-fails").unlink()
        report(s8)
        history = json.loads(history_file.read_text()) if history_file.is_file() else []
        expect(logged(s8, "helm test") == "FAILED", "helm test fails (the stand-in is told to)")
        expect(logged(s8, "Roll back when the gate fails") == "ran",
               "the rollback step runs: helm history, helm rollback")  # fmt: skip
        expect(len(history) == revisions + 2
               and history[-1]["description"] == f"Rollback to {revisions}"
               and history[-1]["template_args"] == history[-3]["template_args"],
               f"the release is rolled back to revision {revisions}")  # fmt: skip
        text = rendered.read_text() if rendered.is_file() else ""
        expect('pronto.dev/model: "flight-delay/2"' in text,
               "after the rollback the release serves version 2 again")  # fmt: skip

        # 9. a deploy dispatched on main: the token exchange refuses it before anything runs.
        s9 = run_job(Job("deploy.yml", "deploy", "workflow_dispatch", "refs/heads/main", scratch,
                         work), bin_dir, worse)  # fmt: skip
        report(s9)
        expect(s9.failed_step == "auth", "a deploy from main gets no credentials")
        after = json.loads(history_file.read_text()) if history_file.is_file() else []
        expect(len(after) == len(history), "and changes nothing")
    finally:
        if args.keep:
            print(f"\nscratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print(f"\nrehearsal FAILED: {len(failures)} expectation(s) not met")
        return 1
    print("\nrehearsal passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
