"""Delivery defects that lint, schema validation and a mocked plan cannot see.

Each test names the failure it prevents on a first real run: the deploy that cannot reach
the cluster, the push that fails the second time, the untested model in production, the
rollout that deadlocks at full scale, one identity for everything, and the smaller ones.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    KUBE_VERSION,
    SCENARIOS,
    container,
    cpu_quantity,
    find,
    find_all,
    needs_helm,
    pod_spec,
    render,
    render_scenario,
    run_helm,
)
from tests.tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CHART = ROOT / "charts" / "pronto"
TF_DEV = ROOT / "terraform" / "envs" / "dev"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def _workflow(name: str) -> dict[str, Any]:
    # PyYAML reads the bare key `on` as True.
    doc = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def _step(workflow: dict[str, Any], job: str, predicate: Any) -> dict[str, Any]:
    found = [s for s in _steps(workflow, job) if predicate(s)]
    assert len(found) == 1, f"expected one matching step in {job}, found {len(found)}"
    return found[0]


def _uses(action: str) -> Any:
    return lambda s: str(s.get("uses", "")).startswith(action + "@")


def _version(uses_line: str, text: str) -> tuple[int, ...]:
    line = next(ln for ln in text.splitlines() if uses_line in ln)
    match = re.search(r"#\s*v(\d+)\.(\d+)\.(\d+)", line)
    assert match, line
    return tuple(int(g) for g in match.groups())


def _tf_default(variable: str, text: str) -> str:
    match = re.search(rf'variable "{variable}" \{{(.*?)\n\}}', text, re.S)
    assert match, variable
    default = re.search(r"^  default\s+=\s+(.*?)(?=\n  [a-z_]+\s+=|\n\n|\Z)", match[1], re.S | re.M)
    assert default, variable
    return default[1]


# 1. The train extra alone runs the trainer: tests/test_extras.py builds the environments.


# 2. Deploy reaches the control plane through its DNS endpoint.
def test_deploy_uses_the_dns_endpoint_that_terraform_opens() -> None:
    text = (WORKFLOWS / "deploy.yml").read_text(encoding="utf-8")
    step = _step(
        _workflow("deploy.yml"), "deploy", _uses("google-github-actions/get-gke-credentials")
    )
    # use_dns_based_endpoint exists from v2.3.0 on.
    assert _version("google-github-actions/get-gke-credentials@", text) >= (2, 3, 0)
    assert step["with"]["use_dns_based_endpoint"] is True
    variables = (TF_DEV / "variables.tf").read_text(encoding="utf-8")
    # Nothing but the DNS endpoint lets a GitHub runner in.
    assert _tf_default("master_authorized_networks", variables).strip() == "[]"
    gke = (ROOT / "terraform" / "modules" / "gke").joinpath("variables.tf").read_text()
    assert _tf_default("enable_dns_endpoint", gke).strip() == "true"


# 3. Immutable registry tags: every image is pushed once, under its commit.
def test_images_are_pushed_once_per_commit_and_never_under_a_moving_tag() -> None:
    registry = (ROOT / "terraform" / "modules" / "registry" / "variables.tf").read_text()
    assert _tf_default("immutable_tags", registry).strip() == "true"
    deploy = _workflow("deploy.yml")
    build = _step(deploy, "deploy", _uses("docker/build-push-action"))
    assert build["with"]["tags"].strip() == "${{ steps.registry.outputs.image }}:${{ github.sha }}"
    # A re-run of the same commit finds its image and skips the push.
    pushed = _step(deploy, "deploy", lambda s: s.get("id") == "pushed")
    assert 'imagetools inspect "$IMAGE:$GITHUB_SHA"' in pushed["run"]
    assert build["if"] == "${{ steps.pushed.outputs.digest == '' }}"
    helm = _step(deploy, "deploy", lambda s: s.get("id") == "helm")
    assert helm["env"]["DIGEST"] == "${{ steps.image.outputs.digest }}"
    image = _step(deploy, "deploy", lambda s: s.get("id") == "image")
    assert "steps.pushed.outputs.digest || steps.build.outputs.digest" in image["env"]["DIGEST"]
    # A release tag is created once, only when it does not exist yet.
    assert "! docker buildx imagetools inspect" in image["run"]


# 4. No model reaches production without beating it, and only from main.
def test_training_publishes_only_gated_models_from_main() -> None:
    train = _workflow("train.yml")
    assert set(train["on"]) == {"pull_request", "push", "workflow_dispatch", "repository_dispatch"}
    assert train["on"]["push"]["branches"] == ["main"]
    # an alert relayed by `pronto alert-relay` (its default event type) starts a training
    from server.monitoring.alert_relay import AlertRelaySettings

    event_type = AlertRelaySettings.model_fields["event_type"].default
    assert train["on"]["repository_dispatch"]["types"] == [event_type]
    assert "github.event.client_payload.model" in train["env"]["MODEL_NAME"]
    job = train["jobs"]["train"]
    assert job["env"]["PUBLISH"] == (
        "${{ github.ref == 'refs/heads/main' && github.event_name != 'pull_request' }}"
    )
    steps = _steps(train, "train")
    names = [s.get("id") or s.get("name") for s in steps]
    gate = _step(train, "train", lambda s: s.get("id") == "gate")
    assert "python -m trainer gate" in gate["run"] and "--params params.yaml" in gate["run"]
    assert "continue-on-error" not in gate  # a failed gate stops the publishing steps
    publish = _step(train, "train", lambda s: str(s.get("name", "")).startswith("Publish"))
    assert publish["if"] == "${{ env.PUBLISH == 'true' }}"
    assert '["passed"]' in publish["run"]  # the verdict is read again right before publishing
    assert names.index("gate") < names.index(publish["name"])
    cml = _step(train, "train", lambda s: "cml comment" in str(s.get("run", "")))
    assert "--target=pr" in cml["run"] and "--publish" not in cml["run"]
    assert "github.event_name == 'pull_request'" in cml["if"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert {"metric", "tolerance"} <= set(params["gate"])


# 5. Capacity: the surge pod of a rollout at full scale must find a node.
GKE_RESERVED_CPU = ((1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025))  # per GKE docs


def _vcpus(machine_type: str) -> int:
    match = re.fullmatch(r"[a-z0-9]+-(?:standard|highcpu|highmem)-(\d+)", machine_type)
    assert match, f"unknown machine type shape {machine_type}"
    return int(match[1])


def _allocatable_millicpu(vcpus: int) -> int:
    reserved, left = 0.0, float(vcpus)
    for cores, fraction in GKE_RESERVED_CPU:
        take = min(cores, left)
        reserved += take * fraction
        left -= take
    return round((vcpus - reserved) * 1000)


def _pod_request_millicpu(spec: dict[str, Any]) -> int:
    """Effective CPU request of a pod with native sidecars (KEP-753 resource model)."""

    def req(c: dict[str, Any]) -> int:
        return round(1000 * cpu_quantity(c.get("resources", {}).get("requests", {}).get("cpu", 0)))

    sidecars, init_peak = 0, 0
    for c in spec.get("initContainers", []):
        if c.get("restartPolicy") == "Always":
            sidecars += req(c)
        else:
            init_peak = max(init_peak, sidecars + req(c))
    return max(init_peak, sidecars + sum(req(c) for c in spec["containers"]))


def _capacity_table() -> dict[str, str]:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text.split("## Capacity", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| `?([^|`]+?)`? \|", section, re.M)
    return {k.strip(): v.strip() for k, v in rows}


@needs_helm
def test_capacity_table_matches_values_and_terraform() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    variables = (TF_DEV / "variables.tf").read_text(encoding="utf-8")
    machine = _tf_default("machine_type", variables).strip().strip('"')
    node_max = int(
        re.search(r"max_nodes\s*=\s*(\d+)", _tf_default("node_autoscaling", variables))[1]
    )  # type: ignore[index]
    table = _capacity_table()
    allocatable = _allocatable_millicpu(_vcpus(machine))
    system = int(table["CPU for system pods per node (estimate)"].removesuffix("m"))
    pod = _pod_request_millicpu(pod_spec(render()))
    per_node = (allocatable - system) // pod
    hpa_max = values["autoscaling"]["maxReplicas"]
    surge = values["rollingUpdate"]["maxSurge"]
    expected = {
        "node machine type": machine,
        "allocatable CPU per node": f"{allocatable}m",
        "CPU requested per pod": f"{pod}m",
        "pods per node": str(per_node),
        "node pool max": str(node_max),
        "HPA max replicas": str(hpa_max),
        "rolling-update surge": str(surge),
        "pods at peak (HPA max + surge)": str(hpa_max + surge),
        "pod slots at node pool max": str(per_node * node_max),
    }
    assert {k: table.get(k) for k in expected} == expected
    # The deadlock itself: at maxReplicas the surge pod stays Pending and --atomic rolls back.
    assert hpa_max + surge <= per_node * node_max


# 6. One identity per pipeline, bound to its GitHub environment.
def test_each_pipeline_authenticates_as_its_own_environment() -> None:
    deploy, train = _workflow("deploy.yml"), _workflow("train.yml")
    assert deploy["jobs"]["deploy"]["environment"] == "production"
    assert train["jobs"]["train"]["environment"] == (
        "${{ github.event_name == 'pull_request' && 'training-check' || 'training' }}"
    )
    for workflow, job in ((deploy, "deploy"), (train, "train")):
        auth = _step(workflow, job, _uses("google-github-actions/auth"))
        assert auth["with"]["service_account"] == "${{ vars.GCP_SERVICE_ACCOUNT }}"
    iam = (ROOT / "terraform" / "modules" / "iam" / "main.tf").read_text(encoding="utf-8")
    assert "roles/container.developer" not in iam
    for sa in ("deploy", "train", "train_check"):
        assert f'resource "google_service_account" "{sa}"' in iam
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    assert "charts/pronto/rbac/deployer-role.yaml" in doc
    # The deploy identity works inside the namespace: it cannot create one.
    helm = _step(deploy, "deploy", lambda s: s.get("id") == "helm")
    assert "--create-namespace" not in helm["run"]


def _pipeline_events(pipeline: str) -> set[str]:
    """The GitHub events terraform/modules/iam lets a pipeline's identity be used from."""
    iam = (ROOT / "terraform" / "modules" / "iam" / "main.tf").read_text(encoding="utf-8")
    body = re.search(
        rf'^ +{re.escape(pipeline)} = join\(" && ", \[\n(.*?)^ +\]\)', iam, re.S | re.M
    )
    assert body, f"no condition for pipeline {pipeline} in terraform/modules/iam/main.tf"
    clause = re.search(r"assertion\.event_name (?:==|in) (\[[^\]]*\]|'[^']*')", body[1])
    assert clause, f"the {pipeline} condition does not pin the event"
    return set(re.findall(r"'([^']+)'", clause[1]))


