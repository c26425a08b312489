"""The ``pronto-service`` dashboard: traffic, errors, latency and saturation of the Pronto server (all pods, all workers)."""

# PromQL and descriptions are kept on one line each, as Grafana shows them.
# ruff: noqa: E501

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import (
    Row,
    build_dashboard,
    query,
    query_variable,
    stat_panel,
    table_panel,
    timeseries_panel,
)

__all__ = ["build"]

VARIABLES = [
    query_variable("model", "Model", "label_values(pronto_requests_total, model)"),
]

ROWS = [
    Row(
        "Traffic and errors",
        timeseries_panel(
            "Requests per second by method",
            [
                query(
                    'sum by (method) (rate(pronto_requests_total{model=~"$model"}[$__rate_interval]))',
                    "{{method}}",
                )
            ],
            unit="reqps",
        ),
        timeseries_panel(
            "Failed requests per second by code",
            [
                query(
                    'sum by (code) (rate(pronto_requests_total{model=~"$model", code!="OK"}[$__rate_interval]))',
                    "{{code}}",
                )
            ],
            description="Every non-OK status. Only INTERNAL, UNAVAILABLE, UNKNOWN, DATA_LOSS and DEADLINE_EXCEEDED spend the availability budget.",
            unit="reqps",
        ),
        timeseries_panel(
            "Validation errors by reason",
            [
                query(
                    "sum by (reason) (rate(pronto_validation_errors_total[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            unit="reqps",
        ),
    ),
    Row(
        "SLOs (docs/slo.md)",
        stat_panel(
            "Availability (5m)",
            [query('min(pronto:availability:ratio_rate5m{model=~"$model"})')],
            description="Share of requests not failing on the server's side. Objective: 99.9 % over 30 days.",
            unit="percentunit",
            thresholds=[("red", None), ("green", 0.999)],
        ),
        stat_panel(
            "Requests within 25 ms (5m)",
            [query('1 - max(pronto:request_slow:ratio_rate5m{model=~"$model"})')],
            description="Objective: 99 % of requests within 25 ms at the server.",
            unit="percentunit",
            thresholds=[("red", None), ("green", 0.99)],
        ),
        timeseries_panel(
            "Error-budget burn rate (1h, 6h)",
            [
                query(
                    'pronto:request_errors:ratio_rate1h{model=~"$model"} / 0.001',
                    "availability 1h {{model}}",
                ),
                query(
                    'pronto:request_errors:ratio_rate6h{model=~"$model"} / 0.001',
                    "availability 6h {{model}}",
                ),
                query(
                    'pronto:request_slow:ratio_rate1h{model=~"$model"} / 0.01',
                    "latency 1h {{model}}",
                ),
                query(
                    'pronto:request_slow:ratio_rate6h{model=~"$model"} / 0.01',
                    "latency 6h {{model}}",
                ),
            ],
            description="1 = the budget lasts exactly 30 days. Pages at 14.4 (1h and 5m) and 6 (6h and 30m).",
            thresholds=[("green", None), ("orange", 6), ("red", 14.4)],
            w=12,
            h=5,
        ),
    ),
    Row(
        "Latency (server side)",
        timeseries_panel(
            "Latency p50 by method",
            [
                query(
                    'histogram_quantile(0.5, sum by (method, le) (rate(pronto_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval])))',
                    "{{method}}",
                )
            ],
            unit="s",
        ),
        timeseries_panel(
            "Latency p95 by method",
            [
                query(
                    'histogram_quantile(0.95, sum by (method, le) (rate(pronto_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval])))',
                    "{{method}}",
                )
            ],
            unit="s",
        ),
        timeseries_panel(
            "Latency p99 by method",
            [
                query(
                    'histogram_quantile(0.99, sum by (method, le) (rate(pronto_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval])))',
                    "{{method}}",
                )
            ],
            unit="s",
            thresholds=[("green", None), ("red", 0.025)],
        ),
    ),
    Row(
        "Saturation and workers",
        timeseries_panel(
            "Requests in flight",
            [
                query("sum by (pod) (pronto_requests_in_flight)", "in flight {{pod}}"),
                query("pronto:requests_in_flight:per_worker", "per worker {{pod}}"),
            ],
            w=6,
            h=8,
        ),
        timeseries_panel(
            "Workers ready and restarts",
            [
                query("sum by (pod) (pronto_workers_ready)", "ready {{pod}}"),
                query(
                    "sum by (pod) (increase(pronto_worker_restarts_total[$__rate_interval]))",
                    "restarts {{pod}}",
                ),
            ],
            w=6,
            h=8,
        ),
        timeseries_panel(
            "Rows per request (batch size)",
            [
                query(
                    'sum by (model) (rate(pronto_predictions_total{model=~"$model"}[$__rate_interval])) / sum by (model) (rate(pronto_requests_total{model=~"$model", method=~"Predict|ModelInfer", code="OK"}[$__rate_interval]))',
                    "{{model}}",
                )
            ],
            description="Rows scored per successful Predict/ModelInfer request: the batch size clients send.",
            w=6,
            h=8,
        ),
        timeseries_panel(
            "Rejected (RESOURCE_EXHAUSTED) share",
            [query("pronto:requests_rejected:ratio_rate5m", "{{pod}}")],
            unit="percentunit",
            w=6,
            h=8,
        ),
    ),
    Row(
        "Models and build",
        table_panel(
            "Model load time (slowest worker)",
            [
                query(
                    'max by (model, version) (pronto_model_load_seconds{model=~"$model"})',
                    instant=True,
                    fmt="table",
                )
            ],
            unit="s",
            w=8,
            h=6,
        ),
        timeseries_panel(
            "Model load failures",
            [
                query(
                    "sum by (model, version) (increase(pronto_model_load_failures_total[$__rate_interval]))",
                    "{{model}} v{{version}}",
                )
            ],
            w=8,
            h=6,
        ),
        table_panel(
            "Build",
            [
                query(
                    "max by (version) (pronto_build_info)",
                    instant=True,
                    fmt="table",
                )
            ],
            w=8,
            h=6,
        ),
    ),
]


def build() -> Dashboard:
    return build_dashboard(
        "pronto-service",
        "Pronto / Service",
        "Traffic, errors, latency and saturation of the Pronto server (all pods, all workers).",
        ROWS,
        VARIABLES,
    )
