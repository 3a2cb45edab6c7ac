"""StrategyWorker over a real PaperEnvironment: intent before action, ambiguity kept, fills once, halts obeyed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from decimal import Decimal as D
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s1mpled.config import PaperConfig, PaperMarketConfig
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.errors import ExchangeUnavailable
from s1mpled.events import (
    Event,
    ExecuteEmergencyExit,
    HaltNewSignals,
    LedgerStateChanged,
    MarketData,
    OrderUpdated,
    ResumeSignals,
    ScheduledEvent,
    TradeExecuted,
)
from s1mpled.model import ExchangeOrderStatus, Fill, MarketTick, OrderRequest, OrderType, Side
from s1mpled.orders import OrderState, client_order_id, order_prefix
from s1mpled.reconciliation import IN_FLIGHT_MS
from s1mpled.reconciliation_monitor import ReconciliationMonitor
from s1mpled.state import StateDirectory
from s1mpled.state.inspect import inspect
from s1mpled.strategies.base import CancelOrder, FillView, PlaceOrder, Signal, Strategy, StrategyView
from s1mpled.strategy_worker import StrategyWorker

T = TypeVar("T")
SYMBOL = "BTC/USDT"
PREFIX = order_prefix("test-op", "scripted")
START = D("100")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, failing it if anything hangs for more than 5 s."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


def cid(seq: int) -> str:
    return client_order_id(PREFIX, seq)


class Clock:
    """An injected millisecond clock the test moves by hand."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Scripted(Strategy):
    """A test strategy: returns the signals queued in ``plan`` on the next tick and records every callback.

    With ``keep_one_buy`` it behaves like a well-mannered grid leg: it asks for a buy whenever the view shows
    no order tagged "buy" (an unresolved one counts as present, rule 3 of the strategy docs).
    """

    kind = "scripted"

    def __init__(self, *, keep_one_buy: bool = False) -> None:
        super().__init__("scripted", SYMBOL, {})
        self.keep_one_buy = keep_one_buy
        self.plan: list[Signal] = []
        self.ticks = 0
        self.started = 0
        self.events: list[str] = []
        self.fills: list[FillView] = []
        self.closed: list[tuple[str, str, str]] = []
        self.views: list[StrategyView] = []

    def on_start(self, view: StrategyView) -> list[Signal]:
        self.started += 1
        return []

    def on_tick(self, view: StrategyView) -> list[Signal]:
        self.ticks += 1
        self.views.append(view)
        if self.keep_one_buy and not view.orders_tagged("buy"):
            return [PlaceOrder(Side.BUY, OrderType.LIMIT, D("0.01"), D("90"), tag="buy")]
        signals, self.plan = self.plan, []
        return signals

    def on_event(self, event_name: str, view: StrategyView) -> list[Signal]:
        self.events.append(event_name)
        return self.on_tick(view)

    def on_fill(self, fill: FillView, view: StrategyView) -> list[Signal]:
        self.fills.append(fill)
        return []

    def on_order_closed(self, client_order_id: str, tag: str, state: str, view: StrategyView) -> list[Signal]:
        self.closed.append((client_order_id, tag, state))
        return []

    def state_snapshot(self) -> dict[str, Any]:
        return {"ticks": self.ticks}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.ticks = int(state["ticks"])


def paper_config() -> PaperConfig:
    market = PaperMarketConfig(
        symbol=SYMBOL,
        start_price=START,
        volatility=D("0.01"),
        liquidity=D("10"),
        price_step=D("0.01"),
        amount_step=D("0.001"),
    )
    return PaperConfig(
        seed=1,
        tick_interval_s=0.01,
        stream_latency_s=0.0,
        fee_rate=D("0.001"),
        balances={"USDT": D("10000"), "BTC": D("0")},
        markets={SYMBOL: market},
        replay_csv=None,
    )


