"""The pod's processes, started with the exact commands, arguments and environment the chart
renders: the model is served through the Envoy sidecar, the probes' endpoints answer, and
the preStop hook plus SIGTERM drain it cleanly within terminationGracePeriodSeconds.

Kubernetes itself is not involved: the kubelet's part (env resolution, mounts, probes,
hooks, signals) is played by the test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import launcher
from pronto_cli.procs import wait_until
from server.generated.inference import grpc_service_pb2 as oip
from server.generated.inference import grpc_service_pb2_grpc as oip_grpc
from tests import support
from tests.chart.helm import REPO, container, find, needs_helm, pod_spec, render
from tests.chart.pod import POD_ENVOY_DIR, PodFiles, container_env
from tests.gateway import modelgen

pytestmark = [needs_helm, pytest.mark.integration, pytest.mark.slow]


def _envoy_binary() -> str:
    return str(launcher.envoy_binary())


def _request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[dict[str, Any]]:
    repository = modelgen.build_repository(tmp_path / "models")
    with run_pod(tmp_path, repository, (f"model.name={modelgen.MODEL}",)) as running:
        yield running


@contextlib.contextmanager
def run_pod(
    tmp_path: Path, repository: Path, model_sets: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """The pod's processes for the chart rendered with ``model_sets`` (plus local ports),
    serving ``repository`` as the model-fetch init container would have left it."""
    server_port, metrics, envoy_port, admin, stats = support.free_ports(5)
    worker_base = support.free_port_block(2)
    sets = (
        *model_sets,
        f"server.port={server_port}",
        f"server.workerBasePort={worker_base}",
        f"server.metricsPort={metrics}",
        f"gateway.port={envoy_port}",
        f"gateway.adminPort={admin}",
        f"gateway.statsPort={stats}",
        "server.resources.requests.cpu=2",
        "server.resources.limits.cpu=2",
        "server.preStopSeconds=1",
        "server.drainDelay=0.5",
        "server.gracePeriod=5",
        "gateway.resources.limits.cpu=1",
    )
    objects = render(sets=sets)
    spec = pod_spec(objects)
    files = PodFiles(tmp_path, objects)
    base_env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    base_env["HOME"] = str(tmp_path)

    def local(env: dict[str, str]) -> dict[str, str]:
        out = {k: files.to_local(v) for k, v in env.items()}
        out["HOME"] = str(tmp_path)
        return {**base_env, **out}

    # init container envoy-config: `pronto gateway --render /etc/envoy/envoy.yaml`
    renderer = container(spec, "envoy-config")
    args = [files.to_local(a) for a in renderer["args"]]
    rendered = subprocess.run(
        [sys.executable, "-m", "pronto_cli", *args],
        env=local(container_env(objects, "envoy-config")),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr

    # native sidecar envoy: the chart's command and arguments, $(VAR) expanded
    envoy = container(spec, "envoy")
    envoy_env = container_env(objects, "envoy")
    envoy_args = [files.to_local(a) for a in envoy["args"]]
    envoy_args = [
        envoy_env[a[2:-1]] if a.startswith("$(") and a.endswith(")") else a for a in envoy_args
    ]
    assert envoy["command"] == ["envoy"]

    # main container server: `pronto serve` with the chart's environment
    server = container(spec, "server")
    server_env = container_env(objects, "server")
    server_env["PRONTO_MODEL_REPOSITORY"] = str(repository)
    server_env["PRONTO_METRICS_DIR"] = str(tmp_path / "metrics")

    logs = tmp_path / "logs"
    logs.mkdir()
    with (
        (logs / "envoy.log").open("wb") as envoy_log,
        (logs / "server.log").open("wb") as server_log,
        support.running(
            [_envoy_binary(), *envoy_args], stdout=envoy_log, stderr=subprocess.STDOUT
        ) as envoy_proc,
        support.running(
            [sys.executable, "-m", "pronto_cli", *server["args"]],
            env=local(server_env),
            cwd=REPO,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        ) as server_proc,
    ):
        yield {
            "objects": objects,
            "spec": spec,
            "server": server_proc,
            "envoy": envoy_proc,
            "ports": {"server": server_port, "envoy": envoy_port, "metrics": metrics},
            # server.resources.limits.cpu=2 above → two workers, each on its own port
            "workers": [f"127.0.0.1:{worker_base + i}" for i in range(2)],
            "files": files,
            "logs": logs,
        }


def test_pod_serves_through_envoy_and_drains_on_termination(pod: dict[str, Any]) -> None:
    ports, spec = pod["ports"], pod["spec"]
    server = container(spec, "server")
    key = {"x-api-key": PodFiles.API_KEY}

    # startupProbe / readinessProbe: gRPC health on the server's port
    assert server["startupProbe"]["grpc"]["port"] == ports["server"]
    support.wait_for_grpc_health(f"127.0.0.1:{ports['server']}", timeout=90, proc=pod["server"])
    # Envoy's readinessProbe: its httpGet path through Envoy to a ready worker
    probe = container(spec, "envoy")["readinessProbe"]["httpGet"]
    support.wait_for_http(ports["envoy"], probe["path"])

    body = {"instances": [modelgen.instance(0), modelgen.instance(1)]}
    path = f"/v1/models/{modelgen.MODEL}:predict"
    status, _, payload = _request(ports["envoy"], "POST", path, body, key)
    assert status == 200, payload
    assert len(json.loads(payload)["predictions"]) == 2
    status, _, _ = _request(ports["envoy"], "POST", path, body)
    assert status == 401
    status, _, metrics = _request(ports["metrics"], "GET", "/metrics")
    assert status == 200 and b"pronto_" in metrics

    # preStop: drain Envoy's listeners (clients are told to reconnect) while still serving
    command = server["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "python"
    started = time.monotonic()
    hook = subprocess.run([sys.executable, *command[1:]], timeout=30, check=False)
    assert hook.returncode == 0
    assert time.monotonic() - started >= 1  # server.preStopSeconds
    status, headers, _ = _request(ports["envoy"], "POST", path, body, key)
    assert status == 200
    assert headers.get("connection") == "close"  # draining: HTTP/1.1 clients go elsewhere

    # SIGTERM: the server drains and exits 0 well inside terminationGracePeriodSeconds
    grace = spec["terminationGracePeriodSeconds"]
    started = time.monotonic()
    pod["server"].terminate()
    assert pod["server"].wait(timeout=grace) == 0
    assert time.monotonic() - started < grace - 1


def test_rendered_deployment_is_what_this_test_ran() -> None:
    """The fixture relies on these shapes; fail loudly if the chart changes them."""
    deployment = find(render(), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert container(spec, "server")["args"] == ["serve"]
    assert container(spec, "envoy-config")["args"][:2] == ["gateway", "--render"]
    assert container(spec, "envoy")["args"][1] == f"{POD_ENVOY_DIR}/envoy.yaml"


def _second_model(repository: Path, name: str) -> None:
    """A copy of the test model under another name (the manifest names it too)."""
    shutil.copytree(repository / modelgen.MODEL, repository / name)
    manifest = repository / name / "1" / "model.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": name}))


def test_two_model_pod_is_ready_only_while_both_are_loaded(tmp_path: Path) -> None:
    """models: [two entries] → both served through Envoy, each probed on its own there,
    and the pod's readiness (kubelet's gRPC probe on the server; OIP ServerReady) fails while
    one of them is missing, although the other still answers."""
    other = f"{modelgen.MODEL}-b"
    repository = modelgen.build_repository(tmp_path / "models")
    _second_model(repository, other)
    sets = (
        f"models[0].name={modelgen.MODEL}",
        "models[0].versionPolicy=latest",
        f"models[1].name={other}",
        "models[1].versionPolicy=pinned:1",
        "server.extraEnv.PRONTO_MODEL_POLL_INTERVAL=0.2",
    )
    with run_pod(tmp_path, repository, sets) as pod:
        ports = pod["ports"]
        key = {"x-api-key": PodFiles.API_KEY}
        kubelet = f"127.0.0.1:{ports['server']}"
        support.wait_for_grpc_health(kubelet, timeout=90, proc=pod["server"])
        ready_path = container(pod["spec"], "envoy")["readinessProbe"]["httpGet"]["path"]
        support.wait_for_http(ports["envoy"], ready_path)
        body = {"instances": [modelgen.instance(0)]}
        for name in (modelgen.MODEL, other):
            status, _, payload = _request(
                ports["envoy"], "GET", f"/v2/models/{name}/ready", None, key
            )
            assert status == 200 and json.loads(payload)["ready"] is True, payload
            status, _, payload = _request(
                ports["envoy"], "POST", f"/v1/models/{name}:predict", body, key
            )
            assert status == 200, payload

        def overall() -> int:
            with grpc.insecure_channel(kubelet) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
            return int(reply.status)

        def server_ready(worker: str) -> bool:
            with grpc.insecure_channel(worker) as channel:
                stub = oip_grpc.GRPCInferenceServiceStub(channel)
                return stub.ServerReady(oip.ServerReadyRequest(), timeout=2).ready

        parked = tmp_path / "parked"
        shutil.move(repository / other, parked)
        wait_until(
            lambda: overall() == health_pb2.HealthCheckResponse.NOT_SERVING,
            timeout=15,
            what="kubelet's probe to fail without the second model",
        )
        # each worker watches the repository on its own: Envoy may pick either of them
        wait_until(
            lambda: not any(server_ready(w) for w in pod["workers"]),
            timeout=15,
            what="every worker to see the second model gone",
        )
        # OIP ServerReady through Envoy says the same (proto3 JSON leaves out a false field)
        status, _, payload = _request(ports["envoy"], "GET", ready_path)
        assert status == 200 and json.loads(payload).get("ready", False) is False, payload
        status, _, payload = _request(ports["envoy"], "GET", f"/v2/models/{other}/ready", None, key)
        assert status != 200 or json.loads(payload).get("ready") is not True
        status, _, _ = _request(
            ports["envoy"], "POST", f"/v1/models/{modelgen.MODEL}:predict", body, key
        )
        assert status == 200  # the loaded model keeps answering

        shutil.move(parked, repository / other)
        wait_until(
            lambda: overall() == health_pb2.HealthCheckResponse.SERVING,
            timeout=15,
            what="kubelet's probe to pass again",
        )
        wait_until(
            lambda: all(server_ready(w) for w in pod["workers"]),
            timeout=15,
            what="every worker to load the second model again",
        )
        status, _, payload = _request(ports["envoy"], "GET", ready_path)
        assert status == 200 and json.loads(payload)["ready"] is True, payload
