"""What the page shows of one instance, and how each event from its ``subscribe`` stream changes it.

Pure (no I/O, no clock: times come with the events): the server keeps one :class:`InstanceView` per
instance, applies every event line to it, and sends the browsers the small updates :meth:`apply`
returns; a browser that connects later gets :meth:`InstanceView.to_doc`, the same state in one piece.
So the browser never has to reduce the daemon's events itself, and the reducer is tested here.

Money stays exact: amounts arrive as JSON strings, are computed on as Decimal (equity = capital +
holdings * last price) and leave as strings; only the page turns them into pixels. Histories are
bounded (points at most one a second per series, the newest replacing the last within a second).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["FILLS_KEPT", "POINTS_KEPT", "InstanceView", "equity_of"]

POINTS_KEPT = 900  # per series: 15 minutes at one point a second
FILLS_KEPT = 200
POINT_EVERY_MS = 1000

Update = dict[str, Any]


def _dec(value: Any) -> Decimal | None:
    """A Decimal from a wire value (string or number); None if there is none or it is not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def equity_of(strategy: Mapping[str, Any]) -> Decimal | None:
    """capital + holdings at the last price (the metrics' definition); capital alone without a price."""
    capital, holdings, price = (_dec(strategy.get(k)) for k in ("capital", "holdings", "last_price"))
    if capital is None:
        return None
    if holdings is None or price is None:
        return capital
    return capital + holdings * price


class _Series:
    """A bounded time series of string values: at most one point per POINT_EVERY_MS (a newer one replaces it)."""

    def __init__(self) -> None:
        self.points: deque[list[Any]] = deque(maxlen=POINTS_KEPT)
        self._opened_ms = 0  # when the last point's second began: later points within it replace it

    def add(self, t_ms: int, *values: str) -> bool:
        """Add a point; True if it replaced the last one (same second) instead of appending."""
        if self.points and t_ms < self.points[-1][0]:
            return True  # older than what we have: keep the newer point (reported as a replace of it)
        if self.points and t_ms - self._opened_ms < POINT_EVERY_MS:
            self.points[-1] = [t_ms, *values]
            return True
        self.points.append([t_ms, *values])
        self._opened_ms = t_ms
        return False


