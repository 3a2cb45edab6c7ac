"""Tests for s1mpled.strategies: the plugin helpers, DCA and the grid, driven through a tiny fake runner."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from s1mpled.model import OrderType, Side
from s1mpled.state import codec
from s1mpled.strategies import (
    BUILTIN,
    DCA,
    CancelOrder,
    FillView,
    Grid,
    MarketRules,
    OpenOrderView,
    Params,
    PlaceOrder,
    Signal,
    Strategy,
    StrategyView,
    quantize_down,
    quantize_up,
    strategy_class,
)

D = Decimal
ZERO = D(0)
RULES = MarketRules(price_step=D("0.01"), amount_step=D("0.0001"), min_amount=D("0.0001"))


# -- a tiny fake runner: applies signals to in-memory open orders and simulates fills -------------


@dataclass
class _Order:
    cid: str
    signal: PlaceOrder
    reserve: Decimal  # quote (buy) or base (sell) taken out of capital/holdings while open
    filled: Decimal = ZERO
    spent: Decimal = ZERO
    unresolved: bool = False


@dataclass
class FakeRunner:
    strategy: Strategy
    capital: Decimal
    holdings: Decimal = ZERO
    price: Decimal | None = None
    halted: bool = False
    now_ms: int = 1_000_000
    rules: MarketRules = RULES
    orders: dict[str, _Order] = field(default_factory=dict)
    placed: list[PlaceOrder] = field(default_factory=list)
    next_id: int = 1

    def view(self) -> StrategyView:
        opens = tuple(
            OpenOrderView(o.cid, o.signal.side, o.signal.type, o.signal.amount, o.signal.price, o.filled,
                          o.signal.tag, o.unresolved)
            for o in self.orders.values()
        )  # fmt: skip
        return StrategyView(self.strategy.name, "BTC/USDT", self.now_ms, self.price, self.capital, self.holdings,
                            opens, self.rules, self.halted)  # fmt: skip

    def apply(self, signals: list[Signal]) -> list[Signal]:
        for s in signals:
            if isinstance(s, CancelOrder):
                self.close(s.client_order_id, "canceled")
                continue
            assert not self.halted or s.side == Side.SELL, f"signal while halted: {s}"
            cid, self.next_id = f"c{self.next_id}", self.next_id + 1
            if s.side == Side.BUY:
                reserve = (s.price or self.price or D(0)) * s.amount
                self.capital -= reserve
            else:
                reserve = s.amount
                self.holdings -= reserve
            self.orders[cid] = _Order(cid, s, reserve)
            self.placed.append(s)
        return signals

    def start(self) -> list[Signal]:
        return self.apply(self.strategy.on_start(self.view()))

    def tick(self, price: Decimal | None = None) -> list[Signal]:
        self.now_ms += 1_000
        self.price = price if price is not None else self.price
        return self.apply(self.strategy.on_tick(self.view()))

    def event(self, name: str = "strategy_tick", advance: int = 60_000) -> list[Signal]:
        self.now_ms += advance
        return self.apply(self.strategy.on_event(name, self.view()))

    def fill(self, cid: str, amount: Decimal | None = None, price: Decimal | None = None) -> list[Signal]:
        o = self.orders[cid]
        amount = o.signal.amount - o.filled if amount is None else amount
        price = price or o.signal.price or self.price
        assert price is not None
        o.filled += amount
        if o.signal.side == Side.BUY:
            self.holdings += amount
            o.spent += price * amount
        else:
            self.capital += price * amount
        complete = o.filled == o.signal.amount
        if complete:
            self._release(self.orders.pop(cid))
        fill = FillView(cid, o.signal.tag, o.signal.side, price, amount, D(0), complete)
        return self.apply(self.strategy.on_fill(fill, self.view()))

    def close(self, cid: str, state: str) -> list[Signal]:
        o = self.orders.pop(cid)
        self._release(o)
        return self.apply(self.strategy.on_order_closed(cid, o.signal.tag, state, self.view()))

    def _release(self, o: _Order) -> None:
        if o.signal.side == Side.BUY:
            self.capital += o.reserve - o.spent
        else:
            self.holdings += o.reserve - o.filled

    def by_tag(self, tag: str) -> str:
        (cid,) = [o.cid for o in self.orders.values() if o.signal.tag == tag]
        return cid

    def restart(self, snapshot: dict[str, Any] | None = None) -> FakeRunner:
        """A twin runner whose strategy is a new instance restored from ``snapshot`` (via the state codec)."""
        snap = self.strategy.state_snapshot() if snapshot is None else snapshot
        stored = codec.decode(codec.encode(snap, 1)).state
        old = self.strategy
        fresh = type(old)(old.name, old.symbol, PARAMS[old.name])
        fresh.restore_state(stored)
        twin = copy.deepcopy(self)
        twin.strategy, twin.placed = fresh, []
        return twin


PARAMS: dict[str, Mapping[str, Any]] = {
    "dca": {"quote_per_buy": "100", "take_profit": "0.03", "max_buys": 3},
    "grid": {"levels": 3, "spacing": "0.01", "order_quote": "50", "anchor": "100"},
}


def dca(runner_capital: str = "1000", **params: Any) -> FakeRunner:
    PARAMS["dca"] = {"quote_per_buy": "100", "take_profit": "0.03", "max_buys": 3, **params}
    return FakeRunner(DCA("dca", "BTC/USDT", PARAMS["dca"]), capital=D(runner_capital), price=D("100"))


def grid(runner_capital: str = "1000", price: str | None = "100", **params: Any) -> FakeRunner:
    PARAMS["grid"] = {"levels": 3, "spacing": "0.01", "order_quote": "50", "anchor": "100", **params}
    PARAMS["grid"] = {k: v for k, v in PARAMS["grid"].items() if v is not None}
    return FakeRunner(Grid("grid", "BTC/USDT", PARAMS["grid"]), capital=D(runner_capital),
                      price=D(price) if price else None)  # fmt: skip


def assert_no_floats(value: Any) -> None:
    """Walk a snapshot: only str keys and JSON scalars or Decimal, never float."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            assert_no_floats(v)
    elif isinstance(value, list):
        for v in value:
            assert_no_floats(v)
    else:
        assert value is None or isinstance(value, str | int | bool | Decimal), value
        assert not isinstance(value, float)


