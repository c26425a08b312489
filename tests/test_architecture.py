"""Checks that keep the package boundaries and the fork rule from eroding silently.

Each check is a function of a source tree or a module name, so the tests below also run
it on a deliberately broken input and show that it fails.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pronto_cli.main import COMMANDS, build_parser
from pronto_cli.procs import free_port
from pronto_contract import MANIFEST_FILE, MODEL_FILE, version_dir

ROOT = Path(__file__).resolve().parents[1]

#: package -> project packages it must never import (lazily or under TYPE_CHECKING
#: included), and the modules of those packages that are allowed anyway
RULES: dict[str, tuple[set[str], set[str]]] = {
    # the contract: both sides import it, it imports neither
    "pronto_contract": ({"server", "trainer", "gateway", "loadtest", "pronto_cli"}, set()),
    # the runtime carries only itself: the serving image has no trainer or load tests
    "server": ({"trainer", "gateway", "loadtest", "pronto_cli"}, set()),
    # training must not need the server; its subcommand uses the generic flag helper only
    "trainer": ({"server", "gateway", "loadtest", "pronto_cli"}, {"pronto_cli.flags"}),
    "gateway": ({"server", "trainer", "loadtest", "pronto_cli"}, {"pronto_cli.flags"}),
    # the load tests and chaos runs are tools of their own: they never need the test suite
    "loadtest": ({"tests"}, set()),
    # the client installs with the `client` extra (no pydantic, no ONNX Runtime): of the
    # project it takes only the generated messages, which it shares with the server
    "pronto": (
        {"server", "trainer", "gateway", "loadtest", "pronto_cli", "pronto_contract"},
        {"server.generated"},
    ),
}
#: packages whose Python code must reach the model repository through pronto_contract
LAYOUT_USERS = ("server", "trainer", "gateway", "loadtest", "pronto", "pronto_cli")
#: third-party modules the contract must not import (it is imported before the fork)
CONTRACT_HEAVY = {"numpy", "onnxruntime", "sklearn", "pandas", "onnx", "grpc"}
#: modules the supervisor must not have loaded when it forks workers
FORK_HEAVY = ("numpy", "onnxruntime")


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every absolute import in ``path``, anywhere in the file (inside functions and
    ``if TYPE_CHECKING:`` too): line, module, and what ``from module import a, b`` may
    name as submodules (``module.a``, ``module.b``). Relative imports stay inside the
    package and are skipped."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            found.append((node.lineno, node.module, subs))
    return found


def _matches(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def boundary_violations(root: Path) -> list[str]:
    """``file:line imports module`` for every import that breaks :data:`RULES`."""
    violations = []
    for package, (forbidden, allowed) in RULES.items():
        for path in sorted((root / package).rglob("*.py")):
            if "generated" in path.parts:
                continue
            banned = forbidden | (CONTRACT_HEAVY if package == "pronto_contract" else set())
            for line, module, subs in _imports(path):
                if not _matches(module, banned) or _matches(module, allowed):
                    continue
                if subs and all(_matches(sub, allowed) for sub in subs):
                    continue  # `from pronto_cli import flags` where pronto_cli.flags is allowed
                violations.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(set(violations))


def layout_violations(root: Path) -> list[str]:
    """``file:line what`` for code outside ``pronto_contract`` that spells the repository
    layout out itself: a string that is a model file name (``"model.onnx"``,
    ``"model.json"``, or a path ending in one), or a version test on a folder name
    (``path.name.isdigit()``). Docstrings and messages that mention a file are fine."""
    files = {MODEL_FILE, MANIFEST_FILE}
    violations = []
    for package in LAYOUT_USERS:
        for path in sorted((root / package).rglob("*.py")):
            if "generated" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if node.value in files or node.value.endswith(tuple("/" + f for f in files)):
                        violations.append(f"{where} names {node.value!r}")
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "isdigit"
                    and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr == "name"
                ):
                    violations.append(f"{where} tests a folder name for a version")
    return sorted(violations)


def heavy_modules_after(code: str) -> list[str]:
    """The :data:`FORK_HEAVY` modules loaded after running ``code`` in a fresh interpreter."""
    probe = code + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {FORK_HEAVY!r})))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded: list[str] = json.loads(out.strip().splitlines()[-1])
    return loaded


# -- the rules hold ---------------------------------------------------------------


def test_import_boundaries() -> None:
    """Protects the package boundaries: the server never imports the trainer, the
    gateway, the load tests or the CLI; the trainer never imports the server; the
    contract imports none of them and nothing heavy. A violation names file and line."""
    assert boundary_violations(ROOT) == []


def test_only_the_contract_spells_out_the_repository_layout() -> None:
    """Protects the one model contract: code that finds versions or model files goes
    through ``pronto_contract`` (``list_versions``, ``version_dir``, ``MODEL_FILE``...).
    The tests build repositories by hand on purpose and are not scanned; the chart's
    fetch script is shell and names the two files itself."""
    assert layout_violations(ROOT) == []


def test_supervisor_forks_without_numpy_or_onnxruntime() -> None:
    """Protects the fork rule: numpy/OpenBLAS and ONNX Runtime start native threads on
    import, and a process that forks with live threads hands its children locks that
    nobody will release. The supervisor, and ``pronto serve`` up to the fork, must not
    import them (workers import them after the fork)."""
    code = textwrap.dedent(
        """
        from pronto_cli.main import build_parser
        build_parser("serve")
        import server.supervisor
        """
    )
    assert heavy_modules_after(code) == []


#: run in a fresh interpreter: ``pronto serve`` through the real CLI entry point, with
#: ``os.fork`` replaced by a stub that reports the heavy modules loaded at the first fork
#: and ends the process there (nothing is forked, no port is opened)
_FORK_PROBE = """
import json, os, sys

