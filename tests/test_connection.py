"""Backoff, heartbeat and escalation of a supervised stream, and the ConnectionMonitor."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from s1mpled.connection import Backoff, Hearing, Link
from s1mpled.connection_monitor import ConnectionMonitor
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
    rng = random.Random(1)
    delays = [b.delay(n, rng) for n in range(50)]  # consecutive attempts
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


# ----------------------------------------------------------------------------- Hearing: proof of life


def _h() -> Hearing:
    h = Hearing(heartbeat_s=3.0, grace_s=3.0)
    h.on_subscribed(0.0)
    return h


ACCOUNT = {"USDT": (Decimal(100), Decimal(0)), "ETH": (Decimal(1), Decimal(0))}
AFTER_FILL = {"USDT": (Decimal(0), Decimal(0)), "ETH": (Decimal(2), Decimal(0))}


def test_silence_alone_proves_nothing_either_way() -> None:
    """A quiet stream whose account looks agree with it is never deaf, however long it is quiet."""
    h = _h()
    for t in range(0, 600, 3):
        if h.look_due(float(t)):
            h.on_look(float(t), ACCOUNT, {}, 1, clean=True)
        assert h.deaf(float(t)) is None


def test_an_account_change_the_stream_never_reported_makes_it_deaf_one_look_later() -> None:
    """Baseline at once, a disagreeing look is a suspicion, a second one (nothing heard between) the verdict."""
    h = _h()
    assert h.look_due(0.0)
    h.on_look(0.0, ACCOUNT, {}, 1, clean=True)
    assert not h.look_due(2.9) and h.look_due(3.0)
    h.on_look(3.0, AFTER_FILL, {}, 1, clean=True)
    assert h.deaf(3.0) is None
    h.on_look(6.0, AFTER_FILL, {}, 1, clean=True)
    reason = h.deaf(6.0)
    assert reason is not None and "account changed" in reason


def test_what_the_stream_reported_is_part_of_the_model() -> None:
    """Balances the stream itself reported explain the change: no suspicion."""
    h = _h()
    h.on_look(0.0, ACCOUNT, {}, 1, clean=True)
    h.on_look(3.0, AFTER_FILL, AFTER_FILL, 1, clean=True)
    h.on_look(6.0, AFTER_FILL, AFTER_FILL, 1, clean=True)
    assert h.deaf(6.0) is None and h.suspected_at is None


def test_hearing_anything_clears_a_suspicion_and_unclean_looks_count_for_nothing() -> None:
    """An event in between (the report was in flight) or a look the stream raced proves nothing."""
    h = _h()
    h.on_look(0.0, ACCOUNT, {}, 1, clean=True)
    h.on_look(3.0, AFTER_FILL, {}, 1, clean=True)
    h.on_heard(4.0)
    assert not h.look_due(6.0) and h.look_due(7.0)  # quiet for a heartbeat again first
    h.on_look(7.0, AFTER_FILL, {}, 1, clean=False)
    h.on_look(10.0, AFTER_FILL, {}, 1, clean=True)
    assert h.deaf(10.0) is None


def test_a_new_stream_record_is_a_new_baseline() -> None:
    """ccxt starting its record of balances afresh (new connection) re-baselines instead of comparing."""
    h = _h()
    h.on_look(0.0, ACCOUNT, {}, 1, clean=True)
    h.on_look(3.0, AFTER_FILL, {}, 2, clean=True)
    h.on_look(6.0, AFTER_FILL, {}, 2, clean=True)
    assert h.deaf(6.0) is None


def test_an_acknowledged_order_must_be_reported_within_the_grace() -> None:
    """Our own request is a free probe: acknowledged and not on the stream within grace_s means deaf."""
    h = _h()
    h.expect("s1-1")
    assert h.deaf(100.0) is None  # no answer yet: nothing is owed
    h.acknowledged("s1-1", 10.0)
    assert h.deaf(12.9) is None
    reason = h.deaf(13.0)
    assert reason is not None and "s1-1" in reason


def test_a_report_that_overtakes_the_answer_or_a_failed_request_owes_nothing() -> None:
    """The stream is often faster than the REST answer; a rejected or failed request is never reported."""
    h = _h()
    h.expect("s1-1")
    h.on_heard(1.0, ["s1-1"])
    h.acknowledged("s1-1", 1.1)
    h.expect("s1-2")
    h.withdraw("s1-2")
    h.acknowledged("s1-2", 1.2)
    assert h.deaf(100.0) is None


def test_a_busy_stream_is_not_looked_at() -> None:
    """Looks cost a REST call: one right after subscribing, then only while quiet, one per heartbeat at most."""
    h = _h()
    h.on_look(0.0, ACCOUNT, {}, 1, clean=False)  # the first look raced an event: no baseline
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        h.on_heard(t)
        assert not h.look_due(t)
    assert not h.look_due(8.9) and h.look_due(9.0)


def test_nothing_is_owed_or_looked_at_without_a_subscription() -> None:
    """Not subscribed (reconnecting, or judged deaf): no expectations, no looks, no verdict."""
    h = _h()
    h.expect("s1-1")
    h.acknowledged("s1-1", 0.0)
    h.on_lost()
    h.expect("s1-2")
    h.acknowledged("s1-2", 0.0)
    assert h.deaf(100.0) is None and not h.look_due(100.0)


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0.1, 4.0)), max_size=80))
def test_a_stream_that_reports_every_change_is_never_judged_deaf(steps: list[tuple[bool, bool, float]]) -> None:
    """Whatever the timing, if every account change is in the stream's own record, there is no verdict."""
    h, now, account = _h(), 0.0, dict(ACCOUNT)
    for change, heard, gap in steps:
        now += gap
        if change:
            account = {**account, "USDT": (account["USDT"][0] - 1, Decimal(0))}
        if heard:
            h.on_heard(now)
        if h.look_due(now):
            h.on_look(now, account, {"USDT": account["USDT"]}, 1, clean=True)
        assert h.deaf(now) is None
