"""The alert relay: Alertmanager webhook in, GitHub ``repository_dispatch`` out.

In-process tests of the relay's decisions (firing only, one dispatch per model version,
cool-down, 5xx on a GitHub failure), then the real thing: the chart's Alertmanager routing
run by a real ``alertmanager`` that posts to a ``pronto alert-relay`` process, which
dispatches to a local HTTP server standing in for GitHub's API.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.monitoring.alert_relay import (
    AlertRelay,
    AlertRelaySettings,
    DispatchError,
    make_server,
)
from tests.support import free_port, stop_process, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER_CONFIG = ROOT / "charts" / "pronto" / "alerting" / "alertmanager.yaml"
TOKEN = "ghp_test-token-123"


def _alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    base = {"alertname": "ProntoModelQualityDrop", "model": "flight-delay", "version": "3"}
    return {"status": status, "labels": {**base, **labels}, "startsAt": "2026-01-01T00:00:00Z"}


def _notification(*alerts: dict[str, Any], group: str = '{}:{alertname="X"}') -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": group,
        "status": "firing" if firing else "resolved",
        "receiver": "pronto-retrain",
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _Posts:
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail: int = 0

    def __call__(self, url: str, token: str, body: bytes, timeout: float) -> None:
        self.calls.append((url, token, json.loads(body)))
        if self.fail:
            self.fail -= 1
            raise DispatchError("GitHub answered 500")


def _relay(**overrides: Any) -> tuple[AlertRelay, _Posts, _Clock]:
    values: dict[str, Any] = {
        "repository": "acme/pronto",
        "token": TOKEN,
        "github_api_url": "https://github.example/api/v3/",
        "cool_down_seconds": 600,
    }
    settings = AlertRelaySettings(**{**values, **overrides})
    posts, clock = _Posts(), _Clock()
    return AlertRelay(settings, post=posts, clock=clock), posts, clock


def test_firing_alert_becomes_one_dispatch_with_its_labels() -> None:
    relay, posts, _ = _relay()
    assert relay.handle(_notification(_alert(severity="ticket", namespace="prod"))) == (1, 0)
    [(url, token, body)] = posts.calls
    assert url == "https://github.example/api/v3/repos/acme/pronto/dispatches"
    assert token == TOKEN
    assert body["event_type"] == "pronto-retrain"
    payload = body["client_payload"]
    assert (payload["model"], payload["version"], payload["alertname"]) == (
        "flight-delay", "3", "ProntoModelQualityDrop",
    )  # fmt: skip
    assert payload["namespace"] == "prod" and payload["labels"]["severity"] == "ticket"
    assert len(payload) <= 10  # GitHub's limit on client_payload's top-level properties


def test_resolved_alerts_dispatch_nothing() -> None:
    relay, posts, _ = _relay()
    assert relay.handle(_notification(_alert("resolved"))) == (0, 0)
    assert posts.calls == []


def test_alerts_without_a_model_dispatch_nothing() -> None:
    """An alert about no model (a routing mistake) must not start a default training."""
    relay, posts, _ = _relay()
    alert = _alert()
    del alert["labels"]["model"]
    assert relay.handle(_notification(alert)) == (0, 0)
    assert posts.calls == []
    assert relay.metrics.dispatches.labels("skipped")._value.get() == 1


def test_one_dispatch_per_model_version_and_cool_down() -> None:
    """Four metrics of one model are one training; another model is another."""
    relay, posts, clock = _relay()
    alerts = [_alert(metric=m) for m in ("accuracy", "f1", "recall", "roc_auc")]
    alerts.append(_alert(model="churn", version="1"))
    assert relay.handle(_notification(*alerts)) == (2, 0)
    assert sorted(c[2]["client_payload"]["model"] for c in posts.calls) == ["churn", "flight-delay"]
    # Alertmanager re-notifies (flapping, repeat): nothing new within the cool-down
    clock.now += 599
    assert relay.handle(_notification(*alerts)) == (0, 0)
    assert len(posts.calls) == 2
    # a different group (another alert name) is its own decision
    assert relay.handle(_notification(_alert(), group="other")) == (1, 0)
    clock.now += 2
    assert relay.handle(_notification(*alerts)) == (2, 0)
    metrics = relay.metrics.dispatches
    assert metrics.labels("sent")._value.get() == 5
    assert metrics.labels("deduplicated")._value.get() == 2


def test_failed_dispatch_is_retried_not_suppressed() -> None:
    relay, posts, _ = _relay()
    posts.fail = 1
    assert relay.handle(_notification(_alert())) == (0, 1)
    assert relay.handle(_notification(_alert())) == (1, 0)
    assert len(posts.calls) == 2
    assert relay.metrics.dispatches.labels("failed")._value.get() == 1


def test_token_file_is_read_at_each_dispatch(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    relay, posts, _ = _relay(token_file=token, cool_down_seconds=0)
    relay.handle(_notification(_alert()))
    token.write_text("rotated\n")
    relay.handle(_notification(_alert()))
    assert [c[1] for c in posts.calls] == ["first", "rotated"]


def test_settings_reject_a_bad_repository() -> None:
    with pytest.raises(ValueError, match="owner/name"):
        AlertRelaySettings(repository="not a repo", token=TOKEN)


def _http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def test_http_edge_statuses() -> None:
    """Bad bodies are 400 (Alertmanager does not retry those), GitHub failures 502."""
    settings = AlertRelaySettings(repository="acme/pronto", token=TOKEN, port=0)
    relay, posts, _ = _relay()
    server = make_server(settings, relay)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _http(port, "GET", "/healthz")[0] == 200
        assert _http(port, "POST", "/webhook", b"{not json")[0] == 400
        assert _http(port, "POST", "/webhook", b"[1, 2]")[0] == 400
        assert _http(port, "POST", "/webhook", b'{"alerts": [1]}')[0] == 400
        assert _http(port, "POST", "/webhook", b'{"alerts": [{"labels": []}]}')[0] == 400
        assert _http(port, "POST", "/elsewhere", b"{}")[0] == 404
        posts.fail = 1
        status, body = _http(port, "POST", "/webhook", json.dumps(_notification(_alert())).encode())
        assert status == 502 and json.loads(body)["failed"] == 1
        status, body = _http(port, "POST", "/webhook", json.dumps(_notification(_alert())).encode())
        assert status == 200 and json.loads(body) == {"sent": 1}
        text = _http(port, "GET", "/metrics")[1].decode()
        assert 'pronto_alert_relay_dispatches_total{outcome="sent"} 1.0' in text
        assert 'pronto_alert_relay_dispatches_total{outcome="failed"} 1.0' in text
        assert 'pronto_alert_relay_notifications_total{status="invalid"} 4.0' in text
    finally:
        server.shutdown()
        server.server_close()


# -- real Alertmanager, real relay process, GitHub stand-in ---------------------------


class _FakeGitHub(ThreadingHTTPServer):
    """Records every request; answers 500 to the first ``fail`` dispatches, then 204."""

    daemon_threads = True

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.dispatched = threading.Event()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _FakeGitHubHandler)


class _FakeGitHubHandler(BaseHTTPRequestHandler):
    server: _FakeGitHub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        fake = self.server
        with fake.lock:
            fake.requests.append((self.path, dict(self.headers), json.loads(body or b"null")))
            failing = self.path.endswith("/dispatches") and fake.fail > 0
            if failing:
                fake.fail -= 1
        self.send_response(500 if failing else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.path.endswith("/dispatches") and not failing:
            fake.dispatched.set()


def _alertmanager_binary() -> str:
    found = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if found is None:
        pytest.fail("alertmanager is not installed: make setup-apt (prometheus-alertmanager)")
    return found


def _test_config(relay_url: str, sink_url: str) -> dict[str, Any]:
    """The chart's routing with every receiver on loopback and short timers."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        name = receiver["name"]
        url = relay_url if name == "pronto-retrain" else f"{sink_url}/{name}"
        send_resolved = True  # the relay must ignore resolved alerts itself
        receiver.clear()
        receiver.update(name=name, webhook_configs=[{"url": url, "send_resolved": send_resolved}])
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="0s", group_interval="1s")
    return dict(config)


