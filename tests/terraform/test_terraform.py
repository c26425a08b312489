"""Offline checks of terraform/: formatting, policy scan, declarations, validate and test.

The tools come from ``terraform/scripts/setup-offline.sh``: ``tools`` installs terraform and
checkov, ``provider`` builds hashicorp/google into a local mirror. Without the mirror,
``terraform validate`` and ``terraform test`` cannot load the provider's schema and are
skipped; CI's workflow runs them with the registry instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
ENV_DEV = TERRAFORM / "envs" / "dev"
MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
TOOLS = Path(os.environ.get("PRONTO_TOOLS_DIR", ROOT / ".tools"))
CLI_CONFIG = TOOLS / "terraform" / "cli.tfrc"
MIRROR = TOOLS / "terraform" / "mirror"
PROVIDER_VERSION = re.search(
    r'version = "([0-9.]+)"', (ENV_DEV / "versions.tf").read_text(encoding="utf-8")
)
SETUP = "terraform/scripts/setup-offline.sh"


def _terraform() -> str:
    local = TOOLS / "terraform" / "bin" / "terraform"
    found = str(local) if local.exists() else shutil.which("terraform")
    if found is None:
        missing_tool(f"no terraform binary: run {SETUP} tools")
    return found


def _checkov() -> str:
    local = TOOLS / "checkov-venv" / "bin" / "checkov"
    found = str(local) if local.exists() else shutil.which("checkov")
    if found is None:
        missing_tool(f"no checkov: run {SETUP} tools")
    return found


def _provider_built() -> bool:
    assert PROVIDER_VERSION is not None
    version = PROVIDER_VERSION.group(1)
    package = MIRROR / "registry.terraform.io" / "hashicorp" / "google" / version
    return CLI_CONFIG.exists() and any(package.glob(f"*/terraform-provider-google_v{version}"))


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{output}"
    return output


@pytest.fixture
def tf_env(tmp_path: Path) -> dict[str, str]:
    """Environment for terraform: the offline CLI config, no telemetry, no prompts."""
    env = dict(os.environ)
    if CLI_CONFIG.exists():
        env["TF_CLI_CONFIG_FILE"] = str(CLI_CONFIG)
    else:
        empty = tmp_path / "empty.tfrc"
        empty.write_text("", encoding="utf-8")
        env["TF_CLI_CONFIG_FILE"] = str(empty)
    env["CHECKPOINT_DISABLE"] = "1"
    env["TF_IN_AUTOMATION"] = "1"
    env["TF_INPUT"] = "0"
    return env


def test_fmt(tf_env: dict[str, str]) -> None:
    args = [_terraform(), "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM)]
    _run(args, ROOT, tf_env)


@pytest.mark.slow
def test_checkov(tf_env: dict[str, str]) -> None:
    output = _run(
        [_checkov(), "-d", "terraform", "--config-file", "terraform/.checkov.yaml"], ROOT, tf_env
    )
    assert "Failed checks: 0" in output, output


def _blocks(kind: str) -> Iterator[tuple[Path, str, str]]:
    """(file, name, body) of each top-level ``kind "name" { ... }`` block under terraform/."""
    header = re.compile(rf'^{kind} "([^"]+)" \{{\n', re.M)
    for path in sorted(TERRAFORM.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for match in header.finditer(text):
            # terraform fmt puts the closing brace of a top-level block alone at column 0.
            end = text.index("\n}\n", match.end())
            yield path, match.group(1), text[match.end() : end]


def test_every_variable_is_typed_and_described() -> None:
    missing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path, name, body in _blocks("variable")
        if not re.search(r"^  type\s+=", body, re.M)
        or not re.search(r"^  description\s+=", body, re.M)
    ]
    assert not missing, f"variables without type or description: {missing}"


def test_every_output_is_described() -> None:
    missing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path, name, body in _blocks("output")
        if not re.search(r"^  description\s+=", body, re.M)
    ]
    assert not missing, f"outputs without description: {missing}"


def test_providers_pinned() -> None:
    for directory in [ENV_DEV, *MODULES]:
        text = (directory / "versions.tf").read_text(encoding="utf-8")
        assert re.search(r'source\s+=\s+"hashicorp/google"', text), directory
        pinned = re.search(r'version\s+=\s+"[=<>~ ]*8\.', text)
        assert pinned, f"{directory}: google provider not pinned"
        assert "required_version" in text, f"{directory}: terraform version not constrained"


def test_outputs_documented() -> None:
    doc = (ROOT / "docs" / "infrastructure.md").read_text(encoding="utf-8")
    missing = [
        name
        for path, name, _ in _blocks("output")
        if path.parent == ENV_DEV and f"`{name}`" not in doc
    ]
    assert not missing, f"outputs missing from docs/infrastructure.md: {missing}"


@pytest.fixture
def initialised_env(tf_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    if not _provider_built():
        missing_tool(f"hashicorp/google is not in the offline mirror: run {SETUP} provider")
    # Keep provider copies and module links out of the source tree.
    tf_env["TF_DATA_DIR"] = str(tmp_path / "data")
    _run([_terraform(), "init", "-backend=false", "-input=false", "-no-color"], ENV_DEV, tf_env)
    return tf_env


@pytest.mark.slow
def test_validate(initialised_env: dict[str, str]) -> None:
    output = _run([_terraform(), "validate", "-no-color"], ENV_DEV, initialised_env)
    assert "Success" in output


@pytest.mark.slow
def test_terraform_test(initialised_env: dict[str, str]) -> None:
    output = _run([_terraform(), "test", "-no-color"], ENV_DEV, initialised_env, timeout=600)
    assert re.search(r"Success! \d+ passed, 0 failed", output), output
