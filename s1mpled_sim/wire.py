"""Binance spot wire shapes: domain values (orders, fills, balances) -> the JSON Binance sends.

Pure formatting, no state: the venue decides what happened, this module only says how Binance
would write it down -- numbers as strings with at least 8 decimals, ids as integers, statuses in
Binance's vocabulary (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED; the venue may pass any other
word -- PENDING_NEW, EXPIRED_IN_MATCH, a status from the future -- as ``status``). The field lists
follow Binance's documented REST answers (``GET /api/v3/order``, ``POST /api/v3/order`` with
``FULL``, ``GET /api/v3/myTrades``, ``GET /api/v3/account``) and user-data events
(``executionReport``, ``outboundAccountPosition``, ``balanceUpdate``), which is what ccxt's binance
parser reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

from s1mpled import record
from s1mpled.model import Balance, ExchangeOrder, ExchangeOrderStatus, Fill, OrderType

__all__ = [
    "OrderExtra",
    "account_json",
    "account_position",
    "balance_update",
    "binance_status",
    "execution_report",
    "fmt",
    "order_json",
    "order_state",
    "trade_json",
    "trade_state",
]

_STATUS = {
    ExchangeOrderStatus.CLOSED: "FILLED",
    ExchangeOrderStatus.CANCELED: "CANCELED",
    ExchangeOrderStatus.REJECTED: "REJECTED",
    ExchangeOrderStatus.EXPIRED: "EXPIRED",
}
_ZERO = "0.00000000"


def fmt(value: D) -> str:
    """A Decimal as Binance writes it: fixed point, at least 8 decimals, never rounded."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -8:
        return f"{value:.8f}"
    return format(value, "f")


def binance_status(order: ExchangeOrder) -> str:
    """NEW / PARTIALLY_FILLED / FILLED / CANCELED / REJECTED / EXPIRED."""
    if order.status is ExchangeOrderStatus.OPEN:
        return "PARTIALLY_FILLED" if order.filled > 0 else "NEW"
    return _STATUS[order.status]


@dataclass(frozen=True, slots=True)
class OrderExtra:
    """What Binance reports about an order that the matching engine does not keep."""

    market_id: str
    time_in_force: str | None  # "GTC" for limits, None for market orders
    quote_qty: D  # cummulativeQuoteQty: sum of price * amount over the fills
    update_ms: int


