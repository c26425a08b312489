"""The renderer, the drift gates (descriptor set, reference renderings) and --validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway import reference, render
from gateway.launcher import validate
from gateway.schema import body_routes
from gateway.settings import GatewaySettings
from loadtest.tokens import Signer
from tests.gateway.harness import run_gateway
from tests.gateway.tls import SERVER_NAME, write_certificates

ROOT = Path(__file__).resolve().parents[2]
PROTOS = [
    "inference/grpc_service.proto",
    "pronto/v1/prediction.proto",
    "pronto/v1/feedback.proto",
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pronto_cli", "gateway", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_descriptor_set_matches_the_protos(tmp_path: Path) -> None:
    # Same protoc invocation as `make proto`; a proto edit without regeneration fails here.
    from grpc_tools import protoc

    out = tmp_path / "pronto.pb"
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", "-I", str(ROOT / "proto"), f"-I{include}", "--include_imports"]
    args += ["--include_source_info", f"--descriptor_set_out={out}", *PROTOS]
    assert protoc.main(args) == 0
    assert out.read_bytes() == render.PACKAGED_DESCRIPTOR_SET.read_bytes(), (
        "gateway/generated/pronto.pb is stale: run `make proto`"
    )


@pytest.mark.parametrize("name", sorted(reference.PROFILES))
def test_reference_rendering_matches_the_template(name: str) -> None:
    committed = (reference.REFERENCE_DIR / name).read_text()
    assert committed == reference.expected(name), (
        f"gateway/reference/{name} is stale: run `python -m gateway.reference` and review"
    )


def test_rendering_is_deterministic_and_valid_yaml() -> None:
    settings = GatewaySettings(workers=3, worker_base_port=51000)
    first, second = render.render(settings, "/d.pb"), render.render(settings, "/d.pb")
    assert first == second
    config = yaml.safe_load(first)
    cluster = config["static_resources"]["clusters"][0]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [51000, 51001, 51002]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def _routes(config: dict) -> list[dict]:
    listener = config["static_resources"]["listeners"][0]
    manager = next(
        f for f in listener["filter_chains"][0]["filters"] if "http_connection_manager" in f["name"]
    )
    return [
        r for vh in manager["typed_config"]["route_config"]["virtual_hosts"] for r in vh["routes"]
    ]


@pytest.mark.parametrize("retries", [2, 10, 20])
def test_retries_end_inside_half_of_every_route_timeout(retries: int) -> None:
    """A route whose workers are all gone must answer 503 (UNAVAILABLE): its retries, at
    their longest backoff, may fill only half of its timeout. Inference keeps the full
    count while it fits."""
    settings = GatewaySettings(workers=2, retries=retries)
    base, cap = settings.retry_backoff_base, settings.retry_backoff_max
    routed = [r for r in _routes(yaml.safe_load(render.render(settings, "/d.pb"))) if "route" in r]
    assert routed
    for route in routed:
        timeout = float(route["route"]["timeout"].rstrip("s"))
        count = route["route"]["retry_policy"]["num_retries"]
        longest = sum(min(cap, base * (2 ** (i + 1) - 1)) for i in range(count))
        assert longest <= timeout / 2, route["name"]
        more = longest + min(cap, base * (2 ** (count + 1) - 1))
        assert count == retries or more > timeout / 2, route["name"]


def _http_filters(config: dict) -> list[dict]:
    listener = config["static_resources"]["listeners"][0]
    manager = next(
        f for f in listener["filter_chains"][0]["filters"] if "http_connection_manager" in f["name"]
    )
    return manager["typed_config"]["http_filters"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("threads", "per_worker", "share"), [(1, 32, 64), (2, 32, 32), (4, 32, 16), (3, 1, 1)]
)
def test_each_envoy_thread_admits_its_share_and_holds_the_rest(
    threads: int, per_worker: int, share: int
) -> None:
    settings = GatewaySettings(
        workers=2, envoy_concurrency=threads, max_requests_per_worker=per_worker, shed_hold_ms=70
    )
    filters = _http_filters(yaml.safe_load(render.render(settings, "/d.pb")))
    names = [f["name"] for f in filters]
    # after the transcoder (gRPC method paths), then the hold, then the router
    assert names[-4:] == [
        "envoy.filters.http.grpc_json_transcoder",
        "pronto.admission",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    lua = filters[-3]["typed_config"]["default_source_code"]["inline_string"]
    assert f"local LIMIT = {share}\n" in lua and 'local HOLD_MS = "70"' in lua
    assert all(f'["{path}"] = true' in lua for _, path in render.INFER_PATHS)
    fault = filters[-2]["typed_config"]
    assert fault["headers"] == [{"name": render.SHED_HEADER, "present_match": True}]
    # a caller cannot mark its own request, nor ask for a fault
    for header in (render.SHED_HEADER, *render.FAULT_HEADERS):
        assert header in render.STRIPPED_HEADERS


@pytest.mark.parametrize("off", [{"shed_hold_ms": 0}, {"max_requests_per_worker": 0}])
def test_without_a_hold_or_a_limit_there_is_no_admission_filter(off: dict[str, int]) -> None:
    settings = GatewaySettings.model_validate({"workers": 2, **off})
    names = [f["name"] for f in _http_filters(yaml.safe_load(render.render(settings, "/d.pb")))]
    assert "pronto.admission" not in names and "envoy.filters.http.fault" not in names


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRONTO_LISTEN_PORT", "8181")
    monkeypatch.setenv("PRONTO_WORKERS", "1")
    monkeypatch.setenv("PRONTO_JWT_AUDIENCES", '["a", "b"]')
    settings = GatewaySettings()
    assert (settings.listen_port, settings.workers, settings.jwt_audiences) == (8181, 1, ["a", "b"])
    listener = yaml.safe_load(render.render(settings, "/d.pb"))["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 8181


def test_transcoded_services_and_body_routes_come_from_the_descriptor() -> None:
    data = render.PACKAGED_DESCRIPTOR_SET.read_bytes()
    services = render.transcoded_services(data)
    assert services == [
        "inference.GRPCInferenceService",
        "pronto.v1.FeedbackService",
        "pronto.v1.PredictionService",
    ]
    patterns = {(r.verb, r.pattern, r.message) for r in body_routes(data, services)}
    assert ("POST", "^/v1/models/[^/]+%:feedback$", "pronto.v1.FeedbackRequest") in patterns
    # REST Predict's and REST infer's bodies are google.api.HttpBody: the server reads
    # them, the guard must not
    assert ("POST", "^/v1/models/[^/]+%:predict$", "") in patterns
    assert ("POST", "^/v2/models/[^/]+/infer$", "") in patterns
    assert ("POST", "^/v2/models/[^/]+/versions/[^/]+/infer$", "") in patterns
    assert len(patterns) == 4


def test_api_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\n\nalice: k1\nbob:k2\n")
    assert render.read_api_keys(path) == [render.ApiKey("alice", "k1"), render.ApiKey("bob", "k2")]
    path.write_text("just-a-key\n")
    with pytest.raises(ValueError, match="client:key"):
        render.read_api_keys(path)


def test_require_auth_refuses_an_open_gateway() -> None:
    with pytest.raises(ValueError, match="require_auth"):
        render.render(GatewaySettings(workers=1, require_auth=True))


def test_render_writes_config_and_descriptor_privately(tmp_path: Path) -> None:
    result = _cli("--workers", "2", "--render", str(tmp_path / "envoy.yaml"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pronto.pb").read_bytes() == render.PACKAGED_DESCRIPTOR_SET.read_bytes()
    assert f'proto_descriptor: "{tmp_path / "pronto.pb"}"' in (tmp_path / "envoy.yaml").read_text()
    assert (tmp_path / "envoy.yaml").stat().st_mode & 0o077 == 0


def test_validate_accepts_every_feature_switched_on(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("a:k\n")
    Signer().write_jwks(tmp_path / "jwks.json")
    certs = write_certificates(tmp_path / "certs")
    settings = GatewaySettings(
        workers=2,
        jwt_jwks_file=str(tmp_path / "jwks.json"),
        api_keys_file=str(tmp_path / "keys"),
        rate_limit_rps=5,
        access_log=True,
        upstream_tls=True,
        upstream_tls_ca_file=str(certs["ca"]),
        upstream_tls_server_name=SERVER_NAME,
        upstream_tls_cert_file=str(certs["cert"]),
        upstream_tls_key_file=str(certs["key"]),
    )
    config = render.write_config(settings, tmp_path / "envoy.yaml")
    result = validate(config, settings)
    assert result.ok, result.output


def test_validate_catches_a_broken_config(tmp_path: Path) -> None:
    good = tmp_path / "envoy.yaml"
    assert _cli("--workers", "2", "--render", str(good)).returncode == 0
    ok = _cli("--validate", "--render", str(good))
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        good.read_text()
        .replace("lb_policy", "lb_polcy", 1)
        .replace("load_balancing_policy:", "load_balancing_polcy:", 1)
    )
    bad = _cli("--validate", "--render", str(broken))
    assert bad.returncode == 1
    assert "load_balancing_polcy" in bad.stderr
    # A semantic error too: a CA bundle that does not exist.
    tls = _cli(
        "--workers",
        "1",
        "--upstream-tls",
        "--upstream-tls-ca-file",
        "/nonexistent.pem",
        "--validate",
    )
    assert tls.returncode == 1 and "nonexistent.pem" in tls.stderr


@pytest.mark.integration
def test_gateway_command_runs_envoy_and_stops_on_sigterm() -> None:
    with run_gateway(None, workers=1, healthy=False) as gateway:
        pass
    assert gateway.proc.returncode == 0
