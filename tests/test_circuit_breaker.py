"""The circuit breaker: the pure Breaker's transitions, and the worker that persists before it announces,
closes on the streams' health (never on counted events) and pursues the emergency exit as a goal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.circuit_breaker import Breaker, BreakerState, ExitProgress
from s1mpled.circuit_breaker_worker import CircuitBreakerWorker
from s1mpled.errors import ExchangeUnavailable
from s1mpled.events import (
    ConnectionUnstableDetected,
    Event,
    ExecuteEmergencyExit,
    HaltNewSignals,
    ResumeSignals,
)
from s1mpled.state import StateDirectory, StateFile
from s1mpled.state.inspect import inspect

T = TypeVar("T")
STATE_NAME = "circuit-breaker.state.json"
AUTO_MS = 60_000
OPEN = BreakerState.OPEN


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one scenario on a fresh loop, failing it if anything hangs for more than 5 s."""

    async def bounded() -> T:
        async with asyncio.timeout(5):
            return await main()

    return asyncio.run(bounded())


# ----------------------------------------------------------------------------- the pure Breaker


def test_a_new_breaker_is_closed() -> None:
    """The initial breaker is closed, automatic, with no exit pending, and cannot auto close."""
    b = Breaker()
    assert (b.state, b.halted, b.manual, b.exiting) == (BreakerState.CLOSED, False, False, False)
    assert not b.may_auto_close(10**12, AUTO_MS)


def test_trip_opens_with_reason_time_and_origin() -> None:
    """A trip opens the breaker and remembers why, when and whether an operator did it."""
    assert Breaker().trip("flaky", 100) == Breaker(OPEN, "flaky", False, 100, False)
    manual = Breaker().trip("operator", 7, manual=True)
    assert manual == Breaker(OPEN, "operator", True, 7, False) and manual.halted


def test_an_automatic_trip_of_an_open_automatic_breaker_restarts_it() -> None:
    """A second automatic trip keeps the breaker open with the new reason and time."""
    assert Breaker().trip("first", 100).trip("second", 300) == Breaker(OPEN, "second", False, 300, False)


def test_an_automatic_trip_never_downgrades_a_manual_halt() -> None:
    """An automatic trip of a manually opened breaker keeps it manual, with its reason and time."""
    b = Breaker().trip("operator", 100, manual=True)
    assert b.trip("flaky", 300, exit=True) == Breaker(OPEN, "operator", True, 100, False)


def test_a_manual_halt_overrides_an_automatic_one() -> None:
    """An operator's halt of an automatically opened breaker makes it manual (a pending exit goes on)."""
    assert Breaker().trip("flaky", 100).trip("operator", 200, manual=True) == Breaker(OPEN, "operator", True, 200)
    exiting = Breaker().trip("flaky", 100, exit=True).trip("operator", 200, manual=True)
    assert exiting == Breaker(OPEN, "operator", True, 200, True)


def test_only_an_automatic_opening_starts_the_emergency_exit() -> None:
    """``exit`` sets the goal when an automatic trip opens a closed breaker; never for a manual halt or a breaker
    that is open already; later trips keep a pending goal."""
    assert Breaker().trip("flaky", 1, exit=True).exiting
    assert not Breaker().trip("operator", 1, manual=True, exit=True).exiting
    assert not Breaker().trip("flaky", 1).trip("again", 2, exit=True).exiting
    assert Breaker().trip("flaky", 1, exit=True).trip("again", 2).exiting


def test_resume_and_without_exit_end_the_goal() -> None:
    """resume() returns the initial closed breaker from any state; without_exit() keeps the breaker as it is."""
    for b in (Breaker(), Breaker().trip("x", 1, exit=True), Breaker().trip("x", 1, manual=True)):
        assert b.resume() == Breaker()
    assert Breaker().trip("x", 1, exit=True).without_exit() == Breaker(OPEN, "x", False, 1, False)


@pytest.mark.parametrize("manual", [False, True])
@pytest.mark.parametrize("exiting", [False, True])
@pytest.mark.parametrize("setting", [None, AUTO_MS])
@pytest.mark.parametrize("healthy_for", [None, 0, AUTO_MS - 1, AUTO_MS, AUTO_MS + 1])
def test_may_auto_close_needs_every_condition(
    manual: bool, exiting: bool, setting: int | None, healthy_for: int | None
) -> None:
    """Auto close is due only if open, automatic, no exit pending, configured, and every stream healthy long enough."""
    b = Breaker(OPEN, "x", manual, 1_000, exiting)
    expected = not manual and not exiting and setting is not None and healthy_for is not None and healthy_for >= AUTO_MS
    assert b.may_auto_close(healthy_for, setting) is expected


