"""Tests of the simulated exchange: every rule of the module docstring, then the invariants under hypothesis."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import ROUND_DOWN, localcontext
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s1mpled.environments.paper_exchange import MarketSpec, SimulatedExchange
from s1mpled.errors import ExchangeRejected, LocalStateError
from s1mpled.model import Balance, ExchangeOrderStatus, Fill, OrderRequest, OrderType, Side
from s1mpled.state import codec

BTC = "BTC/USDT"
ETH = "ETH/BTC"
FEE = D("0.001")
MARKETS = {
    BTC: MarketSpec(BTC, price_step=D("0.01"), amount_step=D("0.001"), liquidity=D("1")),
    ETH: MarketSpec(ETH, price_step=D("0.00001"), amount_step=D("0.01"), liquidity=D("5")),
}


def make(usdt: str = "100000", btc: str = "10", eth: str = "100", fee: D = FEE) -> SimulatedExchange:
    return SimulatedExchange(MARKETS, {"USDT": D(usdt), "BTC": D(btc), "ETH": D(eth)}, fee)


def limit(cid: str, side: Side, amount: str, price: str, symbol: str = BTC) -> OrderRequest:
    return OrderRequest(cid, symbol, side, OrderType.LIMIT, D(amount), D(price))


def market(cid: str, side: Side, amount: str, symbol: str = BTC) -> OrderRequest:
    return OrderRequest(cid, symbol, side, OrderType.MARKET, D(amount))


def bal(ex: SimulatedExchange, asset: str) -> tuple[D, D]:
    b = ex.balances()[asset]
    return b.free, b.used


# ------------------------------------------------------------------- construction


def test_constructor_refuses_bad_configuration() -> None:
    """Negative balances, a fee rate outside [0, 1) and mismatched market keys are ValueErrors."""
    with pytest.raises(ValueError, match="balance"):
        SimulatedExchange(MARKETS, {"USDT": D(-1)}, FEE)
    with pytest.raises(ValueError, match="fee_rate"):
        SimulatedExchange(MARKETS, {}, D(1))
    with pytest.raises(ValueError, match="differs"):
        SimulatedExchange({ETH: MARKETS[BTC]}, {}, FEE)


def test_market_spec_validates_steps_and_liquidity() -> None:
    """A market needs a BASE/QUOTE symbol, positive steps and at least one amount_step of liquidity."""
    with pytest.raises(ValueError):
        MarketSpec("BTCUSDT", D("0.01"), D("0.001"), D(1))
    with pytest.raises(ValueError, match="price_step"):
        MarketSpec(BTC, D(0), D("0.001"), D(1))
    with pytest.raises(ValueError, match="liquidity"):
        MarketSpec(BTC, D("0.01"), D("0.1"), D("0.05"))


def test_balances_list_initial_and_market_assets() -> None:
    """Every asset with an initial balance or in a market is reported, free and used."""
    ex = SimulatedExchange(MARKETS, {"EUR": D(5)}, FEE)
    assert set(ex.balances()) == {"EUR", "BTC", "USDT", "ETH"}
    assert bal(ex, "EUR") == (D(5), D(0))
    assert bal(ex, "ETH") == (D(0), D(0))


# ------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("req", "why"),
    [
        (limit("a", Side.BUY, "1", "100", symbol="DOGE/USDT"), "unknown symbol"),
        (limit("a", Side.BUY, "0", "100"), "amount must be positive"),
        (limit("a", Side.BUY, "-1", "100"), "amount must be positive"),
        (limit("a", Side.BUY, "NaN", "100"), "amount must be positive"),
        (limit("a", Side.BUY, "0.0005", "100"), "not a multiple of amount_step"),
        (limit("a", Side.BUY, "1", "100.005"), "not a multiple of price_step"),
        (limit("a", Side.BUY, "1", "0"), "limit price must be positive"),
        (limit("a", Side.BUY, "1", "-5"), "limit price must be positive"),
        (limit("a", Side.BUY, "1", "Infinity"), "limit price must be positive"),
        (OrderRequest("a", BTC, Side.BUY, OrderType.LIMIT, D(1)), "needs a price"),
        (OrderRequest("a", BTC, Side.BUY, OrderType.MARKET, D(1), D(100)), "must not carry a price"),
        (market("a", Side.BUY, "1"), "before any price"),
    ],
)
def test_invalid_requests_are_rejected_without_a_trace(req: OrderRequest, why: str) -> None:
    """Each invalid request raises ExchangeRejected naming why, and changes no balance, order or counter."""
    ex = make()
    before = ex.to_state()
    with pytest.raises(ExchangeRejected, match=why):
        ex.place_order(req, 1)
    assert ex.to_state() == before
    assert ex.order("a") is None


def test_amount_and_price_on_their_steps_are_accepted() -> None:
    """Amounts and prices that are exact multiples of their steps (in any notation) are fine."""
    ex = make()
    order, fills = ex.place_order(limit("a", Side.BUY, "0.0010", "99.990"), 1)
    assert order.status is ExchangeOrderStatus.OPEN
    assert fills == []


def test_insufficient_funds_for_limit_orders() -> None:
    """A limit buy needs price*amount*(1+fee) free quote, a limit sell amount free base."""
    ex = make(usdt="100.1", btc="1")
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.place_order(limit("b", Side.BUY, "1", "100.01"), 1)
    ex.place_order(limit("b", Side.BUY, "1", "100"), 1)  # exactly 100.1 with the fee
    assert bal(ex, "USDT") == (D(0), D("100.1"))
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.place_order(limit("s", Side.SELL, "1.001", "200"), 1)
    ex.place_order(limit("s", Side.SELL, "1", "200"), 1)
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.place_order(limit("s2", Side.SELL, "0.001", "200"), 1)  # the rest is reserved


def test_insufficient_funds_for_market_orders_include_the_fee() -> None:
    """A market buy affordable without the fee but not with it is rejected; a market sell needs free base."""
    ex = make(usdt="100", btc="0.5")
    ex.on_price(BTC, D(100), 1)
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.place_order(market("m", Side.BUY, "1"), 2)
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.place_order(market("m", Side.SELL, "0.501"), 2)
    order, _ = ex.place_order(market("m", Side.BUY, "0.999"), 2)  # 99.9 + 0.0999
    assert order.status is ExchangeOrderStatus.CLOSED
    assert bal(ex, "USDT") == (D("0.0001"), D(0))


def test_duplicate_client_order_id_is_rejected_forever() -> None:
    """A client id used by any placed order (open, filled or canceled) cannot be used again."""
    ex = make()
    ex.place_order(limit("a", Side.BUY, "1", "100"), 1)
    with pytest.raises(ExchangeRejected, match="duplicate client_order_id"):
        ex.place_order(limit("a", Side.BUY, "1", "100"), 2)
    ex.cancel_order(BTC, "a", 3)
    with pytest.raises(ExchangeRejected, match="duplicate client_order_id"):
        ex.place_order(limit("a", Side.SELL, "1", "100"), 4)
    ex.on_price(BTC, D(100), 5)
    ex.place_order(market("m", Side.BUY, "1"), 6)
    with pytest.raises(ExchangeRejected, match="duplicate client_order_id"):
        ex.place_order(market("m", Side.BUY, "1"), 7)
    assert len(ex.trades()) == 1  # the re-sent market order did not trade again


def test_a_rejected_client_order_id_may_be_used_again() -> None:
    """A rejected request leaves no trace, so its client id is still free."""
    ex = make(usdt="10")
    with pytest.raises(ExchangeRejected):
        ex.place_order(limit("a", Side.BUY, "1", "100"), 1)
    order, _ = ex.place_order(limit("a", Side.BUY, "0.01", "100"), 2)
    assert order.exchange_order_id == "1"


# ------------------------------------------------------------------- reservation and fees


def test_limit_buy_and_sell_reserve_funds() -> None:
    """A limit buy moves price*amount*(1+fee) quote to used; a limit sell moves amount base to used."""
    ex = make(usdt="1000", btc="2")
    ex.place_order(limit("b", Side.BUY, "2", "300"), 1)
    assert bal(ex, "USDT") == (D("399.4"), D("600.6"))
    ex.place_order(limit("s", Side.SELL, "1.5", "400"), 1)
    assert bal(ex, "BTC") == (D("0.5"), D("1.5"))


def test_buy_fill_charges_cost_plus_fee_in_quote() -> None:
    """A filled buy costs price*amount+fee quote, gives amount base and frees its whole reservation."""
    ex = make(usdt="1000", btc="0")
    ex.place_order(limit("b", Side.BUY, "0.5", "300"), 1)
    (fill,) = ex.on_price(BTC, D("299.99"), 2)
    assert (fill.price, fill.amount, fill.fee, fill.fee_asset) == (D(300), D("0.5"), D("0.15"), "USDT")
    assert bal(ex, "USDT") == (D("849.85"), D(0))
    assert bal(ex, "BTC") == (D("0.5"), D(0))


def test_sell_fill_pays_cost_minus_fee_in_quote() -> None:
    """A filled sell takes amount base and gives price*amount-fee quote."""
    ex = make(usdt="0", btc="1")
    ex.place_order(limit("s", Side.SELL, "0.5", "300"), 1)
    (fill,) = ex.on_price(BTC, D("300.5"), 2)
    assert (fill.price, fill.fee, fill.fee_asset) == (D(300), D("0.15"), "USDT")
    assert bal(ex, "USDT") == (D("149.85"), D(0))
    assert bal(ex, "BTC") == (D("0.5"), D(0))


def test_fee_is_rounded_down_to_eight_places_and_the_dust_returns_to_free() -> None:
    """fee = price*amount*fee_rate rounded DOWN to 8 decimals; the reservation's excess goes back to free."""
    specs = {"X/Y": MarketSpec("X/Y", D("0.00000001"), D("1"), D("100"))}
    ex = SimulatedExchange(specs, {"Y": D(10)}, D("0.001"))
    ex.place_order(OrderRequest("b", "X/Y", Side.BUY, OrderType.LIMIT, D(3), D("1.23456789")), 1)
    assert bal(ex, "Y") == (D(10) - D("3.70740737367"), D("3.70740737367"))
    (fill,) = ex.on_price("X/Y", D("1.2"), 2)
    assert fill.fee == D("0.00370370")  # 0.00370370367 rounded down
    assert bal(ex, "Y") == (D(10) - D("3.70370367") - D("0.00370370"), D(0))
    assert bal(ex, "X") == (D(3), D(0))


