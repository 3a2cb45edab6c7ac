"""Reconciliation: the pure diff case by case and under hypothesis, and the monitor against a real paper exchange."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from s1mpled.config import PaperConfig, PaperMarketConfig
from s1mpled.environments.paper_exchange import MarketSpec, SimulatedExchange
from s1mpled.errors import ExchangeRejected, ExchangeUnavailable, LocalStateError
from s1mpled.events import Event, LedgerStateChanged, ReconciliationCompleted, ScheduledEvent
from s1mpled.ledger import LedgerOrder, StrategyLedger
from s1mpled.model import (
    Balance,
    ExchangeOrder,
    ExchangeOrderStatus,
    Fill,
    OrderRequest,
    OrderType,
    Side,
    split_symbol,
)
from s1mpled.orders import OrderEvent, OrderState, can_cancel, client_order_id, order_prefix
from s1mpled.reconciliation import (
    CONFIRM_AFTER_MS,
    IN_FLIGHT_MS,
    AdoptOrder,
    ApplyFill,
    Correction,
    LedgerFacts,
    Report,
    SetCapital,
    SetHoldings,
    SettleOrder,
    VenueSnapshot,
    apply_correction,
    reconcile,
)
from s1mpled.reconciliation_monitor import ReconciliationMonitor
from s1mpled.state import StateDirectory
from s1mpled.state.inspect import inspect
from s1mpled.strategies.base import Signal, Strategy, StrategyView
from s1mpled.strategy_worker import StrategyWorker
from tests.moving_paper import MovingPaper

T = TypeVar("T")
BTC, ETH = "BTC/USDT", "ETH/USDT"
S, E, X = OrderState, OrderEvent, ExchangeOrderStatus
NOW = 1_000_000


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, failing it if anything hangs for more than 5 s."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


class Holder:
    """The smallest ReconciledWorker: a ledger, its prefix and the notifications reconciliation made."""

    def __init__(self, name: str, symbol: str = BTC, capital: str = "1000", operation: str = "test") -> None:
        self.name, self.symbol, self.operation = name, symbol, operation
        self.ledger = StrategyLedger(name, symbol, D(capital))
        self.lock = asyncio.Lock()
        self.fills: list[Fill] = []
        self.closed: list[LedgerOrder] = []

    async def persist(self, reason: str) -> None:
        """Nothing to persist for the pure tests."""

    def notify_fill(self, fill: Fill) -> None:
        self.fills.append(fill)

    def notify_closed(self, order: LedgerOrder) -> None:
        self.closed.append(order)

    @property
    def prefix(self) -> str:
        return order_prefix(self.operation, self.name, self.ledger.epoch)

    @property
    def old_prefixes(self) -> tuple[str, ...]:
        return tuple(order_prefix(self.operation, self.name, e) for e in self.ledger.epochs[:-1])

    def cid(self, seq: int) -> str:
        return client_order_id(self.prefix, seq)


def facts(holders: Iterable[Holder], venue: VenueSnapshot) -> list[LedgerFacts]:
    """The ledgers' facts exactly as the monitor gathers them."""
    out = []
    for h in holders:
        snap = h.ledger.snapshot()
        orders = {o.client_order_id: o for o in (*h.ledger.history(), *snap.open_orders)}
        applied = frozenset(t.trade_id for t in venue.trades if h.ledger.has_applied(t.trade_id))
        out.append(LedgerFacts(snap, h.prefix, orders, applied, h.old_prefixes))
    return out


def apply_all(holders: Iterable[Holder], report: Report) -> None:
    """Apply every correction the way the workers do."""
    by_name = {h.name: h for h in holders}
    for c in report.corrections:
        h = by_name[c.strategy]
        applied = apply_correction(h.ledger, c, NOW)
        if applied is not None and applied.fill is not None:
            h.notify_fill(applied.fill)
        if applied is not None and applied.closed is not None:
            h.notify_closed(applied.closed)


def diff(holders: list[Holder], venue: VenueSnapshot) -> Report:
    return reconcile(facts(holders, venue), venue)


def assert_settled(holders: list[Holder], venue: VenueSnapshot) -> Report:
    """Apply the diff, then check a second diff against the same venue corrects nothing."""
    report = diff(holders, venue)
    apply_all(holders, report)
    assert diff(holders, venue).corrections == ()
    return report


# ----------------------------------------------------------------------------- building blocks


def request(
    cid: str, side: Side = Side.BUY, amount: str = "1", price: str | None = "100", symbol: str = BTC
) -> OrderRequest:
    kind = OrderType.MARKET if price is None else OrderType.LIMIT
    return OrderRequest(cid, symbol, side, kind, D(amount), None if price is None else D(price))


def ex_order(req: OrderRequest, status: ExchangeOrderStatus, filled: str = "0", xid: str = "X1") -> ExchangeOrder:
    return ExchangeOrder(
        req.client_order_id, xid, req.symbol, req.side, req.type, req.amount, req.price, D(filled), status, NOW
    )


def trade(
    trade_id: int, req: OrderRequest, amount: str, *, price: str = "100", fee: str = "0.1", xid: str = "X1"
) -> Fill:
    quote = split_symbol(req.symbol)[1]
    return Fill(str(trade_id), req.client_order_id, xid, req.symbol, req.side, D(price), D(amount), D(fee), quote, NOW)


def venue(
    *,
    open_orders: Iterable[ExchangeOrder] = (),
    probed: Mapping[str, ExchangeOrder | None] | None = None,
    trades: Iterable[Fill] = (),
    balances: Mapping[str, str] | None = None,
) -> VenueSnapshot:
    bal = {a: Balance(a, D(v), D(0)) for a, v in (balances or {"USDT": "1000", "BTC": "0"}).items()}
    return VenueSnapshot(tuple(open_orders), dict(probed or {}), tuple(trades), bal, NOW)


