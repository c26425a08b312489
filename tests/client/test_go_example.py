"""examples/go: stubs current with proto/, and the program agrees with the Python client."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pronto
from tests.client.conftest import API_KEY, TlsFront
from tests.client.test_grpc_client import frame
from tests.gateway.harness import Gateway, Server
from tests.gateway.modelgen import MODEL

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "go"


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if (
        cmp.left_only
        or cmp.right_only
        or filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], [])
    ):
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_go_stubs_are_current(tmp_path: Path) -> None:
    """examples/go/gen must be what examples/go/generate.sh makes from proto/ today."""
    out = tmp_path / "gen"
    done = subprocess.run(
        [str(EXAMPLE / "generate.sh"), str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert _same_tree(out, EXAMPLE / "gen"), "Go stubs are stale: run `make go-proto` and commit"


@pytest.fixture(scope="module")
def goclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("go") / "goclient"
    done = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
    )
    assert done.returncode == 0, done.stderr
    return binary


def _run(binary: Path, rows: list[dict[str, object]], *flags: str) -> dict[str, object]:
    done = subprocess.run(
        [str(binary), "-model", MODEL, *flags],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.integration
def test_go_example_matches_python_client(
    goclient: Path, server: Server, secured: Gateway, tls_front: TlsFront
) -> None:
    data = frame(9)
    rows = data.to_dict("records")
    with pronto.Client(f"127.0.0.1:{server.port}") as client:
        infer = client.infer(MODEL, data)
        predict = client.predict(MODEL, rows)
    for flags in (
        ["-address", f"127.0.0.1:{server.port}"],
        ["-address", secured.address, "-api-key", API_KEY],
    ):
        out = _run(goclient, rows, *flags)
        assert out["model"] == MODEL and out["versions"] == ["1"]
        assert [i["name"] for i in out["inputs"]] == ["carrier", "hour"]  # type: ignore[index]
        got = out["infer"]
        assert got["id"] == "go-example"  # type: ignore[index]
        assert got["label"] == [int(x) for x in infer.as_numpy("label")]  # type: ignore[index]
        np.testing.assert_allclose(
            np.array(got["probabilities"]).reshape(-1, 2),  # type: ignore[index]
            infer.as_numpy("probabilities"),
            rtol=1e-6,
        )
        assert [p["label"] for p in out["predict"]] == predict.labels  # type: ignore[union-attr]
        for mine, theirs in zip(out["predict"], predict.predictions, strict=True):  # type: ignore[arg-type]
            assert mine["probabilities"] == pytest.approx(theirs.probabilities, rel=1e-9)