def test_a_closed_breaker_never_auto_closes() -> None:
    """A closed breaker has nothing to close, however healthy the streams."""
    assert not Breaker().may_auto_close(10 * AUTO_MS, AUTO_MS)


_EVENTS = st.lists(st.sampled_from(["trip", "trip-exit", "halt", "keep", "resume", "reached"]), max_size=25)


@settings(max_examples=300, deadline=None)
@given(_EVENTS, st.none() | st.integers(0, 2 * AUTO_MS))
def test_auto_close_and_the_exit_match_an_independent_model(events: list[str], healthy_for: int | None) -> None:
    """For any history: open iff a trip since the last resume; manual iff a halt among those; the exit pending iff
    the opening trip started it and neither a keep-positions halt nor its end came after; auto close due exactly
    when open, automatic, no exit pending and the streams healthy long enough."""
    b = Breaker()
    history: list[str] = []  # events since the last resume
    for kind in events:
        if kind in ("trip", "trip-exit"):
            b = b.trip("flaky", 1, exit=kind == "trip-exit")
        elif kind == "halt":
            b = b.trip("operator", 1, manual=True)
        elif kind == "keep":
            b = b.trip("operator", 1, manual=True).without_exit()
        elif kind == "resume":
            b = b.resume()
        else:
            b = b.without_exit()
        history = [] if kind == "resume" else [*history, kind]
    opened = next((i for i, k in enumerate(history) if k != "reached"), None)
    is_open = opened is not None
    manual = any(k in ("halt", "keep") for k in history)
    exiting = (
        opened is not None
        and history[opened] == "trip-exit"
        and not any(k in ("keep", "reached") for k in history[opened + 1 :])
    )
    assert (b.halted, b.manual, b.exiting) == (is_open, is_open and manual, exiting)
    due = is_open and not manual and not exiting and healthy_for is not None and healthy_for >= AUTO_MS
    assert b.may_auto_close(healthy_for, AUTO_MS) is due
    assert not b.may_auto_close(healthy_for, None)


_BREAKERS = st.builds(
    Breaker, st.sampled_from(BreakerState), st.text(max_size=20), st.booleans(), st.integers(0, 2**53), st.booleans()
)


@given(_BREAKERS)
def test_state_round_trip(b: Breaker) -> None:
    """from_state(to_state()) gives back an equal breaker."""
    assert Breaker.from_state(b.to_state()) == b


def test_a_breaker_saved_before_the_exit_was_a_goal_loads() -> None:
    """A snapshot of the earlier format (stability counted from events, no ``exiting``) loads with no exit
    pending; its stability fields are ignored: health is read afresh from the streams."""
    old = {
        "state": "open",
        "reason": "x",
        "manual": False,
        "opened_ms": 5,
        "stable_since_ms": 9,
        "reconciled_after_stable": True,
    }
    assert Breaker.from_state(old) == Breaker(OPEN, "x", False, 5, False)


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
        assert again.worker.breaker == Breaker(BreakerState.OPEN, "operator says stop", True, 5_000, False)
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


# ----------------------------------------------------------------------------- closing on health


class Streams:
    """What the environment says: how long every stream has been healthy (None: one is not), and the passes."""

    def __init__(self, healthy_for: float | None = None) -> None:
        self.healthy_for = healthy_for
        self.passes = 0
        self.during_pass: Callable[[], Coroutine[Any, Any, None]] | None = None

    def __call__(self) -> float | None:
        return self.healthy_for

    async def reconcile(self) -> None:
        self.passes += 1
        if self.during_pass is not None:
            await self.during_pass()


