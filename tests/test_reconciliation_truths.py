"""Reconciliation against what real exchanges do: torn views, fees in any asset, unmapped statuses, late
orders, epochs and split brain. Each test names the bug of the first version it pins down."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from s1mpled.config import PaperConfig, PaperMarketConfig
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.errors import ExchangeUnavailable, LocalStateError
from s1mpled.events import Event, ScheduledEvent
from s1mpled.ledger import StrategyLedger
from s1mpled.model import (
    Balance,
    ExchangeOrder,
    ExchangeOrderStatus,
    Fill,
    OrderRequest,
    OrderType,
    Side,
    UnparsedOrder,
)
from s1mpled.orders import OrderEvent, OrderState, client_order_id, order_prefix, progress
from s1mpled.reconciliation import (
    CONFIRM_AFTER_MS,
    AdoptOrder,
    ApplyFill,
    SetCapital,
    SetHoldings,
    SettleOrder,
    VenueSnapshot,
    apply_correction,
    reconcile,
    total_claims,
)
from s1mpled.reconciliation_monitor import ReconciliationMonitor
from s1mpled.state import StateDirectory
from s1mpled.strategies.base import PlaceOrder, Signal, Strategy, StrategyView
from s1mpled.strategy_worker import StrategyWorker
from tests.moving_paper import MovingPaper
from tests.test_reconciliation import (
    BTC,
    ETH,
    NOW,
    Holder,
    apply_all,
    diff,
    ex_order,
    facts,
    placed,
    request,
    run,
    trade,
    venue,
)

S, E = OrderState, OrderEvent
BNB = "BNB/USDT"


# ----------------------------------------------------------------------------- orders only move forward


def test_a_listing_older_than_the_fill_never_reopens_a_filled_order() -> None:
    """Bug: the open-orders listing (read before a fill) turned the just-FILLED order back into OPEN with
    filled 0, reserving its quote twice. Now the fill decides and the order stays FILLED."""
    a = Holder("a")
    req = placed(a, 1, amount="1", price="100")
    listing = ex_order(req, ExchangeOrderStatus.OPEN, "0")  # read before the fill
    fill = trade(1, req, "1", fee="0.1")  # read after it
    v = venue(open_orders=[listing], trades=[fill], balances={"USDT": "899.9", "BTC": "1"})
    report = diff([a], v)
    apply_all([a], report)
    order = a.ledger.order(req.client_order_id)
    assert order is not None and (order.state, order.filled) == (S.FILLED, D(1))
    assert not any(isinstance(c, SettleOrder) for c in report.corrections)
    assert a.ledger.snapshot().reserved_quote == 0


def test_filled_moves_only_by_applied_fills_never_by_the_exchanges_figure() -> None:
    """An exchange that already reports a partial fill whose trade we have not read yet does not set
    ``filled`` (the trade would later count it twice and call the order FILLED); the order waits."""
    a = Holder("a")
    req = placed(a, 1, amount="1", price="100")
    ahead = ex_order(req, ExchangeOrderStatus.CANCELED, "0.5")
    report = diff([a], venue(probed={req.client_order_id: ahead}))
    assert report.corrections == () and report.unsettled == (req.client_order_id,)


def test_a_finished_order_listed_open_is_a_contradiction_never_applied() -> None:
    """A CANCELED order the exchange lists open is reported, not moved backwards."""
    a = Holder("a")
    req = placed(a, 1)
    a.ledger.on_order_event(req.client_order_id, E.CANCEL_REQUESTED, 3)
    a.ledger.on_order_event(req.client_order_id, E.CANCEL_ACK, 4)
    report = diff([a], venue(open_orders=[ex_order(req, ExchangeOrderStatus.OPEN)]))
    assert report.corrections == ()
    assert report.contradictions and req.client_order_id in report.contradictions[0]


def test_applying_a_settlement_after_the_order_moved_on_is_a_no_op() -> None:
    """apply_correction re-checks: a settlement computed before a fill finished the order changes nothing."""
    a = Holder("a")
    req = placed(a, 1, amount="1")
    stale = SettleOrder("a", req.client_order_id, S.OPEN, S.OPEN, D(0))
    assert apply_correction(a.ledger, ApplyFill("a", trade(1, req, "1")), NOW) is not None
    assert apply_correction(a.ledger, stale, NOW) is None
    order = a.ledger.order(req.client_order_id)
    assert order is not None and order.state is S.FILLED and progress(order.state) == 2


# ----------------------------------------------------------------------------- balances only from a consistent view


def test_a_view_that_moved_while_read_cuts_nothing() -> None:
    """Bug: balances read before a fill and trades read after it made one pass cut the holdings to zero for
    good. An inconsistent view (the balances moved while the trades were read) applies the fill and no cut."""
    a = Holder("a")
    req = placed(a, 1, amount="1", price="100")
    fill = trade(1, req, "1", fee="0.1")
    torn = venue(open_orders=[], probed={req.client_order_id: ex_order(req, ExchangeOrderStatus.CLOSED, "1")},
                 trades=[fill], balances={"USDT": "1000", "BTC": "0"})  # fmt: skip
    consistent = diff([a], torn)
    assert any(isinstance(c, SetHoldings) for c in consistent.corrections)  # what the old pass applied
    moved = reconcile(facts([a], torn), replace(torn, consistent=False))
    assert [type(c) for c in moved.corrections] == [ApplyFill]
    assert not moved.balances_checked


# ----------------------------------------------------------------------------- fees in any asset


def _bnb_fill(h: Holder, tid: int, fee: str) -> Fill:
    """A buy of 1 at 100 of ``h``'s first order, its fee charged in BNB."""
    return Fill(str(tid), h.cid(1), "X1", h.symbol, Side.BUY, D(100), D(1), D(fee), "BNB", NOW)


