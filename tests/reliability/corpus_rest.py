"""REST half of the bad-input corpus: raw HTTP bodies and headers, sent to Envoy."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from tests.reliability.payloads import (
    MES,
    MODEL,
    OPERA,
    REST_INFER,
    REST_PREDICT,
    Case,
    nested,
    rest_form_body,
    rest_infer_body,
    rest_predict_body,
    set_at,
)

__all__ = ["rest_cases"]


def rest_cases() -> list[Case]:
    def infer(id: str, edit: Callable[[dict[str, Any]], None], expect: int = 400) -> Case:
        return Case(f"rest-infer-{id}", "rest", f"POST {REST_INFER}", rest_infer_body(edit), expect)

    def infer_data(id: str, edit: Callable[[dict[str, Any]], None], expect: int = 400) -> Case:
        body = rest_form_body(edit)
        return Case(f"rest-infer-data-{id}", "rest", f"POST {REST_INFER}", body, expect)

    def predict(id: str, edit: Callable[[dict[str, Any]], None], expect: int = 400) -> Case:
        body = rest_predict_body(edit)
        return Case(f"rest-predict-{id}", "rest", f"POST {REST_PREDICT}", body, expect)

    def raw(id: str, body: bytes, expect: int, path: str = REST_PREDICT, **headers: str) -> Case:
        hdrs = {"auth": "key", **{k.replace("_", "-"): v for k, v in headers.items()}}
        return Case(f"rest-{id}", "rest", f"POST {path}", body, expect, hdrs)

    good = rest_predict_body(lambda b: None)
    good_infer = rest_infer_body(lambda b: None)
    fp32: list[Any] = ["inputs", MES, "contents", "fp32_contents"]
    bad_utf8_b64 = base64.b64encode(b"\xff\xfe").decode()

    def binary_mes(size: int) -> Callable[[dict[str, Any]], None]:
        def edit(body: dict[str, Any]) -> None:
            del body["inputs"][MES]["data"]
            body["inputs"][MES]["parameters"] = {"binary_data_size": size}

        return edit

    binary_head = rest_form_body(binary_mes(8))  # MES's 4 bytes of FP32 follow, not 8
    return [
        infer("unknown-datatype", set_at(["inputs", MES, "datatype"], "FP99")),
        infer("datatype-mismatch", set_at(["inputs", MES, "datatype"], "FP64")),
        infer("shape-mismatch", set_at(["inputs", MES, "shape"], [2, 1])),
        infer("negative-dim", set_at(["inputs", MES, "shape"], [-1, 1])),
        infer("huge-dims", set_at(["inputs", MES, "shape"], [2**40, 2**20])),
        infer("dim-beyond-int64", set_at(["inputs", MES, "shape"], [2**70, 1])),
        infer("string-in-fp32", set_at(fp32, ["x"])),
        infer("nan-string", set_at(fp32, ["NaN"])),
        infer("infinity-string", set_at(fp32, ["Infinity"])),
        infer("number-overflows-fp32", set_at(fp32, [1e300])),
        infer(
            "invalid-utf8-base64",
            set_at(["inputs", OPERA, "contents", "bytes_contents"], [bad_utf8_b64]),
        ),
        infer("not-base64", set_at(["inputs", OPERA, "contents", "bytes_contents"], ["@@@"])),
        infer("raw-wrong-length", set_at(["raw_input_contents"], ["AAA="] * 8)),
        infer("unknown-field", set_at(["tensors"], [])),
        infer("inputs-not-a-list", set_at(["inputs"], {"a": 1})),
        # the protocol's REST form (KServe, Triton and MLServer REST clients)
        infer_data("good", lambda b: None, 200),
        infer_data("string-in-fp32", set_at(["inputs", MES, "data"], ["x"])),
        infer_data("bool-in-fp32", set_at(["inputs", MES, "data"], [True])),
        infer_data("number-in-bytes", set_at(["inputs", OPERA, "data"], [7])),
        infer_data("count-mismatch", set_at(["inputs", MES, "shape"], [2, 1])),
        infer_data("ragged", set_at(["inputs", MES, "data"], [[1.0], 2.0])),
        infer_data("overflows-fp32", set_at(["inputs", MES, "data"], [1e300])),
        infer_data("unknown-input-field", set_at(["inputs", MES, "dtype"], "FP32")),
        infer_data("no-data", lambda b: b["inputs"][MES].pop("data")),
        infer_data("object-parameter", set_at(["parameters"], {"p": {"bool_param": True}})),
        infer_data("binary-size-without-header", binary_mes(4)),
        raw(
            "infer-binary-past-the-end",
            binary_head + b"\0" * 4,
            400,
            path=REST_INFER,
            inference_header_content_length=str(len(binary_head)),
        ),
        raw(
            "infer-header-length-not-a-number",
            rest_form_body(lambda b: None),
            400,
            path=REST_INFER,
            inference_header_content_length="ten",
        ),
        raw(
            "unknown-model-infer",
            good_infer,
            404,
            path="/v2/models/nope/infer",
        ),
        predict("unknown-feature", set_at(["instances", 0, "NOT_A_FEATURE"], 1)),
        predict("missing-feature", lambda b: b["instances"][0].pop("MES")),
        predict("null-feature", set_at(["instances", 0, "MES"], None)),
        predict("nested-feature", set_at(["instances", 0, "OPERA"], {"a": [1, {"b": 2}]})),
        predict("string-for-number", set_at(["instances", 0, "hour"], "noon")),
        Case(
            "rest-predict-empty-list-for-number",
            "rest",
            f"POST {REST_PREDICT}",
            rest_predict_body(set_at(["instances", 0, "high_season"], [])),
            400,
        ),
        Case(
            "rest-predict-bool-for-category",
            "rest",
            f"POST {REST_PREDICT}",
            rest_predict_body(set_at(["instances", 0, "OPERA"], True)),
            400,
        ),
        predict("no-instances", set_at(["instances"], [])),
        predict("instances-not-a-list", set_at(["instances"], "all")),
        predict("instance-not-an-object", set_at(["instances"], [1, 2])),
        predict("misspelt-field", lambda b: b.update(instance=b.pop("instances"))),
        raw("nan-literal", good.replace(b'"MES": 1', b'"MES": NaN'), 400),
        raw("infinity-literal", good.replace(b'"MES": 1', b'"MES": Infinity'), 400),
        raw("malformed-json", b'{"instances": [', 400),
        raw("empty-body", b"", 400),
        raw("json-array-body", b"[]", 400),
        raw("invalid-utf8-body", good.replace(b"Sky Airline", b"Sky \xff\xfe"), 400),
        raw("deeply-nested-json", b'{"instances": [{"OPERA": ' + nested(10_000) + b"}]}", 400),
        raw("10mb-json", b'{"instances": [' + b'{"MES": 1},' * 1_000_000 + b"{}]}", 413),
        # Accepted on purpose: the transcoder reads any body as JSON. A cross-site form can
        # send text/plain, but cannot set the API key or Authorization header it would need.
        raw("text-plain-content-type", good, 200, content_type="text/plain"),
        raw(
            "form-content-type",
            b"instances=1",
            400,
            content_type="application/x-www-form-urlencoded",
        ),
        raw("unknown-model-predict", good, 404, path="/v1/models/nope:predict"),
        raw(
            "unknown-version",
            good_infer,
            404,
            path=f"/v2/models/{MODEL}/versions/99/infer",
        ),
        Case("rest-no-credentials", "rest", f"POST {REST_PREDICT}", good, 401, {}),
        Case(
            "rest-wrong-api-key",
            "rest",
            f"POST {REST_PREDICT}",
            good,
            401,
            {"x-api-key": "k-wrong"},
        ),
        Case(
            "rest-malformed-jwt",
            "rest",
            f"POST {REST_PREDICT}",
            good,
            401,
            {"authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
        ),
        Case("rest-get-on-infer", "rest", f"GET {REST_INFER}", b"", 404),
        Case("rest-unknown-route", "rest", "POST /v3/anything", good, 404),
    ]
