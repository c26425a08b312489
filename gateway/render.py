"""Render the Envoy configuration from :class:`GatewaySettings`.

Rendering is a pure function of the settings, the packaged template and the
descriptor set: the same inputs give byte-identical output, which is what lets
the Helm chart render in an init container and a test pin the result.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway.schema import lua_schema
from gateway.settings import GatewaySettings
from pronto_contract.fields import usable_cpus
from pronto_contract.wire import (  # one name on both sides of the hop
    PUBLIC_HEALTH_HEADER,
    QUEUED_AT_HEADER,
)

__all__ = [
    "DESCRIPTOR_FILENAME",
    "PACKAGED_DESCRIPTOR_SET",
    "TEMPLATE",
    "ApiKey",
    "build_context",
    "envoy_threads",
    "read_api_keys",
    "render",
    "transcoded_services",
    "worker_count",
    "write_config",
]

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE = PACKAGE_DIR / "envoy.yaml.j2"
DESCRIPTOR_FILENAME = "pronto.pb"
PACKAGED_DESCRIPTOR_SET = PACKAGE_DIR / "generated" / DESCRIPTOR_FILENAME

# Liveness and readiness must answer without credentials or rate limiting: kubelet and
# load balancers carry neither. Exact paths, as the client sent them (authentication runs
# before the transcoder): the REST forms and the gRPC methods behind them. Health/Watch is
# not public: a held stream is a held upstream request.
PUBLIC_REST_PATHS = ("/v2/health/live", "/v2/health/ready")
PUBLIC_GRPC_PATHS = (
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
    "/grpc.health.v1.Health/Check",
)
PUBLIC_PATHS = tuple(("path", p) for p in (*PUBLIC_REST_PATHS, *PUBLIC_GRPC_PATHS))
# Caller identity, set by the auth filters from the verified credential; whatever a client
# sends under these names is removed before any filter runs.
IDENTITY_HEADER = "x-pronto-client"
# Set by the admission filter on an inference request past its thread's share of the
# in-flight limit, with the fault filter's hold and refusal headers.
SHED_HEADER = "x-pronto-shed"
FAULT_HEADERS = ("x-envoy-fault-delay-request", "x-envoy-fault-abort-request")
STRIPPED_HEADERS = (
    IDENTITY_HEADER,
    PUBLIC_HEALTH_HEADER,
    SHED_HEADER,
    *FAULT_HEADERS,
    "x-envoy-fault-abort-grpc-request",
    "x-envoy-fault-throughput-response",
)
# gRPC message encodings Envoy forwards: a compressed message is refused before it
# reaches a worker (whose message cap would apply to the compressed size only).
ACCEPTED_GRPC_ENCODING = "identity"
INFER_PATHS = (
    ("path", "/inference.GRPCInferenceService/ModelInfer"),
    ("path", "/pronto.v1.PredictionService/Predict"),
    ("path", "/pronto.v1.PredictionService/PredictJson"),
    ("path", "/pronto.v1.PredictionService/ModelInferJson"),
)
# Native gRPC only (no REST mapping), forwarded so grpcurl and friends work through Envoy.
PASSTHROUGH_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)

# Envoy's own error replies to plain HTTP requests: HTTP status -> gRPC code, message.
LOCAL_REPLIES = (
    (400, 3, "%LOCAL_REPLY_BODY%"),
    (401, 16, "%LOCAL_REPLY_BODY%"),
    (403, 7, "%LOCAL_REPLY_BODY%"),
    (404, 5, "no route for %REQ(:METHOD)% %REQ(:PATH)%"),
    (413, 8, "%LOCAL_REPLY_BODY%"),
    (415, 12, "%LOCAL_REPLY_BODY%"),
    (429, 8, "%LOCAL_REPLY_BODY%"),
    (503, 14, "%LOCAL_REPLY_BODY%"),
    (504, 4, "%LOCAL_REPLY_BODY%"),
)
# For gRPC (and transcoded) requests Envoy derives grpc-status from the HTTP code, and maps
# all of these to UNAVAILABLE; the transcoder would then answer 503.
GRPC_LOCAL_REPLIES = ((413, 8), (415, 12), (429, 8), (504, 4))

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ApiKey:
    client: str
    key: str


def read_api_keys(path: str | Path) -> list[ApiKey]:
    """Parse ``client:key`` lines; blank lines and ``#`` comments are skipped."""
    keys: list[ApiKey] = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        client, sep, key = line.partition(":")
        if not sep or not client.strip() or not key.strip():
            raise ValueError(f"{path}:{number}: expected 'client:key'")
        keys.append(ApiKey(client.strip(), key.strip()))
    if not keys:
        raise ValueError(f"{path}: no API keys")
    return keys