def placed(h: Holder, seq: int, state: OrderState = S.OPEN, **kw: Any) -> OrderRequest:
    """Record an order in the ledger and move it to ``state`` the way the worker would."""
    req = request(h.cid(seq), **kw)
    h.ledger.record_intent(req, 1)
    if state is S.OPEN:
        h.ledger.on_order_event(req.client_order_id, E.SUBMIT_ACK, 2, "X1")
    elif state is S.UNRESOLVED:
        h.ledger.on_order_event(req.client_order_id, E.SUBMIT_TIMEOUT, 2)
    else:
        assert state is S.PENDING
    return req


# ----------------------------------------------------------------------------- the pure diff, case by case


def test_consistent_ledger_needs_no_correction() -> None:
    """A ledger that agrees with the exchange in orders, fills and balances gets no corrections."""
    a = Holder("a")
    req = placed(a, 1)
    v = venue(open_orders=[ex_order(req, X.OPEN)])
    assert diff([a], v) == Report((), (), {})


def test_missed_fill_is_applied() -> None:
    """A partial fill the ledger missed is applied (and nothing else: the order is still open)."""
    a = Holder("a")
    req = placed(a, 1)
    fill = trade(7, req, "0.4")
    v = venue(open_orders=[ex_order(req, X.OPEN, "0.4")], trades=[fill], balances={"USDT": "959.9", "BTC": "0.4"})
    report = assert_settled([a], v)
    assert report.corrections == (ApplyFill("a", fill),)
    snap = a.ledger.snapshot()
    assert (snap.holdings, snap.capital, snap.last_trade_id) == (D("0.4"), D("959.9"), "7")
    assert a.fills == [fill]


def test_pending_order_unknown_to_the_exchange_is_not_placed() -> None:
    """A PENDING order the probe says does not exist becomes NOT_PLACED and the worker is told."""
    a = Holder("a")
    req = placed(a, 1, S.PENDING)
    report = assert_settled([a], venue(probed={req.client_order_id: None}))
    assert report.corrections == (SettleOrder("a", req.client_order_id, S.PENDING, S.NOT_PLACED, D(0)),)
    assert [o.state for o in a.closed] == [S.NOT_PLACED]


def test_acknowledged_order_unknown_to_the_exchange_expired() -> None:
    """An OPEN order the exchange no longer knows is EXPIRED (it existed), never NOT_PLACED."""
    a = Holder("a")
    req = placed(a, 1)
    report = assert_settled([a], venue(probed={req.client_order_id: None}))
    assert report.corrections == (SettleOrder("a", req.client_order_id, S.OPEN, S.EXPIRED, D(0)),)


def test_unresolved_order_found_open_becomes_open() -> None:
    """An UNRESOLVED order (its submit timed out) listed open on the exchange becomes OPEN."""
    a = Holder("a")
    req = placed(a, 1, S.UNRESOLVED)
    report = assert_settled([a], venue(open_orders=[ex_order(req, X.OPEN)]))
    assert report.corrections == (SettleOrder("a", req.client_order_id, S.UNRESOLVED, S.OPEN, D(0)),)
    assert a.closed == []


def test_open_order_probed_canceled_is_canceled_with_its_filled_amount() -> None:
    """An OPEN order probed CANCELED after a partial fill the ledger applied is CANCELED with that amount."""
    a = Holder("a")
    req = placed(a, 1)
    fill = trade(3, req, "0.3")
    a.ledger.apply_fill(fill)
    v = venue(
        probed={req.client_order_id: ex_order(req, X.CANCELED, "0.3")},
        trades=[fill],
        balances={"USDT": "969.9", "BTC": "0.3"},
    )
    report = assert_settled([a], v)
    assert report.corrections == (SettleOrder("a", req.client_order_id, S.OPEN, S.CANCELED, D("0.3")),)
    order = a.ledger.order(req.client_order_id)
    assert order is not None and (order.state, order.filled) == (S.CANCELED, D("0.3"))
    assert [o.client_order_id for o in a.closed] == [req.client_order_id]


def test_closed_order_with_missed_fills_gets_the_fills_and_no_settlement() -> None:
    """A FILLED order's missed fills are applied; they move it to FILLED, so no redundant settlement is made."""
    a = Holder("a")
    req = placed(a, 1)
    fills = [trade(1, req, "0.25"), trade(2, req, "0.75")]
    v = venue(
        probed={req.client_order_id: ex_order(req, X.CLOSED, "1")},
        trades=fills,
        balances={"USDT": "899.8", "BTC": "1"},
    )
    report = assert_settled([a], v)
    assert report.corrections == tuple(ApplyFill("a", f) for f in fills)
    order = a.ledger.order(req.client_order_id)
    assert order is not None and (order.state, order.filled) == (S.FILLED, D(1))
    assert a.closed == []


def test_pending_order_filled_while_we_were_down() -> None:
    """A PENDING order (crash in flight) that filled completely gets its fills and ends FILLED."""
    a = Holder("a")
    req = placed(a, 1, S.PENDING)
    fill = trade(9, req, "1")
    v = venue(
        probed={req.client_order_id: ex_order(req, X.CLOSED, "1")},
        trades=[fill],
        balances={"USDT": "899.9", "BTC": "1"},
    )
    report = assert_settled([a], v)
    assert report.corrections == (ApplyFill("a", fill),)
    order = a.ledger.order(req.client_order_id)
    assert order is not None and order.state is S.FILLED and order.exchange_order_id == "X1"