class Paper(PaperEnvironment):
    """The real paper environment, counting create_order calls per client id and able to fail on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: Counter[str] = Counter()
        self.fail_next: Exception | None = None
        self.before_send: Callable[[OrderRequest], None] | None = None

    async def create_order(self, request: OrderRequest) -> Any:
        self.sent[request.client_order_id] += 1
        if self.before_send is not None:
            self.before_send(request)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return await super().create_order(request)


class Setup:
    """A started paper environment and one StrategyWorker over it, with the events the worker published."""

    def __init__(self, state_dir: StateDirectory, strategy: Scripted) -> None:
        self.clock = Clock()
        self.env = Paper(paper_config(), state_dir.file("paper-exchange.state.json"), self.clock)
        self.strategy = strategy
        self.published: list[Event] = []
        self.worker = StrategyWorker(
            strategy=strategy,
            capital=D("1000"),
            env=self.env,
            state_file=state_dir.file("scripted.state.json"),
            prefix=PREFIX,
            publish=self.publish,
            clock_ms=self.clock,
            new_epoch=lambda: "",  # epoch-less ids: the tests name them by sequence number
        )
        self.worker.load_state()

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    async def start(self, *, trading: bool = True) -> None:
        await self.env.start()
        if trading:
            await self.worker.start_trading()

    async def tick(self, price: D = START) -> None:
        self.clock.now += 1_000
        await self.worker.on_market(MarketData(MarketTick(SYMBOL, price, self.clock.now)))

    async def trades(self) -> list[Fill]:
        return await self.env.fetch_trades(SYMBOL, None)

    async def deliver_all(self) -> None:
        """What the private stream would push: every fill on the exchange, in order."""
        for fill in await self.trades():
            await self.worker.on_trade(TradeExecuted(fill))

    def on_disk(self) -> dict[str, Any]:
        """The worker's state file as a separate reader sees it."""
        state: dict[str, Any] = inspect(self.worker.state_file.path).record.state
        return state

    def disk_order(self, client_id: str) -> dict[str, Any] | None:
        ledger = self.on_disk()["ledger"]
        for raw in [*ledger["open_orders"], *ledger["history"]]:
            if raw["client_order_id"] == client_id:
                found: dict[str, Any] = raw
                return found
        return None


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with StateDirectory.open(tmp_path / "state") as d:
        yield d


def buy(amount: str = "0.01", price: str | None = None, tag: str = "buy") -> PlaceOrder:
    kind = OrderType.MARKET if price is None else OrderType.LIMIT
    return PlaceOrder(Side.BUY, kind, D(amount), None if price is None else D(price), tag=tag)


def sell(amount: str = "0.01", price: str | None = None, tag: str = "sell") -> PlaceOrder:
    kind = OrderType.MARKET if price is None else OrderType.LIMIT
    return PlaceOrder(Side.SELL, kind, D(amount), None if price is None else D(price), tag=tag)


# ----------------------------------------------------------------------------- intent before action


def test_intent_is_durable_before_the_request_leaves(state_dir: StateDirectory) -> None:
    """When create_order is called, the state file on disk already holds the order as PENDING."""
    s = Setup(state_dir, Scripted())
    seen: list[dict[str, Any] | None] = []
    s.env.before_send = lambda req: seen.append(s.disk_order(req.client_order_id))

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(price="90", tag="grid:1")]
        await s.tick()

    run(main)
    assert len(seen) == 1 and seen[0] is not None
    assert (seen[0]["state"], seen[0]["tag"], seen[0]["amount"]) == ("pending", "grid:1", D("0.01"))
    after = s.disk_order(cid(1))
    assert after is not None and after["state"] == "open" and after["exchange_order_id"] is not None
    assert s.env.exchange.order(cid(1)) is not None


def test_the_strategy_state_is_saved_with_the_intent(state_dir: StateDirectory) -> None:
    """The strategy's own state reaches the disk in the same save as the order intent."""
    s = Setup(state_dir, Scripted())
    seen: list[dict[str, Any]] = []
    s.env.before_send = lambda req: seen.append(s.on_disk()["strategy"])

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(price="90")]
        await s.tick()

    run(main)
    assert seen == [{"ticks": 1}]


# ----------------------------------------------------------------------------- ambiguity and rejection