# -- helpers ------------------------------------------------------------------------------------


@given(
    st.decimals(min_value=-(10**9), max_value=10**9, places=8, allow_nan=False, allow_infinity=False),
    st.sampled_from([D("1"), D("0.01"), D("0.001"), D("0.5"), D("0.00000001"), D("25")]),
)
def test_quantize_down_and_up_bracket_the_value_on_the_step(value: Decimal, step: Decimal) -> None:
    """quantize_down/up return the nearest multiples of step at or below / at or above the value."""
    down, up = quantize_down(value, step), quantize_up(value, step)
    assert down <= value <= up
    assert value - down < step and up - value < step
    assert down % step == 0 and up % step == 0


def test_quantize_rejects_a_non_positive_step() -> None:
    """A zero or negative step is a programming error, reported as ValueError."""
    with pytest.raises(ValueError, match="step"):
        quantize_down(D("1"), D("0"))


def test_market_rules_refuse_non_positive_steps() -> None:
    """MarketRules cannot be built with a zero step (every quantization would divide by zero)."""
    with pytest.raises(ValueError, match="price_step"):
        MarketRules(D("0"), D("1"), D("0"))


def test_params_report_key_and_reason_and_refuse_floats_and_unknown_keys() -> None:
    """Params raise ValueError("key: why") for floats, bad ints, missing and unknown keys."""
    with pytest.raises(ValueError, match=r"^x: must be a decimal"):
        Params({"x": 0.1}).decimal("x")
    with pytest.raises(ValueError, match=r"^n: must be an integer"):
        Params({"n": "2.5"}).integer("n")
    with pytest.raises(ValueError, match=r"^n: must be in 1\.\.50"):
        Params({"n": 51}).integer("n", low=1, high=50)
    with pytest.raises(ValueError, match=r"^q: required"):
        Params({}).required_decimal("q")
    p = Params({"a": "1", "typo": "2"})
    assert p.decimal("a") == D("1")
    with pytest.raises(ValueError, match=r"^typo: unknown parameter \(known: a\)"):
        p.finish()


