"""The in-process event bus: typed events in, one bounded queue and one consumer per subscriber.

The daemon's components talk only through events (spec §6.2: ``TradeExecuted`` → ``LedgerStateChanged``
→ MonitorWorker; ``CONNECTION_LOST`` → ConnectionMonitor → ...), so the bus decides what a slow or broken
component can do to the others. The answer here is "as little as possible":

* every subscriber has its own bounded queue and consumer task: a slow subscriber delays only itself.
  Memory never grows without bound. What happens when it falls behind depends on the event:

  - **market data is conflated per symbol** (:data:`CONFLATED`): a subscriber's queue holds at most
    the newest ``MarketData`` of each symbol. A newer tick replaces the queued one in place (keeping
    its turn, so a busy symbol never starves a quiet one), and publishing it never waits. A slow
    strategy skips stale prices instead of working through a backlog of them, and never handles a
    tick older than one of the same symbol already received. Replaced ticks are counted
    (``conflated``);
  - **everything else is FIFO and never dropped** -- fills (``TradeExecuted``), order updates
    (``OrderUpdated``), ledger changes, schedule ticks, breaker and connection events: once a
    subscriber's queue is full, ``publish()`` waits (backpressure, back to the stream that produced the
    event) and ``publish_nowait()`` raises :class:`BusOverflow`;
* a handler that raises is logged and isolated: the other subscribers still get the event and the same
  subscriber still gets later events. Cancellation is never swallowed;
* delivery is by exact event class, in publish order per publisher and subscriber (for conflated
  events: in order of the newest per key);
* an *addressed* class (:meth:`EventBus.address`: fills and order updates, addressed to the strategy that
  owns the order) reaches the one subscriber registered under the event's address -- no other worker's
  queue sees it -- and every subscriber registered without one (observers); same queues, same rules.

Events published before :meth:`EventBus.run` starts wait in the queues. An event whose handler is
interrupted by cancelling ``run()`` is not redelivered (at most once): durable facts live in the state
store and are re-established by reconciliation, never by the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from s1mpled.errors import LocalStateError, S1mpledError
from s1mpled.events import Event, MarketData

__all__ = [
    "CONFLATED",
    "BusOverflow",
    "BusStatistics",
    "ConflatingQueue",
    "EventBus",
    "Handler",
    "SubscriberStatistics",
]

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]
"""A subscriber callback: a plain function or a coroutine function taking the event."""

log = logging.getLogger("s1mpled.bus")
Key = Callable[[Event], Hashable]


def _symbol(event: Event) -> Hashable:
    return cast("MarketData", event).tick.symbol


CONFLATED: Mapping[type[Event], Key] = {MarketData: _symbol}
"""The events of which a subscriber only ever needs the newest per key: market data, per symbol."""


class BusOverflow(LocalStateError):
    """``publish_nowait()`` found a subscriber's queue full; the event was queued for nobody."""

    def __init__(self, subscriber: str, topic: str, capacity: int) -> None:
        self.subscriber, self.topic, self.capacity = subscriber, topic, capacity
        super().__init__(f"cannot publish {topic}: the queue of subscriber {subscriber!r} is full ({capacity} events)")


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    """One subscriber's counters: how far behind it is (``depth``) and has ever been (``max_depth``)."""

    name: str
    topic: str
    delivered: int
    failed: int
    depth: int
    max_depth: int
    capacity: int
    conflated: int = 0  # events replaced by a newer one of the same key before they were handled


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of the bus: ``published`` counts events, ``delivered``/``failed`` count handler calls."""

    published: int
    unrouted: int  # published events nobody subscribed to
    overflowed: int  # publish_nowait() calls refused with BusOverflow
    delivered: int
    failed: int
    subscribers: tuple[SubscriberStatistics, ...]
    conflated: int = 0


class _Queue(Protocol):
    """What the bus needs of a subscriber's queue; ``put`` returns the event it replaced, if any."""

    maxsize: int

    def qsize(self) -> int: ...

    def blocks(self, event: Event) -> bool: ...

    def put_nowait(self, event: Event) -> Event | None: ...

    async def put(self, event: Event) -> Event | None: ...

    async def get(self) -> Event: ...


