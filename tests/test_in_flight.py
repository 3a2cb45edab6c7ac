"""In-flight checks: when an UNRESOLVED order is due for a question, what an answer means, and the
StrategyWorker asking them over a real paper environment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Mapping
from decimal import Decimal as D
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.config import PaperConfig, PaperMarketConfig
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.errors import ExchangeUnavailable
from s1mpled.events import Event, MarketData
from s1mpled.in_flight import POLICY, Candidate, InFlightChecks, Policy, QueryBudget, decide
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, MarketTick, OrderRequest, OrderType, Side
from s1mpled.orders import OrderEvent, OrderState, client_order_id, order_prefix
from s1mpled.state import StateDirectory
from s1mpled.state.inspect import inspect
from s1mpled.strategies.base import FillView, PlaceOrder, Signal, Strategy, StrategyView
from s1mpled.strategy_worker import StrategyWorker

T = TypeVar("T")
WINDOW = 7_000  # in-flight window (ms) of the tests' environment, like Binance's recvWindow + margin


def order(updated_ms: int = 0, *, acknowledged: bool = False, cid: str = "s1-1") -> Candidate:
    return Candidate(cid, updated_ms, acknowledged)


# ------------------------------------------------------------------------------------------ decide()


@pytest.mark.parametrize("status", list(ExchangeOrderStatus))
def test_a_found_order_is_settled_by_its_probe_event(status: ExchangeOrderStatus) -> None:
    """Found: whatever its status and however early, the answer is the table's probe event."""
    probe = {
        ExchangeOrderStatus.OPEN: OrderEvent.PROBE_OPEN,
        ExchangeOrderStatus.CLOSED: OrderEvent.PROBE_FILLED,
        ExchangeOrderStatus.CANCELED: OrderEvent.PROBE_CANCELED,
        ExchangeOrderStatus.REJECTED: OrderEvent.PROBE_REJECTED,
        ExchangeOrderStatus.EXPIRED: OrderEvent.PROBE_EXPIRED,
        ExchangeOrderStatus.UNKNOWN: OrderEvent.PROBE_OPEN,
    }
    assert decide(order(1_000), status, 1_001, WINDOW) is probe[status]


def test_not_found_is_never_placed_only_after_the_in_flight_window() -> None:
    """ "No such order" while a request may still land means "ask again"; after the window, NOT_PLACED."""
    assert decide(order(1_000), None, 1_000 + WINDOW - 1, WINDOW) is None
    assert decide(order(1_000), None, 1_000 + WINDOW, WINDOW) is OrderEvent.PROBE_NOT_FOUND


def test_not_found_for_an_acknowledged_order_settles_nothing() -> None:
    """An order the exchange gave an id (or filled) cannot be "never placed": left to reconciliation."""
    assert decide(order(0, acknowledged=True), None, 10**9, WINDOW) is None


# ------------------------------------------------------------------------------------------ the schedule


def test_the_first_question_comes_two_seconds_after_the_order_became_unresolved() -> None:
    """Nothing is due before first_check_ms; then the order is; an order no longer unresolved is forgotten."""
    checks = InFlightChecks()
    o = order(10_000)
    assert checks.due([o], 11_999) == []
    assert checks.due([o], 12_000) == [o]
    assert checks.due([], 12_000) == [] and checks.tracked() == 0


def test_an_unacknowledged_order_is_asked_again_when_its_window_closes() -> None:
    """Backoff 2 s, 4 s, ... but never past the moment "not found" becomes conclusive."""
    checks, o = InFlightChecks(), order(0)
    assert checks.due([o], 2_000) == [o]
    checks.asked(o, 2_000, WINDOW)  # next: min(2 s + 4 s, 7 s) = 6 s
    assert checks.due([o], 5_999) == [] and checks.due([o], 6_000) == [o]
    checks.asked(o, 6_000, WINDOW)  # next: min(6 s + 8 s, 7 s) = 7 s
    assert checks.due([o], 6_999) == [] and checks.due([o], 7_000) == [o]


def test_questions_back_off_and_stop_after_max_checks() -> None:
    """An acknowledged order that stays unresolved is asked at doubling intervals, max_checks times at most."""
    policy = Policy(first_check_ms=1_000, max_interval_ms=8_000, max_checks=5)
    checks, o = InFlightChecks(policy, QueryBudget(1_000)), order(0, acknowledged=True)
    now, asked_at, last = 0, [], False
    while now < 100_000:
        if checks.due([o], now):
            asked_at.append(now)
            last = checks.asked(o, now, WINDOW)
        now += 100
    assert asked_at == [1_000, 3_000, 7_000, 15_000, 23_000] and last


