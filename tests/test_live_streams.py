"""The live daemon's streams end to end (real ccxt against the simulator process): a poisoned, closed or
deaf user stream is noticed and reconnected, trading waits for the subscription, and an order whose
submit got no answer is settled within seconds by an in-flight check.

The schedule is frozen (reconciliation once an hour), so whatever the daemon learns within the deadlines
below it learned from the stream, a reconnect's catch-up or an in-flight check -- never the timer. A fill
counts as *pushed* when the worker's own "fill <id>:" line shows it (reconciliation logs a correction).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from s1mpled.model import OrderType, Side
from s1mpled.strategies.base import PlaceOrder, Signal, Strategy, StrategyView
from tests.daemon_harness import REPO, Daemon, write_config
from tests.live_harness import (
    Simulator,
    assert_books_equal_exchange,
    assert_no_duplicate_orders,
    read_ledgers,
    wait_until,
    write_live_config,
)


class BuyAtStart(Strategy):
    """A market buy the moment trading starts, once: its fill is pushed at once, so it is lost if the
    private stream is not subscribed yet."""

    kind = "buy-at-start"

    def __init__(self, name: str, symbol: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, symbol, params)
        self.bought = False

    def on_start(self, view: StrategyView) -> list[Signal]:
        if self.bought:
            return []
        self.bought = True
        return [PlaceOrder(Side.BUY, OrderType.MARKET, Decimal("0.001"), tag="at-start")]

    def state_snapshot(self) -> dict[str, Any]:
        return {"bought": self.bought}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.bought = bool(state["bought"])


def _start(tmp_path: Path, sim: Simulator, edit: Callable[[dict[str, Any]], None] | None = None) -> Daemon:
    """The daemon on the frozen schedule; ``edit`` may change its configuration first."""
    config = write_live_config(tmp_path, sim, frozen=True)
    if edit is not None:
        doc = yaml.safe_load(config.read_text())
        edit(doc)
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Daemon(config, tmp_path / "daemon.log", env={"PYTHONPATH": str(REPO)})


def _buy_at_start(doc: dict[str, Any]) -> None:
    """dca-btc becomes BuyAtStart; the breaker tolerates a slow first connection (it would halt the buy)."""
    dca = next(s for s in doc["strategies"] if s["name"] == "dca-btc")
    dca["class"], dca["params"] = "tests.test_live_streams:BuyAtStart", {}
    doc["circuit_breaker"]["max_reconnect_attempts"] = 100


def _log(daemon: Daemon) -> str:
    return daemon.log_path.read_text(errors="replace")


def _resting_order(daemon: Daemon, exclude: tuple[str, ...] = (), *, at_least: int = 1) -> str:
    """A grid order the exchange has acknowledged and not filled (buy or sell: the grid keeps one per level),
    once ``at_least`` of them rest."""
    found: list[str] = []

    def look(doc: dict[str, Any]) -> bool:
        grid = next(s for s in doc["strategies"] if s["name"] == "grid-eth")
        found[:] = [
            o["client_order_id"]
            for o in grid["open_orders"]
            if o["state"] == "open" and o["client_order_id"] not in exclude
        ]
        return len(found) >= at_least

    daemon.wait_for(look, timeout=30)
    return found[0]


def _fill(sim: Simulator, daemon: Daemon, exclude: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """Fill a resting grid order on the exchange now; its client id and trade ids."""
    for _ in range(5):  # the feed may fill the chosen order first: take another one
        cid = _resting_order(daemon, exclude)
        try:
            sim.fill(cid)
        except OSError:
            exclude = (*exclude, cid)
            continue
        return cid, [t["trade_id"] for t in sim.state()["trades"] if t["client_order_id"] == cid]
    raise AssertionError("no resting grid order could be filled")


def _applied(tmp_path: Path, trade_ids: list[str]) -> bool:
    ledger = read_ledgers(tmp_path / "state").get("grid-eth")
    return ledger is not None and all(ledger.has_applied(t) for t in trade_ids)


def _pushed(daemon: Daemon, trade_ids: list[str], strategy: str = "grid-eth") -> bool:
    """The worker applied these fills as the stream delivered them (reconciliation logs a correction)."""
    text = _log(daemon)
    return all(re.search(rf"s1mpled\.strategy_worker: fill {t}: .*STRATEGY={strategy} ", text) for t in trade_ids)


def _btc_trades(sim: Simulator) -> list[str]:
    return [t["trade_id"] for t in sim.state()["trades"] if t["symbol"] == "BTC/USDT"]


def _settled(doc: dict[str, Any]) -> bool:
    return all(o["state"] not in ("pending", "unresolved") for s in doc["strategies"] for o in s["open_orders"])


def _books_equal_exchange(tmp_path: Path, sim: Simulator, daemon: Daemon) -> None:
    """Stop the market, settle, reconcile once more, stop: the books equal the exchange's account."""
    sim.clear()
    sim.pause_feed(True)
    daemon.wait_for(_settled, timeout=60)
    daemon.reconcile()
    assert daemon.stop() == 0, daemon.log_tail()
    ledgers, ex = read_ledgers(tmp_path / "state"), sim.state()
    assert_books_equal_exchange(ledgers, ex)
    assert_no_duplicate_orders(ledgers, ex)