def test_a_fee_paid_in_bnb_is_never_cut_from_the_strategy_that_owns_bnb() -> None:
    """Bug: A's BNB fee lowered the account's BNB and reconciliation cut it from C, which trades BNB/USDT.
    A's fee is A's debt in BNB: the claims add up and nothing is cut -- on an account with no outside money."""
    a, c = Holder("a", BTC), Holder("c", BNB)
    for h in (a, c):
        placed(h, 1, amount="1", price="100", symbol=h.symbol)
    a_fill, c_fill = _bnb_fill(a, 1, "0.01"), _bnb_fill(c, 2, "0.001")
    for h, f in ((a, a_fill), (c, c_fill)):
        assert h.ledger.apply_fill(f)
    # no outside money: the account holds exactly what the two strategies' fills left
    v = venue(trades=[a_fill, c_fill], balances={"USDT": "1800", "BTC": "1", "BNB": "0.989"})
    report = diff([a, c], v)
    assert report.corrections == () and report.external_surplus == {}
    assert a.ledger.snapshot().claims() == {"BTC": D(1), "USDT": D(900), "BNB": D("-0.01")}
    # what both claim together is the account, to the last unit: C's BNB less A's debt in it
    assert total_claims(h.ledger.snapshot() for h in (a, c)) == {"BTC": D(1), "USDT": D(1800), "BNB": D("0.989")}


def test_a_missed_fill_with_a_base_fee_books_the_fee_in_holdings() -> None:
    """Binance charges a buy's fee in the base asset: the missed fill's fee lowers holdings, capital pays cost."""
    a = Holder("a")
    req = placed(a, 1, amount="1", price="100")
    fill = Fill("1", req.client_order_id, "X1", BTC, Side.BUY, D(100), D(1), D("0.001"), "BTC", NOW)
    closed = ex_order(req, ExchangeOrderStatus.CLOSED, "1")
    report = diff(
        [a], venue(trades=[fill], probed={req.client_order_id: closed}, balances={"USDT": "900", "BTC": "0.999"})
    )
    assert [type(c) for c in report.corrections] == [ApplyFill]
    apply_all([a], report)
    snap = a.ledger.snapshot()
    assert (snap.holdings, snap.capital) == (D("0.999"), D(900))


# ----------------------------------------------------------------------------- statuses ccxt does not map


def test_our_order_in_an_unknown_status_is_open_status_unknown_never_written_off() -> None:
    """A PENDING order the exchange lists as PENDING_NEW exists: it becomes OPEN and is reported unknown."""
    a = Holder("a")
    req = placed(a, 1, S.PENDING)
    odd = _unknown(ex_order(req, ExchangeOrderStatus.UNKNOWN))
    report = diff([a], venue(open_orders=[odd]))
    assert report.corrections == (SettleOrder("a", req.client_order_id, S.PENDING, S.OPEN, D(0)),)
    assert report.unknown_status == (odd,)


