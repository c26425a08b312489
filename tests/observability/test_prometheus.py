"""Real traffic, a real Prometheus, the chart's rules and dashboards.

The module's server gets normal traffic (all outcomes, gRPC direct and through Envoy, REST),
then every recording rule and every dashboard query must return data through Prometheus'
HTTP API. The drift test then sends the generator's drifted traffic and reads the PSI the
recording rule computes.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from loadtest.monitor.dashboards import panel_queries
from loadtest.monitor.latency_plot import latency_series, render_latency_png
from loadtest.monitor.prometheus import RULES_DIR, PrometheusAPI
from pronto_contract import Manifest
from server.drift import ModelReference, psi
from tests.observability.conftest import MODEL, Stack, manifest
from tests.observability.traffic import (
    CATEGORICAL,
    NUMERIC,
    bad_requests,
    flight_rows,
    rest_feedback,
    rest_json,
    rest_predict,
    rest_requests,
    send_rows,
)
from tests.support import eventually, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NORMAL_ROWS, DRIFT_ROWS = 1000, 6000
SHIFTED = {"OPERA", "SIGLADES", "MES", "hour"}  # the generator's drift mode moves these
UNTOUCHED = {"DIANOM", "TIPOVUELO", "high_season", "period_of_day"}


def wait_for(api: PrometheusAPI, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        result = api.query(expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.fixture(scope="module")
def normal(stack: Stack) -> SimpleNamespace:
    """Normal traffic of every kind; returns the rows sent and when sending began."""
    started = time.time() - 1
    rows = flight_rows(NORMAL_ROWS, seed=11, drift=False)
    half = NORMAL_ROWS // 2
    send_rows(stack.envoy_grpc, rows.iloc[:half], MODEL)
    send_rows(stack.grpc, rows.iloc[half:], MODEL)
    bad_requests(stack.grpc, MODEL, rows)
    statuses = rest_requests(stack.envoy_http_port, MODEL, rows)
    assert statuses[0] == 200 and 400 <= statuses[1] < 500
    # labels for one REST prediction (and one refused feedback): the quality series
    pid, labels, _ = rest_predict(stack.envoy_http_port, MODEL, rows.iloc[:20])
    path = f"/v1/models/{MODEL}:feedback"
    rest_feedback(stack.envoy_http_port, MODEL, [{"id": pid, "labels": labels}])
    assert (
        rest_json(stack.envoy_http_port, path, {"feedback": [{"id": "x", "labels": ["1"]}]})[0]
        == 404
    )
    # the REST rows were scored too: count them with the rest
    sent = pd.concat([rows, rows.iloc[:2], rows.iloc[:20]], ignore_index=True)
    api = stack.prometheus
    expected = len(sent)
    mes = f'sum(pronto_drift_bucket_total{{model="{MODEL}",feature="MES"}})'
    assert wait_for(api, f"{mes} >= {expected}", timeout=60), "the rows sent were not scraped"
    deadline = time.monotonic() + 60

    # rates need a few samples after the last request: four more scrapes of every server
    # target, then a rule evaluation of every group after them
    def scrapes() -> float:
        got = api.values('min(count_over_time(up{job="pronto"}[10m]))')
        return next(iter(got.values()), 0.0)

    target = scrapes() + 4
    while scrapes() < target:
        assert time.monotonic() < deadline, "Prometheus stopped scraping the server"
        time.sleep(0.25)
    scraped = time.time()
    while not all(_evaluated_at(g) > scraped for g in api.rule_groups()):
        assert time.monotonic() < deadline, "the rule groups stopped evaluating"
        time.sleep(0.25)
    return SimpleNamespace(rows=sent, started=started)


def _evaluated_at(group: dict[str, Any]) -> float:
    """A rule group's last evaluation (RFC 3339 with up to nanoseconds) in epoch seconds."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", group["lastEvaluation"]).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(stamp).timestamp()