def test_zero_fee_rate_charges_nothing() -> None:
    """With fee_rate 0 a buy reserves and costs exactly price*amount."""
    ex = make(usdt="100", fee=D(0))
    ex.place_order(limit("b", Side.BUY, "1", "100"), 1)
    assert bal(ex, "USDT") == (D(0), D(100))
    (fill,) = ex.on_price(BTC, D(50), 2)
    assert fill.fee == 0
    assert bal(ex, "USDT") == (D(0), D(0))


# ------------------------------------------------------------------- matching


def test_resting_orders_fill_only_when_crossed_and_at_their_limit() -> None:
    """A buy fills when price <= limit and a sell when price >= limit, both at the order's limit price."""
    ex = make()
    ex.place_order(limit("b", Side.BUY, "0.5", "100"), 1)
    ex.place_order(limit("s", Side.SELL, "0.5", "200"), 1)
    assert ex.on_price(BTC, D("100.01"), 2) == []
    assert ex.on_price(BTC, D("199.99"), 3) == []
    (fb,) = ex.on_price(BTC, D(90), 4)
    (fs,) = ex.on_price(BTC, D(250), 5)
    assert (fb.client_order_id, fb.price, fb.timestamp_ms) == ("b", D(100), 4)
    assert (fs.client_order_id, fs.price, fs.timestamp_ms) == ("s", D(200), 5)
    assert ex.open_orders() == []


