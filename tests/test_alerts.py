"""Critical alerts reach the journal (CRIT) and a real Apprise JSON webhook on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.daemon_harness import write_config


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[str]:
    """A JSON webhook on 127.0.0.1 that records what Apprise posts."""
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _config_with_alerts(tmp_path: Path, url: str) -> Path:
    config = write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["alerts"] = {"apprise_urls": [url]}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def test_alert_command_reaches_the_webhook_and_logs_critical(tmp_path: Path, webhook: str) -> None:
    """`s1mpled alert --unit X` (systemd's OnFailure=) posts the alert and logs it at CRITICAL."""
    config = _config_with_alerts(tmp_path, webhook)
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "alert", "--config", str(config), "--unit", "s1mpled.service"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "CRITICAL s1mpled.alerts: ALERT: s1mpled.service failed" in out.stderr
    assert len(_Hook.received) == 1 and "s1mpled.service failed" in _Hook.received[0]["message"]


def test_halt_sends_the_alert_from_the_running_daemon(tmp_path: Path, webhook: str) -> None:
    """Opening the breaker (here by `s1mpled halt`) alerts every configured URL."""
    from tests.daemon_harness import Daemon

    config = _config_with_alerts(tmp_path, webhook)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()
    subprocess.run(
        [sys.executable, "-m", "s1mpled", "halt", "--config", str(config), "--reason", "maintenance"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    daemon.wait_for(lambda d: bool(_Hook.received), timeout=60)
    assert "circuit breaker OPEN: maintenance" in _Hook.received[0]["message"]
    assert daemon.stop() == 0


def test_undeliverable_alert_exits_non_zero_but_is_in_the_journal(tmp_path: Path) -> None:
    """A dead webhook fails the alert command (systemd shows it) after the CRITICAL line was logged."""
    config = _config_with_alerts(tmp_path, "json://127.0.0.1:9/")
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "alert", "--config", str(config), "--message", "test"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "ALERT: test" in out.stderr and "alert delivery failed" in out.stderr


def test_alert_still_reaches_the_journal_when_the_config_is_broken(tmp_path: Path) -> None:
    """OnFailure= also fires for a bad config (exit 78): the alert then goes to the journal, exit 0."""
    config = tmp_path / "broken.yaml"
    config.write_text("operation: [unclosed\n")
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "alert", "--config", str(config), "--unit", "s1mpled.service"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ALERT: s1mpled.service failed and is not being restarted" in out.stderr
    assert "configuration error" in out.stderr and str(config) in out.stderr


def test_an_alert_can_carry_its_own_event_field(caplog: pytest.LogCaptureFixture) -> None:
    """send(message, event=...) logs the one CRITICAL line with that EVENT (the disk-full alert is findable by it)."""
    import asyncio
    import logging

    from s1mpled.alerts import Alerter

    with caplog.at_level(logging.CRITICAL, "s1mpled.alerts"):
        assert asyncio.run(Alerter(()).send("disk full: ...", event="STATE_DISK_FULL"))
    [record] = caplog.records
    assert (record.getMessage(), getattr(record, "EVENT", None)) == ("ALERT: disk full: ...", "STATE_DISK_FULL")
