"""The ``pronto-rollouts`` dashboard: a candidate model version next to the stable one."""

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
    query_variable(
        "model", "Model", "label_values(pronto_rollout_candidate_requests_total, model)"
    ),
]

ROWS = [
    Row(
        "Rollout state",
        timeseries_panel(
            "Canary weight",
            [query('max by (model) (pronto_rollout_weight{model=~"$model"})', "{{model}}")],
            description="Percent of unversioned requests the candidate answers (0 in shadow mode and with no rollout).",
            unit="percent",
        ),
        stat_panel(
            "Rollout mode",
            [
                query(
                    'max by (model, mode) (pronto_rollout_mode{model=~"$model"}) == 1',
                    "{{model}} {{mode}}",
                    instant=True,
                )
            ],
            description="1 for the model's current mode: off, shadow or canary.",
            w=8,
            h=8,
        ),
        table_panel(
            "Decisions of the automatic analysis",
            [
                query(
                    'sum by (model, decision, reason) (pronto_rollout_decisions_total{model=~"$model"})',
                    "{{model}} {{decision}} ({{reason}})",
                    instant=True,
                    fmt="table",
                )
            ],
            description="Steps, promotions and aborts since the server started, by reason.",
        ),
    ),
    Row(
        "Candidate against stable",
        timeseries_panel(
            "Candidate requests and errors per second",
            [
                query(
                    'sum by (model, version, mode) (rate(pronto_rollout_candidate_requests_total{model=~"$model"}[$__rate_interval]))',
                    "{{model}} v{{version}} {{mode}}",
                ),
                query(
                    'sum by (model, version, reason) (rate(pronto_rollout_candidate_errors_total{model=~"$model"}[$__rate_interval]))',
                    "errors {{model}} v{{version}}: {{reason}}",
                ),
            ],
            description="Requests the candidate answered (canary) or scored (shadow); errors by reason (a failed canary answer is retried on stable).",
            unit="reqps",
            w=12,
        ),
        timeseries_panel(
            "Label agreement with stable",
            [
                query(
                    'sum by (model, version) (rate(pronto_rollout_agreed_rows_total{model=~"$model"}[$__rate_interval])) / sum by (model, version) (rate(pronto_rollout_compared_rows_total{model=~"$model"}[$__rate_interval]))',
                    "{{model}} v{{version}}",
                )
            ],
            description="Share of shadow-scored rows where the candidate's label equals stable's.",
            unit="percentunit",
            w=12,
        ),
        timeseries_panel(
            "Score difference (candidate vs stable)",
            [
                query(
                    'histogram_quantile(0.5, sum by (le, model, version) (rate(pronto_rollout_score_difference_bucket{model=~"$model"}[$__rate_interval])))',
                    "p50 {{model}} v{{version}}",
                ),
                query(
                    'histogram_quantile(0.9, sum by (le, model, version) (rate(pronto_rollout_score_difference_bucket{model=~"$model"}[$__rate_interval])))',
                    "p90 {{model}} v{{version}}",
                ),
            ],
            description="Median and 90th percentile of the largest per-class probability difference per row.",
            unit="short",
            w=12,
        ),
        timeseries_panel(
            "Candidate latency p99 vs the served versions",
            [
                query(
                    'histogram_quantile(0.99, sum by (le, model, version, mode) (rate(pronto_rollout_candidate_latency_seconds_bucket{model=~"$model"}[$__rate_interval])))',
                    "candidate {{model}} v{{version}} {{mode}}",
                ),
                query(
                    'histogram_quantile(0.99, sum by (le, model, version) (rate(pronto_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval])))',
                    "served {{model}} v{{version}}",
                ),
            ],
            description="Candidate: whole request (canary) or model run (shadow); served: every request by version.",
            unit="s",
            w=12,
        ),
    ),
]


def build() -> Dashboard:
    return build_dashboard(
        "pronto-rollouts",
        "Pronto / Rollouts",
        "A candidate model version next to the stable one: canary weight, mode and decisions of the automatic analysis; candidate traffic, errors, latency, and its agreement with stable.",
        ROWS,
        VARIABLES,
    )
