"""Load-test payloads for a model with a packed numeric input."""

from __future__ import annotations

from loadtest.payloads import build_payloads
from pronto_contract import Manifest


def test_payloads_for_a_packed_model() -> None:
    manifest = Manifest.parse(
        {
            "schema_version": 2,
            "name": "wide",
            "signature": {
                "inputs": [
                    {"name": "kind", "datatype": "BYTES", "shape": [-1, 1], "column": "Kind"},
                    {
                        "name": "numeric_features",
                        "datatype": "FP32",
                        "shape": [-1, 2],
                        "columns": ["b", "a"],
                    },
                ],
                "features": [{"name": "a", "column": "A"}, {"name": "b", "column": "B"}],
            },
        }
    )
    rows = [{"Kind": "x", "A": 1, "B": 2.5}, {"Kind": "y", "A": 3, "B": 4.0}]
    payloads = build_payloads(manifest, rows, 2, 1)
    (oip,) = payloads["oip"]
    packed = oip["inputs"][1]
    assert packed["shape"] == [2, 2]
    assert packed["contents"]["fp32_contents"] == [2.5, 1.0, 4.0, 3.0]  # rows, column order
    assert oip["inputs"][0]["shape"] == [2, 1]
    assert payloads["rest_predict"][0]["instances"] == [
        {"kind": "x", "a": 1, "b": 2.5},
        {"kind": "y", "a": 3, "b": 4},
    ]
    (data,) = payloads["rest_oip_data"]  # the protocol's REST form: values in "data"
    assert data["inputs"][0] == {"name": "kind", "datatype": "BYTES", "shape": [2, 1],
                                 "data": ["x", "y"]}  # fmt: skip
    assert data["inputs"][1]["data"] == [2.5, 1.0, 4.0, 3.0]
    assert "model_name" not in data