def test_an_unreadable_listed_order_of_ours_is_never_written_off_and_a_foreign_one_is_ignored() -> None:
    """One order that does not parse fails nothing: ours stays as it is (it is listed, so it exists)."""
    a = Holder("a")
    req = placed(a, 1)
    ours, foreign = UnparsedOrder(req.client_order_id, BTC, "side 'long'"), UnparsedOrder("web_9", None, "no id")
    v = VenueSnapshot((), {}, (), {"USDT": Balance("USDT", D(1000), D(0))}, NOW, True, (ours, foreign))
    report = reconcile(facts([a], v), v)
    assert report.corrections == () and report.unreadable == (ours,)


def _unknown(o: ExchangeOrder) -> ExchangeOrder:
    return replace(o, raw_status="PENDING_NEW")


# ----------------------------------------------------------------------------- late orders


def test_a_written_off_order_that_turns_up_open_is_revived_with_its_tag() -> None:
    """Bug: an order declared NOT_PLACED that later appeared open was ignored (nobody owned or cancelled it).
    It is revived into its strategy: open again, its tag kept, its reservation counted."""
    a = Holder("a")
    req = placed(a, 1, S.PENDING, amount="1", price="100")
    a.ledger.on_order_event(req.client_order_id, E.PROBE_NOT_FOUND, 3)
    report = diff([a], venue(open_orders=[ex_order(req, ExchangeOrderStatus.OPEN)]))
    assert report.corrections == (SettleOrder("a", req.client_order_id, S.NOT_PLACED, S.OPEN, D(0), revive=True),)
    applied = apply_correction(a.ledger, report.corrections[0], NOW)
    assert applied is not None and applied.revived is not None and applied.revived.tag == ""
    assert a.ledger.snapshot().reserved_quote == D(100)


# ----------------------------------------------------------------------------- epochs and split brain


def test_fresh_books_under_a_reused_name_do_not_adopt_the_old_books_orders() -> None:
    """Bug: fresh books with a strategy name reused on another symbol tried to adopt the old books' orders by
    prefix ("cannot adopt", exit 70 at every start). Another epoch's orders are foreign."""
    old_books = Holder("a", BTC)
    old_books.ledger.begin_epoch("aaaaaa")
    old_order = ex_order(request(old_books.cid(3), symbol=BTC), ExchangeOrderStatus.OPEN)
    fresh = Holder("a", ETH)
    fresh.ledger.begin_epoch("bbbbbb")
    report = diff([fresh], venue(open_orders=[old_order], balances={"USDT": "1000", "ETH": "0"}))
    assert report.corrections == () and report.intruders == ()
    assert report.external_orders == (old_order,)


def test_an_order_of_our_current_epoch_that_no_ledger_placed_is_an_intruder() -> None:
    """Split brain: an open order with these books' current prefix that the ledger never recorded was placed
    by another process trading the same books. It is not adopted, its fills are not applied."""
    a = Holder("a")
    a.ledger.begin_epoch("cccccc")
    req = request(a.cid(9), Side.SELL, "0.5", "120")
    intruder = ex_order(req, ExchangeOrderStatus.OPEN)
    report = diff([a], venue(open_orders=[intruder], trades=[trade(5, req, "0.1")]))
    assert report.intruders == (intruder,) and report.corrections == ()


def test_an_order_of_an_earlier_epoch_is_adopted() -> None:
    """An order of an earlier epoch of these books (placed by a generation a fallback lost) is ours: adopted."""
    a = Holder("a")
    req = request(a.cid(9), Side.SELL, "0.5", "120")
    a.ledger.begin_epoch("dddddd")
    order = ex_order(req, ExchangeOrderStatus.OPEN)
    assert diff([a], venue(open_orders=[order])).corrections == (AdoptOrder("a", order),)


def test_a_ledger_round_trips_its_epochs_and_refuses_a_reused_one() -> None:
    ledger = StrategyLedger("a", BTC, D(1), epoch="0a0b0c", created_ms=5)
    ledger.begin_epoch("0d0e0f")
    again = StrategyLedger.from_state(ledger.to_state())
    assert (again.epochs, again.created_ms) == (("0a0b0c", "0d0e0f"), 5)
    with pytest.raises(LocalStateError):
        again.begin_epoch("0a0b0c")
    legacy = ledger.to_state()
    del legacy["epochs"], legacy["created_ms"]
    assert StrategyLedger.from_state(legacy).epochs == ("",)


# ----------------------------------------------------------------------------- the monitor on a moving exchange


