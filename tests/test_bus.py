"""The event bus: exact-class routing, per-subscriber bounded queues (FIFO with backpressure; market data
conflated per symbol), isolation, cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.bus import BusOverflow, EventBus
from s1mpled.errors import LocalStateError
from s1mpled.events import (
    ConnectionRestored,
    Event,
    HaltNewSignals,
    MarketData,
    OrderUpdated,
    ResumeSignals,
    TradeExecuted,
)
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, Fill, MarketTick, OrderType, Side

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, failing it if anything hangs for more than 5 s."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


@asynccontextmanager
async def running(bus: EventBus) -> AsyncIterator[asyncio.Task[None]]:
    """Run the bus for the duration of the block, then cancel it."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(bus.run())
        await asyncio.sleep(0)
        yield task
        task.cancel()


async def yield_to_loop(times: int = 20) -> None:
    """Let every ready task run a few steps (not a sleep: time does not pass)."""
    for _ in range(times):
        await asyncio.sleep(0)


def halt(i: int) -> HaltNewSignals:
    return HaltNewSignals(reason=str(i))


def test_delivery_is_by_exact_event_class() -> None:
    """A subscriber gets instances of exactly its class: not subclasses, not other events."""
    got: dict[str, list[Event]] = {"base": [], "halt": [], "resume": []}

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(Event, got["base"].append, name="base")
        bus.subscribe(HaltNewSignals, got["halt"].append, name="halt")
        bus.subscribe(ResumeSignals, got["resume"].append, name="resume")
        async with running(bus):
            await bus.publish(halt(1))
            await bus.publish(ResumeSignals(reason="ok"))
            await bus.publish(Event())
            await bus.drain()

    run(main)
    assert got == {"base": [Event()], "halt": [halt(1)], "resume": [ResumeSignals(reason="ok")]}


def test_sync_and_async_handlers_both_receive_events() -> None:
    """A plain function and a coroutine function are both valid handlers."""
    sync_got: list[Event] = []
    async_got: list[Event] = []

    async def on_halt(event: HaltNewSignals) -> None:
        await asyncio.sleep(0)
        async_got.append(event)

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, sync_got.append, name="sync")
        bus.subscribe(HaltNewSignals, on_halt)
        async with running(bus):
            await bus.publish(halt(1))
            await bus.drain()
        assert [s.name for s in bus.statistics().subscribers] == [
            "sync",
            "test_sync_and_async_handlers_both_receive_events.<locals>.on_halt",
        ]

    run(main)
    assert sync_got == async_got == [halt(1)]


@settings(max_examples=30, deadline=None)
@given(
    queue_size=st.integers(min_value=1, max_value=8),
    counts=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=4),
)
def test_each_publishers_events_reach_each_subscriber_in_publish_order(queue_size: int, counts: list[int]) -> None:
    """With concurrent publishers and full queues, every subscriber sees each publisher's events in its order."""
    seen: dict[str, list[str]] = {"a": [], "b": []}

    async def slow(event: HaltNewSignals) -> None:
        await asyncio.sleep(0)
        seen["b"].append(event.reason)

    async def main() -> None:
        bus = EventBus(queue_size=queue_size)
        bus.subscribe(HaltNewSignals, lambda e: seen["a"].append(e.reason), name="a")
        bus.subscribe(HaltNewSignals, slow, name="b")

        async def publisher(p: int, n: int) -> None:
            for i in range(n):
                await bus.publish(HaltNewSignals(reason=f"{p}:{i}"))

        async with running(bus):
            async with asyncio.TaskGroup() as group:
                for p, n in enumerate(counts):
                    group.create_task(publisher(p, n))
            await bus.drain()

    run(main)
    for name in ("a", "b"):
        assert len(seen[name]) == sum(counts)
        for p in range(len(counts)):
            mine = [r for r in seen[name] if r.startswith(f"{p}:")]
            assert mine == [f"{p}:{i}" for i in range(counts[p])]


