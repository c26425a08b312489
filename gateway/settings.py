"""Settings of ``pronto gateway``: one pydantic-settings class, read from ``PRONTO_*``.

The renderer is a pure function of these settings, so a Helm chart can drive it
with environment variables alone (see ``docs/gateway.md``). Names shared with
``pronto serve`` (``workers``, ``worker_base_port``) read the same variables on
purpose: one value describes both sides of the connection.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronto_contract.fields import WorkerBasePort, Workers

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    """Configuration of the Envoy gateway in front of the worker processes."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    listen_address: str = Field(
        default="0.0.0.0", description="Address of the REST and gRPC listener."
    )
    listen_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the REST and gRPC listener."
    )
    admin_port: int = Field(
        default=9901,
        ge=1,
        le=65535,
        description="Port of Envoy's admin interface (bound to 127.0.0.1).",
    )
    stats_port: int = Field(
        default=9902,
        ge=0,
        le=65535,
        description="Port serving only /stats/prometheus from the admin interface, for "
        "scraping (0 disables it).",
    )
    workers: Workers = 0
    worker_base_port: WorkerBasePort = 50100
    upstream_host: str = Field(
        default="127.0.0.1", description="Host of the workers' private ports."
    )
    upstream_tls: bool = Field(default=False, description="Speak TLS to the workers.")
    upstream_tls_ca_file: str = Field(
        default="", description="CA bundle that signs the workers' certificates (TLS upstream)."
    )
    upstream_tls_cert_file: str = Field(
        default="", description="Client certificate Envoy presents to the workers (mutual TLS)."
    )
    upstream_tls_key_file: str = Field(
        default="", description="Private key of the client certificate (mutual TLS)."
    )
    upstream_tls_server_name: str = Field(
        default="", description="SNI and expected certificate name of the workers (TLS upstream)."
    )
    health_check_service: str = Field(
        default="",
        description="grpc.health.v1 service name checked on every worker ('' = overall).",
    )
    health_check_interval: float = Field(
        default=1.0, gt=0, description="Seconds between active health checks of each worker."
    )
    infer_timeout: float = Field(
        default=10.0, gt=0, description="Seconds an inference request may take, retries included."
    )
    metadata_timeout: float = Field(
        default=2.0, gt=0, description="Seconds a health, metadata or listing request may take."
    )
    retries: int = Field(
        default=10,
        ge=0,
        le=20,
        description="Retries on UNAVAILABLE, reset or connect failure (within the route timeout).",
    )
    retry_backoff_base: float = Field(
        default=0.05,
        gt=0,
        description="Seconds: first retry backoff (jittered, doubling up to retry_backoff_max).",
    )
    retry_backoff_max: float = Field(
        default=0.5, gt=0, description="Seconds: longest backoff between two retries."
    )
    per_try_timeout: float = Field(
        default=5.0,
        ge=0,
        description="Seconds one inference try may take before it is retried on another "
        "worker (0 = only the route timeout).",
    )
    max_requests_per_worker: int = Field(
        default=32,
        ge=0,
        description="Inference requests in flight per worker before Envoy refuses more "
        "(429 / RESOURCE_EXHAUSTED with retry-after; 0 = no limit).",
    )
    shed_hold_ms: float = Field(
        default=50.0,
        ge=0,
        le=10_000,
        description="Milliseconds a refused inference request is held before its refusal is "
        "sent (0 = refuse at once). Callers that retry the moment they are refused would "
        "otherwise turn the refusals into a busy loop that takes the workers' CPU.",
    )
    retry_budget_percent: float = Field(
        default=25.0,
        gt=0,
        le=100,
        description="Retries in flight allowed as a percentage of requests in flight "
        "(beyond a floor of the in-flight limit).",
    )
    outlier_ejection_time: float = Field(
        default=0.5,
        gt=0,
        description="Seconds a worker that failed 3 connections in a row is first ejected "
        "(grows with repeated ejections, up to 10x).",
    )
    max_request_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest REST request body, in bytes (413 above).",
    )
    request_headers_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's headers (slow clients are "
        "disconnected).",
    )
    stream_idle_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a request stream may carry no data in either direction.",
    )
    health_max_requests: int = Field(
        default=64,
        ge=1,
        description="Concurrent public health requests sent to the workers (a separate "
        "circuit breaker from predictions'); more are answered 503 by Envoy.",
    )
    max_connections: int = Field(
        default=10000, ge=1, description="Most client connections Envoy keeps open at once."
    )
    jwt_jwks_file: str = Field(
        default="",
        description="JWKS file with the keys that sign accepted JWTs (enables JWT auth).",
    )
    jwt_issuer: str = Field(
        default="", description="Required 'iss' claim of accepted JWTs ('' = any)."
    )
    jwt_audiences: list[str] = Field(
        default_factory=list,
        description="Accepted 'aud' claims of JWTs (empty = any); env value is a JSON list.",
    )
    api_keys_file: str = Field(
        default="",
        description="File of API keys, one 'client:key' per line (enables API-key auth).",
    )
    api_key_header: str = Field(
        default="x-api-key", description="Request header carrying the API key."
    )
    require_auth: bool = Field(
        default=False,
        description="Refuse to render a configuration without JWT or API-key authentication.",
    )
    rate_limit_rps: int = Field(
        default=0,
        ge=0,
        description="Requests per second admitted by the local rate limit (0 = off).",
    )
    rate_limit_burst: int = Field(
        default=0,
        ge=0,
        description="Token-bucket size of the rate limit (0 = same as rate_limit_rps).",
    )
    otlp_endpoint: str = Field(
        default="",
        description="host:port of an OTLP/gRPC collector: Envoy starts or continues a W3C "
        "trace (traceparent) per request and exports its spans there; empty = no tracing.",
    )
    trace_sampling: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of requests without a sampled traceparent for which Envoy starts a "
        "sampled trace (0-1; with otlp_endpoint). A caller's sampling decision is followed.",
    )
    envoy_concurrency: int = Field(
        default=0, ge=0, description="Envoy worker threads (0 = one per usable CPU)."
    )
    envoy_log_level: str = Field(default="warning", description="Envoy log level.")
    access_log: bool = Field(
        default=False, description="Write an access log line per request to stdout."
    )
    descriptor_set: str = Field(
        default="",
        description="Path at which Envoy reads the proto descriptor set ('' = the packaged one, "
        "copied next to a rendered file).",
    )

    @field_validator("worker_base_port")
    @classmethod
    def _needs_private_ports(cls, value: int) -> int:
        if value == 0:
            raise ValueError(
                "Envoy balances over the workers' private ports; worker_base_port 0 "
                "disables them (set PRONTO_WORKER_BASE_PORT to the server's value)"
            )
        return value