def test_a_price_exactly_at_the_limit_fills() -> None:
    """Touching the limit price is enough for both sides."""
    ex = make()
    ex.place_order(limit("b", Side.BUY, "0.5", "100"), 1)
    assert len(ex.on_price(BTC, D(100), 2)) == 1
    ex.place_order(limit("s", Side.SELL, "0.5", "100"), 3)  # marketable at 100
    sell = ex.order("s")
    assert sell is not None and sell.status is ExchangeOrderStatus.CLOSED


def test_big_orders_fill_partially_over_several_updates() -> None:
    """Each update fills at most the market's liquidity per order; the status stays OPEN until the last fill."""
    ex = make()
    ex.place_order(limit("b", Side.BUY, "2.5", "100"), 1)
    amounts, statuses = [], []
    for t in (2, 3, 4, 5):
        amounts.append([f.amount for f in ex.on_price(BTC, D(99), t)])
        order = ex.order("b")
        assert order is not None
        statuses.append((order.filled, order.status))
    assert amounts == [[D(1)], [D(1)], [D("0.5")], []]
    assert statuses == [
        (D(1), ExchangeOrderStatus.OPEN),
        (D(2), ExchangeOrderStatus.OPEN),
        (D("2.5"), ExchangeOrderStatus.CLOSED),
        (D("2.5"), ExchangeOrderStatus.CLOSED),
    ]
    assert bal(ex, "USDT") == (D(100000) - D("250.25"), D(0))


def test_liquidity_is_rounded_down_to_amount_step() -> None:
    """A liquidity of 1.05 with amount_step 0.1 fills 1.0 per update."""
    specs = {"X/Y": MarketSpec("X/Y", D("1"), D("0.1"), D("1.05"))}
    ex = SimulatedExchange(specs, {"X": D(5)}, FEE)
    ex.place_order(OrderRequest("s", "X/Y", Side.SELL, OrderType.LIMIT, D("2.5"), D(10)), 1)
    assert [f.amount for f in ex.on_price("X/Y", D(10), 2)] == [D("1.0")]


def test_each_order_gets_its_own_liquidity_in_placement_order() -> None:
    """Several crossed orders each fill up to the liquidity in one update, oldest first."""
    ex = make()
    ex.place_order(limit("b1", Side.BUY, "1.5", "100"), 1)
    ex.place_order(limit("b2", Side.BUY, "0.5", "101"), 2)
    fills = ex.on_price(BTC, D(99), 3)
    assert [(f.client_order_id, f.amount, f.price) for f in fills] == [("b1", D(1), D(100)), ("b2", D("0.5"), D(101))]


def test_marketable_limit_fills_on_placement_and_rests_with_the_remainder() -> None:
    """A buy limit at or above the last price fills up to liquidity at once, at its limit, and rests with the rest."""
    ex = make()
    ex.on_price(BTC, D(100), 1)
    order, fills = ex.place_order(limit("b", Side.BUY, "1.5", "105"), 2)
    assert [(f.amount, f.price, f.timestamp_ms) for f in fills] == [(D(1), D(105), 2)]
    assert (order.filled, order.status) == (D(1), ExchangeOrderStatus.OPEN)
    assert ex.open_orders() == [order]
    assert bal(ex, "USDT")[1] == D("52.5525")  # 0.5 * 105 * 1.001 still reserved
    (rest,) = ex.on_price(BTC, D(104), 3)
    assert rest.amount == D("0.5")


def test_marketable_sell_limit_fills_at_its_limit() -> None:
    """A sell limit at or below the last price fills at once at its (lower) limit price."""
    ex = make()
    ex.on_price(BTC, D(100), 1)
    order, fills = ex.place_order(limit("s", Side.SELL, "0.2", "95"), 2)
    assert [(f.amount, f.price) for f in fills] == [(D("0.2"), D(95))]
    assert order.status is ExchangeOrderStatus.CLOSED
    assert ex.open_orders() == []


def test_non_marketable_limit_rests() -> None:
    """A limit order away from the last price rests without fills."""
    ex = make()
    ex.on_price(BTC, D(100), 1)
    order, fills = ex.place_order(limit("b", Side.BUY, "1", "99.99"), 2)
    assert fills == [] and order.status is ExchangeOrderStatus.OPEN


def test_market_orders_fill_completely_at_the_last_price() -> None:
    """A market order ignores the liquidity cap and fills all at once at the last price."""
    ex = make(usdt="10000", btc="0")
    ex.on_price(BTC, D(100), 1)
    order, fills = ex.place_order(market("m", Side.BUY, "3"), 2)
    assert [(f.amount, f.price, f.fee) for f in fills] == [(D(3), D(100), D("0.3"))]
    assert (order.status, order.filled, order.price, order.type) == (
        ExchangeOrderStatus.CLOSED,
        D(3),
        None,
        OrderType.MARKET,
    )
    assert bal(ex, "USDT") == (D("9699.7"), D(0))
    _, sells = ex.place_order(market("n", Side.SELL, "3"), 3)
    assert sells[0].fee == D("0.3")
    assert bal(ex, "USDT") == (D("9999.4"), D(0))
    assert bal(ex, "BTC") == (D(0), D(0))


