"""The in-process event bus: typed events in, one bounded FIFO queue and one consumer per subscriber.

The daemon's components talk only through events (spec §6.2: ``TradeExecuted`` → ``LedgerStateChanged``
→ MonitorWorker; ``CONNECTION_LOST`` → ConnectionMonitor → ...), so the bus decides what a slow or broken
component can do to the others. The answer here is "as little as possible":

* every subscriber has its own bounded queue and consumer task: a slow subscriber delays only itself
  until its queue is full; then ``publish()`` waits (backpressure) and ``publish_nowait()`` raises
  :class:`BusOverflow`. Memory never grows without bound;
* a handler that raises is logged and isolated: the other subscribers still get the event and the same
  subscriber still gets later events. Cancellation is never swallowed;
* delivery is by exact event class, in publish order per publisher and subscriber.

Events published before :meth:`EventBus.run` starts wait in the queues. An event whose handler is
interrupted by cancelling ``run()`` is not redelivered (at most once): durable facts live in the state
store and are re-established by reconciliation, never by the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from s1mpled.errors import LocalStateError
from s1mpled.events import Event

__all__ = ["BusOverflow", "BusStatistics", "EventBus", "Handler", "SubscriberStatistics"]

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]
"""A subscriber callback: a plain function or a coroutine function taking the event."""

log = logging.getLogger("s1mpled.bus")


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


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of the bus: ``published`` counts events, ``delivered``/``failed`` count handler calls."""

    published: int
    unrouted: int  # published events nobody subscribed to
    overflowed: int  # publish_nowait() calls refused with BusOverflow
    delivered: int
    failed: int
    subscribers: tuple[SubscriberStatistics, ...]


@dataclass(eq=False, slots=True)
class _Subscriber:
    """A subscriber's queue and counters; ``enqueued``/``finished`` are the sequence numbers drain() waits on."""

    name: str
    event_type: type[Event]
    handler: Handler[Event]
    queue: asyncio.Queue[Event]
    enqueued: int = 0
    finished: int = 0
    delivered: int = 0
    failed: int = 0
    max_depth: int = 0
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def note_enqueued(self) -> None:
        self.enqueued += 1
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
        )


class EventBus:
    """Routes each published event to the subscribers of its exact class, each through its own bounded queue."""

    def __init__(self, *, queue_size: int = 10_000) -> None:
        if queue_size < 1:
            raise LocalStateError(f"EventBus queue_size must be at least 1, not {queue_size}")
        self._queue_size = queue_size
        self._routes: dict[type[Event], list[_Subscriber]] = {}
        self._subscribers: list[_Subscriber] = []
        self._consumers: set[asyncio.Task[None]] = set()
        self._running = False
        self._published = self._unrouted = self._overflowed = 0

    def subscribe(self, event_type: type[E], handler: Handler[E], *, name: str | None = None) -> None:
        """Deliver every event of exactly ``event_type`` to ``handler``; call before run(). ``name`` labels logs."""
        if self._running:
            raise LocalStateError("EventBus.subscribe() must be called before run()")
        label = name if name is not None else str(getattr(handler, "__qualname__", repr(handler)))
        routes = self._routes.setdefault(event_type, [])
        if any(sub.name == label for sub in routes):
            raise LocalStateError(f"subscriber {label!r} already subscribes to {event_type.TOPIC}")
        # Safe: the bus only ever passes this handler instances of exactly event_type.
        sub = _Subscriber(label, event_type, cast("Handler[Event]", handler), asyncio.Queue(self._queue_size))
        routes.append(sub)
        self._subscribers.append(sub)

    async def publish(self, event: Event) -> None:
        """Queue ``event`` for every subscriber of its class, waiting for room where a queue is full."""
        for sub in self._route(event):
            await sub.queue.put(event)
            sub.note_enqueued()

    def publish_nowait(self, event: Event) -> None:
        """Queue ``event`` for every subscriber of its class now, or for none: raises BusOverflow if a queue is full."""
        subs = self._routes.get(type(event), [])
        for sub in subs:
            if sub.queue.full():
                self._overflowed += 1
                raise BusOverflow(sub.name, event.TOPIC, sub.queue.maxsize)
        for sub in self._route(event):
            sub.queue.put_nowait(event)
            sub.note_enqueued()

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
        )

    def _route(self, event: Event) -> list[_Subscriber]:
        subs = self._routes.get(type(event), [])
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
    except Exception:
        log.exception(
            "handler %s failed on %s", sub.name, event.TOPIC, extra={"EVENT": event.TOPIC, "SUBSCRIBER": sub.name}
        )
        return False
    return True