def _restored(daemon: Daemon, since: int) -> bool:
    """Both user watchers reconnected (each reconnect is followed by its catch-up reconciliation)."""
    text = _log(daemon)[since:]
    return all(f"reconciliation (reconnect:{link})" in text for link in ("user-trades", "user-orders"))


def _next_fill_is_pushed(
    tmp_path: Path, sim: Simulator, daemon: Daemon, lost: tuple[str, list[str]], since: int
) -> None:
    """The fill the stream lost is caught up within seconds; once the stream is back, fills are pushed."""
    wait_until(lambda: _applied(tmp_path, lost[1]), 25, f"the lost fill {lost[1]} to be caught up")
    wait_until(lambda: _restored(daemon, since), 25, "the user stream to be back")
    _, trades = _fill(sim, daemon, exclude=(lost[0],))
    wait_until(lambda: _pushed(daemon, trades), 10, f"fill {trades} to arrive through the stream")


# ------------------------------------------------------------------------------------------ (7) deaf streams


@pytest.mark.parametrize("kind", ["nan", "truncated"])
def test_a_frame_ccxt_cannot_read_is_logged_once_and_the_stream_reconnects(
    tmp_path: Path, sim: Simulator, kind: str
) -> None:
    """A fill report with "z": "NaN" (or cut in half) used to kill ccxt's receive loop in silence; now it
    is one log line, a reconnect and its catch-up, and the next fill is pushed again."""
    daemon = _start(tmp_path, sim)
    daemon.wait_trading(timeout=60)
    since = len(_log(daemon))
    sim.inject("ws_malformed", kind=kind, times=1, stream="user")
    lost = _fill(sim, daemon)  # "nan" spoils its fill report; "truncated" the next message, likely it too
    _next_fill_is_pushed(tmp_path, sim, daemon, lost, since)
    text = _log(daemon)
    assert len(re.findall(r"ignored a frame ccxt cannot read", text)) == 1, text
    assert "Traceback" not in text and "Exception in callback" not in text
    assert "reconciliation (reconnect:user-" in text
    _books_equal_exchange(tmp_path, sim, daemon)


def test_a_deafened_user_stream_is_detected_and_reconnected(tmp_path: Path, sim: Simulator) -> None:
    """Open but silent (the subscription silently gone, pings still answered): the account moves and the
    stream does not say so; a cheap look at the account notices, the stream reconnects and catches up."""
    daemon = _start(tmp_path, sim)
    daemon.wait_trading(timeout=60)
    _resting_order(daemon, at_least=3)  # every level rests: no order of ours in flight to give it away
    since = len(_log(daemon))
    sim.inject("ws_deafen", stream="user", seconds=120)
    lost = _fill(sim, daemon)
    _next_fill_is_pushed(tmp_path, sim, daemon, lost, since)
    # Either proof condemns it: the account look disagreeing with the stream, or -- when another stream's
    # reconnect (a slow machine's market heartbeat) caught the fill up first and the grid re-placed its
    # level -- an acknowledged order the stream never reported.
    deaf = re.findall(r"the user stream is deaf: (the account changed|order \S+ was acknowledged)", _log(daemon))
    assert deaf, _log(daemon)[-3000:]
    _books_equal_exchange(tmp_path, sim, daemon)


def test_a_server_side_close_is_noticed_and_the_next_fill_is_pushed(tmp_path: Path, sim: Simulator) -> None:
    """The exchange closes the user stream with a close frame: reconnect, catch up, and fills are pushed."""
    daemon = _start(tmp_path, sim)
    daemon.wait_trading(timeout=60)
    since = len(_log(daemon))
    sim.inject("ws_close", stream="user")
    lost = _fill(sim, daemon)
    _next_fill_is_pushed(tmp_path, sim, daemon, lost, since)
    assert "reconciliation (reconnect:user-" in _log(daemon)
    _books_equal_exchange(tmp_path, sim, daemon)


# -------------------------------------------------------------------------- (8) trading waits for the stream