def _exact_config() -> PaperConfig:
    """No outside money: the account holds exactly the strategies' capital."""

    def market(symbol: str, price: str, step: str) -> PaperMarketConfig:
        return PaperMarketConfig(symbol, D(price), D("0.01"), D("100"), D("0.01"), D(step))

    return PaperConfig(
        seed=1,
        tick_interval_s=0.01,
        stream_latency_s=0.0,
        fee_rate=D("0.001"),
        balances={"USDT": D("2000"), "BTC": D("0"), "ETH": D("0")},
        markets={BTC: market(BTC, "100", "0.001"), ETH: market(ETH, "10", "0.01")},
        replay_csv=None,
    )


class Clock:
    now = NOW + 60_000

    def __call__(self) -> int:
        return self.now


class Idle(Strategy):
    kind = "idle"

    def state_snapshot(self) -> dict[str, Any]:
        return {}

    def restore_state(self, state: Any) -> None:
        pass


class Pair:
    """Two workers (buyer on BTC, seller on ETH) over a MovingPaper with no outside money."""

    def __init__(self, state_dir: StateDirectory) -> None:
        self.clock = Clock()
        self.env = MovingPaper(_exact_config(), state_dir.file("paper.state.json"), self.clock)
        self.published: list[Event] = []
        self.halts: list[str] = []
        self.workers = [self._worker(state_dir, n, s) for n, s in (("buyer", BTC), ("seller", ETH))]

        async def fence(reason: str) -> None:
            self.halts.append(reason)

        self.monitor = ReconciliationMonitor(self.env, self.workers, self.publish, self.clock, "tick", fence=fence)

    def _worker(self, state_dir: StateDirectory, name: str, symbol: str) -> StrategyWorker:
        w = StrategyWorker(
            strategy=Idle(name, symbol, {}), capital=D(1000), env=self.env,
            state_file=state_dir.file(f"{name}.state.json"), prefix=order_prefix("t", name),
            publish=self.publish, clock_ms=self.clock,
        )  # fmt: skip
        w.load_state()
        return w

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    async def place(self, w: StrategyWorker, side: Side, amount: str, price: str) -> str:
        cid = client_order_id(w.prefix, w.ledger.next_sequence())
        req = OrderRequest(cid, w.symbol, side, OrderType.LIMIT, D(amount), D(price))
        w.ledger.record_intent(req, self.clock.now, tag="level")
        placed = await self.env.create_order(req)
        w.ledger.on_order_event(cid, E.SUBMIT_ACK, self.clock.now, placed.exchange_order_id)
        await w.save_state()
        return cid


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with StateDirectory.open(tmp_path / "state") as d:
        yield d


def _books_equal_exchange(p: Pair) -> None:
    totals = total_claims(w.ledger.snapshot() for w in p.workers)
    for asset, b in p.env.exchange.balances().items():
        assert totals.get(asset, D(0)) == b.total, (asset, totals, b)


@pytest.mark.parametrize("after", range(1, 8))
def test_a_fill_between_any_two_requests_of_a_pass_never_corrupts_the_books(
    state_dir: StateDirectory, after: int
) -> None:
    """Bug: a fill landing between the balance and the trade request cut a strategy's holdings (buy) or capital
    to zero for good. Whichever request N it follows, no pass cuts, no order moves backwards, and once the
    exchange is quiet the books equal the exchange exactly -- on an account with no outside money."""
    p = Pair(state_dir)

    async def main() -> None:
        await p.env.start()
        buyer = p.workers[0]
        cid = await p.place(buyer, Side.BUY, "1", "99")  # rests below the price
        p.env.requests = 0
        p.env.moves[after] = [lambda: p.env.exchange.on_price(BTC, D("98"), p.clock.now)]  # fills it, stream lost
        for w in p.workers:
            w.trading = False
        for _ in range(3):
            report = await p.monitor.reconcile("schedule")
            assert not any(isinstance(c, SetHoldings | SetCapital) for c in report.corrections), report
            order = buyer.ledger.order(cid)
            assert order is not None and order.state in (S.OPEN, S.FILLED)
            p.clock.now += 5_000
        order = buyer.ledger.order(cid)
        assert order is not None and (order.state, order.filled) == (S.FILLED, D(1))
        _books_equal_exchange(p)

    run(main)


