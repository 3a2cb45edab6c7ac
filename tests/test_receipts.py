"""Reconciliation receipts: counts, corrections and a view hash independent of listing order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from s1mpled.model import Balance, ExchangeOrder, ExchangeOrderStatus, Fill, OrderType, Side
from s1mpled.receipts import receipt_of, venue_hash
from s1mpled.reconciliation import Report, SetHoldings, VenueSnapshot
from tests.daemon_harness import Daemon, write_config


def _order(i: int) -> ExchangeOrder:
    return ExchangeOrder(
        f"s1abc-{i}", str(100 + i), "BTC/USDT", Side.BUY, OrderType.LIMIT, Decimal("0.01"), Decimal(50000 - i),
        Decimal(0), ExchangeOrderStatus.OPEN, 1_000 + i,
    )  # fmt: skip


def _trade(i: int) -> Fill:
    return Fill(
        str(i), f"s1abc-{i}", str(100 + i), "BTC/USDT", Side.BUY, Decimal("50000"), Decimal("0.01"),
        Decimal("0.00001"), "BTC", 2_000 + i,
    )  # fmt: skip


ORDERS = [_order(i) for i in range(5)]
TRADES = [_trade(i) for i in range(5)]
BALANCES = {"BTC": Balance("BTC", Decimal("0.05"), Decimal(0)), "USDT": Balance("USDT", Decimal(100), Decimal(5))}


@given(st.permutations(ORDERS), st.permutations(TRADES), st.permutations(list(BALANCES)))
def test_the_same_account_listed_in_any_order_has_the_same_hash(orders: list, trades: list, assets: list) -> None:  # type: ignore[type-arg]
    canonical = venue_hash(VenueSnapshot(tuple(ORDERS), {}, tuple(TRADES), BALANCES))
    shuffled = VenueSnapshot(tuple(orders), {}, tuple(trades), {a: BALANCES[a] for a in assets})
    assert venue_hash(shuffled) == canonical


def test_any_change_in_the_view_changes_the_hash() -> None:
    base = VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES), BALANCES)
    moved = {**BALANCES, "USDT": Balance("USDT", Decimal("100.00000001"), Decimal(5))}
    variants = [
        VenueSnapshot(tuple(ORDERS[:-1]), {"s1abc-9": None}, tuple(TRADES), BALANCES),
        VenueSnapshot(tuple(ORDERS), {}, tuple(TRADES), BALANCES),
        VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES[1:]), BALANCES),
        VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES), moved),
    ]
    hashes = {venue_hash(v) for v in [base, *variants]}
    assert len(hashes) == 5


def test_a_receipt_counts_what_was_compared_and_lists_the_corrections() -> None:
    venue = VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES), BALANCES, consistent=False)
    cut = SetHoldings("dca-btc", "BTC", Decimal("0.1"), Decimal("0.05"))
    report = Report((cut,), unsettled=("s1abc-9",), balances_checked=False)
    r = receipt_of("schedule", 1_800_000_000_000, 2, venue, report).to_doc()
    assert r["compared"] == {
        "strategies": 2,
        "open_orders": 5,
        "probed": 1,
        "trades": 5,
        "balances": 2,
        "unreadable": 0,
    }
    assert r["consistent"] is False and r["unsettled"] == 1 and r["trigger"] == "schedule"
    assert r["corrections"] == [f"dca-btc: {cut.describe()}"]
    assert r["venue_sha256"] == venue_hash(venue) and len(r["venue_sha256"]) == 64


def test_the_running_daemon_keeps_a_receipt_per_pass_newest_first(tmp_path: Path) -> None:
    """status --json: the startup pass's receipt, then one per later pass in front of it."""
    daemon = Daemon(write_config(tmp_path, reconcile="300ms"), tmp_path / "daemon.log")
    try:
        first = daemon.wait_trading()["receipts"]
        assert first[-1]["trigger"].startswith("startup") and first[-1]["compared"]["strategies"] == 2
        later = daemon.wait_for(lambda d: len(d["receipts"]) > len(first))["receipts"]
        assert later[-len(first) :] == first  # older receipts unchanged, new ones in front
        assert later[0]["at_ms"] >= first[0]["at_ms"]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