def test_on_price_touches_only_its_symbol_and_rejects_bad_prices() -> None:
    """A price update fills only the orders of its own symbol; unknown symbols and non-positive prices are refused."""
    ex = make()
    ex.place_order(limit("e", Side.BUY, "1", "0.05", symbol=ETH), 1)
    assert ex.on_price(BTC, D("0.01"), 2) == []
    assert ex.last_price(BTC) == D("0.01") and ex.last_price(ETH) is None
    with pytest.raises(ExchangeRejected, match="unknown symbol"):
        ex.on_price("DOGE/USDT", D(1), 3)
    with pytest.raises(ExchangeRejected, match="positive"):
        ex.on_price(BTC, D(0), 3)
    assert ex.last_price(BTC) == D("0.01")


# ------------------------------------------------------------------- cancel


def test_cancel_after_partial_fill_returns_the_remaining_reservation() -> None:
    """Canceling a partially filled buy frees exactly the reservation of the unfilled amount."""
    ex = make(usdt="1000", btc="0")
    ex.place_order(limit("b", Side.BUY, "3", "100"), 1)
    ex.on_price(BTC, D(100), 2)
    assert bal(ex, "USDT") == (D("699.7"), D("200.2"))
    canceled = ex.cancel_order(BTC, "b", 3)
    assert (canceled.status, canceled.filled) == (ExchangeOrderStatus.CANCELED, D(1))
    assert bal(ex, "USDT") == (D("899.9"), D(0))
    assert bal(ex, "BTC") == (D(1), D(0))
    assert ex.order("b") == canceled
    assert ex.open_orders() == []
    assert ex.on_price(BTC, D(50), 4) == []


def test_cancel_sell_returns_base() -> None:
    """Canceling a partially filled sell returns the unfilled base to free."""
    ex = make(usdt="0", btc="3")
    ex.place_order(limit("s", Side.SELL, "3", "100"), 1)
    ex.on_price(BTC, D(100), 2)
    ex.cancel_order(BTC, "s", 3)
    assert bal(ex, "BTC") == (D(2), D(0))
    assert bal(ex, "USDT") == (D("99.9"), D(0))


def test_cancel_unknown_or_closed_orders_is_rejected() -> None:
    """Cancel names "order not found" for unknown ids (or another symbol) and "order not open" for finished ones."""
    ex = make()
    with pytest.raises(ExchangeRejected, match="order not found"):
        ex.cancel_order(BTC, "nope", 1)
    ex.place_order(limit("b", Side.BUY, "0.5", "100"), 1)
    with pytest.raises(ExchangeRejected, match="order not found"):
        ex.cancel_order(ETH, "b", 1)
    ex.on_price(BTC, D(100), 2)
    with pytest.raises(ExchangeRejected, match="order not open"):
        ex.cancel_order(BTC, "b", 3)
    ex.place_order(limit("c", Side.BUY, "0.5", "10"), 4)
    ex.cancel_order(BTC, "c", 5)
    with pytest.raises(ExchangeRejected, match="order not open"):
        ex.cancel_order(BTC, "c", 6)


# ------------------------------------------------------------------- ids and queries


def test_trade_and_order_ids_are_separate_global_counters() -> None:
    """Exchange order ids and trade ids count "1", "2", ... independently across symbols."""
    ex = make()
    ex.on_price(BTC, D(100), 1)
    ex.on_price(ETH, D("0.05"), 1)
    o1, f1 = ex.place_order(market("a", Side.BUY, "0.1"), 2)
    o2, _ = ex.place_order(limit("b", Side.BUY, "2", "0.04", symbol=ETH), 3)
    o3, f3 = ex.place_order(market("c", Side.BUY, "1", symbol=ETH), 4)
    f2 = ex.on_price(ETH, D("0.04"), 5)
    assert [o.exchange_order_id for o in (o1, o2, o3)] == ["1", "2", "3"]
    assert [f.trade_id for f in f1 + f3 + f2] == ["1", "2", "3"]
    assert [(f.trade_id, f.exchange_order_id) for f in f1 + f3 + f2] == [("1", "1"), ("2", "3"), ("3", "2")]


def test_trades_filter_by_symbol_and_after_trade_id() -> None:
    """trades() returns fills in id order, optionally of one symbol and with ids numerically after a given one."""
    ex = make()
    ex.on_price(BTC, D(100), 1)
    ex.on_price(ETH, D("0.05"), 1)
    for i in range(12):
        symbol = BTC if i % 3 else ETH
        ex.place_order(market(f"m{i}", Side.BUY, "0.01", symbol=symbol), i)
    assert [f.trade_id for f in ex.trades()] == [str(i) for i in range(1, 13)]
    assert [f.trade_id for f in ex.trades(after_trade_id="9")] == ["10", "11", "12"]
    assert [f.trade_id for f in ex.trades(ETH)] == ["1", "4", "7", "10"]
    assert [f.trade_id for f in ex.trades(ETH, after_trade_id="4")] == ["7", "10"]
    assert ex.trades(after_trade_id="12") == []
    assert [f.trade_id for f in ex.trades(after_trade_id="0")] == [str(i) for i in range(1, 13)]
    with pytest.raises(ExchangeRejected, match="bad trade id"):
        ex.trades(after_trade_id="x1")
    with pytest.raises(ExchangeRejected, match="unknown symbol"):
        ex.trades("DOGE/USDT")