@dataclass
class _Loop:
    github: _FakeGitHub
    alertmanager: int
    relay: int


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[_Loop]:
    github = _FakeGitHub(fail=1)
    threading.Thread(target=github.serve_forever, daemon=True).start()
    github_url = f"http://127.0.0.1:{github.server_address[1]}"
    relay_port, am_port = free_port(), free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = _test_config(f"http://127.0.0.1:{relay_port}/webhook", f"{github_url}/sink")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    relay_cmd = [
        sys.executable, "-m", "pronto_cli", "alert-relay",
        "--port", str(relay_port), "--repository", "acme/pronto",
        "--github-api-url", github_url, "--token-file", str(tmp_path / "token"),
        "--event-type", "pronto-retrain",
    ]  # fmt: skip
    am_cmd = [
        _alertmanager_binary(),
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",  # one instance: no gossip to settle before notifying
        "--log.level=warn",
    ]
    logs = (tmp_path / "relay.log").open("wb"), (tmp_path / "am.log").open("wb")
    procs = [
        subprocess.Popen(relay_cmd, cwd=ROOT, stdout=logs[0], stderr=subprocess.STDOUT),
        subprocess.Popen(am_cmd, stdout=logs[1], stderr=subprocess.STDOUT),
    ]
    try:
        wait_for_http(relay_port, "/healthz", timeout=30, proc=procs[0])
        wait_for_http(am_port, "/-/ready", timeout=30, proc=procs[1])
        yield _Loop(github, am_port, relay_port)
    except Exception:
        for log in logs:
            log.flush()
            print(Path(log.name).read_text(errors="replace"))
        raise
    finally:
        for proc in procs:
            stop_process(proc)
        for log in logs:
            log.close()
        github.shutdown()
        github.server_close()


