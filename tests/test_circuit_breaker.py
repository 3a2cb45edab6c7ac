"""The circuit breaker: the pure Breaker's transitions, and the worker that persists before it announces."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.circuit_breaker import Breaker, BreakerState, CircuitBreakerWorker
from s1mpled.events import (
    ConnectionRestored,
    ConnectionUnstableDetected,
    Event,
    ExecuteEmergencyExit,
    HaltNewSignals,
    ReconciliationCompleted,
    ResumeSignals,
)
from s1mpled.state import StateDirectory, StateFile
from s1mpled.state.inspect import inspect

T = TypeVar("T")
STATE_NAME = "circuit-breaker.state.json"
AUTO_MS = 60_000


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, failing it if anything hangs for more than 5 s."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


# ----------------------------------------------------------------------------- the pure Breaker


def test_a_new_breaker_is_closed() -> None:
    """The initial breaker is closed, automatic, unstable-unknown and cannot auto close."""
    b = Breaker()
    assert (b.state, b.halted, b.manual, b.stable_since_ms, b.reconciled_after_stable) == (
        BreakerState.CLOSED,
        False,
        False,
        None,
        False,
    )
    assert not b.may_auto_close(10**12, AUTO_MS)


def test_trip_opens_with_reason_time_and_origin() -> None:
    """A trip opens the breaker, remembers why, when and whether an operator did it, and forgets stability."""
    b = Breaker().connection_stable(5).reconciled().trip("flaky", 100)
    assert b == Breaker(BreakerState.OPEN, "flaky", False, 100, None, False)
    assert b.halted
    manual = Breaker().trip("operator", 7, manual=True)
    assert manual == Breaker(BreakerState.OPEN, "operator", True, 7, None, False)


def test_an_automatic_trip_of_an_open_automatic_breaker_restarts_it() -> None:
    """A second automatic trip keeps the breaker open with the new reason and resets the stability clock."""
    b = Breaker().trip("first", 100).connection_stable(200).reconciled().trip("second", 300)
    assert b == Breaker(BreakerState.OPEN, "second", False, 300, None, False)


def test_an_automatic_trip_never_downgrades_a_manual_halt() -> None:
    """An automatic trip of a manually opened breaker keeps it manual (reason and time) but resets stability."""
    b = Breaker().trip("operator", 100, manual=True).connection_stable(150).reconciled()
    after = b.trip("flaky", 300)
    assert after == Breaker(BreakerState.OPEN, "operator", True, 100, None, False)


def test_a_manual_halt_overrides_an_automatic_one() -> None:
    """An operator's halt of an automatically opened breaker makes it manual."""
    b = Breaker().trip("flaky", 100).trip("operator", 200, manual=True)
    assert b == Breaker(BreakerState.OPEN, "operator", True, 200, None, False)


def test_resume_closes_from_any_state() -> None:
    """resume() returns the initial closed breaker, whether it was open (manual or not) or closed."""
    for b in (Breaker(), Breaker().trip("x", 1), Breaker().trip("x", 1, manual=True).connection_stable(2)):
        assert b.resume() == Breaker()


def test_connection_stable_keeps_the_first_time() -> None:
    """The stability clock starts at the first restore and is not restarted by later ones."""
    b = Breaker().trip("x", 1).connection_stable(10)
    assert b.stable_since_ms == 10 and not b.reconciled_after_stable
    assert b.connection_stable(20) is b


def test_reconciled_counts_only_after_stability() -> None:
    """A reconciliation before the connection is stable changes nothing; one after it is remembered."""
    tripped = Breaker().trip("x", 1)
    assert tripped.reconciled() is tripped
    assert tripped.connection_stable(5).reconciled().reconciled_after_stable


@pytest.mark.parametrize("manual", [False, True])
@pytest.mark.parametrize("setting", [None, AUTO_MS])
@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("reconciled", [False, True])
@pytest.mark.parametrize("elapsed", [0, AUTO_MS - 1, AUTO_MS, AUTO_MS + 1])
def test_may_auto_close_needs_every_condition(
    manual: bool, setting: int | None, stable: bool, reconciled: bool, elapsed: int
) -> None:
    """Auto close is due only if open, automatic, configured, stable long enough and reconciled since."""
    b = Breaker().trip("x", 1_000, manual=manual)
    if stable:
        b = b.connection_stable(2_000)
    if reconciled:
        b = b.reconciled()
    expected = not manual and setting is not None and stable and reconciled and elapsed >= AUTO_MS
    assert b.may_auto_close(2_000 + elapsed, setting) is expected


def test_a_closed_breaker_never_auto_closes() -> None:
    """A closed breaker that saw a stable connection and a reconciliation has nothing to close."""
    b = Breaker().connection_stable(0).reconciled()
    assert b.reconciled_after_stable and not b.may_auto_close(10 * AUTO_MS, AUTO_MS)