def test_builtin_registry_maps_types_to_classes() -> None:
    """strategy_class finds dca and grid and names the known types for anything else."""
    assert strategy_class("dca") is DCA and strategy_class("grid") is Grid and set(BUILTIN) == {"dca", "grid"}
    with pytest.raises(ValueError, match=r"^type: unknown strategy 'martingale' \(known: dca, grid\)"):
        strategy_class("martingale")


# -- DCA ----------------------------------------------------------------------------------------


def test_dca_buys_once_per_event_with_a_quantized_market_buy() -> None:
    """Each every_event yields one market buy of quote_per_buy/price rounded down to the amount step."""
    r = dca()
    r.price = D("300")
    (buy,) = r.event()
    assert buy == PlaceOrder(Side.BUY, OrderType.MARKET, D("0.3333"), None, "dca:buy:1")
    assert r.event() == []  # the first buy is still open
    r.fill("c1")
    assert r.event() == [PlaceOrder(Side.BUY, OrderType.MARKET, D("0.3333"), None, "dca:buy:2")]


def test_dca_ignores_other_events_and_redelivered_ones() -> None:
    """Only every_event triggers a buy, and an event not later than the last handled one is ignored."""
    r = dca(every_event="hourly")
    assert r.event("strategy_tick") == []
    assert len(r.event("hourly")) == 1
    r.fill("c1")
    assert r.event("hourly", advance=0) == []  # the same occurrence delivered again


def test_dca_respects_capital_max_buys_halted_and_unresolved() -> None:
    """No buy without enough capital, beyond max_buys, while halted or while a buy is unresolved."""
    poor = dca(runner_capital="99.99")
    assert poor.event() == []
    r = dca(max_buys=2)
    for cid in ("c1", "c2"):
        r.event()
        r.fill(cid)
    assert r.event() == [] and r.strategy.state_snapshot()["cycle_buys"] == 2
    halted = dca()
    halted.halted = True
    assert halted.event() == []
    stuck = dca()
    stuck.event()
    stuck.orders["c1"].unresolved = True
    assert stuck.event() == [] and stuck.tick() == []


def test_dca_skips_when_the_amount_is_below_the_minimum_or_there_is_no_price() -> None:
    """A buy smaller than min_amount, or without a last price, is not signalled."""
    r = dca()
    r.rules = MarketRules(D("0.01"), D("0.1"), D("0.1"))
    r.price = D("5000")
    assert r.event() == []
    r.price = None
    assert r.event() == []


def test_dca_takes_profit_once_with_everything_then_continues() -> None:
    """At avg*(1+tp) DCA market-sells all holdings once, resets the cycle and keeps buying."""
    r = dca()
    r.event()
    r.fill("c1", price=D("100"))  # 1 @ 100
    r.price = D("50")
    r.event()
    r.fill("c2", price=D("50"))  # 2 @ 50 -> avg 66.666...
    snap = r.strategy.state_snapshot()
    assert snap["total_bought"] == D("3") and snap["total_cost"] == D("200")
    assert r.tick(D("68.66")) == []  # below 66.67 * 1.03
    (sell,) = r.tick(D("68.67"))
    assert sell == PlaceOrder(Side.SELL, OrderType.MARKET, D("3"), None, "dca:tp:1")
    assert r.tick(D("70")) == []  # once: the sale is in flight
    r.fill("c3")
    snap = r.strategy.state_snapshot()
    assert (snap["tp_sells_done"], snap["total_bought"], snap["avg_entry"], snap["cycle_buys"]) == (1, 0, None, 0)
    assert r.tick(D("80")) == []  # nothing left to take profit on
    assert r.event() == [PlaceOrder(Side.BUY, OrderType.MARKET, D("1.25"), None, "dca:buy:3")]


def test_dca_take_profit_is_allowed_while_halted() -> None:
    """A take-profit sale reduces holdings, so DCA still signals it while the breaker is open."""
    r = dca()
    r.event()
    r.fill("c1")
    r.halted = True
    assert [s.side for s in r.tick(D("110")) if isinstance(s, PlaceOrder)] == [Side.SELL]


