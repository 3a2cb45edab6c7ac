"""What a start does while the exchange does not answer (pure: times are passed in).

Keep going safely: an unreachable exchange at start (recovery A's market load and key check, recovery
B's reconciliation) is waited out, never a reason to exit into systemd's restart limit -- and never a
reason to trade unreconciled. Tries are spaced by :data:`STARTUP_BACKOFF` (full jitter, at most a
minute apart); each failed try extends systemd's start timeout by the wait plus :data:`TRY_ALLOWANCE_S`
for the next try, so a start that really hangs is still killed. A :class:`Waiting` is what the daemon
says meanwhile: systemd's STATUS line, the log, ``s1mpled status``, and -- after ``startup.alert_after``
-- a critical alert.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from s1mpled.connection import Backoff

__all__ = ["STARTUP_BACKOFF", "TRY_ALLOWANCE_S", "Waiting", "utc"]

STARTUP_BACKOFF = Backoff(base_s=1.0, cap_s=60.0)
TRY_ALLOWANCE_S = 120.0  # what one try may take before systemd may kill the start (the unit's TimeoutStartSec)


def utc(ms: int) -> str:
    """A wall-clock time in ms as ``2026-05-01 12:00:03 UTC``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class Waiting:
    """What the start waits for: ``step`` ("recovery A", "recovery B", "subscribing") and ``what``."""

    step: str
    what: str
    since_ms: int
    tries: int = 0  # failed tries so far (the next one is retry number ``tries``)
    last_error: str = ""
    next_try_ms: int | None = None

    def failed(self, error: str, now_ms: int, delay_s: float) -> Waiting:
        """One more try failed with ``error``; the next one comes ``delay_s`` from now."""
        return replace(self, tries=self.tries + 1, last_error=error, next_try_ms=now_ms + round(delay_s * 1000))

    def text(self, now_ms: int) -> str:
        """The one line systemd's STATUS and ``s1mpled status`` show."""
        line = f"{self.step}: {self.what} since {utc(self.since_ms)}"
        if self.next_try_ms is not None:
            line += f", retry {self.tries} in {max(0, self.next_try_ms - now_ms) / 1000:.0f} s"
        elif self.last_error:
            line += f" ({self.last_error})"
        return line

    def to_doc(self, now_ms: int) -> dict[str, object]:
        """For ``s1mpled status --json``."""
        return {
            "step": self.step,
            "what": self.what,
            "since_ms": self.since_ms,
            "failed_tries": self.tries,
            "last_error": self.last_error,
            "next_try_in_s": None if self.next_try_ms is None else max(0, self.next_try_ms - now_ms) / 1000,
            "text": self.text(now_ms),
        }
