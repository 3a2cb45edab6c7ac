"""The breaker closes only when everything is healthy, and does close after a restart (issue #9, item 3).

Through the real ccxt against the simulator process. Closing is derived from the streams' current state
(how long each has been connected), never from counted events: a stream that is still failing keeps the
breaker open however many others were restored, and a new process -- whose first connections announce no
restore -- closes a breaker the last one left open once its own streams are healthy and a pass succeeded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.daemon_harness import Daemon
from tests.live_harness import Simulator, wait_until, write_live_config


def _open(doc: dict[str, Any]) -> bool:
    return bool(doc["breaker"]["state"] == "open")


def _closed(doc: dict[str, Any]) -> bool:
    return bool(doc["breaker"]["state"] == "closed")


def _wait_logged(log: Path, text: str) -> None:
    """The breaker's state answers status as soon as it is saved; its log line follows a moment later."""
    wait_until(lambda: text in log.read_text(), 10, f"{text!r} in the daemon's log")


def _outage(sim: Simulator, seconds: float) -> None:
    """Every WebSocket dropped and refused for ``seconds``: both streams are lost, the breaker opens."""
    sim.inject("ws_refuse", seconds=seconds)
    sim.inject("ws_drop")


def test_the_breaker_stays_open_while_market_data_still_fails(tmp_path: Path, sim: Simulator) -> None:
    """After an outage the user stream is back (restored, reconciled) but every market-data frame is garbage:
    the breaker stays open (auto_close_after is 2 s); once market data is healthy too, it closes."""
    log = tmp_path / "daemon.log"
    daemon = Daemon(write_live_config(tmp_path, sim), log)
    daemon.wait_trading(timeout=60)
    sim.inject("ws_malformed", stream="public", times=10**7)
    _outage(sim, 6)
    daemon.wait_for(_open, timeout=60)
    wait_until(lambda: "reconciliation (reconnect:user-" in log.read_text(), 60, "the user stream back and reconciled")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert _open(daemon.status()), "closed while market data was still failing"
        time.sleep(0.2)
    assert daemon.status()["breaker"]["streams_healthy_for_s"] is None
    sim.clear()
    doc = daemon.wait_for(_closed, timeout=120)
    daemon.wait_for(lambda d: not any(s["halted"] for s in d["strategies"]), timeout=10)  # RESUME_SIGNALS arrived
    assert doc["breaker"]["streams_healthy_for_s"] >= 2
    _wait_logged(log, "circuit breaker CLOSED: every stream healthy for")
    assert daemon.stop() == 0, daemon.log_tail()


def test_an_open_breaker_closes_by_itself_after_a_restart(tmp_path: Path, sim: Simulator) -> None:
    """Stopped while the breaker was open (automatic), the daemon restarts with it open -- and closes it once
    every stream has been healthy for auto_close_after and a reconciliation succeeded."""
    log = tmp_path / "daemon.log"
    config = write_live_config(tmp_path, sim)
    daemon = Daemon(config, log)
    daemon.wait_trading(timeout=60)
    _outage(sim, 600)
    daemon.wait_for(_open, timeout=60)
    assert daemon.stop() == 0, daemon.log_tail()
    sim.clear()
    daemon = Daemon(config, log)
    doc = daemon.wait_trading(timeout=60)
    assert _open(doc) and not doc["breaker"]["manual"]
    daemon.wait_for(_closed, timeout=60)
    _wait_logged(log, "circuit breaker CLOSED: every stream healthy for")
    assert daemon.stop() == 0, daemon.log_tail()
