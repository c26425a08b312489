"""The ``pronto-envoy`` dashboard: the Envoy front: downstream responses, per-request balancing over the workers, retries and health checks."""

# PromQL and descriptions are kept on one line each, as Grafana shows them.
# ruff: noqa: E501

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import (
    Row,
    build_dashboard,
    query,
    timeseries_panel,
)

__all__ = ["build"]

ROWS = [
    Row(
        "Downstream (clients)",
        timeseries_panel(
            "Downstream requests per second by class",
            [
                query(
                    'sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="api"}[$__rate_interval]))',
                    "{{envoy_response_code_class}}xx",
                )
            ],
            unit="reqps",
        ),
        timeseries_panel(
            "Downstream 4xx / 5xx per second",
            [
                query(
                    'sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="api", envoy_response_code_class=~"4|5"}[$__rate_interval]))',
                    "{{envoy_response_code_class}}xx",
                )
            ],
            description="REST errors and failures Envoy produced itself; gRPC errors travel as 200 with a grpc-status trailer.",
            unit="reqps",
        ),
        timeseries_panel(
            "Active downstream connections",
            [
                query(
                    'sum by (pod) (envoy_http_downstream_cx_active{envoy_http_conn_manager_prefix="api"})',
                    "{{pod}}",
                )
            ],
        ),
        timeseries_panel(
            "Downstream latency p50 / p99 (caller to Envoy and back)",
            [
                query(
                    'histogram_quantile(0.5, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="api"}[$__rate_interval])))',
                    "p50",
                ),
                query(
                    'histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="api"}[$__rate_interval])))',
                    "p99",
                ),
            ],
            description="Every request on the API listener, from its first byte in to the last byte of its answer out: transcoding, retries, and the hold of a shed request (shed_hold_ms) included. Buckets of 10 ms up to 100 ms.",
            unit="ms",
            w=24,
        ),
    ),
    Row(
        "Upstream (workers)",
        timeseries_panel(
            "Healthy workers",
            [
                query(
                    'sum by (pod) (envoy_cluster_membership_healthy{envoy_cluster_name="workers"})',
                    "healthy {{pod}}",
                ),
                query(
                    'sum by (pod) (envoy_cluster_membership_total{envoy_cluster_name="workers"})',
                    "total {{pod}}",
                ),
            ],
        ),
        timeseries_panel(
            "Upstream responses by class",
            [
                query(
                    'sum by (envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="workers"}[$__rate_interval]))',
                    "{{envoy_response_code_class}}xx",
                )
            ],
            unit="reqps",
        ),
        timeseries_panel(
            "Retries, timeouts and health-check failures",
            [
                query(
                    'sum(rate(envoy_cluster_upstream_rq_retry{envoy_cluster_name="workers"}[$__rate_interval]))',
                    "retries",
                ),
                query(
                    'sum(rate(envoy_cluster_upstream_rq_timeout{envoy_cluster_name="workers"}[$__rate_interval]))',
                    "timeouts",
                ),
                query(
                    'sum(rate(envoy_cluster_health_check_failure{envoy_cluster_name="workers"}[$__rate_interval]))',
                    "health-check failures",
                ),
            ],
            unit="reqps",
        ),
        timeseries_panel(
            "Upstream latency p50 / p99 (Envoy to worker)",
            [
                query(
                    'histogram_quantile(0.5, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="workers"}[$__rate_interval])))',
                    "p50",
                ),
                query(
                    'histogram_quantile(0.99, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="workers"}[$__rate_interval])))',
                    "p99",
                ),
            ],
            unit="ms",
            w=12,
            h=8,
        ),
        timeseries_panel(
            "Active upstream requests",
            [
                query(
                    'sum by (pod) (envoy_cluster_upstream_rq_active{envoy_cluster_name="workers"})',
                    "{{pod}}",
                )
            ],
            w=12,
            h=8,
        ),
    ),
]


def build() -> Dashboard:
    return build_dashboard(
        "pronto-envoy",
        "Pronto / Envoy",
        "The Envoy front: downstream responses, per-request balancing over the workers, retries and health checks.",
        ROWS,
    )
