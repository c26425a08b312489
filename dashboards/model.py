"""The ``pronto-model`` dashboard: input and prediction drift against the reference statistics in each model version's manifest."""

# PromQL and descriptions are kept on one line each, as Grafana shows them.
# ruff: noqa: E501

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import (
    Row,
    barchart_panel,
    bargauge_panel,
    build_dashboard,
    heatmap_panel,
    query,
    query_variable,
    timeseries_panel,
)

__all__ = ["build"]

VARIABLES = [
    query_variable("model", "Model", "label_values(pronto_drift_bucket_total, model)"),
    query_variable(
        "version", "Version", 'label_values(pronto_drift_bucket_total{model=~"$model"}, version)'
    ),
    query_variable(
        "feature",
        "Feature",
        'label_values(pronto_drift_bucket_total{model=~"$model"}, feature)',
        multi=False,
    ),
]

ROWS = [
    Row(
        "Population stability index (1h window)",
        timeseries_panel(
            "PSI per input feature",
            [
                query(
                    'pronto:drift_psi:1h{model=~"$model", version=~"$version", feature!="__score__"}',
                    "{{feature}} v{{version}}",
                )
            ],
            description="< 0.1 stable, 0.1-0.2 moderate, > 0.2 significant (alert after 30 min with at least 1000 rows).",
            thresholds=[("green", None), ("orange", 0.1), ("red", 0.2)],
            w=16,
            h=8,
        ),
        bargauge_panel(
            "PSI now",
            [
                query(
                    'pronto:drift_psi:1h{model=~"$model", version=~"$version"}',
                    "{{feature}}",
                    instant=True,
                )
            ],
            thresholds=[("green", None), ("orange", 0.1), ("red", 0.2)],
        ),
    ),
    Row(
        "Values the model never saw",
        timeseries_panel(
            "Unseen categories per second",
            [
                query(
                    'sum by (feature) (rate(pronto_drift_unseen_categories_total{model=~"$model", version=~"$version"}[$__rate_interval]))',
                    "{{feature}}",
                )
            ],
            unit="short",
            w=6,
            h=8,
        ),
        timeseries_panel(
            "Out-of-range values per second",
            [
                query(
                    'sum by (feature) (rate(pronto_drift_out_of_range_total{model=~"$model", version=~"$version"}[$__rate_interval]))',
                    "{{feature}}",
                )
            ],
            unit="short",
            w=6,
            h=8,
        ),
        timeseries_panel(
            "Unseen / out-of-range share (1h)",
            [
                query(
                    'pronto:drift_unseen_categories:ratio1h{model=~"$model", version=~"$version"}',
                    "unseen {{feature}}",
                ),
                query(
                    'pronto:drift_out_of_range:ratio1h{model=~"$model", version=~"$version"}',
                    "out of range {{feature}}",
                ),
            ],
            unit="percentunit",
            thresholds=[("green", None), ("red", 0.01)],
            w=12,
            h=8,
        ),
    ),
    Row(
        "Predictions",
        heatmap_panel(
            "Score distribution over time",
            [
                query(
                    'sum by (le) (increase(pronto_prediction_score_bucket{model=~"$model", version=~"$version"}[$__rate_interval]))',
                    "{{le}}",
                    fmt="heatmap",
                )
            ],
        ),
        barchart_panel(
            "Score histogram: last hour vs test split",
            [
                query(
                    'sum by (bucket) (pronto:drift_bucket:ratio1h{model=~"$model", version=~"$version", feature="__score__"})',
                    "live",
                    instant=True,
                    fmt="table",
                ),
                query(
                    'sum by (bucket) (pronto:drift_reference:ratio{model=~"$model", version=~"$version", feature="__score__"})',
                    "reference",
                    instant=True,
                    fmt="table",
                ),
            ],
            unit="percentunit",
        ),
        timeseries_panel(
            "Positive rate",
            [
                query(
                    'sum by (model, version) (rate(pronto_predicted_positive_total{model=~"$model", version=~"$version"}[$__rate_interval])) / sum by (model, version) (rate(pronto_predictions_total{model=~"$model", version=~"$version"}[$__rate_interval]))',
                    "live v{{version}}",
                ),
                query(
                    'pronto:predicted_positive:ratio_rate1h{model=~"$model", version=~"$version"}',
                    "live 1h v{{version}}",
                ),
                query(
                    'pronto:reference_positive:ratio{model=~"$model", version=~"$version"}',
                    "test split v{{version}}",
                ),
            ],
            unit="percentunit",
        ),
    ),
    Row(
        "One feature: $feature",
        barchart_panel(
            "Buckets of $feature: last hour vs training",
            [
                query(
                    'sum by (bucket) (pronto:drift_bucket:ratio1h{model=~"$model", version=~"$version", feature=~"$feature"})',
                    "live",
                    instant=True,
                    fmt="table",
                ),
                query(
                    'sum by (bucket) (pronto:drift_reference:ratio{model=~"$model", version=~"$version", feature=~"$feature"})',
                    "reference",
                    instant=True,
                    fmt="table",
                ),
            ],
            unit="percentunit",
            w=16,
            h=8,
        ),
        timeseries_panel(
            "Rows scored per second",
            [
                query(
                    'sum by (version) (rate(pronto_predictions_total{model=~"$model", version=~"$version"}[$__rate_interval]))',
                    "v{{version}}",
                )
            ],
            unit="short",
        ),
    ),
]


def build() -> Dashboard:
    return build_dashboard(
        "pronto-model",
        "Pronto / Model drift",
        "Input and prediction drift against the reference statistics in each model version's manifest.",
        ROWS,
        VARIABLES,
    )