def test_every_event_that_starts_training_gets_its_identity() -> None:
    """An alert's repository_dispatch was refused at the token exchange: the train condition
    admitted push and workflow_dispatch only. Every event of train.yml's `on:` must map to
    the pipeline whose environment the job picks for it."""
    train = _workflow("train.yml")
    events = set(train["on"])
    writing, checking = _pipeline_events("train"), _pipeline_events("train-check")
    assert events - {"pull_request"} <= writing, (
        f"train.yml starts on {sorted(events - writing - {'pull_request'})}, which the train "
        "identity refuses"
    )
    assert "pull_request" in events and checking == {"pull_request"}
    # A pull request runs its own code: never with the identity that writes.
    assert "pull_request" not in writing
    # repository_dispatch and workflow_dispatch run on the default branch, the one the train
    # condition pins.
    iam = (ROOT / "terraform" / "modules" / "iam" / "main.tf").read_text(encoding="utf-8")
    assert "train.yml@refs/heads/main'" in iam


def test_deployer_rbac_is_namespaced() -> None:
    manifest = CHART / "rbac" / "deployer-role.yaml"
    objects = [o for o in yaml.safe_load_all(manifest.read_text(encoding="utf-8")) if o]
    assert {o["kind"] for o in objects} == {"Role", "RoleBinding"}
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert binding["roleRef"]["kind"] == "Role"


