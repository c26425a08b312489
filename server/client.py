"""`pronto predict`: Send a prediction request to a running server.

Instances come as JSON on the command line or stdin: one object, a list of objects, or
``{"instances": [...]}``. The reply is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.settings_cli import add_settings_arguments, settings_from_args

__all__ = ["CHANNEL_OPTIONS", "RETRY_SERVICE_CONFIG", "PredictSettings", "predict", "register"]

#: gRPC service config for clients that call the workers' shared port directly: a call
#: that meets a worker as it dies (UNAVAILABLE) is retried, and waits for a connection to
#: a live worker instead of failing while the channel reconnects. Every call to the server
#: is idempotent. Published in docs/reliability.md for clients in other languages.
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
                "retryableStatusCodes": ["UNAVAILABLE"],
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

    address: str = Field("127.0.0.1:50051", description="Server address host:port.")
    model: str = Field("flight-delay", description="Model name.")
    model_version: str = Field("", description="Model version; empty = the server's default.")
    timeout: float = Field(10.0, gt=0, description="Deadline of the call in seconds.")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="Send a prediction request to a running server.",
        description="Send a prediction request to a running server. Instances are JSON: "
        'an object, a list of objects or {"instances": [...]}, from INSTANCES or stdin.',
    )
    add_settings_arguments(parser, PredictSettings)
    parser.add_argument("instances", nargs="?", help="JSON instances (default: read stdin)")
    parser.set_defaults(handler=_run)


def _parse_instances(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise ValueError("instances must be an object or a list of objects")
    return data


def predict(
    address: str,
    model: str,
    instances: list[dict[str, Any]],
    version: str = "",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """One Predict call; returns ``{"model_name", "model_version", "predictions"}``."""
    import grpc
    from google.protobuf import json_format

    from server.generated.pronto.v1 import prediction_pb2, prediction_pb2_grpc

    request = prediction_pb2.PredictRequest(name=model, version=version)
    for inst in instances:
        request.instances.add().update(inst)
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(request, timeout=timeout)
    return json_format.MessageToDict(reply, preserving_proto_field_name=True)


def _run(args: argparse.Namespace) -> int:
    import grpc

    settings = settings_from_args(PredictSettings, args)
    try:
        instances = _parse_instances(args.instances or sys.stdin.read())
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        print(f"pronto predict: bad instances: {exc}", file=sys.stderr)
        return 2
    try:
        reply = predict(
            settings.address, settings.model, instances, settings.model_version, settings.timeout
        )
    except grpc.RpcError as exc:
        print(f"pronto predict: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0