def test_a_failing_handler_is_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that raises is logged with EVENT and SUBSCRIBER; others get the event, it gets later events."""
    good: list[Event] = []
    flaky: list[Event] = []

    def on_halt(event: HaltNewSignals) -> None:
        if event.reason == "1":
            raise ValueError("boom")
        flaky.append(event)

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, on_halt, name="flaky")
        bus.subscribe(HaltNewSignals, good.append, name="good")
        async with running(bus):
            for i in range(1, 4):
                await bus.publish(halt(i))
            await bus.drain()
        stats = bus.statistics()
        assert (stats.published, stats.delivered, stats.failed) == (3, 5, 1)
        assert [(s.name, s.delivered, s.failed) for s in stats.subscribers] == [("flaky", 2, 1), ("good", 3, 0)]

    with caplog.at_level(logging.ERROR, logger="s1mpled.bus"):
        run(main)
    assert good == [halt(1), halt(2), halt(3)]
    assert flaky == [halt(2), halt(3)]
    (record,) = caplog.records
    assert record.name == "s1mpled.bus"
    assert (getattr(record, "EVENT", None), getattr(record, "SUBSCRIBER", None)) == ("HALT_NEW_SIGNALS", "flaky")
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


def test_a_slow_subscriber_does_not_delay_the_others() -> None:
    """While one handler is stuck, the other subscriber gets every event (as long as the stuck queue has room)."""
    gate = asyncio.Event()
    fast: list[Event] = []
    slow: list[Event] = []

    async def stuck(event: HaltNewSignals) -> None:
        await gate.wait()
        slow.append(event)

    async def main() -> None:
        bus = EventBus(queue_size=10)
        bus.subscribe(HaltNewSignals, stuck, name="slow")
        bus.subscribe(HaltNewSignals, fast.append, name="fast")
        async with running(bus):
            for i in range(10):
                await bus.publish(halt(i))
            await yield_to_loop()
            assert fast == [halt(i) for i in range(10)]
            assert slow == []
            gate.set()
            await bus.drain()
            assert slow == fast

    run(main)


def test_a_full_queue_makes_publish_wait_until_there_is_room() -> None:
    """publish() blocks while a subscriber's queue is full and completes once the subscriber catches up."""
    gate = asyncio.Event()
    got: list[Event] = []

    async def stuck(event: HaltNewSignals) -> None:
        await gate.wait()
        got.append(event)

    async def main() -> None:
        bus = EventBus(queue_size=2)
        bus.subscribe(HaltNewSignals, stuck, name="slow")
        async with running(bus):
            await bus.publish(halt(0))  # taken by the consumer, which is now stuck in the handler
            await yield_to_loop()
            await bus.publish(halt(1))
            await bus.publish(halt(2))  # the queue is full now
            blocked = asyncio.create_task(bus.publish(halt(3)))
            await yield_to_loop()
            assert not blocked.done()
            assert bus.statistics().subscribers[0].depth == 2
            gate.set()
            await blocked
            await bus.drain()
        assert bus.statistics().subscribers[0].max_depth == 2

    run(main)
    assert got == [halt(i) for i in range(4)]


def test_publish_nowait_raises_bus_overflow_and_queues_for_nobody() -> None:
    """publish_nowait() on a full queue raises BusOverflow (a LocalStateError); no subscriber gets that event."""
    gate = asyncio.Event()
    fast: list[Event] = []

    async def stuck(event: HaltNewSignals) -> None:
        await gate.wait()

    async def main() -> None:
        bus = EventBus(queue_size=1)
        bus.subscribe(HaltNewSignals, stuck, name="slow")
        bus.subscribe(HaltNewSignals, fast.append, name="fast")
        bus.publish_nowait(halt(0))
        with pytest.raises(BusOverflow) as caught:
            bus.publish_nowait(halt(1))
        assert isinstance(caught.value, LocalStateError)
        assert (caught.value.subscriber, caught.value.topic, caught.value.capacity) == ("slow", "HALT_NEW_SIGNALS", 1)
        stats = bus.statistics()
        assert (stats.published, stats.overflowed) == (1, 1)
        async with running(bus):
            await yield_to_loop()
            assert fast == [halt(0)]
            gate.set()
            await bus.drain()
        assert fast == [halt(0)]

    run(main)


def test_events_published_before_run_are_delivered_once_it_runs() -> None:
    """Events published before run() wait in the queues and are delivered, in order, when the bus starts."""
    got: list[Event] = []

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, got.append, name="h")
        await bus.publish(halt(1))
        bus.publish_nowait(halt(2))
        await yield_to_loop()
        assert got == []
        assert bus.statistics().subscribers[0].depth == 2
        async with running(bus):
            await bus.drain()

    run(main)
    assert got == [halt(1), halt(2)]


