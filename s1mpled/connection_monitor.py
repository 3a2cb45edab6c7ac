"""The ConnectionMonitor (spec §6.2.3): CONNECTION_LOST -> CONNECTION_UNSTABLE_DETECTED, on the bus.

The shell beside the pure :mod:`s1mpled.connection` (backoff, :class:`~s1mpled.connection.Link`,
:class:`~s1mpled.connection.Hearing`): a link publishes CONNECTION_LOST once per outage; this monitor
turns it into the verdict the circuit breaker acts on. It also counts each stream's reconnections
(CONNECTION_RESTORED) into the daemon's instruments: the pure Link only says what happened, the
metrics are collected here, in the shell.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from s1mpled.events import ConnectionLost, ConnectionRestored, ConnectionUnstableDetected, Publish
from s1mpled.workers import MonitorWorker, Subscription

if TYPE_CHECKING:
    from s1mpled.instruments import Instruments

__all__ = ["ConnectionMonitor"]

log = logging.getLogger("s1mpled.connection")  # the name the journal and log filters know it by


class ConnectionMonitor(MonitorWorker):
    """CONNECTION_LOST -> CONNECTION_UNSTABLE_DETECTED: the strategic verdict the breaker acts on."""

    name = "connection-monitor"

    def __init__(self, publish: Publish, instruments: Instruments | None = None) -> None:
        self._publish = publish
        self._instruments = instruments
        self.unstable = 0

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(ConnectionLost, self.on_lost), Subscription(ConnectionRestored, self.on_restored)]

    async def on_lost(self, event: ConnectionLost) -> None:
        self.unstable += 1
        reason = f"{event.stream} stream lost after {event.attempts} attempts: {event.error}"
        log.critical("connection unstable: %s", reason, extra={"EVENT": ConnectionUnstableDetected.TOPIC})
        await self._publish(ConnectionUnstableDetected(reason))

    async def on_restored(self, event: ConnectionRestored) -> None:
        """Count the reconnection (``s1mpled_stream_reconnects_total``); the reconciliation it calls for
        is the ReconciliationMonitor's."""
        if self._instruments is not None:
            self._instruments.reconnected(event.stream)