def fork():
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    print("FIRST FORK " + json.dumps(heavy), flush=True)
    os._exit(0)

os.fork = fork
{prelude}
from pronto_cli.main import main
sys.exit(main({argv!r}))
"""


def heavy_modules_at_first_fork(tmp_path: Path, prelude: str = "") -> list[str]:
    """The :data:`FORK_HEAVY` modules that ``pronto serve`` has loaded when it first forks.

    The repository holds one version whose ``model.onnx`` is empty: the supervisor only
    checks that a version exists, and loading it is the template's and the workers' job,
    after the fork. Fails when the command exits without ever forking.
    """
    repo = tmp_path / "models"
    folder = version_dir(repo, "m", 1)
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"")
    argv = [
        "serve", "--model-repository", str(repo), "--workers", "2", "--host", "127.0.0.1",
        "--port", str(free_port()), "--worker-base-port", "0", "--metrics-port", str(free_port()),
        "--metrics-dir", str(tmp_path / "metrics"), "--capture-dir", str(tmp_path / "capture"),
    ]  # fmt: skip
    code = _FORK_PROBE.format(heavy=FORK_HEAVY, prelude=textwrap.dedent(prelude), argv=argv)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    marks = [line for line in proc.stdout.splitlines() if line.startswith("FIRST FORK ")]
    assert marks, f"pronto serve never forked (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    loaded: list[str] = json.loads(marks[0].removeprefix("FIRST FORK "))
    return loaded


@pytest.mark.integration
def test_pronto_serve_forks_without_numpy_or_onnxruntime(tmp_path: Path) -> None:
    """Protects the fork rule end to end: ``pronto serve`` itself (argument parsing,
    settings, version selection, metrics and capture set-up) has loaded neither numpy
    nor ONNX Runtime when it forks its first child, the warm template. The import-only
    check above cannot see a heavy import on a code path that runs before the fork."""
    assert heavy_modules_at_first_fork(tmp_path) == []


@pytest.mark.integration
def test_fork_probe_catches_a_heavy_import_before_the_fork(tmp_path: Path) -> None:
    """The probe on a supervisor broken on purpose: a step that runs before the fork
    (building the supervisor's metric collectors) imports numpy."""
    broken = """
        import server.supervisor as supervisor
        collectors = supervisor.supervisor_collectors

        def heavy_collectors(*args, **kwargs):
            import numpy
            return collectors(*args, **kwargs)

        supervisor.supervisor_collectors = heavy_collectors
        """
    assert "numpy" in heavy_modules_at_first_fork(tmp_path, broken)


def test_cli_imports_only_the_command_it_runs() -> None:
    """Protects the thin CLI: ``pronto --help`` imports no component, and ``pronto serve``
    imports neither the trainer, the gateway nor the load tests (the serving image
    installs none of their dependencies)."""
    probe = textwrap.dedent(
        """
        import json, sys
        from pronto_cli.main import build_parser
        build_parser(None)
        top = sorted({m.split(".")[0] for m in sys.modules})
        build_parser("serve")
        import server.supervisor
        serve = sorted({m.split(".")[0] for m in sys.modules})
        print(json.dumps([top, serve]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    top, serve = json.loads(out)
    components = {"server", "trainer", "gateway", "loadtest", "sklearn", "pandas"}
    assert components & set(top) == set()
    assert {"trainer", "gateway", "loadtest", "sklearn", "pandas", "onnx"} & set(serve) == set()


# -- and the checks catch a broken rule -------------------------------------------


def test_boundary_check_catches_violations(tmp_path: Path) -> None:
    """The boundary check on a synthetic tree that breaks each kind of rule."""
    files = {
        "server/worker.py": "def f():\n    from trainer.train import train\n",
        "server/cli.py": "from pronto_cli import flags\n",
        "trainer/train.py": "import server.model\nfrom pronto_cli.flags import x\n",
        "trainer/cli.py": "from pronto_cli import flags\nfrom pronto_cli import flags, up\n",
        "pronto_contract/manifest.py": "import numpy as np\n",
        "gateway/render.py": "from server.settings import usable_cpus\n",
        "server/ok.py": "from pronto_contract import Manifest\nfrom . import errors\n",
        "pronto/_grpc.py": "from server.generated.inference import grpc_service_pb2\n"
        "from server.errors import ModelNotFound\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert boundary_violations(tmp_path) == [
        "gateway/render.py:1 imports server.settings",
        "pronto/_grpc.py:2 imports server.errors",
        "pronto_contract/manifest.py:1 imports numpy",
        "server/cli.py:1 imports pronto_cli",
        "server/worker.py:2 imports trainer.train",
        "trainer/cli.py:2 imports pronto_cli",
        "trainer/train.py:1 imports server.model",
    ]


def test_layout_check_catches_a_hand_written_layout(tmp_path: Path) -> None:
    """The layout check on a synthetic tree that finds versions the old way."""
    files = {
        "server/rollout_state.py": "def on_disk(folder):\n"
        "    return [int(p.name) for p in folder.iterdir()\n"
        "            if p.name.isdigit() and (p / 'model.onnx').is_file()]\n",
        "loadtest/path_cost.py": 'MANIFEST = root / "m" / "1/model.json"\n',
        "server/model.py": '"""Load ``model.onnx``."""\nMSG = f"model.json: bad {x}"\n',
        "pronto_contract/repository.py": 'MODEL_FILE = "model.onnx"\n',
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert layout_violations(tmp_path) == [
        "loadtest/path_cost.py:1 names '1/model.json'",
        "server/rollout_state.py:3 names 'model.onnx'",
        "server/rollout_state.py:3 tests a folder name for a version",
    ]


def test_fork_rule_check_catches_a_heavy_import() -> None:
    """The fork-rule check on a module that does import numpy (the batcher, which the
    supervisor once pulled in through the metrics module)."""
    assert "numpy" in heavy_modules_after("import server.batching\n")
    assert "onnxruntime" in heavy_modules_after("import server.model\n")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_never_shows_an_undefined_default(command: str) -> None:
    """Fields with a default factory (e.g. ``--model-version-policies``) show a real
    default, not pydantic's ``PydanticUndefined`` sentinel; every command of
    :data:`pronto_cli.main.COMMANDS`, and the subcommands of those that have some."""
    proc = subprocess.run(
        [sys.executable, "-m", "pronto_cli", command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.startswith(f"usage: pronto {command}")
    assert "PydanticUndefined" not in proc.stdout
    nested = _subparsers(_subparsers(build_parser(command))[command])
    for name, parser in nested.items():
        assert "PydanticUndefined" not in parser.format_help(), f"{command} {name}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def test_lazy_help_matches_each_command() -> None:
    """``pronto --help`` lists commands from a table without importing them; each
    command's own registration must say the same thing."""
    for name, command in COMMANDS.items():
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        helps = {c.dest: c.help for c in sub._choices_actions}
        assert helps[name] == command.help, name


def error_mapping_problems(classes: list[type]) -> list[str]:
    """Error classes that would not reach the caller with the status they mean."""
    from server.status import STATUS

    problems = []
    for cls in classes:
        if "code" in vars(cls):
            problems.append(f"{cls.__module__}.{cls.__name__} sets a gRPC code; set a kind")
        if cls.kind not in STATUS:  # type: ignore[attr-defined]
            problems.append(f"{cls.__module__}.{cls.__name__}: kind {cls.kind} has no status")  # type: ignore[attr-defined]
    return problems


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def test_every_server_error_maps_through_its_kind() -> None:
    """Protects the one error mapping: an error class that carries a gRPC code of its own
    is ignored by the edge (it maps kinds), so its callers would see INTERNAL."""
    import importlib
    import pkgutil

    import server
    from server.errors import ProntoError

    for info in pkgutil.walk_packages(server.__path__, "server."):
        if ".generated" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    classes = _all_subclasses(ProntoError)
    assert len(classes) >= 5
    assert error_mapping_problems(classes) == []


def test_error_mapping_check_catches_a_transport_code() -> None:
    """The check on an error class written the old way, with a gRPC status code."""
    import grpc

    from server.errors import ProntoError

    class Legacy(ProntoError):
        code = grpc.StatusCode.NOT_FOUND

    assert error_mapping_problems([Legacy]) == [f"{__name__}.Legacy sets a gRPC code; set a kind"]
