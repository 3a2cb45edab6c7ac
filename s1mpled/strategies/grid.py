"""A symmetric buy grid below an anchor price: buy a level, sell it one spacing higher, repeat.

Level ``i`` (1..levels) buys ``order_quote`` worth at ``anchor * (1 - spacing * i)``; when that buy has
filled completely the level sells the bought amount at ``buy_price * (1 + spacing)``, and when the sell
has filled the level buys again. Each level is a two-phase cycle (``buy`` -> ``sell`` -> ``buy``) and
its orders are tagged ``grid:buy:<i>`` / ``grid:sell:<i>`` so fills, closures and a restarted grid
recognise them.

The hazard of a grid is duplicates: fifty levels, each re-placed after every fill, across crashes. So a
level places an order only when its own memory says none is out (``active`` is false) *and* the view
shows no order tagged for that level, open or unresolved. Memory covers signals the view does not show
yet; the view covers orders memory forgot. ``on_start`` (a reconciled view) is the one place where an
order remembered but absent from the view is taken as gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from s1mpled.model import OrderType, Side
from s1mpled.strategies.base import (
    CancelOrder,
    FillView,
    MarketRules,
    OpenOrderView,
    Params,
    PlaceOrder,
    Signal,
    StateReader,
    Strategy,
    StrategyView,
)

__all__ = ["Grid"]

log = logging.getLogger("s1mpled.strategies.grid")

_STATE_VERSION = 1
_BUY, _SELL = "buy", "sell"
_REJECT_BACKOFF_MS = 1_000  # a rejected level waits 1 s, 2 s, 4 s ... before it tries again
_REJECT_BACKOFF_MAX_MS = 300_000
_ZERO = Decimal(0)


def _parse_tag(tag: str) -> tuple[str, int] | None:
    """``"grid:sell:3"`` -> ``("sell", 3)``; None for a tag the grid did not write."""
    parts = tag.split(":")
    if len(parts) != 3 or parts[0] != "grid" or parts[1] not in (_BUY, _SELL) or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


@dataclass(slots=True)
class _Level:
    """The grid's memory of one level (mutable on purpose: it is the strategy's own state)."""

    phase: str = _BUY  # the order this level needs next
    active: bool = False  # an order for ``phase`` was signalled and is not known to be finished
    order_id: str | None = None  # its client order id, once a view has shown it
    price: Decimal | None = None  # the buy price of the current cycle; the sell price derives from it
    bought: Decimal = field(default=_ZERO)
    cost: Decimal = field(default=_ZERO)
    sold: Decimal = field(default=_ZERO)
    rejects: int = 0  # consecutive rejections, for the retry backoff
    retry_at_ms: int = 0

    @property
    def idle(self) -> bool:
        return self.phase == _BUY and not self.active and self.bought == 0

    def reset(self) -> None:
        self.phase, self.active, self.order_id, self.price = _BUY, False, None, None
        self.bought = self.cost = self.sold = _ZERO

    def gone(self) -> None:
        """The level's order ended without completing: a partly bought level now has something to sell."""
        self.active, self.order_id = False, None
        if self.phase == _BUY and self.bought > 0:
            self.phase = _SELL

    def to_state(self, level: int) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "active": self.active,
            "expected_tag": f"grid:{self.phase}:{level}" if self.active else None,
            "order_id": self.order_id,
            "price": self.price,
            "bought": self.bought,
            "cost": self.cost,
            "sold": self.sold,
            "rejects": self.rejects,
            "retry_at_ms": self.retry_at_ms,
        }

    @classmethod
    def from_state(cls, r: StateReader) -> _Level:
        phase = r.string("phase")
        if phase not in (_BUY, _SELL):
            raise ValueError(f"phase: expected buy or sell, got {phase!r}")
        return cls(
            phase=phase,
            active=r.boolean("active"),
            order_id=r.optional_string("order_id"),
            price=r.optional_decimal("price"),
            bought=r.decimal("bought"),
            cost=r.decimal("cost"),
            sold=r.decimal("sold"),
            rejects=r.integer("rejects"),
            retry_at_ms=r.integer("retry_at_ms"),
        )


