"""The ``pronto-model`` dashboard: input and prediction drift against the reference statistics in each model version's manifest, and live model quality."""

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
            description="< 0.1 stable, 0.1-0.2 moderate, > 0.2 significant (alert after 30 min with at least 1000 rows observed).",
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
        "Rows behind the PSI",
        timeseries_panel(
            "Rows served and rows observed (1h)",
            [
                query(
                    'sum by (version) (pronto:drift_rows:increase1h{model=~"$model", version=~"$version", feature="__score__"})',
                    "served v{{version}}",
                ),
                query(
                    'sum by (version) (pronto:drift_sampled_rows:increase1h{model=~"$model", version=~"$version"})',
                    "inputs observed v{{version}}",
                ),
            ],
            description="Scores are counted for every row; inputs of large requests from a sample (--drift-sample-rows, --drift-sample-requests). The input PSI rests on the rows observed; its alert waits for 1000 of them.",
            unit="short",
            w=24,
            h=6,
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
    Row(
        "Model quality (labels and estimate)",
        timeseries_panel(
            "Quality from labels vs test split",
            [
                query(
                    'pronto:model_quality:pooled{source="labels", model=~"$model", version=~"$version"}',
                    "{{metric}} v{{version}}",
                ),
                query(
                    'pronto:model_quality_reference:max{metric=~"accuracy|precision|recall|f1|roc_auc", model=~"$model", version=~"$version"}',
                    "{{metric}} v{{version}} test",
                ),
            ],
            description="Realized metrics over the latest labeled predictions (pooled across pods) next to the same metrics on the training-time test split.",
            unit="percentunit",
            w=12,
            h=8,
        ),
        timeseries_panel(
            "Estimated quality (from scores)",
            [
                query(
                    'pronto:model_quality:pooled{source="estimated", model=~"$model", version=~"$version"}',
                    "{{metric}} v{{version}}",
                )
            ],
            description="Metrics expected from the predicted probabilities of recent traffic; valid for a calibrated model (calibration_ece below 0.05). Moves before labels arrive.",
            unit="percentunit",
            w=12,
            h=8,
        ),
        timeseries_panel(
            "Drop below the test split",
            [
                query(
                    'pronto:model_quality_drop:labels{model=~"$model", version=~"$version"}',
                    "labels {{metric}} v{{version}}",
                ),
                query(
                    'pronto:model_quality_drop:estimated{model=~"$model", version=~"$version"}',
                    "estimated {{metric}} v{{version}}",
                ),
            ],
            description="Training-time value minus live value (positive = worse). Alerts at 0.05 on at least 200 labeled (1000 estimated) rows.",
            thresholds=[("green", None), ("red", 0.05)],
        ),
        timeseries_panel(
            "Rows behind the quality values",
            [
                query(
                    'pronto:model_quality_rows:sum{model=~"$model", version=~"$version"}',
                    "{{source}} v{{version}}",
                )
            ],
            description="Labeled rows (source=labels) and served rows (source=estimated) in the window.",
            unit="short",
        ),
        timeseries_panel(
            "Labels, rejected feedback and capture per second",
            [
                query(
                    'sum by (model) (rate(pronto_feedback_labels_total{model=~"$model"}[$__rate_interval]))',
                    "labels {{model}}",
                ),
                query(
                    "sum by (reason) (rate(pronto_feedback_rejected_total[$__rate_interval]))",
                    "rejected: {{reason}}",
                ),
                query("sum(rate(pronto_capture_records_total[$__rate_interval]))", "captured"),
                query("sum(rate(pronto_capture_dropped_total[$__rate_interval]))", "dropped"),
            ],
            description="Labels recorded, feedback requests refused by reason, payloads captured and records dropped on a full capture buffer.",
            unit="short",
        ),
    ),
]


def build() -> Dashboard:
    return build_dashboard(
        "pronto-model",
        "Pronto / Model drift",
        "Input and prediction drift against the reference statistics in each model version's manifest; live model quality from labels and from calibrated scores.",
        ROWS,
        VARIABLES,
    )
