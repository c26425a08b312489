"""REST Predict in columnar form (``{"inputs": {feature: [values]}}``) through Envoy: the
same answers as ``instances``, and bad columns as HTTP 400 with a JSON status."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.harness import Gateway, request
from tests.gateway.modelgen import MODEL, instance
from tests.gateway.test_errors import assert_status

pytestmark = pytest.mark.integration

PREDICT = f"/v1/models/{MODEL}:predict"


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def test_columnar_body_gives_the_instances_answer(gateway: Gateway) -> None:
    rows = [instance(i) for i in range(50)]
    by_rows = request(gateway, "POST", PREDICT, {"instances": rows})
    by_columns = request(gateway, "POST", PREDICT, {"inputs": _columns(rows), "id": "col-1"})
    assert by_rows.status == by_columns.status == 200, by_columns.body
    assert by_columns.body["id"] == "col-1"
    assert by_columns.body["predictions"] == by_rows.body["predictions"]
    assert len(by_columns.body["predictions"]) == 50


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"carrier": ["Copa Air", "Sky Airline"]}, "inputs: missing features: hour"),
        ({"carrier": ["Copa Air"], "hour": [1.0], "gate": ["A"]}, "unknown features: gate"),
        ({"carrier": ["Copa Air", "Sky Airline"], "hour": [1.0]}, "every feature needs one value"),
        ({"carrier": ["Copa Air"], "hour": ["late"]}, "feature 'hour' must be numeric"),
        ({"carrier": ["Copa Air"], "hour": [None]}, "feature 'hour' has a null"),
        ({"carrier": ["Copa Air"], "hour": 3}, "feature 'hour' must be a list"),
        ({"carrier": [None], "hour": [3]}, "feature 'carrier' must be a string or number"),
        ({}, "empty batch"),
    ],
    ids=["missing", "unknown", "unequal", "wrong-type", "null", "not-a-list", "null-category",
         "empty"],
)  # fmt: skip
def test_bad_columns_are_400_with_the_reason(
    gateway: Gateway, inputs: dict[str, Any], fragment: str
) -> None:
    assert_status(request(gateway, "POST", PREDICT, {"inputs": inputs}), 400, fragment)


def test_instances_and_inputs_together_are_400(gateway: Gateway) -> None:
    body = {"instances": [instance()], "inputs": _columns([instance()])}
    assert_status(request(gateway, "POST", PREDICT, body), 400, "either instances or inputs")
