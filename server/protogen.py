"""Post-process protoc output into an importable package.

protoc writes absolute imports (``from inference import grpc_service_pb2``)
that only resolve when the output folder is on ``sys.path``. Rewriting them to
``server.generated.*`` keeps the stubs inside one package of the distribution.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["fix_package"]

_OWN_PACKAGES = ("inference", "pronto")
_HEADER = '"""Generated from proto/ by `make proto`. Do not edit."""\n'


def fix_package(root: Path, package: str = "server.generated") -> None:
    """Rewrite imports of our own protos under ``root`` and add ``__init__`` files."""
    pattern = re.compile(rf"^(import|from) ({'|'.join(_OWN_PACKAGES)})((?:\.\w+)*)( |$)", re.M)
    for path in sorted(root.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        fixed = pattern.sub(
            lambda m: f"{m.group(1)} {package}.{m.group(2)}{m.group(3)}{m.group(4)}", text
        )
        if fixed != text:
            path.write_text(fixed)
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text(_HEADER)
    (root / "py.typed").touch()


if __name__ == "__main__":
    fix_package(Path(sys.argv[1]))
