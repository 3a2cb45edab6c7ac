"""The typed events of the event bus, named as the spec (§6.2) names them.

Each event is a frozen dataclass; ``TOPIC`` is the spec's name and what logs show in the EVENT
field. Subscribers subscribe to a class; the bus delivers instances of exactly that class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from s1mpled.model import ExchangeOrder, Fill, MarketTick

__all__ = [
    "ConnectionLost",
    "ConnectionRestored",
    "ConnectionUnstableDetected",
    "Event",
    "ExecuteEmergencyExit",
    "HaltNewSignals",
    "LedgerStateChanged",
    "MarketData",
    "OrderUpdated",
    "Publish",
    "ReconciliationCompleted",
    "ResumeSignals",
    "ScheduledEvent",
    "TradeExecuted",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events."""

    TOPIC: ClassVar[str] = "EVENT"


@dataclass(frozen=True, slots=True)
class MarketData(Event):
    """A public price update from the DataSource."""

    TOPIC: ClassVar[str] = "MARKET_DATA"
    tick: MarketTick


@dataclass(frozen=True, slots=True)
class TradeExecuted(Event):
    """The exchange executed (part of) one of our orders (push, §6.2.1)."""

    TOPIC: ClassVar[str] = "TRADE_EXECUTED"
    fill: Fill


@dataclass(frozen=True, slots=True)
class OrderUpdated(Event):
    """The exchange reported a new status for one of our orders (open, canceled, ...)."""

    TOPIC: ClassVar[str] = "ORDER_UPDATED"
    order: ExchangeOrder


@dataclass(frozen=True, slots=True)
class LedgerStateChanged(Event):
    """A StrategyLedger changed and the change is durable; MonitorWorkers observe this."""

    TOPIC: ClassVar[str] = "LEDGER_STATE_CHANGED"
    strategy: str
    reason: str
    generation: int


@dataclass(frozen=True, slots=True)
class ConnectionLost(Event):
    """The DataSource gave up reconnecting after the configured number of attempts."""

    TOPIC: ClassVar[str] = "CONNECTION_LOST"
    stream: str
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class ConnectionRestored(Event):
    """A stream is connected again (a reconciliation must follow: events may have been missed)."""

    TOPIC: ClassVar[str] = "CONNECTION_RESTORED"
    stream: str


@dataclass(frozen=True, slots=True)
class ConnectionUnstableDetected(Event):
    """The ConnectionMonitor's strategic verdict: trading on this connection is unsafe."""

    TOPIC: ClassVar[str] = "CONNECTION_UNSTABLE_DETECTED"
    reason: str


@dataclass(frozen=True, slots=True)
class HaltNewSignals(Event):
    """The circuit breaker opened: strategies may not open new orders (cancels still allowed)."""

    TOPIC: ClassVar[str] = "HALT_NEW_SIGNALS"
    reason: str


@dataclass(frozen=True, slots=True)
class ResumeSignals(Event):
    """The circuit breaker closed again: strategies may trade."""

    TOPIC: ClassVar[str] = "RESUME_SIGNALS"
    reason: str


@dataclass(frozen=True, slots=True)
class ExecuteEmergencyExit(Event):
    """Cancel every managed order and flatten every managed holding."""

    TOPIC: ClassVar[str] = "EXECUTE_EMERGENCY_EXIT"
    reason: str


@dataclass(frozen=True, slots=True)
class ScheduledEvent(Event):
    """A named periodic event from schedule.yaml (e.g. ``five_minute_reconciliation_tick``)."""

    TOPIC: ClassVar[str] = "SCHEDULED"
    name: str
    due_ms: int


@dataclass(frozen=True, slots=True)
class ReconciliationCompleted(Event):
    """A reconciliation pass finished; ``corrections`` counts what it force-corrected."""

    TOPIC: ClassVar[str] = "RECONCILIATION_COMPLETED"
    trigger: str
    corrections: int
    at_ms: int = field(default=0)
    by_kind: tuple[tuple[str, int], ...] = field(default=())  # corrections per kind (AdoptOrder, ApplyFill, ...)


Publish = Callable[[Event], Awaitable[None]]
"""How a component hands an event to the bus (``EventBus.publish``): the one signature every publisher takes."""