def test_our_order_the_ledger_lacks_is_adopted() -> None:
    """An open order of an earlier epoch of our books that the ledger does not know (a fallback to an older
    generation lost it) is adopted, and money is untouched."""
    a = Holder("a")
    lost = a.cid(5)
    a.ledger.begin_epoch("00beef")  # what loading a fallback generation does
    req = request(lost, Side.SELL, "0.5", "120")
    order = ex_order(req, X.OPEN)
    report = assert_settled([a], venue(open_orders=[order]))
    assert report.corrections == (AdoptOrder("a", order),)
    adopted = a.ledger.order(req.client_order_id)
    assert adopted is not None and (adopted.state, adopted.tag, adopted.filled) == (S.OPEN, "adopted", D(0))
    assert a.ledger.snapshot().sequence == 5  # never hands out its id again


def test_our_closed_order_known_only_from_its_fill_is_adopted_with_it() -> None:
    """A fill of an unknown order of ours adopts the (probed) order first, then applies the fill."""
    a = Holder("a")
    req = request(a.cid(2), amount="1", price=None)
    a.ledger.begin_epoch("00beef")  # placed by a lost newer generation of the books
    order, fill = ex_order(req, X.CLOSED, "1"), trade(4, req, "1")
    v = venue(probed={req.client_order_id: order}, trades=[fill], balances={"USDT": "899.9", "BTC": "1"})
    report = assert_settled([a], v)
    assert report.corrections == (AdoptOrder("a", order), ApplyFill("a", fill))
    adopted = a.ledger.order(req.client_order_id)
    assert adopted is not None and (adopted.state, adopted.filled) == (S.FILLED, D(1))


def test_foreign_order_is_external_and_untouched() -> None:
    """An open order and a fill with another prefix are reported as external; nothing is corrected."""
    a = Holder("a")
    req = request("web_123", Side.BUY, "1", "90")
    order = ex_order(req, X.OPEN)
    foreign_fill = trade(5, request("web_122", amount="1", price=None), "1")
    v = venue(open_orders=[order], trades=[foreign_fill], balances={"USDT": "5000", "BTC": "3"})
    report = assert_settled([a], v)
    assert report.corrections == ()
    assert report.external_orders == (order,)
    assert a.ledger.order("web_123") is None and a.ledger.order("web_122") is None


def test_other_operations_orders_are_foreign() -> None:
    """An order of the same strategy name in another operation has another prefix: external."""
    a = Holder("a")
    theirs = ex_order(request(client_order_id(order_prefix("other-op", "a"), 1)), X.OPEN)
    report = diff([a], venue(open_orders=[theirs], balances={"USDT": "1100", "BTC": "0"}))
    assert report.corrections == () and report.external_orders == (theirs,)


def test_exchange_holding_less_base_reduces_the_holdings() -> None:
    """A position closed by hand while the daemon was down: holdings are set down to what the exchange has."""
    a = Holder("a")
    a.ledger.set_holdings(D(1))
    report = assert_settled([a], venue(balances={"USDT": "1000", "BTC": "0.4"}))
    assert report.corrections == (SetHoldings("a", "BTC", D(1), D("0.4")),)
    assert report.external_surplus == {}
    assert a.ledger.snapshot().holdings == D("0.4")


def test_exchange_holding_less_quote_reduces_the_capital() -> None:
    """Quote missing on the exchange reduces the capital to match."""
    a = Holder("a")
    report = assert_settled([a], venue(balances={"USDT": "750", "BTC": "0"}))
    assert report.corrections == (SetCapital("a", "USDT", D(1000), D(750)),)


def test_a_missing_asset_counts_as_zero() -> None:
    """An asset the exchange does not list at all is held at zero."""
    a = Holder("a")
    a.ledger.set_holdings(D(2))
    report = diff([a], venue(balances={"USDT": "1000"}))
    assert report.corrections == (SetHoldings("a", "BTC", D(2), D(0)),)


def test_exchange_holding_more_is_only_reported() -> None:
    """More on the exchange than the ledgers claim is external surplus: reported, not corrected."""
    a = Holder("a")
    a.ledger.set_holdings(D(1))
    report = diff([a], venue(balances={"USDT": "1200", "BTC": "1.5"}))
    assert report.corrections == ()
    assert report.external_surplus == {"BTC": D("0.5"), "USDT": D(200)}


def test_shortfall_is_split_over_two_strategies_exactly() -> None:
    """A shortfall larger than one strategy's share is taken largest first, and the sum matches exactly."""
    a, b = Holder("a"), Holder("b")
    a.ledger.set_holdings(D("3"))
    b.ledger.set_holdings(D("2"))
    report = assert_settled([a, b], venue(balances={"USDT": "2000", "BTC": "0.75"}))
    assert report.corrections == (SetHoldings("a", "BTC", D(3), D(0)), SetHoldings("b", "BTC", D(2), D("0.75")))
    assert a.ledger.snapshot().holdings + b.ledger.snapshot().holdings == D("0.75")


def test_equal_claims_are_cut_in_name_order() -> None:
    """Of two equal claims the strategy whose name sorts first is cut first (a deterministic split)."""
    b, a = Holder("b"), Holder("a")
    a.ledger.set_holdings(D(2))
    b.ledger.set_holdings(D(2))
    report = diff([b, a], venue(balances={"USDT": "2000", "BTC": "3"}))
    assert report.corrections == (SetHoldings("a", "BTC", D(2), D(1)),)


def test_quote_shared_across_symbols_is_split_over_their_capital() -> None:
    """Strategies on different symbols share the quote asset; a USDT shortfall cuts the larger capital."""
    a, c = Holder("a", BTC, "600"), Holder("c", ETH, "400")
    report = diff([a, c], venue(balances={"USDT": "900", "BTC": "0", "ETH": "0"}))
    assert report.corrections == (SetCapital("a", "USDT", D(600), D(500)),)


