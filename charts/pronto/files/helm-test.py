"""`helm test` for a Pronto release: run inside the cluster by templates/tests/.

1. gRPC health through Envoy (grpc.health.v1, no credentials: health is public);
2. every model of the release ready through Envoy (REST ModelReady, authenticated);
3. one prediction through Envoy (REST, named features) with the release's authentication;
4. the same prediction without credentials must be refused with 401.
Exit status 0 only when every check passes; each check prints one line.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ADDRESS = os.environ["PRONTO_TEST_ADDRESS"]
MODEL = os.environ["PRONTO_TEST_MODEL"]
MODELS = json.loads(os.environ.get("PRONTO_TEST_MODELS") or json.dumps([MODEL]))
AUTH_MODE = os.environ["PRONTO_TEST_AUTH_MODE"]
INSTANCE = json.loads(os.environ["PRONTO_TEST_INSTANCE"])


def credentials() -> dict[str, str]:
    if AUTH_MODE == "api-key":
        with open(os.environ["PRONTO_TEST_API_KEYS_FILE"], encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        if not lines or ":" not in lines[0]:
            sys.exit("FAIL auth: the API key Secret holds no 'client:key' line")
        return {os.environ["PRONTO_TEST_API_KEY_HEADER"]: lines[0].split(":", 1)[1]}
    if AUTH_MODE == "jwt":
        with open(os.environ["PRONTO_TEST_JWT_FILE"], encoding="utf-8") as f:
            return {"authorization": "Bearer " + f.read().strip()}
    return {}


def model_ready(name: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{ADDRESS}/v2/models/{name}/ready", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def predict(headers: dict[str, str]) -> tuple[int, str]:
    body = json.dumps({"instances": [INSTANCE]}).encode()
    request = urllib.request.Request(
        f"http://{ADDRESS}/v1/models/{MODEL}:predict",
        data=body,
        headers={"content-type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def main() -> int:
    with grpc.insecure_channel(ADDRESS) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"FAIL grpc health through Envoy: {reply.status}")
        return 1
    print("ok   grpc health through Envoy: SERVING")

    for name in MODELS:
        status, text = model_ready(name, credentials())
        if status != 200 or json.loads(text).get("ready") is not True:
            print(f"FAIL model {name} ready through Envoy: HTTP {status} {text[:300]}")
            return 1
        print(f"ok   model {name} ready through Envoy")

    status, text = predict(credentials())
    predictions = json.loads(text).get("predictions") if status == 200 else None
    if not predictions or len(predictions) != 1:
        print(f"FAIL prediction through Envoy ({AUTH_MODE}): HTTP {status} {text[:300]}")
        return 1
    print(f"ok   prediction through Envoy ({AUTH_MODE}): {predictions[0]}")

    if AUTH_MODE == "none":
        print("skip unauthenticated call: gateway.auth.mode is none")
        return 0
    status, text = predict({})
    if status != 401:
        print(f"FAIL unauthenticated call: HTTP {status} (expected 401) {text[:300]}")
        return 1
    print("ok   unauthenticated call refused: HTTP 401")
    return 0


if __name__ == "__main__":
    sys.exit(main())