def test_unavailable_leaves_the_order_unresolved_and_never_resends_it(state_dir: StateDirectory) -> None:
    """A submit that fails without an answer leaves the order UNRESOLVED; later ticks do not send it again."""
    s = Setup(state_dir, Scripted(keep_one_buy=True))

    async def main() -> None:
        await s.start()
        s.env.fail_next = ExchangeUnavailable("timeout")
        await s.tick()
        for _ in range(3):
            await s.tick()
        await s.worker.on_schedule(ScheduledEvent("five_minute_reconciliation_tick", s.clock.now))

    run(main)
    assert s.env.sent == Counter({cid(1): 1})
    order = s.worker.ledger.order(cid(1))
    assert order is not None and order.state is OrderState.UNRESOLVED
    disk = s.disk_order(cid(1))
    assert disk is not None and disk["state"] == "unresolved"
    assert s.strategy.views[-1].open_orders[0].unresolved
    assert s.strategy.closed == []


def test_reconciliation_settles_an_unresolved_order_and_tells_the_strategy(state_dir: StateDirectory) -> None:
    """An unresolved order the exchange never got becomes NOT_PLACED and the strategy hears about it."""
    s = Setup(state_dir, Scripted(keep_one_buy=True))

    async def main() -> None:
        await s.start()
        s.env.fail_next = ExchangeUnavailable("timeout")
        await s.tick()
        s.env.in_flight_ms = IN_FLIGHT_MS  # as for a remote exchange: a timed-out request may still land
        monitor = ReconciliationMonitor(s.env, [s.worker], s.publish, s.clock, "tick")
        early = await monitor.reconcile("test")  # not written off yet
        assert early.corrections == () and early.unsettled == (cid(1),)
        s.clock.now += IN_FLIGHT_MS
        report = await monitor.reconcile("test")
        assert len(report.corrections) == 1
        await s.tick()  # delivers the closure, then the strategy re-arms with a new order

    run(main)
    assert s.strategy.closed == [(cid(1), "buy", "not_placed")]
    assert s.env.sent == Counter({cid(1): 1, cid(2): 1})


def test_rejected_order_is_rejected_and_the_strategy_is_told(state_dir: StateDirectory) -> None:
    """ExchangeRejected makes the order REJECTED (durably) and calls the strategy's on_order_closed."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(amount="1000", price="90", tag="too-big")]  # insufficient funds
        await s.tick()
        await s.tick()  # deferred notifications run on the next event

    run(main)
    order = s.worker.ledger.order(cid(1))
    assert order is not None and order.state is OrderState.REJECTED
    disk = s.disk_order(cid(1))
    assert disk is not None and disk["state"] == "rejected"
    assert s.strategy.closed == [(cid(1), "too-big", "rejected")]
    assert s.env.exchange.order(cid(1)) is None


# ----------------------------------------------------------------------------- fills


def test_a_fill_delivered_twice_is_applied_once(state_dir: StateDirectory) -> None:
    """The same fill from the stream twice moves money once, notifies the strategy once, persists once."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(amount="0.5", tag="entry")]
        await s.tick()
        generation = s.worker.state_file.generation
        await s.deliver_all()
        await s.deliver_all()
        assert s.worker.state_file.generation == generation + 1
        await s.tick()

    run(main)
    snap = s.worker.ledger.snapshot()
    fee = D("0.05")  # 100 * 0.5 * 0.001
    assert (snap.holdings, snap.capital, snap.fees_paid) == (D("0.5"), D("1000") - D("50") - fee, fee)
    order = s.worker.ledger.order(cid(1))
    assert order is not None and order.state is OrderState.FILLED
    assert [(f.client_order_id, f.tag, f.amount, f.order_complete) for f in s.strategy.fills] == [
        (cid(1), "entry", D("0.5"), True)
    ]
    assert sum(isinstance(e, LedgerStateChanged) and e.reason == "fill" for e in s.published) == 1


class SellsWhatItBuys(Scripted):
    """Reacts to each complete buy with a sell of the same amount (what a grid does)."""

    def on_fill(self, fill: FillView, view: StrategyView) -> list[Signal]:
        super().on_fill(fill, view)
        if fill.side is Side.BUY and fill.order_complete:
            return [PlaceOrder(Side.SELL, OrderType.LIMIT, fill.amount, D("150"), tag="sell")]
        return []


