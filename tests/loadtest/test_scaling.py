"""The scaling study: where each side runs, how hard h2load pushes, and a real run with
servers pinned to their cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest.scaling import ARMS, load_shape, measure, plan, table
from tests.gateway.modelgen import MODEL, build_repository
from tests.loadtest.test_trace_cost import REQUEST


def test_servers_take_the_first_cores_and_the_load_generator_the_rest() -> None:
    assert plan(list(range(16)), 4) == ({0, 1, 2, 3}, set(range(4, 16)))
    assert plan([3, 5, 7], 2) == ({3, 5}, {7})
    assert plan([3, 5, 7], 2, colocate=True) == ({3, 5}, {3, 5})
    assert plan([0, 1], 2, colocate=True) == ({0, 1}, {0, 1})


def test_a_worker_count_the_cores_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="3 workers need 4 cores"):
        plan([0, 1, 2], 3)
    with pytest.raises(ValueError, match="3 workers need 3 cores; there are 2"):
        plan([0, 1], 3, colocate=True)
    with pytest.raises(ValueError, match="at least 1"):
        plan([0, 1], 0)


@pytest.mark.parametrize(("workers", "cores"), [(1, 1), (2, 14), (4, 12), (8, 8), (12, 4), (3, 2)])
def test_h2load_spreads_whole_connections_over_at_most_one_thread_per_core(
    workers: int, cores: int
) -> None:
    shape = load_shape(workers, cores)
    assert 1 <= shape["threads"] <= min(cores, workers)
    assert shape["clients"] % shape["threads"] == 0  # h2load refuses anything else
    assert 4 * workers <= shape["clients"] < 4 * workers + shape["threads"]
    assert shape["streams"] >= 1


def test_the_table_gives_ratios_per_worker_and_efficiency_against_the_first_count() -> None:
    def result(workers: int, floor: float, pronto: float, b256: float) -> dict[str, object]:
        return {
            "load_cpus": list(range(workers, 16)),
            "rps": {"floor": [floor, floor], "pronto": [pronto, pronto], "pronto-256": [b256]},
            "cpu_us_per_request": {"floor": [100.0], "pronto": [250.0], "pronto-256": [900.0]},
        }

    text = table({"4": result(4, 40_000, 16_000, 3_000), "1": result(1, 10_000, 5_000, 1_000)})
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| 1 | 15 | 10,000 | 5,000 | 0.50 | 5,000 | 1.00 | 250 | 100 ")
    assert lines[2].endswith("| 256,000 | 256,000 |")
    assert lines[3].startswith("| 4 | 12 | 40,000 | 16,000 | 0.40 | 4,000 | 0.80 | ")
    assert lines[3].endswith("| 768,000 | 192,000 |")


def _b256(request: dict) -> dict:
    """The single-row request with 256 rows."""
    inputs = []
    for tensor in request["inputs"]:
        contents = {k: v * 256 for k, v in tensor["contents"].items()}
        inputs.append(tensor | {"shape": [256, 1], "contents": contents})
    return request | {"inputs": inputs}


@pytest.mark.integration
def test_a_run_pins_each_side_and_measures_every_arm(tmp_path: Path) -> None:
    core = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    requests = {"single": REQUEST, "b256": _b256(REQUEST)}
    found = measure(build_repository(tmp_path / "models"), MODEL, [1], 0.3, 1, requests, True)
    assert os.sched_getaffinity(0) == before  # the study gives the cores back
    run = found["1"]
    assert run["server_cpus"] == [core] and run["server_affinity"] == [core]
    assert set(run["rps"]) == set(ARMS)
    assert all(len(v) == 1 and v[0] > 0 for v in run["rps"].values())
    assert all(len(v) == 1 and v[0] > 0 for v in run["cpu_us_per_request"].values())
    assert table(found).count("\n") == 2
