"""Tests of the dashboard's pure model: how each event line of ``subscribe`` changes what the page shows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from s1mpled.dashboard.view import FILLS_KEPT, POINTS_KEPT, InstanceView, equity_of


def _strategy(**kw: Any) -> dict[str, Any]:
    base = {"name": "grid", "symbol": "ETH/USDT", "capital": "1000.10", "holdings": "0.3", "last_price": "3000.01"}
    return {**base, "realized_pnl": "0.1", "open_orders": [], **kw}


def _status(at_ms: int, **kw: Any) -> dict[str, Any]:
    receipts = [{"trigger": "schedule", "at_ms": at_ms, "venue_sha256": "ab"}, {"trigger": "startup"}]
    doc = {"operation": "demo", "strategies": [_strategy(**kw)], "receipts": receipts, "breaker": {"state": "closed"}}
    return {"event": "STATUS", "at_ms": at_ms, "status": doc}


def _fill(trade_id: str, at_ms: int = 5) -> dict[str, Any]:
    fill = {"trade_id": trade_id, "symbol": "ETH/USDT", "side": "buy", "price": "1.5", "amount": "2"}
    return {"event": "TRADE_EXECUTED", "at_ms": at_ms, "strategy": "grid", "fill": fill}


def test_a_snapshot_sets_the_status_the_newest_receipt_and_exact_points() -> None:
    """STATUS: the document without its receipt list (the newest receipt kept), equity = capital + holdings * price
    in exact decimals, and a price point."""
    view = InstanceView("i0", "/run/x.sock")
    kinds = [u["type"] for u in view.apply(_status(1000))]
    assert kinds == ["status", "equity", "price"]
    assert view.status is not None and "receipts" not in view.status
    assert view.receipt == {"trigger": "schedule", "at_ms": 1000, "venue_sha256": "ab"}
    assert list(view.equity["grid"].points) == [[1000, "1900.103", "0.1"]]
    assert list(view.prices["ETH/USDT"].points) == [[1000, "3000.01"]]


def test_points_within_a_second_replace_the_last_one() -> None:
    """A series keeps at most one point a second: a later one in the same second replaces it, and says so."""
    view = InstanceView("i0", "s")
    view.apply(_status(1000))
    updates = view.apply({"event": "LEDGER_STATE_CHANGED", "at_ms": 1500, "status": _strategy(capital="5")})
    assert [u["replace"] for u in updates if u["type"] == "equity"] == [True]
    view.apply({"event": "LEDGER_STATE_CHANGED", "at_ms": 2100, "status": _strategy(capital="6")})
    assert [p[0] for p in view.equity["grid"].points] == [1500, 2100]
    assert view.strategies["grid"]["capital"] == "6"


def test_a_fill_is_shown_once_however_often_it_is_told() -> None:
    """The same trade (symbol and id) twice -- a re-dial, a snapshot and the stream -- is one row."""
    view = InstanceView("i0", "s")
    assert [u["type"] for u in view.apply(_fill("7"))] == ["fill"]
    assert view.apply(_fill("7")) == []
    assert len(view.fills) == 1 and view.fills[0]["strategy"] == "grid"


def test_histories_are_bounded() -> None:
    """Fills and points are kept up to their bounds, the oldest dropped (and a dropped fill can come again)."""
    view = InstanceView("i0", "s")
    for n in range(FILLS_KEPT + 5):
        view.apply(_fill(str(n)))
    for n in range(POINTS_KEPT + 5):
        view.apply({"event": "MARKET_DATA", "at_ms": n * 1000, "symbol": "ETH/USDT", "price": "1"})
    assert len(view.fills) == FILLS_KEPT and view.fills[0]["trade_id"] == "5"
    assert len(view.prices["ETH/USDT"].points) == POINTS_KEPT
    assert view.apply(_fill("0")) != []


def test_breaker_and_receipt_events_update_the_view() -> None:
    """HALT_NEW_SIGNALS carries the breaker as it is now; RECONCILIATION_COMPLETED the pass's receipt."""
    view = InstanceView("i0", "s")
    view.apply(_status(1))
    halted = {"event": "HALT_NEW_SIGNALS", "at_ms": 2, "reason": "x", "breaker": {"state": "open", "reason": "x"}}
    assert view.apply(halted)[0]["breaker"]["state"] == "open"
    assert view.status is not None and view.status["breaker"]["state"] == "open"
    view.apply({"event": "RECONCILIATION_COMPLETED", "at_ms": 3, "receipt": {"trigger": "control"}})
    assert view.receipt == {"trigger": "control"}
    assert view.apply({"event": "SOMETHING_NEW", "at_ms": 4}) == []  # a newer daemon's event: ignored


LIMIT = Decimal(10**12)


@given(st.decimals(-LIMIT, LIMIT, places=8), st.decimals(0, LIMIT, places=8))
def test_equity_is_exact(capital: Decimal, holdings: Decimal) -> None:
    """Equity is computed in Decimal from the strings the daemon sent: no float ever rounds it."""
    price = Decimal("3000.01")
    assert equity_of({"capital": str(capital), "holdings": str(holdings), "last_price": str(price)}) == (
        capital + holdings * price
    )
    assert equity_of({"capital": str(capital), "holdings": "1", "last_price": None}) == capital
    assert equity_of({"capital": "NaN"}) is None