def test_auto_close_needs_every_stream_healthy_long_enough_then_a_reconciliation(state_dir: StateDirectory) -> None:
    """No stream health, or too little: no pass and no close; once every stream has been healthy for
    auto_close_after a reconciliation runs, and its success closes the breaker."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=60)
    streams = Streams()

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        for healthy in (None, 0.0, 59.999):
            streams.healthy_for = healthy
            await h.worker.maybe_auto_close(streams, streams.reconcile)
        assert h.worker.breaker.halted and streams.passes == 0
        streams.healthy_for = 60.0
        await h.worker.maybe_auto_close(streams, streams.reconcile)

    run(main)
    assert streams.passes == 1
    assert h.kinds() == [HaltNewSignals, ResumeSignals]
    assert inspect(h.file.path).record.state["state"] == "closed"


def test_a_failed_reconciliation_or_a_reconnect_during_it_keeps_the_breaker_open(state_dir: StateDirectory) -> None:
    """The confirming pass must succeed, and no stream may reconnect while it runs."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=1)
    streams = Streams(healthy_for=5.0)

    async def fails() -> None:
        raise ExchangeUnavailable("fetch open orders: 503")

    async def reconnects() -> None:
        streams.healthy_for = 0.1  # a stream reconnected while the pass read the exchange

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        streams.during_pass = fails
        await h.worker.maybe_auto_close(streams, streams.reconcile)
        streams.during_pass = reconnects
        await h.worker.maybe_auto_close(streams, streams.reconcile)
        assert h.worker.breaker.halted and streams.passes == 2

    run(main)
    assert h.kinds() == [HaltNewSignals]


