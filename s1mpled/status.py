"""The control socket's commands: ``status``, ``reconcile``, ``halt``, ``resume``, ``subscribe``, ``metrics``.

``status`` answers in every phase (an operator wants to know *why* a daemon is not ready yet: what
the start waits for, since when, the next try); ``halt`` and ``resume`` work as soon as recovery step A
has loaded the breaker (a halt before trading begins keeps the strategies from ever starting to buy);
``reconcile`` needs a trading operation and runs through the daemon's own ReconciliationMonitor -- the
systemd timer uses this, so there is never a second writer of the state.

The commands see the operation through :class:`OperationView`, a narrow read-only Protocol (the
Operation satisfies it; this module does not import s1mpled.operation). Their text for a terminal is
in s1mpled.render.

``subscribe`` streams what happens as JSON lines (the dashboard's feed): fills, order updates, each
ledger change with the strategy's new status, breaker changes, reconciliation receipts, prices (at
most one a second per symbol), and every ``snapshot_every_s`` the whole ``status`` document. One bus
reader, the :class:`Feed`, copies each event into every subscriber's bounded queue without waiting
(s1mpled.control cuts off a subscriber that falls behind), so a subscriber can never slow the
daemon; it only reads, never writes state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from s1mpled import record
from s1mpled.bus import EventBus
from s1mpled.circuit_breaker import BreakerState
from s1mpled.control import EventQueue, Handler, Stream, encode_event
from s1mpled.errors import ControlError
from s1mpled.events import (
    ConnectionLost,
    ConnectionRestored,
    Event,
    ExecuteEmergencyExit,
    HaltNewSignals,
    LedgerStateChanged,
    MarketData,
    OrderUpdated,
    ReconciliationCompleted,
    ResumeSignals,
    TradeExecuted,
)
from s1mpled.failpoints import failpoint
from s1mpled.ledger import LedgerOrder
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, OrderType, Side
from s1mpled.orders import OrderState
from s1mpled.receipts import receipts_doc
from s1mpled.reconciliation import Report
from s1mpled.strategy_worker import StrategyWorker
from s1mpled.workers import MonitorWorker, Subscription, wire

if TYPE_CHECKING:
    from s1mpled.assembly import Components
    from s1mpled.config import Config
    from s1mpled.instruments import Instruments
    from s1mpled.startup import Waiting

__all__ = [
    "BreakerStatus",
    "ControlCommands",
    "CorrectionDoc",
    "Feed",
    "OperationView",
    "OrderDoc",
    "ReconcileReply",
    "StrategyStatus",
]

PRICE_EVERY_MS = 1000  # a subscriber gets at most one price a second per symbol (the snapshot has the last)
SNAPSHOT_EVERY_S = 5.0  # the status snapshot's default period; a subscriber may ask for 0.5 .. 60 s
SNAPSHOT_SHARED_MS = 250  # subscribers whose snapshots fall due this close together share one (built once)


class OperationView(Protocol):
    """What the control commands read of a running operation (they act only through its components)."""

    @property
    def config(self) -> Config: ...

    @property
    def phase(self) -> str: ...

    @property
    def waiting(self) -> Waiting | None: ...

    @property
    def components(self) -> Components | None: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def instruments(self) -> Instruments: ...

    def now_ms(self) -> int: ...

    def steady_status(self) -> str: ...


# The documents below are records (s1mpled.record, JSON dialect: a Decimal as its exact text, an enum as its
# value), in the key order ``status --json`` and the feed have always had: the dashboard reads them.


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderDoc:
    """An order as a client sees it: one of a strategy's open orders in its status (the books' ``state`` and
    ``tag``; the symbol is the strategy's), or an order the exchange reported, in the feed (its ``symbol`` and
    the exchange's ``status``). The keys its source has not are left out."""

    client_order_id: str
    symbol: str | None = field(default=None, metadata=record.OMIT_DEFAULT)
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None  # None: a market order
    filled: Decimal
    state: OrderState | None = field(default=None, metadata=record.OMIT_DEFAULT)
    status: ExchangeOrderStatus | None = field(default=None, metadata=record.OMIT_DEFAULT)
    tag: str | None = field(default=None, metadata=record.OMIT_DEFAULT)

    @classmethod
    def of_books(cls, o: LedgerOrder) -> OrderDoc:
        return cls(client_order_id=o.client_order_id, side=o.side, type=o.type, amount=o.amount, price=o.price,
                   filled=o.filled, state=o.state, tag=o.tag)  # fmt: skip

    @classmethod
    def of_exchange(cls, o: ExchangeOrder) -> OrderDoc:
        return cls(client_order_id=o.client_order_id, symbol=o.symbol, side=o.side, type=o.type, amount=o.amount,
                   price=o.price, filled=o.filled, status=o.status)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StrategyStatus:
    """One strategy in ``status`` (and in the feed's ledger changes): its worker and its books."""

    name: str
    symbol: str
    strategy: str  # the strategy's class name
    trading: bool
    halted: bool
    last_price: Decimal | None
    capital: Decimal
    holdings: Decimal
    base: str
    quote: str
    realized_pnl: Decimal
    fees_paid: Decimal
    state_generation: int
    open_orders: tuple[OrderDoc, ...]

    @classmethod
    def of(cls, w: StrategyWorker) -> StrategyStatus:
        s = w.ledger.snapshot()
        orders = tuple(map(OrderDoc.of_books, s.open_orders))
        return cls(w.name, w.symbol, type(w.strategy).__name__, w.trading, w.halted, w.last_price,
                   s.capital, s.holdings, s.base, s.quote, s.realized_pnl, s.fees_paid,
                   w.state_file.generation, orders)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """The breaker in ``status`` and in the feed's breaker events, with how long the streams have been healthy."""

    state: BreakerState
    reason: str
    manual: bool
    opened_ms: int
    emergency_exit: bool  # the exit's goal is pending
    streams_healthy_for_s: float | None  # None while a stream is not; capped at 1e9 s (paper's are forever)

    @classmethod
    def of(cls, c: Components) -> BreakerStatus:
        b, healthy = c.breaker.breaker, c.env.streams_healthy_for()
        healthy_s = None if healthy is None else round(min(healthy, 1e9), 1)
        return cls(b.state, b.reason, b.manual, b.opened_ms, b.exiting, healthy_s)


