"""The circuit breaker (spec §6.2.3): a persisted state machine and the worker that drives it.

CLOSED means strategies may open new orders; OPEN means HALT_NEW_SIGNALS is in force (cancels and
reducing orders still go through). The breaker opens on CONNECTION_UNSTABLE_DETECTED or an operator's
``s1mpled halt``. Its state is persisted, so a restart never silently resumes trading: a breaker
that was open comes back open.

**Closing.** By ``s1mpled resume``, or -- when ``auto_close_after`` is configured and the breaker was
not opened by an operator (a split-brain fence counts as one) -- once every supervised stream has been
healthy for that long and a reconciliation started after that succeeded. Health is never counted from
events (a stream announces CONNECTION_LOST once per outage, and a new process announces no restore): it
is read from the environment, which knows how long each of its streams has been connected
(:meth:`~s1mpled.environments.base.ExecutionEnvironment.streams_healthy_for`), in this process or after
a restart alike.

**Emergency exit.** With ``emergency_exit`` configured, an automatic opening also sets a *goal*,
persisted with the breaker: cancel every order of the strategies and sell what they hold. It is pursued
(:meth:`CircuitBreakerWorker.pursue_exit`, once a second while trading) until every strategy holds less
than its market's minimum amount and has nothing open, or until an operator cancels it (``s1mpled
resume``, or ``s1mpled halt --keep-positions``); a restart carries on with it. A step never sends a new
sell while an earlier exit order's fate is unknown (it waits until the order is known filled, cancelled
or not placed), so retrying can never sell twice; each attempt that fails is alerted, and the next one
waits (:data:`EXIT_RETRY`). The breaker does not close by itself while the goal is pending.

The decision logic is the pure :class:`Breaker` (a transition table over explicit inputs with
``now_ms`` passed in) and :func:`exit_failure`; :class:`CircuitBreakerWorker` is the thin part that
persists, publishes and alerts.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from s1mpled.connection import Backoff
from s1mpled.errors import ExchangeError
from s1mpled.events import ConnectionUnstableDetected, Event, ExecuteEmergencyExit, HaltNewSignals, ResumeSignals
from s1mpled.ledger import LedgerOrder
from s1mpled.orders import OrderState
from s1mpled.state.plugin import StatefulPlugin
from s1mpled.state.store import StateFile
from s1mpled.strategies.base import StateReader

__all__ = [
    "EXIT_RETRY",
    "EXIT_TAG",
    "Breaker",
    "BreakerState",
    "CircuitBreakerWorker",
    "ExitProgress",
    "Exiting",
    "exit_failure",
]

log = logging.getLogger("s1mpled.circuit_breaker")
EXIT_TAG = "emergency-exit"  # the tag of the exit's market sells (in the ledger, so a restart knows them)
EXIT_RETRY = Backoff(base_s=5.0, cap_s=300.0)  # after the n-th failed attempt of a strategy: ceiling(n - 1)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Breaker:
    """The breaker's whole state: pure values, transitions return a new Breaker."""

    state: BreakerState = BreakerState.CLOSED
    reason: str = ""
    manual: bool = False  # opened by an operator (or a split-brain fence): only an operator closes it
    opened_ms: int = 0
    exiting: bool = False  # the emergency exit's goal is pending

    def trip(self, reason: str, now_ms: int, *, manual: bool = False, exit: bool = False) -> Breaker:
        """Open (or stay open); a manual halt overrides an automatic one. ``exit``: an automatic opening
        sets the emergency exit's goal (a breaker that is open already starts none)."""
        exiting = self.exiting or (exit and not manual and not self.halted)
        if self.state is BreakerState.OPEN and self.manual and not manual:
            return replace(self, exiting=exiting)
        return Breaker(BreakerState.OPEN, reason, manual, now_ms, exiting)

    def resume(self) -> Breaker:
        """An operator closes the breaker (and cancels a pending emergency exit)."""
        return Breaker()

    def without_exit(self) -> Breaker:
        """The emergency exit is reached, or an operator keeps the positions: the breaker stays as it is."""
        return replace(self, exiting=False)

    def may_auto_close(self, healthy_for_ms: int | None, auto_close_after_ms: int | None) -> bool:
        """True when an automatic close is due: open, automatic, no exit pending, configured, and every
        stream healthy (``healthy_for_ms`` not None) for at least ``auto_close_after_ms``."""
        return (
            self.state is BreakerState.OPEN
            and not self.manual
            and not self.exiting
            and auto_close_after_ms is not None
            and healthy_for_ms is not None
            and healthy_for_ms >= auto_close_after_ms
        )

    @property
    def halted(self) -> bool:
        return self.state is BreakerState.OPEN

    def to_state(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "manual": self.manual,
            "opened_ms": self.opened_ms,
            "exiting": self.exiting,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Breaker:
        """The breaker of a ``to_state()`` snapshot; ValueError("state.<key>: why") for anything else.

        A snapshot written before the emergency exit was a goal has no ``exiting`` (none is pending), and
        its ``stable_since_ms`` / ``reconciled_after_stable`` are ignored: health is read afresh.
        """
        r = StateReader(s)
        state = r.string("state")
        if state not in tuple(BreakerState):
            raise ValueError(f"state.state: expected one of {', '.join(BreakerState)}, got {state!r}")
        opened_ms = r.integer("opened_ms")
        if opened_ms < 0:
            raise ValueError(f"state.opened_ms: expected a time in ms >= 0, got {opened_ms}")
        exiting = r.boolean("exiting") if "exiting" in s else False
        return cls(BreakerState(state), r.string("reason"), r.boolean("manual"), opened_ms, exiting)


@dataclass(frozen=True, slots=True)
class ExitProgress:
    """What one step of the emergency exit did for one strategy."""

    done: bool = False  # nothing open, less than the market's minimum amount held
    failed: str | None = None  # the sell this step sent was not acknowledged: why
    waiting: str | None = None  # why this step did nothing


class Exiting(Protocol):
    """A strategy worker as the emergency exit sees it."""

    name: str
    exiting: bool  # while True, the strategy's own new orders are dropped

    async def pursue_exit(self) -> ExitProgress: ...


def exit_failure(order: LedgerOrder | None) -> str | None:
    """Why the exit sell just sent failed (None: the exchange acknowledged it, or it filled at once)."""
    if order is None:
        return "the sell could not be recorded (see the journal)"
    if order.state in (OrderState.OPEN, OrderState.FILLED):
        return None
    if order.state is OrderState.REJECTED:
        return f"the exchange refused the market sell {order.client_order_id} of {order.amount}"
    if order.state is OrderState.NOT_PLACED:
        return f"the market sell {order.client_order_id} of {order.amount} was not sent (see the journal)"
    return (
        f"no answer to the market sell {order.client_order_id} of {order.amount} (outcome unknown: it is "
        "settled by client id before another is sent)"
    )


Publish = Callable[[Event], Awaitable[None]]


class CircuitBreakerWorker(StatefulPlugin):
    """The ExecutionWorker that owns the breaker: persists every change before announcing it."""

    def __init__(
        self,
        state_file: StateFile,
        publish: Publish,
        clock_ms: Callable[[], int],
        *,
        emergency_exit: bool,
        auto_close_after_s: float | None,
        alert: Callable[[str], Awaitable[object]],
    ) -> None:
        super().__init__(state_file)
        self.breaker = Breaker()
        self._publish, self._clock_ms, self._alert = publish, clock_ms, alert
        self._emergency_exit = emergency_exit
        self._auto_close_ms = None if auto_close_after_s is None else int(auto_close_after_s * 1000)
        self._exit_failures: dict[str, int] = {}  # strategy -> failed attempts of this process
        self._exit_not_before: dict[str, int] = {}  # strategy -> no attempt before this time (ms)

    def state_snapshot(self) -> dict[str, Any]:
        return self.breaker.to_state()

    def restore_state(self, state: dict[str, Any]) -> None:
        self.breaker = Breaker.from_state(state)
        if self.breaker.halted:
            log.critical(
                "circuit breaker is OPEN after restart (%s): new signals stay halted",
                self.breaker.reason,
                extra={"EVENT": HaltNewSignals.TOPIC},
            )
        if self.breaker.exiting:
            log.critical(
                "the emergency exit is still pending after restart: it carries on once recovery is done",
                extra={"EVENT": ExecuteEmergencyExit.TOPIC},
            )

    async def _change(self, new: Breaker) -> None:
        old, self.breaker = self.breaker, new
        if new != old:
            await self.save_state()

    async def halt(self, reason: str, *, manual: bool, keep_positions: bool = False) -> None:
        """Open the breaker: persist, publish HALT_NEW_SIGNALS, alert, optionally start the emergency exit.
        ``keep_positions`` (an operator): cancel a pending emergency exit as well."""
        was_open, was_exiting = self.breaker.halted, self.breaker.exiting
        new = self.breaker.trip(reason, self._clock_ms(), manual=manual, exit=self._emergency_exit)
        await self._change(new.without_exit() if keep_positions else new)
        if was_exiting and keep_positions:
            log.critical("emergency exit cancelled by the operator: positions are kept", extra={"EVENT": "EXIT"})
        if was_open and not manual:
            return
        log.critical("circuit breaker OPEN: %s", reason, extra={"EVENT": HaltNewSignals.TOPIC})
        await self._publish(HaltNewSignals(reason))
        await self._alert(f"s1mpled circuit breaker OPEN: {reason}")
        if self.breaker.exiting and not was_exiting:
            log.critical("emergency exit: %s", reason, extra={"EVENT": ExecuteEmergencyExit.TOPIC})
            await self._publish(ExecuteEmergencyExit(reason))

    async def resume(self, reason: str) -> None:
        """Close the breaker (operator, or automatic close); a pending emergency exit is cancelled."""
        if not self.breaker.halted:
            return
        if self.breaker.exiting:
            log.critical("emergency exit cancelled (%s): positions are kept", reason, extra={"EVENT": "EXIT"})
        await self._change(self.breaker.resume())
        log.warning("circuit breaker CLOSED: %s", reason, extra={"EVENT": ResumeSignals.TOPIC})
        await self._publish(ResumeSignals(reason))

    async def on_unstable(self, event: ConnectionUnstableDetected) -> None:
        await self.halt(event.reason, manual=False)

    # -- closing: derived from the streams' health, confirmed by a reconciliation --

    def _close_due(self, healthy_for: float | None) -> bool:
        healthy_ms = None if healthy_for is None else int(min(healthy_for, 1e12) * 1000)
        return self.breaker.may_auto_close(healthy_ms, self._auto_close_ms)

    async def maybe_auto_close(
        self, healthy_for: Callable[[], float | None], reconcile: Callable[[], Awaitable[object]]
    ) -> None:
        """Called periodically: once every stream has been healthy for ``auto_close_after`` (``healthy_for``:
        seconds, None while a stream is not), reconcile; close if that pass succeeded and no stream
        reconnected meanwhile (and the pass did not fence a split brain, which makes the breaker manual)."""
        before = healthy_for()
        if not self._close_due(before):
            return
        try:
            await reconcile()
        except ExchangeError as exc:
            log.warning("circuit breaker stays open: its reconciliation failed: %s", exc, extra={"EVENT": "BREAKER"})
            return
        after = healthy_for()
        if before is not None and after is not None and after >= before and self._close_due(after):
            await self.resume(f"every stream healthy for {after:.0f} s and reconciled")

    # -- the emergency exit: a goal, pursued step by step --

    async def pursue_exit(self, workers: Sequence[Exiting]) -> None:
        """One step of the pending emergency exit for every strategy that is due (none pending: nothing).
        Alerts each failed attempt; once every strategy is flat the goal is reached (persisted)."""
        for w in workers:
            w.exiting = self.breaker.exiting
        if not self.breaker.exiting:
            self._exit_failures.clear()
            self._exit_not_before.clear()
            return
        done = True
        for w in workers:
            if not self.breaker.exiting:  # an operator cancelled it while a step was under way
                return
            if self._exit_not_before.get(w.name, 0) > self._clock_ms():
                done = False
                continue
            progress = await w.pursue_exit()
            done = done and progress.done
            if progress.failed is not None:
                await self._exit_failed(w.name, progress.failed)
        if done and self.breaker.exiting:
            await self._change(self.breaker.without_exit())
            for w in workers:
                w.exiting = False
            log.critical("emergency exit done: every strategy is flat", extra={"EVENT": "EXIT"})
            await self._alert("s1mpled emergency exit done: the strategies hold nothing and have no open orders")

    async def _exit_failed(self, strategy: str, why: str) -> None:
        n = self._exit_failures[strategy] = self._exit_failures.get(strategy, 0) + 1
        wait_s = EXIT_RETRY.ceiling(n - 1)
        self._exit_not_before[strategy] = self._clock_ms() + int(wait_s * 1000)
        log.critical("emergency exit of %s: attempt %d failed: %s", strategy, n, why, extra={"EVENT": "EXIT"})
        retry = f"retrying in {wait_s:.0f} s at the earliest"
        await self._alert(f"s1mpled emergency exit of {strategy}: attempt {n} failed: {why}; {retry}")