def test_dca_partial_take_profit_keeps_the_average_and_retries_after_cancel() -> None:
    """A partly filled then canceled take-profit reduces the position at the same average and re-arms."""
    r = dca()
    r.event()
    r.fill("c1")  # 1 @ 100
    r.tick(D("104"))
    r.fill("c2", amount=D("0.4"))
    r.close("c2", "canceled")
    snap = r.strategy.state_snapshot()
    assert snap["total_bought"] == D("0.6") and snap["avg_entry"] == D("100") and snap["pending"] is None
    assert r.tick() == [PlaceOrder(Side.SELL, OrderType.MARKET, D("0.6"), None, "dca:tp:1")]


def test_dca_state_is_json_shaped_and_survives_a_restart_exactly() -> None:
    """The snapshot has no floats, passes the state codec, and a restored DCA behaves identically."""
    r = dca()
    r.event()
    r.fill("c1", price=D("97.5"))
    r.event()  # c2 in flight when we "crash"
    assert_no_floats(r.strategy.state_snapshot())
    twin = r.restart()
    assert twin.strategy.state_snapshot() == r.strategy.state_snapshot()
    for runner in (r, twin):
        runner.start()
        runner.event()  # must not buy: c2 is still open
        runner.fill("c2", price=D("90"))
        runner.tick(D("200"))
    assert twin.placed == r.placed[2:] and len(twin.placed) == 1 and twin.placed[0].tag == "dca:tp:1"
    assert twin.strategy.state_snapshot() == r.strategy.state_snapshot()


def test_dca_restart_from_a_stale_snapshot_does_not_buy_again() -> None:
    """A snapshot saved before the buy was signalled still sees the recorded (unresolved) buy in the view."""
    r = dca()
    stale = r.strategy.state_snapshot()
    r.event()
    r.orders["c1"].unresolved = True
    twin = r.restart(stale)
    assert twin.start() == [] and twin.event() == [] and twin.placed == []


def test_dca_memory_covers_a_buy_the_view_does_not_show_yet() -> None:
    """A second event with a view that lags behind the first buy signal does not buy again."""
    r = dca()
    view = r.view()
    assert len(r.strategy.on_event("strategy_tick", view)) == 1
    assert r.strategy.on_event("strategy_tick", replace(view, now_ms=view.now_ms + 60_000)) == []


def test_dca_forgets_an_in_flight_order_the_reconciled_view_does_not_show() -> None:
    """on_start settles a remembered order that never reached the exchange, so the next event buys."""
    r = dca()
    r.event()
    twin = r.restart()
    twin.orders.clear()
    twin.capital = D("1000")
    twin.start()
    assert len(twin.event()) == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"quote_per_buy": "0"}, r"^quote_per_buy: must be greater than 0"),
        ({"quote_per_buy": 10.5}, r"^quote_per_buy: must be a decimal"),
        ({"quote_per_buy": "1", "max_buys": 0}, r"^max_buys: must be in 1\.\."),
        ({"quote_per_buy": "1", "take_profit": "-0.1"}, r"^take_profit: must be greater than 0"),
        ({"quote_per_buy": "1", "every": "x"}, r"^every: unknown parameter"),
        ({}, r"^quote_per_buy: required"),
    ],
)
def test_dca_rejects_bad_parameters(params: dict[str, Any], message: str) -> None:
    """Bad DCA parameters raise ValueError naming the key."""
    with pytest.raises(ValueError, match=message):
        DCA("d", "BTC/USDT", params)


def test_dca_restore_refuses_a_malformed_snapshot() -> None:
    """A snapshot with a float amount or another version is refused, not half-adopted."""
    good = dca().strategy.state_snapshot()
    with pytest.raises(ValueError, match=r"state\.total_cost: expected a Decimal"):
        dca().strategy.restore_state({**good, "total_cost": 1.5})
    with pytest.raises(ValueError, match=r"state\.version"):
        dca().strategy.restore_state({**good, "version": 99})


# -- grid ---------------------------------------------------------------------------------------


