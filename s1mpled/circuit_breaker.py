"""The circuit breaker (spec §6.2.3): a persisted state machine and the worker that drives it.

CLOSED means strategies may open new orders; OPEN means HALT_NEW_SIGNALS is in force (cancels and
reducing orders still go through). The breaker opens on CONNECTION_UNSTABLE_DETECTED or an operator's
``s1mpled halt``. Its state is persisted, so a restart never silently resumes trading: a breaker
that was open comes back open.

It closes again either by ``s1mpled resume``, or -- when ``auto_close_after`` is configured and the
breaker was not opened by an operator -- once the connection has been stable that long *and* a
reconciliation succeeded after it became stable.

The decision logic is the pure :class:`Breaker` (a transition table over explicit inputs with
``now_ms`` passed in); :class:`CircuitBreakerWorker` is the thin part that listens on the bus,
persists and publishes.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from s1mpled.events import (
    ConnectionRestored,
    ConnectionUnstableDetected,
    Event,
    ExecuteEmergencyExit,
    HaltNewSignals,
    ReconciliationCompleted,
    ResumeSignals,
)
from s1mpled.state.plugin import StatefulPlugin
from s1mpled.state.store import StateFile
from s1mpled.strategies.base import StateReader

__all__ = ["Breaker", "BreakerState", "CircuitBreakerWorker"]

log = logging.getLogger("s1mpled.circuit_breaker")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Breaker:
    """The breaker's whole state: pure values, transitions return a new Breaker."""

    state: BreakerState = BreakerState.CLOSED
    reason: str = ""
    manual: bool = False  # opened by an operator: only an operator closes it
    opened_ms: int = 0
    stable_since_ms: int | None = None  # connection stable since (None while unstable)
    reconciled_after_stable: bool = False

    def trip(self, reason: str, now_ms: int, *, manual: bool = False) -> Breaker:
        """Open (or stay open); a manual halt overrides an automatic one."""
        if self.state is BreakerState.OPEN and self.manual and not manual:
            return replace(self, stable_since_ms=None, reconciled_after_stable=False)
        return Breaker(BreakerState.OPEN, reason, manual, now_ms, None, False)

    def resume(self) -> Breaker:
        """An operator closes the breaker."""
        return Breaker()

    def connection_stable(self, now_ms: int) -> Breaker:
        if self.stable_since_ms is not None:
            return self
        return replace(self, stable_since_ms=now_ms, reconciled_after_stable=False)

    def reconciled(self) -> Breaker:
        if self.stable_since_ms is None:
            return self
        return replace(self, reconciled_after_stable=True)

    def may_auto_close(self, now_ms: int, auto_close_after_ms: int | None) -> bool:
        """True when an automatic close is due (never for a manual halt or without the setting)."""
        return (
            self.state is BreakerState.OPEN
            and not self.manual
            and auto_close_after_ms is not None
            and self.stable_since_ms is not None
            and self.reconciled_after_stable
            and now_ms - self.stable_since_ms >= auto_close_after_ms
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
            "stable_since_ms": self.stable_since_ms,
            "reconciled_after_stable": self.reconciled_after_stable,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Breaker:
        """The breaker of a ``to_state()`` snapshot; ValueError("state.<key>: why") for anything else."""
        r = StateReader(s)
        state = r.string("state")
        if state not in tuple(BreakerState):
            raise ValueError(f"state.state: expected one of {', '.join(BreakerState)}, got {state!r}")
        opened_ms, stable_since_ms = r.integer("opened_ms"), r.optional_integer("stable_since_ms")
        for key, value in (("opened_ms", opened_ms), ("stable_since_ms", stable_since_ms)):
            if value is not None and value < 0:
                raise ValueError(f"state.{key}: expected a time in ms >= 0, got {value}")
        return cls(
            BreakerState(state),
            r.string("reason"),
            r.boolean("manual"),
            opened_ms,
            stable_since_ms,
            r.boolean("reconciled_after_stable"),
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

    async def _change(self, new: Breaker) -> None:
        old, self.breaker = self.breaker, new
        if new != old:
            await self.save_state()

    async def halt(self, reason: str, *, manual: bool) -> None:
        """Open the breaker: persist, publish HALT_NEW_SIGNALS, alert, optionally emergency exit."""
        was_open = self.breaker.halted
        await self._change(self.breaker.trip(reason, self._clock_ms(), manual=manual))
        if was_open and not manual:
            return
        log.critical("circuit breaker OPEN: %s", reason, extra={"EVENT": HaltNewSignals.TOPIC})
        await self._publish(HaltNewSignals(reason))
        await self._alert(f"s1mpled circuit breaker OPEN: {reason}")
        if self._emergency_exit and not manual:
            log.critical("emergency exit: %s", reason, extra={"EVENT": ExecuteEmergencyExit.TOPIC})
            await self._publish(ExecuteEmergencyExit(reason))

    async def resume(self, reason: str) -> None:
        """Close the breaker (operator, or automatic close)."""
        if not self.breaker.halted:
            return
        await self._change(self.breaker.resume())
        log.warning("circuit breaker CLOSED: %s", reason, extra={"EVENT": ResumeSignals.TOPIC})
        await self._publish(ResumeSignals(reason))

    async def on_unstable(self, event: ConnectionUnstableDetected) -> None:
        await self.halt(event.reason, manual=False)

    async def on_restored(self, event: ConnectionRestored) -> None:
        await self._change(self.breaker.connection_stable(self._clock_ms()))

    async def on_reconciled(self, event: ReconciliationCompleted) -> None:
        await self._change(self.breaker.reconciled())
        await self.maybe_auto_close()

    async def maybe_auto_close(self) -> None:
        """Called on reconciliations and periodically: close once stable long enough."""
        if self.breaker.may_auto_close(self._clock_ms(), self._auto_close_ms):
            await self.resume("connection stable and reconciled")
