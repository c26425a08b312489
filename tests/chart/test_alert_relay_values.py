"""Chart values for the alert relay, and the alert routing that feeds it."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.monitoring.alert_relay import AlertRelaySettings
from tests.chart.helm import CHART, find_all, needs_helm, pod_spec, render, run_helm

pytestmark = needs_helm

VALUES = ("alert-relay-values.yaml",)
NAME = "pronto-alert-relay"


def _relay(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in find_all(objects, kind) if o["metadata"]["name"] == NAME]
    return found


def test_relay_off_by_default() -> None:
    objects = render()
    assert all(NAME not in o["metadata"]["name"] for o in objects)


def test_relay_renders_valid_objects_like_the_server_pods() -> None:
    objects = render(VALUES)
    deployment, service = _relay(objects, "Deployment"), _relay(objects, "Service")
    policy = _relay(objects, "NetworkPolicy")
    for obj in (deployment, service, policy):
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    spec = deployment["spec"]["template"]["spec"]
    server = next(o for o in find_all(objects, "Deployment") if o["metadata"]["name"] == "pronto")[
        "spec"
    ]["template"]["spec"]
    assert spec["securityContext"] == server["securityContext"]
    [relay] = spec["containers"]
    server_container = next(c for c in server["containers"] if c["name"] == "server")
    assert relay["securityContext"] == server_container["securityContext"]
    assert relay["image"] == server_container["image"] and relay["args"] == ["alert-relay"]
    assert spec["automountServiceAccountToken"] is False
    # its own selector: the server's Service, PDB and NetworkPolicy never pick relay pods
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for obj in objects:
        selector = obj.get("spec", {}).get("selector", {})
        selector = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
        if obj["metadata"]["name"] != NAME and selector:
            assert not selector.items() <= labels.items(), obj["kind"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in relay["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert relay["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_relay_env_is_what_the_relay_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's variables build the relay's settings (no name drifted apart)."""
    spec = render(VALUES, sets=["alertRelay.coolDownSeconds=60"])
    deployment = _relay(spec, "Deployment")["spec"]["template"]["spec"]
    [relay] = deployment["containers"]
    env = {e["name"]: e["value"] for e in relay["env"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = AlertRelaySettings()
    assert settings.repository == "example-org/pronto"
    assert settings.event_type == "pronto-retrain"
    assert settings.host == "0.0.0.0" and settings.port == 9095
    assert settings.cool_down_seconds == 60
    # the token file is the key of the mounted Secret
    [mount] = relay["volumeMounts"]
    volume = next(v for v in deployment["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "pronto-alert-relay-github"
    assert (
        str(settings.token_file) == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    )
    assert mount["readOnly"] is True


def test_relay_metrics_are_scraped_where_gke_monitoring_exists() -> None:
    api = ("monitoring.googleapis.com/v1/PodMonitoring",)
    assert not [
        o for o in find_all(render(VALUES), "PodMonitoring") if o["metadata"]["name"] == NAME
    ]
    objects = render(VALUES, api_versions=api)
    monitor = _relay(objects, "PodMonitoring")
    labels = _relay(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    # the server's own PodMonitoring does not select the relay
    server = next(
        o for o in find_all(objects, "PodMonitoring") if o["metadata"]["name"] == "pronto"
    )
    assert not server["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_relay_needs_a_repository() -> None:
    proc = run_helm(
        "template", "pronto", str(CHART), "--set", "alertRelay.enabled=true"
    )  # fmt: skip
    assert proc.returncode != 0 and "alertRelay.repository" in proc.stderr


def test_server_pod_unchanged_by_the_relay() -> None:
    assert pod_spec(render()) == pod_spec([
        o for o in render(VALUES) if o["metadata"]["name"] != NAME
    ])  # fmt: skip


def test_quality_drop_reaches_the_retrain_receiver_and_the_ticket() -> None:
    """ProntoModelQualityDrop (action="retrain") goes to the relay and still to the ticket;
    the estimated-quality alert (no labels yet) retrains nothing."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed (Debian prometheus-alertmanager, make setup-apt)")
    rules = yaml.safe_load((CHART / "files" / "rules" / "quality.yaml").read_text("utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["ProntoModelQualityDrop"]["labels"]["action"] == "retrain"
    assert "action" not in alerts["ProntoEstimatedQualityDrop"]["labels"]
    config = str(CHART / "alerting" / "alertmanager.yaml")
    cases = (
        (["alertname=ProntoModelQualityDrop", "severity=ticket", "action=retrain"],
         "pronto-retrain,pronto-ticket"),
        (["alertname=ProntoEstimatedQualityDrop", "severity=ticket"], "pronto-ticket"),
    )  # fmt: skip
    for labels, receivers in cases:
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert routed.stdout.strip() == receivers, routed.stdout + routed.stderr