def test_a_sale_by_hand_is_cut_only_after_two_consistent_views_agree(state_dir: StateDirectory) -> None:
    """Holdings sold by hand are removed -- by the second consistent pass, never by one lone view."""
    p = Pair(state_dir)

    async def main() -> None:
        await p.env.start()
        buyer = p.workers[0]
        await p.place(buyer, Side.BUY, "1", "100")  # marketable: fills at once
        await p.monitor.reconcile("startup")
        assert buyer.ledger.snapshot().holdings == D(1)
        await p.env.create_order(OrderRequest("web_1", BTC, Side.SELL, OrderType.MARKET, D("0.4")))
        first = await p.monitor.reconcile("schedule")
        assert buyer.ledger.snapshot().holdings == D(1) and first.deferred_cuts
        soon = await p.monitor.reconcile("reconnect:user")  # within the history lag: not a confirmation
        assert soon.corrections == () and soon.deferred_cuts
        p.clock.now += CONFIRM_AFTER_MS
        second = await p.monitor.reconcile("follow-up")
        assert second.corrections == (SetHoldings("buyer", "BTC", D(1), D("0.6")),)
        assert not p.monitor.confirming

    run(main)


def test_split_brain_opens_the_breaker(state_dir: StateDirectory, caplog: pytest.LogCaptureFixture) -> None:
    """An order with our current epoch that no ledger placed makes the pass call the fence (breaker OPEN)."""
    p = Pair(state_dir)

    async def main() -> None:
        await p.env.start()
        buyer = p.workers[0]
        twin = client_order_id(buyer.prefix, 50)  # another process with a copy of these books
        await p.env.create_order(OrderRequest(twin, BTC, Side.BUY, OrderType.LIMIT, D("1"), D("90")))
        with caplog.at_level(logging.CRITICAL):
            report = await p.monitor.reconcile("startup")
        assert [o.client_order_id for o in report.intruders] == [twin]
        assert buyer.ledger.order(twin) is None

    run(main)
    assert p.halts and "split brain" in p.halts[0]


class Relevel(Strategy):
    """Holds one order per tag 'level' and re-places it when told an order was not placed."""

    kind = "relevel"

    def on_order_closed(self, client_order_id: str, tag: str, state: str, view: StrategyView) -> list[Signal]:
        return [PlaceOrder(Side.BUY, OrderType.LIMIT, D("1"), D("90"), tag="level")]

    def state_snapshot(self) -> dict[str, Any]:
        return {}

    def restore_state(self, state: Any) -> None:
        pass


def test_a_late_order_is_revived_and_a_level_never_keeps_two_orders(state_dir: StateDirectory) -> None:
    """The strategy replaced a written-off order; when the late one appears it is revived (CRITICAL) and, its
    tag being taken, cancelled: one order per level."""
    p = Pair(state_dir)
    buyer = StrategyWorker(
        strategy=Relevel("buyer", BTC, {}), capital=D(1000), env=p.env, state_file=p.workers[0].state_file,
        prefix=order_prefix("t", "buyer"), publish=p.publish, clock_ms=p.clock,
    )  # fmt: skip
    p.workers[0] = buyer
    p.monitor = ReconciliationMonitor(p.env, p.workers, p.publish, p.clock, "tick")

    async def main() -> None:
        await p.env.start()
        late = client_order_id(buyer.prefix, buyer.ledger.next_sequence())
        req = OrderRequest(late, BTC, Side.BUY, OrderType.LIMIT, D("1"), D("90"))
        buyer.ledger.record_intent(req, p.clock.now - 60_000, tag="level")
        buyer.ledger.on_order_event(late, E.SUBMIT_TIMEOUT, p.clock.now - 60_000)
        await buyer.start_trading()
        await p.monitor.reconcile("schedule")  # not found: NOT_PLACED, the strategy re-places the level
        await buyer.on_schedule(_tick())
        replacement = [o for o in buyer.ledger.snapshot().open_orders if o.client_order_id != late]
        assert len(replacement) == 1 and replacement[0].tag == "level"
        await p.env.create_order(req)  # the late request lands after all
        await p.monitor.reconcile("schedule")
        revived = buyer.ledger.order(late)
        assert revived is not None and revived.tag == "level"
        await buyer.on_schedule(_tick())
        open_levels = [o for o in p.env.exchange.open_orders() if o.symbol == BTC]
        assert [o.client_order_id for o in open_levels] == [replacement[0].client_order_id]

    run(main)


def _tick() -> ScheduledEvent:
    return ScheduledEvent("tick", NOW)


def test_corrections_are_applied_only_under_the_workers_lock(state_dir: StateDirectory) -> None:
    """One writer per ledger: the worker refuses corrections unless its lock is held (by the pass, for it)."""
    p = Pair(state_dir)
    with pytest.raises(LocalStateError, match="lock"):
        p.workers[0].apply_corrections([], NOW, None)


