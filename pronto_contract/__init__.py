"""The contract between training and serving: the model repository and ``model.json``.

The trainer writes through this package; the server, the drift monitor, micro-batching and
the load tests read through it. It imports none of them and nothing heavy (no numpy, no
ONNX Runtime, no scikit-learn), so every process can use it, including the supervisor
before it forks its workers.
"""

from pronto_contract.manifest import (
    SCHEMA_VERSION,
    Manifest,
    ManifestError,
    read_manifest,
    write_manifest,
)
from pronto_contract.repository import (
    MANIFEST_FILE,
    MODEL_FILE,
    VersionPolicy,
    choose_versions,
    commit,
    has_models,
    latest_manifest,
    latest_version,
    list_versions,
    next_version,
    publish_dir,
    published_versions,
    select_versions,
    staging,
    version_dir,
)

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "Manifest",
    "ManifestError",
    "VersionPolicy",
    "choose_versions",
    "commit",
    "has_models",
    "latest_manifest",
    "latest_version",
    "list_versions",
    "next_version",
    "publish_dir",
    "published_versions",
    "read_manifest",
    "select_versions",
    "staging",
    "version_dir",
    "write_manifest",
]