def test_open_orders_span_symbols_in_placement_order() -> None:
    """open_orders() lists the open orders of all symbols in the order they were placed."""
    ex = make()
    ex.place_order(limit("a", Side.BUY, "0.1", "100"), 1)
    ex.place_order(limit("b", Side.BUY, "1", "0.01", symbol=ETH), 2)
    ex.place_order(limit("c", Side.SELL, "0.1", "200"), 3)
    ex.cancel_order(BTC, "a", 4)
    ex.place_order(limit("d", Side.BUY, "0.1", "90"), 5)
    assert [o.client_order_id for o in ex.open_orders()] == ["b", "c", "d"]
    assert ex.order("a") is not None and ex.order("zzz") is None


def test_paper_exchange_never_imports_ccxt() -> None:
    """Importing the simulator and the feeds pulls in no ccxt (paper mode's import budget)."""
    code = (
        "import sys, s1mpled.environments.paper_exchange, s1mpled.environments.feeds; "
        "sys.exit(1 if any(m == 'ccxt' or m.startswith('ccxt.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ------------------------------------------------------------------- state


def codec_round_trip(state: dict[str, Any]) -> Any:
    """Pass a state through the real state-file codec, as the adapter will."""
    return codec.decode(codec.encode(state, 1)).state


def test_state_round_trip_through_the_codec_is_exact() -> None:
    """from_state(to_state()) through the state codec reproduces the same state, digit for digit."""
    ex = make()
    ex.on_price(BTC, D("100.50"), 1)
    ex.place_order(limit("b", Side.BUY, "2.500", "100.50"), 2)
    ex.place_order(limit("s", Side.SELL, "0.3", "0.06", symbol=ETH), 3)
    ex.place_order(limit("c", Side.BUY, "0.1", "50"), 4)
    ex.cancel_order(BTC, "c", 5)
    state = ex.to_state()
    again = SimulatedExchange.from_state(codec_round_trip(state))
    assert repr(again.to_state()) == repr(state)
    assert again.open_orders() == ex.open_orders()
    assert again.balances() == ex.balances()
    assert again.trades() == ex.trades()
    assert again.order("c") == ex.order("c")


def test_to_state_is_a_copy() -> None:
    """Mutating a state snapshot or the state the exchange was loaded from does not change the exchange."""
    ex = make()
    ex.place_order(limit("b", Side.BUY, "1", "100"), 1)
    state = ex.to_state()
    again = SimulatedExchange.from_state(state)
    state["balances"]["USDT"]["free"] = D(0)
    state["orders"].clear()
    assert bal(again, "USDT") == bal(ex, "USDT")
    assert len(again.open_orders()) == 1


def _corrupt(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    ex = make()
    ex.on_price(BTC, D(100), 1)
    ex.place_order(limit("b", Side.BUY, "2", "100"), 2)
    state = ex.to_state()
    mutate(state)
    return state


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(format=2),
        lambda s: s.pop("orders"),
        lambda s: s["balances"]["USDT"].update(used=D(1)),
        lambda s: s["balances"]["USDT"].update(free=D(-1)),
        lambda s: s["balances"].pop("BTC"),
        lambda s: s["orders"][0].update(status="bogus"),
        lambda s: s["orders"][0].update(amount="2"),
        lambda s: s["orders"][0].update(symbol="DOGE/USDT"),
        lambda s: s.update(next_trade_id=1),
        lambda s: s.update(next_order_id=1),
        lambda s: s["markets"][BTC].update(price_step=D(0)),
        lambda s: s.update(fee_rate=1.5),
    ],
)
def test_from_state_refuses_malformed_or_inconsistent_state(mutate: Callable[[dict[str, Any]], None]) -> None:
    """A state the exchange could not have written raises LocalStateError instead of loading."""
    with pytest.raises(LocalStateError):
        SimulatedExchange.from_state(_corrupt(mutate))


# ------------------------------------------------------------------- properties

SYMBOLS = (BTC, ETH)
PRICE_UNITS = {BTC: (9000, 11000), ETH: (4000, 6000)}  # price = units * price_step
CIDS = [f"c{i}" for i in range(8)]

amount_units = st.integers(min_value=-1, max_value=2500)
limit_ops = st.tuples(
    st.just("limit"),
    st.sampled_from(SYMBOLS),
    st.sampled_from(Side),
    amount_units,
    st.integers(-100, 100),
    st.sampled_from(CIDS),
)
market_ops = st.tuples(
    st.just("market"), st.sampled_from(SYMBOLS), st.sampled_from(Side), amount_units, st.sampled_from(CIDS)
)
cancel_ops = st.tuples(st.just("cancel"), st.sampled_from((*SYMBOLS, "own", "own", "own")), st.sampled_from(CIDS))
price_ops = st.tuples(st.just("price"), st.sampled_from(SYMBOLS), st.integers(-100, 100))
offstep_ops = st.tuples(st.just("offstep"), st.sampled_from(SYMBOLS), st.sampled_from(CIDS))
# Weighted: mostly limits and prices (they make fills), some cancels and market orders.
_WEIGHTED = [limit_ops] * 3 + [price_ops] * 3 + [cancel_ops] * 2 + [market_ops, offstep_ops]
ops: st.SearchStrategy[tuple[Any, ...]] = st.sampled_from(_WEIGHTED).flatmap(lambda strategy: strategy)
op_lists = st.lists(ops, min_size=5, max_size=60)


