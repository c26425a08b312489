"""``DirectSession``: ONNX Runtime's run without its wrapper's per-call checks gives the
same outputs, and still refuses feeds that do not fit the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from server.model import DirectSession, load_model


@pytest.fixture(scope="module")
def plain(model_repo: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(model_repo / "flights" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _feeds(session: ort.InferenceSession, rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        if arg.type == "tensor(string)":
            words = np.array(["a", "", "Grupo LATAM", "Sky Airline", "ñandú"], dtype=object)
            feeds[arg.name] = rng.choice(words, size=(rows, 1))
        else:
            feeds[arg.name] = rng.normal(size=(rows, 1)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("rows", [1, 2, 257])
def test_direct_run_gives_exactly_the_wrapper_s_outputs(
    plain: ort.InferenceSession, rows: int
) -> None:
    direct = DirectSession(plain)
    names = [o.name for o in plain.get_outputs()]
    for seed in range(3):
        feeds = _feeds(plain, rows, seed)
        for asked in (names, names[::-1], names[-1:]):
            got, expected = direct.run(asked, feeds), plain.run(asked, feeds)
            assert len(got) == len(asked)
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_array_equal(a, b)
        for every in (None, []):  # no names: every output, in the graph's order
            got = direct.run(every, feeds)
            for a, b in zip(got, plain.run(None, feeds), strict=True):
                np.testing.assert_array_equal(a, b)


def test_feeds_that_do_not_fit_the_graph_still_fail(plain: ort.InferenceSession) -> None:
    direct = DirectSession(plain)
    names = [o.name for o in plain.get_outputs()]
    feeds = _feeds(plain, 2, 0)
    numeric = next(a.name for a in plain.get_inputs() if a.type != "tensor(string)")
    missing = {k: v for k, v in feeds.items() if k != numeric}
    with pytest.raises(Exception, match=numeric):
        direct.run(names, missing)
    wrong_type = dict(feeds, **{numeric: feeds[numeric].astype(np.float64)})
    with pytest.raises(Exception, match=r"(?i)type"):
        direct.run(names, wrong_type)
    with pytest.raises(Exception, match=r"(?i)output"):
        direct.run(["no such output"], feeds)


def test_a_session_without_the_binding_keeps_its_own_run() -> None:
    calls: list[tuple[Any, ...]] = []

    class StandIn:
        def run(self, outputs: Any, feeds: Any, run_options: Any = None) -> list[Any]:
            calls.append((outputs, feeds, run_options))
            return ["ran"]

        def get_outputs(self) -> list[Any]:
            return []

    assert DirectSession(StandIn()).run(["y"], {"x": 1}) == ["ran"]  # type: ignore[arg-type]
    assert calls == [(["y"], {"x": 1}, None)]


def test_loaded_models_run_through_the_binding(model_repo: Path) -> None:
    for codes in (True, False):
        handle = load_model("flights", 1, model_repo / "flights" / "1", category_codes=codes)
        session = handle.session
        direct = session if isinstance(session, DirectSession) else session.session
        assert isinstance(direct, DirectSession)
        assert direct._run == direct.session._sess.run