def one(signals: list[Signal]) -> PlaceOrder:
    """The single order a call signalled."""
    (signal,) = signals
    assert isinstance(signal, PlaceOrder)
    return signal


def buys(signals: list[Signal]) -> list[tuple[str, Decimal | None, Decimal]]:
    return [(s.tag, s.price, s.amount) for s in signals if isinstance(s, PlaceOrder) and s.side == Side.BUY]


def test_grid_places_the_levels_below_the_anchor() -> None:
    """On start the grid places one limit buy per level at anchor*(1-spacing*i), amounts on the step."""
    r = grid()
    assert buys(r.start()) == [
        ("grid:buy:1", D("99.00"), D("0.5050")),
        ("grid:buy:2", D("98.00"), D("0.5102")),
        ("grid:buy:3", D("97.00"), D("0.5154")),
    ]
    assert all(s.type == OrderType.LIMIT for s in r.placed)
    assert r.tick() == []  # every level has its order


def test_grid_anchors_at_the_first_price_and_keeps_it() -> None:
    """Without an anchor parameter the first last_price becomes the anchor and is persisted."""
    r = grid(price=None, anchor=None)
    assert r.start() == []
    assert [p for _, p, _ in buys(r.tick(D("200")))] == [D("198.00"), D("196.00"), D("194.00")]
    assert r.strategy.state_snapshot()["anchor"] == D("200")
    twin = r.restart()
    twin.price = D("150")
    assert twin.start() == [] and twin.strategy.state_snapshot()["anchor"] == D("200")


def test_grid_places_buys_only_as_far_as_capital_allows() -> None:
    """With capital for two levels, the two nearest the anchor are placed and the third waits."""
    r = grid(runner_capital="120")
    assert [t for t, _, _ in buys(r.start())] == ["grid:buy:1", "grid:buy:2"]
    r.capital += D("100")
    assert [t for t, _, _ in buys(r.tick())] == ["grid:buy:3"]


def test_grid_buy_fill_places_a_sell_one_level_up_and_sell_fill_rebuys() -> None:
    """A completed buy at level i becomes a sell at price*(1+spacing); its fill re-places the buy."""
    r = grid()
    r.start()
    assert r.fill(r.by_tag("grid:buy:2"), amount=D("0.5")) == []  # partial: nothing yet
    (sell,) = r.fill(r.by_tag("grid:buy:2"))
    assert sell == PlaceOrder(Side.SELL, OrderType.LIMIT, D("0.5102"), D("98.98"), "grid:sell:2")
    (rebuy,) = r.fill(r.by_tag("grid:sell:2"))
    assert rebuy == PlaceOrder(Side.BUY, OrderType.LIMIT, D("0.5102"), D("98.00"), "grid:buy:2")
    snap = r.strategy.state_snapshot()
    assert snap["round_trips"] == 1 and snap["realized_profit"] == D("0.98") * D("0.5102")


def test_grid_while_halted_places_sells_but_no_buys() -> None:
    """Halted: no new buys (start, fills, ticks), but a filled level still gets its reducing sell."""
    r = grid()
    r.halted = True
    assert r.start() == []
    r.halted = False
    r.start()
    r.halted = True
    assert one(r.fill(r.by_tag("grid:buy:1"))).tag == "grid:sell:1"
    assert r.fill(r.by_tag("grid:sell:1")) == [] and r.tick() == []
    r.halted = False
    assert [t for t, _, _ in buys(r.tick())] == ["grid:buy:1"]


def test_grid_rearms_a_canceled_level_on_the_next_tick() -> None:
    """A canceled or not-placed level order is re-placed on the next tick, not inside on_order_closed."""
    r = grid()
    r.start()
    assert r.close(r.by_tag("grid:buy:3"), "canceled") == []
    assert [t for t, _, _ in buys(r.tick())] == ["grid:buy:3"]


def test_grid_backs_off_after_a_rejection() -> None:
    """A rejected level waits for its backoff before the next attempt instead of retrying every tick."""
    r = grid()
    r.start()
    r.close(r.by_tag("grid:buy:1"), "rejected")
    r.now_ms -= 500  # the next tick comes 0.5 s after the rejection
    assert r.tick() == []
    assert [t for t, _, _ in buys(r.tick())] == ["grid:buy:1"]