def _price(symbol: str, offset: int) -> D:
    low, high = PRICE_UNITS[symbol]
    return ((low + high) // 2 + offset * 10) * MARKETS[symbol].price_step


def apply(ex: SimulatedExchange, op: tuple[Any, ...], now: int) -> tuple[str, Any]:
    """Run one operation; returns what happened (result or rejection message) so two exchanges can be compared."""
    kind, symbol = op[0], op[1]
    if symbol == "own":  # cancel on the order's own symbol (if the order exists)
        order = ex.order(op[2])
        symbol = order.symbol if order is not None else BTC
    spec = MARKETS[symbol]
    try:
        if kind == "limit":
            _, _, side, units, offset, cid = op
            req = OrderRequest(cid, symbol, side, OrderType.LIMIT, units * spec.amount_step, _price(symbol, offset))
            return "ok", ex.place_order(req, now)
        if kind == "market":
            _, _, side, units, cid = op
            return "ok", ex.place_order(
                OrderRequest(cid, symbol, side, OrderType.MARKET, units * spec.amount_step), now
            )
        if kind == "cancel":
            return "ok", ex.cancel_order(symbol, op[2], now)
        if kind == "offstep":
            req = OrderRequest(op[2], symbol, Side.BUY, OrderType.LIMIT, spec.amount_step / 2, _price(symbol, 0))
            return "ok", ex.place_order(req, now)
        return "ok", ex.on_price(symbol, _price(symbol, op[2]), now)
    except ExchangeRejected as exc:
        return "rejected", str(exc)


def fills_of(outcome: tuple[str, Any]) -> list[Fill]:
    status, value = outcome
    if status != "ok":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value[1])
    return []


INITIAL = {"USDT": D("2000"), "BTC": D("1"), "ETH": D("10")}


def check_invariants(ex: SimulatedExchange, all_fills: list[Fill], fee_rate: D) -> None:
    """No negative balance; used equals open reservations; totals equal initial plus fill flows minus fees."""
    balances = ex.balances()
    for b in balances.values():
        assert b.free >= 0 and b.used >= 0, b
    expected_used = dict.fromkeys(balances, D(0))
    for o in ex.open_orders():
        assert o.price is not None and 0 <= o.filled < o.amount
        base, quote = o.symbol.split("/")
        remaining = o.amount - o.filled
        if o.side is Side.BUY:
            expected_used[quote] += o.price * remaining * (1 + fee_rate)
        else:
            expected_used[base] += remaining
    assert {a: b.used for a, b in balances.items()} == expected_used
    expected_total = {a: INITIAL.get(a, D(0)) for a in balances}
    for f in all_fills:
        base, quote = f.symbol.split("/")
        sign = 1 if f.side is Side.BUY else -1
        expected_total[base] += sign * f.amount
        expected_total[quote] -= sign * f.cost + f.fee
        assert f.fee_asset == quote and f.fee == (f.cost * fee_rate).quantize(D("1e-8"), rounding=ROUND_DOWN)
    assert {a: b.total for a, b in balances.items()} == expected_total
    assert ex.trades() == all_fills
    assert [int(f.trade_id) for f in all_fills] == list(range(1, len(all_fills) + 1))


fee_rates = st.sampled_from([D(0), D("0.001"), D("0.00075"), D("0.0025")])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fee_rates, op_lists)
def test_invariants_hold_under_random_operations(fee_rate: D, sequence: list[tuple[Any, ...]]) -> None:
    """After every random place/cancel/price operation the balance invariants hold exactly."""
    with localcontext() as ctx:
        ctx.prec = 100
        ex = SimulatedExchange(MARKETS, INITIAL, fee_rate)
        all_fills: list[Fill] = []
        for now, op in enumerate(sequence):
            all_fills += fills_of(apply(ex, op, now))
            check_invariants(ex, all_fills, fee_rate)
        for o in ex.open_orders():
            ex.cancel_order(o.symbol, o.client_order_id, len(sequence))
        assert all(b.used == 0 for b in ex.balances().values())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fee_rates, op_lists, op_lists)
def test_state_round_trip_behaves_identically(
    fee_rate: D, before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]
) -> None:
    """An exchange restored from its state (through the codec) answers every later operation exactly as the original."""
    ex = SimulatedExchange(MARKETS, INITIAL, fee_rate)
    for now, op in enumerate(before):
        apply(ex, op, now)
    state = ex.to_state()
    twin = SimulatedExchange.from_state(codec_round_trip(state))
    assert repr(twin.to_state()) == repr(state)
    for now, op in enumerate(after, start=len(before)):
        assert repr(apply(twin, op, now)) == repr(apply(ex, op, now))
    assert repr(twin.to_state()) == repr(ex.to_state())


# ------------------------------------------------------------------- bounded history


def test_history_is_bounded_but_open_orders_and_balances_are_kept() -> None:
    """Old trades and closed orders are forgotten past the limits; open orders, balances and ids stay exact."""
    ex = SimulatedExchange(
        MARKETS, {"USDT": D("100000"), "BTC": D("10"), "ETH": D("100")}, FEE, trades_kept=20, closed_orders_kept=10
    )
    ex.on_price(BTC, D("100"), 1)
    resting = ex.place_order(limit("rest-1", Side.BUY, "1", "50"), 1)[0]
    for i in range(100):
        ex.place_order(market(f"m-{i}", Side.BUY if i % 2 else Side.SELL, "0.01"), 2 + i)
    assert 20 <= len(ex.trades()) <= 22 and ex.trades()[-1].client_order_id == "m-99"
    assert ex.order("m-99") is not None and ex.order("m-0") is None
    assert ex.order("rest-1") == resting and ex.open_orders() == [resting]
    flows = D(0)
    for i in range(100):
        flows += D("0.01") * (1 if i % 2 else -1)
    assert ex.balances()["BTC"].total == D(10) + flows  # forgetting history moved no money
    again = SimulatedExchange.from_state(codec.decode(codec.encode(ex.to_state(), 1)).state)
    assert again.trades() == ex.trades() and again.open_orders() == ex.open_orders()
    assert again.balances() == ex.balances()
    with pytest.raises(ExchangeRejected, match="duplicate"):
        again.place_order(market("m-99", Side.BUY, "0.01"), 500)


