"""`python -m loadtest.gateway_cost`: Envoy's CPU per REST request with and without the
unknown-field guard."""

from __future__ import annotations

import json

import yaml

from gateway.render import render
from gateway.settings import GatewaySettings
from loadtest.gateway_cost import FORMS, GUARD, VARIANTS, _bodies, table, without


def _http_filters(config: dict) -> list[list[str]]:
    return [
        [f["name"] for f in net["typed_config"]["http_filters"]]
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for net in chain["filters"]
        if "http_filters" in net.get("typed_config", {})
    ]


def test_only_the_guard_is_taken_out_of_the_rendered_configuration() -> None:
    config = yaml.safe_load(render(GatewaySettings(workers=2), "/tmp/pronto.pb"))
    before = _http_filters(config)
    assert any(GUARD in chain for chain in before)
    after = _http_filters(without(config, VARIANTS["without the guard"]))
    assert after == [[name for name in chain if name != GUARD] for chain in before]
    assert all(chain[-1] == "envoy.filters.http.router" for chain in after)


def test_the_table_gives_each_round_and_the_median() -> None:
    runs = [[1500.4, 510.0, 700.0], [1400.0, 530.0, 640.0], [1450, 520, 690.0]]
    lines = table({"REST OIP": {"as rendered": runs}}).splitlines()
    assert lines[2] == "| REST OIP | as rendered | 1500, 1400, 1450 | 510, 530, 520 | 520 | 690 |"


def test_every_form_has_load_data_for_one_and_256_rows() -> None:
    for path, bodies in FORMS.values():
        single, batch = _bodies(bodies, 1), _bodies(bodies, 256)
        assert single.name == bodies and batch.name == bodies.replace(".jsonl", "_b256.jsonl")
        first = json.loads(batch.read_text().splitlines()[0])
        if "instances" in first:
            assert len(first["instances"]) == 256, path
        else:
            assert all(t["shape"][0] == 256 for t in first["inputs"]), path
        assert single.stat().st_size > 0
