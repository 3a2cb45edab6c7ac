"""The CircuitBreakerWorker (spec §6.2.3): the I/O shell of the breaker in :mod:`s1mpled.circuit_breaker`.

It owns the persisted :class:`~s1mpled.circuit_breaker.Breaker`: every change is saved before it is
announced (HALT_NEW_SIGNALS, RESUME_SIGNALS, EXECUTE_EMERGENCY_EXIT) and alerted; it closes the breaker
on the streams' health confirmed by a reconciliation, and pursues the emergency exit's goal step by step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from s1mpled.circuit_breaker import EXIT_RETRY, Breaker, ExitProgress
from s1mpled.clock import ClockMs
from s1mpled.errors import ExchangeError
from s1mpled.events import (
    ConnectionUnstableDetected,
    ExecuteEmergencyExit,
    HaltNewSignals,
    Publish,
    ResumeSignals,
)
from s1mpled.state.plugin import StatefulPlugin
from s1mpled.state.store import StateFile
from s1mpled.workers import ExecutionWorker, Subscription

__all__ = ["CircuitBreakerWorker", "Exiting"]

log = logging.getLogger("s1mpled.circuit_breaker")  # the name the journal and log filters know it by


class Exiting(Protocol):
    """A strategy worker as the emergency exit sees it."""

    name: str
    exiting: bool  # while True, the strategy's own new orders are dropped

    async def pursue_exit(self) -> ExitProgress: ...


class CircuitBreakerWorker(ExecutionWorker, StatefulPlugin):
    """The ExecutionWorker that owns the breaker: persists every change before announcing it."""

    name = "breaker"

    def __init__(
        self,
        state_file: StateFile,
        publish: Publish,
        clock_ms: ClockMs,
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

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(ConnectionUnstableDetected, self.on_unstable)]

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