def test_the_first_order_is_sent_only_after_the_user_stream_is_subscribed(tmp_path: Path, sim: Simulator) -> None:
    """A market buy placed the moment trading starts is filled at once; its fill must come by push. The
    WebSocket API refuses connections for the first seconds, so a daemon that trades before its stream is
    subscribed loses that push for sure (it would learn the fill only from a reconciliation)."""
    sim.inject("ws_refuse", seconds=2)
    daemon = _start(tmp_path, sim, _buy_at_start)
    daemon.wait_trading(timeout=60)
    wait_until(lambda: _btc_trades(sim), 20, "the buy at start")
    trades = _btc_trades(sim)
    wait_until(lambda: _pushed(daemon, trades, "dca-btc"), 10, "the first fill to arrive through the stream")
    text = _log(daemon)
    assert text.index("user data stream subscribed") < text.index("phase reconciling") < text.index("placed: buy")
    _books_equal_exchange(tmp_path, sim, daemon)


def test_startup_waits_for_the_subscription_and_still_answers_status(tmp_path: Path, sim: Simulator) -> None:
    """While the WebSocket API refuses connections the daemon retries, says what it waits for, trades
    nothing and answers `status`; SIGTERM still stops it cleanly."""
    sim.inject("ws_refuse", seconds=60)
    daemon = _start(tmp_path, sim)
    doc = daemon.wait_for(lambda d: d["phase"] == "subscribing", timeout=30)
    assert not any(s["open_orders"] for s in doc.get("strategies", []))
    wait_until(lambda: "still waiting for the user stream" in _log(daemon), 30, "the daemon to say what it waits for")
    assert re.search(r"user-(trades|orders): \d+ failed attempt", _log(daemon)), daemon.log_tail()
    assert daemon.status()["phase"] == "subscribing"
    assert not [t for t in sim.state()["trades"] if t["client_order_id"].startswith("s1")]
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log_tail()
    assert "READY" not in _log(daemon)


# ------------------------------------------------------------------------------- (5) in-flight checks


def test_an_order_whose_submit_got_a_503_is_settled_within_seconds(tmp_path: Path, sim: Simulator) -> None:
    """A 503 on POST /order (not executed): UNRESOLVED, asked about by client id a few seconds later,
    NOT_PLACED once its in-flight window has passed -- not an hour later at the next reconciliation."""
    daemon = _start(tmp_path, sim)
    daemon.wait_trading(timeout=60)
    sim.inject("http_error", status=503, times=1, path="^/api/v3/order$", method="POST")
    doc = daemon.wait_for(lambda d: any(o["state"] == "unresolved" for s in d["strategies"] for o in s["open_orders"]))
    cid = next(o["client_order_id"] for s in doc["strategies"] for o in s["open_orders"] if o["state"] == "unresolved")
    daemon.wait_for(
        lambda d: all(o["client_order_id"] != cid for s in d["strategies"] for o in s["open_orders"]), timeout=20
    )
    assert re.search(rf"in-flight check: order {cid} probe_not_found", _log(daemon)), daemon.log_tail()
    assert cid not in sim.state()["orders"]
    _books_equal_exchange(tmp_path, sim, daemon)


def test_an_order_placed_late_after_a_503_is_found_and_the_books_stay_exact(tmp_path: Path, sim: Simulator) -> None:
    """Binance's "execution status unknown": answered 503, executed 3 s later. The order is found (by the
    stream or an in-flight check), never written off, never sent twice."""
    daemon = _start(tmp_path, sim)
    daemon.wait_trading(timeout=60)
    sim.inject("late_order", delay_ms=3000, times=1)
    doc = daemon.wait_for(lambda d: any(o["state"] == "unresolved" for s in d["strategies"] for o in s["open_orders"]))
    cid = next(o["client_order_id"] for s in doc["strategies"] for o in s["open_orders"] if o["state"] == "unresolved")
    wait_until(lambda: cid in sim.state()["orders"], 20, "the late execution")
    daemon.wait_for(
        lambda d: all(o["state"] != "unresolved" for s in d["strategies"] for o in s["open_orders"]), timeout=20
    )
    assert "not_placed" not in re.findall(rf"order {cid} \w+", _log(daemon))
    _books_equal_exchange(tmp_path, sim, daemon)


def test_paper_mode_needs_no_subscription_wait(tmp_path: Path) -> None:
    """Paper mode's streams are in-process: confirmed at once, in the same order, nothing to wait for."""
    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    daemon.wait_trading(timeout=30)
    assert daemon.stop() == 0
    text = _log(daemon)
    assert "still waiting" not in text
    assert text.index("the user stream is subscribed") < text.index("phase reconciling") < text.index("READY")
