"""A local Prometheus (Debian's ``prometheus`` binary) loaded with the chart's rule files.

``make monitor`` and the observability tests both start it through :class:`LocalPrometheus`,
so the rules they evaluate are the files the Helm chart ships
(``charts/pronto/files/rules/*.yaml``), never a copy. The configuration is written as JSON,
which Prometheus reads as YAML.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pronto_cli.procs import stop_process, wait_for_http

__all__ = [
    "DASHBOARDS_DIR",
    "RULES_DIR",
    "LocalPrometheus",
    "PrometheusAPI",
    "prometheus_config",
]

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "charts" / "pronto" / "files" / "rules"
DASHBOARDS_DIR = ROOT / "charts" / "pronto" / "files" / "dashboards"


def prometheus_config(
    server_targets: Sequence[str],
    envoy_targets: Sequence[str] = (),
    *,
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
    rules_dir: Path = RULES_DIR,
    pod: str = "local",
) -> dict[str, Any]:
    """Scrape configuration for the server's /metrics and Envoy's /stats/prometheus.

    A ``pod`` label stands in for the one Kubernetes adds, so rules and dashboards that
    aggregate ``by (pod)`` read the same locally as in a cluster.
    """
    jobs: list[dict[str, Any]] = [
        {
            "job_name": "pronto",
            "static_configs": [{"targets": list(server_targets), "labels": {"pod": pod}}],
        }
    ]
    if envoy_targets:
        jobs.append(
            {
                "job_name": "envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": list(envoy_targets), "labels": {"pod": pod}}],
            }
        )
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(rules_dir / "*.yaml")],
        "scrape_configs": jobs,
    }


@dataclass
class PrometheusAPI:
    """The few calls of Prometheus' HTTP API that tests and reports need."""

    url: str

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self.get("/api/v1/query", **params)["result"])

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])

    def values(self, expr: str) -> dict[str, float]:
        """Instant vector as ``{value of the first label that differs: value}``."""
        out: dict[str, float] = {}
        for series in self.query(expr):
            labels = series["metric"]
            key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
            out[key] = float(series["value"][1])
        return out

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts")["alerts"])

    def targets_up(self) -> bool:
        active = self.get("/api/v1/targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@dataclass
class LocalPrometheus:
    """A Prometheus child process with its own data directory; a context manager."""

    config: dict[str, Any]
    port: int = 9095
    host: str = "127.0.0.1"
    workdir: Path | None = None
    retention: str = "2d"
    binary: str = "prometheus"
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api(self) -> PrometheusAPI:
        return PrometheusAPI(self.url)

    def start(self, timeout: float = 60.0) -> LocalPrometheus:
        exe = shutil.which(self.binary)
        if exe is None:
            raise FileNotFoundError(
                f"{self.binary} not found: install Debian's 'prometheus' package (make setup-apt)"
            )
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pronto-prometheus-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config, indent=2))
        log = self.log or self.workdir / "prometheus.log"
        cmd = [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready(timeout, log)
        return self

    def _wait_ready(self, timeout: float, log: Path) -> None:
        assert self.proc is not None
        try:
            wait_for_http(self.port, "/-/ready", timeout, self.proc, self.host)
        except RuntimeError as exc:  # it exited
            raise RuntimeError(f"prometheus: {exc}:\n{log.read_text()}") from None
        except TimeoutError as exc:
            text = log.read_text()  # before stop() removes a temporary workdir
            self.stop()
            raise TimeoutError(f"prometheus: {exc}:\n{text}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
