"""The one clock convention: a time is an ``int`` of milliseconds, and a clock is a function returning one.

The pure cores never read a clock: they take ``now_ms`` as an argument. The shells that call them take a
:data:`ClockMs` (injected: tests pass a fake, e.g. ``tests/clock.py``) and default to :func:`wall_ms`, the
one place the real wall clock is read. The scheduler's monotonic clock (``s1mpled.scheduler.Clock``) is the
exception on purpose: it measures intervals and sleeps, it does not tell the time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

__all__ = ["ClockMs", "exchange_offset_s", "wall_ms"]

ClockMs = Callable[[], int]


def wall_ms() -> int:
    """Now, in integer milliseconds since the epoch (what exchanges stamp orders and trades with)."""
    return time.time_ns() // 1_000_000


async def exchange_offset_s(fetch_time: Callable[[], Awaitable[object]]) -> float | None:
    """The exchange's clock minus ours, in seconds, from one time request (``/api/v3/time``) against the middle
    of the time it took -- the offset Binance judges ``recvWindow`` by (-1021). None if the answer holds no
    time. ``s1mpled doctor`` and the daemon's metrics measure it this one way."""
    before = time.time()
    server_ms = await fetch_time()
    after = time.time()
    if isinstance(server_ms, bool) or not isinstance(server_ms, int | float):
        return None
    return float(server_ms) / 1000 - (before + after) / 2