def test_split_brain_and_manual_halts_never_auto_close(state_dir: StateDirectory) -> None:
    """A split-brain fence (manual, even when it comes from the confirming pass) and an operator's halt stay
    open however healthy the streams, and no pass is even run for them."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=1)
    streams = Streams(healthy_for=10.0**9)

    async def fence() -> None:
        await h.worker.halt("split brain: order(s) s1... carry these books' current epoch", manual=True)

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        streams.during_pass = fence
        await h.worker.maybe_auto_close(streams, streams.reconcile)
        assert h.worker.breaker.halted and h.worker.breaker.manual
        await h.worker.maybe_auto_close(streams, streams.reconcile)
        await h.worker.resume("operator")
        await h.worker.halt("operator", manual=True)
        await h.worker.maybe_auto_close(streams, streams.reconcile)

    run(main)
    assert h.worker.breaker.halted and streams.passes == 1
    assert h.kinds() == [HaltNewSignals, HaltNewSignals, ResumeSignals, HaltNewSignals]


def test_without_the_setting_only_an_operator_closes(state_dir: StateDirectory) -> None:
    """With auto_close_after unset, an automatic opening stays open until resume()."""
    h = Harness(state_dir.file(STATE_NAME), auto_close_after_s=None)
    streams = Streams(healthy_for=10.0**9)

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.maybe_auto_close(streams, streams.reconcile)

    run(main)
    assert h.worker.breaker.halted and h.kinds() == [HaltNewSignals] and streams.passes == 0


def test_after_a_restart_an_open_breaker_closes_once_the_streams_are_healthy(tmp_path: Path) -> None:
    """The breaker of the last process comes back open; nothing is announced at a first connection, yet the
    new process closes it once its own streams have been healthy long enough and a pass succeeded."""
    with StateDirectory.open(tmp_path / "s") as d:
        h = Harness(d.file(STATE_NAME), auto_close_after_s=2)
        run(lambda: h.worker.on_unstable(ConnectionUnstableDetected("down")))
    with StateDirectory.open(tmp_path / "s") as d:
        again = Harness(d.file(STATE_NAME), auto_close_after_s=2)
        assert again.worker.breaker.halted
        streams = Streams(healthy_for=2.0)
        run(lambda: again.worker.maybe_auto_close(streams, streams.reconcile))
        assert not again.worker.breaker.halted and again.kinds() == [ResumeSignals]


# ----------------------------------------------------------------------------- the emergency exit as a goal


class Strategy:
    """A strategy worker as the exit sees it: answers each step from a script, counting the steps."""

    def __init__(self, name: str, *answers: ExitProgress) -> None:
        self.name, self.exiting = name, False
        self.answers, self.steps = list(answers), 0

    async def pursue_exit(self) -> ExitProgress:
        self.steps += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_the_exit_is_pursued_until_every_strategy_is_flat(state_dir: StateDirectory) -> None:
    """Each call takes one step per strategy and marks them exiting; when all are done the goal is reached:
    persisted, logged and alerted, and the strategies may place orders again (the breaker stays open)."""
    h = Harness(state_dir.file(STATE_NAME), emergency_exit=True)
    a = Strategy("a", ExitProgress(waiting="exit order s1-1 is unresolved"), ExitProgress(done=True))
    b = Strategy("b", ExitProgress(done=True))

    async def main() -> None:
        await h.worker.pursue_exit([a, b])  # no goal: nothing
        assert (a.steps, a.exiting) == (0, False)
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.pursue_exit([a, b])
        assert a.exiting and b.exiting and h.worker.breaker.exiting
        assert inspect(h.file.path).record.state["exiting"] is True
        await h.worker.pursue_exit([a, b])

    run(main)
    assert (a.steps, b.steps) == (2, 2)
    assert not h.worker.breaker.exiting and h.worker.breaker.halted
    assert inspect(h.file.path).record.state["exiting"] is False
    assert not a.exiting and not b.exiting
    assert h.alerts[-1].startswith("s1mpled emergency exit done")


def test_each_failed_attempt_is_alerted_and_the_next_waits(state_dir: StateDirectory) -> None:
    """A failed attempt alerts (numbered, with why) and the strategy is not asked again before EXIT_RETRY's
    ceiling -- 5 s, then 10 s -- while the other strategies go on."""
    h = Harness(state_dir.file(STATE_NAME), emergency_exit=True)
    failed = ExitProgress(failed="no answer to the market sell s1x-3 of 0.5 (outcome unknown)")
    a = Strategy("a", failed, failed, ExitProgress(done=True))
    b = Strategy("b", ExitProgress(waiting="2 order(s) still open"))

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.pursue_exit([a, b])
        h.clock.now += 4_999
        await h.worker.pursue_exit([a, b])
        assert (a.steps, b.steps) == (1, 2)
        h.clock.now += 1
        await h.worker.pursue_exit([a, b])
        h.clock.now += 9_999
        await h.worker.pursue_exit([a, b])
        assert a.steps == 2
        h.clock.now += 1
        await h.worker.pursue_exit([a, b])
        assert a.steps == 3

    run(main)
    exits = [m for m in h.alerts if "emergency exit" in m]
    assert exits == [
        "s1mpled emergency exit of a: attempt 1 failed: no answer to the market sell s1x-3 of 0.5 (outcome "
        "unknown); retrying in 5 s at the earliest",
        "s1mpled emergency exit of a: attempt 2 failed: no answer to the market sell s1x-3 of 0.5 (outcome "
        "unknown); retrying in 10 s at the earliest",
    ]
    assert h.worker.breaker.exiting  # b is not flat yet


@pytest.mark.parametrize("how", ["keep-positions", "resume"])
def test_an_operator_cancels_the_exit(state_dir: StateDirectory, how: str) -> None:
    """``halt --keep-positions`` cancels a pending exit and keeps the breaker open (manual); ``resume`` closes it;
    either way no further step is taken and the strategies may place orders again."""
    h = Harness(state_dir.file(STATE_NAME), emergency_exit=True)
    a = Strategy("a", ExitProgress(waiting="exit order s1-1 is unresolved"))

    async def main() -> None:
        await h.worker.on_unstable(ConnectionUnstableDetected("down"))
        await h.worker.pursue_exit([a])
        if how == "resume":
            await h.worker.resume("operator resume")
        else:
            await h.worker.halt("operator", manual=True, keep_positions=True)
        await h.worker.pursue_exit([a])

    run(main)
    assert a.steps == 1 and not a.exiting and not h.worker.breaker.exiting
    assert h.worker.breaker.halted is (how == "keep-positions")
    assert inspect(h.file.path).record.state["exiting"] is False


def test_a_pending_exit_survives_a_restart_and_blocks_auto_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The goal is persisted: a new process resumes it (saying so CRITICAL) and does not close the breaker by
    itself while it is pending, however healthy the streams."""
    with StateDirectory.open(tmp_path / "s") as d:
        h = Harness(d.file(STATE_NAME), emergency_exit=True, auto_close_after_s=1)
        run(lambda: h.worker.on_unstable(ConnectionUnstableDetected("down")))
    with StateDirectory.open(tmp_path / "s") as d, caplog.at_level(logging.CRITICAL, "s1mpled.circuit_breaker"):
        again = Harness(d.file(STATE_NAME), emergency_exit=True, auto_close_after_s=1)
        streams = Streams(healthy_for=10.0**9)
        a = Strategy("a", ExitProgress(waiting="not trading yet"))
        run(lambda: again.worker.maybe_auto_close(streams, streams.reconcile))
        run(lambda: again.worker.pursue_exit([a]))
        assert again.worker.breaker.exiting and again.worker.breaker.halted
        assert (a.steps, streams.passes) == (1, 0)
    assert any("emergency exit is still pending after restart" in r.getMessage() for r in caplog.records)