class Grid(Strategy):
    """Limit buys at ``levels`` prices below ``anchor``, each sold ``spacing`` higher once filled.

    Parameters: ``levels`` (1..50), ``spacing`` (fraction, e.g. ``"0.004"``; levels * spacing < 1),
    ``order_quote`` (quote per level), ``anchor`` (optional; default the first price seen, then kept in
    the state). An explicit ``anchor`` always wins over the saved one. Buys are placed nearest the anchor
    first, as far as ``view.capital`` allows; sells (which only reduce holdings) are placed even while
    halted. ``realized_profit`` is gross of fees.
    """

    kind = "grid"

    def __init__(self, name: str, symbol: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, symbol, params)
        p = Params(params)
        self.levels = p.required_integer("levels", low=1, high=50)
        self.spacing = p.required_decimal("spacing", above=_ZERO, below=Decimal(1) / self.levels)
        self.order_quote = p.required_decimal("order_quote", above=_ZERO)
        self.fixed_anchor = p.decimal("anchor", None, above=_ZERO)
        p.finish()
        self.anchor = self.fixed_anchor
        self.round_trips = 0
        self.realized_profit = _ZERO
        self._levels = {i: _Level() for i in range(1, self.levels + 1)}
        self._warned: set[int] = set()  # levels already warned about missing holdings (not state)

    # -- hooks -----------------------------------------------------------------------------------

    def on_start(self, view: StrategyView) -> list[Signal]:
        """The view is reconciled: settle remembered orders, cancel buys of retired levels, place."""
        present = {key for o in view.open_orders if (key := _parse_tag(o.tag)) is not None}
        for i, lvl in self._levels.items():
            if lvl.active and (lvl.phase, i) not in present:
                lvl.gone()
        self._observe(view.open_orders)
        cancels: list[Signal] = [
            CancelOrder(o.client_order_id)
            for o in view.open_orders
            if (key := _parse_tag(o.tag)) and key[0] == _BUY and key[1] > self.levels and not o.unresolved
        ]
        return cancels + self._place(view)

    def on_tick(self, view: StrategyView) -> list[Signal]:
        self._observe(view.open_orders)
        return self._place(view)

    def on_fill(self, fill: FillView, view: StrategyView) -> list[Signal]:
        parsed = _parse_tag(fill.tag)
        if parsed is None:
            return []
        lvl = self._levels.setdefault(parsed[1], _Level())
        lvl.rejects = 0
        if fill.side == Side.BUY:
            self._record_buy(lvl, fill)
        else:
            self._record_sell(parsed[1], lvl, fill)
        done = {fill.client_order_id} if fill.order_complete else set()
        return self._place(view, exclude=done)

    def on_order_closed(self, client_order_id: str, tag: str, state: str, view: StrategyView) -> list[Signal]:
        """Re-arm the level; it is placed again on the next tick (after a backoff if it was rejected)."""
        parsed = _parse_tag(tag)
        lvl = self._levels.get(parsed[1]) if parsed else None
        if parsed is None or lvl is None or parsed[0] != lvl.phase:
            return []  # not ours, or a stale order of a phase the level has left
        if lvl.order_id is not None and lvl.order_id != client_order_id:
            return []  # not the order this level is waiting for
        lvl.gone()
        if state == "rejected":
            lvl.rejects += 1
            delay = min(_REJECT_BACKOFF_MS << min(lvl.rejects - 1, 20), _REJECT_BACKOFF_MAX_MS)
            lvl.retry_at_ms = view.now_ms + delay
        return []

    # -- bookkeeping -----------------------------------------------------------------------------

    def _observe(self, orders: Iterable[OpenOrderView]) -> None:
        """Adopt the level orders the view shows: memory may be older than the orders (a stale snapshot).

        An order of the other phase is adopted only when memory expects nothing at that level.
        """
        for order in orders:
            parsed = _parse_tag(order.tag)
            lvl = self._levels.get(parsed[1]) if parsed else None
            if parsed is None or lvl is None or (parsed[0] != lvl.phase and lvl.active):
                continue
            lvl.phase, lvl.active, lvl.order_id = parsed[0], True, order.client_order_id
            if parsed[0] == _BUY and lvl.price is None:
                lvl.price = order.price

    def _record_buy(self, lvl: _Level, fill: FillView) -> None:
        lvl.bought += fill.amount
        lvl.cost += fill.price * fill.amount
        if fill.order_complete and lvl.phase == _BUY:
            lvl.phase, lvl.active, lvl.order_id = _SELL, False, None

    def _record_sell(self, level: int, lvl: _Level, fill: FillView) -> None:
        if lvl.bought > 0:
            self.realized_profit += (fill.price - lvl.cost / lvl.bought) * fill.amount
        lvl.sold += fill.amount
        if fill.order_complete and lvl.phase == _SELL:
            self.round_trips += 1
            lvl.reset()
            if level > self.levels:
                del self._levels[level]  # a level retired by a smaller configuration has finished

    # -- placement -------------------------------------------------------------------------------

    def buy_prices(self, rules: MarketRules) -> dict[int, Decimal]:
        """Level -> buy price: on the price step, positive, strictly falling (colliding levels dropped)."""
        if self.anchor is None:
            return {}
        prices: dict[int, Decimal] = {}
        floor = self.anchor
        for i in range(1, self.levels + 1):
            price = rules.price_down(self.anchor * (1 - self.spacing * i))
            if 0 < price < floor:
                prices[i], floor = price, price
        return prices

    def _place(self, view: StrategyView, exclude: frozenset[str] | set[str] = frozenset()) -> list[Signal]:
        if self.anchor is None:
            if view.last_price is None or view.last_price <= 0:
                return []
            self.anchor = view.last_price
            log.info("grid anchored at %s", self.anchor, extra={"STRATEGY": self.name, "SYMBOL": self.symbol})
        taken = {key[1] for o in view.open_orders if o.client_order_id not in exclude and (key := _parse_tag(o.tag))}
        prices = self.buy_prices(view.rules)
        capital, holdings, can_buy = view.capital, view.holdings, not view.halted
        signals: list[Signal] = []
        for i in sorted(self._levels):
            lvl = self._levels[i]
            if lvl.active or i in taken or view.now_ms < lvl.retry_at_ms:
                continue
            if lvl.phase == _SELL:
                holdings = self._sell(i, lvl, view.rules, holdings, signals)
                continue
            order = self._buy_order(i, prices[i], view.rules) if can_buy and i in prices else None
            if order is None:
                continue
            cost = prices[i] * order.amount
            if cost > capital:
                can_buy = False  # deeper levels wait until capital frees up
                continue
            capital -= cost
            lvl.active, lvl.order_id, lvl.price = True, None, prices[i]
            signals.append(order)
        return signals

    def _buy_order(self, i: int, price: Decimal, rules: MarketRules) -> PlaceOrder | None:
        """Level ``i``'s buy, or None if ``order_quote`` buys less than the market's minimum."""
        amount = rules.amount_down(self.order_quote / price)
        if amount <= 0 or amount < rules.min_amount:
            return None
        return PlaceOrder(Side.BUY, OrderType.LIMIT, amount, price, tag=f"grid:{_BUY}:{i}")

    def _sell(self, i: int, lvl: _Level, rules: MarketRules, holdings: Decimal, out: list[Signal]) -> Decimal:
        """Append level ``i``'s sell (at most what the holdings cover); returns the holdings left."""
        remaining = rules.amount_down(lvl.bought - lvl.sold)
        if remaining <= 0 or remaining < rules.min_amount:
            if lvl.sold > 0:
                self.round_trips += 1  # what is left is dust: the round trip is over
            lvl.reset()
            return holdings
        amount = min(remaining, rules.amount_down(holdings))  # a fee taken in base leaves a little less
        if amount <= 0 or amount < rules.min_amount:
            self._warn_blocked(i, remaining, holdings)
            return holdings
        self._warned.discard(i)
        basis = lvl.price if lvl.price is not None else lvl.cost / lvl.bought  # bought > 0 here
        lvl.active, lvl.order_id = True, None
        price = rules.price_up(basis * (1 + self.spacing))
        out.append(PlaceOrder(Side.SELL, OrderType.LIMIT, amount, price, tag=f"grid:{_SELL}:{i}"))
        return holdings - amount

    def _warn_blocked(self, i: int, remaining: Decimal, holdings: Decimal) -> None:
        if i in self._warned:
            return
        self._warned.add(i)
        log.warning(
            "level %d should sell %s but only %s is free; waiting",
            i,
            remaining,
            holdings,
            extra={"EVENT": "GRID_SELL_BLOCKED", "STRATEGY": self.name, "SYMBOL": self.symbol},
        )

    # -- state -----------------------------------------------------------------------------------

    def state_snapshot(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "anchor": self.anchor,
            "levels_configured": self.levels,
            "spacing": self.spacing,
            "round_trips": self.round_trips,
            "realized_profit": self.realized_profit,
            "levels": {str(i): lvl.to_state(i) for i, lvl in sorted(self._levels.items())},
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        r = StateReader(state)
        if r.integer("version") != _STATE_VERSION:
            raise ValueError(f"state.version: this grid reads version {_STATE_VERSION}, got {state['version']}")
        saved_anchor = r.optional_decimal("anchor")
        round_trips, profit = r.integer("round_trips"), r.decimal("realized_profit")
        records = r.child("levels")
        restored: dict[int, _Level] = {}
        for key in records.keys():  # noqa: SIM118 -- a StateReader, not a dict
            if not key.isdigit() or int(key) < 1:
                raise ValueError(f"state.levels.{key}: not a level number")
            restored[int(key)] = _Level.from_state(records.child(key))
        if self.fixed_anchor is not None and saved_anchor is not None and saved_anchor != self.fixed_anchor:
            log.warning(
                "configured anchor %s replaces the saved anchor %s; open orders keep their prices",
                self.fixed_anchor,
                saved_anchor,
                extra={"STRATEGY": self.name, "SYMBOL": self.symbol},
            )
        self.anchor = self.fixed_anchor if self.fixed_anchor is not None else saved_anchor
        self.round_trips, self.realized_profit = round_trips, profit
        levels = {i: _Level() for i in range(1, self.levels + 1)}
        levels.update({i: lvl for i, lvl in restored.items() if i <= self.levels or not lvl.idle})
        self._levels = levels