class InstanceView:
    """One instance (one control socket): its link, last status, strategies, fills, histories, receipt."""

    def __init__(self, instance_id: str, socket: str) -> None:
        self.id, self.socket = instance_id, socket
        self.link: dict[str, Any] = {"state": "connecting", "error": "", "since_ms": None, "retry_in_s": None}
        self.status: dict[str, Any] | None = None
        self.strategies: dict[str, dict[str, Any]] = {}
        self.fills: deque[dict[str, Any]] = deque(maxlen=FILLS_KEPT)
        self._fill_keys: set[tuple[str, str]] = set()
        self.equity: dict[str, _Series] = {}
        self.prices: dict[str, _Series] = {}
        self.receipt: dict[str, Any] | None = None

    # -- the link (the server's, not the daemon's) --

    def set_link(self, state: str, now_ms: int, error: str = "", retry_in_s: float | None = None) -> list[Update]:
        self.link = {"state": state, "error": error, "since_ms": now_ms, "retry_in_s": retry_in_s}
        return [self._update("link", link=self.link)]

    # -- events --

    def apply(self, doc: Mapping[str, Any]) -> list[Update]:
        """The updates one event line causes (none for an event the page does not show)."""
        handler = _HANDLERS.get(str(doc.get("event")))
        return handler(self, doc) if handler is not None else []

    def _on_status(self, doc: Mapping[str, Any]) -> list[Update]:
        status = dict(doc["status"])
        receipts = status.pop("receipts", None) or []
        if receipts:
            self.receipt = dict(receipts[0])  # newest first
        self.status = status
        t = int(doc["at_ms"])
        out = [self._update("status", status=status, receipt=self.receipt)]
        for s in status.get("strategies") or []:
            self.strategies[str(s["name"])] = dict(s)
            out += self._points(t, s)
        return out

    def _on_ledger(self, doc: Mapping[str, Any]) -> list[Update]:
        s = doc.get("status")
        if not isinstance(s, Mapping):
            return []
        self.strategies[str(s["name"])] = dict(s)
        return [self._update("strategy", strategy=dict(s)), *self._points(int(doc["at_ms"]), s)]

    def _on_fill(self, doc: Mapping[str, Any]) -> list[Update]:
        fill = {**doc["fill"], "strategy": doc.get("strategy")}
        key = (str(fill["symbol"]), str(fill["trade_id"]))
        if key in self._fill_keys:
            return []  # the stream and a snapshot both told us, or a re-dial did
        if len(self.fills) == self.fills.maxlen:
            old = self.fills[0]
            self._fill_keys.discard((str(old["symbol"]), str(old["trade_id"])))
        self.fills.append(fill)
        self._fill_keys.add(key)
        return [self._update("fill", fill=fill)]

    def _on_price(self, doc: Mapping[str, Any]) -> list[Update]:
        price = _dec(doc.get("price"))
        if price is None:
            return []
        return self._price_point(str(doc["symbol"]), int(doc["at_ms"]), price)

    def _on_breaker(self, doc: Mapping[str, Any]) -> list[Update]:
        breaker = doc.get("breaker")
        if not isinstance(breaker, Mapping):
            return []
        if self.status is not None:
            self.status["breaker"] = dict(breaker)
        return [self._update("breaker", breaker=dict(breaker), event=str(doc["event"]))]

    def _on_receipt(self, doc: Mapping[str, Any]) -> list[Update]:
        receipt = doc.get("receipt")
        if not isinstance(receipt, Mapping):
            return []
        self.receipt = dict(receipt)
        return [self._update("receipt", receipt=self.receipt)]

    def _on_order(self, doc: Mapping[str, Any]) -> list[Update]:
        return [self._update("order", order=dict(doc["order"]), strategy=doc.get("strategy"))]

    # -- histories --

    def _points(self, t_ms: int, s: Mapping[str, Any]) -> list[Update]:
        name, equity, pnl = str(s["name"]), equity_of(s), _dec(s.get("realized_pnl"))
        out = []
        if equity is not None and pnl is not None:
            series = self.equity.setdefault(name, _Series())
            replace = series.add(t_ms, str(equity), str(pnl))
            out.append(self._update("equity", strategy=name, point=series.points[-1], replace=replace))
        price = _dec(s.get("last_price"))
        if price is not None and s.get("symbol"):
            out += self._price_point(str(s["symbol"]), t_ms, price)
        return out

    def _price_point(self, symbol: str, t_ms: int, price: Decimal) -> list[Update]:
        series = self.prices.setdefault(symbol, _Series())
        replace = series.add(t_ms, str(price))
        return [self._update("price", symbol=symbol, point=series.points[-1], replace=replace)]

    def _update(self, kind: str, **fields: Any) -> Update:
        return {"type": kind, "instance": self.id, **fields}

    def to_doc(self) -> dict[str, Any]:
        """Everything, for a browser that has just connected."""
        return {
            "id": self.id,
            "socket": self.socket,
            "link": self.link,
            "status": self.status,
            "strategies": self.strategies,
            "fills": list(self.fills),
            "equity": {k: list(v.points) for k, v in self.equity.items()},
            "prices": {k: list(v.points) for k, v in self.prices.items()},
            "receipt": self.receipt,
        }


_HANDLERS = {
    "STATUS": InstanceView._on_status,
    "LEDGER_STATE_CHANGED": InstanceView._on_ledger,
    "TRADE_EXECUTED": InstanceView._on_fill,
    "MARKET_DATA": InstanceView._on_price,
    "HALT_NEW_SIGNALS": InstanceView._on_breaker,
    "RESUME_SIGNALS": InstanceView._on_breaker,
    "EXECUTE_EMERGENCY_EXIT": InstanceView._on_breaker,
    "RECONCILIATION_COMPLETED": InstanceView._on_receipt,
    "ORDER_UPDATED": InstanceView._on_order,
}