def test_an_order_unresolved_again_is_a_new_episode() -> None:
    """A later change (its updated_ms moves) restarts the schedule, checks included."""
    checks = InFlightChecks(Policy(max_checks=1))
    assert checks.due([order(0)], 2_000) and checks.asked(order(0), 2_000, WINDOW)
    assert checks.due([order(0)], 50_000) == []
    assert checks.due([order(40_000)], 42_000) == [order(40_000)]


def test_the_budget_is_shared_and_the_most_overdue_go_first() -> None:
    """Two strategies, one budget of 2 a second: three due orders give two questions now, the oldest first."""
    budget = QueryBudget(per_s=2)
    a, b = InFlightChecks(budget=budget), InFlightChecks(budget=budget)
    old, new = order(0, cid="s1-old"), order(500, cid="s1-new")
    assert a.due([new, old], 3_000) == [old, new]
    assert b.due([order(0, cid="s1-other")], 3_000) == []
    assert b.due([order(0, cid="s1-other")], 3_500) == [order(0, cid="s1-other")]


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=300), st.floats(0.5, 20))
def test_the_budget_never_exceeds_its_rate(gaps_ms: list[int], per_s: float) -> None:
    """Over any stretch of time, questions granted <= burst + rate * elapsed."""
    budget, now, granted = QueryBudget(per_s=per_s), 0, []
    for gap in gaps_ms:
        now += gap
        if budget.take(now):
            granted.append(now)
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            assert j - i + 1 <= budget.burst + per_s * (granted[j] - start) / 1000 + 1e-9


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400)), max_size=200))
def test_no_order_is_asked_more_than_max_checks_times(steps: list[tuple[int, int]]) -> None:
    """Whatever the answers and timing, each episode gets at most max_checks questions."""
    checks, now = InFlightChecks(budget=QueryBudget(100)), 0
    orders = [order(0, cid=f"s1-{i}", acknowledged=i % 2 == 0) for i in range(4)]
    asked: dict[str, int] = {}
    for _, gap in steps:
        now += gap * 50
        for o in checks.due(orders, now):
            asked[o.client_order_id] = asked.get(o.client_order_id, 0) + 1
            checks.asked(o, now, WINDOW)
    assert all(n <= POLICY.max_checks for n in asked.values())


# ------------------------------------------------------------------------------------------ the worker

SYMBOL = "BTC/USDT"
PREFIX = order_prefix("test-op", "probed")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class OneOrder(Strategy):
    """Asks for one limit buy on its first tick; records what it hears about it."""

    def __init__(self) -> None:
        super().__init__("probed", SYMBOL, {})
        self.asked = False
        self.closed: list[tuple[str, str]] = []
        self.fills: list[FillView] = []

    def on_tick(self, view: StrategyView) -> list[Signal]:
        if self.asked:
            return []
        self.asked = True
        return [PlaceOrder(Side.BUY, OrderType.LIMIT, D("0.01"), D("90"), tag="buy")]

    def on_order_closed(self, client_order_id: str, tag: str, state: str, view: StrategyView) -> list[Signal]:
        self.closed.append((client_order_id, state))
        return []

    def on_fill(self, fill: FillView, view: StrategyView) -> list[Signal]:
        self.fills.append(fill)
        return []

    def state_snapshot(self) -> dict[str, Any]:
        return {"asked": self.asked}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.asked = bool(state["asked"])


