"""Chart values for payload capture: env of the server and a writable capture volume."""

from __future__ import annotations

import pytest

from tests.chart.helm import container, find, find_all, needs_helm, pod_spec, render
from tests.chart.pod import container_env

pytestmark = needs_helm


def test_capture_off_by_default() -> None:
    objects = render()
    assert "PRONTO_CAPTURE_DIR" not in container_env(objects, "server")
    assert all(v["name"] != "capture" for v in pod_spec(objects)["volumes"])


@pytest.mark.parametrize("claim", ["", "pronto-capture"])
def test_capture_env_and_volume(claim: str) -> None:
    sets = ["server.capture.enabled=true", "server.capture.sampleRate=0.25"]
    if claim:
        sets.append(f"server.capture.existingClaim={claim}")
    objects = render(sets=sets)
    env = container_env(objects, "server")
    assert env["PRONTO_CAPTURE_DIR"] == "/var/lib/pronto/capture"
    assert env["PRONTO_CAPTURE_SAMPLE_RATE"] == "0.25"
    assert env["PRONTO_LABEL_RETENTION"] == "604800"
    spec = pod_spec(objects)
    mounts = {m["name"]: m for m in container(spec, "server")["volumeMounts"]}
    assert mounts["capture"]["mountPath"] == env["PRONTO_CAPTURE_DIR"]
    assert not mounts["capture"].get("readOnly")
    volume = next(v for v in spec["volumes"] if v["name"] == "capture")
    if claim:
        assert volume["persistentVolumeClaim"] == {"claimName": claim}
    else:
        assert volume["emptyDir"] == {"sizeLimit": "2Gi"}


def test_capture_finds_predictions_on_the_other_pods() -> None:
    sets = ["server.capture.enabled=true", "networkPolicy.enabled=true"]
    objects = render(sets=[*sets, "networkPolicy.egress.enabled=true"])
    peers = next(
        o for o in find_all(objects, "Service") if o["metadata"]["name"].endswith("-peers")
    )
    assert peers["spec"]["clusterIP"] == "None"  # one address per ready pod
    deployment = find(objects, "Deployment")
    assert peers["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert peers["spec"]["ports"][0]["targetPort"] == "grpc"
    env = container_env(objects, "server")
    namespace = peers["metadata"]["namespace"]
    assert env["PRONTO_FEEDBACK_PEERS"] == (
        f"{peers['metadata']['name']}.{namespace}.svc.cluster.local:"
        f"{peers['spec']['ports'][0]['port']}"
    )
    # the pods admit each other to the server port, and may call it
    policy = find(objects, "NetworkPolicy")["spec"]
    selector = {"podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}
    assert {"ports": [{"port": "grpc", "protocol": "TCP"}], "from": [selector]} in policy["ingress"]
    assert any(rule.get("to") == [selector] for rule in policy["egress"])
    # off: no Service, no env, no extra rule
    objects = render(sets=[*sets, "server.capture.peers=false"])
    assert not [o for o in find_all(objects, "Service") if o["metadata"]["name"].endswith("-peers")]
    assert "PRONTO_FEEDBACK_PEERS" not in container_env(objects, "server")
    policy = find(objects, "NetworkPolicy")["spec"]
    assert all("podSelector" not in str(rule.get("from", "")) for rule in policy["ingress"])


def test_capture_upload_to_the_models_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.settings import ServeSettings

    assert "PRONTO_CAPTURE_UPLOAD_URL" not in container_env(
        render(sets=["server.capture.enabled=true"]), "server"
    )
    sets = [
        "server.capture.enabled=true",
        "server.capture.upload=true",
        "server.capture.uploadPrefix=/prod/captures/",
        "model.registry=gs://acme-models/",
    ]
    env = container_env(render(sets=sets), "server")
    assert env["PRONTO_CAPTURE_UPLOAD_URL"] == "gs://acme-models/prod/captures"
    monkeypatch.setenv("PRONTO_CAPTURE_UPLOAD_URL", env["PRONTO_CAPTURE_UPLOAD_URL"])
    assert ServeSettings().capture_upload_url == "gs://acme-models/prod/captures"