# 7. The smaller findings.
def test_chart_declares_the_kubernetes_version_native_sidecars_need() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart.get("kubeVersion") == ">=1.29.0-0"


def test_deploy_waits_for_ci_and_runs_helm_test() -> None:
    deploy = _workflow("deploy.yml")
    assert deploy["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert deploy["jobs"]["deploy"]["needs"] == ["ci"]
    assert "workflow_call" in _workflow("ci.yml")["on"]
    names = [s.get("name", "") for s in _steps(deploy, "deploy")]
    helm_test = _step(deploy, "deploy", lambda s: s.get("name") == "helm test")
    assert "--logs" in helm_test["run"]
    assert names.index("helm test") < names.index("Roll back when the gate fails")


@needs_helm
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_helm_test_pod_is_restricted(scenario: Any) -> None:
    pods = [
        o
        for o in find_all(render_scenario(scenario), "Pod")
        if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert len(pods) == 1
    spec = pods[0]["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    for volume in spec["volumes"]:
        assert set(volume) <= {"name", "emptyDir", "secret", "configMap", "projected"}


def _helm_test_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pods = [
        o
        for o in find_all(objects, "Pod")
        if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert len(pods) == 1
    return pods[0]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (a Service's plain map, or matchLabels/matchExpressions)
    selects a pod with these labels."""
    if {"matchLabels", "matchExpressions"} & set(selector) or not selector:
        match = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
    else:
        match, expressions = selector, []
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in expressions:
        key, values = e["key"], e.get("values") or []
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[e["operator"]]
        if not ok:
            return False
    return True


def _port_matches(
    rule_ports: list[dict[str, Any]] | None, name: str, number: int, protocol: str = "TCP"
) -> bool:
    if not rule_ports:  # no ports: every port
        return True
    return any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, name, number)
        for p in rule_ports
    )


def _admits(
    rules: list[dict[str, Any]], peers_key: str, labels: dict[str, str], namespace: str,
    port: tuple[str, int], protocol: str = "TCP",
) -> bool:  # fmt: skip
    """Whether one NetworkPolicy rule (ingress `from` / egress `to`) admits traffic with a
    pod of these labels on this (named, numbered) port."""
    return any(
        _port_matches(rule.get("ports"), *port, protocol=protocol)
        and (
            not rule.get(peers_key)
            or any(_peer_admits(p, labels, namespace) for p in rule[peers_key])
        )
        for rule in rules
    )


def _peer_admits(peer: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    if "ipBlock" in peer:  # a pod's address is not known ahead
        return False
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    if "namespaceSelector" in peer and not _selects(peer["namespaceSelector"], ns_labels):
        return False
    # A podSelector alone means pods of the policy's own namespace.
    return "podSelector" not in peer or _selects(peer["podSelector"], labels)


# The value sets whose authentication the test pod exercises: API key (defaults), JWT, none.
HELM_TEST_SCENARIOS = [s for s in SCENARIOS if s.name in ("defaults", "jwt", "auth-off")]


@needs_helm
@pytest.mark.parametrize("scenario", HELM_TEST_SCENARIOS, ids=lambda s: s.name)
def test_helm_test_pod_reaches_envoy_through_the_network_policy(scenario: Any) -> None:
    """In a real cluster the test pod must not fall under the release's selectors (the
    server's NetworkPolicy's egress rules dropped its call to Envoy; the Service, PDB and HPA
    would count it as a server pod). The policies that do select it must let it call Envoy,
    and the server's policy must admit it on Envoy's port."""
    objects = render_scenario(scenario)
    pod = _helm_test_pod(objects)
    labels, namespace = pod["metadata"]["labels"], pod["metadata"]["namespace"]
    deployment = find(objects, "Deployment")
    own_policies = []
    for obj in objects:
        if obj is pod:
            continue
        spec = obj.get("spec") or {}
        if obj["kind"] == "NetworkPolicy" and _selects(spec["podSelector"], labels):
            own_policies.append(obj)
            continue
        for key in ("selector", "podSelector"):
            if isinstance(spec.get(key), dict):
                assert not _selects(spec[key], labels), (
                    f"{obj['kind']}/{obj['metadata']['name']} .spec.{key} selects the test pod"
                )
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert not _selects(deployment["spec"]["selector"], labels)

    # Where the pod calls: <service>.<namespace>.svc:<port> -> targetPort -> Envoy's port.
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    host, _, port = env["PRONTO_TEST_ADDRESS"].rpartition(":")
    service_name, service_ns = host.split(".")[:2]
    assert service_ns == namespace
    service = next(o for o in find_all(objects, "Service") if o["metadata"]["name"] == service_name)
    target = next(p for p in service["spec"]["ports"] if p["port"] == int(port))["targetPort"]
    template = deployment["spec"]["template"]
    assert _selects(service["spec"]["selector"], template["metadata"]["labels"])
    envoy = container(template["spec"], "envoy")
    port_name, port_number = next(
        (p["name"], p["containerPort"])
        for p in envoy["ports"]
        if target in (p["name"], p["containerPort"])
    )

    server_labels = template["metadata"]["labels"]
    policies = [
        o
        for o in find_all(objects, "NetworkPolicy")
        if _selects(o["spec"]["podSelector"], server_labels)
    ]
    assert len(policies) == 1, "the server pods are under one NetworkPolicy"
    spec = policies[0]["spec"]
    assert "Ingress" in spec["policyTypes"]
    assert _admits(
        spec.get("ingress") or [], "from", labels, namespace, (port_name, port_number)
    ), f"no ingress rule of the server's policy admits the helm test pod on {port_name}"

    # Policies add up: where any selects the pod for egress, one of them must allow DNS and
    # Envoy's port on the server pods.
    assert own_policies, "the test pod has a NetworkPolicy of its own (checkov CKV2_K8S_6)"
    for policy in own_policies:
        assert policy["metadata"]["annotations"]["helm.sh/hook"] == "test"
    egress = [r for p in own_policies if "Egress" in p["spec"]["policyTypes"]
              for r in p["spec"].get("egress") or []]  # fmt: skip
    assert egress, "the test pod's egress is limited"
    assert _admits(egress, "to", server_labels, namespace, (port_name, port_number)), (
        f"the test pod's own policy drops its call to Envoy ({port_name})"
    )
    assert _admits(egress, "to", {}, "kube-system", ("dns", 53), protocol="UDP")


def test_label_selector_matching() -> None:
    """The selector logic the test above relies on."""
    pod = {"app": "a", "tier": "x"}
    assert _selects({"app": "a"}, pod) and not _selects({"app": "b"}, pod)
    assert _selects({"matchLabels": {}}, pod) and _selects({}, pod)
    assert not _selects({"matchLabels": {"app": "a", "other": "y"}}, pod)
    assert _selects({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}, pod)
    assert not _selects({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, pod)
    assert _peer_admits({"podSelector": {"matchLabels": {"app": "a"}}}, pod, "ns")
    clients = {"matchLabels": {"kubernetes.io/metadata.name": "clients"}}
    assert not _peer_admits({"namespaceSelector": clients}, pod, "ns")
    assert _peer_admits({"namespaceSelector": clients}, pod, "clients")
    assert _port_matches([{"port": "http", "protocol": "TCP"}], "http", 8080)
    assert not _port_matches([{"port": 9090}], "http", 8080)


@needs_helm
def test_custom_metric_hpa_needs_the_adapter_api() -> None:
    proc = run_helm(
        "template", "pronto", "charts/pronto", "--kube-version", KUBE_VERSION,
        "--set", "autoscaling.requestsPerSecond.enabled=true",
    )  # fmt: skip
    assert proc.returncode != 0 and "custom.metrics.k8s.io/v1beta2" in proc.stderr
    objects = render(sets=("autoscaling.requestsPerSecond.enabled=true",),
                     api_versions=("custom.metrics.k8s.io/v1beta2",))  # fmt: skip
    metrics = find(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods"]


@needs_helm
def test_external_path_drains_for_the_load_balancer() -> None:
    gateway = next(s for s in SCENARIOS if s.name == "gateway")
    objects = render_scenario(gateway)
    draining = find(objects, "GCPBackendPolicy")["spec"]["default"]["connectionDraining"]
    seconds = draining["drainingTimeoutSec"]
    assert seconds >= 30
    spec = pod_spec(objects)
    hook = container(spec, "server")["lifecycle"]["preStop"]["exec"]["command"][-1]
    wait = int(re.search(r"time\.sleep\((\d+)\)", hook)[1])  # type: ignore[index]
    assert wait >= seconds
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["server"]
    budget = wait + values["drainDelay"] + values["gracePeriod"]
    assert spec["terminationGracePeriodSeconds"] > budget
    # In-cluster only (no external load balancer): the short wait stays.
    plain = container(pod_spec(render()), "server")["lifecycle"]["preStop"]["exec"]["command"]
    assert f"time.sleep({values['preStopSeconds']})" in plain[-1]


def _context_files() -> list[Path]:
    """Files `docker build .` sends, by .dockerignore's rules (last match wins)."""
    import fnmatch
    import subprocess

    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    kept = []
    for name in listed:
        included = True
        for negate, pattern in rules:
            parts = name.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
                included = negate
        if included and (ROOT / name).is_file():
            kept.append(ROOT / name)
    return kept


def test_images_carry_no_load_test_data() -> None:
    files = _context_files()
    assert any(f.name == "pyproject.toml" for f in files)
    data = [f for f in files if "/loadtest/data/" in f.as_posix()]
    assert not data, f"load-test data in the build context: {data[:3]}"
    assert sum(f.stat().st_size for f in files) < 2_000_000


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    """A COPY whose source .dockerignore leaves out fails only at ``docker build``."""
    sent = {f.relative_to(ROOT).as_posix() for f in _context_files()}
    copied = []
    for instructions in _dockerfile_stages().values():
        for line in instructions:
            words = line.split()
            if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
                copied += [w for w in words[1:-1] if not w.startswith("--")]
    assert {"setup.py", "pyproject.toml", "server"} <= set(copied)
    # models/ is trained, not committed: serve-baked needs it there (see the Dockerfile)
    missing = [c for c in copied if c != "models/" and c.rstrip("/") not in sent
               and not any(f.startswith(c.rstrip("/") + "/") for f in sent)]  # fmt: skip
    assert missing == []


def test_docker_build_installs_dependencies_before_copying_code() -> None:
    """A code change must not invalidate the dependency layer."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for stage in ("build-serve", "build-train"):
        body = text.split(f"AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        body = body.replace("\\\n", " ")  # one line per instruction
        lines = [ln for ln in body.splitlines() if ln.startswith(("COPY", "RUN"))]
        code = re.compile(r"COPY (pronto_contract|pronto_cli|server|trainer)")
        first_code = next(i for i, ln in enumerate(lines) if code.match(ln))
        deps = next(i for i, ln in enumerate(lines) if "-r /tmp/requirements.txt" in ln)
        assert deps < first_code, stage
        assert all(not ln.startswith("COPY") or "pyproject" in ln or ".ci/" in ln
                   for ln in lines[:deps])  # fmt: skip
        project = next(i for i, ln in enumerate(lines) if "--no-deps" in ln)
        assert project > first_code, stage


def _dockerfile_stages() -> dict[str, list[str]]:
    """``{stage: [instruction, ...]}`` of the Dockerfile, one line per instruction."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            current = stages.setdefault(line.split(" AS ", 1)[1].strip(), [])
        elif line and not line.startswith(("#", " ")):
            current.append(line)
    return stages


def serving_image_problems(stages: dict[str, list[str]]) -> list[str]:
    """What puts more than serving into the serving image: the stages it is built from
    (``runtime`` and ``build-serve``) copy the trainer or the load tests, install another
    extra than ``serve``, or take files from another stage."""
    problems = []
    sources = {"pronto_contract", "pronto_cli", "server", "gateway"}
    for line in stages["build-serve"]:
        if line.startswith("COPY "):
            what = line.split()[1]
            if what not in sources | {"pyproject.toml", ".ci/constraints.txt"}:
                problems.append(f"build-serve copies {what}")
        extras = re.findall(r'\["optional-dependencies"\]\["([a-z-]+)"\]', line)
        problems += [f"build-serve installs the {e} extra" for e in extras if e != "serve"]
        if "--no-deps" in line and re.search(r"install [^&]*\.\[", line):
            problems.append("build-serve installs the project with extras")
    if not any('["optional-dependencies"]["serve"]' in ln for ln in stages["build-serve"]):
        problems.append("build-serve does not install the serve extra")
    copies = [ln for ln in stages["runtime"] if ln.startswith(("COPY", "ADD"))]
    if copies != ["COPY --from=build-serve /opt/venv /opt/venv"]:
        problems.append(f"runtime copies {copies}")
    return problems


def test_serving_image_carries_only_the_runtime() -> None:
    """The serving image holds the contract, the CLI, the server and the gateway with the
    ``serve`` extra: no trainer, no load tests, no scikit-learn or DVC."""
    stages = _dockerfile_stages()
    assert serving_image_problems(stages) == []
    assert stages["serve"] == [] and stages["serve-baked"][0].startswith("COPY models/")
    # the check itself catches a stage that copies the trainer and installs its extra
    broken = dict(stages)
    broken["build-serve"] = [
        *stages["build-serve"],
        "COPY trainer trainer",
        'RUN python -c \'print(p["optional-dependencies"]["train"])\'',
    ]
    assert serving_image_problems(broken) == [
        "build-serve copies trainer",
        "build-serve installs the train extra",
    ]


def test_every_alert_severity_is_routed() -> None:
    """SLO alerts that reach no receiver are alerts nobody sees."""
    config = yaml.safe_load((CHART / "alerting" / "alertmanager.yaml").read_text("utf-8"))
    receivers = {r["name"]: r for r in config["receivers"]}
    routes = {
        m.split("=", 1)[1].strip('"'): r["receiver"]
        for r in config["route"]["routes"]
        for m in r["matchers"]
        if m.startswith("severity=")
    }
    severities = set()
    for path in (CHART / "files" / "rules").glob("*.yaml"):
        for group in yaml.safe_load(path.read_text("utf-8"))["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    severities.add(rule["labels"]["severity"])
    assert severities == {"page", "ticket"}
    for severity in severities:
        receiver = receivers[routes[severity]]
        assert set(receiver) - {"name"}, f"{severity} alerts go to an empty receiver"
    assert routes["page"] != routes["ticket"]


def test_alertmanager_config_is_valid_and_routes_pages() -> None:
    import shutil
    import subprocess

    amtool = shutil.which("amtool")
    if amtool is None:
        missing_tool("amtool is not installed (Debian prometheus-alertmanager, make setup-apt)")
    config = str(CHART / "alerting" / "alertmanager.yaml")
    check = subprocess.run([amtool, "check-config", config], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for severity, receiver in (("page", "pronto-page"), ("ticket", "pronto-ticket")):
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={config}",
             "alertname=ProntoAvailabilityBudgetFastBurn", f"severity={severity}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


HELM_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y") and lower[-2] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith(("s", "ss")):
        return lower + ("es" if lower.endswith("ss") else "")
    return lower + "s"


def _allowed(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        groups, resources = rule.get("apiGroups", []), rule.get("resources", [])
        if (group in groups or "*" in groups) and (resource in resources or "*" in resources):
            verbs |= HELM_VERBS if "*" in rule["verbs"] else set(rule["verbs"])
    return verbs


@needs_helm
def test_deployer_role_covers_what_helm_upgrade_and_helm_test_touch() -> None:
    """The first `helm upgrade --atomic --wait` and `helm test --logs` must not be forbidden."""
    manifest = CHART / "rbac" / "deployer-role.yaml"
    objects = [o for o in yaml.safe_load_all(manifest.read_text(encoding="utf-8")) if o]
    rules = next(o for o in objects if o["kind"] == "Role")["rules"]
    needed: dict[tuple[str, str], set[str]] = {
        ("", "secrets"): HELM_VERBS,  # Helm's release records
        ("", "pods"): {"get", "list", "watch", "create", "delete"},  # --wait, helm test
        ("", "pods/log"): {"get"},  # helm test --logs
        ("apps", "replicasets"): {"get", "list", "watch"},  # --wait on the Deployment
    }
    for scenario in SCENARIOS:
        for obj in render_scenario(scenario):
            group = obj["apiVersion"].rpartition("/")[0]
            # Hooks (the helm test Pod) are created and deleted, never patched.
            hook = "helm.sh/hook" in obj["metadata"].get("annotations", {})
            verbs = {"get", "list", "watch", "create", "delete"} if hook else HELM_VERBS
            needed.setdefault((group, _plural(obj["kind"])), set()).update(verbs)
    missing = {
        f"{group or 'core'}/{resource}": sorted(verbs - _allowed(rules, group, resource))
        for (group, resource), verbs in needed.items()
        if verbs - _allowed(rules, group, resource)
    }
    assert not missing, f"the deploy Role lacks: {missing}"


# What each kubectl command of deploy.yml (its run: steps and the scripts they call) needs in
# the release namespace. A command missing here fails the test below: add what it needs.
KUBECTL_NEEDS: dict[str, dict[tuple[str, str], set[str]]] = {
    "exec": {("", "pods"): {"get"}, ("", "pods/exec"): {"create"}},
    "get pods": {("", "pods"): {"get", "list"}},
    "port-forward": {
        ("", "services"): {"get"},
        ("", "pods"): {"get", "list"},
        ("", "pods/portforward"): {"create"},
    },
    "rollout status": {
        ("apps", "deployments"): {"get", "list", "watch"},
        ("apps", "replicasets"): {"get", "list", "watch"},
    },
}
_KUBECTL_VALUE_FLAGS = {"-n", "--namespace", "-l", "--selector", "-c", "--container", "-o",
                        "--output", "--timeout", "--field-selector"}  # fmt: skip


def _kubectl_commands() -> dict[str, str]:
    """kubectl subcommands deploy.yml runs, each with where it was found."""
    sources: list[tuple[str, str]] = []
    for name, job in _workflow("deploy.yml")["jobs"].items():
        for step in job.get("steps", []):
            run = str(step.get("run", ""))
            sources.append((f"deploy.yml job {name}", run))
            for script in re.findall(r"\.github/scripts/[\w.-]+", run):
                sources.append((script, (ROOT / script).read_text(encoding="utf-8")))
    found: dict[str, str] = {}
    for where, text in sources:
        lines = text.replace("\\\n", " ").splitlines()
        code = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))
        for match in re.finditer(r"\bkubectl\b([^\n;|&)]*)", code):
            words, skip = [], False
            for word in match[1].split():
                if skip:
                    skip = False
                elif word == "--":
                    break
                elif word in _KUBECTL_VALUE_FLAGS:
                    skip = True
                elif not word.startswith("-"):
                    words.append(word)
            assert words, f"{where}: kubectl without a subcommand: {match[0]}"
            command = " ".join(words[:2]) if words[0] in ("get", "rollout") else words[0]
            found.setdefault(command, where)
    return found


def test_deployer_role_covers_the_kubectl_commands_of_the_deploy_workflow() -> None:
    """`kubectl exec` refused by RBAC left the model canary polling until its timeout."""
    manifest = CHART / "rbac" / "deployer-role.yaml"
    objects = [o for o in yaml.safe_load_all(manifest.read_text(encoding="utf-8")) if o]
    rules = next(o for o in objects if o["kind"] == "Role")["rules"]
    commands = _kubectl_commands()
    # The workflow's own commands, including the canary script's exec.
    assert {"exec", "rollout status", "port-forward"} <= set(commands), commands
    unknown = {c: where for c, where in commands.items() if c not in KUBECTL_NEEDS}
    assert not unknown, f"say in KUBECTL_NEEDS what these need: {unknown}"
    missing = {
        f"kubectl {command} ({commands[command]}): {group or 'core'}/{resource}": sorted(
            verbs - _allowed(rules, group, resource)
        )
        for command in commands
        for (group, resource), verbs in KUBECTL_NEEDS[command].items()
        if verbs - _allowed(rules, group, resource)
    }
    assert not missing, f"the deploy Role lacks: {missing}"