def test_a_fill_and_the_order_it_leads_to_are_one_write_before_the_request(state_dir: StateDirectory) -> None:
    """One reaction, one write: when the sell's request leaves, the fill and the sell's intent are on disk,
    written by one save since the fill arrived; the answer is the one save after it."""
    s = Setup(state_dir, SellsWhatItBuys())
    seen: list[tuple[int, dict[str, Any] | None, str]] = []
    create_order = s.env.create_order
    before = 0

    async def watched(req: OrderRequest) -> Any:
        if req.side is Side.SELL:
            ledger = s.on_disk()["ledger"]
            filled = next(o for o in [*ledger["open_orders"], *ledger["history"]] if o["client_order_id"] == cid(1))
            seen.append((s.worker.state_file.generation - before, s.disk_order(req.client_order_id), filled["state"]))
        return await create_order(req)

    async def main() -> None:
        nonlocal before
        await s.start()
        s.strategy.plan = [buy(amount="0.5", tag="entry")]
        await s.tick()
        s.env.create_order = watched  # type: ignore[method-assign,assignment]
        before = s.worker.state_file.generation
        await s.deliver_all()
        assert s.worker.state_file.generation - before == 2  # fill + intent, then the answer

    run(main)
    assert len(seen) == 1
    saves, intent, buy_state = seen[0]
    assert saves == 1 and intent is not None and intent["state"] == "pending" and buy_state == "filled"
    reasons = [e.reason for e in s.published if isinstance(e, LedgerStateChanged)][-3:]
    assert reasons == ["fill", "order intent", "order sent"]


def test_a_fill_from_both_stream_and_reconciliation_is_applied_once(state_dir: StateDirectory) -> None:
    """A fill reconciliation already applied is ignored when the stream delivers it late, and vice versa."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        monitor = ReconciliationMonitor(s.env, [s.worker], s.publish, s.clock, "tick")
        s.strategy.plan = [buy(amount="0.5", tag="first")]
        await s.tick()
        first = await monitor.reconcile("missed stream")  # the stream lost the fill
        await s.deliver_all()  # ...and then delivers it late
        s.strategy.plan = [buy(amount="0.25", tag="second")]
        await s.tick()
        await s.deliver_all()  # stream first
        second = await monitor.reconcile("after stream")
        assert [type(c).__name__ for c in first.corrections] == ["ApplyFill"]
        assert second.corrections == ()
        await s.tick()

    run(main)
    snap = s.worker.ledger.snapshot()
    assert snap.holdings == D("0.75") and snap.seen_trade_ids == 2
    assert sorted(f.tag for f in s.strategy.fills) == ["first", "second"]


def test_fills_before_trading_are_applied_but_told_after_start(state_dir: StateDirectory) -> None:
    """A fill arriving before start_trading() is applied and persisted; the strategy hears of it, then on_start."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start(trading=False)
        req = OrderRequest(cid(s.worker.ledger.next_sequence()), SYMBOL, Side.BUY, OrderType.MARKET, D("0.1"))
        s.worker.ledger.record_intent(req, s.clock.now, tag="entry")
        await s.worker.save_state()
        await s.env.create_order(req)  # sent just before the last crash; its fill arrives during recovery
        await s.deliver_all()
        assert s.strategy.fills == [] and s.strategy.started == 0
        assert s.on_disk()["ledger"]["holdings"] == D("0.1")
        await s.worker.start_trading()
        assert [f.tag for f in s.strategy.fills] == ["entry"] and s.strategy.started == 1

    run(main)


# ----------------------------------------------------------------------------- phase C


def test_nothing_trades_before_start_trading(state_dir: StateDirectory) -> None:
    """Before start_trading() ticks and schedule events only update the last price: no hooks, no orders."""
    s = Setup(state_dir, Scripted(keep_one_buy=True))

    async def main() -> None:
        await s.start(trading=False)
        await s.tick(D("101"))
        await s.worker.on_schedule(ScheduledEvent("hourly", s.clock.now))
        assert s.env.sent == Counter() and s.strategy.ticks == 0 and s.strategy.events == []
        assert s.worker.last_price == D("101")
        await s.worker.start_trading()
        assert s.strategy.started == 1 and s.env.sent == Counter()
        await s.tick()

    run(main)
    assert s.env.sent == Counter({cid(1): 1})


# ----------------------------------------------------------------------------- the circuit breaker


