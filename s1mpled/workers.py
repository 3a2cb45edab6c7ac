"""Worker bases of the spec: MonitorWorkers observe and publish, ExecutionWorkers act.

The distinction is about authority, not mechanics: a MonitorWorker (ReconciliationMonitor,
ConnectionMonitor) may only publish events and log; an ExecutionWorker
(a strategy's worker, the CircuitBreakerWorker) may place and cancel orders. Both declare their
subscriptions, and the Operation wires them to the bus -- so a worker never subscribes itself
half-way through startup, and a test can drive one by calling its handlers directly.

Fills and order updates are about one order, so they go to one worker: a subscription marked ``owned``
gets only the events whose client order id the worker's prefixes claim (:class:`OwnerRouting`, over the
one :class:`~s1mpled.ownership.OwnershipTable`). They are addressed on the bus, so each worker keeps its
own queue (a slow strategy delays only itself, and a full queue pushes back: never a drop), and no other
worker's queue holds them. A fill no strategy owns reaches no worker (observers still see it).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from s1mpled.bus import EventBus
from s1mpled.errors import LocalStateError
from s1mpled.events import Event, OrderUpdated, TradeExecuted
from s1mpled.ownership import OwnershipTable

__all__ = ["ExecutionWorker", "MonitorWorker", "Owner", "OwnerRouting", "Subscription", "wire"]

log = logging.getLogger("s1mpled.workers")
_SAID_KEPT = 10_000  # foreign order ids already logged (bounded: a long run may repeat a line, never grow)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One (event class, handler) pair a worker wants delivered."""

    event_type: type[Event]
    handler: Callable[[Any], Awaitable[None] | None]
    owned: bool = False
    """Only the events about this worker's own orders (TradeExecuted, OrderUpdated), by its prefixes."""


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


@runtime_checkable
class Owner(Protocol):
    """What routing needs of a worker with owned subscriptions: its name and its client-id prefixes."""

    name: str

    @property
    def prefix(self) -> str: ...

    @property
    def old_prefixes(self) -> tuple[str, ...]: ...


class OwnerRouting:
    """The address of a fill or an order update: the name of the worker whose prefixes claim its order.

    Epochs are added in recovery step A, before wiring; should a worker's prefixes change later all the same,
    an id no table entry claims rebuilds the table once before it counts as foreign.
    """

    def __init__(self, owners: Sequence[Owner]) -> None:
        self._owners = owners
        self._said: set[str] = set()
        self._prefixes, self._table = self._build()

    def _build(self) -> tuple[tuple[tuple[str, str, tuple[str, ...]], ...], OwnershipTable]:
        prefixes = tuple((o.name, o.prefix, o.old_prefixes) for o in self._owners)
        return prefixes, OwnershipTable(prefixes)

    def owner(self, client_order_id: str) -> str | None:
        """The owning worker's name; None for a foreign id."""
        found = self._table.owner(client_order_id)
        if found is None and tuple((o.name, o.prefix, o.old_prefixes) for o in self._owners) != self._prefixes:
            self._prefixes, self._table = self._build()
            found = self._table.owner(client_order_id)
        return found

    def of_fill(self, event: TradeExecuted) -> str | None:
        """A fill's owner; one no strategy owns is said once per order (it is not booked anywhere)."""
        fill = event.fill
        found = self.owner(fill.client_order_id)
        if found is None and self._once(fill.client_order_id):
            log.info(
                "fill %s of order %s: no strategy owns it (external), not booked", fill.trade_id, fill.client_order_id,
                extra={"EVENT": "EXTERNAL_FILL", "ORDER_ID": fill.client_order_id, "SYMBOL": fill.symbol},
            )  # fmt: skip
        return found

    def of_order(self, event: OrderUpdated) -> str | None:
        """An order update's owner (a foreign order's updates go to no worker, silently)."""
        return self.owner(event.order.client_order_id)

    def _once(self, client_order_id: str) -> bool:
        if client_order_id in self._said:
            return False
        if len(self._said) >= _SAID_KEPT:
            self._said.clear()
        self._said.add(client_order_id)
        return True


def wire(bus: EventBus, workers: Sequence[Worker]) -> None:
    """Subscribe every worker's handlers (before the bus runs); owned subscriptions at their worker's address,
    with fills and order updates addressed by one :class:`OwnerRouting` over those workers."""
    owners = [w for w in workers if any(sub.owned for sub in w.subscriptions())]
    if owners:
        routing = OwnerRouting([_owner(w) for w in owners])
        bus.address(TradeExecuted, routing.of_fill)
        bus.address(OrderUpdated, routing.of_order)
    for worker in workers:
        for sub in worker.subscriptions():
            address = worker.name if sub.owned else None
            bus.subscribe(sub.event_type, sub.handler, name=f"{worker.name}.{sub.event_type.TOPIC}", address=address)


def _owner(worker: Worker) -> Owner:
    if not isinstance(worker, Owner):
        raise LocalStateError(f"worker {worker.name!r} has owned subscriptions but no client-id prefixes")
    return worker
