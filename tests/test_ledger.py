"""StrategyLedger: orders through the table, fills once each, exact accounting, bounded state, round trips."""

from __future__ import annotations

import logging
import random
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.errors import LocalStateError, RemoteStateError
from s1mpled.ledger import (
    HISTORY_LIMIT,
    SEEN_TRADE_IDS_LIMIT,
    SeenTradeIds,
    StrategyLedger,
)
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, Fill, OrderRequest, OrderType, Side
from s1mpled.orders import OrderEvent, OrderState, client_order_id, order_prefix
from s1mpled.state import codec

SYMBOL = "BTC/USDT"
PREFIX = order_prefix("test", "dca")
E, S = OrderEvent, OrderState


def cid(seq: int) -> str:
    return client_order_id(PREFIX, seq)


def request(seq: int, side: Side = Side.BUY, amount: str = "1", price: str | None = "100") -> OrderRequest:
    order_type = OrderType.MARKET if price is None else OrderType.LIMIT
    return OrderRequest(cid(seq), SYMBOL, side, order_type, D(amount), None if price is None else D(price))


def fill(
    trade_id: int | str,
    seq: int,
    *,
    side: Side = Side.BUY,
    price: str = "100",
    amount: str = "1",
    fee: str = "0.1",
    fee_asset: str = "USDT",
) -> Fill:
    return Fill(str(trade_id), cid(seq), f"X{seq}", SYMBOL, side, D(price), D(amount), D(fee), fee_asset, 1_000)


def ledger_with(
    *requests: OrderRequest, capital: str = "10000", seen_limit: int = 10_000, history_limit: int = 500
) -> StrategyLedger:
    ledger = StrategyLedger("dca", SYMBOL, D(capital), seen_limit=seen_limit, history_limit=history_limit)
    for req in requests:
        ledger.record_intent(req, now_ms=1)
    return ledger


def exact(state: dict[str, Any]) -> bytes:
    """The state as the store would write it: Decimals with their exact digits and exponent."""
    return codec.encode_payload(state)


# ----------------------------------------------------------------------------- orders


def test_record_intent_makes_a_pending_order() -> None:
    """A recorded intent is PENDING, listed among the open orders and found by client id."""
    ledger = ledger_with()
    order = ledger.record_intent(request(1), now_ms=5, tag="grid-3")
    assert order.state is S.PENDING and order.filled == 0 and order.exchange_order_id is None
    assert (order.created_ms, order.updated_ms, order.tag) == (5, 5, "grid-3")
    assert ledger.snapshot().open_orders == (order,)
    assert ledger.order(cid(1)) == order
    assert ledger.order(cid(2)) is None


def test_bad_intents_are_our_bugs() -> None:
    """A duplicate client id, another symbol, an invalid id or a missing price raise LocalStateError."""
    ledger = ledger_with(request(1))
    bad = [
        request(1),
        OrderRequest(cid(2), "ETH/USDT", Side.BUY, OrderType.LIMIT, D(1), D(1)),
        OrderRequest("has space", SYMBOL, Side.BUY, OrderType.LIMIT, D(1), D(1)),
        OrderRequest(cid(3), SYMBOL, Side.BUY, OrderType.LIMIT, D(1), None),
        OrderRequest(cid(4), SYMBOL, Side.BUY, OrderType.LIMIT, D(0), D(1)),
        OrderRequest(cid(5), SYMBOL, Side.BUY, OrderType.MARKET, D("NaN"), None),
    ]
    for req in bad:
        with pytest.raises(LocalStateError):
            ledger.record_intent(req, now_ms=2)
    assert [o.client_order_id for o in ledger.snapshot().open_orders] == [cid(1)]


def test_sequence_is_monotonic_and_never_reused() -> None:
    """next_sequence counts up, survives a restart and skips numbers already carried by known orders."""
    ledger = ledger_with()
    assert [ledger.next_sequence() for _ in range(3)] == [1, 2, 3]
    ledger.record_intent(request(10), now_ms=1)
    assert ledger.next_sequence() == 11
    restored = StrategyLedger.from_state(ledger.to_state())
    assert restored.next_sequence() == 12
    assert restored.snapshot().sequence == 12


