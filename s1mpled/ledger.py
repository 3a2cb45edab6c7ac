"""StrategyLedger: what one strategy owns and which orders it has, provable after any crash.

One ledger per strategy (one symbol). It is pure: the caller persists :meth:`StrategyLedger.to_state`
after every mutation and *before* acting on the exchange, so an order is always known by its client id
before it can exist (record intent, then act). The exchange stays the truth: orders move through the
table of :mod:`s1mpled.orders`, fills are applied once each by trade id, and reconciliation
force-corrects with small explicit methods that return ``(before, after)`` for its CRITICAL log.

Accounting (spot, average-cost method):

* buy: ``capital -= price*amount + quote_fee``; ``holdings += amount - base_fee``; the cost basis grows by
  everything the quote side paid, fees included (fees are part of what the position cost, so realized
  PnL is net of both the buying and the selling fee);
* sell: ``capital += price*amount - quote_fee``; ``holdings -= amount + base_fee``; the units leaving take
  their share of the cost basis with them (``basis * units / holdings``) and
  ``realized_pnl += proceeds - released_basis``, i.e. ``(price - avg_entry)*amount - fee`` for a quote fee.
  Hence ``capital + cost_basis == initial capital + realized_pnl`` until a force correction;
* ``fees_paid`` is in quote (a base fee is valued at the fill price). A fee in a third asset (BNB with
  Binance's discount) changes neither capital nor holdings: it is the strategy's *debt* in that asset,
  summed per asset in ``other_fees`` -- the account paid it from coins the strategy does not own, and
  reconciliation counts it as a negative claim on that asset, so it is never cut from a strategy that
  does own that asset;
* ``capital`` is all the quote the strategy owns, including what open buy orders reserve;
  ``reserved_quote`` (price times the unfilled amount of open limit buys) is informative.

Arithmetic runs in the money context (:data:`s1mpled.model.MONEY`): sums and products of exchange amounts
are exact, and only the released cost basis is rounded (to 1e-18), the same number going into basis and PnL.

The persisted layout is :class:`LedgerRecord` (format 1), written and read by :mod:`s1mpled.record`.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from typing import Any, ClassVar

from s1mpled import record
from s1mpled.errors import LocalStateError, RemoteStateError
from s1mpled.model import MONEY, ExchangeOrder, Fill, OrderRequest, OrderType, Side, split_symbol, trade_number
from s1mpled.orders import (
    BINANCE_CLIENT_ID_RE,
    EPOCH_RE,
    OrderEvent,
    OrderState,
    is_terminal,
    parse_client_order_id,
    state_for_status,
    transition,
)

__all__ = [
    "HISTORY_LIMIT",
    "SEEN_TRADE_IDS_LIMIT",
    "STATE_FORMAT",
    "LedgerOrder",
    "LedgerRecord",
    "LedgerSnapshot",
    "SeenTradeIds",
    "SeenTradesRecord",
    "StrategyLedger",
]

log = logging.getLogger("s1mpled.ledger")

SEEN_TRADE_IDS_LIMIT = 10_000  # trade ids kept for de-duplication
HISTORY_LIMIT = 500  # terminal orders kept (newest first out of open_orders)
STATE_FORMAT = 1  # version of the to_state() layout

_BASIS_QUANTUM = Decimal("1e-18")
_ZERO = Decimal(0)
_FILL_EVENTS = frozenset({OrderEvent.PARTIAL_FILL, OrderEvent.FULL_FILL})


@dataclass(frozen=True, slots=True)
class LedgerOrder:
    """One order as the ledger knows it.

    ``filled`` is the sum of the fills this ledger applied to it (capped at ``amount``), unless
    reconciliation overwrote it with the exchange's figure (``set_order_state``).
    """

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    filled: Decimal
    state: OrderState
    exchange_order_id: str | None
    created_ms: int
    updated_ms: int
    tag: str = ""

    @classmethod
    def unfilled(
        cls,
        src: OrderRequest | ExchangeOrder,
        state: OrderState,
        now_ms: int,
        *,
        exchange_order_id: str | None = None,
        created_ms: int | None = None,
        tag: str = "",
    ) -> LedgerOrder:
        """The order ``src`` describes (our request, or the exchange's order) with none of its fills applied,
        known to the ledger from ``now_ms`` (created then, unless the exchange says when)."""
        what = (src.client_order_id, src.symbol, src.side, src.type, src.amount, src.price)
        created = now_ms if created_ms is None else created_ms
        return cls(*what, _ZERO, state, exchange_order_id, created, now_ms, tag)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """A consistent read-only view of one ledger (what reconciliation and the control socket see)."""

    strategy: str
    symbol: str
    base: str
    quote: str
    capital: Decimal  # free quote of the strategy, including what open buys reserve
    holdings: Decimal  # base amount
    reserved_quote: Decimal
    open_orders: tuple[LedgerOrder, ...]  # non-terminal, oldest first
    last_trade_id: str | None  # highest integer trade id applied: the REST catch-up cursor
    realized_pnl: Decimal
    fees_paid: Decimal  # in quote
    seen_trade_ids: int
    cost_basis: Decimal
    avg_entry_price: Decimal | None  # cost_basis / holdings; None without holdings
    other_fees: tuple[tuple[str, Decimal], ...]  # fees in assets other than base and quote: debts in them
    sequence: int  # the last client-order-id sequence number handed out
    reconciled_trade_id: str | None = None  # every trade up to this id was checked by a reconciliation
    epochs: tuple[str, ...] = ("",)  # every epoch of these books, the current one last
    created_ms: int = 0  # when these books began: the trade catch-up never needs to look further back

    @property
    def epoch(self) -> str:
        """The epoch new client order ids carry."""
        return self.epochs[-1]

    def claims(self) -> dict[str, Decimal]:
        """What this ledger says it owns of each asset: holdings, capital, minus fee debts."""
        out = {self.base: self.holdings, self.quote: self.capital}
        for asset, debt in self.other_fees:
            out[asset] = out.get(asset, _ZERO) - debt
        return out


@dataclass(frozen=True, slots=True)
class SeenTradesRecord:
    """The persisted layout of :class:`SeenTradeIds`: kept integer ids (ascending), floor, last, other ids."""

    ids: tuple[str, ...]
    floor: str | None = field(default=None, metadata=record.OPTIONAL)
    last: str | None = field(default=None, metadata=record.OPTIONAL)
    others: tuple[str, ...] = ()


class SeenTradeIds:
    """The trade ids already applied, bounded so the state stays small.

    Integer ids (Binance's and the paper exchange's, increasing per symbol): the highest ``limit`` are
    kept, and ``floor`` is the highest id ever dropped; an id ``<= floor`` counts as seen. Every id we
    applied is thus either kept or at most ``floor``, so no fill is ever applied twice. The price is that
    a trade at or below ``floor`` that was never applied is ignored: it would have to be older than
    ``limit`` newer trades of this strategy and still be missing from the stream and from every REST
    catch-up since -- and the balance check of reconciliation would still catch the difference.
    Other ids (venues with UUIDs have no order): the last ``limit`` applied are kept, oldest dropped
    first, with no floor (a floor would be unsound for unordered ids).
    """

    def __init__(self, limit: int = SEEN_TRADE_IDS_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self._limit = limit
        self._ints: set[int] = set()
        self._heap: list[int] = []  # the same numbers as _ints, lowest first
        self._floor: int | None = None
        self._last: int | None = None
        self._others: dict[str, None] = {}  # insertion ordered

    def __contains__(self, trade_id: object) -> bool:
        if not isinstance(trade_id, str):
            return False
        number = trade_number(trade_id)
        if number is None:
            return trade_id in self._others
        return number in self._ints or (self._floor is not None and number <= self._floor)

    def __len__(self) -> int:
        return len(self._ints) + len(self._others)

    @property
    def floor(self) -> str | None:
        """The highest integer id dropped (every id up to it counts as seen), or None."""
        return None if self._floor is None else str(self._floor)

    @property
    def last(self) -> str | None:
        """The highest integer id ever added, or None."""
        return None if self._last is None else str(self._last)

    def add(self, trade_id: str) -> None:
        """Remember ``trade_id`` (no-op if it already counts as seen)."""
        if trade_id in self:
            return
        number = trade_number(trade_id)
        if number is None:
            self._others[trade_id] = None
            if len(self._others) > self._limit:
                del self._others[next(iter(self._others))]
            return
        self._ints.add(number)
        heapq.heappush(self._heap, number)
        self._last = number if self._last is None else max(self._last, number)
        if len(self._ints) > self._limit:
            dropped = heapq.heappop(self._heap)
            self._ints.discard(dropped)
            self._floor = dropped if self._floor is None else max(self._floor, dropped)

    def to_record(self) -> SeenTradesRecord:
        return SeenTradesRecord(tuple(str(n) for n in sorted(self._ints)), self.floor, self.last, tuple(self._others))

    def to_state(self) -> dict[str, Any]:
        return record.encode(self.to_record())

    @classmethod
    def from_state(cls, state: Mapping[str, Any], limit: int = SEEN_TRADE_IDS_LIMIT) -> SeenTradeIds:
        """The set :meth:`to_state` wrote; LocalStateError (a RecordError) naming the key if it is not one."""
        return cls.from_record(record.decode(SeenTradesRecord, state, where="seen_trades"), limit)

    @classmethod
    def from_record(cls, rec: SeenTradesRecord, limit: int = SEEN_TRADE_IDS_LIMIT) -> SeenTradeIds:
        seen = cls(limit)
        seen._floor = None if rec.floor is None else _canonical_int(rec.floor, "floor")
        for trade_id in rec.ids:
            seen.add(str(_canonical_int(trade_id, "ids")))
        for trade_id in rec.others:
            seen.add(trade_id)
        if rec.last is not None:
            number = _canonical_int(rec.last, "last")
            seen._last = number if seen._last is None else max(seen._last, number)
        return seen


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRecord:
    """The persisted layout of a :class:`StrategyLedger`, in the order its keys are written (``format`` first).

    The last three may be absent: books written before the reconciliation cursor, epochs or ``created_ms``
    existed (``from_state`` then derives ``created_ms`` from the oldest order).
    """

    RECORD_FORMAT: ClassVar[int] = STATE_FORMAT

    strategy: str
    symbol: str
    capital: Decimal
    holdings: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    other_fees: dict[str, Decimal]
    sequence: int
    open_orders: tuple[LedgerOrder, ...]
    history: tuple[LedgerOrder, ...]
    seen_trades: SeenTradesRecord
    reconciled_trade_id: str | None = field(default=None, metadata=record.OPTIONAL)
    epochs: tuple[str, ...] = field(default=(), metadata=record.OPTIONAL)
    created_ms: int = field(default=0, metadata=record.OPTIONAL)


class StrategyLedger:
    """Orders by client id, fills by trade id, capital, holdings and PnL of one strategy on one symbol."""

    def __init__(
        self,
        strategy: str,
        symbol: str,
        capital: Decimal,
        *,
        seen_limit: int = SEEN_TRADE_IDS_LIMIT,
        history_limit: int = HISTORY_LIMIT,
        epoch: str = "",
        created_ms: int = 0,
    ) -> None:
        self.strategy, self.symbol = strategy, symbol
        self._epochs = [_epoch(epoch)]
        self.created_ms = created_ms
        self.base, self.quote = split_symbol(symbol)
        self._capital = _finite(capital, "capital")
        self._holdings = _ZERO
        self._cost_basis = _ZERO
        self._realized = _ZERO
        self._fees = _ZERO
        self._other_fees: dict[str, Decimal] = {}
        self._sequence = 0
        self._open: dict[str, LedgerOrder] = {}
        self._history: dict[str, LedgerOrder] = {}  # terminal orders, oldest first
        self._history_limit = history_limit
        self._seen = SeenTradeIds(seen_limit)
        self._reconciled: str | None = None

    # ------------------------------------------------------------------ orders

    def record_intent(self, req: OrderRequest, now_ms: int, tag: str = "") -> LedgerOrder:
        """Record an order we are about to send, as PENDING; a client id the ledger knows is a LocalStateError."""
        self._check_request(req)
        if self.order(req.client_order_id) is not None:
            raise LocalStateError(f"{self.strategy}: client order id {req.client_order_id} is already recorded")
        order = LedgerOrder.unfilled(req, OrderState.PENDING, now_ms, tag=tag)
        self._bump_sequence(order.client_order_id)
        self._put(order)
        return order

    @property
    def epoch(self) -> str:
        """The epoch new client order ids carry (see :mod:`s1mpled.orders`)."""
        return self._epochs[-1]

    @property
    def epochs(self) -> tuple[str, ...]:
        return tuple(self._epochs)

    def begin_epoch(self, epoch: str) -> None:
        """Start a new epoch: after a fallback to an older generation the sequence may repeat numbers a
        lost newer generation already used; under a new epoch they make new client ids."""
        epoch = _epoch(epoch)
        if epoch in self._epochs:
            raise LocalStateError(f"{self.strategy}: epoch {epoch!r} was used before")
        self._epochs.append(epoch)

    def next_sequence(self) -> int:
        """The next client-order-id sequence number (1, 2, ...); persisted, never handed out twice."""
        self._sequence += 1
        return self._sequence

    def on_order_event(
        self, client_order_id: str, event: OrderEvent, now_ms: int, exchange_order_id: str | None = None
    ) -> LedgerOrder:
        """Move an order through the transition table (fills go through :meth:`apply_fill`).

        Raises LocalStateError for an unknown order or an illegal transition, RemoteStateError when the
        exchange contradicts itself (the order is left unchanged).
        """
        if event in _FILL_EVENTS:
            raise LocalStateError(f"{event} changes the filled amount: use apply_fill()")
        order = self._require(client_order_id)
        state = transition(order.state, event)
        exchange_id = _merge_exchange_id(order, exchange_order_id)
        updated = replace(order, state=state, exchange_order_id=exchange_id, updated_ms=now_ms)
        self._put(updated)
        return updated

    def apply_fill(self, fill: Fill) -> bool:
        """Account one fill; False if its trade id was applied before (stream and REST both deliver fills).

        A fill for an order this ledger does not know (never recorded, or dropped from the history) or
        one that contradicts its order raises RemoteStateError and changes nothing. A fill beyond the
        order's amount (possible after a force correction of ``filled``) is still accounted -- the trade
        happened -- but ``filled`` stays capped at the amount and a warning is logged.
        """
        if fill.trade_id in self._seen:
            return False
        order = self.order(fill.client_order_id)
        if order is None:
            raise RemoteStateError(f"{self.strategy}: fill {fill.trade_id} for unknown order {fill.client_order_id}")
        self._check_fill(order, fill)
        filled = order.filled + fill.amount
        event = OrderEvent.FULL_FILL if filled >= order.amount else OrderEvent.PARTIAL_FILL
        state = transition(order.state, event)
        exchange_id = _merge_exchange_id(order, fill.exchange_order_id)
        if filled > order.amount:
            self._warn_overfill(order, fill)
        self._account(fill)
        self._seen.add(fill.trade_id)
        updated_ms = max(order.updated_ms, fill.timestamp_ms)
        self._put(
            replace(
                order,
                filled=min(filled, order.amount),
                state=state,
                exchange_order_id=exchange_id,
                updated_ms=updated_ms,
            )
        )
        return True

    # ------------------------------------------------------------------ force corrections (reconciliation)

    def set_order_state(
        self, client_order_id: str, state: OrderState, filled: Decimal, *, now_ms: int
    ) -> tuple[LedgerOrder, LedgerOrder]:
        """Overwrite an order's state and filled amount with the exchange's; money is not touched."""
        before = self._require(client_order_id)
        filled = _finite(filled, "filled")
        if not _ZERO <= filled <= before.amount:
            raise LocalStateError(f"{client_order_id}: filled {filled} outside 0..{before.amount}")
        after = replace(before, state=state, filled=filled, updated_ms=now_ms)
        self._put(after)
        return before, after

    def set_holdings(self, amount: Decimal) -> tuple[Decimal, Decimal]:
        """Overwrite the base holdings; the average entry price is kept (unknown -> a zero cost basis)."""
        before, amount = self._holdings, _finite(amount, "holdings")
        with localcontext(MONEY):
            if before > 0 and amount > 0:
                self._cost_basis = (self._cost_basis * amount / before).quantize(_BASIS_QUANTUM)
            else:
                self._cost_basis = _ZERO
        self._holdings = amount
        return before, amount

    def set_capital(self, amount: Decimal) -> tuple[Decimal, Decimal]:
        """Overwrite the strategy's quote capital."""
        before, self._capital = self._capital, _finite(amount, "capital")
        return before, self._capital

    def adopt_order(self, order: ExchangeOrder, now_ms: int) -> tuple[None, LedgerOrder]:
        """Take over an order of ours that the exchange has and the ledger lost; money is not touched.

        ``filled`` starts at 0, not at the exchange's figure: it counts the fills this ledger applied, so
        the order's missed fills (which reconciliation applies next) bring it up together with the money.
        Starting from the exchange's figure would count those fills twice and could call an open order
        FILLED; any difference that remains is settled by the next reconciliation pass.
        """
        if order.symbol != self.symbol:
            raise LocalStateError(f"{self.strategy}: cannot adopt {order.client_order_id} on {order.symbol}")
        if self.order(order.client_order_id) is not None:
            raise LocalStateError(f"{self.strategy}: {order.client_order_id} is known: use set_order_state()")
        adopted = LedgerOrder.unfilled(
            order,
            state_for_status(order.status),
            now_ms,
            exchange_order_id=order.exchange_order_id,
            created_ms=order.timestamp_ms,
            tag="adopted",
        )
        self._bump_sequence(adopted.client_order_id)
        self._put(adopted)
        return None, adopted

    def mark_reconciled(self, trade_id: str | None) -> bool:
        """Advance the reconciliation cursor: every trade up to ``trade_id`` has been compared and applied.

        The REST catch-up starts after this cursor, not after the highest *applied* trade: the stream
        may deliver a later fill while losing an earlier one, and that earlier one must still be fetched.
        """
        number = None if trade_id is None else trade_number(trade_id)
        current = None if self._reconciled is None else trade_number(self._reconciled)
        if number is None or (current is not None and number <= current):
            return False
        self._reconciled = trade_id
        return True

    # ------------------------------------------------------------------ reading

    def has_applied(self, trade_id: str) -> bool:
        """True if a fill with this trade id counts as applied (see :class:`SeenTradeIds` for the bound)."""
        return trade_id in self._seen

    def order(self, client_order_id: str) -> LedgerOrder | None:
        """The order with this client id, open or in the recent history, or None."""
        return self._open.get(client_order_id) or self._history.get(client_order_id)

    def history(self) -> tuple[LedgerOrder, ...]:
        """The most recent terminal orders, oldest first (at most ``history_limit``)."""
        return tuple(self._history.values())

    def snapshot(self) -> LedgerSnapshot:
        """A consistent read-only view of the ledger."""
        with localcontext(MONEY):
            reserved = sum(
                (o.price * o.remaining for o in self._open.values() if o.side is Side.BUY and o.price is not None),
                _ZERO,
            )
            avg = self._cost_basis / self._holdings if self._holdings > 0 else None
        return LedgerSnapshot(
            strategy=self.strategy,
            symbol=self.symbol,
            base=self.base,
            quote=self.quote,
            capital=self._capital,
            holdings=self._holdings,
            reserved_quote=reserved,
            open_orders=tuple(sorted(self._open.values(), key=lambda o: (o.created_ms, o.client_order_id))),
            last_trade_id=self._seen.last,
            realized_pnl=self._realized,
            fees_paid=self._fees,
            seen_trade_ids=len(self._seen),
            cost_basis=self._cost_basis,
            avg_entry_price=avg,
            other_fees=tuple(sorted(self._other_fees.items())),
            sequence=self._sequence,
            reconciled_trade_id=self._reconciled,
            epochs=tuple(self._epochs),
            created_ms=self.created_ms,
        )

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """The complete ledger as JSON-shaped data (Decimals kept exact by the state codec)."""
        return record.encode(self.to_record())

    def to_record(self) -> LedgerRecord:
        """The complete ledger as its persisted record."""
        return LedgerRecord(
            strategy=self.strategy,
            symbol=self.symbol,
            capital=self._capital,
            holdings=self._holdings,
            cost_basis=self._cost_basis,
            realized_pnl=self._realized,
            fees_paid=self._fees,
            other_fees=dict(self._other_fees),
            sequence=self._sequence,
            open_orders=tuple(self._open.values()),
            history=tuple(self._history.values()),
            seen_trades=self._seen.to_record(),
            reconciled_trade_id=self._reconciled,
            epochs=tuple(self._epochs),
            created_ms=self.created_ms,
        )

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        seen_limit: int = SEEN_TRADE_IDS_LIMIT,
        history_limit: int = HISTORY_LIMIT,
    ) -> StrategyLedger:
        """Rebuild a ledger from :meth:`to_state` output; malformed state is a LocalStateError (our writer).

        Books from before a field existed load with its default: no reconciliation cursor, the one epoch
        ``""``, and books that began with their oldest order.
        """
        rec = record.decode(LedgerRecord, state, where="ledger")
        try:
            ledger = cls(rec.strategy, rec.symbol, rec.capital, seen_limit=seen_limit, history_limit=history_limit)
        except ValueError as exc:  # a symbol that is not BASE/QUOTE
            raise LocalStateError(f"ledger state: {exc}") from None
        ledger._holdings, ledger._cost_basis = rec.holdings, rec.cost_basis
        ledger._realized, ledger._fees = rec.realized_pnl, rec.fees_paid
        ledger._other_fees = dict(rec.other_fees)
        ledger._sequence = rec.sequence
        for order in (*rec.open_orders, *rec.history):
            ledger._put(order)
        ledger._seen = SeenTradeIds.from_record(rec.seen_trades, seen_limit)
        ledger._reconciled = rec.reconciled_trade_id
        ledger._epochs = [_epoch(e) for e in rec.epochs] or [""]
        known = [o.created_ms for o in (*ledger._open.values(), *ledger._history.values())]
        ledger.created_ms = rec.created_ms if "created_ms" in state else min(known, default=0)
        return ledger

    # ------------------------------------------------------------------ internals

    def _put(self, order: LedgerOrder) -> None:
        """Store an order where it belongs: open orders, or the bounded history once terminal."""
        cid = order.client_order_id
        if not is_terminal(order.state):
            self._history.pop(cid, None)
            self._open[cid] = order
            return
        self._open.pop(cid, None)
        self._history[cid] = order
        while len(self._history) > self._history_limit:
            del self._history[next(iter(self._history))]

    def _require(self, client_order_id: str) -> LedgerOrder:
        order = self.order(client_order_id)
        if order is None:
            raise LocalStateError(f"{self.strategy}: no order with client id {client_order_id}")
        return order

    def _bump_sequence(self, client_order_id: str) -> None:
        """Never hand out a sequence number an order we know already carries."""
        parsed = parse_client_order_id(client_order_id)
        if parsed is not None and parsed[1] > self._sequence:
            self._sequence = parsed[1]

    def _check_request(self, req: OrderRequest) -> None:
        if req.symbol != self.symbol:
            raise LocalStateError(f"{self.strategy} trades {self.symbol}, not {req.symbol}")
        if not BINANCE_CLIENT_ID_RE.fullmatch(req.client_order_id):
            raise LocalStateError(f"invalid client order id {req.client_order_id!r}")
        if not _positive(req.amount):
            raise LocalStateError(f"{req.client_order_id}: amount must be positive, got {req.amount}")
        if (req.type is OrderType.LIMIT or req.price is not None) and not _positive(req.price):
            raise LocalStateError(f"{req.client_order_id}: price must be positive, got {req.price}")

    def _check_fill(self, order: LedgerOrder, fill: Fill) -> None:
        why = None
        if fill.symbol != order.symbol or fill.side != order.side:
            why = f"is a {fill.side} on {fill.symbol}, the order a {order.side} on {order.symbol}"
        elif not (_positive(fill.price) and _positive(fill.amount)):
            why = f"has price {fill.price} and amount {fill.amount}"
        elif not (isinstance(fill.fee, Decimal) and fill.fee.is_finite() and fill.fee >= 0):
            why = f"has fee {fill.fee}"
        if why is not None:
            raise RemoteStateError(f"fill {fill.trade_id} of {order.client_order_id} {why}")

    def _account(self, fill: Fill) -> None:
        """Move money for one fill (see the module docstring)."""
        with localcontext(MONEY):
            quote_fee = fill.fee if fill.fee_asset == self.quote else _ZERO
            base_fee = fill.fee if fill.fee_asset == self.base else _ZERO
            if fill.fee_asset not in (self.base, self.quote):
                self._other_fees[fill.fee_asset] = self._other_fees.get(fill.fee_asset, _ZERO) + fill.fee
            self._fees += quote_fee + base_fee * fill.price
            if fill.side is Side.BUY:
                self._capital -= fill.cost + quote_fee
                self._holdings += fill.amount - base_fee
                self._cost_basis += fill.cost + quote_fee
            else:
                units, proceeds = fill.amount + base_fee, fill.cost - quote_fee
                released = self._release_basis(units)
                self._capital += proceeds
                self._holdings -= units
                self._realized += proceeds - released

    def _release_basis(self, units: Decimal) -> Decimal:
        """Take the cost basis of ``units`` leaving the position out of it (all of it if they are all)."""
        if units >= self._holdings:
            released = self._cost_basis
        else:
            share = (self._cost_basis * units / self._holdings).quantize(_BASIS_QUANTUM)
            released = min(share, self._cost_basis)
        self._cost_basis -= released
        return released

    def _warn_overfill(self, order: LedgerOrder, fill: Fill) -> None:
        log.warning(
            "fill %s takes %s beyond its amount %s (filled %s); accounted, filled capped",
            fill.trade_id,
            order.client_order_id,
            order.amount,
            order.filled,
            extra={
                "EVENT": "FILL_BEYOND_AMOUNT",
                "STRATEGY": self.strategy,
                "SYMBOL": self.symbol,
                "ORDER_ID": order.client_order_id,
            },
        )


# ---------------------------------------------------------------------- helpers


def _epoch(epoch: str) -> str:
    if not EPOCH_RE.fullmatch(epoch):
        raise LocalStateError(f"ledger: an epoch is six hex digits, got {epoch!r}")
    return epoch


def _positive(value: Decimal | None) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value > 0


def _finite(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{what} must be a finite Decimal, got {value!r}")
    return value


def _merge_exchange_id(order: LedgerOrder, exchange_order_id: str | None) -> str | None:
    """The order's exchange id after learning ``exchange_order_id``; a different one is a contradiction."""
    new = exchange_order_id or None  # adapters may say "" for "not known"
    if new is None or order.exchange_order_id in (None, new):
        return new or order.exchange_order_id
    raise RemoteStateError(f"{order.client_order_id}: exchange order id {new} differs from {order.exchange_order_id}")


def _canonical_int(text: str, key: str) -> int:
    number = trade_number(text)
    if number is None:
        raise LocalStateError(f"ledger state: seen_trades.{key}: {text!r} is not an integer trade id")
    return number
