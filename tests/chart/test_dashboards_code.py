"""The dashboards are code: the committed JSON is exactly what `dashboards/` builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dashboards import DASHBOARDS, OUT_DIR, render_all

ROOT = Path(__file__).resolve().parents[2]


def test_committed_json_is_generated() -> None:
    rendered = render_all()
    assert sorted(rendered) == sorted(f"{name}.json" for name in DASHBOARDS)
    assert sorted(p.name for p in OUT_DIR.glob("*.json")) == sorted(rendered)
    for name, text in rendered.items():
        assert (OUT_DIR / name).read_text() == text, f"{name} is stale: run `make dashboards`"


def test_check_mode_catches_a_hand_edit(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dashboards", "--out", str(tmp_path)]
    assert subprocess.run(cmd, cwd=ROOT).returncode == 0
    assert subprocess.run([*cmd, "--check"], cwd=ROOT).returncode == 0
    path = tmp_path / "pronto-service.json"
    doc = json.loads(path.read_text())
    doc["panels"][1]["targets"][0]["expr"] = "up"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    done = subprocess.run([*cmd, "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "pronto-service.json" in done.stderr


def test_layout_has_unique_ids_and_no_overlap() -> None:
    for text in render_all().values():
        doc = json.loads(text)
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids))
        cells = set()
        for panel in doc["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24
            area = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & area, panel["title"]
            cells |= area
