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
from typing import Any

import psutil
import pytest
import yaml

from tests.chart.helm import CHART, helm_binary
from tests.cluster.conftest import Cluster
from tests.cluster.controlplane import KUBERNETES_VERSION
from tests.cluster.crds import SOURCES, UNPUBLISHED, crd_files, needed_api_versions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(helm_binary() is None, reason="helm is not installed (make setup)"),
]

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
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


def deployment_rs(
    cluster: Cluster, namespace: str, deployment: dict[str, Any]
) -> list[dict[str, Any]]:
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    return cluster.items("replicasets", namespace, selector)


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
    `restricted`: each object is accepted and read back, the Deployment's pods are admitted
    and created, and every pod spec helm rendered (hooks, tests, init containers) passes."""
    values_file = CHART / "ci" / values
    needed = needed_api_versions(values_file)
    unobtainable = ensure_crds(cluster, needed)
    if unobtainable and len(unobtainable) == len(needed):
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
    rendered = docs(
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
            *(a for v in needed if v in SOURCES for a in ("--api-versions", v)),
        ).stdout
    )
    for other in {o["metadata"].get("namespace") for o in rendered} - {None, namespace}:
        cluster.kubectl("create", "namespace", other, check=False)

    proc = cluster.helm("install", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file))
    assert "would violate PodSecurity" not in proc.stderr, proc.stderr

    manifest, hooks = helm_objects(cluster, namespace)
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

    deployment = next(o for o in manifest if o["kind"] == "Deployment")
    name = deployment["metadata"]["name"]

    def pods_created() -> list[dict[str, Any]] | None:
        d = settled(cluster, namespace, name)
        if not d or not d["spec"].get("replicas"):
            return None
        pods = cluster.items("pods", namespace, "app.kubernetes.io/component=inference")
        return pods if len(pods) >= d["spec"]["replicas"] else None

    pods = wait_for(f"{name}'s pods to be created", pods_created)
    for rs in deployment_rs(cluster, namespace, deployment):
        failures = [
            c for c in rs.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"
        ]
        assert not failures, failures
    assert all(p["status"]["phase"] == "Pending" for p in pods)

    specs = pod_specs(manifest) + pod_specs(hooks)
    assert specs
    assert_pods_admitted(cluster, namespace, specs)


def test_pod_security_refuses_a_privileged_pod(cluster: Cluster) -> None:
    """The control for the test above: the same admission path does refuse."""
    namespace = cluster.namespace("psa", RESTRICTED)
    wait_for("the default ServiceAccount", lambda: cluster.items("serviceaccounts", namespace))
    # A plain pod: fine under `baseline`, refused by `restricted` (privilege escalation,
    # capabilities, runAsNonRoot, seccomp).
    bad = {"containers": [{"name": "c", "image": "busybox"}]}
    with pytest.raises(AssertionError, match="violates PodSecurity"):
        assert_pods_admitted(cluster, namespace, [("Pod/plain", bad)])


def _spec_versions(
    cluster: Cluster, namespace: str, objects: list[dict[str, Any]]
) -> dict[str, str]:
    """Per object, what changes only when its spec does: ``metadata.generation`` where the
    server keeps one (controllers' status writes leave it alone), else a digest of the object
    without its status and write bookkeeping (the HPA controller rewrites an HPA's status,
    and so its resourceVersion, on every sync)."""
    versions = {}
    for obj in objects:
        live = cluster.get(
            obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", namespace)
        )
        meta = live["metadata"]
        if meta.get("generation"):
            versions[f"{obj['kind']}/{meta['name']}"] = str(meta["generation"])
            continue
        body = {k: v for k, v in live.items() if k != "status"}
        body["metadata"] = {
            k: v for k, v in meta.items() if k not in ("resourceVersion", "managedFields")
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        versions[f"{obj['kind']}/{meta['name']}"] = digest[:16]
    return versions


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

    # Same values again: a new release revision, and no object's spec changes.
    before = _spec_versions(cluster, namespace, manifest)
    cluster.helm(*chart, "--set", "model.version=1")
    assert _spec_versions(cluster, namespace, manifest) == before
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

    # What helm test needs, asserted directly (the chart's test pods may be few).
    for verb, resource in [("create", "pods"), ("delete", "pods"), ("get", "pods/log")]:
        assert can(verb, resource, namespace), (verb, resource)
    for verb, resource in [
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
    """Where ``live`` (read back from the server) lacks or changes a field ``rendered`` set."""
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
    if rendered != live and str(rendered) != str(live):
        return [f"{path}: {live!r} != {rendered!r}"]
    return []


@pytest.mark.parametrize(
    "values", ["default-values.yaml", "jwt-values.yaml", "auth-off-values.yaml"]
)
def test_policy_objects_read_back_as_rendered(cluster: Cluster, values: str) -> None:
    """NetworkPolicy, PodDisruptionBudget and HorizontalPodAutoscaler: accepted, and the
    server keeps every field the chart set (no silent pruning or rewriting)."""
    namespace = cluster.namespace("policy")
    cluster.helm("install", RELEASE, str(CHART), "-n", namespace, "-f", str(CHART / "ci" / values))
    manifest, _ = helm_objects(cluster, namespace)
    checked = 0
    for obj in manifest:
        if obj["kind"] not in {"NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"}:
            continue
        resource = {
            "NetworkPolicy": "networkpolicies.networking.k8s.io",
            "PodDisruptionBudget": "poddisruptionbudgets.policy",
            "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
        }[obj["kind"]]
        live = json.loads(
            cluster.kubectl(
                "get", f"{resource}", obj["metadata"]["name"], "-n", namespace, "-o", "json"
            )
        )
        assert live["apiVersion"] == obj["apiVersion"]
        assert not _subset(obj["spec"], live["spec"]), (
            obj["kind"],
            _subset(obj["spec"], live["spec"]),
        )
        checked += 1
    assert checked == 3, f"expected a NetworkPolicy, a PDB and an HPA, checked {checked}"