def record_names() -> list[str]:
    return [
        rule["record"]
        for path in sorted(RULES_DIR.glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


def test_prometheus_scrapes_server_and_envoy(stack: Stack, normal: SimpleNamespace) -> None:
    # on a loaded machine a one-second scrape can time out now and then: poll
    deadline = time.monotonic() + 20
    while not stack.prometheus.targets_up() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stack.prometheus.targets_up()
    jobs = stack.prometheus.values("count by (job) (up)")
    assert set(jobs) == {"job=pronto", "job=envoy"}


def test_every_recording_rule_returns_data(stack: Stack, normal: SimpleNamespace) -> None:
    empty = [name for name in record_names() if not wait_for(stack.prometheus, name, 10)]
    assert not empty, f"recording rules without data: {empty}"
    # and every rule evaluates without error
    for group in stack.prometheus.rule_groups():
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule


def test_every_dashboard_panel_query_returns_data(stack: Stack, normal: SimpleNamespace) -> None:
    api, now = stack.prometheus, time.time()
    empty = []
    # the rollout dashboard needs a rollout in progress: tests/server/test_rollouts.py
    queries = [q for q in panel_queries() if q.dashboard != "pronto-rollouts"]
    assert len(queries) > 30
    for q in queries:
        if q.instant:
            result = wait_for(api, q.expr, timeout=10)
        else:
            result = api.query_range(q.expr, normal.started, now, step=1.0)
        if not result:
            empty.append(f"{q.dashboard} / {q.panel} / {q.ref}: {q.expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_server_metrics_cover_the_outcomes(stack: Stack, normal: SimpleNamespace) -> None:
    api = stack.prometheus

    def outcomes() -> None:
        # instant queries: polled, since one timed-out scrape leaves every series stale
        codes = api.values("sum by (code) (pronto_requests_total)")
        assert {"code=OK", "code=INVALID_ARGUMENT", "code=NOT_FOUND"} <= set(codes)
        methods = api.values(f'sum by (method) (pronto_requests_total{{model="{MODEL}"}})')
        assert {"method=Predict", "method=ModelInfer"} <= set(methods)
        assert api.values("sum(pronto_workers_ready)") == {"": 2.0}
        assert api.values('sum(pronto_model_load_failures_total{model="broken"})') == {"": 2.0}
        reasons = api.values("sum by (reason) (pronto_validation_errors_total)")
        assert len(reasons) >= 2
        assert api.query('pronto_build_info{version!=""}')

    eventually(outcomes)


def expected_psi(frames: list[pd.DataFrame], man: dict[str, Any]) -> dict[str, float]:
    """The PSI the server should report, computed here from the rows the test sent."""
    handle = SimpleNamespace(
        name=MODEL, version_str="1", classes=None, manifest=Manifest.parse(man)
    )
    ref = ModelReference.from_handle(handle)  # type: ignore[arg-type]
    rows = pd.concat(frames, ignore_index=True)
    feeds = {c: np.asarray(rows[c].tolist(), dtype=object) for c in CATEGORICAL}
    feeds |= {c: rows[c].to_numpy(dtype=np.float64) for c in NUMERIC}
    ref.add(feeds, None)
    return {name: psi(ref.counts[name].tolist(), fb.reference) for name, fb in ref.features.items()}


def _assert_equal(got: object, want: object) -> None:
    assert got == want


def prometheus_psi(api: PrometheusAPI) -> dict[str, float]:
    result = api.query(f'pronto:drift_psi:1h{{model="{MODEL}"}}')
    return {r["metric"]["feature"]: float(r["value"][1]) for r in result}


def test_drifted_traffic_crosses_the_psi_threshold(stack: Stack, normal: SimpleNamespace) -> None:
    api, man = stack.prometheus, manifest(stack.repo)

    def settled_before() -> dict[str, float]:
        before = prometheus_psi(api)
        assert set(before) >= SHIFTED | UNTOUCHED | {"__score__"}, before
        return before

    before = eventually(settled_before)
    assert max(before.values()) < 0.2, before

    drifted = flight_rows(DRIFT_ROWS, seed=12, drift=True)
    send_rows(stack.grpc, drifted, MODEL)
    total = len(normal.rows) + DRIFT_ROWS
    mes = f'sum(pronto_drift_bucket_total{{model="{MODEL}",feature="MES"}})'
    assert wait_for(api, f"{mes} >= {total}", timeout=60), "drifted rows not scraped"
    # batches of 50 rows are not sampled: every row counted is one observed
    sampled = f'sum(pronto_drift_sampled_rows_total{{model="{MODEL}"}})'
    assert wait_for(api, f"{sampled} == {mes} >= {total}", timeout=30), "observed rows"
    rows = f'pronto:drift_rows:increase1h{{model="{MODEL}",feature="MES"}}'
    # the PSI rule comes later in the same group: it has seen the same samples
    assert wait_for(api, f"{rows} >= {total - 0.5}", timeout=30), "rules lag behind"

    want = expected_psi([normal.rows, drifted], man)

    def settled_after() -> dict[str, float]:
        after = prometheus_psi(api)
        for feature in SHIFTED | UNTOUCHED:
            assert after.get(feature) == pytest.approx(want[feature], abs=0.01), feature
        return after

    after = eventually(settled_after)
    assert {f for f in SHIFTED if after[f] > 0.2} == SHIFTED, after
    assert {f for f in UNTOUCHED if after[f] < 0.2} == UNTOUCHED, after

    # out-of-range months and unseen operators, counted exactly
    lo, hi = next(i["range"] for i in man["signature"]["inputs"] if i["name"] == "MES")
    out_of_range = int(((drifted["MES"] < lo) | (drifted["MES"] > hi)).sum())
    assert out_of_range > 0
    out_of_range_expr = f'sum(pronto_drift_out_of_range_total{{model="{MODEL}",feature="MES"}})'
    eventually(lambda: _assert_equal(api.values(out_of_range_expr), {"": float(out_of_range)}))
    known = next(i["categories"] for i in man["signature"]["inputs"] if i["name"] == "OPERA")
    unseen = int((~drifted["OPERA"].isin(known)).sum())
    unseen_expr = f'sum(pronto_drift_unseen_categories_total{{model="{MODEL}",feature="OPERA"}})'
    assert unseen > 0
    eventually(lambda: _assert_equal(api.values(unseen_expr), {"": float(unseen)}))

    # the drift alert is on its way (pending for its 30 minutes) for the shifted inputs only
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerting = {
            a["labels"]["feature"]
            for a in api.alerts()
            if a["labels"]["alertname"] == "ProntoFeatureDrift"
        }
        if alerting >= SHIFTED:
            break
        time.sleep(0.5)
    assert alerting == SHIFTED


def test_latency_png_from_prometheus_data(
    stack: Stack, normal: SimpleNamespace, tmp_path: Path
) -> None:
    # The fixture's traffic made the histogram's series: the first scrape saw them with
    # their counts already up, so a rate over that traffic alone is 0 (NaN quantiles).
    # Traffic now, on series Prometheus already holds, gives rates above 0; poll until the
    # query shows them, since the scrape and the last step of the range are a second apart.
    send_rows(stack.grpc, flight_rows(200, seed=13, drift=False), MODEL, batch=10)
    deadline = time.monotonic() + 30
    while True:
        # a wide window: on a loaded machine some one-second scrapes time out
        series = latency_series(stack.prometheus, normal.started, time.time(), window="30s")
        measured = all(any(v == v for _, v in points) for points in series.values())
        if measured or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(series) == {"p50", "p95", "p99"}
    assert measured, series
    png = render_latency_png(
        stack.prometheus, normal.started, time.time(), tmp_path / "latency.png", "test"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_monitor_scrapes_the_stack_with_the_chart_rules(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    cmd = [
        sys.executable, "-m", "loadtest.monitor", "--server", stack.metrics,
        "--envoy", stack.envoy_stats, "--port", str(port), "--scrape-interval", "1s",
        "--data-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        api = PrometheusAPI(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if api.targets_up() and len(api.get("/api/v1/targets")["activeTargets"]) == 2:
                    break
            assert proc.poll() is None, "the monitor exited"
            assert time.monotonic() < deadline, "the monitor's targets never came up"
            time.sleep(0.5)
        # every group of the chart's rule files, loaded
        groups = {g["name"] for g in api.rule_groups()}
        chart_groups = {
            group["name"]
            for path in sorted(RULES_DIR.glob("*.yaml"))
            for group in yaml.safe_load(path.read_text())["groups"]
        }
        assert {"pronto-slo", "pronto-drift", "pronto-quality"} <= chart_groups
        assert groups == chart_groups
        # each target scraped successfully at least once (a single scrape may time out; a
        # target shows up before its scrape's samples are committed)
        up = "max by (job) (max_over_time(up[30s]))"
        eventually(lambda: _assert_equal(api.values(up), {"job=pronto": 1.0, "job=envoy": 1.0}))
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert f"http://127.0.0.1:{port}" in out.decode()
