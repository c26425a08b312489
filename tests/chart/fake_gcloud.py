"""A stand-in for the three ``gcloud storage`` calls the model-fetch init container makes
(``ls``, ``cat``, ``cp --recursive``), over a local folder that plays the bucket. It lets
the init container's script run here, on the exact text the chart renders; the real
gcloud and GCS are not reachable from the test machine.

Usage as an executable: ``FAKE_GCS_ROOT=<dir> gcloud storage <verb> ...`` where
``gs://<bucket>/<path>`` maps to ``<dir>/<bucket>/<path>``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _local(url: str) -> Path:
    if not url.startswith("gs://"):
        raise SystemExit(f"ERROR: not a gs:// URL: {url}")
    return Path(os.environ["FAKE_GCS_ROOT"]) / url.removeprefix("gs://")


def main(argv: list[str]) -> int:
    if argv[:1] != ["storage"] or len(argv) < 3:
        print(f"ERROR: unsupported: gcloud {' '.join(argv)}", file=sys.stderr)
        return 2
    verb, args = argv[1], [a for a in argv[2:] if not a.startswith("--")]
    if verb == "ls":
        folder = _local(args[0])
        if not folder.is_dir() or not any(folder.iterdir()):
            print(f"ERROR: One or more URLs matched no objects: {args[0]}", file=sys.stderr)
            return 1
        base = args[0].rstrip("/")
        for child in sorted(folder.iterdir()):
            print(f"{base}/{child.name}{'/' if child.is_dir() else ''}")
        return 0
    if verb == "cat":
        path = _local(args[0])
        if not path.is_file():
            print(f"ERROR: No URLs matched: {args[0]}", file=sys.stderr)
            return 1
        sys.stdout.write(path.read_text())
        return 0
    if verb == "cp" and "--recursive" in argv:
        source, dest = _local(args[0]), Path(args[1])
        if not source.is_dir():
            print(f"ERROR: No URLs matched: {args[0]}", file=sys.stderr)
            return 1
        shutil.copytree(source, dest / source.name, dirs_exist_ok=True)
        return 0
    print(f"ERROR: unsupported: gcloud {' '.join(argv)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
