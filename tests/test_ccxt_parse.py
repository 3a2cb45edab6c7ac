"""Parsers of what the exchange sends (through ccxt): exact amounts, and garbage refused, never defaulted."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.environments.ccxt_parse import (
    decimal_of,
    parse_balances,
    parse_fill,
    parse_order,
    parse_order_leniently,
)
from s1mpled.errors import RemoteStateError
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, OrderType, Side, UnparsedOrder

# up to 15 significant digits: what a double carries exactly (Binance: <= 8 decimals, < 10^7 units)
amounts = st.decimals(
    min_value=0, max_value=Decimal("9999999.99999999"), places=8, allow_nan=False, allow_infinity=False
)


def _order(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "12",
        "clientOrderId": "s1abcdef01-3",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "amount": 0.5,
        "price": 30000.01,
        "filled": 0.1,
        "status": "open",
        "timestamp": 1700000000000,
        "info": {"origQty": "0.50000000", "executedQty": "0.10000000"},
    }
    base.update(over)
    return base


@given(amounts)
def test_amounts_from_ccxt_floats_are_the_exchanges_decimals(amount: Decimal) -> None:
    """A Binance amount (<= 8 decimals) that ccxt turned into a float comes back as the same Decimal."""
    assert decimal_of(float(str(amount)), "x") == amount
    assert decimal_of(str(amount), "x") == amount


@pytest.mark.parametrize("bad", [None, "abc", float("nan"), float("inf"), -1, True, [], {}])
def test_non_amounts_are_refused(bad: object) -> None:
    """Missing, non-numeric, infinite or negative amounts raise RemoteStateError, never become 0."""
    with pytest.raises(RemoteStateError):
        decimal_of(bad, "amount")


def test_order_prefers_binances_exact_text() -> None:
    """Amounts come from Binance's raw origQty/executedQty when present."""
    o = parse_order(_order())
    assert (o.amount, o.filled, o.price) == (Decimal("0.50000000"), Decimal("0.10000000"), Decimal("30000.01"))
    assert (o.side, o.type, o.status) == (Side.BUY, OrderType.LIMIT, ExchangeOrderStatus.OPEN)


@pytest.mark.parametrize(
    "over",
    [
        {"status": None},
        {"status": 3},
        {"clientOrderId": None},
        {"id": ""},
        {"side": "long"},
        {"type": "iceberg"},
        {"amount": None, "info": {}},
    ],
)
def test_malformed_orders_are_refused(over: dict[str, Any]) -> None:
    """An order without a status, no ids, a bad side/type or no amount is RemoteStateError."""
    with pytest.raises(RemoteStateError):
        parse_order(_order(**over))


@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8), max_size=6))
def test_random_objects_never_parse_into_orders_silently(raw: dict[str, Any]) -> None:
    """Arbitrary objects either parse completely or raise RemoteStateError -- nothing else escapes."""
    with contextlib.suppress(RemoteStateError):
        order = parse_order(raw)
        assert order.client_order_id and order.exchange_order_id and order.amount >= 0


def test_fill_from_stream_and_rest() -> None:
    """Stream trades carry the client id in info.c; REST trades get it from the caller."""
    t = {
        "id": "99",
        "order": "12",
        "symbol": "BTC/USDT",
        "side": "sell",
        "price": 30000.5,
        "amount": 0.01,
        "fee": {"cost": 0.300005, "currency": "USDT"},
        "timestamp": 1,
        "info": {"c": "s1abcdef01-3"},
    }
    f = parse_fill(t)
    assert (f.client_order_id, f.trade_id, f.fee, f.fee_asset) == ("s1abcdef01-3", "99", Decimal("0.300005"), "USDT")
    assert parse_fill({**t, "info": {}}, "s1x-1").client_order_id == "s1x-1"
    with pytest.raises(RemoteStateError, match="without a client order id"):
        parse_fill({**t, "info": {}})


def test_empty_balance_from_an_html_page_is_refused() -> None:
    """ccxt turns an HTML 200 page into an empty balance; that must never read as 'we hold nothing'."""
    with pytest.raises(RemoteStateError):
        parse_balances({"info": "<html>", "free": {}, "used": {}})
    good = parse_balances({"info": {"balances": []}, "free": {"BTC": 1.5}, "used": {"BTC": 0.5}})
    assert good["BTC"].total == Decimal("2.0")


@pytest.mark.parametrize("status", ["PENDING_NEW", "pending_new", "SOMETHING_FROM_THE_FUTURE"])
def test_a_status_ccxt_does_not_map_is_unknown_not_garbage(status: str) -> None:
    """Binance statuses ccxt passes through unmapped (PENDING_NEW of an OTO leg) are UNKNOWN, word kept."""
    o = parse_order(_order(status=status))
    assert (o.status, o.raw_status) == (ExchangeOrderStatus.UNKNOWN, status)
    assert parse_order(_order()).raw_status == ""


def test_an_unreadable_order_in_a_listing_keeps_what_could_be_read() -> None:
    """A listed order that does not parse becomes an UnparsedOrder naming its client id and symbol."""
    u = parse_order_leniently(_order(side="long"))
    assert isinstance(u, UnparsedOrder)
    assert (u.client_order_id, u.symbol) == ("s1abcdef01-3", "BTC/USDT") and "side" in u.reason
    g = parse_order_leniently("garbage")
    assert isinstance(g, UnparsedOrder) and (g.client_order_id, g.symbol) == (None, None)
    assert isinstance(parse_order_leniently(_order()), ExchangeOrder)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(sorted(_order())), junk, max_size=11), junk)
def test_the_lenient_parser_never_raises(over: dict[str, Any], anything: object) -> None:
    """Whatever an order listing contains, each entry is an ExchangeOrder or an UnparsedOrder, never a crash."""
    for raw in (_order(**over), anything):
        assert isinstance(parse_order_leniently(raw), ExchangeOrder | UnparsedOrder)