def transcoded_services(descriptor_set: bytes) -> list[str]:
    """Services of the descriptor set that carry ``google.api.http`` rules."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    services = []
    for file in fds.file:
        for service in file.service:
            if any(m.options.HasExtension(annotations_pb2.http) for m in service.method):
                services.append(f"{file.package}.{service.name}")
    return sorted(services)


def worker_count(settings: GatewaySettings) -> int:
    if settings.workers:
        return settings.workers
    return usable_cpus()  # the same default as `pronto serve`


def envoy_threads(settings: GatewaySettings) -> int:
    """Envoy's worker thread count: ``--concurrency`` as the launcher passes it (Envoy's own
    default counts host threads, not the CPUs this process may use)."""
    return settings.envoy_concurrency or usable_cpus()


def _seconds(value: float) -> str:
    return f"{value:g}"


def retries_within(settings: GatewaySettings, timeout: float) -> int:
    """``settings.retries``, or fewer: as many as fit, at their longest jittered backoff,
    in half of a route's ``timeout``. The other half is left to the tries themselves, so
    a route whose workers are all gone answers 503 (UNAVAILABLE) rather than timing out."""
    waited, count = 0.0, 0
    while count < settings.retries:
        step = min(settings.retry_backoff_max, settings.retry_backoff_base * (2 ** (count + 1) - 1))
        if waited + step > timeout / 2:
            break
        waited, count = waited + step, count + 1
    return count


def _routes(settings: GatewaySettings, services: list[str]) -> list[dict[str, Any]]:
    """Routes on gRPC method paths; REST requests reach them after transcoding.

    Public health requests go to their own cluster (same workers, own circuit breaker),
    so a flood of them cannot take the capacity that predictions need."""
    meta, infer = settings.metadata_timeout, settings.infer_timeout
    entries = [("path", value, meta, True) for value in PUBLIC_GRPC_PATHS]
    entries += [("path", "/grpc.health.v1.Health/Watch", meta, False)]
    entries += [(kind, value, infer, False) for kind, value in INFER_PATHS]
    entries += [
        ("prefix", f"/{service}/", meta, False) for service in [*services, *PASSTHROUGH_SERVICES]
    ]
    return [
        {
            "name": value.strip("/").replace("/", "-"),
            "match_kind": kind,
            "match_value": value,
            "timeout": _seconds(timeout),
            "retries": retries_within(settings, timeout),
            "infer": (kind, value) in INFER_PATHS,
            "cluster": "workers_health" if public else "workers",
            "public": public,
        }
        for kind, value, timeout, public in entries
    ]


#: gRPC message and JSON ``message`` of Envoy's load-shedding refusals
SHED_MESSAGE = "gateway overloaded: too many inference requests in flight; retry later"


#: bucket bounds (ms) of Envoy's request-time histograms: 10 ms steps through the range of
#: the shed hold and the latency targets, then Envoy's own coarse bounds out to its timeouts
LATENCY_BUCKETS_MS = (
    0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 125, 150, 200, 250, 500,
    1000, 2500, 5000, 10000, 30000, 60000,
)  # fmt: skip


#: how long the admission filter counts a request it let through, answered or not: a
#: stream the caller resets never reports its end, so this bounds what a reset costs
ADMISSION_FORGET_MS = 1000


def _admission(settings: GatewaySettings, cap: int) -> dict[str, Any] | None:
    """The held refusals (see docs/reliability.md): each Envoy thread admits its share of
    the in-flight limit, and holds what it refuses for ``shed_hold_ms`` first; None where
    there is no limit or no hold (then the circuit breaker refuses at once)."""
    hold = round(settings.shed_hold_ms)
    if not cap or not hold:
        return None
    threads = envoy_threads(settings)
    return {
        "limit": max(1, math.ceil(cap / threads)),
        "hold_ms": hold,
        "forget_ms": ADMISSION_FORGET_MS,
        "paths": [value for _, value in INFER_PATHS],
        "shed_header": SHED_HEADER,
        "delay_header": FAULT_HEADERS[0],
        "abort_header": FAULT_HEADERS[1],
    }


def _resilience(settings: GatewaySettings, workers: int) -> dict[str, Any]:
    """Retries, circuit breakers and outlier detection (see docs/reliability.md)."""
    cap = settings.max_requests_per_worker * workers
    if settings.retry_backoff_max < settings.retry_backoff_base:
        raise ValueError("retry_backoff_max must be at least retry_backoff_base")
    return {
        "admission": _admission(settings, cap),
        "queued_at_header": QUEUED_AT_HEADER,
        "backoff_base": _seconds(settings.retry_backoff_base),
        "backoff_max": _seconds(settings.retry_backoff_max),
        "per_try_timeout": _seconds(settings.per_try_timeout) if settings.per_try_timeout else "",
        "max_requests": cap,
        # HTTP/2 to the workers: requests wait as pending only while a connection opens
        "max_pending": cap or 4096,
        "retry_budget_percent": f"{settings.retry_budget_percent:g}",
        # a worker's death must be retried in full even when every request was on it
        "min_retry_concurrency": cap or 1024,
        "retry_after": "1",
        "shed_message": SHED_MESSAGE,
        "unhealthy_interval": _seconds(min(settings.health_check_interval, 0.25)),
        "ejection_time": _seconds(settings.outlier_ejection_time),
        "max_ejection_time": _seconds(10 * settings.outlier_ejection_time),
    }


def _check(settings: GatewaySettings, workers: int, keys: list[Any]) -> None:
    """Combinations of settings that no configuration can honour."""
    if settings.require_auth and not (settings.jwt_jwks_file or keys):
        raise ValueError("require_auth is set but neither a JWKS file nor API keys are given")
    if settings.upstream_tls and bool(settings.upstream_tls_cert_file) != bool(
        settings.upstream_tls_key_file
    ):
        raise ValueError("mutual TLS needs both upstream_tls_cert_file and upstream_tls_key_file")
    if settings.worker_base_port + workers - 1 > 65535:
        raise ValueError("worker ports run past 65535")


def _listener_context(settings: GatewaySettings) -> dict[str, Any]:
    """What the downstream side looks like: ports, limits, local replies, logging."""
    return {
        "admin_port": settings.admin_port,
        "stats_port": settings.stats_port,
        "listen_address": settings.listen_address,
        "listen_port": settings.listen_port,
        "buffer_limit_bytes": settings.max_request_bytes,
        "max_connections": settings.max_connections,
        "access_log": settings.access_log,
        "local_replies": [
            {"op": "EQ", "http": h, "grpc": g, "message": m} for h, g, m in LOCAL_REPLIES
        ]
        + [{"op": "GE", "http": 400, "grpc": 2, "message": "%LOCAL_REPLY_BODY%"}],
        "grpc_local_replies": [{"http": h, "grpc": g} for h, g in GRPC_LOCAL_REPLIES],
        "public_health_header": PUBLIC_HEALTH_HEADER,
        "identity_header": IDENTITY_HEADER,
        "stripped_headers": STRIPPED_HEADERS,
        "accepted_grpc_encoding": ACCEPTED_GRPC_ENCODING,
        "request_headers_timeout": _seconds(settings.request_headers_timeout),
        "stream_idle_timeout": _seconds(settings.stream_idle_timeout),
        "max_request_bytes": settings.max_request_bytes,
        "max_response_bytes": MAX_RESPONSE_BYTES,
    }


def _auth_context(settings: GatewaySettings, keys: list[Any]) -> dict[str, Any]:
    """Authentication (JWT, API keys) and the per-pod rate limit; None where off."""
    jwt = {
        "issuer": settings.jwt_issuer,
        "audiences": settings.jwt_audiences,
        "jwks_file": settings.jwt_jwks_file,
    }
    rate = {
        "rps": settings.rate_limit_rps,
        "burst": settings.rate_limit_burst or settings.rate_limit_rps,
    }
    return {
        "jwt": jwt if settings.jwt_jwks_file else None,
        "api_keys": {"credentials": keys, "header": settings.api_key_header} if keys else None,
        "rate_limit": rate if settings.rate_limit_rps else None,
    }


def _upstream_context(settings: GatewaySettings, workers: int) -> dict[str, Any]:
    """The workers: their private ports, TLS to them, and how they are health-checked."""
    tls = {
        "ca_file": settings.upstream_tls_ca_file,
        "cert_file": settings.upstream_tls_cert_file,
        "key_file": settings.upstream_tls_key_file,
        "server_name": settings.upstream_tls_server_name,
    }
    interval = settings.health_check_interval
    return {
        "worker_ports": [settings.worker_base_port + i for i in range(workers)],
        "upstream_host": settings.upstream_host,
        "upstream_tls": tls if settings.upstream_tls else None,
        "health_check_service": settings.health_check_service,
        "health_check_interval": _seconds(interval),
        "health_check_timeout": _seconds(max(interval, 1.0)),
        "health_max_requests": settings.health_max_requests,
    }


def build_context(settings: GatewaySettings, descriptor_path: str) -> dict[str, Any]:
    """Template context; ``descriptor_path`` is where Envoy will read the descriptor set."""
    source = Path(settings.descriptor_set or PACKAGED_DESCRIPTOR_SET).read_bytes()
    services = transcoded_services(source)
    guard = _environment().get_template("json_guard.lua.j2")
    admission = _environment().get_template("admission.lua.j2")
    keys = read_api_keys(settings.api_keys_file) if settings.api_keys_file else []
    workers = worker_count(settings)
    _check(settings, workers, keys)
    resilience = _resilience(settings, workers)
    return {
        **_listener_context(settings),
        **_auth_context(settings, keys),
        **_upstream_context(settings, workers),
        "routes": _routes(settings, services),
        "public_paths": PUBLIC_PATHS,
        "resilience": resilience,
        "admission_lua": admission.render(admission=resilience["admission"])
        if resilience["admission"]
        else "",
        "descriptor_set": descriptor_path,
        "services": services,
        "json_guard": guard.render(schema=lua_schema(source, services)),
        "otlp": _host_port(settings.otlp_endpoint) if settings.otlp_endpoint else None,
        "trace_sampling_per_million": round(settings.trace_sampling * 1_000_000),
        "latency_buckets_ms": list(LATENCY_BUCKETS_MS),
    }


def _host_port(endpoint: str) -> dict[str, object]:
    host, sep, port = endpoint.removeprefix("http://").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"otlp_endpoint must be host:port, got {endpoint!r}")
    return {"host": host, "port": int(port)}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PACKAGE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(settings: GatewaySettings, descriptor_path: str | None = None) -> str:
    """The Envoy configuration as YAML text."""
    if descriptor_path is None:
        descriptor_path = str(Path(settings.descriptor_set or PACKAGED_DESCRIPTOR_SET).resolve())
    context = build_context(settings, descriptor_path)
    return _environment().get_template(TEMPLATE.name).render(context)


def write_config(settings: GatewaySettings, path: str | Path) -> Path:
    """Write the configuration to ``path``; without an explicit descriptor set, copy the
    packaged one next to it so the pair can be handed to any Envoy (e.g. a sidecar)."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    if settings.descriptor_set:
        descriptor = settings.descriptor_set
    else:
        copy = target.parent / DESCRIPTOR_FILENAME
        shutil.copyfile(PACKAGED_DESCRIPTOR_SET, copy)
        descriptor = str(copy)
    text = render(settings, descriptor)
    # API keys end up inline: keep the file private to its owner.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return target
