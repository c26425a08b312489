"""Benchmarks that need the monitoring side: drift-monitoring overhead, and latency
percentiles over time rendered from Prometheus data."""
