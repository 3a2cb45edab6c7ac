"""A clock for tests that moves only when told (the scheduler's :class:`~s1mpled.scheduler.Clock`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from s1mpled.errors import LocalStateError

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that moves only when told, for tests: sleepers wake when ``advance()`` or ``jump()`` passes them.

    After waking sleepers it yields ``settle_iterations`` times to the event loop so the woken tasks
    run (and, say, publish and sleep again) before time moves on. Longer chains of hand-offs should
    be awaited on a condition (``EventBus.drain()``, an ``asyncio.Event``).
    """

    def __init__(self, start: float = 0.0, *, settle_iterations: int = 20) -> None:
        self._now = start
        self._settle_iterations = settle_iterations
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock (lets a test wait until a task is idle)."""
        return len(self._sleepers)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        entry = (deadline, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._sleepers, entry)
        try:
            await entry[2]
        finally:
            if entry in self._sleepers:  # cancelled before its deadline
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass as in a running process: each sleeper wakes at its own deadline, in order."""
        target = self._now + _non_negative(seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            self._now = max(self._now, self._sleepers[0][0])
            self._wake()
            await self._settle()
        self._now = target
        await self._settle()

    async def jump(self, seconds: float) -> None:
        """Move time at once, as a suspended machine sees it: every sleeper due by then wakes at the new time."""
        self._now += _non_negative(seconds)
        self._wake()
        await self._settle()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            future = heapq.heappop(self._sleepers)[2]
            if not future.done():
                future.set_result(None)

    async def _settle(self) -> None:
        for _ in range(self._settle_iterations):
            await asyncio.sleep(0)


def _non_negative(seconds: float) -> float:
    if not seconds >= 0:
        raise LocalStateError(f"a clock cannot move by {seconds} seconds")
    return seconds