class _Fifo:
    """Every event, in order; at most ``maxsize`` of them (then putting waits)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self._queue.qsize()

    def blocks(self, event: Event) -> bool:
        return self._queue.full()

    def put_nowait(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def put(self, event: Event) -> None:
        await self._queue.put(event)

    async def get(self) -> Event:
        return await self._queue.get()


class ConflatingQueue:
    """The newest event per key, keys in order of arrival; at most ``maxsize`` keys (then a new key waits).

    An event whose key is queued replaces the queued event in place -- keeping its turn -- and never
    waits; the replaced one is returned (superseded, it will never be handled). One consumer.
    """

    def __init__(self, maxsize: int, key: Key) -> None:
        if maxsize < 1:
            raise LocalStateError(f"ConflatingQueue maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._key = key
        self._items: OrderedDict[Hashable, Event] = OrderedDict()
        self._readable = asyncio.Event()
        self._room = asyncio.Event()

    def qsize(self) -> int:
        return len(self._items)

    def blocks(self, event: Event) -> bool:
        """Putting ``event`` would have to wait: every slot is taken, none by its key."""
        return len(self._items) >= self.maxsize and self._key(event) not in self._items

    def put_nowait(self, event: Event) -> Event | None:
        """Queue ``event``; the event it replaced, if any. asyncio.QueueFull if it has to wait."""
        if self.blocks(event):
            raise asyncio.QueueFull
        key = self._key(event)
        replaced = self._items.get(key)
        self._items[key] = event  # an existing key keeps its place in the order
        self._readable.set()
        return replaced

    async def put(self, event: Event) -> Event | None:
        while self.blocks(event):
            self._room.clear()
            await self._room.wait()
        return self.put_nowait(event)

    async def get(self) -> Event:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        _, event = self._items.popitem(last=False)
        self._room.set()
        return event


@dataclass(eq=False, slots=True)
class _Subscriber:
    """A subscriber's queue and counters; ``enqueued``/``finished`` are the sequence numbers drain() waits on."""

    name: str
    event_type: type[Event]
    handler: Handler[Event]
    queue: _Queue
    enqueued: int = 0
    finished: int = 0
    delivered: int = 0
    failed: int = 0
    conflated: int = 0
    max_depth: int = 0
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def note_enqueued(self, replaced: Event | None) -> None:
        """An event went in; one that replaced a queued event takes over its place (and its count)."""
        if replaced is None:
            self.enqueued += 1
        else:
            self.conflated += 1
        self.max_depth = max(self.max_depth, self.queue.qsize())

    def note_finished(self) -> None:
        """One more event left the consumer (handled, failed or interrupted); wake drain() calls it satisfies."""
        self.finished += 1
        waiting = []
        for target, future in self.waiters:
            if future.done():
                continue
            if target <= self.finished:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self.waiters = waiting

    def snapshot(self) -> SubscriberStatistics:
        return SubscriberStatistics(
            name=self.name,
            topic=self.event_type.TOPIC,
            delivered=self.delivered,
            failed=self.failed,
            depth=self.queue.qsize(),
            max_depth=self.max_depth,
            capacity=self.queue.maxsize,
            conflated=self.conflated,
        )


