"""The chart against a real kube-apiserver and kube-controller-manager (no kubelet).

What only an API server can say: admission (Pod Security ``restricted``), defaulting and
validation of every rendered object, RBAC of the deploy identity, the ``kubeVersion``
constraint against a real version, and what the Deployment controller does on ``helm
upgrade`` and ``helm rollback``. Pods are created but stay Pending.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.chart.helm import CHART, helm_binary
from tests.cluster.conftest import Cluster
from tests.cluster.controlplane import KUBERNETES_VERSION
from tests.cluster.crds import (
    ADAPTER_APIS,
    SOURCES,
    UNPUBLISHED,
    crd_files,
    needed_api_versions,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(helm_binary() is None, reason="helm is not installed (make setup)"),
]

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    # `enforce` judges Pods only; `warn` also judges the pod templates of workloads
    # (Deployments, Jobs) when they are written, and the API server's warning reaches helm's
    # and kubectl's stderr.
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
PSA_WARNING = "would violate PodSecurity"
VALUE_SETS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
DEPLOYER_ROLE = CHART / "rbac" / "deployer-role.yaml"
RELEASE = "pronto"
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy (controllers act asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec in ``objects``: Pods (helm test hooks) and pod templates."""
    found = []
    for obj in objects:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod":
            found.append((label, obj["spec"]))
        elif obj["kind"] in POD_TEMPLATE_KINDS:
            found.append((label, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "CronJob":
            found.append((label, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return found


_crd_lock = threading.Lock()


def ensure_crds(cluster: Cluster, api_versions: list[str]) -> list[str]:
    """Create the published CRDs for ``api_versions``; return those with none published."""
    missing = [a for a in api_versions if a not in SOURCES]
    with _crd_lock:
        for api_version in api_versions:
            if api_version not in SOURCES:
                continue
            for path in crd_files(api_version):
                # Server-side apply: these CRDs exceed the client-side apply annotation limit.
                cluster.kubectl("apply", "--server-side", "-f", str(path))
                name = yaml.safe_load(path.read_text())["metadata"]["name"]
                cluster.kubectl(
                    "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s"
                )
    return missing


def helm_objects(
    cluster: Cluster, namespace: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The release's manifest and its hooks, as helm stored them."""
    manifest = cluster.helm("get", "manifest", RELEASE, "-n", namespace).stdout
    hooks = cluster.helm("get", "hooks", RELEASE, "-n", namespace).stdout
    return docs(manifest), docs(hooks)


def helm_test_enabled(values_file: Path) -> bool:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["helmTest"]["enabled"]
    override = (yaml.safe_load(values_file.read_text()) or {}).get("helmTest", {})
    return bool(override.get("enabled", defaults))


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def render(
    cluster: Cluster, namespace: str, values_file: Path, api_versions: list[str]
) -> list[dict[str, Any]]:
    """``helm template`` for ``namespace`` as the rehearsal's server would see it."""
    return docs(
        cluster.helm(
            "template",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            "-f",
            str(values_file),
            "--kube-version",
            KUBERNETES_VERSION,
            *(a for v in api_versions for a in ("--api-versions", v)),
        ).stdout
    )


def deploy(
    cluster: Cluster, namespace: str, values_file: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Install a value set; return its objects, its hooks and the client's stderr.

    A value set that needs an adapter's API (``ADAPTER_APIS``) cannot go through ``helm
    install``: helm takes the server's APIs from discovery and has no ``--api-versions`` for
    it, and no adapter runs here. Its objects are rendered with ``--api-versions`` and
    created with ``kubectl create``, so the API server still admits, defaults and stores
    every one of them (its hooks are judged by ``assert_pods_admitted``)."""
    needed = needed_api_versions(values_file)
    if not any(a in ADAPTER_APIS for a in needed):
        proc = cluster.helm("install", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file))
        manifest, hooks = helm_objects(cluster, namespace)
        return manifest, hooks, proc.stderr
    rendered = render(
        cluster, namespace, values_file, [a for a in needed if a in SOURCES or a in ADAPTER_APIS]
    )
    manifest = [o for o in rendered if not is_hook(o)]
    proc = subprocess.run(
        [
            str(cluster.plane.bin / "kubectl"),
            "--kubeconfig",
            str(cluster.plane.kubeconfig),
            "create",
            "-f",
            "-",
        ],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifest}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return manifest, [o for o in rendered if is_hook(o)], proc.stderr


def assert_pods_admitted(
    cluster: Cluster, namespace: str, specs: list[tuple[str, dict[str, Any]]]
) -> None:
    """Create each pod spec in ``namespace`` with a server-side dry run, so Pod Security
    admission judges it exactly as it would the real pod."""
    refused: list[str] = []
    for label, spec in specs:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"admission-{len(refused)}-{abs(hash(label)) % 10**6}"},
            "spec": spec,
        }
        proc = subprocess.run(
            [
                str(cluster.plane.bin / "kubectl"),
                "--kubeconfig",
                str(cluster.plane.kubeconfig),
                "create",
                "--dry-run=server",
                "-n",
                namespace,
                "-f",
                "-",
            ],
            input=json.dumps(pod),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            refused.append(f"{label}: {proc.stderr.strip()}")
    assert not refused, "Pod Security refused:\n" + "\n".join(refused)


def selector(workload: dict[str, Any]) -> str:
    """A workload's label selector, as ``kubectl -l`` takes it."""
    terms = workload["spec"]["selector"]
    assert set(terms) == {"matchLabels"}, f"unexpected selector {terms}"
    return ",".join(f"{k}={v}" for k, v in terms["matchLabels"].items())


def deployment_rs(
    cluster: Cluster, namespace: str, deployment: dict[str, Any]
) -> list[dict[str, Any]]:
    return cluster.items("replicasets", namespace, selector(deployment))


def settled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment once its controller has seen the latest generation."""
    d = cluster.get("deployment", name, namespace)
    status = d.get("status", {})
    if status.get("observedGeneration") == d["metadata"]["generation"]:
        return d
    return None


def template_without_hash(rs: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(rs["spec"]["template"])
    template["metadata"]["labels"].pop("pod-template-hash", None)
    return template


# ----------------------------------------------------------------------------------------


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_control_plane_listens_on_loopback_only(cluster: Cluster) -> None:
    processes = cluster.plane.processes
    assert set(processes) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    for name, proc in processes.items():
        listening = [
            c.laddr
            for c in psutil.Process(proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, f"{name} listens nowhere"
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, (name, listening)


def test_kube_version_constraint(cluster: Cluster) -> None:
    """Chart.yaml's kubeVersion: the rehearsal's API server passes (the install tests show
    it), GKE's pre-release-shaped versions pass, 1.28 is refused."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"]
    for version, accepted in [
        ("1.28.15", False),
        ("v1.28.15-gke.1020000", False),
        ("1.29.0", True),
        ("v1.30.5-gke.1014001", True),
        (KUBERNETES_VERSION, True),
    ]:
        proc = cluster.helm("template", RELEASE, str(CHART), "--kube-version", version, check=False)
        assert (proc.returncode == 0) is accepted, (version, proc.stderr)
        if not accepted:
            assert "kubeVersion" in proc.stderr
    # Against the server itself: helm reads the version from discovery.
    namespace = cluster.namespace("kubever")
    proc = cluster.helm("install", RELEASE, str(CHART), "-n", namespace, "--dry-run=server")
    assert proc.returncode == 0


@pytest.mark.parametrize("values", VALUE_SETS)
def test_value_set_installs_under_restricted_pod_security(cluster: Cluster, values: str) -> None:
    """Every chart-testing value set installs in a namespace enforcing Pod Security
    `restricted`: each object is accepted and read back, every Deployment's pods are admitted
    and created, and every pod spec helm rendered (hooks, tests, init containers) passes."""
    values_file = CHART / "ci" / values
    needed = needed_api_versions(values_file)
    crd_backed = [a for a in needed if a not in ADAPTER_APIS]
    unobtainable = ensure_crds(cluster, crd_backed)
    if unobtainable and len(unobtainable) == len(crd_backed):
        pytest.skip(
            f"{values}: no published CRD for "
            + "; ".join(f"{a} ({UNPUBLISHED.get(a, 'unknown source')})" for a in unobtainable)
        )
    if unobtainable:
        warnings.warn(
            f"{values}: installed without {', '.join(unobtainable)} (no published CRD: "
            + "; ".join(sorted({UNPUBLISHED.get(a, "unknown source") for a in unobtainable}))
            + "); the chart leaves those objects out",
            stacklevel=1,
        )
    namespace = cluster.namespace("values", RESTRICTED)
    rendered = render(
        cluster, namespace, values_file, [v for v in needed if v in SOURCES or v in ADAPTER_APIS]
    )
    for other in {o["metadata"].get("namespace") for o in rendered} - {None, namespace}:
        cluster.kubectl("create", "namespace", other, check=False)

    manifest, hooks, stderr = deploy(cluster, namespace, values_file)
    # The namespace warns on pod templates that `restricted` would refuse.
    assert PSA_WARNING not in stderr, stderr

    kinds = {o["kind"] for o in manifest}
    for api_version in needed:
        if api_version in SOURCES:
            kind = api_version.rsplit("/", 1)[1]
            assert kind in kinds, f"{values}: {kind} not rendered although its CRD exists"
    for obj in manifest:
        ns = obj["metadata"].get("namespace", namespace)
        group = obj["apiVersion"].rpartition("/")[0]
        resource = f"{obj['kind']}.{group}" if group else obj["kind"]
        live = cluster.get(resource, obj["metadata"]["name"], ns)
        assert live["metadata"]["uid"]

    deployments = [o for o in manifest if o["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        labels = selector(deployment)

        def pods_created(name: str = name, labels: str = labels) -> list[dict[str, Any]] | None:
            d = settled(cluster, namespace, name)
            if not d or not d["spec"].get("replicas"):
                return None
            pods = cluster.items("pods", namespace, labels)
            return pods if len(pods) >= d["spec"]["replicas"] else None

        pods = wait_for(f"{name}'s pods to be created", pods_created)
        sets = deployment_rs(cluster, namespace, deployment)
        assert sets, f"{name} has no ReplicaSet"
        for rs in sets:
            failures = [
                c
                for c in rs.get("status", {}).get("conditions", [])
                if c["type"] == "ReplicaFailure"
            ]
            assert not failures, (name, failures)
        owners = {ref["name"] for p in pods for ref in p["metadata"].get("ownerReferences", [])}
        assert owners <= {rs["metadata"]["name"] for rs in sets}, (name, owners)
        assert all(p["status"]["phase"] == "Pending" for p in pods)

    specs = pod_specs(manifest) + pod_specs(hooks)
    assert specs
    if helm_test_enabled(values_file):
        assert any(
            "test" in o["metadata"]["annotations"]["helm.sh/hook"].split(",")
            for o in hooks
            if o["kind"] == "Pod"
        ), f"{values}: no helm test Pod among the hooks"
    assert_pods_admitted(cluster, namespace, specs)


def test_pod_security_refuses_a_privileged_pod(cluster: Cluster, tmp_path: Path) -> None:
    """The control for the test above: the same admission path does refuse."""
    namespace = cluster.namespace("psa", RESTRICTED)
    wait_for("the default ServiceAccount", lambda: cluster.items("serviceaccounts", namespace))
    # A plain pod: fine under `baseline`, refused by `restricted` (privilege escalation,
    # capabilities, runAsNonRoot, seccomp).
    bad = {"containers": [{"name": "c", "image": "busybox"}]}
    with pytest.raises(AssertionError, match="violates PodSecurity"):
        assert_pods_admitted(cluster, namespace, [("Pod/plain", bad)])

    # And the warning the install test looks for does reach helm's stderr: a chart whose
    # Deployment has that pod template installs (enforce judges Pods, not templates), warned.
    chart = tmp_path / "plain"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: plain\nversion: 0.1.0\n")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "plain"},
        "spec": {
            "selector": {"matchLabels": {"app": "plain"}},
            "template": {"metadata": {"labels": {"app": "plain"}}, "spec": bad},
        },
    }
    (chart / "templates" / "deployment.yaml").write_text(json.dumps(deployment))
    proc = cluster.helm("install", "plain", str(chart), "-n", namespace)
    assert PSA_WARNING in proc.stderr, proc.stderr


# Written by the server or its controllers, never by the chart: left out of the digests.
_BOOKKEEPING = {"resourceVersion", "managedFields", "generation", "uid", "creationTimestamp"}


def _digests(cluster: Cluster, namespace: str, objects: list[dict[str, Any]]) -> dict[str, str]:
    """Per object, a digest of everything but its status and the server's write bookkeeping
    (controllers rewrite status, and with it resourceVersion, on every sync: the HPA's).
    Labels and annotations stay in: helm marks its objects only with the release's name and
    namespace, which an upgrade keeps."""
    digests = {}
    for obj in objects:
        live = cluster.get(
            obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", namespace)
        )
        body = {k: v for k, v in live.items() if k != "status"}
        body["metadata"] = {k: v for k, v in live["metadata"].items() if k not in _BOOKKEEPING}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        digests[f"{obj['kind']}/{obj['metadata']['name']}"] = digest[:16]
    return digests


def _rollout(cluster: Cluster, namespace: str, name: str, after: int) -> dict[str, Any]:
    """The Deployment once its controller has acted on a generation newer than ``after``."""

    def check() -> dict[str, Any] | None:
        d = settled(cluster, namespace, name)
        return d if d and d["metadata"]["generation"] > after else None

    result: dict[str, Any] = wait_for(f"{name} past generation {after}", check)
    return result


def test_upgrade_rollout_and_rollback(cluster: Cluster) -> None:
    """helm upgrade with a new model version rolls a new ReplicaSet while the old one keeps
    its replicas (maxUnavailable: 0; no new pod ever gets Ready here), checksums follow their
    inputs only, an unchanged upgrade touches nothing, and rollback restores the template."""
    namespace = cluster.namespace("upgrade", RESTRICTED)
    chart = ["upgrade", "--install", RELEASE, str(CHART), "-n", namespace]
    cluster.helm(*chart, "--set", "model.version=1")
    manifest, _ = helm_objects(cluster, namespace)
    deployment = next(o for o in manifest if o["kind"] == "Deployment")
    name = deployment["metadata"]["name"]
    minimum = next(o for o in manifest if o["kind"] == "HorizontalPodAutoscaler")["spec"][
        "minReplicas"
    ]

    def scaled() -> dict[str, Any] | None:
        d = settled(cluster, namespace, name)
        return d if d and d["spec"].get("replicas") == minimum else None

    d1 = wait_for("the HPA to scale to minReplicas", scaled)
    replicas = d1["spec"]["replicas"]
    (rs1,) = wait_for("the first ReplicaSet", lambda: deployment_rs(cluster, namespace, d1))
    template1 = template_without_hash(rs1)

    # Same values again: a new release revision, and no object changes at all.
    before = _digests(cluster, namespace, manifest)
    assert len(before) == len(manifest)
    cluster.helm(*chart, "--set", "model.version=1")
    history = json.loads(cluster.helm("history", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]
    assert _digests(cluster, namespace, manifest) == before
    assert [r["metadata"]["name"] for r in deployment_rs(cluster, namespace, d1)] == [
        rs1["metadata"]["name"]
    ]

    # New model version: a surge ReplicaSet with the new template; the old one keeps every
    # replica while no new pod is Ready.
    cluster.helm(*chart, "--set", "model.version=2")
    d2 = _rollout(cluster, namespace, name, d1["metadata"]["generation"])
    surge = int(d2["spec"]["strategy"]["rollingUpdate"]["maxSurge"])

    def surged() -> list[dict[str, Any]] | None:
        d = settled(cluster, namespace, name)
        sets = deployment_rs(cluster, namespace, d2)
        if d and d["status"].get("updatedReplicas") == surge and len(sets) == 2:
            return sets
        return None

    sets = {r["metadata"]["name"]: r for r in wait_for("the surge ReplicaSet", surged)}
    old = sets.pop(rs1["metadata"]["name"])
    (new,) = sets.values()
    assert new["spec"]["replicas"] == surge
    assert old["spec"]["replicas"] == replicas
    assert d2["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    new_annotations = new["spec"]["template"]["metadata"]["annotations"]
    old_annotations = old["spec"]["template"]["metadata"]["annotations"]
    assert new_annotations["pronto.dev/model"].endswith("/2")
    assert old_annotations["pronto.dev/model"].endswith("/1")
    checksums = {k for k in new_annotations if k.startswith("checksum/")}
    assert checksums, "the pod template carries no checksum annotations"
    # The model version is no input of any checksummed object.
    assert {k: new_annotations[k] for k in checksums} == {k: old_annotations[k] for k in checksums}

    # A gateway setting is: its checksum moves, and only that one.
    cluster.helm(*chart, "--set", "model.version=2", "--set", "gateway.retries=1")
    d3 = _rollout(cluster, namespace, name, d2["metadata"]["generation"])
    a3 = d3["spec"]["template"]["metadata"]["annotations"]
    assert {k for k in checksums if a3[k] != new_annotations[k]} == {"checksum/gateway"}

    # Rollback to revision 1: the first template, served again by the first ReplicaSet.
    cluster.helm("rollback", RELEASE, "1", "-n", namespace)
    d4 = _rollout(cluster, namespace, name, d3["metadata"]["generation"])
    assert d4["spec"]["template"] == template1
    current = [
        r["metadata"]["name"]
        for r in deployment_rs(cluster, namespace, d4)
        if template_without_hash(r) == d4["spec"]["template"]
    ]
    assert current == [rs1["metadata"]["name"]]


def test_collector_checksum_follows_its_config(cluster: Cluster) -> None:
    """With the tracing value set, the collector's `checksum/config` moves when its config's
    inputs change (`tracing.collector.project`) and only then: a model change and a
    `tracing.samplingRatio` change (an input of the server and gateway, not of the
    collector) leave the collector's Deployment untouched."""
    namespace = cluster.namespace("collector", RESTRICTED)
    values = ["-f", str(CHART / "ci" / "tracing-values.yaml")]
    chart = ["upgrade", "--install", RELEASE, str(CHART), "-n", namespace, *values]
    cluster.helm(*chart, "--set", "model.version=1")
    manifest, _ = helm_objects(cluster, namespace)
    by_checksum = {
        key: o["metadata"]["name"]
        for o in manifest
        if o["kind"] == "Deployment"
        for key in o["spec"]["template"]["metadata"].get("annotations", {})
        if key.startswith("checksum/")
    }
    collector, server = by_checksum["checksum/config"], by_checksum["checksum/gateway"]
    assert collector != server

    minimum = next(o for o in manifest if o["kind"] == "HorizontalPodAutoscaler")["spec"][
        "minReplicas"
    ]

    def scaled() -> dict[str, Any] | None:
        d = settled(cluster, namespace, server)
        return d if d and d["spec"].get("replicas") == minimum else None

    def state() -> tuple[dict[str, Any], dict[str, Any]]:
        """Both Deployments as their controllers last saw them, the server's once the HPA
        has scaled it (a scale bumps its generation too)."""
        c = wait_for(collector, lambda: settled(cluster, namespace, collector))
        return c, wait_for(f"{server} at minReplicas", scaled)

    def config(d: dict[str, Any]) -> str:
        value: str = d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    def gateway(d: dict[str, Any]) -> str:
        value: str = d["spec"]["template"]["metadata"]["annotations"]["checksum/gateway"]
        return value

    c1, s1 = state()

    # A new model: the server rolls, the collector does not.
    cluster.helm(*chart, "--set", "model.version=2")
    s2 = _rollout(cluster, namespace, server, s1["metadata"]["generation"])
    c2, _ = state()
    assert config(c2) == config(c1)
    assert c2["metadata"]["generation"] == c1["metadata"]["generation"]
    assert gateway(s2) == gateway(s1)

    # The sampling ratio: the gateway's config (and checksum) moves, the collector's not.
    cluster.helm(*chart, "--set", "model.version=2", "--set", "tracing.samplingRatio=0.5")
    s3 = _rollout(cluster, namespace, server, s2["metadata"]["generation"])
    c3, _ = state()
    assert gateway(s3) != gateway(s2)
    assert config(c3) == config(c1)
    assert c3["metadata"]["generation"] == c1["metadata"]["generation"]

    # The collector's own input: its checksum moves (a new collector rollout), the server
    # stays as it was.
    cluster.helm(
        *chart,
        "--set",
        "model.version=2",
        "--set",
        "tracing.samplingRatio=0.5",
        "--set",
        "tracing.collector.project=other-project",
    )
    c4 = _rollout(cluster, namespace, collector, c3["metadata"]["generation"])
    _, s4 = state()
    assert config(c4) != config(c3)
    assert s4["metadata"]["generation"] == s3["metadata"]["generation"]
    assert gateway(s4) == gateway(s3)
    configmap = cluster.get("configmap", collector, namespace)
    assert 'project: "other-project"' in configmap["data"]["config.yaml"]


def _play_kubelet_for_tests(cluster: Cluster, namespace: str, stop: threading.Event) -> None:
    """No kubelet runs test pods here: mark each `helm test` pod Succeeded, as a kubelet
    would once it exited 0."""
    while not stop.is_set():
        for pod in cluster.items("pods", namespace):
            hook = pod["metadata"].get("annotations", {}).get("helm.sh/hook", "")
            if "test" in hook.split(",") and pod["status"].get("phase") == "Pending":
                status = {"status": {"phase": "Succeeded", "conditions": []}}
                cluster.kubectl(
                    "patch",
                    "pod",
                    pod["metadata"]["name"],
                    "-n",
                    namespace,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    json.dumps(status),
                    check=False,
                )
        stop.wait(0.3)


def test_deploy_identity_rbac(cluster: Cluster) -> None:
    """The Role in charts/pronto/rbac is enough for helm upgrade, rollback and test in the
    release namespace, and refused for Secrets and workloads anywhere else."""
    namespace = cluster.namespace("deploy", RESTRICTED)
    other = cluster.namespace("other")
    text = DEPLOYER_ROLE.read_text().replace("PROJECT_ID", "rehearsal")
    user = next(s["name"] for d in docs(text) if d["kind"] == "RoleBinding" for s in d["subjects"])
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)
    chart = ["upgrade", "--install", RELEASE, str(CHART), "-n", namespace]

    cluster.helm(*chart, "--set", "model.version=1", as_user=user)
    cluster.helm(*chart, "--set", "model.version=2", as_user=user)
    history = json.loads(
        cluster.helm("history", RELEASE, "-n", namespace, "-o", "json", as_user=user).stdout
    )
    assert [h["revision"] for h in history] == [1, 2]
    cluster.helm("rollback", RELEASE, "1", "-n", namespace, as_user=user)
    stop = threading.Event()
    kubelet = threading.Thread(target=_play_kubelet_for_tests, args=(cluster, namespace, stop))
    kubelet.start()
    try:
        cluster.helm("test", RELEASE, "-n", namespace, "--timeout", "60s", as_user=user)
    finally:
        stop.set()
        kubelet.join()

    def can(verb: str, resource: str, ns: str) -> bool:
        out = cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", user, check=False)
        return out.strip() == "yes"

    # What helm test, the smoke test's port-forward and an operator's exec into a pod need,
    # asserted directly (the chart's test pods may be few); the same grants stop at the
    # release namespace.
    pod_access = [
        ("create", "pods/exec"),
        ("get", "pods/exec"),
        ("create", "pods/portforward"),
        ("get", "pods/portforward"),
    ]
    for verb, resource in [
        ("create", "pods"),
        ("delete", "pods"),
        ("get", "pods/log"),
        *pod_access,
    ]:
        assert can(verb, resource, namespace), (verb, resource)
    for verb, resource in [
        *pod_access,
        ("get", "pods/log"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "secrets"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("create", "pods"),
        ("create", "configmaps"),
    ]:
        assert not can(verb, resource, other), (verb, resource, other)
    for verb, resource in [
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "roles.rbac.authorization.k8s.io"),
    ]:
        assert not can(verb, resource, namespace), (verb, resource)
    assert not can("create", "namespaces", "default")

    # And as real requests, not just the authorizer's answer.
    proc = subprocess.run(
        [
            str(cluster.plane.bin / "kubectl"),
            "--kubeconfig",
            str(cluster.plane.kubeconfig),
            "get",
            "secrets",
            "-n",
            other,
            "--as",
            user,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "forbidden" in proc.stderr, proc.stderr
    proc = cluster.helm("install", RELEASE, str(CHART), "-n", other, as_user=user, check=False)
    assert proc.returncode != 0 and "forbidden" in proc.stderr


def _subset(rendered: Any, live: Any, path: str = "") -> list[str]:
    """Where ``live`` (read back from the server) lacks or changes a field ``rendered`` set.
    Scalars compare exactly: an IntOrString port or ``maxUnavailable`` that comes back as
    the other type is a change."""
    if isinstance(rendered, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r}"]
        return [m for k, v in rendered.items() for m in _subset(v, live.get(k), f"{path}.{k}")]
    if isinstance(rendered, list):
        if not isinstance(live, list) or len(live) != len(rendered):
            return [f"{path}: {live!r} != {rendered!r}"]
        return [
            m
            for i, (a, b) in enumerate(zip(rendered, live, strict=True))
            for m in _subset(a, b, f"{path}[{i}]")
        ]
    if type(rendered) is not type(live) or rendered != live:
        return [f"{path}: {live!r} != {rendered!r}"]
    return []


def test_subset_compares_scalars_exactly() -> None:
    assert not _subset({"port": 53, "name": "x"}, {"port": 53, "name": "x", "extra": 1})
    assert _subset({"port": 53}, {"port": "53"}) == [".port: '53' != 53"]
    assert _subset({"maxUnavailable": "1"}, {"maxUnavailable": 1})
    assert _subset({"ports": [{"port": 53}]}, {"ports": []})


POLICY_RESOURCES = {
    "NetworkPolicy": "networkpolicies.networking.k8s.io",
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            "default-values.yaml",
            {"NetworkPolicy": 1, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1},
        ),
        (
            "jwt-values.yaml",
            {"NetworkPolicy": 1, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1},
        ),
        (
            "auth-off-values.yaml",
            {"NetworkPolicy": 1, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1},
        ),
        # The relay's and the collector's own NetworkPolicies next to the server's.
        (
            "alert-relay-values.yaml",
            {"NetworkPolicy": 2, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1},
        ),
        (
            "tracing-values.yaml",
            {"NetworkPolicy": 2, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1},
        ),
        # The HPA with its requests-per-second `Pods` metric.
        (
            "custom-metrics-values.yaml",
            {"NetworkPolicy": 1, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1},
        ),
    ],
)
def test_policy_objects_read_back_as_rendered(
    cluster: Cluster, values: str, expected: dict[str, int]
) -> None:
    """NetworkPolicy, PodDisruptionBudget and HorizontalPodAutoscaler: accepted, and the
    server keeps every field the chart set (no silent pruning or rewriting)."""
    namespace = cluster.namespace("policy")
    manifest, _, _ = deploy(cluster, namespace, CHART / "ci" / values)
    checked: dict[str, int] = {}
    for obj in manifest:
        if obj["kind"] not in POLICY_RESOURCES:
            continue
        live = json.loads(
            cluster.kubectl(
                "get",
                POLICY_RESOURCES[obj["kind"]],
                obj["metadata"]["name"],
                "-n",
                namespace,
                "-o",
                "json",
            )
        )
        assert live["apiVersion"] == obj["apiVersion"]
        changed = _subset(obj["spec"], live["spec"])
        assert not changed, (obj["kind"], obj["metadata"]["name"], changed)
        checked[obj["kind"]] = checked.get(obj["kind"], 0) + 1
    assert checked == expected
    if values == "custom-metrics-values.yaml":
        hpa = next(o for o in manifest if o["kind"] == "HorizontalPodAutoscaler")
        live = cluster.get(
            "horizontalpodautoscalers.autoscaling", hpa["metadata"]["name"], namespace
        )
        assert [m["type"] for m in live["spec"]["metrics"]] == ["Resource", "Pods"]
