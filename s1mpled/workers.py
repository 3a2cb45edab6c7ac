"""Worker bases of the spec: MonitorWorkers observe and publish, ExecutionWorkers act.

The distinction is about authority, not mechanics: a MonitorWorker (ReconciliationMonitor,
ConnectionMonitor) may only publish events and log; an ExecutionWorker
(a strategy's worker, the CircuitBreakerWorker) may place and cancel orders. Both declare their
subscriptions, and the Operation wires them to the bus -- so a worker never subscribes itself
half-way through startup, and a test can drive one by calling its handlers directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from s1mpled.bus import EventBus
from s1mpled.events import Event

__all__ = ["ExecutionWorker", "MonitorWorker", "Subscription", "wire"]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One (event class, handler) pair a worker wants delivered."""

    event_type: type[Event]
    handler: Callable[[Any], Awaitable[None] | None]


class Worker(ABC):
    """Anything that reacts to events on the bus."""

    name: str = "worker"

    @abstractmethod
    def subscriptions(self) -> Sequence[Subscription]:
        """The events this worker handles."""


class MonitorWorker(Worker):
    """Observes and publishes; never acts on the exchange."""


class ExecutionWorker(Worker):
    """Acts: places and cancels orders."""


def wire(bus: EventBus, workers: Sequence[Worker]) -> None:
    """Subscribe every worker's handlers (before the bus runs)."""
    for worker in workers:
        for sub in worker.subscriptions():
            bus.subscribe(sub.event_type, sub.handler, name=f"{worker.name}.{sub.event_type.TOPIC}")