def test_balances_are_compared_after_the_missed_fills() -> None:
    """A missed buy explains the exchange's lower quote: the fill is applied and no capital is cut."""
    a = Holder("a")
    req = placed(a, 1)
    fill = trade(1, req, "1", fee="0")
    v = venue(
        probed={req.client_order_id: ex_order(req, X.CLOSED, "1")}, trades=[fill], balances={"USDT": "900", "BTC": "1"}
    )
    assert diff([a], v).corrections == (ApplyFill("a", fill),)


def test_an_open_order_neither_listed_nor_probed_is_a_bug() -> None:
    """The monitor must probe every open ledger order missing from the open list; otherwise LocalStateError."""
    a = Holder("a")
    placed(a, 1)
    with pytest.raises(LocalStateError, match="neither listed open nor probed"):
        diff([a], venue())


def test_missed_fill_for_the_right_strategy_only() -> None:
    """Two strategies: each gets exactly its own missed fills, by prefix."""
    a, b = Holder("a"), Holder("b")
    ra, rb = placed(a, 1), placed(b, 1, S.PENDING)
    fa, fb = trade(1, ra, "1", fee="0"), trade(2, rb, "1", fee="0")
    a.ledger.apply_fill(fa)
    v = venue(
        probed={ra.client_order_id: ex_order(ra, X.CLOSED, "1"), rb.client_order_id: ex_order(rb, X.CLOSED, "1")},
        trades=[fa, fb],
        balances={"USDT": "1800", "BTC": "2"},
    )
    report = assert_settled([a, b], v)
    assert report.corrections == (ApplyFill("b", fb),)
    assert a.fills == [] and b.fills == [fb]


# ----------------------------------------------------------------------------- property: random histories

MARKETS = {
    BTC: MarketSpec(BTC, price_step=D("0.01"), amount_step=D("0.001"), liquidity=D("0.002")),
    ETH: MarketSpec(ETH, price_step=D("0.01"), amount_step=D("0.01"), liquidity=D("0.02")),
}
UNIT = {BTC: D(1), ETH: D("0.1")}
REF = {BTC: D(100), ETH: D(10)}
FEE_RATE = D("0.001")


class World:
    """A SimulatedExchange and three ledgers driven through one random history, with a foreign trader."""

    def __init__(self) -> None:
        self.holders = [
            Holder("a", BTC, "1000", "prop"),
            Holder("b", BTC, "1000", "prop"),
            Holder("c", ETH, "1000", "prop"),
        ]
        balances = {"USDT": D(4000), "BTC": D(1), "ETH": D(10)}  # 1000 USDT, 1 BTC and 10 ETH are someone else's
        self.ex = SimulatedExchange(MARKETS, balances, FEE_RATE)
        for h in self.holders:  # the books fell back once: orders of the lost generation carry epoch ""
            h.ledger.begin_epoch("0000a1")
        self.now = NOW
        for symbol, price in REF.items():
            self.ex.on_price(symbol, price, self.now)
        self.foreign = 0

    def owner(self, cid: str) -> Holder | None:
        return next((h for h in self.holders if _owns(h, cid)), None)

    def deliver(self, fills: list[Fill], delivered: list[bool]) -> None:
        """The stream: each fill reaches its ledger or is lost (a disconnect, a crash before the save)."""
        for fill, ok in zip(fills, delivered, strict=True):
            h = self.owner(fill.client_order_id)
            if ok and h is not None and h.ledger.order(fill.client_order_id) is not None:
                h.ledger.apply_fill(fill)

    def place(self, data: st.DataObject) -> None:
        who = data.draw(st.integers(0, 3), "who")
        side = data.draw(st.sampled_from(Side), "side")
        market = data.draw(st.booleans(), "market")
        h = self.holders[who] if who < 3 else None
        symbol = h.symbol if h is not None else data.draw(st.sampled_from([BTC, ETH]), "symbol")
        amount = MARKETS[symbol].amount_step * data.draw(st.integers(1, 4), "steps")
        price = None if market else REF[symbol] + UNIT[symbol] * data.draw(st.integers(-3, 3), "ticks")
        if h is None:
            self.foreign += 1
            req = OrderRequest(
                f"web_{self.foreign}", symbol, side, OrderType.MARKET if market else OrderType.LIMIT, amount, price
            )
            try:
                _, fills = self.ex.place_order(req, self.now)
            except ExchangeRejected:
                return
            self.deliver(fills, [False] * len(fills))
            return
        view = h.ledger.snapshot()
        if (
            side is Side.SELL
            and view.holdings - sum((o.remaining for o in view.open_orders if o.side is Side.SELL), D(0)) < amount
        ):
            return
        fate = data.draw(st.sampled_from(["ack", "silent", "timeout", "unsent", "lost"]), "fate")
        seq = h.ledger.next_sequence()
        # "lost": placed by a newer generation of the books that a damaged disk lost (an earlier epoch)
        cid = client_order_id(h.old_prefixes[0], seq) if fate == "lost" else h.cid(seq)
        req = OrderRequest(cid, symbol, side, OrderType.MARKET if market else OrderType.LIMIT, amount, price)
        if fate != "lost":
            h.ledger.record_intent(req, self.now, tag="t")
        if fate == "unsent":
            return
        try:
            order, fills = self.ex.place_order(req, self.now)
        except ExchangeRejected:
            if fate == "ack":
                h.ledger.on_order_event(cid, E.SUBMIT_REJECTED, self.now)
            elif fate == "timeout":
                h.ledger.on_order_event(cid, E.SUBMIT_TIMEOUT, self.now)
            return
        if fate == "ack":
            h.ledger.on_order_event(cid, E.SUBMIT_ACK, self.now, order.exchange_order_id)
        elif fate == "timeout":
            h.ledger.on_order_event(cid, E.SUBMIT_TIMEOUT, self.now)
        self.deliver(fills, data.draw(st.lists(st.booleans(), min_size=len(fills), max_size=len(fills)), "stream"))

    def price(self, data: st.DataObject) -> None:
        symbol = data.draw(st.sampled_from([BTC, ETH]), "symbol")
        self.now += 1_000
        fills = self.ex.on_price(symbol, REF[symbol] + UNIT[symbol] * data.draw(st.integers(-4, 4), "ticks"), self.now)
        self.deliver(fills, data.draw(st.lists(st.booleans(), min_size=len(fills), max_size=len(fills)), "stream"))

    def cancel(self, data: st.DataObject) -> None:
        who = data.draw(st.integers(0, 3), "who")
        if who == 3:
            foreign = [o for o in self.ex.open_orders() if o.client_order_id.startswith("web_")]
            if foreign:
                o = data.draw(st.sampled_from(foreign), "order")
                self.ex.cancel_order(o.symbol, o.client_order_id, self.now)
            return
        h = self.holders[who]
        cancelable = [o for o in h.ledger.snapshot().open_orders if can_cancel(o.state)]
        if not cancelable:
            return
        cid = data.draw(st.sampled_from(cancelable), "order").client_order_id
        h.ledger.on_order_event(cid, E.CANCEL_REQUESTED, self.now)
        answer = data.draw(st.sampled_from(["ack", "silent", "timeout"]), "answer")
        try:
            self.ex.cancel_order(h.symbol, cid, self.now)
        except ExchangeRejected:
            event = E.CANCEL_REJECTED
        else:
            event = E.CANCEL_ACK if answer == "ack" else E.CANCEL_TIMEOUT
        if answer != "silent":
            h.ledger.on_order_event(cid, event, self.now)

    def venue(self, data: st.DataObject) -> tuple[VenueSnapshot, bool]:
        """What the exchange reports, with every order any ledger or trade names probed; maybe tampered."""
        listed = {o.client_order_id for o in self.ex.open_orders()}
        names = {
            o
            for h in self.holders
            for o in (
                *(x.client_order_id for x in h.ledger.history()),
                *(x.client_order_id for x in h.ledger.snapshot().open_orders),
            )
        }
        names |= {t.client_order_id for t in self.ex.trades()}
        probed = {cid: self.ex.order(cid) for cid in sorted(names - listed)}
        balances = self.ex.balances()
        tampered = False
        for asset in sorted(balances):
            if data.draw(st.integers(0, 5), f"tamper {asset}") == 0:  # withdrawn or sold by hand
                eighths = data.draw(st.integers(0, 8), f"eighths of {asset} kept")
                b = balances[asset]
                total = b.total * eighths / 8  # exact, like every amount an exchange reports
                balances[asset] = Balance(asset, max(total - b.used, D(0)), min(b.used, total))
                tampered = True
        at = self.now + IN_FLIGHT_MS  # reconciled once no request of the history can still be in flight
        return VenueSnapshot(tuple(self.ex.open_orders()), probed, tuple(self.ex.trades()), balances, at), tampered