def test_order_events_follow_the_table() -> None:
    """Acknowledgement opens the order and records the exchange id; a cancel ack moves it to the history."""
    ledger = ledger_with(request(1))
    opened = ledger.on_order_event(cid(1), E.SUBMIT_ACK, now_ms=7, exchange_order_id="X1")
    assert (opened.state, opened.exchange_order_id, opened.updated_ms) == (S.OPEN, "X1", 7)
    assert ledger.on_order_event(cid(1), E.CANCEL_REQUESTED, now_ms=8).state is S.CANCEL_PENDING
    canceled = ledger.on_order_event(cid(1), E.CANCEL_ACK, now_ms=9)
    assert canceled.state is S.CANCELED and canceled.exchange_order_id == "X1"
    assert ledger.snapshot().open_orders == ()
    assert ledger.history() == (canceled,)
    assert ledger.order(cid(1)) == canceled


def test_submit_timeout_is_unresolved_until_probed() -> None:
    """A timed-out submit is UNRESOLVED (still open, never rejected) until a probe settles it."""
    ledger = ledger_with(request(1))
    assert ledger.on_order_event(cid(1), E.SUBMIT_TIMEOUT, now_ms=2).state is S.UNRESOLVED
    assert [o.state for o in ledger.snapshot().open_orders] == [S.UNRESOLVED]
    assert ledger.on_order_event(cid(1), E.PROBE_NOT_FOUND, now_ms=3).state is S.NOT_PLACED
    assert ledger.snapshot().open_orders == ()


def test_refused_events_change_nothing() -> None:
    """Bugs raise LocalStateError, contradictions RemoteStateError, and the order stays as it was."""
    ledger = ledger_with(request(1))
    ledger.on_order_event(cid(1), E.SUBMIT_ACK, now_ms=2, exchange_order_id="X1")
    before = ledger.to_state()
    with pytest.raises(LocalStateError):
        ledger.on_order_event(cid(1), E.CANCEL_ACK, now_ms=3)  # no cancel was requested
    with pytest.raises(LocalStateError):
        ledger.on_order_event(cid(1), E.FULL_FILL, now_ms=3)  # fills go through apply_fill
    with pytest.raises(LocalStateError):
        ledger.on_order_event(cid(9), E.SUBMIT_ACK, now_ms=3)  # unknown order
    with pytest.raises(RemoteStateError):
        ledger.on_order_event(cid(1), E.PROBE_NOT_FOUND, now_ms=3)  # acknowledged, then unknown
    with pytest.raises(RemoteStateError):
        ledger.on_order_event(cid(1), E.PROBE_OPEN, now_ms=3, exchange_order_id="X2")  # another exchange id
    assert exact(ledger.to_state()) == exact(before)


def test_history_is_bounded() -> None:
    """Only the newest terminal orders are kept; open orders are never dropped."""
    assert HISTORY_LIMIT == 500
    ledger = ledger_with(*(request(n) for n in range(1, 7)), history_limit=3)
    for n in range(1, 6):
        ledger.on_order_event(cid(n), E.SUBMIT_REJECTED, now_ms=n)
    assert [o.client_order_id for o in ledger.history()] == [cid(3), cid(4), cid(5)]
    assert ledger.order(cid(1)) is None
    assert [o.client_order_id for o in ledger.snapshot().open_orders] == [cid(6)]


# ----------------------------------------------------------------------------- fills and accounting


