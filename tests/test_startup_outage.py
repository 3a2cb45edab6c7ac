"""An exchange that does not answer at start (issue #9, item 1): the live daemon waits it out instead of exiting.

Through the real ccxt against the simulator process: recovery A (markets, key check) and B (reconciliation)
are retried with capped backoff, nothing trades meanwhile, systemd is told what happens (STATUS, and
EXTEND_TIMEOUT_USEC with every retry, so its start timeout cannot kill a daemon that is still trying),
``s1mpled status`` answers, an alert goes out after ``startup.alert_after``, and trading starts as soon as
the exchange answers again.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import yaml

from s1mpled.render import format_status
from tests.daemon_harness import Daemon
from tests.live_harness import Simulator, wait_until, write_live_config
from tests.test_systemd_notify import NotifySocket


def _config(tmp_path: Path, sim: Simulator, **sections: Any) -> Path:
    path = write_live_config(tmp_path, sim)
    doc = yaml.safe_load(path.read_text())
    doc.update(sections)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _daemon(tmp_path: Path, sim: Simulator, notify: NotifySocket, **sections: Any) -> Daemon:
    return Daemon(_config(tmp_path, sim, **sections), tmp_path / "daemon.log", {"NOTIFY_SOCKET": str(notify.path)})


def _our_orders(sim: Simulator) -> list[str]:
    return [cid for cid in sim.state()["orders"] if cid.startswith("s1")]


def _extensions(notify: NotifySocket) -> list[int]:
    return [int(m.split("=", 1)[1]) for m in notify.lines() if m.startswith("EXTEND_TIMEOUT_USEC=")]


def test_an_unreachable_exchange_in_recovery_a_is_waited_for_then_traded(
    tmp_path: Path, sim: Simulator, notify: NotifySocket
) -> None:
    """Every REST call answered 503 at start: the daemon keeps running and not trading, says so (STATUS,
    EXTEND_TIMEOUT_USEC per retry, ``status``), and trades once the exchange answers again."""
    sim.inject("http_error", seconds=8, status=503)
    started = time.monotonic()
    daemon = _daemon(tmp_path, sim, notify)
    doc = daemon.wait_for(lambda d: "waiting" in d, timeout=30)
    assert doc["phase"] == "loading-state"
    assert doc["summary"].startswith("recovery A: exchange unreachable since "), doc
    assert ", retry " in doc["summary"] and "ExchangeNotAvailable" in doc["waiting"]["last_error"]
    assert "breaker" not in doc  # nothing built before the exchange answered
    assert "\nnot trading: recovery A: exchange unreachable since " in format_status(doc)
    daemon.wait_trading(timeout=60)
    assert time.monotonic() - started >= 7  # it waited the outage out
    lines = notify.lines()
    waits = [m for m in lines if m.startswith("STATUS=recovery A: exchange unreachable since ")]
    assert waits and all(", retry " in m for m in waits), lines
    assert lines.index(waits[0]) < lines.index("READY=1")
    # one try may take TimeoutStartSec's 120 s, plus the wait before it (at most a minute)
    assert _extensions(notify) and all(120_000_000 <= usec <= 180_000_000 for usec in _extensions(notify))
    wait_until(lambda: len(_our_orders(sim)) >= 2, 60, "orders once the exchange answers")
    text = (tmp_path / "daemon.log").read_text()
    assert "recovery A: the exchange answers again after" in text
    assert daemon.stop() == 0, daemon.log_tail()


def test_an_unreachable_exchange_in_recovery_b_never_trades_unreconciled(
    tmp_path: Path, sim: Simulator, notify: NotifySocket
) -> None:
    """The key check passes but the reconciliation's requests fail: B is retried, no order is placed before
    it succeeds, and trading starts right after."""
    sim.inject("http_error", seconds=8, status=503, path="openOrders")
    daemon = _daemon(tmp_path, sim, notify)
    doc = daemon.wait_for(lambda d: "waiting" in d and d["phase"] == "reconciling", timeout=30)
    assert doc["summary"].startswith("recovery B: exchange unreachable since "), doc
    assert doc["breaker"]["state"] == "closed" and doc["last_reconciliation"]["passes"] == 0
    assert _our_orders(sim) == []
    daemon.wait_trading(timeout=60)
    assert daemon.status()["last_reconciliation"]["passes"] >= 1
    assert any(m.startswith("STATUS=recovery B: exchange unreachable since ") for m in notify.lines())
    wait_until(lambda: len(_our_orders(sim)) >= 2, 60, "orders once reconciled")
    assert daemon.stop() == 0, daemon.log_tail()


def test_a_long_wait_at_start_alerts_once_and_says_when_trading_begins(
    tmp_path: Path, sim: Simulator, notify: NotifySocket
) -> None:
    """startup.alert_after: not trading that long after the start sends one critical alert (and one more once
    trading begins)."""
    sim.inject("http_error", seconds=6, status=503)
    daemon = _daemon(tmp_path, sim, notify, startup={"alert_after": "1s"})
    daemon.wait_trading(timeout=60)
    assert daemon.stop() == 0, daemon.log_tail()
    alerts = [line for line in (tmp_path / "daemon.log").read_text().splitlines() if "ALERT:" in line]
    assert len(alerts) == 2, alerts
    assert "ALERT: s1mpled live-test is not trading" in alerts[0]
    assert "after its start: recovery A: exchange unreachable since" in alerts[0]
    assert "ALERT: s1mpled live-test is trading now" in alerts[1]


def test_sigterm_while_waiting_for_the_exchange_exits_0_at_once(
    tmp_path: Path, sim: Simulator, notify: NotifySocket
) -> None:
    """A stop requested while recovery waits for the exchange is a clean, prompt exit (0), not a failure."""
    sim.inject("http_error", seconds=120, status=503)
    daemon = _daemon(tmp_path, sim, notify)
    daemon.wait_for(lambda d: "waiting" in d, timeout=30)
    asked = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log_tail()
    assert time.monotonic() - asked < 5


def test_the_user_stream_wait_extends_the_start_timeout(tmp_path: Path, sim: Simulator, notify: NotifySocket) -> None:
    """WebSockets refused at start: while the user stream has not confirmed its subscription, every tick of
    the wait extends systemd's start timeout and says what it waits for; then the daemon trades."""
    sim.inject("ws_refuse", seconds=13)
    daemon = _daemon(tmp_path, sim, notify)
    notify.wait_for("EXTEND_TIMEOUT_USEC=*", timeout=30)
    doc = daemon.status()
    assert doc["phase"] == "subscribing"
    assert doc["summary"].startswith("subscribing: the user stream has not confirmed its subscription since "), doc
    assert "failed attempt(s)" in doc["summary"]
    daemon.wait_trading(timeout=60)
    assert any(m.startswith("STATUS=subscribing: the user stream has not confirmed") for m in notify.lines())
    assert daemon.stop() == 0, daemon.log_tail()