def test_a_pass_reads_balances_around_the_trades(state_dir: StateDirectory) -> None:
    """The bracket: open orders, balances, trades per symbol, balances again."""
    p = Pair(state_dir)

    async def main() -> None:
        await p.env.start()
        await p.monitor.reconcile("startup")

    run(main)
    assert p.env.calls == Counter({"openOrders": 1, "account": 2, f"myTrades {BTC}": 1, f"myTrades {ETH}": 1})


def test_a_quiet_scheduled_pass_reads_no_trades_but_a_moved_balance_does(state_dir: StateDirectory) -> None:
    """Bug: every pass asked myTrades for every symbol (10.9 s for 50 quiet symbols with the rate limiter).
    Now a scheduled pass on a quiet account makes three requests; a balance that moved (a fill nobody
    streamed) brings its symbol's trades back into the pass; startup reads every symbol."""
    p = Pair(state_dir)

    async def main() -> None:
        await p.env.start()
        buyer = p.workers[0]
        await p.monitor.reconcile("startup")
        p.env.calls.clear()
        await p.monitor.reconcile("schedule")
        assert p.env.calls == Counter({"openOrders": 1, "account": 2})
        cid = await p.place(buyer, Side.BUY, "1", "99")
        p.env.exchange.on_price(BTC, D("98"), p.clock.now)  # fills; the stream lost it
        p.env.calls.clear()
        await p.monitor.reconcile("schedule")
        assert p.env.calls[f"myTrades {BTC}"] == p.env.calls[f"myTrades {ETH}"] == 1  # USDT moved: both are read
        order = buyer.ledger.order(cid)
        assert order is not None and order.state is S.FILLED

    run(main)


def test_a_fallback_to_the_previous_generation_starts_a_new_epoch(tmp_path: Path) -> None:
    """After NAME is damaged and NAME.prev loads, the books get a new epoch: the sequence numbers the lost
    generation handed out are never reused under one prefix, and its orders are adopted, not intruders."""
    path = tmp_path / "state"

    def worker(d: StateDirectory, epochs: Iterator[str]) -> StrategyWorker:
        return StrategyWorker(
            strategy=Idle("w", BTC, {}), capital=D(1000), env=PaperEnvironment(_exact_config(), d.file("p"), Clock()),
            state_file=d.file("w.state.json"), prefix=order_prefix("t", "w"), publish=_drop, clock_ms=Clock(),
            new_epoch=lambda: next(epochs),
        )  # fmt: skip

    with StateDirectory.open(path) as d:
        w = worker(d, iter(["0000e1"]))
        w.load_state()
        w.ledger.next_sequence()
        w.save_state_sync()  # generation 1: .prev after the next save
        lost_seq = w.ledger.next_sequence()
        w.save_state_sync()  # generation 2: the one the disk damages
    (path / "w.state.json").write_bytes(b"garbage")
    with StateDirectory.open(path) as d:
        w = worker(d, iter(["0000e1", "0000e2"]))
        result = w.load_state()
    assert result.fallback and w.ledger.epochs == ("0000e1", "0000e2")
    lost = client_order_id(order_prefix("t", "w", "0000e1"), lost_seq)
    assert w.old_prefixes == (order_prefix("t", "w", "0000e1"),) and w.owns(lost)
    assert client_order_id(w.prefix, w.ledger.next_sequence()) != lost


async def _drop(event: Event) -> None:
    """Events nobody listens to."""


def test_a_failed_pass_does_not_hide_a_moved_balance_from_the_next(state_dir: StateDirectory) -> None:
    """The balance a failed pass read is not the baseline of the next one: its trades were read in vain, so
    the next scheduled pass must still see the balance as moved and read that symbol."""
    p = Pair(state_dir)

    async def main() -> None:
        await p.env.start()
        buyer = p.workers[0]
        await p.monitor.reconcile("startup")
        lost = client_order_id(buyer.prefix, 40)  # placed by a generation of the books a fallback lost
        buyer.ledger.begin_epoch("00fa11")
        await p.env.create_order(OrderRequest(lost, BTC, Side.BUY, OrderType.LIMIT, D("1"), D("99")))
        p.env.exchange.on_price(BTC, D("98"), p.clock.now)  # fills: the account moved, no ledger knows why
        p.env.failing = {"order"}
        with pytest.raises(ExchangeUnavailable):
            await p.monitor.reconcile("schedule")
        p.env.failing = set()
        await p.monitor.reconcile("schedule")
        adopted = buyer.ledger.order(lost)
        assert adopted is not None and adopted.state is S.FILLED and buyer.ledger.snapshot().holdings > 0

    run(main)
