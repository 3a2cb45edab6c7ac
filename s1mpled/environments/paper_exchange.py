"""The simulated exchange of paper mode: pure, exact, self-consistent.

In paper mode this object *is* the exchange -- the single source of truth that reconciliation
compares the ledgers against -- so it must never contradict itself. It does no I/O, reads no
clock (``now_ms`` is passed in) and never imports ccxt; the paper adapter persists it with
:meth:`SimulatedExchange.to_state` and drives it with prices from ``s1mpled.environments.feeds``.

Rules (the tests check each one):

* **Validation.** Rejections raise :class:`~s1mpled.errors.ExchangeRejected`: a duplicate
  ``client_order_id`` (any order it still remembers, see *History* -- re-sending an order is refused),
  an unknown symbol, an amount that is not positive or not a multiple of ``amount_step``, a
  limit price that is missing, not positive or not a multiple of ``price_step``, a market order
  carrying a price or arriving before the first price, and insufficient free balance. A rejected
  request leaves no trace, so its client id may be used again.
* **Reservation.** A limit buy moves ``price * amount * (1 + fee_rate)`` quote from free to
  used (``fee_model="binance"``: ``price * amount``, the fee is not paid in quote), a limit sell
  ``amount`` base. Each fill releases its share of the reservation; a cancel (or expiry) releases
  what is left. So ``used`` always equals the reservations of the remaining amounts of the open
  orders.
* **Fees** (``fee_model="quote"``, the default) are always charged in the QUOTE asset: ``fee =
  price * amount * fee_rate`` rounded DOWN to 8 decimal places. A buy costs ``price * amount +
  fee`` quote and gives ``amount`` base; a sell takes ``amount`` base and gives ``price * amount -
  fee`` quote. Because the fee is rounded down, a buy fill never costs more than the reservation
  it releases; the rounding dust goes back to free.
  ``fee_model="binance"`` follows Binance spot: a buy's fee is charged in the BASE asset (``fee =
  amount * fee_rate`` rounded down to 8 places; the buy costs ``price * amount`` quote and gives
  ``amount - fee`` base), a sell's in quote as above.
  ``bnb_fees=True`` ("pay fees with BNB"): every fee is charged in BNB instead when the account
  has that much free BNB (and more than none): the fee's value ``price * amount * fee_rate`` in
  quote, converted at the last price of ``BNB/<quote>`` if that market exists and has a price,
  else at the fixed ``bnb_price`` (BNB's price in any quote asset; without one the BNB rule does
  not apply), rounded down to 8 places (for a ``.../BNB`` market the value is already in BNB).
  Otherwise the fee falls back to the rule of the fee model.
* **Matching.** A market order fills at once and completely at the last price. A resting limit
  buy fills when a price update is <= its limit, a sell when it is >= its limit, always at the
  order's LIMIT price and for at most the market's ``liquidity`` (rounded down to
  ``amount_step``) per order per update, so large orders fill over several updates. A limit
  order that is marketable when placed fills at once (up to the liquidity) and rests with the
  remainder. Status: OPEN until completely filled (CLOSED) or canceled (CANCELED, keeping what
  filled). ``time_in_force`` of a limit order: ``GTC`` (the default, as above), ``IOC`` (fills
  what it can at once, the remainder EXPIRES), ``FOK`` (fills completely at once or EXPIRES with
  nothing filled; funds must suffice either way). :meth:`SimulatedExchange.expire_order` expires
  an open order (EXPIRED, keeping what filled), :meth:`SimulatedExchange.fill_order` fills an open
  order at its limit price regardless of price and liquidity (a counterparty arrived),
  :meth:`SimulatedExchange.adjust_balance` is a deposit or a withdrawal.
* **Ids.** Trade ids and exchange order ids are two global counters written as decimal
  strings ("1", "2", ...), strictly increasing across all symbols.
* **Exactness.** All arithmetic runs in the money context (:data:`s1mpled.model.MONEY`, 100 digits) *trapping* Inexact:
  a result that would need rounding (which takes absurd inputs) raises ``decimal.Inexact``
  instead of silently losing money. The only rounding is the explicit one of the fee.
* **History** is bounded so the persisted state (rewritten on every fill) stays small: every open
  order, the newest ``CLOSED_ORDERS_KEPT`` closed or canceled orders and the newest ``TRADES_KEPT``
  trades. The duplicate-id rule therefore covers the orders still remembered -- more than Binance,
  which refuses a reused client id only among open orders (s1mpled never reuses one anyway).
* **State** (``to_state``) is an :class:`ExchangeRecord` (format 1, written and read by :mod:`s1mpled.record`);
  the fee options appear in it only when they differ from the defaults, so a state written before they
  existed loads unchanged and is written again byte for byte.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, localcontext
from decimal import Decimal as D
from typing import Any, ClassVar

from s1mpled import record
from s1mpled.errors import ExchangeRejected, LocalStateError
from s1mpled.model import (
    MONEY,
    Balance,
    ExchangeOrder,
    ExchangeOrderStatus,
    Fill,
    OrderRequest,
    OrderType,
    Side,
    money_context,
    split_symbol,
    trade_number,
)

__all__ = [
    "BNB",
    "CLOSED_ORDERS_KEPT",
    "FEE_MODELS",
    "FEE_QUANTUM",
    "STATE_FORMAT",
    "TIME_IN_FORCE",
    "TRADES_KEPT",
    "ExchangeRecord",
    "MarketSpec",
    "SimulatedExchange",
]

FEE_QUANTUM = D("0.00000001")  # fees are rounded DOWN to 8 decimal places
TRADES_KEPT = 10_000  # newest trades kept (for REST catch-up); older ones are forgotten
CLOSED_ORDERS_KEPT = 2_000  # newest closed/canceled orders kept (for lookups by client id)
STATE_FORMAT = 1  # version of the to_state() layout
FEE_MODELS = ("quote", "binance")  # which asset a fee is charged in (see the module docstring)
TIME_IN_FORCE = ("GTC", "IOC", "FOK")
BNB = "BNB"

_EXACT = money_context(exact=True)
_ROUNDING = MONEY
_FLOOR = money_context(rounding=ROUND_DOWN)
_ZERO = D(0)


@contextmanager
def _exact() -> Iterator[None]:
    with localcontext(_EXACT):
        yield


def _is_multiple(value: D, step: D) -> bool:
    return value % step == 0


@dataclass(frozen=True)
class MarketSpec:
    """One tradable market of the simulator; ``liquidity`` caps what one order fills per price update."""

    symbol: str
    price_step: D
    amount_step: D
    liquidity: D  # the most base amount that can fill per order per price update (partial fills)

    def __post_init__(self) -> None:
        split_symbol(self.symbol)  # ValueError unless BASE/QUOTE
        for name in ("price_step", "amount_step", "liquidity"):
            value = getattr(self, name)
            if not isinstance(value, D) or not value.is_finite() or value <= 0:
                raise ValueError(f"{self.symbol}: {name} must be a positive finite Decimal, got {value!r}")
        if self.liquidity < self.amount_step:
            raise ValueError(f"{self.symbol}: liquidity {self.liquidity} is below amount_step {self.amount_step}")

    @property
    def base(self) -> str:
        return split_symbol(self.symbol)[0]

    @property
    def quote(self) -> str:
        return split_symbol(self.symbol)[1]

    @property
    def fill_cap(self) -> D:
        """``liquidity`` rounded down to a multiple of ``amount_step``."""
        with _exact():
            return (self.liquidity // self.amount_step) * self.amount_step


@dataclass(slots=True)
class _Wallet:
    """One asset's balance; mutable on purpose, never handed out (``balances()`` copies it)."""

    free: D
    used: D


