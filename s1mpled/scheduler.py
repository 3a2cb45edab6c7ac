"""Named periodic events: schedule.yaml's ticks (e.g. ``five_minute_reconciliation_tick``) onto the bus.

Spec §6.2.2: "De Scheduler publiceert een periodiek event (bv. five_minute_reconciliation_tick) zoals
gedefinieerd in schedule.yaml". Why it is built this way:

* which ticks are due is decided by the pure :class:`ScheduleState` (no clock read, no await), so the
  awkward cases -- a suspended machine, a slow publisher -- are plain arithmetic to test;
* deadlines sit on a fixed grid ``start + k * every_s`` computed from ``k``, never by adding periods
  up, so thousands of periods do not drift;
* after a stall a schedule fires once, not once per missed period (a burst of reconciliations after
  a resume helps nobody); its next deadline is the next grid point after now;
* :class:`Scheduler` is the thin async runner. It awaits ``publish``, so bus backpressure reaches it
  and ticks coalesce instead of piling up. The :class:`Clock` is injected: tests use a
  manual clock (``tests/clock.py``) and never sleep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from s1mpled.errors import LocalStateError
from s1mpled.events import ScheduledEvent

__all__ = ["Clock", "MonotonicClock", "Schedule", "ScheduleState", "Scheduler"]

log = logging.getLogger("s1mpled.scheduler")
_MONOTONIC_RESOLUTION = time.get_clock_info("monotonic").resolution


class Clock(Protocol):
    """Monotonic time and sleeping, injected so that tests control time."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (at once, after one yield, if it already is)."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` (the event loop's clock) and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        # asyncio runs a timer up to one clock resolution early; sleeping that much longer never returns early.
        await asyncio.sleep(max(0.0, deadline - time.monotonic()) + _MONOTONIC_RESOLUTION)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One named periodic event: ``name`` fires every ``every_s`` seconds."""

    name: str
    every_s: float


def _validated(schedules: Sequence[Schedule]) -> tuple[Schedule, ...]:
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        raise LocalStateError(f"schedule names must be unique: {names}")
    for s in schedules:
        if not (math.isfinite(s.every_s) and s.every_s > 0):
            raise LocalStateError(f"schedule {s.name!r}: every_s must be a positive number, not {s.every_s}")
    return tuple(schedules)


def _last_index_at_or_before(start: float, every: float, now: float) -> int:
    """The largest k with ``start + k * every <= now`` (exact despite float rounding in the division)."""
    k = math.floor((now - start) / every)
    while start + (k + 1) * every <= now:
        k += 1
    while start + k * every > now:
        k -= 1
    return k


class ScheduleState:
    """Which firings are due: pure arithmetic on the grid ``start + k * every_s`` (k = 1, 2, ...)."""

    def __init__(self, schedules: Sequence[Schedule], start: float) -> None:
        self._schedules = _validated(schedules)
        self._start = start
        self._next = [1] * len(self._schedules)  # per schedule, the k of its next firing
        self._missed = dict.fromkeys((s.name for s in self._schedules), 0)

    @property
    def missed(self) -> Mapping[str, int]:
        """Per schedule, how many firings were coalesced away by stalls so far."""
        return dict(self._missed)

    def due(self, now: float) -> list[tuple[str, float]]:
        """The firings due at or before ``now`` as (name, due time) in due order; each schedule fires at most once."""
        firings: list[tuple[float, int, str]] = []
        for i, schedule in enumerate(self._schedules):
            k = self._next[i]
            if self._at(schedule, k) > now:
                continue
            last = max(k, _last_index_at_or_before(self._start, schedule.every_s, now))
            self._missed[schedule.name] += last - k
            self._next[i] = last + 1
            firings.append((self._at(schedule, last), i, schedule.name))
        firings.sort()
        return [(name, due) for due, _, name in firings]

    def next_deadline(self) -> float | None:
        """The earliest pending due time, or None without schedules."""
        return min((self._at(s, k) for s, k in zip(self._schedules, self._next, strict=True)), default=None)

    def _at(self, schedule: Schedule, k: int) -> float:
        return self._start + k * schedule.every_s


class Scheduler:
    """Publishes a ScheduledEvent for each due firing, forever; the grid starts when run() starts."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        publish: Callable[[ScheduledEvent], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._schedules = _validated(schedules)
        self._publish = publish
        self._clock = clock

    async def run(self) -> None:
        """Sleep until the next deadline, publish what is due, repeat; runs until cancelled."""
        state = ScheduleState(self._schedules, self._clock.now())
        while (deadline := state.next_deadline()) is not None:
            await self._clock.sleep_until(deadline)
            await self._fire(state)
        await asyncio.get_running_loop().create_future()  # no schedules: nothing to do until cancelled

    async def _fire(self, state: ScheduleState) -> None:
        missed_before = state.missed
        for name, due in state.due(self._clock.now()):
            extra = {"EVENT": ScheduledEvent.TOPIC, "SCHEDULE": name}
            if skipped := state.missed[name] - missed_before[name]:
                log.warning("schedule %s missed %d firings (stall); firing once", name, skipped, extra=extra)
            log.debug("schedule %s due at %.3f", name, due, extra=extra)
            await self._publish(ScheduledEvent(name=name, due_ms=round(due * 1000)))