def _owns(h: Holder, cid: str) -> bool:
    return any(cid.startswith(p) for p in (h.prefix, *h.old_prefixes))


def _expected_state(order: ExchangeOrder | None) -> set[OrderState]:
    if order is None:  # never placed; EXPIRED if the ledger had it past PENDING/UNRESOLVED (a cancel in flight)
        return {S.NOT_PLACED, S.REJECTED, S.EXPIRED}
    return {{X.OPEN: S.OPEN, X.CLOSED: S.FILLED, X.CANCELED: S.CANCELED}[order.status]}


def _claims(holders: list[Holder]) -> dict[str, D]:
    totals: dict[str, D] = defaultdict(D)
    for h in holders:
        snap = h.ledger.snapshot()
        totals[snap.base] += snap.holdings
        totals[snap.quote] += snap.capital
    return totals


def _replayed(h: Holder, trades: Iterable[Fill]) -> tuple[D, D, D]:
    """(capital, holdings, fees) the strategy has if each of its trades counted exactly once."""
    capital, holdings, fees = D(1000), D(0), D(0)
    for t in trades:
        if _owns(h, t.client_order_id):
            sign = D(1) if t.side is Side.BUY else D(-1)
            capital -= sign * t.cost + t.fee
            holdings += sign * t.amount
            fees += t.fee
    return capital, holdings, fees


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_histories_reconcile_to_the_exchange(data: st.DataObject) -> None:
    """After any history of placements, fills, cancels, lost messages and tampered balances, one pass of
    corrections makes the ledgers agree with the exchange, a second pass finds nothing, and foreign orders
    are never touched."""
    world = World()
    actions = {"place": world.place, "price": world.price, "cancel": world.cancel}
    for _ in range(data.draw(st.integers(0, 30), "steps")):
        actions[data.draw(st.sampled_from(sorted(actions)), "action")](data)
    v, tampered = world.venue(data)
    holders = world.holders
    report = diff(holders, v)
    for kind in sorted({type(c).__name__ for c in report.corrections}):
        event(kind)
    apply_all(holders, report)

    # (1) idempotent: the same venue needs nothing more
    assert diff(holders, v).corrections == ()
    # (2) orders match the exchange, every fill of ours counts exactly once, claims fit in the balances
    for h in holders:
        for order in (*h.ledger.history(), *h.ledger.snapshot().open_orders):
            seen = world.ex.order(order.client_order_id)
            assert order.state in _expected_state(seen), (order, seen)
            assert order.filled == (seen.filled if seen is not None else 0)
        ours = [t for t in v.trades if _owns(h, t.client_order_id)]
        assert all(h.ledger.has_applied(t.trade_id) for t in ours)
        capital, holdings, fees = _replayed(h, v.trades)
        snap = h.ledger.snapshot()
        assert snap.fees_paid == fees
        if not tampered:
            assert (snap.capital, snap.holdings) == (capital, holdings)
    for asset, claimed in _claims(holders).items():
        assert claimed <= v.balances[asset].total
    if not tampered:
        assert not any(isinstance(c, SetHoldings | SetCapital) for c in report.corrections)
    # (3) foreign orders are reported, never touched
    foreign_open = tuple(o for o in v.open_orders if o.client_order_id.startswith("web_"))
    assert report.external_orders == foreign_open
    assert not any(_names(c).startswith("web_") for c in report.corrections)
    foreign_ids = {o.client_order_id for o in foreign_open} | {
        t.client_order_id for t in v.trades if t.client_order_id.startswith("web_")
    }
    assert not any(h.ledger.order(cid) for h in holders for cid in foreign_ids)


