"""Alertmanager webhook → GitHub ``repository_dispatch``: an alert starts a training run.

Alertmanager posts its webhook body (``{"version": "4", "groupKey": ..., "status": ...,
"alerts": [...]}``) to ``POST /webhook``. For every *firing* alert the relay sends one
``POST {github_api_url}/repos/{owner}/{repo}/dispatches`` with
``{"event_type": <event type>, "client_payload": {"model": ..., "version": ...,
"alertname": ..., ...}}`` and ``Authorization: Bearer <token>``; the training workflow
listens for that event type.

- Resolved alerts dispatch nothing; nor do alerts without a ``model`` label.
- One dispatch per (group key, model, version) within the cool-down: the several alerts of
  one model (one per metric) start one training, and a flapping alert, which Alertmanager
  re-notifies, starts no second one until the cool-down has passed.
- When GitHub fails (an error status or no answer), the relay answers 502, so Alertmanager
  retries the notification; dispatches that did succeed are not repeated by the retry.

``GET /healthz`` answers 200; ``GET /metrics`` exposes
``pronto_alert_relay_dispatches_total{outcome="sent|failed|deduplicated|skipped"}`` and
``pronto_alert_relay_notifications_total{status="firing|resolved|invalid"}``.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AlertRelay", "AlertRelaySettings", "DispatchError", "make_server", "serve"]

log = logging.getLogger(__name__)

#: largest webhook body accepted (Alertmanager truncates to ``max_alerts`` when configured)
MAX_BODY_BYTES = 4 * 1024 * 1024
#: GitHub accepts at most 10 top-level properties in ``client_payload``
_PAYLOAD_LABELS = ("model", "version", "alertname", "namespace", "severity")


class AlertRelaySettings(BaseSettings):
    """Configuration of ``pronto alert-relay``."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_ALERT_RELAY_", extra="ignore")

    repository: str = Field(
        description="GitHub repository (owner/name) whose workflow receives the dispatch."
    )
    event_type: str = Field(
        "pronto-retrain",
        min_length=1,
        max_length=100,
        description="repository_dispatch event type (the workflow's "
        "`on: repository_dispatch: types: [...]`).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a pod).")
    port: int = Field(9095, ge=0, le=65535, description="Port of the webhook, health and metrics.")
    github_api_url: str = Field(
        "https://api.github.com",
        description="GitHub REST API base URL (GitHub Enterprise: https://HOST/api/v3).",
    )
    token_file: Path | None = Field(
        None,
        description="File holding the GitHub token (fine-grained: Contents read/write on "
        "the repository); read at every dispatch, so a rotated Secret is picked up.",
    )
    token: SecretStr | None = Field(
        None, description="GitHub token, when no token file is given (prefer the variable)."
    )
    cool_down_seconds: float = Field(
        21600.0,
        ge=0,
        description="Seconds during which a second firing notification for the same group "
        "and model starts no second training.",
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one GitHub API call.")

    @field_validator("repository")
    @classmethod
    def _owner_and_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", value):
            raise ValueError("repository must be owner/name")
        return value

    def read_token(self) -> str:
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        if self.token is not None:
            return self.token.get_secret_value()
        raise ValueError("no GitHub token: set --token-file or PRONTO_ALERT_RELAY_TOKEN")


class DispatchError(Exception):
    """GitHub did not accept a dispatch."""


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.dispatches = Counter(
            "pronto_alert_relay_dispatches",
            "repository_dispatch calls for firing alerts, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.notifications = Counter(
            "pronto_alert_relay_notifications",
            "Alertmanager webhook notifications received, by status.",
            ["status"],
            registry=self.registry,
        )
        for outcome in ("sent", "failed", "deduplicated", "skipped"):
            self.dispatches.labels(outcome)
        for status in ("firing", "resolved", "invalid"):
            self.notifications.labels(status)


def _github_post(url: str, token: str, body: bytes, timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": "pronto-alert-relay",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode("utf-8", "replace")
        raise DispatchError(f"GitHub answered {exc.code}: {detail}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise DispatchError(f"GitHub unreachable: {exc}") from exc


class AlertRelay:
    """Turns Alertmanager notifications into dispatches (transport-free, thread-safe)."""

    def __init__(
        self,
        settings: AlertRelaySettings,
        post: Callable[[str, str, bytes, float], None] = _github_post,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.url = f"{settings.github_api_url.rstrip('/')}/repos/{settings.repository}/dispatches"
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        #: dedup key -> when its dispatch succeeded (or started, while in flight)
        self._sent: dict[tuple[str, str, str], float] = {}
        self.metrics = _Metrics()

    def payload(self, notification: Mapping[str, Any], alert: Mapping[str, Any]) -> bytes:
        labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
        client: dict[str, Any] = {k: labels.get(k, "") for k in _PAYLOAD_LABELS}
        client.update(
            labels=labels,
            starts_at=str(alert.get("startsAt", "")),
            group_key=str(notification.get("groupKey", "")),
            external_url=str(notification.get("externalURL", "")),
        )
        return json.dumps(
            {"event_type": self.settings.event_type, "client_payload": client}
        ).encode()

    def handle(self, notification: Mapping[str, Any]) -> tuple[int, int]:
        """Dispatch the firing alerts of one notification: (sent, failed)."""
        alerts = notification.get("alerts") or ()
        firing = [a for a in alerts if a.get("status") == "firing"]
        self.metrics.notifications.labels("firing" if firing else "resolved").inc()
        group = str(notification.get("groupKey", ""))
        todo: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        for alert in firing:
            labels = alert.get("labels") or {}
            if not labels.get("model"):  # nothing to retrain: a route sent the wrong alert
                self.metrics.dispatches.labels("skipped").inc()
                log.warning("alert relay: %s has no model label, not dispatched",
                            labels.get("alertname"))  # fmt: skip
                continue
            key = (group, str(labels["model"]), str(labels.get("version", "")))
            todo.setdefault(key, alert)
        sent = failed = 0
        for key, alert in todo.items():
            if not self._reserve(key):
                self.metrics.dispatches.labels("deduplicated").inc()
                log.info("alert relay: %s for %s v%s within cool-down, not dispatched",
                         alert.get("labels", {}).get("alertname"), key[1], key[2])  # fmt: skip
                continue
            try:
                token = self.settings.read_token()
                self._post(self.url, token, self.payload(notification, alert),
                           self.settings.timeout_seconds)  # fmt: skip
            except (DispatchError, OSError, ValueError) as exc:
                self._release(key)
                self.metrics.dispatches.labels("failed").inc()
                log.warning("alert relay: dispatch for %s v%s failed: %s", key[1], key[2], exc)
                failed += 1
            else:
                self.metrics.dispatches.labels("sent").inc()
                log.info("alert relay: dispatched %s for %s v%s", self.settings.event_type,
                         key[1], key[2])  # fmt: skip
                sent += 1
        return sent, failed

    def _reserve(self, key: tuple[str, str, str]) -> bool:
        now = self._clock()
        with self._lock:
            last = self._sent.get(key)
            if last is not None and now - last < self.settings.cool_down_seconds:
                return False
            self._sent[key] = now
            # forget keys whose cool-down is over, so the table stays small
            cool = self.settings.cool_down_seconds
            for old in [k for k, t in self._sent.items() if now - t >= cool and k != key]:
                del self._sent[old]
            return True

    def _release(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._sent.pop(key, None)


class _Handler(BaseHTTPRequestHandler):
    server: _RelayServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("alert relay: " + format, *args)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, **fields: Any) -> None:
        self._reply(status, json.dumps(fields).encode())

    def do_GET(self) -> None:
        relay = self.server.relay
        if self.path == "/healthz":
            self._reply(200, b"ok\n", "text/plain")
        elif self.path == "/metrics":
            self._reply(200, generate_latest(relay.metrics.registry), CONTENT_TYPE_LATEST)
        else:
            self._json(404, error="not found")

    def do_POST(self) -> None:
        relay = self.server.relay
        if self.path != "/webhook":
            self._json(404, error="not found: post Alertmanager webhooks to /webhook")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, error="body too large or unsized")
            return
        try:
            notification = json.loads(self.rfile.read(length))
            alerts = notification.get("alerts", []) if isinstance(notification, dict) else None
            if not isinstance(alerts, list) or not all(
                isinstance(a, dict) and isinstance(a.get("labels", {}), dict) for a in alerts
            ):
                raise ValueError("not an Alertmanager webhook body")
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
            relay.metrics.notifications.labels("invalid").inc()
            self._json(400, error=f"invalid webhook body: {exc}")
            return
        sent, failed = relay.handle(notification)
        if failed:
            # Alertmanager retries a notification answered with 5xx
            self._json(502, error="GitHub did not accept the dispatch", sent=sent, failed=failed)
        else:
            self._json(200, sent=sent)


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], relay: AlertRelay) -> None:
        self.relay = relay
        super().__init__(address, _Handler)


def make_server(settings: AlertRelaySettings, relay: AlertRelay | None = None) -> _RelayServer:
    """A bound server (port 0 picks a free one: ``server.server_address``)."""
    return _RelayServer((settings.host, settings.port), relay or AlertRelay(settings))


def serve(settings: AlertRelaySettings) -> int:
    """Run until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings.read_token()  # fail at start, not at the first alert
    server = make_server(settings)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host, port = server.server_address[:2]
    log.info("alert relay: listening on %s:%s, dispatching %r to %s", host, port,
             settings.event_type, settings.repository)  # fmt: skip
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0