def test_an_event_nobody_subscribed_to_is_a_counted_no_op() -> None:
    """Publishing an event without subscribers does nothing but count it as published and unrouted."""

    async def main() -> None:
        bus = EventBus(queue_size=1)
        bus.subscribe(HaltNewSignals, lambda e: None, name="h")
        for _ in range(3):
            await bus.publish(ConnectionRestored("market"))
            bus.publish_nowait(ConnectionRestored("market"))
        async with running(bus):
            await bus.drain()
        stats = bus.statistics()
        assert (stats.published, stats.unrouted, stats.delivered, stats.overflowed) == (6, 6, 0, 0)

    run(main)


def test_cancelling_run_cancels_a_running_handler_and_propagates() -> None:
    """Cancelling run() cancels the handler in progress and run() ends cancelled (nothing swallowed)."""
    entered = asyncio.Event()
    saw_cancel: list[bool] = []

    async def blocking(event: HaltNewSignals) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.append(True)
            raise

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, blocking, name="blocking")
        task = asyncio.create_task(bus.run())
        await bus.publish(halt(1))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        stats = bus.statistics()
        assert (stats.delivered, stats.failed) == (0, 0)

    run(main)
    assert saw_cancel == [True]


def test_a_handler_raising_cancelled_error_unprompted_is_not_isolated() -> None:
    """A handler raising CancelledError without a cancel request ends run() with a LocalStateError (no silent death)."""
    other: list[Event] = []

    def rogue(event: HaltNewSignals) -> None:
        raise asyncio.CancelledError

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, rogue, name="rogue")
        bus.subscribe(ResumeSignals, other.append, name="other")
        await bus.publish(halt(1))
        with pytest.raises(ExceptionGroup) as caught:
            await bus.run()
        (error,) = caught.value.exceptions
        assert isinstance(error, LocalStateError)
        assert "rogue" in str(error)
        assert isinstance(error.__cause__, asyncio.CancelledError)

    run(main)


def test_drain_waits_only_for_events_published_before_it() -> None:
    """drain() returns once earlier events are handled, even while later ones keep the subscriber busy."""
    gates = {"early": asyncio.Event(), "later": asyncio.Event()}
    got: list[str] = []

    async def handler(event: HaltNewSignals) -> None:
        await gates[event.reason].wait()
        got.append(event.reason)

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, handler, name="h")
        await bus.drain()  # nothing published: returns at once, even before run()
        async with running(bus):
            await bus.publish(HaltNewSignals(reason="early"))
            draining = asyncio.create_task(bus.drain())
            await yield_to_loop()
            await bus.publish(HaltNewSignals(reason="later"))
            assert not draining.done()
            gates["early"].set()
            await draining
            assert got == ["early"]
            gates["later"].set()
            await bus.drain()
            assert got == ["early", "later"]

    run(main)


def test_drain_from_a_handler_is_refused() -> None:
    """A handler calling drain() gets a LocalStateError instead of waiting for itself forever."""
    errors: list[Exception] = []

    async def main() -> None:
        bus = EventBus()

        async def handler(event: HaltNewSignals) -> None:
            try:
                await bus.drain()
            except LocalStateError as exc:
                errors.append(exc)

        bus.subscribe(HaltNewSignals, handler, name="h")
        async with running(bus):
            await bus.publish(halt(1))
            await bus.drain()

    run(main)
    assert len(errors) == 1


def test_statistics_track_depth_and_max_depth_per_subscriber() -> None:
    """statistics() reports each subscriber's current and maximum queue depth and its capacity."""

    async def main() -> None:
        bus = EventBus(queue_size=5)
        bus.subscribe(HaltNewSignals, lambda e: None, name="h")
        for i in range(4):
            bus.publish_nowait(halt(i))
        (sub,) = bus.statistics().subscribers
        assert (sub.name, sub.topic, sub.depth, sub.max_depth, sub.capacity) == ("h", "HALT_NEW_SIGNALS", 4, 4, 5)
        async with running(bus):
            await bus.drain()
        (sub,) = bus.statistics().subscribers
        assert (sub.depth, sub.max_depth, sub.delivered) == (0, 4, 4)

    run(main)


