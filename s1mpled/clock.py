"""The one clock convention: a time is an ``int`` of milliseconds, and a clock is a function returning one.

The pure cores never read a clock: they take ``now_ms`` as an argument. The shells that call them take a
:data:`ClockMs` (injected: tests pass a fake, e.g. ``tests/clock.py``) and default to :func:`wall_ms`, the
one place the real wall clock is read. The scheduler's monotonic clock (``s1mpled.scheduler.Clock``) is the
exception on purpose: it measures intervals and sleeps, it does not tell the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ClockMs", "wall_ms"]

ClockMs = Callable[[], int]


def wall_ms() -> int:
    """Now, in integer milliseconds since the epoch (what exchanges stamp orders and trades with)."""
    return time.time_ns() // 1_000_000