# ------------------------------------------------------------------- Binance's fee rules (fee_model, bnb_fees)


def binance_ex(usdt: str = "1000", btc: str = "0", bnb: str | None = None, **options: Any) -> SimulatedExchange:
    balances = {"USDT": D(usdt), "BTC": D(btc)} | ({} if bnb is None else {"BNB": D(bnb)})
    return SimulatedExchange(MARKETS, balances, FEE, fee_model="binance", **options)


def test_binance_fee_model_charges_a_buy_in_base_and_a_sell_in_quote() -> None:
    """fee_model="binance": a limit buy reserves price*amount only; its fee is amount*rate in base, rounded down."""
    ex = binance_ex(usdt="150", btc="0")
    ex.place_order(limit("b", Side.BUY, "0.5", "300"), 1)  # exactly 150: no room for a quote fee, none is needed
    assert bal(ex, "USDT") == (D(0), D(150))
    (fill,) = ex.on_price(BTC, D("299.99"), 2)
    assert (fill.fee, fill.fee_asset) == (D("0.0005"), "BTC")
    assert bal(ex, "USDT") == (D(0), D(0)) and bal(ex, "BTC") == (D("0.4995"), D(0))
    ex.place_order(limit("s", Side.SELL, "0.499", "400"), 3)
    (sell,) = ex.on_price(BTC, D(400), 4)
    assert (sell.fee, sell.fee_asset) == (D("0.1996"), "USDT")
    assert bal(ex, "USDT") == (D("199.4004"), D(0)) and bal(ex, "BTC") == (D("0.0005"), D(0))


def test_binance_base_fee_rounds_down_to_eight_places() -> None:
    """A base fee of 0.000000333 is charged as 0.00000033; the market buy needs only its cost in quote."""
    specs = {"X/Y": MarketSpec("X/Y", D("0.01"), D("0.000333"), D("100"))}
    ex = SimulatedExchange(specs, {"Y": D("3.33")}, D("0.001"), fee_model="binance")
    ex.on_price("X/Y", D("10000"), 1)
    _, (fill,) = ex.place_order(OrderRequest("m", "X/Y", Side.BUY, OrderType.MARKET, D("0.000333")), 2)
    assert (fill.fee, fill.fee_asset) == (D("0.00000033"), "X")
    assert bal(ex, "X") == (D("0.00033267"), D(0)) and bal(ex, "Y") == (D(0), D(0))


def test_bnb_fees_use_the_bnb_market_price_then_the_fixed_price_then_fall_back() -> None:
    """bnb_fees: the fee's quote value in BNB at BNB/<quote>'s last price (else bnb_price), if free BNB covers it."""
    specs = {**MARKETS, "BNB/USDT": MarketSpec("BNB/USDT", D("0.01"), D("0.001"), D("100"))}
    ex = SimulatedExchange(specs, {"USDT": D(1000), "BNB": D("0.001")}, FEE, fee_model="binance", bnb_fees=True)
    ex.on_price("BNB/USDT", D(300), 1)
    ex.on_price(BTC, D(300), 1)
    _, (f1,) = ex.place_order(market("a", Side.BUY, "1"), 2)  # 0.3 USDT of fee = 0.001 BNB
    assert (f1.fee, f1.fee_asset) == (D("0.001"), "BNB")
    assert bal(ex, "BNB") == (D(0), D(0)) and bal(ex, "BTC") == (D(1), D(0)) and bal(ex, "USDT") == (D(700), D(0))
    _, (f2,) = ex.place_order(market("b", Side.SELL, "1"), 3)  # no BNB left: the normal rule
    assert (f2.fee, f2.fee_asset) == (D("0.3"), "USDT")
    fixed = binance_ex(usdt="1000", bnb="1", bnb_fees=True, bnb_price=D(7))
    fixed.on_price(BTC, D(100), 1)
    _, (f3,) = fixed.place_order(market("c", Side.BUY, "1"), 2)  # 0.1 USDT / 7 = 0.0142857142.. BNB
    assert (f3.fee, f3.fee_asset) == (D("0.01428571"), "BNB")
    assert bal(fixed, "BTC") == (D(1), D(0)) and bal(fixed, "BNB") == (D("0.98571429"), D(0))
    unpriced = binance_ex(usdt="1000", bnb="1", bnb_fees=True)
    unpriced.on_price(BTC, D(100), 1)
    _, (f4,) = unpriced.place_order(market("d", Side.BUY, "1"), 2)
    assert (f4.fee, f4.fee_asset) == (D("0.001"), "BTC")


def test_time_in_force_ioc_and_fok() -> None:
    """IOC fills what it can at once and expires the rest; FOK fills completely or expires with nothing."""
    ex = make(usdt="100000", btc="10")
    ex.on_price(BTC, D(100), 1)
    order, fills = ex.place_order(limit("ioc", Side.BUY, "2.5", "100"), 2, time_in_force="IOC")  # liquidity 1
    assert (order.status, order.filled, [f.amount for f in fills]) == (ExchangeOrderStatus.EXPIRED, D(1), [D(1)])
    order, fills = ex.place_order(limit("ioc0", Side.BUY, "1", "99"), 2, time_in_force="IOC")
    assert (order.status, order.filled, fills) == (ExchangeOrderStatus.EXPIRED, D(0), [])
    before = ex.balances()
    order, fills = ex.place_order(limit("fok", Side.BUY, "2", "100"), 3, time_in_force="FOK")
    assert (order.status, order.filled, fills, ex.balances()) == (ExchangeOrderStatus.EXPIRED, D(0), [], before)
    order, fills = ex.place_order(limit("fok1", Side.SELL, "1", "100"), 3, time_in_force="FOK")
    assert (order.status, order.filled, len(fills)) == (ExchangeOrderStatus.CLOSED, D(1), 1)
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.place_order(limit("fok2", Side.SELL, "100", "100"), 3, time_in_force="FOK")
    with pytest.raises(ExchangeRejected, match="time_in_force"):
        ex.place_order(limit("gtx", Side.SELL, "1", "100"), 3, time_in_force="GTX")
    assert ex.open_orders() == [] and all(b.used == 0 for b in ex.balances().values())