class EventBus:
    """Routes each published event to the subscribers of its exact class, each through its own bounded queue.

    ``conflate``: the event classes whose subscribers keep only the newest event per key (default
    :data:`CONFLATED`: market data per symbol); ``{}`` makes every queue FIFO.
    """

    def __init__(self, *, queue_size: int = 10_000, conflate: Mapping[type[Event], Key] | None = None) -> None:
        if queue_size < 1:
            raise LocalStateError(f"EventBus queue_size must be at least 1, not {queue_size}")
        self._queue_size = queue_size
        self._conflate = dict(CONFLATED if conflate is None else conflate)
        self._routes: dict[type[Event], list[_Subscriber]] = {}  # subscribers without an address
        self._addressing: dict[type[Event], Callable[[Event], Hashable | None]] = {}
        self._addressed: dict[type[Event], dict[Hashable, list[_Subscriber]]] = {}
        self._subscribers: list[_Subscriber] = []
        self._consumers: set[asyncio.Task[None]] = set()
        self._running = False
        self._published = self._unrouted = self._overflowed = 0

    def address(self, event_type: type[E], by: Callable[[E], Hashable | None]) -> None:
        """Deliver events of exactly ``event_type`` only to the subscribers registered under ``by(event)`` (None:
        none of them) and to those registered without an address; call before run(), once per class."""
        if self._running or event_type in self._addressing:
            raise LocalStateError(f"EventBus.address({event_type.TOPIC}) must be called once, before run()")
        self._addressing[event_type] = cast("Callable[[Event], Hashable | None]", by)
        self._addressed[event_type] = {}

    def subscribe(
        self, event_type: type[E], handler: Handler[E], *, name: str | None = None, address: Hashable | None = None
    ) -> None:
        """Deliver every event of exactly ``event_type`` to ``handler`` (of an addressed class: those addressed to
        ``address``, or all of them without one); call before run(). ``name`` labels logs."""
        if self._running:
            raise LocalStateError("EventBus.subscribe() must be called before run()")
        if address is not None and event_type not in self._addressed:
            raise LocalStateError(f"subscribed to {event_type.TOPIC} at an address, but it is not addressed")
        label = name if name is not None else str(getattr(handler, "__qualname__", repr(handler)))
        if any(sub.name == label for sub in self._of_class(event_type)):
            raise LocalStateError(f"subscriber {label!r} already subscribes to {event_type.TOPIC}")
        routes = (
            self._routes.setdefault(event_type, [])
            if address is None
            else self._addressed[event_type].setdefault(address, [])
        )
        # Safe: the bus only ever passes this handler instances of exactly event_type.
        key = self._conflate.get(event_type)
        queue: _Queue = _Fifo(self._queue_size) if key is None else ConflatingQueue(self._queue_size, key)
        sub = _Subscriber(label, event_type, cast("Handler[Event]", handler), queue)
        routes.append(sub)
        self._subscribers.append(sub)

    async def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber of its class, waiting for room where a queue is full
        (never for conflated events whose key is queued: they replace the older one)."""
        for sub in self._route(event):
            sub.note_enqueued(await sub.queue.put(event))

    def publish_nowait(self, event: Event) -> None:
        """Queue ``event`` for every subscriber of its class now, or for none: raises BusOverflow if a queue is full."""
        subs = self._targets(event)
        for sub in subs:
            if sub.queue.blocks(event):
                self._overflowed += 1
                raise BusOverflow(sub.name, event.TOPIC, sub.queue.maxsize)
        for sub in self._counted(subs):
            sub.note_enqueued(sub.queue.put_nowait(event))

    async def run(self) -> None:
        """Run one consumer task per subscriber until cancelled; a handler that breaks cancellation ends it."""
        if self._running:
            raise LocalStateError("EventBus.run() is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                for sub in self._subscribers:
                    self._consumers.add(group.create_task(self._consume(sub), name=f"bus:{sub.name}"))
                if not self._consumers:
                    await asyncio.get_running_loop().create_future()  # nothing to consume: wait to be cancelled
        finally:
            self._running = False
            self._consumers.clear()

    async def drain(self) -> None:
        """Return once every event published so far has been handled (needs run(); never call it from a handler)."""
        if asyncio.current_task() in self._consumers:
            raise LocalStateError("EventBus.drain() called from a handler would wait for itself")
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        for sub in self._subscribers:
            if sub.finished < sub.enqueued:
                future: asyncio.Future[None] = loop.create_future()
                sub.waiters.append((sub.enqueued, future))
                pending.append(future)
        try:
            for future in pending:
                await future
        finally:
            for future in pending:
                future.cancel()

    def statistics(self) -> BusStatistics:
        """A consistent snapshot of the counters and every subscriber's queue depth."""
        subs = tuple(sub.snapshot() for sub in self._subscribers)
        return BusStatistics(
            published=self._published,
            unrouted=self._unrouted,
            overflowed=self._overflowed,
            delivered=sum(s.delivered for s in subs),
            failed=sum(s.failed for s in subs),
            subscribers=subs,
            conflated=sum(s.conflated for s in subs),
        )

    def _of_class(self, event_type: type[Event]) -> list[_Subscriber]:
        """Every subscriber of ``event_type``, at an address or not."""
        at = self._addressed.get(event_type, {})
        return [*self._routes.get(event_type, ()), *(sub for subs in at.values() for sub in subs)]

    def _targets(self, event: Event) -> list[_Subscriber]:
        """The subscribers ``event`` goes to: of its class, those without an address and those at its address."""
        subs = self._routes.get(type(event), [])
        by = self._addressing.get(type(event))
        if by is None:
            return subs
        to = by(event)
        return subs if to is None else [*subs, *self._addressed[type(event)].get(to, ())]

    def _route(self, event: Event) -> list[_Subscriber]:
        return self._counted(self._targets(event))

    def _counted(self, subs: list[_Subscriber]) -> list[_Subscriber]:
        self._published += 1
        if not subs:
            self._unrouted += 1
        return subs

    async def _consume(self, sub: _Subscriber) -> None:
        while True:
            event = await sub.queue.get()
            try:
                if await _deliver(sub, event):
                    sub.delivered += 1
                else:
                    sub.failed += 1
            finally:
                sub.note_finished()


async def _deliver(sub: _Subscriber, event: Event) -> bool:
    """Call the handler; False (logged) if it raised. Cancellation propagates, a stray CancelledError is a bug."""
    try:
        result = sub.handler(event)
        if result is not None:
            await result
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:
            raise
        # Nobody cancelled this consumer: left alone, the task would end "cancelled", which a TaskGroup
        # ignores, and the subscriber would stop consuming in silence. Fail loudly instead (crash-only).
        raise LocalStateError(f"handler {sub.name!r} raised CancelledError on {event.TOPIC} without a cancel") from exc
    except Exception as exc:
        fields = {"EVENT": event.TOPIC, "SUBSCRIBER": sub.name}
        if isinstance(exc, S1mpledError) and not isinstance(exc, LocalStateError):
            # expected (a request or a save failed): the reason in one line; a traceback only for a bug
            log.error("handler %s failed on %s: %s", sub.name, event.TOPIC, exc, extra=fields)
        else:
            log.exception("handler %s failed on %s", sub.name, event.TOPIC, extra=fields)
        return False
    return True