def test_grid_sells_what_a_canceled_partial_buy_bought() -> None:
    """A buy canceled after a partial fill turns the level into a sell of the partial amount."""
    r = grid()
    r.start()
    r.fill(r.by_tag("grid:buy:1"), amount=D("0.2"))
    r.close(r.by_tag("grid:buy:1"), "canceled")
    sell = one(r.tick())
    assert (sell.tag, sell.amount) == ("grid:sell:1", D("0.2"))


def test_grid_sell_is_capped_by_holdings_when_a_fee_was_taken_in_base() -> None:
    """If fees left less base than bought, the sell is for what is held and completing it ends the trip."""
    r = grid()
    r.start()
    cid = r.by_tag("grid:buy:1")
    r.holdings -= D("0.0005")  # the exchange kept its fee in base
    assert one(r.fill(cid)).amount == D("0.5045")
    assert one(r.fill(r.by_tag("grid:sell:1"))).tag == "grid:buy:1"
    assert r.strategy.state_snapshot()["round_trips"] == 1


def test_grid_state_is_json_shaped_and_survives_a_restart_exactly() -> None:
    """The snapshot has no floats, passes the codec, and a restored grid continues identically."""
    r = grid()
    r.start()
    r.fill(r.by_tag("grid:buy:1"))
    r.fill(r.by_tag("grid:buy:2"), amount=D("0.1"))
    assert_no_floats(r.strategy.state_snapshot())
    twin = r.restart()
    assert twin.strategy.state_snapshot() == r.strategy.state_snapshot()
    before = len(r.placed)
    for runner in (r, twin):
        assert runner.start() == []  # every level already has its order
        runner.fill(runner.by_tag("grid:buy:2"))
        runner.fill(runner.by_tag("grid:sell:1"))
        runner.tick(D("95"))
    assert twin.placed == r.placed[before:] and len(twin.placed) == 2
    assert twin.strategy.state_snapshot() == r.strategy.state_snapshot()


@pytest.mark.parametrize("unresolved", [False, True])
def test_grid_restart_from_a_stale_snapshot_places_no_duplicates(unresolved: bool) -> None:
    """Restored from a snapshot older than its orders, the grid adopts them from the view instead of re-placing."""
    r = grid()
    stale = r.strategy.state_snapshot()
    r.start()
    for o in r.orders.values():
        o.unresolved = unresolved
    twin = r.restart(stale)
    assert twin.start() == [] and twin.tick() == [] and twin.placed == []
    assert {lvl["order_id"] for lvl in twin.strategy.state_snapshot()["levels"].values()} == {"c1", "c2", "c3"}


def test_grid_restart_from_a_snapshot_older_than_a_fill_adopts_the_sell() -> None:
    """A stale snapshot (level still buying) meets a view with that level's sell: no buy, the sell is adopted."""
    r = grid()
    r.start()
    stale = r.strategy.state_snapshot()
    r.fill(r.by_tag("grid:buy:1"))
    twin = r.restart(stale)
    assert twin.start() == [] and twin.tick() == []
    assert twin.strategy.state_snapshot()["levels"]["1"]["expected_tag"] == "grid:sell:1"
    assert buys(twin.fill(twin.by_tag("grid:sell:1"))) == [("grid:buy:1", D("99.00"), D("0.5050"))]
    assert twin.strategy.state_snapshot()["round_trips"] == 1


def test_grid_memory_covers_signals_the_view_does_not_show_yet() -> None:
    """Two calls with the same (lagging) view place each level once: memory knows what was signalled."""
    r = grid()
    view = r.view()
    assert len(r.strategy.on_start(view)) == 3
    assert r.strategy.on_tick(replace(view, now_ms=view.now_ms + 1)) == []


def test_grid_restart_replaces_orders_that_never_reached_the_exchange() -> None:
    """An order remembered but absent from the reconciled view is taken as gone and placed once more."""
    r = grid()
    r.start()
    twin = r.restart()
    twin.orders.clear()
    twin.capital = D("1000")
    assert len(buys(twin.start())) == 3 and twin.tick() == []