def test_buy_fills_move_capital_holdings_and_state() -> None:
    """A partial buy opens the order, the rest fills it; capital pays cost plus quote fee."""
    ledger = ledger_with(request(1, amount="2"))
    assert ledger.apply_fill(fill(1, 1, amount="0.5", fee="0.05"))
    assert ledger.order(cid(1)) is not None
    assert ledger.snapshot().open_orders[0].state is S.OPEN
    assert ledger.snapshot().open_orders[0].exchange_order_id == "X1"
    assert ledger.apply_fill(fill(2, 1, price="110", amount="1.5", fee="0.165"))
    snap = ledger.snapshot()
    assert snap.open_orders == ()
    assert ledger.order(cid(1)) == ledger.history()[0]
    assert ledger.history()[0].state is S.FILLED and ledger.history()[0].filled == D(2)
    assert snap.capital == D("10000") - D("50.05") - D("165.165")
    assert snap.holdings == D("2")
    assert snap.fees_paid == D("0.215")
    assert snap.cost_basis == D("215.215")
    assert snap.avg_entry_price == D("107.6075")
    assert snap.last_trade_id == "2"
    assert snap.seen_trade_ids == 2


def test_sell_realizes_pnl_against_average_cost() -> None:
    """realized_pnl = (price - avg_entry) * amount - fee, with buy fees in the cost basis."""
    ledger = ledger_with(request(1, amount="2"), request(2, side=Side.SELL, amount="1", price="120"))
    ledger.apply_fill(fill(1, 1, amount="2", fee="0.2"))  # basis 200.2 for 2 BTC: avg 100.1
    ledger.apply_fill(fill(2, 2, side=Side.SELL, price="120", amount="1", fee="0.12"))
    snap = ledger.snapshot()
    assert snap.realized_pnl == (D("120") - D("100.1")) * 1 - D("0.12")
    assert snap.holdings == D(1) and snap.cost_basis == D("100.1")
    assert snap.capital == D("10000") - D("200.2") + D("119.88")
    assert snap.capital + snap.cost_basis == D("10000") + snap.realized_pnl


def test_fee_in_base_reduces_holdings() -> None:
    """A fee charged in the base asset comes out of holdings and is counted in quote at the fill price."""
    ledger = ledger_with(request(1), request(2, side=Side.SELL, amount="0.5"))
    ledger.apply_fill(fill(1, 1, amount="1", fee="0.001", fee_asset="BTC"))
    snap = ledger.snapshot()
    assert (snap.capital, snap.holdings, snap.fees_paid) == (D("9900"), D("0.999"), D("0.1"))
    ledger.apply_fill(fill(2, 2, side=Side.SELL, amount="0.5", fee="0.0005", fee_asset="BTC"))
    snap = ledger.snapshot()
    assert snap.holdings == D("0.4985") and snap.capital == D("9950")
    assert snap.capital + snap.cost_basis == D("10000") + snap.realized_pnl


def test_fee_in_a_third_asset_is_tracked_apart() -> None:
    """A BNB fee touches neither capital nor holdings and is summed per asset."""
    ledger = ledger_with(request(1))
    ledger.apply_fill(fill(1, 1, fee="0.0002", fee_asset="BNB"))
    snap = ledger.snapshot()
    assert (snap.capital, snap.holdings, snap.fees_paid) == (D("9900"), D(1), D(0))
    assert snap.other_fees == (("BNB", D("0.0002")),)


def test_duplicate_fill_is_ignored() -> None:
    """The same trade from the stream and from REST is applied once."""
    ledger = ledger_with(request(1, amount="2"))
    assert ledger.apply_fill(fill(1, 1))
    state = exact(ledger.to_state())
    assert not ledger.apply_fill(fill(1, 1))
    assert exact(ledger.to_state()) == state


def test_late_fill_for_canceled_order_is_accounted() -> None:
    """A fill that raced the cancel is accounted and the order stays CANCELED."""
    ledger = ledger_with(request(1, amount="2"))
    ledger.on_order_event(cid(1), E.SUBMIT_ACK, now_ms=2)
    ledger.on_order_event(cid(1), E.CANCEL_REQUESTED, now_ms=3)
    ledger.on_order_event(cid(1), E.CANCEL_ACK, now_ms=4)
    assert ledger.apply_fill(fill(1, 1, amount="0.5"))
    order = ledger.order(cid(1))
    assert order is not None and order.state is S.CANCELED and order.filled == D("0.5")
    assert ledger.snapshot().holdings == D("0.5")