# Events for the model test: (kind, ms to advance the clock first)
_EVENTS = st.lists(
    st.tuples(st.sampled_from(["trip", "halt", "resume", "stable", "reconciled"]), st.integers(0, 2 * AUTO_MS)),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(_EVENTS, st.integers(0, 2 * AUTO_MS))
def test_auto_close_matches_an_independent_model(events: list[tuple[str, int]], wait: int) -> None:
    """For any event history, auto close is due exactly when the model says: since the last trip (or resume)
    no manual halt, a first stable time at least AUTO_MS ago, and a reconciliation after it."""
    b, now = Breaker(), 0
    history: list[tuple[str, int]] = []  # events since the last resume
    for kind, advance in events:
        now += advance
        if kind == "trip":
            b = b.trip("flaky", now)
        elif kind == "halt":
            b = b.trip("operator", now, manual=True)
        elif kind == "resume":
            b = b.resume()
        elif kind == "stable":
            b = b.connection_stable(now)
        else:
            b = b.reconciled()
        history = [] if kind == "resume" else [*history, (kind, now)]
    now += wait
    trips = [i for i, (k, _) in enumerate(history) if k in ("trip", "halt")]
    is_open = bool(trips)
    manual = any(k == "halt" for k, _ in history)
    since_trip = history[trips[-1] + 1 :] if trips else history
    stables = [i for i, (k, _) in enumerate(since_trip) if k == "stable"]
    stable_at = since_trip[stables[0]][1] if stables else None
    reconciled = bool(stables) and any(k == "reconciled" for k, _ in since_trip[stables[0] + 1 :])
    assert b.halted is is_open
    assert b.manual is (is_open and manual)
    assert b.stable_since_ms == stable_at
    assert b.reconciled_after_stable is reconciled
    due = is_open and not manual and stable_at is not None and reconciled and now - stable_at >= AUTO_MS
    assert b.may_auto_close(now, AUTO_MS) is due
    assert not b.may_auto_close(now, None)


_BREAKERS = st.builds(
    Breaker,
    st.sampled_from(BreakerState),
    st.text(max_size=20),
    st.booleans(),
    st.integers(0, 2**53),
    st.none() | st.integers(0, 2**53),
    st.booleans(),
)


@given(_BREAKERS)
def test_state_round_trip(b: Breaker) -> None:
    """from_state(to_state()) gives back an equal breaker."""
    assert Breaker.from_state(b.to_state()) == b


# ----------------------------------------------------------------------------- the worker


class Clock:
    """An injected millisecond clock the test moves by hand."""

    def __init__(self, now: int = 1_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Harness:
    """A CircuitBreakerWorker on a real StateFile, recording what it publishes and alerts."""

    def __init__(self, file: StateFile, *, emergency_exit: bool = False, auto_close_after_s: float | None = None):
        self.file, self.clock = file, Clock()
        self.published: list[Event] = []
        self.on_disk_at_publish: list[dict[str, Any]] = []
        self.alerts: list[str] = []
        self.worker = CircuitBreakerWorker(
            file,
            self.publish,
            self.clock,
            emergency_exit=emergency_exit,
            auto_close_after_s=auto_close_after_s,
            alert=self.alert,
        )
        self.worker.load_state()

    async def publish(self, event: Event) -> None:
        self.published.append(event)
        self.on_disk_at_publish.append(inspect(self.file.path).record.state)

    async def alert(self, message: str) -> None:
        self.alerts.append(message)

    def kinds(self) -> list[type[Event]]:
        return [type(e) for e in self.published]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with StateDirectory.open(tmp_path / "state") as d:
        yield d


def test_halt_persists_before_publishing(state_dir: StateDirectory) -> None:
    """When HALT_NEW_SIGNALS is published, the open breaker is already durable on disk."""
    h = Harness(state_dir.file(STATE_NAME))

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("3 reconnects failed"))

    run(main)
    assert h.published == [HaltNewSignals("3 reconnects failed")]
    assert h.on_disk_at_publish[0]["state"] == "open"
    assert h.on_disk_at_publish[0]["reason"] == "3 reconnects failed"
    assert h.alerts == ["s1mpled circuit breaker OPEN: 3 reconnects failed"]


def test_an_open_breaker_stays_open_after_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A new worker loading the state of an open breaker is open (manual included), and says so CRITICAL."""
    with StateDirectory.open(tmp_path / "s") as d:
        h = Harness(d.file(STATE_NAME))
        h.clock.now = 5_000
        run(lambda: h.worker.halt("operator says stop", manual=True))
    caplog.clear()
    with StateDirectory.open(tmp_path / "s") as d, caplog.at_level(logging.CRITICAL, "s1mpled.circuit_breaker"):
        again = Harness(d.file(STATE_NAME))
        assert again.worker.breaker == Breaker(BreakerState.OPEN, "operator says stop", True, 5_000, None, False)
        assert again.published == []
    assert any("OPEN after restart" in r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL)


def test_emergency_exit_only_when_configured_and_automatic(state_dir: StateDirectory) -> None:
    """EXECUTE_EMERGENCY_EXIT follows the halt for an automatic opening when configured, never otherwise."""
    configured = Harness(state_dir.file("a.state.json"), emergency_exit=True)
    manual = Harness(state_dir.file("b.state.json"), emergency_exit=True)
    unconfigured = Harness(state_dir.file("c.state.json"), emergency_exit=False)

    async def main() -> None:
        await configured.worker.on_unstable(ConnectionUnstableDetected("down"))
        await manual.worker.halt("operator", manual=True)
        await unconfigured.worker.on_unstable(ConnectionUnstableDetected("down"))

    run(main)
    assert configured.published == [HaltNewSignals("down"), ExecuteEmergencyExit("down")]
    assert manual.kinds() == [HaltNewSignals]
    assert unconfigured.kinds() == [HaltNewSignals]


def test_one_alert_per_opening(state_dir: StateDirectory) -> None:
    """Repeated automatic trips of an open breaker alert and publish once; an opening after a resume again."""
    h = Harness(state_dir.file(STATE_NAME), emergency_exit=True)

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("one"))
        await h.worker.on_unstable(ConnectionUnstableDetected("two"))
        assert len(h.alerts) == 1
        await h.worker.resume("operator")
        await h.worker.on_unstable(ConnectionUnstableDetected("three"))

    run(main)
    assert h.alerts == ["s1mpled circuit breaker OPEN: one", "s1mpled circuit breaker OPEN: three"]
    assert h.kinds() == [HaltNewSignals, ExecuteEmergencyExit, ResumeSignals, HaltNewSignals, ExecuteEmergencyExit]


def test_resume_persists_before_publishing_and_is_idempotent(state_dir: StateDirectory) -> None:
    """resume() of an open breaker is durable before RESUME_SIGNALS; resuming a closed one does nothing."""
    h = Harness(state_dir.file(STATE_NAME))

    async def main() -> None:
        await h.worker.resume("nothing to do")
        assert h.published == []
        await h.worker.halt("operator", manual=True)
        await h.worker.resume("operator")
        await h.worker.resume("again")

    run(main)
    assert h.kinds() == [HaltNewSignals, ResumeSignals]
    assert h.on_disk_at_publish[-1]["state"] == "closed"
    assert not h.worker.breaker.halted


def test_auto_close_after_stable_time_and_reconciliation(state_dir: StateDirectory) -> None:
    """The worker closes an automatic breaker once stable for the configured time and reconciled after that."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=60)
    completed = ReconciliationCompleted("reconnect:user", 0)

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.on_reconciled(completed)  # before stability: does not count
        h.clock.now += 100_000
        await h.worker.maybe_auto_close()
        await h.worker.on_restored(ConnectionRestored("user"))
        h.clock.now += 59_999
        await h.worker.maybe_auto_close()  # stable, too short and not reconciled since
        await h.worker.on_reconciled(completed)  # reconciled, still 1 ms short
        assert h.worker.breaker.halted
        h.clock.now += 1
        await h.worker.maybe_auto_close()

    run(main)
    assert h.kinds() == [HaltNewSignals, ResumeSignals]
    assert inspect(h.file.path).record.state["state"] == "closed"


def test_auto_close_waits_for_a_reconciliation_after_stability(state_dir: StateDirectory) -> None:
    """Long stability alone does not close the breaker; the next reconciliation does."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=1)

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.on_restored(ConnectionRestored("user"))
        h.clock.now += 10_000
        await h.worker.maybe_auto_close()
        assert h.worker.breaker.halted
        await h.worker.on_reconciled(ReconciliationCompleted("schedule", 0))

    run(main)
    assert h.kinds() == [HaltNewSignals, ResumeSignals]


def test_a_manual_halt_never_auto_closes(state_dir: StateDirectory) -> None:
    """An operator's halt stays open through stability and reconciliations, however long."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=1)

    async def main() -> None:
        await h.worker.halt("operator", manual=True)
        await h.worker.on_restored(ConnectionRestored("user"))
        h.clock.now += 10**9
        await h.worker.on_reconciled(ReconciliationCompleted("schedule", 0))
        await h.worker.maybe_auto_close()

    run(main)
    assert h.worker.breaker.halted and h.kinds() == [HaltNewSignals]


def test_without_the_setting_only_an_operator_closes(state_dir: StateDirectory) -> None:
    """With auto_close_after unset, an automatic opening stays open until resume()."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=None)

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.on_restored(ConnectionRestored("user"))
        h.clock.now += 10**9
        await h.worker.on_reconciled(ReconciliationCompleted("schedule", 0))

    run(main)
    assert h.worker.breaker.halted and h.kinds() == [HaltNewSignals]


def test_unchanged_breaker_is_not_saved_again(state_dir: StateDirectory) -> None:
    """Events that change nothing (a reconciliation while unstable, a second restore) write nothing."""
    h = Harness(state_dir.file(STATE_NAME))

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.on_restored(ConnectionRestored("user"))
        generation = h.file.generation
        await h.worker.on_restored(ConnectionRestored("market"))
        await h.worker.on_reconciled(ReconciliationCompleted("schedule", 0))
        await h.worker.on_reconciled(ReconciliationCompleted("schedule", 0))
        assert h.file.generation == generation + 1  # only the first reconciliation changed the breaker

    run(main)