def test_grid_with_fewer_levels_cancels_retired_buys_and_finishes_retired_sells() -> None:
    """After a restart with fewer levels, buys beyond them are canceled and a pending sell still completes."""
    r = grid()
    r.start()
    retired_buy = r.by_tag("grid:buy:2")
    r.fill(r.by_tag("grid:buy:3"))
    PARAMS["grid"] = {**PARAMS["grid"], "levels": 1}
    twin = r.restart()
    assert twin.start() == [CancelOrder(retired_buy)]
    assert {o.signal.tag for o in twin.orders.values()} == {"grid:buy:1", "grid:sell:3"}
    assert twin.fill(twin.by_tag("grid:sell:3")) == []  # no re-buy at a retired level
    assert twin.strategy.state_snapshot()["round_trips"] == 1
    assert set(twin.strategy.state_snapshot()["levels"]) == {"1", "2"}  # 2 is idle, dropped on the next restart
    assert set(twin.restart().strategy.state_snapshot()["levels"]) == {"1"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"levels": 0}, r"^levels: must be in 1\.\.50"),
        ({"levels": 51}, r"^levels: must be in 1\.\.50"),
        ({"levels": 50, "spacing": "0.02"}, r"^spacing: must be less than 0\.02"),
        ({"spacing": 0.01}, r"^spacing: must be a decimal"),
        ({"order_quote": "0"}, r"^order_quote: must be greater than 0"),
        ({"anchor": "-1"}, r"^anchor: must be greater than 0"),
        ({"step": "1"}, r"^step: unknown parameter"),
    ],
)
def test_grid_rejects_bad_parameters(params: dict[str, Any], message: str) -> None:
    """Bad grid parameters raise ValueError naming the key."""
    with pytest.raises(ValueError, match=message):
        Grid("g", "BTC/USDT", {"levels": 3, "spacing": "0.01", "order_quote": "50", **params})


_steps = st.sampled_from([D("1"), D("0.1"), D("0.01"), D("0.0001"), D("0.00000001")])


@settings(max_examples=150, deadline=None)
@given(
    anchor=st.decimals(min_value=D("0.01"), max_value=D("100000"), places=4),
    levels=st.integers(1, 50),
    spacing_bp=st.integers(1, 2000),
    order_quote=st.decimals(min_value=D("1"), max_value=D("10000"), places=2),
    capital=st.decimals(min_value=D("0"), max_value=D("100000"), places=2),
    price_step=_steps,
    amount_step=_steps,
    min_steps=st.integers(0, 3),
)
def test_grid_orders_are_on_the_steps_ordered_and_within_capital(
    *,
    anchor: Decimal,
    levels: int,
    spacing_bp: int,
    order_quote: Decimal,
    capital: Decimal,
    price_step: Decimal,
    amount_step: Decimal,
    min_steps: int,
) -> None:
    """Grid buy prices sit on price_step and strictly fall, amounts sit on amount_step, cost <= capital."""
    spacing = D(spacing_bp) / 10_000
    assume(spacing * levels < 1)
    params = {"levels": levels, "spacing": str(spacing), "order_quote": str(order_quote), "anchor": str(anchor)}
    g = Grid("g", "X/Y", params)
    rules = MarketRules(price_step, amount_step, amount_step * min_steps)
    r = FakeRunner(g, capital=capital, price=anchor, rules=rules)
    placed = buys(r.start())
    prices = [p for _, p, _ in placed if p is not None]
    assert len(prices) == len(placed)
    assert all(0 < p < anchor and p % price_step == 0 for p in prices)
    assert prices == sorted(prices, reverse=True) and len(set(prices)) == len(prices)
    assert all(a % amount_step == 0 and a >= rules.min_amount and a > 0 for _, _, a in placed)
    assert sum((p or D(0)) * a for _, p, a in placed) <= capital
    if placed:
        tag, buy_price, _ = placed[0]
        (sell,) = r.fill(r.by_tag(tag))
        assert isinstance(sell, PlaceOrder) and sell.price is not None and buy_price is not None
        assert sell.price > buy_price and sell.price % price_step == 0