class Unanswered(PaperEnvironment):
    """Paper trading whose next submit gets no answer: ``lost`` (never executed) or ``executed``
    (executed, the answer lost); ``fetch_order`` can fail and counts its calls."""

    in_flight_ms = WINDOW

    def __init__(self, *args: Any, submit: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submit = submit
        self.queries = 0
        self.query_fails = False

    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        if self.submit == "executed":
            await super().create_order(request)
        raise ExchangeUnavailable("POST /order: HTTP 503")

    async def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        self.queries += 1
        if self.query_fails:
            raise ExchangeUnavailable("GET /order: HTTP 503")
        return await super().fetch_order(symbol, client_order_id)


def paper_config() -> PaperConfig:
    market = PaperMarketConfig(
        symbol=SYMBOL, start_price=D("100"), volatility=D("0.01"), liquidity=D("10"),
        price_step=D("0.01"), amount_step=D("0.001"),
    )  # fmt: skip
    return PaperConfig(
        seed=1, tick_interval_s=0.01, stream_latency_s=0.0, fee_rate=D("0.001"),
        balances={"USDT": D("10000"), "BTC": D("0")}, markets={SYMBOL: market}, replay_csv=None,
    )  # fmt: skip


class Setup:
    """A worker whose one order's submit went unanswered, trading, with a clock the test moves."""

    def __init__(self, state_dir: StateDirectory, submit: str) -> None:
        self.clock = Clock()
        self.env = Unanswered(paper_config(), state_dir.file("paper.state.json"), self.clock, submit=submit)
        self.strategy = OneOrder()
        self.published: list[Event] = []
        self.worker = StrategyWorker(
            strategy=self.strategy, capital=D("1000"), env=self.env, state_file=state_dir.file("probed.state.json"),
            prefix=PREFIX, publish=self.publish, clock_ms=self.clock, new_epoch=lambda: "",
        )  # fmt: skip
        self.worker.load_state()
        self.cid = client_order_id(PREFIX, 1)
        self.t0 = 0

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    async def unresolved(self) -> None:
        """Start trading; the first tick's order gets no answer; remember when it became UNRESOLVED."""
        await self.env.start()
        await self.worker.start_trading()
        await self.worker.on_market(MarketData(MarketTick(SYMBOL, D("100"), self.clock.now)))
        assert self.state() is OrderState.UNRESOLVED
        o = self.worker.ledger.order(self.cid)
        assert o is not None
        self.t0 = o.updated_ms

    async def check_at(self, ms_after: int) -> None:
        self.clock.now = self.t0 + ms_after
        await self.worker.check_in_flight()

    def state(self) -> OrderState:
        o = self.worker.ledger.order(self.cid)
        assert o is not None
        return o.state

    def on_disk(self) -> str:
        ledger = inspect(self.worker.state_file.path).record.state["ledger"]
        saved = [o for o in [*ledger["open_orders"], *ledger["history"]] if o["client_order_id"] == self.cid]
        return str(saved[0]["state"])


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with StateDirectory.open(tmp_path / "state") as d:
        yield d


def test_a_submit_that_was_never_executed_is_not_placed_once_its_window_passed(state_dir: StateDirectory) -> None:
    """Asked at 2 s and 6 s ("not yet"), at 7 s "not found" is conclusive: NOT_PLACED, saved, strategy told."""
    s = Setup(state_dir, submit="lost")

    async def main() -> None:
        await s.unresolved()
        await s.check_at(1_900)
        assert s.env.queries == 0
        for at in (2_000, 6_000):
            await s.check_at(at)
            assert s.state() is OrderState.UNRESOLVED
        await s.check_at(WINDOW)
        assert s.env.queries == 3

    run(main)
    assert s.state() is OrderState.NOT_PLACED and s.on_disk() == "not_placed"
    assert s.strategy.closed == [(s.cid, "not_placed")]


def test_a_submit_that_was_executed_is_found_open_at_the_first_question(state_dir: StateDirectory) -> None:
    """The answer was lost, the order exists: OPEN with its exchange id, saved; no "closed" for the strategy."""
    s = Setup(state_dir, submit="executed")

    async def main() -> None:
        await s.unresolved()
        await s.check_at(2_000)

    run(main)
    o = s.worker.ledger.order(s.cid)
    assert o is not None and o.state is OrderState.OPEN and o.exchange_order_id is not None
    assert s.on_disk() == "open" and s.strategy.closed == [] and s.env.queries == 1


def test_failed_questions_change_nothing_and_stop_after_max_checks(state_dir: StateDirectory) -> None:
    """A query that fails is a question asked; after max_checks the order is the reconciliation's."""
    s = Setup(state_dir, submit="lost")
    s.env.query_fails = True

    async def main() -> None:
        await s.unresolved()
        for at in range(0, 600_000, 1_000):
            await s.check_at(at)

    run(main)
    assert s.state() is OrderState.UNRESOLVED and s.env.queries == POLICY.max_checks


def test_no_question_is_asked_while_not_trading(state_dir: StateDirectory) -> None:
    """Before phase C (or once stopping) the checks do nothing: the startup reconciliation owns the orders."""
    s = Setup(state_dir, submit="lost")

    async def main() -> None:
        await s.unresolved()
        s.worker.trading = False
        await s.check_at(WINDOW)

    run(main)
    assert s.env.queries == 0 and s.state() is OrderState.UNRESOLVED