def test_fill_before_the_ack_opens_the_order() -> None:
    """A fill can beat the submit answer: the PENDING order is OPEN, and the late ack keeps it OPEN."""
    ledger = ledger_with(request(1, amount="2"))
    ledger.apply_fill(fill(1, 1))
    assert ledger.on_order_event(cid(1), E.SUBMIT_ACK, now_ms=3, exchange_order_id="X1").state is S.OPEN


def test_refused_fills_change_nothing() -> None:
    """Fills for unknown orders, of the wrong side, malformed or for a rejected order raise RemoteStateError."""
    ledger = ledger_with(request(1), request(2))
    ledger.on_order_event(cid(2), E.SUBMIT_REJECTED, now_ms=2)
    bad = [
        fill(1, 9),
        fill(2, 1, side=Side.SELL),
        fill(3, 1, amount="0"),
        fill(4, 1, price="-1"),
        fill(5, 1, fee="-0.1"),
        fill(6, 2),
        Fill("7", cid(1), "X1", "ETH/USDT", Side.BUY, D(1), D(1), D(0), "USDT", 1),
        Fill("8", cid(1), "other", SYMBOL, Side.BUY, D(1), D(1), D(0), "USDT", 1),
    ]
    ledger.on_order_event(cid(1), E.SUBMIT_ACK, now_ms=2, exchange_order_id="X1")
    before = exact(ledger.to_state())
    for bad_fill in bad:
        with pytest.raises(RemoteStateError):
            ledger.apply_fill(bad_fill)
    assert exact(ledger.to_state()) == before


def test_overfill_is_accounted_capped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A fill beyond the order's amount moves the money but leaves filled == amount, with a warning."""
    ledger = ledger_with(request(1, amount="1"))
    ledger.apply_fill(fill(1, 1, amount="0.6", fee="0"))
    with caplog.at_level(logging.WARNING, logger="s1mpled.ledger"):
        assert ledger.apply_fill(fill(2, 1, amount="0.6", fee="0"))
    order = ledger.order(cid(1))
    assert order is not None and order.filled == D(1) and order.state is S.FILLED
    assert ledger.snapshot().holdings == D("1.2")
    [record] = caplog.records
    fields = {key: getattr(record, key) for key in ("EVENT", "STRATEGY", "SYMBOL", "ORDER_ID")}
    assert fields == {"EVENT": "FILL_BEYOND_AMOUNT", "STRATEGY": "dca", "SYMBOL": SYMBOL, "ORDER_ID": cid(1)}


def test_reserved_quote_counts_unfilled_open_buys() -> None:
    """reserved_quote is price times the unfilled amount of open limit buys only."""
    ledger = ledger_with(
        request(1, amount="2", price="100"),
        request(2, side=Side.SELL, amount="1", price="150"),
        request(3, price=None),
    )
    ledger.apply_fill(fill(1, 1, amount="0.5"))
    assert ledger.snapshot().reserved_quote == D("150")


# ----------------------------------------------------------------------------- force corrections


def test_force_corrections_return_before_and_after() -> None:
    """Each correction returns what it replaced and what it wrote, for the CRITICAL log."""
    ledger = ledger_with(request(1, amount="2"))
    ledger.apply_fill(fill(1, 1, amount="1", fee="0"))
    before, after = ledger.set_order_state(cid(1), S.CANCELED, D("1.5"), now_ms=9)
    assert (before.state, before.filled) == (S.OPEN, D(1))
    assert (after.state, after.filled, after.updated_ms) == (S.CANCELED, D("1.5"), 9)
    assert ledger.snapshot().open_orders == ()
    assert ledger.set_capital(D("123.45")) == (D("9900"), D("123.45"))
    assert ledger.set_holdings(D("3")) == (D(1), D(3))
    snap = ledger.snapshot()
    assert (snap.capital, snap.holdings, snap.avg_entry_price) == (D("123.45"), D(3), D(100))
    with pytest.raises(LocalStateError):
        ledger.set_order_state(cid(1), S.FILLED, D(3), now_ms=9)  # more than the amount
    with pytest.raises(LocalStateError):
        ledger.set_order_state(cid(7), S.FILLED, D(0), now_ms=9)