@dataclass(frozen=True, slots=True)
class CorrectionDoc:
    strategy: str
    what: str  # the correction as the log describes it


@dataclass(frozen=True, slots=True)
class ReconcileReply:
    """What ``reconcile`` answers: the corrections applied, and what was only reported."""

    corrections: tuple[CorrectionDoc, ...]
    external_orders: tuple[str, ...]  # their client order ids
    external_surplus: dict[str, Decimal]

    @classmethod
    def of(cls, report: Report) -> ReconcileReply:
        corrections = tuple(CorrectionDoc(c.strategy, c.describe()) for c in report.corrections)
        external = tuple(o.client_order_id for o in report.external_orders)
        return cls(corrections, external, dict(report.external_surplus))


def _doc(document: object) -> dict[str, Any]:
    """A document as JSON-shaped data (Decimals as text) for the control socket."""
    return record.encode(document, record.JSON)


class ControlCommands:
    """Binds the control-socket commands to a running operation."""

    def __init__(self, operation: OperationView) -> None:
        """Also subscribes the :class:`Feed` to the operation's bus (Operation.run builds the commands
        before the bus runs, which is when a bus takes subscribers)."""
        self._op = operation
        self.feed = Feed(operation)
        wire(operation.bus, [self.feed])
        self._last_snapshot: tuple[int, bytes | None] = (0, None)

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "status": self.status,
            "reconcile": self.reconcile,
            "halt": self.halt,
            "resume": self.resume,
            "subscribe": self.subscribe,
            "metrics": self.metrics,
        }

    def _running(self) -> Components:
        c = self._op.components
        if c is None or self._op.phase != "trading":
            raise ControlError(f"the operation is not trading yet (phase: {self._op.phase})")
        return c

    def _built(self) -> Components:
        c = self._op.components
        if c is None:
            raise ControlError(f"the operation has not loaded its state yet (phase: {self._op.phase})")
        return c

    async def status(self, args: Mapping[str, Any]) -> dict[str, Any]:
        failpoint("control.status")
        op, c = self._op, self._op.components
        doc: dict[str, Any] = {
            "operation": op.config.operation,
            "mode": op.config.mode,
            "phase": op.phase,
            "pid": os.getpid(),
            "summary": op.steady_status(),
            "state_dir": str(op.config.state_dir),
        }
        if op.waiting is not None:
            doc["waiting"] = op.waiting.to_doc(op.now_ms())
        if c is not None:
            doc["breaker"] = _doc(BreakerStatus.of(c))
            doc["strategies"] = [_doc(StrategyStatus.of(w)) for w in c.workers]
            doc["disk_full"] = any(w.disk_full for w in c.workers)  # no new orders until the state is written
            r = c.reconciler
            doc["last_reconciliation"] = {
                "at_ms": r.last_at_ms,
                "trigger": r.last_trigger,
                "passes": r.passes,
                "corrections": len(r.last_report.corrections) if r.last_report else None,
            }
            doc["receipts"] = receipts_doc(r.receipts)  # newest first: what each pass compared and saw
        return doc

    async def reconcile(self, args: Mapping[str, Any]) -> dict[str, Any]:
        report = await self._running().reconciler.reconcile("control")
        return _doc(ReconcileReply.of(report))

    async def halt(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Open the breaker (manual: only ``resume`` closes it); ``keep_positions`` cancels a pending emergency exit."""
        reason = str(args.get("reason") or "operator halt")
        breaker = self._built().breaker
        await breaker.halt(reason, manual=True, keep_positions=bool(args.get("keep_positions")))
        return {"breaker": "open", "reason": reason, "emergency_exit": breaker.breaker.exiting}

    async def resume(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Close the breaker; a pending emergency exit is cancelled."""
        await self._built().breaker.resume("operator resume")
        return {"breaker": "closed"}

    async def metrics(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The daemon's own instruments in Prometheus' text format, in every phase (``s1mpled metrics``
        merges them into the textfile; the optional HTTP port serves the same registry)."""
        return {"text": self._op.instruments.exposition()}

    async def subscribe(self, args: Mapping[str, Any]) -> Stream:
        """Stream events as JSON lines (see the module docstring); ``snapshot_every_s``: the status period."""
        every = args.get("snapshot_every_s", SNAPSHOT_EVERY_S)
        if isinstance(every, bool) or not isinstance(every, int | float | Decimal) or not 0.5 <= every <= 60:
            raise ControlError("snapshot_every_s must be a number of seconds from 0.5 to 60")
        reply = {"events": sorted(self.feed.topics()), "snapshot_every_s": float(every)}
        return Stream(reply, self.feed.add(), self._snapshot, float(every))

    async def _snapshot(self) -> bytes:
        """The STATUS line; built at most once per SNAPSHOT_SHARED_MS however many subscribers ask."""
        now = self._op.now_ms()
        built_ms, line = self._last_snapshot
        if line is None or not 0 <= now - built_ms < SNAPSHOT_SHARED_MS:
            line = encode_event({"event": "STATUS", "at_ms": now, "status": await self.status({})})
            self._last_snapshot = (now, line)
        return line


class Feed(MonitorWorker):
    """The one bus reader behind ``subscribe``: turns each event into a JSON line once and offers it to every
    subscriber's queue (never waiting; a full queue cuts that subscriber off). Idle when nobody subscribes.

    What a line carries is a record (a strategy's status, an order, the breaker, a fill, a price, a receipt);
    the envelopes around them (the strategy, a reason, a stream) are a few text and integer keys, with nothing
    for the codec to write, and stay dict literals."""

    name = "control-feed"

    def __init__(self, operation: OperationView) -> None:
        self._op = operation
        self._queues: set[EventQueue] = set()
        self._price_sent_ms: dict[str, int] = {}

    def add(self) -> EventQueue:
        queue = EventQueue()
        self._queues.add(queue)
        return queue

    @property
    def subscribers(self) -> int:
        return sum(not q.closed for q in self._queues)

    def topics(self) -> list[str]:
        return ["STATUS", *(s.event_type.TOPIC for s in self.subscriptions())]

    def subscriptions(self) -> Sequence[Subscription]:
        docs: dict[type[Event], Callable[[Any], dict[str, Any] | None]] = {
            TradeExecuted: self._fill,
            OrderUpdated: self._order,
            LedgerStateChanged: self._ledger,
            MarketData: self._price,
            HaltNewSignals: self._breaker,
            ResumeSignals: self._breaker,
            ExecuteEmergencyExit: self._breaker,
            ReconciliationCompleted: self._reconciled,
            ConnectionLost: self._connection,
            ConnectionRestored: self._connection,
        }
        return [Subscription(t, self._relay(make)) for t, make in docs.items()]

    def _relay(self, make: Callable[[Any], dict[str, Any] | None]) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            self._queues = {q for q in self._queues if not q.closed}
            if not self._queues:
                return
            doc = make(event)
            if doc is None:
                return
            line = encode_event({"event": event.TOPIC, "at_ms": self._op.now_ms(), **doc})
            for queue in list(self._queues):
                queue.offer(line)

        return handle

    def _worker(self, *, name: str | None = None, client_order_id: str | None = None) -> StrategyWorker | None:
        c = self._op.components
        for w in c.workers if c is not None else ():
            if w.name == name or (client_order_id is not None and w.owns(client_order_id)):  # as the bus routes it
                return w
        return None

    def _fill(self, event: TradeExecuted) -> dict[str, Any]:
        """The Fill record without the exchange's order id (a record of its own would only repeat Fill's fields)."""
        w = self._worker(client_order_id=event.fill.client_order_id)
        fill = _doc(event.fill)
        del fill["exchange_order_id"]
        return {"strategy": w.name if w else None, "fill": fill}

    def _order(self, event: OrderUpdated) -> dict[str, Any]:
        w = self._worker(client_order_id=event.order.client_order_id)
        return {"strategy": w.name if w else None, "order": _doc(OrderDoc.of_exchange(event.order))}

    def _ledger(self, event: LedgerStateChanged) -> dict[str, Any]:
        w = self._worker(name=event.strategy)
        doc: dict[str, Any] = {"strategy": event.strategy, "reason": event.reason, "generation": event.generation}
        if w is not None:
            doc["status"] = _doc(StrategyStatus.of(w))
        return doc

    def _price(self, event: MarketData) -> dict[str, Any] | None:
        t = event.tick
        now = self._op.now_ms()
        if now - self._price_sent_ms.get(t.symbol, -PRICE_EVERY_MS) < PRICE_EVERY_MS:
            return None
        self._price_sent_ms[t.symbol] = now
        return _doc(t)  # the MarketTick record: symbol, price, timestamp_ms

    def _breaker(self, event: HaltNewSignals | ResumeSignals | ExecuteEmergencyExit) -> dict[str, Any]:
        c = self._op.components
        return {"reason": event.reason, "breaker": _doc(BreakerStatus.of(c)) if c is not None else None}

    def _reconciled(self, event: ReconciliationCompleted) -> dict[str, Any]:
        c = self._op.components
        receipts = c.reconciler.receipts if c is not None else ()
        receipt = receipts[-1].to_doc() if receipts else None
        return {"trigger": event.trigger, "corrections": event.corrections, "receipt": receipt}

    def _connection(self, event: ConnectionLost | ConnectionRestored) -> dict[str, Any]:
        return {"stream": event.stream, **({"error": event.error} if isinstance(event, ConnectionLost) else {})}
