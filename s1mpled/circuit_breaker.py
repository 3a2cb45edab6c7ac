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
(:meth:`~s1mpled.circuit_breaker_worker.CircuitBreakerWorker.pursue_exit`, once a second while trading)
until every strategy holds less than its market's minimum amount and has nothing open, or until an
operator cancels it (``s1mpled resume``, or ``s1mpled halt --keep-positions``); a restart carries on
with it. A step never sends a new sell while an earlier exit order's fate is unknown (it waits until the
order is known filled, cancelled or not placed), so retrying can never sell twice; each attempt that
fails is alerted, and the next one waits (:data:`EXIT_RETRY`). The breaker does not close by itself
while the goal is pending.

The decision logic is here, pure (no I/O, no clock, no asyncio): :class:`Breaker` (a transition table
over explicit inputs with ``now_ms`` passed in) and :func:`exit_failure`;
:class:`~s1mpled.circuit_breaker_worker.CircuitBreakerWorker` is the thin part that persists, publishes
and alerts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from s1mpled import record
from s1mpled.connection import Backoff
from s1mpled.errors import RecordError
from s1mpled.ledger import LedgerOrder
from s1mpled.orders import OrderState

__all__ = [
    "EXIT_RETRY",
    "EXIT_TAG",
    "Breaker",
    "BreakerState",
    "ExitProgress",
    "exit_failure",
]

EXIT_TAG = "emergency-exit"  # the tag of the exit's market sells (in the ledger, so a restart knows them)
EXIT_RETRY = Backoff(base_s=5.0, cap_s=300.0)  # after the n-th failed attempt of a strategy: ceiling(n - 1)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Breaker:
    """The breaker's whole state: pure values, transitions return a new Breaker; persisted as this record.

    A snapshot written before the emergency exit was a goal has no ``exiting`` (none is pending), and its
    ``stable_since_ms`` / ``reconciled_after_stable`` are ignored: health is read afresh.
    """

    RECORD_LEGACY_KEYS: ClassVar[frozenset[str]] = frozenset({"stable_since_ms", "reconciled_after_stable"})

    state: BreakerState = BreakerState.CLOSED
    reason: str = ""
    manual: bool = False  # opened by an operator (or a split-brain fence): only an operator closes it
    opened_ms: int = 0
    exiting: bool = field(default=False, metadata=record.OPTIONAL)  # the emergency exit's goal is pending

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
        return record.encode(self)

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Breaker:
        """The breaker of a ``to_state()`` snapshot; RecordError (a ValueError) "state.<key>: why" for anything else."""
        breaker = record.decode(cls, s, where="state")
        if breaker.opened_ms < 0:
            raise RecordError(f"state.opened_ms: expected a time in ms >= 0, got {breaker.opened_ms}")
        return breaker


@dataclass(frozen=True, slots=True)
class ExitProgress:
    """What one step of the emergency exit did for one strategy."""

    done: bool = False  # nothing open, less than the market's minimum amount held
    failed: str | None = None  # the sell this step sent was not acknowledged: why
    waiting: str | None = None  # why this step did nothing


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