def test_misuse_is_refused_with_local_state_error() -> None:
    """Bad queue sizes, duplicate subscriber names, subscribing while running and a second run() are bugs."""
    with pytest.raises(LocalStateError):
        EventBus(queue_size=0)

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(HaltNewSignals, lambda e: None, name="h")
        bus.subscribe(ResumeSignals, lambda e: None, name="h")  # same name, other event: fine
        with pytest.raises(LocalStateError):
            bus.subscribe(HaltNewSignals, lambda e: None, name="h")
        async with running(bus):
            with pytest.raises(LocalStateError):
                bus.subscribe(ConnectionRestored, lambda e: None)
            with pytest.raises(LocalStateError):
                await bus.run()

    run(main)


def test_run_without_subscribers_waits_until_cancelled() -> None:
    """run() with no subscribers neither returns nor fails; it ends only when cancelled."""

    async def main() -> None:
        bus = EventBus()
        task = asyncio.create_task(bus.run())
        await yield_to_loop()
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


# ------------------------------------------------------------------------ bounded: conflation, no drops


def tick(symbol: str, seq: int) -> MarketData:
    """A market-data event whose timestamp is its sequence number (per symbol)."""
    return MarketData(MarketTick(symbol, Decimal(seq), seq))


def seen_ticks(events: list[MarketData]) -> list[tuple[str, int]]:
    return [(e.tick.symbol, e.tick.timestamp_ms) for e in events]


def test_market_data_is_conflated_per_symbol_and_each_symbol_keeps_its_turn() -> None:
    """A stuck strategy gets, per symbol, only the newest tick published meanwhile, symbols in first-arrival order."""
    gate = asyncio.Event()
    got: list[MarketData] = []

    async def strategy(event: MarketData) -> None:
        await gate.wait()
        got.append(event)

    async def main() -> None:
        bus = EventBus()
        bus.subscribe(MarketData, strategy, name="strategy")
        async with running(bus):
            await bus.publish(tick("BTC", 0))  # taken: the handler is stuck on it
            await yield_to_loop()
            for event in (tick("BTC", 1), tick("ETH", 1), tick("BTC", 2), tick("SOL", 1), tick("ETH", 2)):
                await bus.publish(event)
            bus.publish_nowait(tick("BTC", 3))
            (sub,) = bus.statistics().subscribers
            assert (sub.depth, sub.conflated) == (3, 3)
            gate.set()
            await bus.drain()  # superseded ticks count as done: drain does not wait for them
        stats = bus.statistics()
        assert (stats.delivered, stats.conflated, stats.published) == (4, 3, 7)

    run(main)
    assert seen_ticks(got) == [("BTC", 0), ("BTC", 3), ("ETH", 2), ("SOL", 1)]


def test_a_conflated_queue_is_bounded_by_symbols_and_a_queued_symbol_never_waits() -> None:
    """With every slot taken, a tick of a queued symbol replaces it at once; a new symbol waits (or overflows)."""
    gate = asyncio.Event()

    async def stuck(event: MarketData) -> None:
        await gate.wait()

    async def main() -> None:
        bus = EventBus(queue_size=2)
        bus.subscribe(MarketData, stuck, name="strategy")
        bus.publish_nowait(tick("BTC", 1))
        bus.publish_nowait(tick("ETH", 1))
        for seq in range(2, 100):
            await asyncio.wait_for(bus.publish(tick("BTC", seq)), 1)  # never waits
        with pytest.raises(BusOverflow):
            bus.publish_nowait(tick("SOL", 1))
        blocked = asyncio.create_task(bus.publish(tick("SOL", 1)))
        await yield_to_loop()
        assert not blocked.done()
        async with running(bus):
            await asyncio.wait_for(blocked, 1)  # the consumer took BTC: room for SOL
            gate.set()
            await bus.drain()
        (sub,) = bus.statistics().subscribers
        assert (sub.max_depth, sub.capacity, sub.conflated, sub.delivered) == (2, 2, 98, 3)

    run(main)


def _fill(i: int) -> TradeExecuted:
    return TradeExecuted(
        Fill(str(i), "s1abc-1", "42", "BTC/USDT", Side.BUY, Decimal(100), Decimal(1), Decimal(0), "USDT", i)
    )


