"""The scheduler: pure due-time arithmetic on a grid, the async runner on a ManualClock (no real sleeps)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.errors import LocalStateError
from s1mpled.events import ScheduledEvent
from s1mpled.scheduler import MonotonicClock, Schedule, Scheduler, ScheduleState
from tests.clock import ManualClock

T = TypeVar("T")
TICK = "five_minute_reconciliation_tick"


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, failing it if anything hangs for more than 5 s of real time."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


class Recorder:
    """A publish callback that records events with the clock time at which they were published."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.events: list[tuple[float, ScheduledEvent]] = []

    async def __call__(self, event: ScheduledEvent) -> None:
        self.events.append((self.clock.now(), event))

    def fired(self) -> list[tuple[str, int]]:
        return [(e.name, e.due_ms) for _, e in self.events]


@asynccontextmanager
async def scheduling(scheduler: Scheduler, clock: ManualClock) -> AsyncIterator[asyncio.Task[None]]:
    """Run the scheduler for the duration of the block (started at the clock's current time), then cancel it."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(scheduler.run())
        await clock.advance(0)
        yield task
        task.cancel()


# --- ScheduleState: pure ---------------------------------------------------------------------------


def test_first_firing_is_one_period_after_start() -> None:
    """Nothing is due before start + every_s; exactly at it the schedule fires with that due time."""
    state = ScheduleState([Schedule(TICK, 300.0)], start=1000.0)
    assert state.next_deadline() == 1300.0
    assert state.due(1299.999) == []
    assert state.due(1300.0) == [(TICK, 1300.0)]
    assert state.due(1300.0) == []
    assert state.next_deadline() == 1600.0


def test_a_stall_fires_once_and_reanchors_on_the_grid() -> None:
    """After missing many periods a schedule fires once, at the latest grid point, and next on the grid after now."""
    state = ScheduleState([Schedule(TICK, 300.0)], start=0.0)
    assert state.due(300.0) == [(TICK, 300.0)]
    assert state.due(3_000_050.0) == [(TICK, 3_000_000.0)]
    assert state.missed == {TICK: 9_998}
    assert state.next_deadline() == 3_000_300.0
    assert state.due(3_000_299.0) == []
    assert state.due(3_000_300.0) == [(TICK, 3_000_300.0)]


def test_several_schedules_come_out_in_due_order() -> None:
    """Firings due at one call are sorted by due time; equal due times keep the declaration order."""
    state = ScheduleState([Schedule("b", 90.0), Schedule("a", 60.0), Schedule("c", 45.0)], start=0.0)
    assert state.next_deadline() == 45.0
    assert state.due(100.0) == [("a", 60.0), ("b", 90.0), ("c", 90.0)]
    assert state.due(180.0) == [("b", 180.0), ("a", 180.0), ("c", 180.0)]


def test_no_schedules_means_no_deadline() -> None:
    """An empty schedule list has no deadline and never anything due."""
    state = ScheduleState([], start=0.0)
    assert state.next_deadline() is None
    assert state.due(1e9) == []


@pytest.mark.parametrize(
    "schedules",
    [
        [Schedule("a", 0.0)],
        [Schedule("a", -1.0)],
        [Schedule("a", math.nan)],
        [Schedule("a", math.inf)],
        [Schedule("a", 1.0), Schedule("a", 2.0)],
    ],
)
def test_invalid_schedules_are_refused(schedules: list[Schedule]) -> None:
    """Non-positive or non-finite periods and duplicate names are a bug (config validates them first)."""
    with pytest.raises(LocalStateError):
        ScheduleState(schedules, start=0.0)
    with pytest.raises(LocalStateError):
        Scheduler(schedules, Recorder(ManualClock()), ManualClock())


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(min_value=-1e6, max_value=1e6),
    everys=st.lists(st.floats(min_value=1e-3, max_value=1e4), min_size=1, max_size=4),
    steps=st.lists(st.floats(min_value=0.0, max_value=5e4), max_size=30),
)
def test_due_never_overfires_and_stays_on_the_grid(start: float, everys: list[float], steps: list[float]) -> None:
    """For any schedules and clock steps, firings per schedule <= elapsed/every + 1, all on start + k*every."""
    schedules = [Schedule(f"s{i}", every) for i, every in enumerate(everys)]
    state = ScheduleState(schedules, start=start)
    now = start
    fired: dict[str, list[float]] = {s.name: [] for s in schedules}
    for step in steps:
        now += step
        firings = state.due(now)
        assert [due for _, due in firings] == sorted(due for _, due in firings)
        for name, due in firings:
            fired[name].append(due)
            assert due <= now
        deadline = state.next_deadline()
        assert deadline is not None and deadline > now
    for s in schedules:
        dues = fired[s.name]
        assert len(dues) <= (now - start) / s.every_s + 1
        assert dues == sorted(set(dues))
        for due in dues:
            k = round((due - start) / s.every_s)
            assert k >= 1
            assert due == start + k * s.every_s


# --- Scheduler on a ManualClock ----------------------------------------------------------------------


def test_many_periods_fire_exactly_on_the_grid_without_drift() -> None:
    """Over 2000 periods the tick fires once per period, each at start + k * every_s exactly."""
    clock = ManualClock(start=50.0)
    publish = Recorder(clock)

    async def main() -> None:
        async with scheduling(Scheduler([Schedule(TICK, 300.0)], publish, clock), clock):
            for _ in range(2000):
                await clock.advance(300.0)

    run(main)
    assert publish.fired() == [(TICK, round((50.0 + k * 300.0) * 1000)) for k in range(1, 2001)]
    assert [at for at, _ in publish.events] == [50.0 + k * 300.0 for k in range(1, 2001)]


def test_a_slow_publish_does_not_shift_the_grid() -> None:
    """When each publish takes 7 s (on the clock), later deadlines still sit on the original grid."""
    clock = ManualClock()
    fired: list[int] = []

    async def slow_publish(event: ScheduledEvent) -> None:
        await clock.sleep_until(clock.now() + 7.0)
        fired.append(event.due_ms)

    async def main() -> None:
        async with scheduling(Scheduler([Schedule(TICK, 60.0)], slow_publish, clock), clock):
            await clock.advance(60.0 * 100 + 10.0)

    run(main)
    assert fired == [k * 60_000 for k in range(1, 101)]


def test_multiple_schedules_interleave_in_due_order() -> None:
    """Two schedules publish in due-time order; when both are due together, declaration order breaks the tie."""
    clock = ManualClock()
    publish = Recorder(clock)

    async def main() -> None:
        schedules = [Schedule("fast", 60.0), Schedule("slow", 90.0)]
        async with scheduling(Scheduler(schedules, publish, clock), clock):
            await clock.advance(360.0)

    run(main)
    assert publish.fired() == [
        ("fast", 60_000),
        ("slow", 90_000),
        ("fast", 120_000),
        ("fast", 180_000),
        ("slow", 180_000),
        ("fast", 240_000),
        ("slow", 270_000),
        ("fast", 300_000),
        ("fast", 360_000),
        ("slow", 360_000),
    ]


def test_a_suspended_machine_fires_once_then_continues_on_the_grid(caplog: pytest.LogCaptureFixture) -> None:
    """After a 1-hour jump a 5-minute tick fires once (logged as a stall), then on the original grid."""
    clock = ManualClock()
    publish = Recorder(clock)

    async def main() -> None:
        async with scheduling(Scheduler([Schedule(TICK, 300.0)], publish, clock), clock):
            await clock.advance(300.0)
            await clock.jump(3600.0 + 10.0)
            assert publish.fired() == [(TICK, 300_000), (TICK, 3_900_000)]
            await clock.advance(289.0)
            assert len(publish.events) == 2
            await clock.advance(1.0)

    with caplog.at_level(logging.WARNING, logger="s1mpled.scheduler"):
        run(main)
    assert publish.fired() == [(TICK, 300_000), (TICK, 3_900_000), (TICK, 4_200_000)]
    (record,) = caplog.records
    assert "missed 11 firings" in record.getMessage()
    assert getattr(record, "SCHEDULE", None) == TICK


def test_publish_is_awaited_so_backpressure_coalesces_ticks() -> None:
    """While publish() is blocked no further ticks are published; after it returns the backlog fires once."""
    clock = ManualClock()
    gate = asyncio.Event()
    started: list[int] = []
    finished: list[int] = []

    async def blocked_publish(event: ScheduledEvent) -> None:
        started.append(event.due_ms)
        await gate.wait()
        finished.append(event.due_ms)

    async def main() -> None:
        async with scheduling(Scheduler([Schedule(TICK, 10.0)], blocked_publish, clock), clock):
            await clock.advance(35.0)
            assert (started, finished) == ([10_000], [])
            gate.set()
            await clock.advance(0)
            assert finished == [10_000, 30_000]
            await clock.advance(5.0)
            assert finished == [10_000, 30_000, 40_000]

    run(main)


def test_cancelling_run_propagates_and_leaves_no_sleeper() -> None:
    """Cancelling run() while it sleeps ends it cancelled and removes its sleeper from the clock."""
    clock = ManualClock()

    async def main() -> None:
        task = asyncio.create_task(Scheduler([Schedule(TICK, 300.0)], Recorder(clock), clock).run())
        await clock.advance(0)
        assert clock.sleepers == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleepers == 0

    run(main)


def test_cancelling_run_during_publish_cancels_the_publish() -> None:
    """Cancelling run() while it awaits publish() cancels that publish and run() ends cancelled."""
    clock = ManualClock()
    saw_cancel: list[bool] = []

    async def stuck_publish(event: ScheduledEvent) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.append(True)
            raise

    async def main() -> None:
        task = asyncio.create_task(Scheduler([Schedule(TICK, 1.0)], stuck_publish, clock).run())
        await clock.advance(0)
        await clock.advance(1.0)
        assert clock.sleepers == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert saw_cancel == [True]


def test_no_schedules_waits_until_cancelled() -> None:
    """A scheduler without schedules publishes nothing and runs until cancelled."""
    clock = ManualClock()
    publish = Recorder(clock)

    async def main() -> None:
        task = asyncio.create_task(Scheduler([], publish, clock).run())
        await clock.advance(1e6)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert publish.events == []


@settings(max_examples=40, deadline=None)
@given(
    everys=st.lists(st.integers(min_value=10, max_value=600), min_size=1, max_size=3),
    steps=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=900)), max_size=10),
)
def test_scheduler_never_overfires_and_stays_on_the_grid(everys: list[int], steps: list[tuple[bool, int]]) -> None:
    """For random schedules, advances and jumps, firings <= elapsed/every + 1, each due on the grid and not late."""
    clock = ManualClock()
    publish = Recorder(clock)
    schedules = [Schedule(f"s{i}", float(every)) for i, every in enumerate(everys)]

    async def main() -> None:
        async with scheduling(Scheduler(schedules, publish, clock), clock):
            for is_jump, seconds in steps:
                await (clock.jump(seconds) if is_jump else clock.advance(seconds))

    run(main)
    elapsed = clock.now()
    for s in schedules:
        mine = [(at, e.due_ms) for at, e in publish.events if e.name == s.name]
        assert len(mine) <= elapsed / s.every_s + 1
        dues = [due for _, due in mine]
        assert dues == sorted(set(dues))
        for at, due in mine:
            assert due % round(s.every_s * 1000) == 0
            assert due <= at * 1000 < due + s.every_s * 1000


# --- the clocks themselves -------------------------------------------------------------------------


def test_manual_clock_wakes_sleepers_in_deadline_order_at_their_deadlines() -> None:
    """advance() wakes each sleeper at its own deadline, in deadline order, with now() equal to that deadline."""
    clock = ManualClock(start=10.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.now()))

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for name, deadline in [("c", 40.0), ("a", 20.0), ("b", 30.0), ("past", 5.0)]:
                group.create_task(sleeper(name, deadline))
            await clock.advance(0)
            assert woke == [("past", 10.0)]
            await clock.advance(25.0)
            assert clock.now() == 35.0
            await clock.advance(100.0)

    run(main)
    assert woke == [("past", 10.0), ("a", 20.0), ("b", 30.0), ("c", 40.0)]


def test_manual_clock_jump_wakes_everyone_at_the_new_time() -> None:
    """jump() moves time at once: every sleeper due by then wakes and sees the new time."""
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper(deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append(clock.now())

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for deadline in (1.0, 2.0, 50.0):
                group.create_task(sleeper(deadline))
            await clock.jump(10.0)
            assert woke == [10.0, 10.0]
            await clock.jump(40.0)

    run(main)
    assert woke == [10.0, 10.0, 50.0]


def test_manual_clock_refuses_to_go_backwards() -> None:
    """Moving a ManualClock by a negative or NaN amount is a bug."""

    async def main() -> None:
        clock = ManualClock()
        for bad in (-1.0, math.nan):
            with pytest.raises(LocalStateError):
                await clock.advance(bad)
            with pytest.raises(LocalStateError):
                await clock.jump(bad)
        assert clock.now() == 0.0

    run(main)


def test_monotonic_clock_never_returns_before_the_deadline() -> None:
    """The real clock's sleep_until returns at or after its deadline (a 5 ms sleep: this tests the clock itself)."""
    clock = MonotonicClock()

    async def main() -> None:
        before = clock.now()
        await clock.sleep_until(before - 1.0)  # already passed: returns at once
        deadline = clock.now() + 0.005
        await clock.sleep_until(deadline)
        assert time.monotonic() >= deadline >= before

    run(main)