def test_expire_fill_and_adjust_balance() -> None:
    """expire_order keeps what filled and releases the rest; fill_order ignores price and liquidity; deposits."""
    ex = make(usdt="1000", btc="0")
    ex.place_order(limit("a", Side.BUY, "3", "100"), 1)
    first = ex.fill_order("a", 2, D("0.5"))
    assert (first.price, first.amount) == (D(100), D("0.5"))
    expired = ex.expire_order(BTC, "a", 3)
    assert (expired.status, expired.filled) == (ExchangeOrderStatus.EXPIRED, D("0.5"))
    assert bal(ex, "USDT") == (D(1000) - D("50.05"), D(0))
    ex.place_order(limit("b", Side.BUY, "3", "100"), 4)
    assert ex.fill_order("b", 5).amount == D(3) and ex.order("b").status is ExchangeOrderStatus.CLOSED  # type: ignore[union-attr]
    for bad in (D(0), D("0.0001")):
        ex.place_order(limit(f"c{bad}", Side.BUY, "1", "1"), 6)
        with pytest.raises(ExchangeRejected):
            ex.fill_order(f"c{bad}", 6, bad)
    with pytest.raises(ExchangeRejected, match="no such open order"):
        ex.fill_order("b", 7)
    assert ex.adjust_balance("USDT", D("-12.5")).free == bal(ex, "USDT")[0]
    assert ex.adjust_balance("EUR", D("5")) == Balance("EUR", D(5), D(0))
    with pytest.raises(ExchangeRejected, match="insufficient funds"):
        ex.adjust_balance("EUR", D("-5.01"))
    assert bal(ex, "EUR") == (D(5), D(0))


def test_fee_options_persist_only_when_not_default() -> None:
    """A default exchange writes exactly the old state layout; fee options survive a round trip."""
    assert not {"fee_model", "bnb_fees", "bnb_price"} & set(make().to_state())
    ex = binance_ex(usdt="1000", bnb="1", bnb_fees=True, bnb_price=D(600))
    ex.place_order(limit("b", Side.BUY, "1", "100"), 1)
    state = ex.to_state()
    assert (state["fee_model"], state["bnb_fees"], state["bnb_price"]) == ("binance", True, D(600))
    again = SimulatedExchange.from_state(codec_round_trip(state))
    assert repr(again.to_state()) == repr(state) and (again.fee_model, again.bnb_fees) == ("binance", True)
    for bad in ({"fee_model": "base"}, {"bnb_fees": "yes"}, {"bnb_price": D(-1)}):
        with pytest.raises(LocalStateError):
            SimulatedExchange.from_state({**state, **bad})


def check_general_invariants(ex: SimulatedExchange, all_fills: list[Fill], initial: dict[str, D]) -> None:
    """Whatever the fee rules: no negative balance, used = reservations, totals = initial + flows - fees."""
    balances = ex.balances()
    assert all(b.free >= 0 and b.used >= 0 for b in balances.values()), balances
    expected_used = dict.fromkeys(balances, D(0))
    expected_total = {a: initial.get(a, D(0)) for a in balances}
    quote_fee = ex.fee_model == "quote"
    for o in ex.open_orders():
        assert o.price is not None
        base, quote = o.symbol.split("/")
        remaining = o.amount - o.filled
        if o.side is Side.BUY:
            expected_used[quote] += o.price * remaining * (1 + ex.fee_rate if quote_fee else 1)
        else:
            expected_used[base] += remaining
    for f in all_fills:
        base, quote = f.symbol.split("/")
        sign = 1 if f.side is Side.BUY else -1
        expected_total[base] += sign * f.amount
        expected_total[quote] -= sign * f.cost
        expected_total[f.fee_asset] -= f.fee
        expected_asset = quote if quote_fee or f.side is Side.SELL else base
        assert f.fee_asset in (expected_asset, "BNB")
    assert {a: b.used for a, b in balances.items()} == expected_used
    assert {a: b.total for a, b in balances.items()} == expected_total


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fee_rates, st.sampled_from(["quote", "binance"]), st.sampled_from(["0", "0.002", "50"]), op_lists)
def test_invariants_hold_for_every_fee_model(
    fee_rate: D, fee_model: str, bnb: str, sequence: list[tuple[Any, ...]]
) -> None:
    """Both fee models, with BNB fees on (some, little or no BNB), keep the balances exact after every operation."""
    with localcontext() as ctx:
        ctx.prec = 100
        initial = {**INITIAL, "BNB": D(bnb)}
        ex = SimulatedExchange(MARKETS, initial, fee_rate, fee_model=fee_model, bnb_fees=True, bnb_price=D("3.3"))
        all_fills: list[Fill] = []
        for now, op in enumerate(sequence):
            all_fills += fills_of(apply(ex, op, now))
            check_general_invariants(ex, all_fills, initial)
        assert SimulatedExchange.from_state(ex.to_state()).balances() == ex.balances()