def _names(c: Correction) -> str:
    if isinstance(c, AdoptOrder):
        return c.order.client_order_id
    if isinstance(c, ApplyFill):
        return c.fill.client_order_id
    if isinstance(c, SettleOrder):
        return c.client_order_id
    return ""


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_corrections_are_listed_in_an_applicable_order(data: st.DataObject) -> None:
    """Adoptions precede fills, fills precede settlements, settlements precede balance corrections."""
    world = World()
    for _ in range(data.draw(st.integers(0, 20), "steps")):
        getattr(world, data.draw(st.sampled_from(["place", "price", "cancel"]), "action"))(data)
    v, _ = world.venue(data)
    rank = {AdoptOrder: 0, ApplyFill: 1, SettleOrder: 2, SetHoldings: 3, SetCapital: 3}
    ranks = [rank[type(c)] for c in diff(world.holders, v).corrections]
    assert ranks == sorted(ranks)


# ----------------------------------------------------------------------------- the monitor on a paper exchange


class Idle(Strategy):
    """A strategy that never trades: the monitor tests place orders by hand."""

    kind = "idle"

    def state_snapshot(self) -> dict[str, Any]:
        return {}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        del state

    def on_tick(self, view: StrategyView) -> list[Signal]:
        return []


class Clock:
    """An injected millisecond clock."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def paper_config() -> PaperConfig:
    def market(symbol: str, price: str, step: str) -> PaperMarketConfig:
        return PaperMarketConfig(
            symbol=symbol,
            start_price=D(price),
            volatility=D("0.01"),
            liquidity=D("100"),
            price_step=D("0.01"),
            amount_step=D(step),
        )

    return PaperConfig(
        seed=1,
        tick_interval_s=0.01,
        stream_latency_s=0.0,
        fee_rate=D("0.001"),
        balances={"USDT": D("4000"), "BTC": D("0"), "ETH": D("0")},  # 1000 USDT are not the strategies'
        markets={BTC: market(BTC, "100", "0.001"), ETH: market(ETH, "10", "0.01")},
        replay_csv=None,
    )


class Rig:
    """A started paper environment, three StrategyWorkers (a, b on BTC/USDT; c on ETH/USDT) and a monitor."""

    def __init__(self, state_dir: StateDirectory) -> None:
        self.dir, self.clock = state_dir, Clock()
        self.env = MovingPaper(paper_config(), state_dir.file("paper-exchange.state.json"), self.clock)
        self.published: list[Event] = []
        self.workers = [self._worker(name, symbol) for name, symbol in (("a", BTC), ("b", BTC), ("c", ETH))]
        self.monitor = ReconciliationMonitor(self.env, self.workers, self.publish, self.clock, "tick")

    def _worker(self, name: str, symbol: str) -> StrategyWorker:
        w = StrategyWorker(
            strategy=Idle(name, symbol, {}),
            capital=D(1000),
            env=self.env,
            state_file=self.dir.file(f"{name}.state.json"),
            prefix=order_prefix("test", name),
            publish=self.publish,
            clock_ms=self.clock,
        )
        w.load_state()
        return w

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    def worker(self, name: str) -> StrategyWorker:
        return next(w for w in self.workers if w.name == name)

    async def intent(self, name: str, side: Side, amount: str, price: str | None, *, send: bool = True) -> str:
        """Record an order durably and (optionally) send it, telling the ledger nothing about the outcome."""
        w = self.worker(name)
        cid = client_order_id(w.prefix, w.ledger.next_sequence())
        req = OrderRequest(
            cid,
            w.symbol,
            side,
            OrderType.MARKET if price is None else OrderType.LIMIT,
            D(amount),
            None if price is None else D(price),
        )
        w.ledger.record_intent(req, self.clock.now - IN_FLIGHT_MS, tag="t")  # long enough ago to be settled
        await w.save_state()
        if send:
            await self.env.create_order(req)
        return cid

    async def scenario(self) -> dict[str, str]:
        """While the daemon 'was down': a filled buy, a resting sell, a lost intent, a lost order, a foreign order."""
        await self.env.start()
        filled = await self.intent("a", Side.BUY, "2", None)  # market buy, fills at once: fill missed
        resting = await self.intent("b", Side.BUY, "1", "90")  # rests; its ack never reached the ledger
        never_sent = await self.intent("c", Side.BUY, "5", "9", send=False)
        w = self.worker("a")
        lost = client_order_id(w.prefix, 7)  # sent, but the intent's save was lost with a damaged disk
        await self.env.create_order(OrderRequest(lost, BTC, Side.SELL, OrderType.LIMIT, D("0.5"), D("120")))
        w.ledger.begin_epoch("00dead")  # loading the older generation that survived starts a new epoch
        await w.save_state()
        await self.env.create_order(OrderRequest("web_1", ETH, Side.BUY, OrderType.LIMIT, D("1"), D("5")))
        return {"filled": filled, "resting": resting, "never_sent": never_sent, "lost": lost}


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with StateDirectory.open(tmp_path / "state") as d:
        yield d


def test_monitor_makes_one_request_of_each_kind_per_pass(state_dir: StateDirectory) -> None:
    """One open-orders and one balances query, one trade query per symbol, one probe per unexplained order."""
    rig = Rig(state_dir)

    async def main() -> Report:
        ids = await rig.scenario()
        rig.env.calls.clear()
        report = await rig.monitor.reconcile("startup")
        assert rig.env.probes == Counter({ids["filled"]: 1, ids["never_sent"]: 1})
        return report

    report = run(main)
    assert rig.env.calls == Counter(
        {"openOrders": 1, "account": 2, f"myTrades {BTC}": 1, f"myTrades {ETH}": 1, "order": 2}
    )
    assert [type(c).__name__ for c in report.corrections] == ["AdoptOrder", "ApplyFill", "SettleOrder", "SettleOrder"]


def test_monitor_corrects_persists_and_announces(state_dir: StateDirectory) -> None:
    """The corrections are applied, saved to every touched strategy's file and announced, then summarized."""
    rig = Rig(state_dir)

    async def main() -> dict[str, str]:
        ids = await rig.scenario()
        await rig.monitor.reconcile("startup")
        return ids

    ids = run(main)
    a, b, c = (rig.worker(n) for n in "abc")
    filled, lost = a.ledger.order(ids["filled"]), a.ledger.order(ids["lost"])
    assert filled is not None and filled.state is S.FILLED
    assert lost is not None and (lost.state, lost.tag) == (S.OPEN, "adopted")
    resting, never_sent = b.ledger.order(ids["resting"]), c.ledger.order(ids["never_sent"])
    assert resting is not None and resting.state is S.OPEN
    assert never_sent is not None and never_sent.state is S.NOT_PLACED
    assert a.ledger.snapshot().holdings == D(2)
    for w in (a, b, c):
        assert inspect(w.state_file.path).record.state["ledger"] == w.ledger.to_state()
    changed = [e.strategy for e in rig.published if isinstance(e, LedgerStateChanged)]
    assert sorted(changed) == ["a", "b", "c"]
    done = [e for e in rig.published if isinstance(e, ReconciliationCompleted)]
    kinds = (("AdoptOrder", 1), ("ApplyFill", 1), ("SettleOrder", 2))  # what the metrics count by kind
    assert done == [ReconciliationCompleted("startup", 4, NOW, kinds)]
    assert (rig.monitor.passes, rig.monitor.last_trigger, rig.monitor.last_at_ms) == (1, "startup", NOW)


