"""Connection management (spec §6.2.3): backoff, heartbeat, CONNECTION_LOST and the ConnectionMonitor.

ccxt does not reconnect in the background: a dead WebSocket surfaces as an exception from the next
``watch_*`` call, and a stalled one surfaces as nothing at all. So every stream the daemon keeps is
supervised by a :class:`Link` -- a pure state machine fed with "data arrived", "connected" and
"failed" at times passed in -- and a thin loop (in the environment) that sleeps the delays it asks for.

- **Heartbeat:** no data for ``heartbeat_s`` means the stream is dead, even if no error was raised.
- **Backoff:** exponential with full jitter (``uniform(0, min(cap, base * 2**n))``), so a fleet of
  daemons does not reconnect in lock-step; capped.
- **Escalation:** after ``max_failures`` consecutive failed attempts the link publishes
  CONNECTION_LOST (once per outage); the ConnectionMonitor turns that into
  CONNECTION_UNSTABLE_DETECTED for the circuit breaker. The link keeps trying.
- **Recovery:** the first successful connection after any failure publishes CONNECTION_RESTORED,
  which triggers a reconciliation: events sent while disconnected are lost for good.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from s1mpled.events import ConnectionLost, ConnectionRestored, ConnectionUnstableDetected, Event
from s1mpled.workers import MonitorWorker, Subscription

__all__ = ["Backoff", "ConnectionMonitor", "Link", "backoff_delays"]

log = logging.getLogger("s1mpled.connection")
PublishFn = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def ceiling(self, attempt: int) -> float:
        """The most attempt ``attempt`` (0-based) may wait."""
        return min(self.cap_s, self.base_s * float(2 ** min(attempt, 62)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


def backoff_delays(backoff: Backoff, rng: random.Random) -> Iterator[float]:
    """The endless schedule of delays for consecutive attempts."""
    attempt = 0
    while True:
        yield backoff.delay(attempt, rng)
        attempt += 1


@dataclass(slots=True)
class Link:
    """The pure health state of one stream (market data, or the private user stream)."""

    name: str
    max_failures: int
    heartbeat_s: float
    backoff: Backoff = field(default_factory=Backoff)
    connected: bool = False
    failures: int = 0  # consecutive failed attempts since the last good connection
    lost: bool = False  # CONNECTION_LOST published for the current outage
    ever_connected: bool = False
    last_data: float | None = None

    def on_connected(self, now: float) -> list[Event]:
        """A (re)connection succeeded; after an outage that is CONNECTION_RESTORED."""
        events: list[Event] = []
        if self.ever_connected or self.failures:
            events.append(ConnectionRestored(self.name))
        self.connected, self.ever_connected = True, True
        self.failures, self.lost = 0, False
        self.last_data = now
        return events

    def on_data(self, now: float) -> None:
        self.last_data = now

    def on_failure(self, error: str) -> list[Event]:
        """An attempt or the live connection failed; the N-th consecutive failure is CONNECTION_LOST."""
        self.connected = False
        self.failures += 1
        if self.failures >= self.max_failures and not self.lost:
            self.lost = True
            return [ConnectionLost(self.name, self.failures, error)]
        return []

    def stale(self, now: float) -> bool:
        """No data for longer than the heartbeat: treat the stream as dead."""
        return self.connected and self.last_data is not None and now - self.last_data > self.heartbeat_s

    def next_delay(self, rng: random.Random) -> float:
        """How long to wait before the next attempt (0 for the first one after a healthy period)."""
        return 0.0 if self.failures == 0 else self.backoff.delay(self.failures - 1, rng)


class ConnectionMonitor(MonitorWorker):
    """CONNECTION_LOST -> CONNECTION_UNSTABLE_DETECTED: the strategic verdict the breaker acts on."""

    name = "connection-monitor"

    def __init__(self, publish: PublishFn) -> None:
        self._publish = publish
        self.unstable = 0

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(ConnectionLost, self.on_lost)]

    async def on_lost(self, event: ConnectionLost) -> None:
        self.unstable += 1
        reason = f"{event.stream} stream lost after {event.attempts} attempts: {event.error}"
        log.critical("connection unstable: %s", reason, extra={"EVENT": ConnectionUnstableDetected.TOPIC})
        await self._publish(ConnectionUnstableDetected(reason))
