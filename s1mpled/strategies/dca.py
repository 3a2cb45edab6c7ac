"""Dollar-cost averaging: buy a fixed quote amount on every scheduled event, optionally take profit.

The point of DCA is discipline, so the dangerous failures are buying twice for one event and forgetting
what was paid. Both are handled with state that survives a restart: the tag of the order in flight (no
second order while one is open *or unresolved*, whether memory or the view says so), the time of the
last event acted on (a re-delivered event is ignored), and exact Decimal totals for the average entry.

A *cycle* runs from the first buy to a take-profit sale; ``max_buys`` caps the buys of one cycle. At most
one DCA order is in flight at a time, so a take-profit sale never races a buy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from s1mpled.model import OrderType, Side
from s1mpled.strategies.base import (
    FillView,
    Params,
    PlaceOrder,
    Signal,
    StateReader,
    Strategy,
    StrategyView,
)

__all__ = ["DCA"]

log = logging.getLogger("s1mpled.strategies.dca")

_STATE_VERSION = 1
_BUY, _TAKE_PROFIT = "buy", "tp"


def _parse_tag(tag: str) -> tuple[str, int] | None:
    """``"dca:buy:7"`` -> ``("buy", 7)``; None for a tag DCA did not write."""
    parts = tag.split(":")
    if len(parts) != 3 or parts[0] != "dca" or parts[1] not in (_BUY, _TAKE_PROFIT) or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


class DCA(Strategy):
    """Market-buy ``quote_per_buy`` worth on each ``every_event``; sell everything at ``take_profit``.

    Parameters: ``quote_per_buy`` (Decimal > 0), ``every_event`` (default ``"strategy_tick"``),
    ``max_buys`` (buys per cycle, default unlimited), ``take_profit`` (fraction above the average entry,
    e.g. ``"0.03"``; default off). Averages are gross of fees (fees are the ledger's business).
    """

    kind = "dca"

    def __init__(self, name: str, symbol: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, symbol, params)
        p = Params(params)
        self.quote_per_buy = p.required_decimal("quote_per_buy", above=Decimal(0))
        self.every_event = p.string("every_event", "strategy_tick")
        self.max_buys = p.integer("max_buys", None, low=1)
        self.take_profit = p.decimal("take_profit", None, above=Decimal(0))
        p.finish()
        self.buys_done = 0  # buys (orders with a fill) over the strategy's life; numbers the buy tags
        self.cycle_buys = 0  # buys since the last take-profit sale
        self.total_bought = Decimal(0)  # base bought in this cycle (less partial take-profit sales)
        self.total_cost = Decimal(0)  # quote paid for total_bought
        self.last_buy_ms: int | None = None
        self.last_event_ms: int | None = None
        self.tp_sells_done = 0
        self.pending: str | None = None  # tag of the order signalled and not yet known finished

    @property
    def avg_entry(self) -> Decimal | None:
        """Average price paid for the base bought in this cycle."""
        return self.total_cost / self.total_bought if self.total_bought > 0 else None

    # -- hooks -----------------------------------------------------------------------------------

    def on_start(self, view: StrategyView) -> list[Signal]:
        """The view is reconciled now: an order remembered as in flight but absent is settled."""
        if self.pending is not None and not any(o.tag == self.pending for o in view.open_orders):
            self.pending = None
        return self._maybe_take_profit(view)

    def on_tick(self, view: StrategyView) -> list[Signal]:
        return self._maybe_take_profit(view)

    def waits_for(self) -> tuple[str, ...]:
        return (self.every_event,)

    def on_event(self, event_name: str, view: StrategyView) -> list[Signal]:
        if event_name != self.every_event:
            return []
        if self.last_event_ms is not None and view.now_ms <= self.last_event_ms:
            return []  # this occurrence (or an older one) was already handled
        self.last_event_ms = view.now_ms
        return self._maybe_buy(view)

    def on_fill(self, fill: FillView, view: StrategyView) -> list[Signal]:
        parsed = _parse_tag(fill.tag)
        if parsed is None:
            return []
        kind, number = parsed
        if kind == _BUY:
            self._record_buy(number, fill, view.now_ms)
        else:
            self._record_take_profit(number, fill)
        if fill.order_complete and fill.tag == self.pending:
            self.pending = None
        return []

    def on_order_closed(self, client_order_id: str, tag: str, state: str, view: StrategyView) -> list[Signal]:
        if tag == self.pending:
            self.pending = None  # the next event (or tick, for take-profit) tries again
        return []

    # -- decisions -------------------------------------------------------------------------------

    def _busy(self, view: StrategyView) -> bool:
        return self.pending is not None or bool(view.orders_tagged("dca:"))

    def _maybe_buy(self, view: StrategyView) -> list[Signal]:
        price = view.last_price
        if view.halted or self._busy(view) or price is None or price <= 0:
            return []
        if self.max_buys is not None and self.cycle_buys >= self.max_buys:
            return []
        if view.capital < self.quote_per_buy:
            return []
        amount = view.rules.amount_down(self.quote_per_buy / price)
        if amount <= 0 or amount < view.rules.min_amount:
            return []
        self.pending = f"dca:{_BUY}:{self.buys_done + 1}"
        return [PlaceOrder(Side.BUY, OrderType.MARKET, amount, tag=self.pending)]

    def _maybe_take_profit(self, view: StrategyView) -> list[Signal]:
        """A reducing sell, so it is allowed while halted."""
        avg, price = self.avg_entry, view.last_price
        if self.take_profit is None or avg is None or price is None or self._busy(view):
            return []
        if price < avg * (1 + self.take_profit):
            return []
        amount = view.rules.amount_down(view.holdings)
        if amount <= 0 or amount < view.rules.min_amount:
            return []
        self.pending = f"dca:{_TAKE_PROFIT}:{self.tp_sells_done + 1}"
        log.info(
            "take profit: price %s >= average entry %s * (1 + %s), selling %s",
            price,
            avg,
            self.take_profit,
            amount,
            extra={"EVENT": "TAKE_PROFIT", "STRATEGY": self.name, "SYMBOL": self.symbol},
        )
        return [PlaceOrder(Side.SELL, OrderType.MARKET, amount, tag=self.pending)]

    def _record_buy(self, number: int, fill: FillView, now_ms: int) -> None:
        if number > self.buys_done:  # the first fill of a new buy order
            self.buys_done = number
            self.cycle_buys += 1
        self.total_bought += fill.amount
        self.total_cost += fill.price * fill.amount
        self.last_buy_ms = now_ms

    def _record_take_profit(self, number: int, fill: FillView) -> None:
        avg = self.avg_entry
        sold = min(fill.amount, self.total_bought)
        if avg is not None:
            self.total_cost -= avg * sold  # the average entry of what is left does not change
            self.total_bought -= sold
        if fill.order_complete:
            self.tp_sells_done = max(self.tp_sells_done, number)
            self.total_bought = self.total_cost = Decimal(0)
            self.cycle_buys = 0

    # -- state -----------------------------------------------------------------------------------

    def state_snapshot(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "buys_done": self.buys_done,
            "cycle_buys": self.cycle_buys,
            "total_bought": self.total_bought,
            "total_cost": self.total_cost,
            "avg_entry": self.avg_entry,  # derived; stored for operators reading the state
            "last_buy_ms": self.last_buy_ms,
            "last_event_ms": self.last_event_ms,
            "tp_sells_done": self.tp_sells_done,
            "pending": self.pending,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        r = StateReader(state)
        if r.integer("version") != _STATE_VERSION:
            raise ValueError(f"state.version: this DCA reads version {_STATE_VERSION}, got {state['version']}")
        pending = r.optional_string("pending")
        if pending is not None and _parse_tag(pending) is None:
            raise ValueError(f"state.pending: not a DCA order tag: {pending!r}")
        self.buys_done, self.cycle_buys = r.integer("buys_done"), r.integer("cycle_buys")
        self.total_bought, self.total_cost = r.decimal("total_bought"), r.decimal("total_cost")
        self.last_buy_ms, self.last_event_ms = r.optional_integer("last_buy_ms"), r.optional_integer("last_event_ms")
        self.tp_sells_done = r.integer("tp_sells_done")
        self.pending = pending
