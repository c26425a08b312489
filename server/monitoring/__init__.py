"""Monitoring that ships with the server: drift metric families, the local Prometheus
stack behind ``make monitor``, and helpers to read Prometheus' HTTP API."""
