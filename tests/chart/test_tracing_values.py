"""Tracing values: off renders nothing of OpenTelemetry; on, Envoy (through the gateway
settings) and the server (through the SDK's OTEL_* variables) export to the collector the
chart deploys or to an existing one, and the collector's configuration is a complete
traces pipeline from OTLP to Google Cloud Trace.

The collector's configuration is checked for shape here; an otelcol-contrib binary (which
could run ``otelcol validate``) cannot be installed on the test machine."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.render import render as render_envoy
from gateway.settings import GatewaySettings
from tests.chart.helm import container, find, find_all, needs_helm, pod_spec, render
from tests.chart.pod import container_env

pytestmark = needs_helm

COLLECTOR = "pronto-otel-collector"


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in find_all(objects, kind) if o["metadata"]["name"] == name)


def test_tracing_off_configures_nothing() -> None:
    objects = render()
    env = container_env(objects, "server")
    assert not [k for k in env if k.startswith("OTEL_")]
    gateway = container_env(objects, "envoy-config")
    assert "PRONTO_OTLP_ENDPOINT" not in gateway
    assert not [o for o in objects if "otel" in o["metadata"]["name"]]


def test_collector_receives_from_envoy_and_the_server() -> None:
    objects = render(("tracing-values.yaml",))
    endpoint = f"{COLLECTOR}.pronto.svc:4317"
    server = container_env(objects, "server")
    assert server["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == f"http://{endpoint}"
    assert server["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert server["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert server["OTEL_RESOURCE_ATTRIBUTES"] == "k8s.namespace.name=pronto,k8s.pod.ip=127.0.0.1"
    gateway = container_env(objects, "envoy-config")
    assert (gateway["PRONTO_OTLP_ENDPOINT"], gateway["PRONTO_TRACE_SAMPLING"]) == (endpoint, "0.1")
    # what the envoy-config init container renders from these settings
    settings = GatewaySettings(
        otlp_endpoint=gateway["PRONTO_OTLP_ENDPOINT"],
        trace_sampling=float(gateway["PRONTO_TRACE_SAMPLING"]),
        require_auth=False,
    )
    envoy = yaml.safe_load(render_envoy(settings))
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    tracing = hcm["typed_config"]["tracing"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    sampler = tracing["provider"]["typed_config"]["sampler"]
    assert sampler["name"] == "envoy.tracers.opentelemetry.samplers.parent_based"
    ratio = sampler["typed_config"]["wrapped_sampler"]["typed_config"]["sampling_percentage"]
    assert ratio == {"numerator": 100_000, "denominator": "MILLION"}
    otlp = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "otlp")
    address = otlp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": f"{COLLECTOR}.pronto.svc", "port_value": 4317}

    service = _named(objects, "Service", COLLECTOR)
    deployment = _named(objects, "Deployment", COLLECTOR)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    # the server's Deployment must not select the collector's pods (nor the reverse)
    server_selector = find(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not server_selector.items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    # Workload Identity: the release's service account, mapped to the runtime account
    assert pod["spec"]["serviceAccountName"] == "pronto"
    # the release's pods may send spans to the collector, and nothing else may
    policies = {p["metadata"]["name"]: p["spec"] for p in find_all(objects, "NetworkPolicy")}
    egress = policies["pronto"]["egress"]
    assert any(
        r.get("ports") == [{"port": 4317, "protocol": "TCP"}]
        and r["to"][0]["podSelector"]["matchLabels"] == service["spec"]["selector"]
        for r in egress
    )
    ingress = policies[COLLECTOR]["ingress"]
    assert ingress[0]["from"][0]["podSelector"]["matchLabels"] == server_selector
    assert {p["port"] for p in ingress[0]["ports"]} <= ports


def test_collector_config_is_an_otlp_to_cloud_trace_pipeline() -> None:
    objects = render(("tracing-values.yaml",))
    config = yaml.safe_load(_named(objects, "ConfigMap", COLLECTOR)["data"]["config.yaml"])
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["exporters"] == ["googlecloud"]
    assert pipeline["processors"][0] == "memory_limiter"  # first, as the collector advises
    assert pipeline["processors"][-1] == "batch"
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    assert config["exporters"]["googlecloud"]["project"] == "ci-project"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "${env:POD_IP}:4317"
    assert config["processors"]["batch"]["send_batch_max_size"] <= 200  # Cloud Trace's cap
    # the collector restarts when its configuration changes
    other = render(("tracing-values.yaml",), ("tracing.collector.project=other",))
    annotations = [
        _named(o, "Deployment", COLLECTOR)["spec"]["template"]["metadata"]["annotations"]
        for o in (objects, other)
    ]
    assert annotations[0]["checksum/config"] != annotations[1]["checksum/config"]
    spec = _named(objects, "Deployment", COLLECTOR)["spec"]["template"]["spec"]
    collector = container(spec, "otel-collector")
    assert collector["readinessProbe"]["httpGet"]["port"] == "health"
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")


def test_existing_collector_endpoint() -> None:
    objects = render(sets=("tracing.enabled=true", "tracing.endpoint=otel.observability:4317"))
    assert not [o for o in objects if "otel" in o["metadata"]["name"]]
    server = container_env(objects, "server")
    assert server["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://otel.observability:4317"
    assert container_env(objects, "envoy-config")["PRONTO_OTLP_ENDPOINT"] == (
        "otel.observability:4317"
    )
    egress = find(objects, "NetworkPolicy")["spec"]["egress"]
    assert {"ports": [{"port": 4317, "protocol": "TCP"}]} in egress
    assert pod_spec(objects)


@pytest.mark.parametrize(
    "sets",
    [
        ("tracing.enabled=true",),  # neither a collector nor an endpoint
        ("tracing.enabled=true", "tracing.endpoint=http://otel:4317"),
        ("tracing.enabled=true", "tracing.endpoint=otel:4317", "tracing.samplingRatio=2"),
    ],
)
def test_bad_tracing_values_are_refused(sets: tuple[str, ...]) -> None:
    with pytest.raises(AssertionError, match=r"values don't meet the specifications|schema"):
        render(sets=sets)
