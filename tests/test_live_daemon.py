"""The daemon in live mode, through the real ccxt, against the exchange simulator process.

Every scenario ends the same way: the daemon is stopped, restarted with the simulator's prices frozen
(so nothing moves while recovery reconciles), stopped again, and its durable books are compared with
the exchange's account: no lost fill, no duplicate order, balances equal to the last unit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import Daemon
from tests.live_harness import (
    Simulator,
    assert_books_equal_exchange,
    assert_no_duplicate_orders,
    read_ledgers,
    wait_until,
    write_live_config,
)


def _fills(sim: Simulator) -> int:
    return sum(1 for t in sim.state()["trades"] if t["client_order_id"].startswith("s1"))


def _verify(tmp_path: Path, sim: Simulator, log: Path, skip_assets: tuple[str, ...] = ()) -> None:
    """Freeze prices, let a fresh start reconcile, stop, and compare the books with the exchange."""
    sim.clear()
    sim.pause_feed(True)
    daemon = Daemon(write_live_config(tmp_path, sim, frozen=True), log)
    daemon.wait_trading(timeout=60)
    daemon.wait_for(_all_settled, timeout=60)  # a request that may still land is settled by a follow-up pass
    daemon.reconcile()  # catches a fill of an order placed at start that the stream had not delivered yet
    assert daemon.stop() == 0, daemon.log_tail()
    ledgers, ex = read_ledgers(tmp_path / "state"), sim.state()
    assert_books_equal_exchange(ledgers, ex, skip_assets)
    assert_no_duplicate_orders(ledgers, ex)


def _all_settled(doc: dict[str, Any]) -> bool:
    return all(o["state"] not in ("pending", "unresolved") for s in doc["strategies"] for o in s["open_orders"])


def _start(tmp_path: Path, sim: Simulator, log: Path, **env: str) -> Daemon:
    config = write_live_config(tmp_path, sim)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Daemon(config, log)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_live_daemon_trades_through_ccxt_and_books_equal_the_exchange(tmp_path: Path, sim: Simulator) -> None:
    """Live mode places, fills and cancels real orders over REST and the WS API; the books stay exact."""
    log = tmp_path / "daemon.log"
    daemon = _start(tmp_path, sim, log)
    daemon.wait_trading(timeout=60)
    wait_until(lambda: _fills(sim) >= 4, 60, "fills on the exchange")
    assert daemon.stop() == 0, daemon.log_tail()
    _verify(tmp_path, sim, log)


def test_invalid_api_key_is_a_clear_config_error_exit_78(tmp_path: Path, sim: Simulator) -> None:
    """A secret the exchange refuses stops the daemon with exit 78 (no restart storm) and a clear message."""
    config = write_live_config(tmp_path, sim, secret="wrong-secret")
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 78, out.stderr
    assert "refused the API key" in out.stderr
    assert "wrong-secret" not in out.stderr


@pytest.mark.parametrize("point", ["order.after_intent", "order.after_send", "fill.before_apply", "fill.after_apply"])
def test_sigkill_during_order_placement_never_duplicates(tmp_path: Path, sim: Simulator, point: str) -> None:
    """SIGKILL before the send, after the exchange accepted (and filled) it, or around applying its fill:
    the restart settles the order by client id -- never a second order -- and the books equal the exchange."""
    log = tmp_path / "daemon.log"
    daemon = _start(tmp_path, sim, log, S1MPLED_FAILPOINTS=point)
    assert daemon.proc.wait(timeout=90) == -signal.SIGKILL, daemon.log_tail()
    daemon = _start(tmp_path, sim, log)
    daemon.wait_trading(timeout=60)
    assert daemon.stop() == 0, daemon.log_tail()
    _verify(tmp_path, sim, log)
    if point != "order.after_intent":
        assert "reconciliation corrected" in log.read_text(), "the crash left nothing to correct: wrong point?"


def test_position_closed_by_hand_while_down_is_corrected_at_startup(tmp_path: Path, sim: Simulator) -> None:
    """Holdings sold on the exchange while the daemon was stopped are removed from the ledger at startup, CRITICAL."""
    log = tmp_path / "daemon.log"
    daemon = _start(tmp_path, sim, log)
    daemon.wait_trading(timeout=60)
    wait_until(lambda: any(t["symbol"] == "BTC/USDT" for t in sim.state()["trades"]), 60, "a DCA buy")
    assert daemon.stop() == 0
    sim.sell_everything_by_hand("BTC/USDT")
    # The hand sale sold the strategy's BTC and the account's own: BTC is checked as "both zero" below.
    _verify(tmp_path, sim, log, skip_assets=("BTC",))
    text = log.read_text()
    assert "reconciliation corrected dca-btc: holdings BTC" in text
    # all that is left is the dust below the lot size the hand sale could not sell (buy fees were in BTC):
    # the strategy's holdings are cut to exactly what the exchange holds
    btc = sim.state()["balances"]["BTC"]
    left = Decimal(btc["free"]) + Decimal(btc["used"])
    assert left < Decimal("0.00001")
    assert read_ledgers(tmp_path / "state")["dca-btc"].snapshot().holdings == left


FAULTS: list[tuple[str, dict[str, Any], str]] = [
    # (fault, parameters, a line the daemon's log must show while it copes)
    ("ws_drop", {}, "reconciliation (reconnect:"),
    ("ws_stall", {"seconds": 6}, "stream failed (no data for 3 s)"),
    ("http_error", {"times": 6, "status": 503}, "ExchangeNotAvailable"),
    ("rate_limit", {"times": 6, "status": 429}, "DDoSProtection"),
    ("delay", {"ms": 3500, "times": 2, "path": "/api/v3/order", "method": "POST"}, "outcome unknown"),
    ("reset", {"times": 4}, "ExchangeNotAvailable"),
    ("lost_response", {"times": 2}, "outcome unknown"),
    ("malformed", {"kind": "html", "times": 4}, "reconciliation ("),
    ("ws_malformed", {"times": 6, "stream": "user"}, "reconciliation ("),
    ("clock_skew", {"ms": 30000}, "InvalidNonce"),
]


@pytest.mark.parametrize(("fault", "params", "evidence"), FAULTS, ids=[f[0] for f in FAULTS])
def test_exchange_faults_are_survived_and_books_stay_exact(
    tmp_path: Path, sim: Simulator, fault: str, params: dict[str, Any], evidence: str
) -> None:
    """Under each fault the daemon keeps running, never doubles an order, and ends with exact books."""
    log = tmp_path / "daemon.log"
    daemon = _start(tmp_path, sim, log)
    daemon.wait_trading(timeout=60)
    wait_until(lambda: _fills(sim) >= 2, 60, "trading before the fault")
    sim.inject(fault, **params)
    wait_until(lambda: evidence in log.read_text(), 60, f"the daemon to meet {fault} ({evidence!r})")
    sim.clear()
    passes = daemon.status()["last_reconciliation"]["passes"]
    daemon.wait_for(lambda d: d["last_reconciliation"]["passes"] >= passes + 2, timeout=60)
    # a short fault may open the breaker (a stall can cost 3 reconnects); stable + reconciled closes it again
    daemon.wait_for(lambda d: d["breaker"]["state"] == "closed" and d["phase"] == "trading", timeout=60)
    assert daemon.stop() == 0, daemon.log_tail()
    _verify(tmp_path, sim, log)


def test_fills_while_disconnected_are_caught_up_after_reconnect(tmp_path: Path, sim: Simulator) -> None:
    """Fills executed while the private stream is down are lost by the exchange's push; reconciliation finds them."""
    log = tmp_path / "daemon.log"
    daemon = _start(tmp_path, sim, log)
    daemon.wait_trading(timeout=60)
    wait_until(lambda: _fills(sim) >= 2, 60, "trading")
    before = _fills(sim)
    sim.inject("ws_refuse", seconds=2.5)
    sim.inject("ws_drop")
    wait_until(lambda: _fills(sim) > before, 60, "a fill while disconnected")
    wait_until(lambda: "reconciliation (reconnect:" in log.read_text(), 60, "reconnect reconciliation")
    assert daemon.stop() == 0
    _verify(tmp_path, sim, log)


def test_long_outage_opens_the_breaker_which_closes_after_stable_and_reconciled(tmp_path: Path, sim: Simulator) -> None:
    """N failed reconnects: CONNECTION_LOST, breaker OPEN (halt, CRITICAL); stable and reconciled: closed."""
    log = tmp_path / "daemon.log"
    daemon = _start(tmp_path, sim, log)
    daemon.wait_trading(timeout=60)
    sim.inject("ws_refuse", seconds=6)
    sim.inject("ws_drop")
    daemon.wait_for(lambda d: d["breaker"]["state"] == "open", timeout=60)
    # HALT_NEW_SIGNALS reaches each strategy through the bus, a moment after the breaker itself opened
    daemon.wait_for(lambda d: all(s["halted"] for s in d["strategies"]), timeout=10)
    text = log.read_text()
    assert "CRITICAL s1mpled.circuit_breaker: circuit breaker OPEN" in text and "CONNECTION_UNSTABLE_DETECTED" in text
    daemon.wait_for(lambda d: d["breaker"]["state"] == "closed", timeout=90)
    assert not any(s["halted"] for s in daemon.status()["strategies"])
    assert daemon.stop() == 0
    _verify(tmp_path, sim, log)
