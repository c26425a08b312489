"""Start ``pronto serve`` from Python: in this process, or as a child process.

``pronto up`` and tests use :func:`spawn_server`, which runs the supervisor in its own
process (it installs signal handlers and forks, which a caller's process should not
inherit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from server.settings import ServeSettings

__all__ = ["serve", "serve_command", "spawn_server"]


def serve(settings: ServeSettings) -> int:
    """Run the supervisor in this process until SIGTERM/SIGINT; returns the exit status."""
    from server.supervisor import serve as _serve

    return _serve(settings)


def serve_command(settings: ServeSettings) -> list[str]:
    """The ``python -m server.cli serve ...`` command line for ``settings``."""
    cmd = [sys.executable, "-m", "server.cli", "serve"]
    for name, value in settings.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            cmd.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            cmd += [flag, *map(str, value)]
        else:
            cmd += [flag, str(value)]
    return cmd


def spawn_server(settings: ServeSettings, **popen: Any) -> subprocess.Popen[bytes]:
    """Start the server as a child process; stop it with SIGTERM (it drains, exits 0)."""
    env = popen.pop("env", None) or dict(os.environ)
    return subprocess.Popen(serve_command(settings), env=env, **popen)
