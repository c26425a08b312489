"""Reference renderings kept in the repository, so a template change shows up in review.

``python -m gateway.reference`` rewrites them; ``tests/gateway/test_render.py`` fails when
they differ from what the template renders now. They document the two ways the template
is used: a local run and the Helm chart's sidecar (see ``docs/gateway.md``).
"""

from __future__ import annotations

from pathlib import Path

from gateway.render import render
from gateway.settings import GatewaySettings

__all__ = ["PROFILES", "REFERENCE_DIR", "expected", "main"]

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

# Explicit values only, so the environment of whoever runs this cannot leak in.
PROFILES: dict[str, tuple[dict[str, object], str]] = {
    # `pronto up` / `pronto gateway` on a laptop: no auth, two workers on loopback.
    "envoy-local.yaml": (
        {"workers": 2, "envoy_concurrency": 2, "listen_address": "127.0.0.1"},
        "/tmp/pronto-envoy/pronto.pb",
    ),
    # The chart's sidecar, rendered by the init container into /etc/envoy.
    "envoy-chart.yaml": (
        {
            "workers": 2,
            "envoy_concurrency": 2,
            "listen_address": "0.0.0.0",
            "jwt_jwks_file": "/etc/pronto/auth/jwks.json",
            "jwt_issuer": "https://issuer.example.com",
            "jwt_audiences": ["pronto"],
            "require_auth": True,
            "rate_limit_rps": 2000,
            "rate_limit_burst": 4000,
        },
        "/etc/envoy/pronto.pb",
    ),
}


def expected(name: str) -> str:
    values, descriptor = PROFILES[name]
    base = {
        name: field.get_default(call_default_factory=True)
        for name, field in GatewaySettings.model_fields.items()
    }
    settings = GatewaySettings.model_construct(**(base | values))
    return render(settings, descriptor)


def main() -> None:
    REFERENCE_DIR.mkdir(exist_ok=True)
    for name in PROFILES:
        (REFERENCE_DIR / name).write_text(expected(name))
        print(REFERENCE_DIR / name)


if __name__ == "__main__":
    main()
