"""`python -m loadtest.revisions`: two revisions served side by side, each from its own
checkout, measured in the same rounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.profile import EVENT_LOOP, top_frames
from loadtest.revisions import (
    checkout,
    measure,
    profile,
    profile_table,
    rss_table,
    served,
    table,
)
from tests.gateway.modelgen import MODEL, build_repository
from tests.loadtest.test_trace_cost import REQUEST


@pytest.mark.integration
def test_a_committed_revision_and_the_working_tree_are_measured_side_by_side(
    tmp_path: Path,
) -> None:
    with checkout("HEAD") as (commit, tree):
        assert (tree / "server").is_dir() and tree != Path.cwd()
        checked_out = tree
    assert not checked_out.exists()  # the temporary worktree is removed
    with served(["HEAD", "."], build_repository(tmp_path / "models"), MODEL) as servers:
        found = measure(servers, 0.3, 2, REQUEST)
    names = list(found["rps"])
    assert names[0] == commit and names[1].startswith(f"working tree at {commit}")  # or -dirty
    assert len(names) == 2
    for name, values in found["rps"].items():
        assert len(values) == 2 and all(v > 0 for v in values), name
        assert all(c > 0 for c in found["cpu_us_per_request"][name]), name
        # a served worker holds at least its interpreter and ONNX Runtime
        assert len(found["worker_rss_mib"][name]) == 2, name
        assert all(20 < m < 2000 for m in found["worker_rss_mib"][name]), name
    lines = table(found["rps"], found["cpu_us_per_request"]).splitlines()
    assert len(lines) == 4 and lines[2].startswith(f"| {commit} |") and "| 1.00 |" in lines[2]
    rss = rss_table(found["worker_rss_mib"]).splitlines()
    most = max(found["worker_rss_mib"][commit])
    assert (
        len(rss) == 4 and rss[2].startswith(f"| {commit} |") and rss[2].endswith(f"| {most:.0f} |")
    )


@pytest.mark.integration
def test_each_revision_s_worker_is_profiled_under_load(tmp_path: Path) -> None:
    """`--profile`: py-spy samples each revision's worker while h2load drives it, and the
    busiest frames of both land side by side in one table."""
    repository = build_repository(tmp_path / "models")
    with served(["HEAD", "."], repository, MODEL) as servers:
        frames = profile(servers, 1, {"single": REQUEST}, tmp_path / "out")
    assert list(frames) == ["single"]
    by_rev = frames["single"]
    assert len(by_rev) == 2
    for name, rows in by_rev.items():
        assert rows, name
        assert all(0 < own <= incl <= 100 for _, own, incl in rows), rows
        # gRPC's Cython layer runs under the event loop's dispatch in every worker, on
        # either loop, and shows as one row
        assert EVENT_LOOP in [frame for frame, _, _ in rows], rows
        assert not {"Handle._run", "Runner.run"} & {frame for frame, _, _ in rows}, rows
    assert len(list((tmp_path / "out").glob("worker-single-*.txt"))) == 2
    lines = profile_table(by_rev).splitlines()
    first, second = by_rev
    assert lines[0] == (
        f"| frame | {first}: own % | {first}: incl. % | {second}: own % | {second}: incl. % |"
    )
    assert any(line.startswith(f"| `{EVENT_LOOP}` |") for line in lines[2:])


def test_the_event_loop_and_onnx_runtime_frames_fold_into_one_row_each(tmp_path: Path) -> None:
    """py-spy's collapsed stacks from either event loop, and from ONNX Runtime's wrapper or
    the server's direct call, give the same rows, so that revisions compare."""
    collapsed = tmp_path / "stacks.txt"
    collapsed.write_text(
        "Runner.run (uvloop);ModelInfer (server/servicers.py:140);"
        "DirectSession.run (server/model.py:213) 30\n"
        "Handle._run (asyncio/events.py:80);ModelInfer (server/servicers.py:140);"
        "Session.run (onnxruntime_inference_collection.py:406) 10\n"
        "Runner.run (uvloop) 60\n"
    )
    rows, total = top_frames(collapsed)
    assert total == 100
    assert {frame: (own, incl) for frame, own, incl in rows} == {
        EVENT_LOOP: (60, 100),
        "Session.run": (40, 40),
    }
