"""`pronto predict`: Send a prediction request to a running server.

Instances come as JSON on the command line or stdin: one object, a list of objects,
``{"instances": [...]}``, or the columnar form ``{"inputs": {"feature": [values], ...}}``
(one list per feature, sent as Predict's ``inputs``). The reply is printed as JSON. The
call goes through the ``pronto`` client package (gRPC, or REST through Envoy with
``--rest``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronto_cli.flags import add_settings_arguments, settings_from_args

__all__ = ["CHANNEL_OPTIONS", "RETRY_SERVICE_CONFIG", "PredictSettings", "predict", "register"]

#: gRPC service config for clients that call the workers' shared port directly: a call
#: that meets a worker as it dies (UNAVAILABLE) is retried, and waits for a connection to
#: a live worker instead of failing while the channel reconnects. So is a call a stopping
#: worker's gRPC core had received but not yet started when it stopped: the core resets
#: such a stream, which the client sees as CANCELLED (a call the client cancels itself is
#: never retried). Every call to the server is idempotent. Published in
#: docs/reliability.md for clients in other languages.
RETRY_SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [
                {"service": "inference.GRPCInferenceService"},
                {"service": "pronto.v1.PredictionService"},
            ],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
            },
        }
    ],
    # retries stop while more than half the recent calls failed: no retry storm
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}

#: channel arguments that apply it (reconnect sooner than gRPC's default 1 s backoff too)
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class PredictSettings(BaseSettings):
    """Settings of ``pronto predict``."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    address: str = Field(
        "127.0.0.1:50051",
        description="Server address host:port; with --rest Envoy's host:port or http(s) URL.",
    )
    model: str = Field("flight-delay", description="Model name.")
    model_version: str = Field("", description="Model version; empty = the server's default.")
    timeout: float = Field(10.0, gt=0, description="Deadline of the call in seconds.")
    rest: bool = Field(False, description="Call Envoy's REST route instead of gRPC.")
    tls: bool = Field(False, description="Use TLS, verified against the system's CA roots.")
    ca_file: str = Field("", description="Use TLS, verified against this CA file (PEM).")
    api_key: str = Field("", description="API key, sent in the x-api-key header.")
    jwt: str = Field("", description="JWT, sent as 'authorization: Bearer'.")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="Send a prediction request to a running server.",
        description="Send a prediction request to a running server. Instances are JSON: "
        'an object, a list of objects, {"instances": [...]} or the columnar form '
        '{"inputs": {"feature": [values], ...}}, from INSTANCES or stdin.',
    )
    add_settings_arguments(parser, PredictSettings)
    parser.add_argument("instances", nargs="?", help="JSON instances (default: read stdin)")
    parser.set_defaults(handler=_run)


def _parse_instances(text: str) -> list[dict[str, Any]] | dict[str, list[Any]]:
    data = json.loads(text)
    if isinstance(data, dict) and "inputs" in data:
        if len(data) != 1:
            raise ValueError('"inputs" cannot be combined with other fields')
        columns = data["inputs"]
        if not isinstance(columns, dict) or not columns:
            raise ValueError('"inputs" must map each feature to a list of values')
        if not all(isinstance(v, list) for v in columns.values()):
            raise ValueError('"inputs" must map each feature to a list of values')
        if len({len(v) for v in columns.values()}) != 1:
            raise ValueError('every feature of "inputs" needs the same number of values')
        return columns
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise ValueError("instances must be an object or a list of objects")
    return data


def predict(
    settings: PredictSettings, instances: list[dict[str, Any]] | dict[str, list[Any]]
) -> dict[str, Any]:
    """One Predict call; returns ``{"model_name", "model_version", "predictions"[, "id"]}``."""
    import pronto

    options: dict[str, Any] = {"timeout": settings.timeout, "ca_file": settings.ca_file or None}
    options |= {"api_key": settings.api_key or None, "jwt": settings.jwt or None}
    client: pronto.Client | pronto.RestClient
    if settings.rest:
        address = settings.address
        if "://" not in address:
            address = f"{'https' if settings.tls or settings.ca_file else 'http'}://{address}"
        client = pronto.RestClient(address, **options)
    else:
        # the published service config: UNAVAILABLE from a dying worker is retried by the
        # channel itself, which waits for a live worker instead of failing
        client = pronto.Client(
            settings.address, tls=settings.tls, options=CHANNEL_OPTIONS, **options
        )
    with client:
        result = client.predict(settings.model, instances, version=settings.model_version)
    reply: dict[str, Any] = {"model_name": result.model_name}
    reply |= {"model_version": result.model_version, "predictions": []}
    for p in result.predictions:
        reply["predictions"].append({"label": p.label, "probabilities": p.probabilities})
    if result.id:
        reply["id"] = result.id
    return reply


def _run(args: argparse.Namespace) -> int:
    import pronto

    settings = settings_from_args(PredictSettings, args)
    try:
        instances = _parse_instances(args.instances or sys.stdin.read())
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        print(f"pronto predict: bad instances: {exc}", file=sys.stderr)
        return 2
    try:
        reply = predict(settings, instances)
    except pronto.InferenceError as exc:
        print(f"pronto predict: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0
