"""``python -m loadtest.monitor`` (``make monitor``): Prometheus for a running local stack.

Scrapes the server's /metrics and Envoy's /stats/prometheus (the ports ``pronto up`` uses by
default) with the chart's rule files, and starts Grafana with the chart's dashboards when a
``grafana-server`` or ``grafana`` binary is installed. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtest.monitor.dashboards import write_grafana_provisioning
from loadtest.monitor.prometheus import RULES_DIR, LocalPrometheus, prometheus_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.monitor", description=__doc__)
    p.add_argument("--server", default="127.0.0.1:9090", help="server /metrics host:port")
    p.add_argument(
        "--envoy", default="127.0.0.1:9902", help="Envoy stats host:port ('' to skip Envoy)"
    )
    p.add_argument("--port", type=int, default=9095, help="Prometheus listen port")
    p.add_argument("--scrape-interval", default="5s", help="scrape and rule evaluation interval")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "pronto-monitor",
        help="Prometheus data and Grafana state, kept between runs (default: %(default)s)",
    )
    p.add_argument("--grafana-port", type=int, default=3000, help="Grafana port, when installed")
    return p


def _start_grafana(workdir: Path, prometheus_url: str, port: int) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("grafana-server") or shutil.which("grafana")
    if exe is None:
        return None
    provisioning = write_grafana_provisioning(workdir / "grafana" / "provisioning", prometheus_url)
    cmd = [exe] if exe.endswith("grafana-server") else [exe, "server"]
    home = next((p for p in (Path("/usr/share/grafana"),) if p.is_dir()), None)
    if home is not None:
        cmd.append(f"--homepath={home}")
    cmd += [
        f"cfg:default.paths.provisioning={provisioning}",
        f"cfg:default.paths.data={workdir / 'grafana' / 'data'}",
        f"cfg:default.server.http_port={port}",
        "cfg:default.auth.anonymous.enabled=true",
        "cfg:default.auth.anonymous.org_role=Admin",
    ]
    log = (workdir / "grafana.log").open("ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = prometheus_config(
        [args.server],
        [args.envoy] if args.envoy else [],
        scrape_interval=args.scrape_interval,
        evaluation_interval=args.scrape_interval,
    )
    workdir = args.data_dir.resolve()
    prometheus = LocalPrometheus(config, port=args.port, workdir=workdir / "prometheus")
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    grafana = None
    with prometheus:
        grafana = _start_grafana(workdir, prometheus.url, args.grafana_port)
        print(
            f"Prometheus  {prometheus.url}  (rules: {RULES_DIR}/*.yaml)\n"
            f"  scraping  {args.server}/metrics"
            + (f", {args.envoy}/stats/prometheus" if args.envoy else "")
            + "\n  alerts    "
            + f"{prometheus.url}/alerts\n"
            + (
                f"Grafana     http://127.0.0.1:{args.grafana_port} (dashboards in Pronto/)\n"
                if grafana
                else "Grafana     not installed; the dashboards are in charts/pronto/files/"
                "dashboards/ (import them, or install grafana and re-run)\n"
            )
            + "Start the stack with `make run` (or `pronto up`) if it is not running. "
            "Ctrl-C stops monitoring.",
            flush=True,
        )
        try:
            while not stopping and prometheus.proc is not None and prometheus.proc.poll() is None:
                time.sleep(0.5)
        finally:
            if grafana is not None:
                grafana.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    grafana.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