def test_set_order_state_can_reopen_a_history_order() -> None:
    """Reconciliation may find a finished order open; it moves back among the open orders."""
    ledger = ledger_with(request(1))
    ledger.on_order_event(cid(1), E.SUBMIT_TIMEOUT, now_ms=2)
    ledger.on_order_event(cid(1), E.PROBE_NOT_FOUND, now_ms=3)
    ledger.set_order_state(cid(1), S.OPEN, D(0), now_ms=4)
    assert [o.state for o in ledger.snapshot().open_orders] == [S.OPEN]
    assert ledger.history() == ()


def test_adopt_order() -> None:
    """An order of ours the ledger lost is adopted with the exchange's state, and its seq is not reused."""
    ledger = ledger_with()
    venue = ExchangeOrder(
        cid(40), "X40", SYMBOL, Side.SELL, OrderType.LIMIT, D(2), D(130), D("0.5"), ExchangeOrderStatus.OPEN, 77
    )
    before, adopted = ledger.adopt_order(venue, now_ms=80)
    assert before is None
    assert (adopted.state, adopted.filled, adopted.exchange_order_id) == (S.OPEN, D(0), "X40")
    assert (adopted.created_ms, adopted.updated_ms) == (77, 80)
    assert ledger.snapshot().open_orders == (adopted,)
    assert ledger.next_sequence() == 41
    with pytest.raises(LocalStateError):
        ledger.adopt_order(venue, now_ms=81)


def test_adopted_order_takes_its_missed_fills_without_double_counting() -> None:
    """After adoption the missed fill brings filled to the exchange's figure and the order stays OPEN."""
    ledger = ledger_with()
    venue = ExchangeOrder(
        cid(40), "X40", SYMBOL, Side.BUY, OrderType.LIMIT, D(2), D(100), D(1), ExchangeOrderStatus.OPEN, 77
    )
    ledger.adopt_order(venue, now_ms=80)
    assert ledger.apply_fill(fill(5, 40, amount="1"))
    order = ledger.order(cid(40))
    assert order is not None and (order.state, order.filled) == (S.OPEN, D(1))
    assert ledger.has_applied("5") and not ledger.has_applied("6")


# ----------------------------------------------------------------------------- persistence


def test_round_trip_is_exact_through_the_codec() -> None:
    """to_state -> codec -> from_state -> to_state reproduces the same bytes (same Decimal digits)."""
    ledger = ledger_with(request(1, amount="2.50"), request(2, side=Side.SELL, amount="1.0", price="120.10"))
    ledger.apply_fill(fill(1, 1, amount="2.50", fee="0.250"))
    ledger.apply_fill(fill(2, 2, side=Side.SELL, price="120.10", amount="0.30", fee="0.0300"))
    ledger.apply_fill(fill("uuid-a", 2, side=Side.SELL, price="120.10", amount="0.1", fee="0.0001", fee_asset="BNB"))
    ledger.record_intent(request(3), now_ms=3, tag="t")
    ledger.next_sequence()
    stored = codec.decode(codec.encode(ledger.to_state(), 1)).state
    restored = StrategyLedger.from_state(stored)
    assert exact(restored.to_state()) == exact(ledger.to_state())
    assert restored.snapshot() == ledger.snapshot()
    assert not restored.apply_fill(fill(1, 1, amount="2.50", fee="0.250"))
    assert not restored.apply_fill(fill("uuid-a", 2, side=Side.SELL))


@pytest.mark.parametrize(
    ("key", "value"),
    [("format", 2), ("capital", 1.5), ("capital", "1"), ("sequence", True), ("open_orders", {}), ("strategy", None)],
)
def test_malformed_state_is_refused(key: str, value: object) -> None:
    """A state dict with a wrong type or format raises LocalStateError (our writer is broken)."""
    state = ledger_with(request(1)).to_state()
    state[key] = value
    with pytest.raises(LocalStateError):
        StrategyLedger.from_state(state)