def order_json(order: ExchangeOrder, extra: OrderExtra, status: str | None = None) -> dict[str, Any]:
    """``GET /api/v3/order`` (and the entries of ``openOrders``); ``status`` overrides the derived one."""
    return {
        "symbol": extra.market_id,
        "orderId": int(order.exchange_order_id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": fmt(order.price) if order.price is not None else _ZERO,
        "origQty": fmt(order.amount),
        "executedQty": fmt(order.filled),
        "cummulativeQuoteQty": fmt(extra.quote_qty),
        "status": status or binance_status(order),
        "timeInForce": extra.time_in_force or "GTC",
        "type": order.type.value.upper(),
        "side": order.side.value.upper(),
        "stopPrice": _ZERO,
        "icebergQty": _ZERO,
        "time": order.timestamp_ms,
        "updateTime": extra.update_ms,
        "isWorking": True,
        "workingTime": order.timestamp_ms,
        "origQuoteOrderQty": _ZERO,
        "selfTradePreventionMode": "NONE",
    }


def trade_json(fill: Fill, market_id: str, maker: bool) -> dict[str, Any]:
    """One entry of ``GET /api/v3/myTrades``."""
    return {
        "symbol": market_id,
        "id": int(fill.trade_id),
        "orderId": int(fill.exchange_order_id),
        "orderListId": -1,
        "price": fmt(fill.price),
        "qty": fmt(fill.amount),
        "quoteQty": fmt(fill.price * fill.amount),
        "commission": fmt(fill.fee),
        "commissionAsset": fill.fee_asset,
        "time": fill.timestamp_ms,
        "isBuyer": fill.side.value == "buy",
        "isMaker": maker,
        "isBestMatch": True,
    }


def execution_report(
    order: ExchangeOrder,
    extra: OrderExtra,
    now_ms: int,
    *,
    fill: Fill | None = None,
    maker: bool = False,
    cancel_client_id: str | None = None,
    status: str | None = None,
    execution: str | None = None,
) -> dict[str, Any]:
    """An ``executionReport`` event: x = NEW, TRADE (when ``fill``) or CANCELED (when ``cancel_client_id``),
    or ``execution`` (EXPIRED, TRADE_PREVENTION); X = ``status`` or the one derived from the order."""
    if execution is None:
        execution = "TRADE" if fill is not None else "CANCELED" if cancel_client_id is not None else "NEW"
    return {
        "e": "executionReport",
        "E": now_ms,
        "s": extra.market_id,
        "c": cancel_client_id if cancel_client_id is not None else order.client_order_id,
        "S": order.side.value.upper(),
        "o": order.type.value.upper(),
        "f": extra.time_in_force or "GTC",
        "q": fmt(order.amount),
        "p": fmt(order.price) if order.price is not None else _ZERO,
        "P": _ZERO,
        "F": _ZERO,
        "g": -1,
        "C": order.client_order_id if cancel_client_id is not None else "",
        "x": execution,
        "X": status or binance_status(order),
        "r": "NONE",
        "i": int(order.exchange_order_id),
        "l": fmt(fill.amount) if fill else _ZERO,
        "z": fmt(order.filled),
        "L": fmt(fill.price) if fill else _ZERO,
        "n": fmt(fill.fee) if fill else "0",
        "N": fill.fee_asset if fill else None,
        "T": now_ms,
        "t": int(fill.trade_id) if fill else -1,
        "I": 0,
        "w": order.status is ExchangeOrderStatus.OPEN and order.type is OrderType.LIMIT,
        "m": maker,
        "M": False,
        "O": order.timestamp_ms,
        "Z": fmt(extra.quote_qty),
        "Y": fmt(fill.price * fill.amount) if fill else _ZERO,
        "Q": _ZERO,
        "W": order.timestamp_ms,
        "V": "NONE",
    }


def account_position(balances: Iterable[Balance], now_ms: int) -> dict[str, Any]:
    """An ``outboundAccountPosition`` event for the assets that changed."""
    return {
        "e": "outboundAccountPosition",
        "E": now_ms,
        "u": now_ms,
        "B": [{"a": b.asset, "f": fmt(b.free), "l": fmt(b.used)} for b in balances],
    }


def balance_update(asset: str, delta: D, now_ms: int) -> dict[str, Any]:
    """A ``balanceUpdate`` event: a deposit (``d`` > 0) or a withdrawal (``d`` < 0)."""
    return {"e": "balanceUpdate", "E": now_ms, "a": asset, "d": fmt(delta), "T": now_ms}


def account_json(balances: Iterable[Balance], fee_rate: D, now_ms: int) -> dict[str, Any]:
    """``GET /api/v3/account``."""
    bps = int(fee_rate * 10000)
    rate = fmt(fee_rate)
    return {
        "makerCommission": bps,
        "takerCommission": bps,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate, "taker": rate, "buyer": _ZERO, "seller": _ZERO},
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": [{"asset": b.asset, "free": fmt(b.free), "locked": fmt(b.used)} for b in balances],
        "permissions": ["SPOT"],
        "uid": 1,
    }


def order_state(order: ExchangeOrder, wire_status: str | None = None) -> dict[str, Any]:
    """An order in the domain vocabulary (ccxt's unified status), for ``GET /__admin/state``; ``wire_status``
    is the word Binance's REST and WebSocket answers use for it (NEW, FILLED, PENDING_NEW, ...)."""
    fields = record.encode(order, record.JSON)
    timestamp_ms = fields.pop("timestamp_ms")
    return {**fields, "wire_status": wire_status or binance_status(order), "timestamp_ms": timestamp_ms}


def trade_state(fill: Fill, maker: bool) -> dict[str, Any]:
    """A fill in the domain vocabulary, for ``GET /__admin/state``."""
    return {**record.encode(fill, record.JSON), "maker": maker}
