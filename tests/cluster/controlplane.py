"""A Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

Enough of a cluster for ``helm install``/``upgrade``/``rollback`` to meet real admission,
defaulting, Pod Security, RBAC and the Deployment controller. There is no kubelet, scheduler
or container runtime, so pods are admitted and created but stay Pending.

The binaries are built from the Go module proxy at pinned versions (``go/kubernetes`` and
``go/etcd`` hold the wrapper modules and their ``go.sum``) into
``$XDG_CACHE_HOME/pronto/controlplane/<versions>-<hash>/`` once, then reused.

Usable without pytest::

    python tests/cluster/controlplane.py build
    python tests/cluster/controlplane.py start --dir /tmp/cp   # prints the kubeconfig path
    python tests/cluster/controlplane.py stop --dir /tmp/cp
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pronto_cli.procs import free_port as _free_port

__all__ = [
    "ADMIN_TOKEN",
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "ControlPlane",
    "binaries",
    "running",
]

KUBERNETES_VERSION = "v1.34.3"
ETCD_VERSION = "v3.6.16"
GO_DIR = Path(__file__).resolve().parent / "go"
ADMIN_TOKEN = "pronto-rehearsal-admin"  # loopback-only throwaway cluster
CONTROLLER_MANAGER_TOKEN = "pronto-rehearsal-controller-manager"
PR_SET_PDEATHSIG = 1
KUBE_TOOLS = ("kube-apiserver", "kube-controller-manager", "kubectl")
# No kubelet, no cloud: leave out every controller that manages nodes, cloud resources or
# volumes on nodes; the workload controllers (deployment, replicaset, disruption, HPA,
# garbage collector, namespace, service accounts) are what a chart upgrade exercises.
DISABLED_CONTROLLERS = (
    "node-ipam-controller",
    "node-lifecycle-controller",
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",
    "taint-eviction-controller",
    "persistentvolume-attach-detach-controller",
)


def _ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    # Without these the binaries report v0.0.0-master, which a chart's kubeVersion refuses.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pronto" / "controlplane"


def build_dir() -> Path:
    """Cache directory for this set of pins: versions plus a hash of the module files."""
    digest = hashlib.sha256(_ldflags().encode())
    for name in ("kubernetes/go.mod", "kubernetes/go.sum", "etcd/go.mod", "etcd/go.sum"):
        digest.update((GO_DIR / name).read_bytes())
    key = f"kubernetes-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-{digest.hexdigest()[:12]}"
    return cache_root() / key


def binaries(log: bool = True) -> Path:
    """Return the bin directory, building the pinned binaries first if it is not cached."""
    target = build_dir()
    if (target / "bin" / ".complete").is_file():
        return target / "bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        # Another process (a second test session, `make cluster-rehearse`) may be building.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "bin" / ".complete").is_file():
            return target / "bin"
        go = shutil.which("go")
        if go is None:
            raise RuntimeError("the control plane is built with Go (>= 1.26): install it first")
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        env = {**os.environ, "GOFLAGS": "-mod=readonly -trimpath -buildvcs=false"}
        started = time.monotonic()
        jobs = [("etcd", "etcd", "go.etcd.io/etcd/server/v3", "-s -w")]
        jobs += [(t, "kubernetes", f"k8s.io/kubernetes/cmd/{t}", _ldflags()) for t in KUBE_TOOLS]
        for name, module, package, ldflags in jobs:
            if log:
                print(f"controlplane: building {name} ({package})", file=sys.stderr, flush=True)
            subprocess.run(
                [
                    "nice",
                    "-n",
                    "10",
                    go,
                    "build",
                    "-ldflags",
                    ldflags,
                    "-o",
                    str(staging / name),
                    package,
                ],
                cwd=GO_DIR / module,
                env=env,
                check=True,
            )
        (staging / ".complete").write_text(f"{time.monotonic() - started:.0f}s\n")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        staging.rename(target / "bin")
        if log:
            print(
                f"controlplane: built in {time.monotonic() - started:.0f}s into {target}",
                file=sys.stderr,
                flush=True,
            )
    return target / "bin"


def _kubeconfig(server: str, ca: Path, token: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "rehearsal", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "rehearsal", "context": {"cluster": "rehearsal", "user": "user"}}],
        "current-context": "rehearsal",
    }
    return json.dumps(config, indent=2)


@dataclass
class ControlPlane:
    """One running control plane; ``workdir`` holds its data, keys, logs and kubeconfig."""

    workdir: Path
    bin: Path
    api_port: int = 0
    # Linux: the processes get SIGTERM when the process that started them dies, even by
    # SIGKILL. Off for the `start` command, whose processes outlive it on purpose.
    tie_to_parent: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> Path:
        return self.workdir / "pki" / "apiserver.crt"

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        """Run kubectl as the admin; return stdout, raise with stderr on failure."""
        proc = subprocess.run(
            [
                str(self.bin / "kubectl"),
                "--kubeconfig",
                str(self.kubeconfig),
                f"--cache-dir={self.workdir / 'kube-cache'}",
                *args,
            ],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, ["kubectl", *args], proc.stdout, proc.stderr
            )
        return proc.stdout

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        # A process group of its own: stop() signals the group, and Ctrl-C in a terminal
        # reaches it only through stop().
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.tie_to_parent else None,
        )
        self.processes[name] = proc
        (self.workdir / f"{name}.pid").write_text(f"{proc.pid}\n")

    def _wait_healthy(self, name: str, url: str, token: str | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            request = urllib.request.Request(url)
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                if name == "kube-apiserver":
                    # Verified against the CA the API server writes into --cert-dir at start.
                    context = ssl.create_default_context(cafile=str(self.ca))
                else:
                    # The controller manager's own self-signed serving certificate.
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{name} not healthy at {url} after {timeout:.0f}s: {last}")

    def start(self, timeout: float = 120) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        sa_key = pki / "sa.key"
        if not sa_key.exists():
            subprocess.run(
                [
                    "openssl",
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    str(sa_key),
                ],
                check=True,
                capture_output=True,
            )
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{ADMIN_TOKEN},admin,admin,"system:masters"\n'
            f"{CONTROLLER_MANAGER_TOKEN},system:kube-controller-manager,"
            "system:kube-controller-manager\n"
        )
        etcd_client, etcd_peer = _free_port(), _free_port()
        self.api_port = _free_port()
        cm_port = _free_port()
        self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=rehearsal",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=rehearsal=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # throwaway data; fsync latency only slows the tests
                "--log-level=warn",
            ],
        )
        self._wait_healthy("etcd", f"http://127.0.0.1:{etcd_client}/health", None, timeout)
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={pki}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                # The default reconciler would publish 127.0.0.1 as the `kubernetes` Service's
                # endpoint, which Endpoints validation refuses (loopback), every 10 s.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )
        self._wait_healthy("kube-apiserver", f"{self.server}/readyz", ADMIN_TOKEN, timeout)
        self.kubeconfig.write_text(_kubeconfig(self.server, self.ca, ADMIN_TOKEN))
        cm_kubeconfig = self.workdir / "controller-manager.kubeconfig"
        cm_kubeconfig.write_text(_kubeconfig(self.server, self.ca, CONTROLLER_MANAGER_TOKEN))
        controllers = ",".join(["*", *(f"-{c}" for c in DISABLED_CONTROLLERS)])
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--cert-dir={self.workdir / 'pki-cm'}",
                "--leader-elect=false",
                f"--controllers={controllers}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={self.ca}",
                "--use-service-account-credentials=true",
                # The HPA reaches minReplicas within a second instead of 15 s.
                "--horizontal-pod-autoscaler-sync-period=1s",
            ],
        )
        self._wait_healthy(
            "kube-controller-manager", f"https://127.0.0.1:{cm_port}/healthz", None, timeout
        )
        (self.workdir / "env").write_text(f"KUBECONFIG={self.kubeconfig}\nKUBE_BIN={self.bin}\n")

    def stop(self, grace: float = 10) -> None:
        """Stop in reverse start order: SIGTERM each process group, SIGKILL after ``grace``."""
        for name in reversed(list(self.processes)):
            _stop_group(self.processes[name].pid, grace)
            self.processes[name].wait()
            (self.workdir / f"{name}.pid").unlink(missing_ok=True)
        self.processes.clear()


def _die_with_parent() -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_group(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        # A child of ours stays a zombie (group still "exists") until reaped.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop_dir(workdir: Path, grace: float = 10) -> None:
    """Stop a control plane started by another process, from the pid files in ``workdir``."""
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        pidfile = workdir / f"{name}.pid"
        if pidfile.exists():
            _stop_group(int(pidfile.read_text()), grace)
            pidfile.unlink()


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[ControlPlane]:
    """Build (or reuse) the binaries, start a control plane, and always stop it."""
    plane = ControlPlane(workdir=workdir, bin=binaries())
    # atexit covers an interpreter that exits without unwinding this context (os._exit
    # and SIGKILL aside, which the process groups' own fate then decides).
    atexit.register(plane.stop)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        atexit.unregister(plane.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the pinned binaries into the cache (once)")
    start = sub.add_parser("start", help="start on free loopback ports; print the kubeconfig")
    start.add_argument("--dir", type=Path, required=True, help="working directory (data, logs)")
    stop = sub.add_parser("stop", help="stop the control plane started in --dir")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(binaries())
    elif args.command == "start":
        plane = ControlPlane(workdir=args.dir.resolve(), bin=binaries(), tie_to_parent=False)
        try:
            plane.start()
        except BaseException:
            plane.stop()
            raise
        # The processes run in their own sessions and outlive this command; `stop` ends them.
        print(plane.kubeconfig)
    else:
        stop_dir(args.dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
