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
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from s1mpled.bus import EventBus
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
from s1mpled.receipts import receipts_doc
from s1mpled.reconciliation import Report
from s1mpled.strategy_worker import StrategyWorker
from s1mpled.workers import MonitorWorker, Subscription, wire

if TYPE_CHECKING:
    from s1mpled.assembly import Components
    from s1mpled.config import Config
    from s1mpled.instruments import Instruments
    from s1mpled.startup import Waiting

__all__ = ["ControlCommands", "Feed", "OperationView"]

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


def _worker_status(w: StrategyWorker) -> dict[str, Any]:
    snap = w.ledger.snapshot()
    return {
        "name": w.name,
        "symbol": w.symbol,
        "strategy": type(w.strategy).__name__,
        "trading": w.trading,
        "halted": w.halted,
        "last_price": w.last_price,
        "capital": snap.capital,
        "holdings": snap.holdings,
        "base": snap.base,
        "quote": snap.quote,
        "realized_pnl": snap.realized_pnl,
        "fees_paid": snap.fees_paid,
        "state_generation": w.state_file.generation,
        "open_orders": [
            {
                "client_order_id": o.client_order_id,
                "side": o.side,
                "type": o.type,
                "amount": o.amount,
                "price": o.price,
                "filled": o.filled,
                "state": o.state,
                "tag": o.tag,
            }
            for o in snap.open_orders
        ],
    }


def _breaker_doc(c: Components) -> dict[str, Any]:
    b = c.breaker.breaker
    healthy = c.env.streams_healthy_for()
    return {
        "state": b.state,
        "reason": b.reason,
        "manual": b.manual,
        "opened_ms": b.opened_ms,
        "emergency_exit": b.exiting,  # the exit's goal is pending
        "streams_healthy_for_s": None if healthy is None else round(min(healthy, 1e9), 1),
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "corrections": [{"strategy": c.strategy, "what": c.describe()} for c in report.corrections],
        "external_orders": [o.client_order_id for o in report.external_orders],
        "external_surplus": dict(report.external_surplus),
    }


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
            doc["breaker"] = _breaker_doc(c)
            doc["strategies"] = [_worker_status(w) for w in c.workers]
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
        return report_dict(report)

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


def _order_doc(o: Any) -> dict[str, Any]:
    """An order (ledger or exchange) for the wire: what a chart and a table need."""
    keys = ("client_order_id", "symbol", "side", "type", "amount", "price", "filled", "state", "status", "tag")
    return {k: getattr(o, k) for k in keys if hasattr(o, k)}


class Feed(MonitorWorker):
    """The one bus reader behind ``subscribe``: turns each event into a JSON line once and offers it to every
    subscriber's queue (never waiting; a full queue cuts that subscriber off). Idle when nobody subscribes."""

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
        f = event.fill
        w = self._worker(client_order_id=f.client_order_id)
        fill = {k: getattr(f, k) for k in ("trade_id", "client_order_id", "symbol", "side", "price", "amount")}
        fill |= {"fee": f.fee, "fee_asset": f.fee_asset, "timestamp_ms": f.timestamp_ms}
        return {"strategy": w.name if w else None, "fill": fill}

    def _order(self, event: OrderUpdated) -> dict[str, Any]:
        w = self._worker(client_order_id=event.order.client_order_id)
        return {"strategy": w.name if w else None, "order": _order_doc(event.order)}

    def _ledger(self, event: LedgerStateChanged) -> dict[str, Any]:
        w = self._worker(name=event.strategy)
        doc: dict[str, Any] = {"strategy": event.strategy, "reason": event.reason, "generation": event.generation}
        if w is not None:
            doc["status"] = _worker_status(w)
        return doc

    def _price(self, event: MarketData) -> dict[str, Any] | None:
        t = event.tick
        now = self._op.now_ms()
        if now - self._price_sent_ms.get(t.symbol, -PRICE_EVERY_MS) < PRICE_EVERY_MS:
            return None
        self._price_sent_ms[t.symbol] = now
        return {"symbol": t.symbol, "price": t.price, "timestamp_ms": t.timestamp_ms}

    def _breaker(self, event: HaltNewSignals | ResumeSignals | ExecuteEmergencyExit) -> dict[str, Any]:
        c = self._op.components
        return {"reason": event.reason, "breaker": _breaker_doc(c) if c is not None else None}

    def _reconciled(self, event: ReconciliationCompleted) -> dict[str, Any]:
        c = self._op.components
        receipts = c.reconciler.receipts if c is not None else ()
        receipt = receipts[-1].to_doc() if receipts else None
        return {"trigger": event.trigger, "corrections": event.corrections, "receipt": receipt}

    def _connection(self, event: ConnectionLost | ConnectionRestored) -> dict[str, Any]:
        return {"stream": event.stream, **({"error": event.error} if isinstance(event, ConnectionLost) else {})}