def _update(i: int) -> OrderUpdated:
    order = ExchangeOrder(
        client_order_id=f"s1abc-{i}",
        exchange_order_id=str(i),
        symbol="BTC/USDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=Decimal(1),
        price=Decimal(100),
        filled=Decimal(0),
        status=ExchangeOrderStatus.OPEN,
        timestamp_ms=i,
    )
    return OrderUpdated(order)


def test_fills_and_order_updates_are_never_dropped_or_conflated_but_push_back() -> None:
    """With the default (conflating) bus, a slow subscriber gets every fill and order update in order; the
    publisher waits at the bound instead of dropping any."""
    got: list[Event] = []
    waited: list[int] = []

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.001)
        got.append(event)

    async def main() -> None:
        bus = EventBus(queue_size=3)
        bus.subscribe(TradeExecuted, slow, name="fills")
        bus.subscribe(OrderUpdated, slow, name="orders")
        async with running(bus):
            for i in range(40):
                for event in (_fill(i), _update(i)):
                    publish = asyncio.create_task(bus.publish(event))
                    await asyncio.sleep(0)
                    if not publish.done():
                        waited.append(i)
                    await publish
            await bus.drain()
        stats = bus.statistics()
        assert (stats.delivered, stats.conflated) == (80, 0)
        assert all(s.max_depth <= 3 for s in stats.subscribers)

    run(main)
    assert [e for e in got if isinstance(e, TradeExecuted)] == [_fill(i) for i in range(40)]
    assert [e for e in got if isinstance(e, OrderUpdated)] == [_update(i) for i in range(40)]
    assert waited, "the publisher never had to wait: the bound was never reached"


SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT")


async def _saturate(bus: EventBus, seconds: float) -> tuple[int, int, dict[str, list[int]], dict[str, int]]:
    """A producer publishing ticks of SYMBOLS as fast as it can (yielding once per tick, as a stream does)
    to a strategy that awaits 1 ms per tick; returns (published, deepest queue seen, handled, newest)."""
    handled: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    newest: dict[str, int] = dict.fromkeys(SYMBOLS, -1)
    stale: list[tuple[str, int, int]] = []

    async def strategy(event: MarketData) -> None:
        symbol, seq = event.tick.symbol, event.tick.timestamp_ms
        if seq != newest[symbol]:  # acting on a tick while a newer one of its symbol was already received
            stale.append((symbol, seq, newest[symbol]))
        handled[symbol].append(seq)
        await asyncio.sleep(0.001)  # a decision that awaits an order request and a state save

    bus.subscribe(MarketData, strategy, name="strategy")
    published = deepest = 0
    async with running(bus):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            symbol = SYMBOLS[published % len(SYMBOLS)]
            newest[symbol] = published
            await bus.publish(tick(symbol, published))
            published += 1
            deepest = max(deepest, bus.statistics().subscribers[0].depth)
            await asyncio.sleep(0)
        if bus.statistics().conflated:  # the conflating bus: what is queued is a tick per symbol at most
            await bus.drain()
            assert stale == []
    return published, deepest, handled, newest


def test_a_saturating_producer_keeps_market_data_at_most_one_tick_per_symbol() -> None:
    """Measured: under a producer far faster than the strategy the queue never holds more than one tick per
    symbol, the strategy never acts on a superseded tick, and it ends on the newest price of each symbol
    (the FIFO bus of before, same run: thousands of ticks deep)."""

    async def main() -> None:
        bus = EventBus()
        published, deepest, handled, newest = await _saturate(bus, 0.5)
        (sub,) = bus.statistics().subscribers
        assert published > 20 * sub.delivered  # saturated: the strategy handled a small fraction
        assert deepest <= len(SYMBOLS) and sub.max_depth <= len(SYMBOLS)
        assert sub.conflated + sub.delivered == published
        for symbol in SYMBOLS:
            assert handled[symbol] == sorted(set(handled[symbol]))  # per symbol: only ever newer
            assert handled[symbol][-1] == newest[symbol]  # the last price it acted on is the newest

        fifo = EventBus(conflate={})
        fifo_published, fifo_deepest, _, _ = await _saturate(fifo, 0.5)
        assert fifo_deepest > 100 * len(SYMBOLS), (fifo_published, fifo_deepest)

    run(main)
