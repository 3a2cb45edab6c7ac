"""Backoff, heartbeat and escalation of a supervised stream, and the ConnectionMonitor."""

from __future__ import annotations

import asyncio
import random

from hypothesis import given
from hypothesis import strategies as st

from s1mpled.connection import Backoff, ConnectionMonitor, Link, backoff_delays
from s1mpled.events import ConnectionLost, ConnectionRestored, ConnectionUnstableDetected, Event


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_full_jitter_and_capped(attempt: int, seed: int) -> None:
    """Every delay lies in [0, min(cap, base * 2**attempt)] -- never above the cap, whatever the attempt."""
    b = Backoff(base_s=0.5, cap_s=30.0)
    delay = b.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= b.ceiling(attempt) <= 30.0
    assert b.ceiling(attempt) == min(30.0, 0.5 * 2 ** min(attempt, 62))


def test_backoff_schedule_grows_then_plateaus() -> None:
    """The ceilings double from the base up to the cap; jitter spreads a fleet (delays are not all equal)."""
    b = Backoff(base_s=0.25, cap_s=4.0)
    assert [b.ceiling(n) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    gen = backoff_delays(b, random.Random(1))
    delays = [next(gen) for _ in range(50)]
    assert len(set(delays)) == 50 and max(delays) <= 4.0


def test_lost_is_published_once_after_n_failures_and_restored_after_reconnect() -> None:
    """N consecutive failures give exactly one CONNECTION_LOST; the next success gives CONNECTION_RESTORED."""
    link = Link("user", max_failures=3, heartbeat_s=10)
    assert link.on_connected(0.0) == []
    events: list[Event] = []
    for _ in range(6):
        events += link.on_failure("boom")
    assert events == [ConnectionLost("user", 3, "boom")]
    assert link.on_connected(5.0) == [ConnectionRestored("user")]
    assert (link.failures, link.lost) == (0, False)
    assert link.on_failure("again") == [] and link.on_failure("again") == []


def test_first_connection_is_not_a_restore_but_a_reconnect_is() -> None:
    """Connecting at start announces nothing; reconnecting after a drop triggers a reconciliation."""
    link = Link("market", max_failures=5, heartbeat_s=10)
    assert link.on_connected(0.0) == []
    link.on_failure("dropped")
    assert link.on_connected(1.0) == [ConnectionRestored("market")]


def test_heartbeat_declares_a_silent_stream_dead() -> None:
    """A connected stream that delivers nothing for longer than the heartbeat is stale."""
    link = Link("market", max_failures=5, heartbeat_s=10)
    link.on_connected(100.0)
    assert not link.stale(109.0)
    link.on_data(109.0)
    assert not link.stale(118.0) and link.stale(119.5)


def test_first_attempt_after_health_is_immediate_then_backs_off() -> None:
    """After a good period the first reconnect is immediate; later ones wait within the growing ceiling."""
    link = Link("market", max_failures=5, heartbeat_s=10, backoff=Backoff(1.0, 8.0))
    rng = random.Random(3)
    assert link.next_delay(rng) == 0.0
    link.on_failure("x")
    assert 0.0 <= link.next_delay(rng) <= 1.0
    link.on_failure("x")
    assert 0.0 <= link.next_delay(rng) <= 2.0


def test_connection_monitor_turns_lost_into_unstable() -> None:
    """CONNECTION_LOST makes the ConnectionMonitor publish CONNECTION_UNSTABLE_DETECTED with the reason."""
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    monitor = ConnectionMonitor(publish)
    asyncio.run(monitor.on_lost(ConnectionLost("user", 5, "timeout")))
    assert len(published) == 1 and isinstance(published[0], ConnectionUnstableDetected)
    assert "user stream lost after 5 attempts: timeout" in published[0].reason