def test_monitor_logs_every_correction_critical_with_before_and_after(
    state_dir: StateDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    """Each correction is one CRITICAL line with what it did, the state before and after; then a summary line.
    A holdings cut waits for a second consistent view: it is proposed by one pass and applied by the next."""
    rig = Rig(state_dir)

    async def main() -> list[Report]:
        await rig.scenario()
        w = rig.worker("a")
        w.ledger.set_holdings(D("2.5"))  # believes more than the account holds (sold by hand)
        await w.save_state()
        with caplog.at_level(logging.INFO):
            first = await rig.monitor.reconcile("startup")
            assert rig.monitor.confirming and [type(c) for c in first.deferred_cuts] == [SetHoldings]
            rig.clock.now += CONFIRM_AFTER_MS  # the confirming view comes a moment later, not within the lag
            return [first, await rig.monitor.reconcile("follow-up")]

    reports = run(main)
    applied = [c for r in reports for c in r.corrections]
    assert [type(c) for c in reports[1].corrections] == [SetHoldings]
    lines = [r for r in caplog.records if r.name in ("s1mpled.strategy_worker", "s1mpled.reconciliation")]
    corrections = [r for r in lines if getattr(r, "EVENT", None) == "RECONCILIATION_CORRECTION"]
    assert len(corrections) == len(applied) == 5
    for record, c in zip(corrections, applied, strict=True):
        message = record.getMessage()
        assert record.levelno == logging.CRITICAL
        assert c.describe() in message and "before: " in message and "after: " in message
        assert getattr(record, "STRATEGY", None) == c.strategy
    holdings = next(r.getMessage() for r, c in zip(corrections, applied, strict=True) if isinstance(c, SetHoldings))
    assert "before: holdings 4.5 BTC" in holdings and "after: holdings 2.0 BTC" in holdings
    fill = next(r.getMessage() for r, c in zip(corrections, applied, strict=True) if isinstance(c, ApplyFill))
    assert "pending (filled 0)" in fill.split("after:")[0] and "filled (filled 2)" in fill.split("after:")[1]
    summary = [r for r in lines if getattr(r, "EVENT", None) == "RECONCILIATION_COMPLETED"]
    assert len(summary) == 2 and all(r.levelno == logging.CRITICAL for r in summary)
    assert "reconciliation (startup): 4 correction(s), 1 external order(s)" in summary[0].getMessage()


def test_monitor_second_pass_corrects_nothing(state_dir: StateDirectory, caplog: pytest.LogCaptureFixture) -> None:
    """Running the monitor twice against the same exchange corrects nothing the second time (summary at INFO)."""
    rig = Rig(state_dir)

    async def main() -> tuple[Report, Report, list[int]]:
        await rig.scenario()
        first = await rig.monitor.reconcile("startup")
        generations = [w.state_file.generation for w in rig.workers]
        caplog.clear()
        with caplog.at_level(logging.INFO, "s1mpled.reconciliation"):
            second = await rig.monitor.reconcile("schedule")
        assert [w.state_file.generation for w in rig.workers] == generations  # nothing saved
        return first, second, generations

    first, second, _ = run(main)
    assert first.corrections and second.corrections == ()
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert rig.published[-1] == ReconciliationCompleted("schedule", 0, NOW)


def test_failing_query_raises_and_changes_nothing(state_dir: StateDirectory) -> None:
    """A failed query aborts the pass: it raises, no ledger changes, nothing is saved or published."""
    rig = Rig(state_dir)
    env = rig.env

    async def main() -> None:
        await rig.scenario()
        before = [w.ledger.to_state() for w in rig.workers]
        generations = [inspect(w.state_file.path).record.generation for w in rig.workers]
        env.failing = {"openOrders"}
        with pytest.raises(ExchangeUnavailable):
            await rig.monitor.reconcile("startup")
        assert [w.ledger.to_state() for w in rig.workers] == before
        assert [inspect(w.state_file.path).record.generation for w in rig.workers] == generations
        assert not any(w.lock.locked() for w in rig.workers)
        assert rig.published == [] and rig.monitor.passes == 0 and rig.monitor.last_report is None

    run(main)


def test_scheduled_pass_failure_is_logged_not_raised(
    state_dir: StateDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    """A periodic pass whose query fails logs an error and leaves the next pass to try again."""
    rig = Rig(state_dir)
    env = rig.env

    async def main() -> None:
        await rig.scenario()
        env.failing = {"openOrders"}
        with caplog.at_level(logging.ERROR, "s1mpled.reconciliation"):
            await rig.monitor._on_schedule(ScheduledEvent("tick", NOW))
        env.failing = set()
        await rig.monitor._on_schedule(ScheduledEvent("other", NOW))  # not our schedule: no pass
        assert rig.monitor.passes == 0
        await rig.monitor._on_schedule(ScheduledEvent("tick", NOW))
        assert rig.monitor.passes == 1

    run(main)
    assert any(getattr(r, "EVENT", None) == "RECONCILIATION_FAILED" for r in caplog.records)


def test_foreign_fills_are_neither_probed_nor_applied(state_dir: StateDirectory) -> None:
    """A foreign order that traded is not queried and its fill goes nowhere."""
    rig = Rig(state_dir)

    async def main() -> Report:
        await rig.env.start()
        await rig.env.create_order(OrderRequest("web_9", BTC, Side.BUY, OrderType.MARKET, D("1")))
        return await rig.monitor.reconcile("startup")

    report = run(main)
    assert rig.env.probes == Counter()
    assert report.corrections == ()
    assert report.external_surplus == {"BTC": D(1), "USDT": D("899.9")}  # 1000 of its own, minus 100 and the fee


def test_stream_fill_overtaking_the_pass_is_not_applied_twice(state_dir: StateDirectory) -> None:
    """Fills the stream applies before a pass are not applied again by it (the ledger de-duplicates)."""
    rig = Rig(state_dir)

    async def main() -> Report:
        await rig.env.start()
        cid = await rig.intent("a", Side.BUY, "1", None)
        w = rig.worker("a")
        w.ledger.on_order_event(cid, E.SUBMIT_ACK, NOW)
        for fill in await rig.env.fetch_trades(BTC, None):
            w.ledger.apply_fill(fill)
        return await rig.monitor.reconcile("reconnect:user")

    report = run(main)
    assert report.corrections == ()
    assert rig.worker("a").ledger.snapshot().holdings == D(1)


def test_a_fill_the_stream_skipped_is_found_even_after_later_fills_arrived(state_dir: StateDirectory) -> None:
    """The catch-up starts after the last *reconciled* trade, so fill N is fetched even when N+1 was streamed."""
    rig = Rig(state_dir)

    async def main() -> StrategyWorker:
        await rig.env.start()
        await rig.monitor.reconcile("startup")
        w = rig.worker("c")  # alone on ETH/USDT: its own cursor decides
        first = await rig.intent("c", Side.BUY, "1", None)  # fills at once; the stream "loses" this fill
        second = await rig.intent("c", Side.BUY, "1", None)
        for cid in (first, second):
            w.ledger.on_order_event(cid, OrderEvent.SUBMIT_ACK, NOW)
        [late] = [t for t in rig.env.exchange.trades() if t.client_order_id == second]
        assert w.ledger.apply_fill(late)  # only the later fill arrived through the stream
        report = await rig.monitor.reconcile("schedule")
        assert [type(c).__name__ for c in report.corrections] == ["ApplyFill"]
        assert (await rig.monitor.reconcile("schedule")).corrections == ()
        return w

    w = run(main)
    assert w.ledger.snapshot().holdings == D(2)
    assert w.ledger.snapshot().reconciled_trade_id == rig.env.exchange.trades()[-1].trade_id


def test_an_order_whose_request_may_still_be_in_flight_is_left_unsettled() -> None:
    """A timed-out order the exchange does not show yet is not written off until no request can still land."""
    a = Holder("a")
    req = placed(a, 1, S.PENDING)
    young = VenueSnapshot((), {req.client_order_id: None}, (), {"USDT": Balance("USDT", D(1000), D(0))}, 2 + 1000)
    report = reconcile(facts([a], young), young)
    assert report.corrections == () and report.unsettled == (req.client_order_id,)
    old = replace(young, at_ms=2 + IN_FLIGHT_MS)
    assert reconcile(facts([a], old), old).corrections == (
        SettleOrder("a", req.client_order_id, S.PENDING, S.NOT_PLACED, D(0)),
    )


def test_an_order_written_off_that_the_exchange_shows_filled_is_revived() -> None:
    """If a request landed after we declared it NOT_PLACED, its fill revives it: settle, then apply, no crash."""
    a = Holder("a")
    req = placed(a, 1, S.PENDING)
    a.ledger.on_order_event(req.client_order_id, E.PROBE_NOT_FOUND, 3)
    filled = ex_order(req, X.CLOSED, filled=str(req.amount))
    v = venue(probed={req.client_order_id: filled}, trades=[trade(1, req, str(req.amount))])
    report = assert_settled([a], v)
    assert [type(c).__name__ for c in report.corrections[:2]] == ["SettleOrder", "ApplyFill"]
    order = a.ledger.order(req.client_order_id)
    assert order is not None and order.state is S.FILLED