def test_malformed_order_state_is_refused() -> None:
    """An order with an unknown state name raises LocalStateError."""
    state = ledger_with(request(1)).to_state()
    state["open_orders"][0]["state"] = "limbo"
    with pytest.raises(LocalStateError):
        StrategyLedger.from_state(state)


# ----------------------------------------------------------------------------- bounded de-duplication


def test_seen_ids_keep_the_newest_and_a_floor() -> None:
    """Beyond the limit the lowest ids are dropped; every id up to the highest dropped one counts as seen."""
    assert SEEN_TRADE_IDS_LIMIT == 10_000
    seen = SeenTradeIds(limit=3)
    for trade_id in ("10", "12", "14"):
        seen.add(trade_id)
    assert seen.floor is None and "11" not in seen and "9" not in seen
    seen.add("16")
    assert seen.floor == "10" and len(seen) == 3
    assert "10" in seen and "9" in seen and "0" in seen  # at or below the floor
    assert "11" not in seen and "13" not in seen and "17" not in seen
    seen.add("11")  # older than everything kept: dropped at once, the floor rises
    assert seen.floor == "11" and "11" in seen and len(seen) == 3
    assert seen.last == "16"


def test_seen_ids_without_an_order_are_fifo() -> None:
    """Non-integer (or non-canonical) ids are kept in arrival order with no floor."""
    seen = SeenTradeIds(limit=2)
    for trade_id in ("b", "a", "007"):
        seen.add(trade_id)
    assert "b" not in seen and "a" in seen and "007" in seen
    assert "7" not in seen and seen.floor is None and seen.last is None


def test_seen_ids_round_trip() -> None:
    """The bounded set persists with its floor and last id."""
    seen = SeenTradeIds(limit=2)
    for trade_id in ("5", "6", "7", "x"):
        seen.add(trade_id)
    restored = SeenTradeIds.from_state(seen.to_state(), limit=2)
    assert restored.to_state() == seen.to_state()
    assert "5" in restored and "x" in restored and "8" not in restored


def test_ledger_ignores_fills_below_the_floor() -> None:
    """A replayed fill whose id was dropped from the bounded set is still recognised as applied."""
    ledger = ledger_with(request(1, amount="100"), seen_limit=2)
    for trade_id in (1, 2, 3):
        assert ledger.apply_fill(fill(trade_id, 1))
    assert ledger.snapshot().seen_trade_ids == 2
    holdings = ledger.snapshot().holdings
    assert not ledger.apply_fill(fill(1, 1))
    assert ledger.has_applied("1")
    assert ledger.snapshot().holdings == holdings == D(3)
    restored = StrategyLedger.from_state(ledger.to_state(), seen_limit=2)
    assert not restored.apply_fill(fill(1, 1))


# ----------------------------------------------------------------------------- properties

BIG = "1000000"
amounts = st.integers(min_value=1, max_value=10**8).map(lambda n: D(n).scaleb(-8))
prices = st.integers(min_value=1, max_value=10**9).map(lambda n: D(n).scaleb(-2))
fees = st.integers(min_value=0, max_value=10**6).map(lambda n: D(n).scaleb(-8))
raw_fills = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), prices, amounts, fees, st.sampled_from(["USDT", "BTC", "BNB"])),
    max_size=30,
)


def make_fills(raw: list[tuple[Side, D, D, D, str]]) -> list[Fill]:
    """Fills with unique trade ids for the two big orders of ``trading_ledger``."""
    return [
        Fill(str(i + 1), cid(1 if side is Side.BUY else 2), "", SYMBOL, side, price, amount, fee, asset, i)
        for i, (side, price, amount, fee, asset) in enumerate(raw)
    ]


def trading_ledger(seen_limit: int = 8) -> StrategyLedger:
    """A buy and a sell order too big to overfill; a small de-dup set so the bound is exercised too."""
    return ledger_with(request(1, amount=BIG), request(2, side=Side.SELL, amount=BIG), seen_limit=seen_limit)


