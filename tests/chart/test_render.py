"""The chart lints, renders under every value combination and validates offline against
Kubernetes 1.30+ schemas; the rendered objects carry the promised runtime behaviour."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.helm import (
    CHART,
    KUBE_VERSION,
    SCENARIOS,
    Scenario,
    container,
    cpu_quantity,
    find,
    find_all,
    needs_helm,
    pod_spec,
    render,
    render_scenario,
    resolve_cpu_field,
    run_helm,
)

pytestmark = needs_helm

KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
SELECTOR = {"app.kubernetes.io/name": "pronto", "app.kubernetes.io/instance": "pronto"}
# Custom resources: kubernetes-validate has no schema for them; check their shape here.
CRD_KINDS = {
    "PodMonitoring": "monitoring.googleapis.com/v1",
    "Rules": "monitoring.googleapis.com/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "Gateway": "gateway.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
    "HealthCheckPolicy": "networking.gke.io/v1",
    "GCPBackendPolicy": "networking.gke.io/v1",
}


def test_helm_lint_strict() -> None:
    proc = run_helm("lint", "--strict", "charts/pronto")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# helm lint has no --api-versions, so value sets that need an optional API are left to
# test_renders_valid_objects.
@pytest.mark.parametrize("values", [s.values_file for s in SCENARIOS if not s.api_versions])
def test_helm_lint_strict_with_each_value_file(values: str) -> None:
    proc = run_helm("lint", "--strict", "charts/pronto", "--values", f"charts/pronto/ci/{values}")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_renders_valid_objects(scenario: Scenario, version: str) -> None:
    objects = render_scenario(scenario)
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            assert obj["apiVersion"] == CRD_KINDS[obj["kind"]]
            assert obj["metadata"]["name"] and isinstance(obj["spec"], dict)
            continue
        # strict: unknown fields are errors too
        kubernetes_validate.validate(obj, version, strict=True)
    for obj in objects:
        if obj["kind"] not in ("ConfigMap",) or "dashboard" not in obj["metadata"]["name"]:
            assert obj["metadata"].get("namespace") == "pronto", obj["metadata"]


def test_validation_catches_unknown_fields() -> None:
    """Guard the guard: strict validation rejects a misspelt field."""
    deployment = find(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_selectors_match_pod_labels(scenario: Scenario) -> None:
    objects = render_scenario(scenario)
    deployment = find(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == SELECTOR
    assert selector.items() <= pod_labels.items()
    assert find(objects, "Service")["spec"]["selector"] == selector
    for kind in ("PodDisruptionBudget",):
        assert find(objects, kind)["spec"]["selector"]["matchLabels"] == selector
    assert find(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector
    for monitor in find_all(objects, "PodMonitoring") + find_all(objects, "ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"] == selector
    for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"] == selector
    hpa = find_all(objects, "HorizontalPodAutoscaler")
    if hpa:
        assert hpa[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def _ports(spec: dict[str, Any]) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]
        for p in c.get("ports", [])
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_named_ports_exist(scenario: Scenario) -> None:
    objects = render_scenario(scenario)
    ports = _ports(pod_spec(objects))
    for port in find(objects, "Service")["spec"]["ports"]:
        assert port["targetPort"] in ports
    for rule in find(objects, "NetworkPolicy")["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in ports
    for monitor in find_all(objects, "PodMonitoring") + find_all(objects, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports


def test_service_speaks_http2_to_envoy() -> None:
    service = find(render(), "Service")
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert http["port"] == 8080
    assert http["appProtocol"] == "kubernetes.io/h2c"
    assert _ports(pod_spec(render()))[http["targetPort"]] == 8080


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_security_context(scenario: Scenario) -> None:
    spec = pod_spec(render_scenario(scenario))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] >= 10000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert "runAsUser" not in sc or sc["runAsUser"] >= 10000, c["name"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_container_has_requests_and_limits(scenario: Scenario) -> None:
    spec = pod_spec(render_scenario(scenario))
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= c["resources"][kind].keys(), (c["name"], kind)
        assert cpu_quantity(c["resources"]["requests"]["cpu"]) <= cpu_quantity(
            c["resources"]["limits"]["cpu"]
        )


def test_server_probes_are_native_grpc_and_startup_covers_model_load() -> None:
    server = container(pod_spec(render()), "server")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"] == {"port": 50051}, probe
    startup = server["startupProbe"]
    # load and warm-up may take minutes; liveness must not kill a pod that is still loading
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    liveness = server["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


def test_envoy_is_a_native_sidecar_ready_only_through_a_worker() -> None:
    spec = pod_spec(render())
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["model-fetch", "envoy-config", "envoy"]
    envoy = container(spec, "envoy")
    assert envoy["restartPolicy"] == "Always"
    assert envoy["image"].startswith("docker.io/envoyproxy/envoy:v1.40.")
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    args = envoy["args"]
    assert args[args.index("--config-path") + 1] == "/etc/envoy/envoy.yaml"
    assert args[args.index("--concurrency") + 1] == "$(ENVOY_CONCURRENCY)"


def test_drain_fits_in_termination_grace_period() -> None:
    spec = pod_spec(render())
    server = container(spec, "server")
    env = {e["name"]: e.get("value") for e in server["env"]}
    grace, drain = float(env["PRONTO_GRACE_PERIOD"]), float(env["PRONTO_DRAIN_DELAY"])
    script = server["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert "drain_listeners?graceful" in script
    pre_stop = 10
    assert f"time.sleep({pre_stop})" in script
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + grace + 5
    envoy = container(spec, "envoy")
    drain_time = int(envoy["args"][envoy["args"].index("--drain-time-s") + 1])
    assert drain_time >= pre_stop + drain + grace


def test_rolling_update_never_drops_ready_capacity() -> None:
    deployment = find(render(), "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["minReadySeconds"] > 0


@pytest.mark.parametrize(("limit", "workers"), [("2", "2"), ("4", "4"), ("1500m", "2")])
def test_worker_count_follows_cpu_limit(limit: str, workers: str) -> None:
    spec = pod_spec(render(sets=(f"server.resources.limits.cpu={limit}",)))
    for name in ("server", "envoy-config"):
        (var,) = [e for e in container(spec, name)["env"] if e["name"] == "PRONTO_WORKERS"]
        ref = var["valueFrom"]["resourceFieldRef"]
        assert ref["containerName"] == "server"
        assert resolve_cpu_field(spec, ref) == workers


def test_explicit_worker_count_wins() -> None:
    spec = pod_spec(render(("jwt-values.yaml",)))
    for name in ("server", "envoy-config"):
        (var,) = [e for e in container(spec, name)["env"] if e["name"] == "PRONTO_WORKERS"]
        assert var == {"name": "PRONTO_WORKERS", "value": "3"}


def test_model_fetched_from_gcs_with_workload_identity() -> None:
    objects = render(sets=("serviceAccount.gcpServiceAccount=rt@p.iam.gserviceaccount.com",))
    spec = pod_spec(objects)
    fetch = container(spec, "model-fetch")
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["MODEL_REGISTRY"].startswith("gs://")
    # the single-model values become a one-model list pinned to model.version
    assert env["MODELS"] == "flight-delay pinned:1"
    assert 'gcloud storage cp --recursive "$MODEL_REGISTRY/$1/$2"' in fetch["args"][0]
    sa = find(objects, "ServiceAccount")
    assert sa["metadata"]["name"] == spec["serviceAccountName"] == "pronto"
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == (
        "rt@p.iam.gserviceaccount.com"
    )
    server = container(spec, "server")
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["PRONTO_MODEL_REPOSITORY"] == "/models"
    assert env["PRONTO_MODELS"] == '["flight-delay"]'
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True


def test_new_model_version_rolls_the_pods() -> None:
    a = find(render(), "Deployment")["spec"]["template"]
    b = find(render(sets=("model.version=2",)), "Deployment")["spec"]["template"]
    assert a != b
    assert b["metadata"]["annotations"]["pronto.dev/model"] == "flight-delay/2"


def test_baked_model_skips_the_download() -> None:
    spec = pod_spec(render(("baked-model-values.yaml",)))
    assert [c["name"] for c in spec["initContainers"]] == ["envoy-config", "envoy"]
    assert "models" not in {v["name"] for v in spec["volumes"]}
    server = container(spec, "server")
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["PRONTO_MODEL_REPOSITORY"] == "/opt/pronto/models"
    assert server["image"].endswith(
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )


@pytest.mark.parametrize(
    ("values", "secret", "key_env"),
    [
        ("default-values.yaml", "pronto-api-keys", "PRONTO_API_KEYS_FILE"),
        ("jwt-values.yaml", "pronto-jwks", "PRONTO_JWT_JWKS_FILE"),
        ("auth-off-values.yaml", None, None),
    ],
)
def test_auth_secret_reference(values: str, secret: str | None, key_env: str | None) -> None:
    objects = render((values,))
    spec = pod_spec(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    (settings,) = [
        c for c in find_all(objects, "ConfigMap") if c["metadata"]["name"].endswith("-gateway")
    ]
    if secret is None:
        assert "auth" not in volumes
        assert settings["data"]["PRONTO_REQUIRE_AUTH"] == "false"
        return
    assert volumes["auth"]["secret"]["secretName"] == secret
    assert settings["data"]["PRONTO_REQUIRE_AUTH"] == "true"
    assert settings["data"][key_env].startswith("/etc/pronto/auth/")
    mounts = {m["name"] for m in container(spec, "envoy-config")["volumeMounts"]}
    assert "auth" in mounts


def test_gateway_settings_change_rolls_the_pods() -> None:
    a = find(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    b = find(render(sets=("gateway.retries=1",)), "Deployment")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert a["checksum/gateway"] != b["checksum/gateway"]


def test_hpa_scales_on_cpu_and_optionally_on_requests_per_second() -> None:
    default = find(render(), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in default] == ["Resource"]
    assert default[0]["resource"]["name"] == "cpu"
    rps = next(sc for sc in SCENARIOS if sc.name == "custom-metrics")
    with_rps = find(render_scenario(rps), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in with_rps] == ["Resource", "Pods"]
    # the default metric is the per-pod recording rule the chart ships
    rules = (CHART / "files" / "rules" / "slo.yaml").read_text()
    metric = with_rps[1]["pods"]["metric"]["name"].split("|")[1]
    assert f"record: {metric}\n" in rules
    off = render(sets=("autoscaling.enabled=false", "replicaCount=3"))
    assert not find_all(off, "HorizontalPodAutoscaler")
    assert find(off, "Deployment")["spec"]["replicas"] == 3


def test_topology_spread_over_zones_and_nodes() -> None:
    constraints = pod_spec(render())["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in constraints}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["matchLabelKeys"] == ["pod-template-hash"] for c in constraints)


def test_monitoring_objects_need_their_api() -> None:
    kinds = {o["kind"] for o in render(("monitoring-gmp-values.yaml",))}
    assert not kinds & {"PodMonitoring", "Rules", "ServiceMonitor", "PrometheusRule"}
    gmp = render(
        ("monitoring-gmp-values.yaml",),
        api_versions=(
            "monitoring.googleapis.com/v1/PodMonitoring",
            "monitoring.googleapis.com/v1/Rules",
        ),
    )
    assert {"PodMonitoring", "Rules"} <= {o["kind"] for o in gmp}
    operator = render(
        ("monitoring-operator-values.yaml",),
        api_versions=(
            "monitoring.coreos.com/v1/ServiceMonitor",
            "monitoring.coreos.com/v1/PrometheusRule",
        ),
    )
    operator_kinds = {o["kind"] for o in operator}
    assert {"ServiceMonitor", "PrometheusRule"} <= operator_kinds
    assert "PodMonitoring" not in operator_kinds


def test_rules_and_dashboards_come_from_chart_files() -> None:
    objects = render(
        ("monitoring-operator-values.yaml",),
        api_versions=("monitoring.coreos.com/v1/PrometheusRule",),
    )
    groups = find(objects, "PrometheusRule")["spec"]["groups"]
    records = {r.get("record") for g in groups for r in g["rules"]}
    assert "pronto:availability:ratio_rate5m" in records
    dashboards = [
        c for c in find_all(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert dashboards
    assert all(c["metadata"]["labels"]["grafana_dashboard"] == "1" for c in dashboards)


def test_gateway_api_route_targets_envoy() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "gateway")
    objects = render_scenario(scenario)
    gateway = find(objects, "Gateway")
    assert gateway["spec"]["listeners"][0]["protocol"] == "HTTPS"
    route = find(objects, "HTTPRoute")
    assert route["spec"]["parentRefs"][0]["name"] == gateway["metadata"]["name"]
    (backend,) = route["spec"]["rules"][0]["backendRefs"]
    service = find(objects, "Service")
    assert backend == {"name": service["metadata"]["name"], "port": 8080}
    policy = find(objects, "HealthCheckPolicy")
    assert policy["spec"]["targetRef"]["name"] == service["metadata"]["name"]


def test_gateway_api_without_crds_fails_loudly() -> None:
    proc = run_helm(
        "template",
        "pronto",
        "charts/pronto",
        "--kube-version",
        KUBE_VERSION,
        "--values",
        "charts/pronto/ci/gateway-values.yaml",
    )
    assert proc.returncode != 0
    assert "gateway.networking.k8s.io" in proc.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "model.registry=s3://bucket",
        "model.source=ftp",
        "gateway.auth.mode=basic",
        "server.workers=-1",
        "image.digest=latest",
    ],
)
def test_schema_rejects_bad_values(bad: str) -> None:
    proc = run_helm(
        "template", "pronto", "charts/pronto", "--kube-version", KUBE_VERSION, "--set", bad
    )
    assert proc.returncode != 0
    assert "schema" in proc.stderr.lower() or "values don't meet" in proc.stderr.lower()


def test_rollout_values_fetch_both_versions_and_write_the_state() -> None:
    spec = pod_spec(render(("rollout-values.yaml",)))
    names = [c["name"] for c in spec["initContainers"]]
    assert names == ["model-fetch", "rollout-state", "envoy-config", "envoy"]
    fetch_env = {e["name"]: e.get("value") for e in container(spec, "model-fetch")["env"]}
    assert fetch_env["MODELS"] == "flight-delay pinned:1 2"
    args = container(spec, "rollout-state")["args"]
    assert args[:3] == ["rollout", "start", "flight-delay"]
    assert {"--candidate=2", "--stable=1", "--mode=canary", "--auto"} <= set(args)
    assert "--max-error-rate=0.005" in args
    # promote, abort and the analysis write rollout.json next to the versions
    mounts = {m["name"]: m for m in container(spec, "server")["volumeMounts"]}
    assert mounts["models"]["readOnly"] is False
    plain = pod_spec(render())
    assert "rollout-state" not in [c["name"] for c in plain["initContainers"]]
    proc = run_helm(
        "template", "t", "charts/pronto", "--values", "charts/pronto/ci/baked-model-values.yaml",
        "--set", "model.rollout.candidate=2",
    )  # fmt: skip
    assert proc.returncode != 0 and "model.source=gcs" in proc.stderr


def _server_env(objects: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in container(pod_spec(objects), "server")["env"] if e["name"] == name]


@pytest.mark.parametrize(
    ("sets", "guard"),
    [
        # defaults: 2 CPUs (2 workers), 2Gi: (2048 - 256) / 2 * 3/4
        ((), "672"),
        (("server.resources.limits.cpu=1500m",), "672"),
        (("server.resources.limits.cpu=4", "server.resources.limits.memory=4Gi"), "720"),
        (("server.workers=1", "server.resources.limits.memory=1500M"), "880"),
        (("server.memoryGuardMb=300",), "300"),
        (("server.memoryGuardMb=0",), "0"),
    ],
)
def test_memory_guard_fits_the_workers_in_the_memory_limit(
    sets: tuple[str, ...], guard: str
) -> None:
    (var,) = _server_env(render(sets=sets), "PRONTO_MEMORY_LIMIT_MB")
    assert var == {"name": "PRONTO_MEMORY_LIMIT_MB", "value": guard}


def test_memory_guard_times_workers_stays_under_the_limit() -> None:
    for cpu, memory in [("1", 1024), ("2", 2048), ("3", 2048), ("8", 8192)]:
        sets = (f"server.resources.limits.cpu={cpu}", f"server.resources.limits.memory={memory}Mi")
        (var,) = _server_env(render(sets=sets), "PRONTO_MEMORY_LIMIT_MB")
        assert int(var["value"]) * int(cpu) <= (memory - 256) * 3 // 4, (cpu, memory, var)


def test_memory_guard_set_in_extra_env_is_not_overridden() -> None:
    objects = render(sets=("server.extraEnv.PRONTO_MEMORY_LIMIT_MB=500",))
    assert _server_env(objects, "PRONTO_MEMORY_LIMIT_MB") == [
        {"name": "PRONTO_MEMORY_LIMIT_MB", "value": "500"}
    ]


def test_memory_guard_refuses_a_limit_too_small_for_the_workers() -> None:
    proc = run_helm(
        "template", "pronto", str(CHART), "--set", "server.resources.limits.memory=512Mi",
        "--set", "server.resources.limits.cpu=4",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "leaves under 128 MiB a worker" in proc.stderr


def _notes(tmp_path: Path, *sets: str) -> str:
    """The install notes as ``helm install`` prints them. ``helm template`` does not render
    NOTES.txt and ``helm install --dry-run`` wants a cluster, so a copy of the chart turns
    the notes into a named template and a ConfigMap that carries its text."""
    chart = tmp_path / "pronto"
    shutil.copytree(CHART, chart)
    notes = chart / "templates" / "NOTES.txt"
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "notes-under-test" -}}' + notes.read_text() + "{{- end }}"
    )
    notes.unlink()
    (chart / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ include "notes-under-test" . | quote }}}\n'
    )
    args = ["template", "pronto", str(chart), "--namespace", "pronto"]
    args += ["--show-only", "templates/notes-under-test.yaml"]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(*args)
    assert proc.returncode == 0, proc.stderr
    return str(yaml.safe_load(proc.stdout)["data"]["notes"])


def test_install_notes_warn_when_the_shared_grpc_port_is_published(tmp_path: Path) -> None:
    plain = _notes(tmp_path / "a")
    assert "kubectl -n pronto rollout status" in plain  # the notes did render
    assert "exposeGrpcDirect" not in plain
    notes = _notes(tmp_path / "b", "service.exposeGrpcDirect=true")
    assert "WARNING: service.exposeGrpcDirect=true" in notes
    assert "no authentication" in notes