def _post_alert(port: int, ends_at: datetime | None = None) -> None:
    now = datetime.now(UTC)
    alert = {
        "labels": {
            "alertname": "ProntoModelQualityDrop", "severity": "ticket", "action": "retrain",
            "namespace": "pronto", "model": "flight-delay", "version": "2", "metric": "f1",
        },
        "annotations": {"summary": "f1 fell"},
        "startsAt": (now - timedelta(minutes=20)).isoformat(),
    }  # fmt: skip
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    status, body = _http(port, "POST", "/api/v2/alerts", json.dumps([alert]).encode())
    assert status == 200, body


def _relay_counter(port: int, sample: str) -> float:
    for line in _http(port, "GET", "/metrics")[1].decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.integration
def test_alertmanager_alert_starts_one_training_through_the_relay(loop: _Loop) -> None:
    github = loop.github
    _post_alert(loop.alertmanager)
    # GitHub answers the first dispatch with 500; Alertmanager retries; the retry lands
    assert github.dispatched.wait(60), github.requests
    with github.lock:
        dispatches = [r for r in github.requests if r[0] == "/repos/acme/pronto/dispatches"]
        tickets = [r for r in github.requests if r[0] == "/sink/pronto-ticket"]
    assert len(dispatches) == 2, dispatches  # the failed one and its retry
    for _, headers, body in dispatches:
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Accept"] == "application/vnd.github+json"
        assert body["event_type"] == "pronto-retrain"
        payload = body["client_payload"]
        assert (payload["model"], payload["version"], payload["alertname"]) == (
            "flight-delay", "2", "ProntoModelQualityDrop",
        )  # fmt: skip
    assert _relay_counter(loop.relay, 'pronto_alert_relay_dispatches_total{outcome="failed"}') == 1
    # the same alert also reached the ticket receiver (`continue: true`)
    deadline = time.monotonic() + 30
    while not tickets and time.monotonic() < deadline:
        time.sleep(0.1)
        with github.lock:
            tickets = [r for r in github.requests if r[0] == "/sink/pronto-ticket"]
    assert tickets, "the retrain route swallowed the ticket"

    # the alert resolves: Alertmanager sends it on (send_resolved), the relay dispatches nothing
    _post_alert(loop.alertmanager, ends_at=datetime.now(UTC) - timedelta(seconds=1))
    resolved = 'pronto_alert_relay_notifications_total{status="resolved"}'
    deadline = time.monotonic() + 30
    while _relay_counter(loop.relay, resolved) < 1:
        assert time.monotonic() < deadline, "the resolved notification never reached the relay"
        time.sleep(0.1)
    with github.lock:
        assert len([r for r in github.requests if r[0].endswith("/dispatches")]) == 2
    assert _relay_counter(loop.relay, 'pronto_alert_relay_dispatches_total{outcome="sent"}') == 1