@settings(max_examples=150, deadline=None)
@given(raw_fills)
def test_value_flows_are_conserved(raw: list[tuple[Side, D, D, D, str]]) -> None:
    """Capital and holdings change by exactly the traded flows and fees; capital + basis = start + realized PnL."""
    ledger = trading_ledger()
    fills = make_fills(raw)
    for f in fills:
        assert ledger.apply_fill(f)
    snap = ledger.snapshot()
    quote_fee = {f.trade_id: f.fee if f.fee_asset == "USDT" else D(0) for f in fills}
    base_fee = {f.trade_id: f.fee if f.fee_asset == "BTC" else D(0) for f in fills}
    buys = [f for f in fills if f.side is Side.BUY]
    sells = [f for f in fills if f.side is Side.SELL]
    spent = sum((f.cost + quote_fee[f.trade_id] for f in buys), D(0))
    received = sum((f.cost - quote_fee[f.trade_id] for f in sells), D(0))
    assert snap.capital == D("10000") - spent + received
    bought = sum((f.amount - base_fee[f.trade_id] for f in buys), D(0))
    sold = sum((f.amount + base_fee[f.trade_id] for f in sells), D(0))
    assert snap.holdings == bought - sold
    assert snap.fees_paid == sum((quote_fee[f.trade_id] + base_fee[f.trade_id] * f.price for f in fills), D(0))
    assert snap.capital + snap.cost_basis == D("10000") + snap.realized_pnl
    assert snap.cost_basis >= 0


@settings(max_examples=100, deadline=None)
@given(raw_fills, st.data())
def test_duplicates_in_any_interleaving_give_the_same_ledger(
    raw: list[tuple[Side, D, D, D, str]], data: st.DataObject
) -> None:
    """Replaying fills with duplicates anywhere equals applying each first occurrence once, in order."""
    fills = make_fills(raw)
    replay = data.draw(st.lists(st.sampled_from(fills), max_size=60)) if fills else []
    once, noisy = trading_ledger(), trading_ledger()
    firsts: dict[str, Fill] = {}
    for f in replay:
        firsts.setdefault(f.trade_id, f)
    for f in firsts.values():
        once.apply_fill(f)
    for f in replay + replay:
        noisy.apply_fill(f)
    assert exact(noisy.to_state()) == exact(once.to_state())


@settings(max_examples=100, deadline=None)
@given(raw_fills, st.randoms(use_true_random=False))
def test_order_of_fills_does_not_change_balances(raw: list[tuple[Side, D, D, D, str]], rnd: random.Random) -> None:
    """Capital, holdings, fees and the orders do not depend on the order fills arrive in (PnL may)."""
    fills = make_fills(raw)
    shuffled = fills[:]
    rnd.shuffle(shuffled)
    a, b = trading_ledger(SEEN_TRADE_IDS_LIMIT), trading_ledger(SEEN_TRADE_IDS_LIMIT)
    for f in fills:
        a.apply_fill(f)
    for f in shuffled:
        b.apply_fill(f)
    sa, sb = a.snapshot(), b.snapshot()
    assert (sa.capital, sa.holdings, sa.fees_paid, sa.other_fees) == (
        sb.capital,
        sb.holdings,
        sb.fees_paid,
        sb.other_fees,
    )
    assert sa.open_orders == sb.open_orders


@settings(max_examples=100, deadline=None)
@given(raw_fills)
def test_round_trip_after_random_trading_is_exact(raw: list[tuple[Side, D, D, D, str]]) -> None:
    """Whatever the fills, the persisted state restores to a ledger with byte-identical state."""
    ledger = trading_ledger()
    for f in make_fills(raw):
        ledger.apply_fill(f)
    restored = StrategyLedger.from_state(codec.decode(codec.encode(ledger.to_state(), 1)).state, seen_limit=8)
    assert exact(restored.to_state()) == exact(ledger.to_state())
    assert restored.snapshot() == ledger.snapshot()
