"""The ConnectionMonitor (spec §6.2.3): CONNECTION_LOST -> CONNECTION_UNSTABLE_DETECTED, on the bus.

The shell beside the pure :mod:`s1mpled.connection` (backoff, :class:`~s1mpled.connection.Link`,
:class:`~s1mpled.connection.Hearing`): a link publishes CONNECTION_LOST once per outage; this monitor
turns it into the verdict the circuit breaker acts on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from s1mpled.events import ConnectionLost, ConnectionUnstableDetected, Event
from s1mpled.workers import MonitorWorker, Subscription

__all__ = ["ConnectionMonitor"]

log = logging.getLogger("s1mpled.connection")  # the name the journal and log filters know it by
PublishFn = Callable[[Event], Awaitable[None]]


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