@dataclass(frozen=True, slots=True)
class _MarketRecord:
    """A market as the state keeps it (under its symbol)."""

    price_step: D
    amount_step: D
    liquidity: D


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeRecord:
    """The persisted layout of a :class:`SimulatedExchange`, in the order its keys are written (``format`` first)."""

    RECORD_FORMAT: ClassVar[int] = STATE_FORMAT

    fee_rate: D
    fee_model: str = field(default="quote", metadata=record.OMIT_DEFAULT)
    bnb_fees: bool = field(default=False, metadata=record.OMIT_DEFAULT)
    bnb_price: D | None = field(default=None, metadata=record.OMIT_DEFAULT)
    markets: dict[str, _MarketRecord]
    balances: dict[str, _Wallet]
    last_prices: dict[str, D]
    next_order_id: int
    next_trade_id: int
    orders: tuple[ExchangeOrder, ...]
    trades: tuple[Fill, ...]


class SimulatedExchange:
    """An in-process spot exchange for one account: orders, matching, balances, trades, state.

    Every command validates completely before it changes anything, so a rejected request leaves no
    trace; the adapter persists ``to_state()`` after each call it wants to survive a crash.
    """

    def __init__(
        self,
        markets: Mapping[str, MarketSpec],
        balances: Mapping[str, D],
        fee_rate: D,
        *,
        trades_kept: int = TRADES_KEPT,
        closed_orders_kept: int = CLOSED_ORDERS_KEPT,
        fee_model: str = "quote",
        bnb_fees: bool = False,
        bnb_price: D | None = None,
    ) -> None:
        if not isinstance(fee_rate, D) or not fee_rate.is_finite() or not 0 <= fee_rate < 1:
            raise ValueError(f"fee_rate must be a Decimal in [0, 1), got {fee_rate!r}")
        if fee_model not in FEE_MODELS:
            raise ValueError(f"fee_model must be one of {FEE_MODELS}, got {fee_model!r}")
        if bnb_price is not None and (not isinstance(bnb_price, D) or not bnb_price.is_finite() or bnb_price <= 0):
            raise ValueError(f"bnb_price must be a positive finite Decimal, got {bnb_price!r}")
        for key, spec in markets.items():
            if key != spec.symbol:
                raise ValueError(f"market key {key!r} differs from its spec's symbol {spec.symbol!r}")
        self._markets = dict(markets)
        self._fee_rate = fee_rate
        self._wallets: dict[str, _Wallet] = {}
        for asset, amount in balances.items():
            if not isinstance(amount, D) or not amount.is_finite() or amount < 0:
                raise ValueError(f"initial balance of {asset} must be a non-negative Decimal, got {amount!r}")
            self._wallets[asset] = _Wallet(amount, _ZERO)
        for spec in self._markets.values():
            for asset in (spec.base, spec.quote):
                self._wallets.setdefault(asset, _Wallet(_ZERO, _ZERO))
        self._fee_model, self._bnb_fees, self._bnb_price = fee_model, bool(bnb_fees), bnb_price
        if self._bnb_fees:
            self._wallets.setdefault(BNB, _Wallet(_ZERO, _ZERO))
        self._orders: dict[str, ExchangeOrder] = {}  # by client id, in placement order
        self._open: dict[str, None] = {}  # ordered set of the open orders' client ids
        self._trades: list[Fill] = []
        self._trade_numbers: list[int] = []  # int(trade_id) of each trade, for bisecting
        self._last: dict[str, D] = {}
        self._next_order_id = 1
        self._next_trade_id = 1
        self._trades_kept, self._closed_kept = trades_kept, closed_orders_kept

    # ----------------------------------------------------------------- queries

    @property
    def fee_rate(self) -> D:
        return self._fee_rate

    @property
    def fee_model(self) -> str:
        return self._fee_model

    @property
    def bnb_fees(self) -> bool:
        return self._bnb_fees

    @property
    def markets(self) -> dict[str, MarketSpec]:
        return dict(self._markets)

    def open_orders(self) -> list[ExchangeOrder]:
        """The open orders of all symbols, in placement order."""
        return [self._orders[cid] for cid in self._open]

    def order(self, client_order_id: str) -> ExchangeOrder | None:
        """Any order ever placed with this client id (open, closed or canceled), else None."""
        return self._orders.get(client_order_id)

    def balances(self) -> dict[str, Balance]:
        """Every asset of the account (initial balances and every market's assets), free and used."""
        return {asset: Balance(asset, w.free, w.used) for asset, w in self._wallets.items()}

    def trades(self, symbol: str | None = None, after_trade_id: str | None = None) -> list[Fill]:
        """The fills (of one symbol, or all) whose trade id is numerically greater than ``after_trade_id``."""
        if symbol is not None:
            self._spec(symbol)
        start = 0
        if after_trade_id is not None:
            try:
                after = _id_number(after_trade_id)
            except ValueError as exc:
                raise ExchangeRejected(f"bad trade id: {exc}") from None
            start = bisect.bisect_right(self._trade_numbers, after)
        return [f for f in self._trades[start:] if symbol is None or f.symbol == symbol]

    def last_price(self, symbol: str) -> D | None:
        """The latest price fed to ``on_price`` for the symbol, None before the first."""
        self._spec(symbol)
        return self._last.get(symbol)

    # ----------------------------------------------------------------- commands

    def place_order(
        self, req: OrderRequest, now_ms: int, *, time_in_force: str = "GTC"
    ) -> tuple[ExchangeOrder, list[Fill]]:
        """Accept an order (or raise ExchangeRejected); returns it with the fills it got at once.

        ``time_in_force`` applies to limit orders: GTC rests, IOC expires what did not fill at once,
        FOK fills completely at once or expires with nothing filled.
        """
        if time_in_force not in TIME_IN_FORCE:
            raise ExchangeRejected(f"order {req.client_order_id!r}: unknown time_in_force {time_in_force!r}")
        with _exact():
            spec = self._validate(req)
            if req.type is OrderType.MARKET:
                return self._place_market(req, spec, now_ms)
            if time_in_force == "FOK" and not self._fills_at_once(req, spec):
                return self._place_expired(req, spec, now_ms), []
            order, fills = self._place_limit(req, spec, now_ms)
            if time_in_force == "IOC" and order.status is ExchangeOrderStatus.OPEN:
                order = self._end(order, ExchangeOrderStatus.EXPIRED)
            return order, fills

    def expire_order(self, symbol: str, client_order_id: str, now_ms: int) -> ExchangeOrder:
        """Expire an open order (the exchange ended it: IOC rest, self-trade prevention, ...) like a cancel:
        what it still reserves is released and what filled is kept; returns the EXPIRED order."""
        del now_ms
        order = self._open_order(symbol, client_order_id, "expire")
        with _exact():
            return self._end(order, ExchangeOrderStatus.EXPIRED)

    def fill_order(self, client_order_id: str, now_ms: int, amount: D | None = None) -> Fill:
        """Fill an open limit order now at its limit price, whatever the last price and the liquidity
        (a counterparty arrived): ``amount`` (a positive multiple of ``amount_step``, at most the
        remainder) or, by default, everything that remains. Returns the one trade."""
        order = self._orders.get(client_order_id)
        if order is None or order.status is not ExchangeOrderStatus.OPEN:
            raise ExchangeRejected(f"fill {client_order_id!r}: no such open order")
        spec = self._markets[order.symbol]
        with _exact():
            remaining = order.amount - order.filled
            amount = remaining if amount is None else amount
            if not isinstance(amount, D) or not amount.is_finite() or amount <= 0 or amount > remaining:
                raise ExchangeRejected(f"fill {client_order_id!r}: amount {amount} not in (0, {remaining}]")
            if not _is_multiple(amount, spec.amount_step):
                raise ExchangeRejected(
                    f"fill {client_order_id!r}: amount {amount} is not a multiple of {spec.amount_step}"
                )
            return self._fill_resting(order, spec, now_ms, amount)

    def adjust_balance(self, asset: str, delta: D) -> Balance:
        """A deposit (``delta`` > 0) or a withdrawal (< 0) of free ``asset``, no trade; refused (ExchangeRejected)
        if it would make free negative. An asset the account never had is created."""
        if not asset or not asset.isascii() or not asset.isalnum() or asset != asset.upper():
            raise ExchangeRejected(f"bad asset name {asset!r}")
        if not isinstance(delta, D) or not delta.is_finite():
            raise ExchangeRejected(f"{asset}: delta must be a finite Decimal, got {delta!r}")
        with _exact():
            wallet = self._wallets.get(asset, _Wallet(_ZERO, _ZERO))
            if wallet.free + delta < 0:
                raise ExchangeRejected(f"{asset}: insufficient funds: withdrawing {-delta}, {wallet.free} free")
            wallet.free += delta
            self._wallets[asset] = wallet
            return Balance(asset, wallet.free, wallet.used)

    def reserve_order_id(self) -> str:
        """Take the next exchange order id for an order kept outside the matching engine (the simulator's
        hand-placed pending orders), so ids stay unique and increasing."""
        order_id = str(self._next_order_id)
        self._next_order_id += 1
        return order_id

    def cancel_order(self, symbol: str, client_order_id: str, now_ms: int) -> ExchangeOrder:
        """Cancel an open order and release what it still reserves; returns the CANCELED order.

        ``now_ms`` is accepted for symmetry with the other commands; the order keeps its placement time.
        """
        del now_ms
        order = self._open_order(symbol, client_order_id, "cancel")
        with _exact():
            return self._end(order, ExchangeOrderStatus.CANCELED)

    def _open_order(self, symbol: str, client_order_id: str, what: str) -> ExchangeOrder:
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            raise ExchangeRejected(f"{what} {client_order_id!r} on {symbol}: order not found")
        if order.status is not ExchangeOrderStatus.OPEN:
            raise ExchangeRejected(f"{what} {client_order_id!r} on {symbol}: order not open (it is {order.status})")
        return order

    def _end(self, order: ExchangeOrder, status: ExchangeOrderStatus) -> ExchangeOrder:
        """Take an open order off the book with ``status``, releasing what it still reserves."""
        spec = self._markets[order.symbol]
        assert order.price is not None  # only limit orders rest
        self._release(spec, order.side, order.price, order.amount - order.filled)
        ended = replace(order, status=status)
        self._orders[order.client_order_id] = ended
        del self._open[order.client_order_id]
        return ended

    def on_price(self, symbol: str, price: D, now_ms: int) -> list[Fill]:
        """Record a new last price and fill the resting orders it crosses, in placement order."""
        spec = self._spec(symbol)
        if not isinstance(price, D) or not price.is_finite() or price <= 0:
            raise ExchangeRejected(f"{symbol}: price must be a positive finite Decimal, got {price!r}")
        with _exact():
            self._last[symbol] = price
            fills: list[Fill] = []
            for cid in list(self._open):
                order = self._orders[cid]
                if order.symbol == symbol and _crosses(order, price):
                    fills.append(self._fill_resting(order, spec, now_ms))
            return fills

    # ----------------------------------------------------------------- validation

    def _spec(self, symbol: str) -> MarketSpec:
        spec = self._markets.get(symbol)
        if spec is None:
            raise ExchangeRejected(f"unknown symbol {symbol!r}")
        return spec

    def _validate(self, req: OrderRequest) -> MarketSpec:
        what = f"order {req.client_order_id!r}"
        if req.client_order_id in self._orders:
            raise ExchangeRejected(f"{what}: duplicate client_order_id (an order with this id was already placed)")
        spec = self._spec(req.symbol)
        if not req.amount.is_finite() or req.amount <= 0:
            raise ExchangeRejected(f"{what}: amount must be positive, got {req.amount}")
        if not _is_multiple(req.amount, spec.amount_step):
            raise ExchangeRejected(f"{what}: amount {req.amount} is not a multiple of amount_step {spec.amount_step}")
        if req.type is OrderType.MARKET:
            if req.price is not None:
                raise ExchangeRejected(f"{what}: a market order must not carry a price")
            if req.symbol not in self._last:
                raise ExchangeRejected(f"{what}: market order on {req.symbol} before any price is known")
            return spec
        if req.price is None:
            raise ExchangeRejected(f"{what}: a limit order needs a price")
        if not req.price.is_finite() or req.price <= 0:
            raise ExchangeRejected(f"{what}: limit price must be positive, got {req.price}")
        if not _is_multiple(req.price, spec.price_step):
            raise ExchangeRejected(f"{what}: price {req.price} is not a multiple of price_step {spec.price_step}")
        return spec

    def _require_free(self, asset: str, needed: D, what: str) -> None:
        free = self._wallets[asset].free
        if free < needed:
            raise ExchangeRejected(f"{what}: insufficient funds: needs {needed} {asset}, {free} {asset} free")

    # ----------------------------------------------------------------- placing

    def _new_order(self, req: OrderRequest, status: ExchangeOrderStatus, filled: D, now_ms: int) -> ExchangeOrder:
        order = ExchangeOrder(
            client_order_id=req.client_order_id,
            exchange_order_id=str(self._next_order_id),
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            amount=req.amount,
            price=req.price,
            filled=filled,
            status=status,
            timestamp_ms=now_ms,
        )
        self._next_order_id += 1
        self._orders[req.client_order_id] = order
        return order

    def _place_market(self, req: OrderRequest, spec: MarketSpec, now_ms: int) -> tuple[ExchangeOrder, list[Fill]]:
        price = self._last[req.symbol]
        what = f"order {req.client_order_id!r}"
        if req.side is Side.BUY:
            self._require_free(spec.quote, price * req.amount + self._quote_fee_reserve(price, req.amount), what)
        else:
            self._require_free(spec.base, req.amount, what)
        order = self._new_order(req, ExchangeOrderStatus.CLOSED, req.amount, now_ms)
        return order, [self._settle(order, spec, price, req.amount, now_ms)]

    def _limit_reserve(self, req: OrderRequest, spec: MarketSpec) -> tuple[str, D]:
        assert req.price is not None  # _validate checked it
        if req.side is Side.BUY:
            return spec.quote, self._reservation(req.price, req.amount)
        return spec.base, req.amount

    def _fills_at_once(self, req: OrderRequest, spec: MarketSpec) -> bool:
        """Whether a limit order would fill completely on placement (what FOK needs)."""
        last = self._last.get(req.symbol)
        return last is not None and _crosses_at(req.side, req.price, last) and req.amount <= spec.fill_cap

    def _place_expired(self, req: OrderRequest, spec: MarketSpec, now_ms: int) -> ExchangeOrder:
        """A FOK order that cannot fill completely: checked like any order, then EXPIRED with nothing filled."""
        asset, reserve = self._limit_reserve(req, spec)
        self._require_free(asset, reserve, f"order {req.client_order_id!r}")
        return self._new_order(req, ExchangeOrderStatus.EXPIRED, _ZERO, now_ms)

    def _place_limit(self, req: OrderRequest, spec: MarketSpec, now_ms: int) -> tuple[ExchangeOrder, list[Fill]]:
        assert req.price is not None  # _validate checked it
        asset, reserve = self._limit_reserve(req, spec)
        self._require_free(asset, reserve, f"order {req.client_order_id!r}")
        wallet = self._wallets[asset]
        wallet.free -= reserve
        wallet.used += reserve
        order = self._new_order(req, ExchangeOrderStatus.OPEN, _ZERO, now_ms)
        self._open[order.client_order_id] = None
        last = self._last.get(req.symbol)
        if last is not None and _crosses(order, last):
            fill = self._fill_resting(order, spec, now_ms)
            return self._orders[order.client_order_id], [fill]
        return order, []

    # ----------------------------------------------------------------- filling

    def _fee(self, price: D, amount: D) -> D:
        return (price * amount * self._fee_rate).quantize(FEE_QUANTUM, rounding=ROUND_DOWN, context=_ROUNDING)

    def _quote_fee_reserve(self, price: D, amount: D) -> D:
        """What a buy must have in quote for its fee: the fee (quote model), nothing (binance model)."""
        return self._fee(price, amount) if self._fee_model == "quote" else _ZERO

    def _reservation(self, price: D, amount: D) -> D:
        """Quote a limit buy of ``amount`` at ``price`` keeps in ``used``: the cost plus the unrounded fee
        (quote model) or the cost alone (binance model: a buy's fee is paid in base or BNB)."""
        if self._fee_model == "binance":
            return price * amount
        return price * amount * (1 + self._fee_rate)

    def _bnb_fee(self, spec: MarketSpec, value: D) -> D | None:
        """A fee worth ``value`` quote, in BNB (rounded down to 8 places); None if no BNB price is known."""
        if spec.quote == BNB:
            price: D | None = D(1)
        else:
            price = self._last.get(f"{BNB}/{spec.quote}") if f"{BNB}/{spec.quote}" in self._markets else None
            price = price or self._bnb_price
        if price is None:
            return None
        return _FLOOR.divide(value, price).quantize(FEE_QUANTUM, rounding=ROUND_DOWN, context=_ROUNDING)

    def _charge_fee(self, spec: MarketSpec, side: Side, price: D, amount: D) -> tuple[D, str]:
        """Take the fee of one trade out of the free balances (after the trade itself); returns it and its asset."""
        if self._bnb_fees:
            fee = self._bnb_fee(spec, price * amount * self._fee_rate)
            bnb = self._wallets[BNB]
            if fee is not None and bnb.free > 0 and bnb.free >= fee:
                bnb.free -= fee
                return fee, BNB
        if self._fee_model == "binance" and side is Side.BUY:
            fee = (amount * self._fee_rate).quantize(FEE_QUANTUM, rounding=ROUND_DOWN, context=_ROUNDING)
            self._wallets[spec.base].free -= fee
            return fee, spec.base
        fee = self._fee(price, amount)
        self._wallets[spec.quote].free -= fee
        return fee, spec.quote

    def _release(self, spec: MarketSpec, side: Side, price: D, amount: D) -> None:
        """Move the reservation for ``amount`` of a resting order back from used to free."""
        asset, reserve = (spec.quote, self._reservation(price, amount)) if side is Side.BUY else (spec.base, amount)
        wallet = self._wallets[asset]
        wallet.used -= reserve
        wallet.free += reserve

    def _fill_resting(self, order: ExchangeOrder, spec: MarketSpec, now_ms: int, amount: D | None = None) -> Fill:
        assert order.price is not None  # only limit orders rest
        amount = min(order.amount - order.filled, spec.fill_cap) if amount is None else amount
        self._release(spec, order.side, order.price, amount)
        fill = self._settle(order, spec, order.price, amount, now_ms)
        filled = order.filled + amount
        if filled == order.amount:
            self._orders[order.client_order_id] = replace(order, filled=filled, status=ExchangeOrderStatus.CLOSED)
            del self._open[order.client_order_id]
        else:
            self._orders[order.client_order_id] = replace(order, filled=filled)
        return fill

    def _settle(self, order: ExchangeOrder, spec: MarketSpec, price: D, amount: D, now_ms: int) -> Fill:
        """Exchange base for quote out of the free balances and record the trade."""
        cost = price * amount
        base, quote = self._wallets[spec.base], self._wallets[spec.quote]
        if order.side is Side.BUY:
            quote.free -= cost
            base.free += amount
        else:
            base.free -= amount
            quote.free += cost
        fee, fee_asset = self._charge_fee(spec, order.side, price, amount)
        fill = Fill(
            trade_id=str(self._next_trade_id),
            client_order_id=order.client_order_id,
            exchange_order_id=order.exchange_order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            amount=amount,
            fee=fee,
            fee_asset=fee_asset,
            timestamp_ms=now_ms,
        )
        self._trades.append(fill)
        self._trade_numbers.append(self._next_trade_id)
        self._forget_old_history()
        self._next_trade_id += 1
        return fill

    # ----------------------------------------------------------------- state

    def _forget_old_history(self) -> None:
        """Keep the newest trades and closed orders only, so the persisted state stays bounded.

        Open orders are always kept. Trimming happens in steps of 10 % so it costs nothing per fill.
        """
        if len(self._trades) > self._trades_kept * 1.1:
            drop = len(self._trades) - self._trades_kept
            del self._trades[:drop], self._trade_numbers[:drop]
        closed = len(self._orders) - len(self._open)
        if closed > self._closed_kept * 1.1:
            for cid in [c for c in self._orders if c not in self._open][: closed - self._closed_kept]:
                del self._orders[cid]

    def to_state(self) -> dict[str, Any]:
        """The complete state as JSON-shaped data (str keys, lists, str/int/bool/Decimal/None values).

        The fee options are written only when they differ from the defaults (so the state of a default
        exchange is exactly what it was before they existed).
        """
        return record.encode(self.to_record())

    def to_record(self) -> ExchangeRecord:
        """The complete state as its persisted record."""
        return ExchangeRecord(  # the keys are written in the record's field order, whatever the order here
            markets={s.symbol: _MarketRecord(s.price_step, s.amount_step, s.liquidity) for s in self._markets.values()},
            fee_rate=self._fee_rate,
            fee_model=self._fee_model,
            bnb_fees=self._bnb_fees,
            bnb_price=self._bnb_price,
            balances=dict(self._wallets),
            last_prices=dict(self._last),
            next_order_id=self._next_order_id,
            next_trade_id=self._next_trade_id,
            orders=tuple(self._orders.values()),
            trades=tuple(self._trades),
        )

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SimulatedExchange:
        """Rebuild an exchange from ``to_state()`` output; raises LocalStateError if it is malformed or inconsistent.

        A malformed value is a RecordError naming its path (``exchange.orders[3].price: ...``).
        """
        return cls.from_record(record.decode(ExchangeRecord, state, where="exchange"))

    @classmethod
    def from_record(cls, rec: ExchangeRecord) -> SimulatedExchange:
        """The exchange of a record; LocalStateError if it is inconsistent (one the exchange never wrote)."""
        try:
            return cls._from_record(rec)
        except LocalStateError:
            raise
        except (ValueError, ArithmeticError) as exc:
            raise LocalStateError(f"invalid simulated-exchange state: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _from_record(cls, rec: ExchangeRecord) -> SimulatedExchange:
        markets = {sym: MarketSpec(sym, m.price_step, m.amount_step, m.liquidity) for sym, m in rec.markets.items()}
        ex = cls(markets, {}, rec.fee_rate, fee_model=rec.fee_model, bnb_fees=rec.bnb_fees, bnb_price=rec.bnb_price)
        ex._wallets = {a: _Wallet(w.free, w.used) for a, w in rec.balances.items()}
        ex._last = dict(rec.last_prices)
        ex._next_order_id, ex._next_trade_id = rec.next_order_id, rec.next_trade_id
        for order in rec.orders:
            ex._orders[order.client_order_id] = order
            if order.status is ExchangeOrderStatus.OPEN:
                ex._open[order.client_order_id] = None
        ex._trades = list(rec.trades)
        ex._trade_numbers = [_id_number(f.trade_id) for f in ex._trades]
        ex._check_consistency()
        return ex

    def _check_consistency(self) -> None:
        """Refuse a state the exchange itself could never have produced."""
        symbols = {o.symbol for o in self._orders.values()} | {f.symbol for f in self._trades} | set(self._last)
        if not symbols <= set(self._markets):
            raise LocalStateError(
                f"orders, trades or prices name unknown markets: {sorted(symbols - set(self._markets))}"
            )
        assets = {a for spec in self._markets.values() for a in (spec.base, spec.quote)} | (
            {BNB} if self._bnb_fees else set()
        )
        if not assets <= set(self._wallets):
            raise LocalStateError(f"balances lack market assets: {sorted(assets - set(self._wallets))}")
        with _exact():
            expected = dict.fromkeys(self._wallets, _ZERO)
            for order in self.open_orders():
                spec = self._markets[order.symbol]
                if order.price is None or not 0 <= order.filled < order.amount:
                    raise LocalStateError(f"open order {order.client_order_id!r} is not a partially filled limit")
                remaining = order.amount - order.filled
                if order.side is Side.BUY:
                    expected[spec.quote] += self._reservation(order.price, remaining)
                else:
                    expected[spec.base] += remaining
            for asset, wallet in self._wallets.items():
                if wallet.free < 0 or wallet.used != expected[asset]:
                    raise LocalStateError(f"{asset}: balance {wallet.free}/{wallet.used} contradicts the open orders")
            numbers = [_id_number(o.exchange_order_id) for o in self._orders.values()]
            if numbers != sorted(set(numbers)) or any(n >= self._next_order_id for n in numbers):
                raise LocalStateError("exchange order ids are not increasing below next_order_id")
            if self._trade_numbers != sorted(set(self._trade_numbers)) or any(
                n >= self._next_trade_id for n in self._trade_numbers
            ):
                raise LocalStateError("trade ids are not increasing below next_trade_id")


def _id_number(text: str) -> int:
    """The number behind a counter id ("1", "2", ...: trade and order ids alike); ValueError for anything else."""
    number = trade_number(text)
    if number is None:
        raise ValueError(f"{text!r} is not a decimal integer id")
    return number


def _crosses(order: ExchangeOrder, price: D) -> bool:
    """Whether a resting limit order trades at this market price."""
    return _crosses_at(order.side, order.price, price)


def _crosses_at(side: Side, limit: D | None, price: D) -> bool:
    assert limit is not None
    return price <= limit if side is Side.BUY else price >= limit
