"""Domain values shared by every layer: orders, fills, balances, ticks.

All are frozen dataclasses with Decimal amounts (money is never float). They are what the
environments return and what the ledger and reconciliation consume, so an exchange adapter's only
job is to translate its wire format into these -- and to refuse (RemoteStateError) what does not fit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

from s1mpled.record import OMIT_DEFAULT

__all__ = [
    "MONEY",
    "Balance",
    "ExchangeOrder",
    "ExchangeOrderStatus",
    "Fill",
    "MarketTick",
    "OrderRequest",
    "OrderType",
    "Side",
    "UnparsedOrder",
    "money_context",
    "split_symbol",
    "trade_number",
    "trade_order",
]

MONEY = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])
"""The one Decimal context of money arithmetic (ledger, paper exchange, reconciliation, feeds, simulator).

100 digits: sums and products of exchange amounts (at most a few dozen digits each) are exact, so the only
roundings are the explicit ``quantize`` calls; an invalid operation, a division by zero or an overflow
raises instead of producing NaN or infinity.
"""


def money_context(*, rounding: str | None = None, exact: bool = False) -> Context:
    """A copy of :data:`MONEY` rounding another way, or (``exact``) trapping Inexact: a result that would
    need rounding raises instead of silently losing money."""
    ctx = MONEY.copy()
    if rounding is not None:
        ctx.rounding = rounding
    if exact:
        ctx.traps[Inexact] = True
    return ctx


def trade_number(trade_id: str) -> int | None:
    """The number of a canonical decimal trade id ("0", "17"; not "017", "-1", "T7", "\u00b2"), else None.

    The one trade-id parser: Binance and the paper exchange number trades upwards per symbol, and ids are
    compared as these integers (never as text: "10" < "9"). Other venues' ids (UUIDs) have no order.
    """
    if trade_id.isascii() and trade_id.isdigit() and (trade_id == "0" or trade_id[0] != "0"):
        return int(trade_id)
    return None


def trade_order(trade_id: str) -> tuple[int, str]:
    """A sort key putting numbered trade ids in numeric order, the others (unordered) first."""
    number = trade_number(trade_id)
    return (-1 if number is None else number), trade_id


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class ExchangeOrderStatus(enum.StrEnum):
    """An order's status as the exchange reports it (ccxt's unified vocabulary)."""

    OPEN = "open"  # resting, possibly partially filled
    CLOSED = "closed"  # completely filled
    CANCELED = "canceled"  # canceled, possibly after a partial fill
    REJECTED = "rejected"
    EXPIRED = "expired"
    # A status ccxt passed through unmapped (Binance's PENDING_NEW for a pending OTO leg, or one from the
    # future). The order exists, but what it will do is not known: treated as open, never written off.
    UNKNOWN = "unknown"


def split_symbol(symbol: str) -> tuple[str, str]:
    """``"BTC/USDT"`` -> ``("BTC", "USDT")``; raises ValueError for anything else."""
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote or "/" in quote:
        raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
    return base, quote


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What we ask the exchange for; ``client_order_id`` is recorded durably before it is sent."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None = None  # required for LIMIT


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    """An order as the exchange knows it."""

    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    filled: Decimal
    status: ExchangeOrderStatus
    timestamp_ms: int
    # the exchange's own word for the status when it is UNKNOWN (records leave it out when empty)
    raw_status: str = field(default="", metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True)
class UnparsedOrder:
    """An order the exchange listed that could not be read (a field missing or garbled).

    Kept instead of failing the whole listing: one odd order (often a foreign one) must not blind
    reconciliation to all the others. ``client_order_id`` is set when at least that could be read.
    """

    client_order_id: str | None
    symbol: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution (a trade) of one of our orders; ``trade_id`` is unique per symbol."""

    trade_id: str
    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_asset: str
    timestamp_ms: int

    @property
    def cost(self) -> Decimal:
        """Quote amount exchanged, before fees."""
        return self.price * self.amount


@dataclass(frozen=True, slots=True)
class Balance:
    """One asset of the account: ``free`` plus ``used`` (reserved by open orders) is the total."""

    asset: str
    free: Decimal
    used: Decimal

    @property
    def total(self) -> Decimal:
        return self.free + self.used


@dataclass(frozen=True, slots=True)
class MarketTick:
    """A public market-data update: the last traded price of a symbol."""

    symbol: str
    price: Decimal
    timestamp_ms: int