def test_halted_drops_buys_and_allows_sells(state_dir: StateDirectory) -> None:
    """While halted a buy signal never reaches the exchange (the strategy is told, id ""); a sell does."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(amount="0.5", tag="entry")]
        await s.tick()
        await s.deliver_all()
        s.worker.on_halt(HaltNewSignals("flaky"))
        s.strategy.plan = [buy(amount="0.1", tag="more"), sell(amount="0.2", tag="reduce")]
        await s.tick()
        assert s.strategy.views[-1].halted
        await s.tick()  # the drop is reported on the next event

    run(main)
    assert s.env.sent == Counter({cid(1): 1, cid(2): 1})
    placed = s.env.exchange.order(cid(2))
    assert placed is not None and placed.side is Side.SELL
    assert s.strategy.closed == [("", "more", "not_placed")]


def test_resume_allows_buys_again(state_dir: StateDirectory) -> None:
    """After RESUME_SIGNALS a buy goes out again."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.worker.on_halt(HaltNewSignals("flaky"))
        s.worker.on_resume(ResumeSignals("stable"))
        s.strategy.plan = [buy(price="90")]
        await s.tick()

    run(main)
    assert s.env.sent == Counter({cid(1): 1})


def test_emergency_exit_cancels_orders_and_sells_holdings(state_dir: StateDirectory) -> None:
    """An emergency exit cancels every open order and sells what the strategy holds at market."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(amount="0.5", tag="entry"), buy(amount="0.1", price="90", tag="dip")]
        await s.tick()
        await s.deliver_all()
        s.worker.on_halt(HaltNewSignals("flaky"))  # the exit sells even while halted
        await s.worker.on_emergency_exit(ExecuteEmergencyExit("flaky"))
        await s.deliver_all()

    run(main)
    dip = s.env.exchange.order(cid(2))
    assert dip is not None and dip.status is ExchangeOrderStatus.CANCELED
    exit_order = s.env.exchange.order(cid(3))
    assert exit_order is not None
    assert (exit_order.side, exit_order.type, exit_order.amount) == (Side.SELL, OrderType.MARKET, D("0.5"))
    snap = s.worker.ledger.snapshot()
    assert snap.holdings == 0 and snap.open_orders == ()
    dip_ledger = s.worker.ledger.order(cid(2))
    assert dip_ledger is not None and dip_ledger.state is OrderState.CANCELED
    assert s.env.exchange.balances()["BTC"].total == 0


def test_emergency_exit_with_nothing_to_do_sends_nothing(state_dir: StateDirectory) -> None:
    """Without orders or holdings an emergency exit sends no request."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        await s.worker.on_emergency_exit(ExecuteEmergencyExit("flaky"))

    run(main)
    assert s.env.sent == Counter()


# ----------------------------------------------------------------------------- order updates


def test_cancel_signal_cancels_on_the_exchange_and_reports_closure(state_dir: StateDirectory) -> None:
    """A CancelOrder signal cancels the order on the exchange, durably, and the strategy is told."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(price="90", tag="dip")]
        await s.tick()
        s.strategy.plan = [CancelOrder(cid(1))]
        await s.tick()
        await s.tick()

    run(main)
    exchange_order = s.env.exchange.order(cid(1))
    assert exchange_order is not None and exchange_order.status is ExchangeOrderStatus.CANCELED
    disk = s.disk_order(cid(1))
    assert disk is not None and disk["state"] == "canceled"
    assert s.strategy.closed == [(cid(1), "dip", "canceled")]


def test_order_update_from_the_stream_moves_the_order(state_dir: StateDirectory) -> None:
    """An ORDER_UPDATED canceled report settles our open order; reports for others' orders are ignored."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await s.start()
        s.strategy.plan = [buy(price="90", tag="dip")]
        await s.tick()
        canceled = await s.env.cancel_order(SYMBOL, cid(1))  # by hand, on the exchange's web page
        foreign = await s.env.create_order(OrderRequest("web-1", SYMBOL, Side.BUY, OrderType.LIMIT, D("1"), D("50")))
        await s.worker.on_order(OrderUpdated(foreign))
        await s.worker.on_order(OrderUpdated(canceled))
        await s.tick()

    run(main)
    order = s.worker.ledger.order(cid(1))
    assert order is not None and order.state is OrderState.CANCELED
    assert s.worker.ledger.order("web-1") is None
    assert s.strategy.closed == [(cid(1), "dip", "canceled")]
