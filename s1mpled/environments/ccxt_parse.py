"""Translate ccxt's unified structures into s1mpled's model -- pure, strict, and without importing ccxt.

Everything the exchange says is untrusted input: a structure that lacks a field or carries a number that
is not a finite non-negative amount raises RemoteStateError saying what was wrong. A status ccxt does not
map (Binance's PENDING_NEW, or one added later) is not garbage: it becomes ``ExchangeOrderStatus.UNKNOWN``
with the exchange's word kept in ``raw_status`` ("unknown is a state, never a crash"). Garbage is never
turned into a default (an empty balance would read as "flat" and make reconciliation sell nothing and
believe everything gone).

ccxt hands amounts over as floats parsed from the exchange's decimal strings; ``Decimal(repr(x))`` gives
back the shortest decimal that round-trips, which is the exchange's own text for amounts of up to 15
significant digits (all Binance spot amounts). Where Binance's raw fields are present in ``info`` they
are preferred, because they are the exchange's exact text.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from s1mpled.errors import RemoteStateError
from s1mpled.model import Balance, ExchangeOrder, ExchangeOrderStatus, Fill, OrderType, Side, UnparsedOrder

__all__ = ["decimal_of", "parse_balances", "parse_fill", "parse_order", "parse_order_leniently"]

_STATUS = {
    "open": ExchangeOrderStatus.OPEN,
    "closed": ExchangeOrderStatus.CLOSED,
    "canceled": ExchangeOrderStatus.CANCELED,
    "cancelled": ExchangeOrderStatus.CANCELED,
    "expired": ExchangeOrderStatus.EXPIRED,
    "rejected": ExchangeOrderStatus.REJECTED,
}


def decimal_of(value: object, what: str) -> Decimal:
    """A finite, non-negative Decimal from ccxt's str/int/float; RemoteStateError otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise RemoteStateError(f"exchange sent {what}={value!r}, expected a number")
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise RemoteStateError(f"exchange sent {what}={value!r}, expected a number") from None
    if not result.is_finite() or result < 0:
        raise RemoteStateError(f"exchange sent {what}={value!r}, expected a finite non-negative number")
    return result


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RemoteStateError(f"exchange sent {what} of type {type(value).__name__}, expected an object")
    return value


def _text(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise RemoteStateError(f"exchange sent {what} without {key}")
    return value


def _enum(obj: Mapping[str, Any], key: str, kind: type[Side] | type[OrderType], what: str) -> Any:
    value = obj.get(key)
    try:
        return kind(str(value).lower())
    except ValueError:
        raise RemoteStateError(f"exchange sent {what} with {key}={value!r}") from None


def _timestamp(obj: Mapping[str, Any]) -> int:
    value = obj.get("timestamp")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _info_decimal(obj: Mapping[str, Any], info_key: str, key: str, what: str) -> Decimal:
    info = obj.get("info")
    if isinstance(info, Mapping) and isinstance(info.get(info_key), str):
        return decimal_of(info[info_key], what)
    return decimal_of(obj.get(key), what)


def parse_order(raw: object) -> ExchangeOrder:
    """A ccxt unified order -> ExchangeOrder (clientOrderId required: we only track our own orders by it)."""
    o = _mapping(raw, "an order")
    raw_status = o.get("status")
    if not isinstance(raw_status, str) or not raw_status:
        raise RemoteStateError(f"exchange sent an order without a status ({raw_status!r})")
    status = _STATUS.get(raw_status.lower(), ExchangeOrderStatus.UNKNOWN)
    otype = _enum(o, "type", OrderType, "an order")
    price = o.get("price")
    return ExchangeOrder(
        client_order_id=_text(o, "clientOrderId", "an order"),
        exchange_order_id=_text(o, "id", "an order"),
        symbol=_text(o, "symbol", "an order"),
        side=_enum(o, "side", Side, "an order"),
        type=otype,
        amount=_info_decimal(o, "origQty", "amount", "order amount"),
        price=None if otype is OrderType.MARKET or price in (None, 0) else decimal_of(price, "order price"),
        filled=_info_decimal(o, "executedQty", "filled", "order filled"),
        status=status,
        timestamp_ms=_timestamp(o),
        raw_status=raw_status if status is ExchangeOrderStatus.UNKNOWN else "",
    )


def parse_order_leniently(raw: object) -> ExchangeOrder | UnparsedOrder:
    """:func:`parse_order`, or what little could be read of an order that does not parse.

    For listings (open orders): one unreadable order -- usually someone else's, placed by hand or by
    another bot -- must not fail the whole listing and with it every reconciliation pass.
    """
    try:
        return parse_order(raw)
    except RemoteStateError as exc:
        o = raw if isinstance(raw, Mapping) else {}
        cid, symbol = o.get("clientOrderId"), o.get("symbol")
        return UnparsedOrder(
            cid if isinstance(cid, str) and cid else None, symbol if isinstance(symbol, str) else None, str(exc)
        )


def _raw_first(info: Mapping[str, Any], keys: tuple[str, ...], fallback: object, what: str) -> Decimal:
    """Binance's exact text (stream field, then REST field) if present, else ccxt's unified number."""
    for key in keys:
        if isinstance(info.get(key), str):
            return decimal_of(info[key], what)
    return decimal_of(fallback, what)


def parse_fill(raw: object, client_order_id: str | None = None) -> Fill:
    """A ccxt unified trade -> Fill. REST trades carry no client order id: the caller passes it."""
    t = _mapping(raw, "a trade")
    info = t.get("info") if isinstance(t.get("info"), Mapping) else {}
    assert isinstance(info, Mapping)
    cid = client_order_id or (info.get("c") if isinstance(info.get("c"), str) else None)
    if not cid:
        raise RemoteStateError(f"exchange sent trade {t.get('id')!r} without a client order id")
    fee = t.get("fee")
    fee_map = fee if isinstance(fee, Mapping) else {}
    fee_cost = fee_map.get("cost")
    fee_asset = fee_map.get("currency")
    return Fill(
        trade_id=_text(t, "id", "a trade"),
        client_order_id=cid,
        exchange_order_id=_text(t, "order", "a trade"),
        symbol=_text(t, "symbol", "a trade"),
        side=_enum(t, "side", Side, "a trade"),
        price=_raw_first(info, ("L", "price"), t.get("price"), "trade price"),
        amount=_raw_first(info, ("l", "qty"), t.get("amount"), "trade amount"),
        fee=Decimal(0) if fee_cost is None else _raw_first(info, ("n", "commission"), fee_cost, "trade fee"),
        fee_asset=fee_asset if isinstance(fee_asset, str) else "",
        timestamp_ms=_timestamp(t),
    )


def parse_balances(raw: object) -> dict[str, Balance]:
    """ccxt's fetch_balance() -> balances; refuses a response without Binance's ``balances`` list.

    ccxt turns an HTML error page served with HTTP 200 into an *empty* balance; that must never be read
    as "we hold nothing".
    """
    b = _mapping(raw, "a balance")
    info = b.get("info")
    if not isinstance(info, Mapping) or not isinstance(info.get("balances"), list):
        raise RemoteStateError("exchange sent a balance response without its balances list")
    free, used = _mapping(b.get("free", {}), "free balances"), _mapping(b.get("used", {}), "used balances")
    out: dict[str, Balance] = {}
    for asset in set(free) | set(used):
        f = decimal_of(free.get(asset) or 0, f"free {asset}")
        u = decimal_of(used.get(asset) or 0, f"used {asset}")
        out[asset] = Balance(asset, f, u)
    return out
