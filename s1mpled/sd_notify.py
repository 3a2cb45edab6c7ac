"""systemd glue: sd_notify (READY, STATUS, WATCHDOG, STOPPING, RELOADING, EXTEND_TIMEOUT_USEC) through sdnotify.
(The module is not called ``systemd``: that would shadow the python-systemd package.)

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same in a
terminal. READY=1 is sent only after recovery steps A and B; the watchdog is pinged from the event
loop by a task that first checks the daemon's health, so a blocked loop or a stuck component stops
the pings and systemd restarts the service.

A start that waits for the exchange (unreachable, or a stream not subscribed yet) can last longer than
the unit's TimeoutStartSec: every retry and every tick of a wait sends EXTEND_TIMEOUT_USEC from the event
loop, so systemd keeps waiting exactly as long as the daemon proves it is alive and still trying --
a start that hangs stops the extensions and systemd's start timeout kills it (``man sd_notify``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

import sdnotify

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger("s1mpled.systemd")  # the name the journal and log filters know it by


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's WATCHDOG_USEC in seconds, if the watchdog is enabled for this very process."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Talks to systemd's notification socket; silent when there is none."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None
        self._last_status = ""

    def _send(self, message: str) -> None:
        if self._sd is not None:
            self._sd.notify(message)

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def ready(self, text: str) -> None:
        self._send(f"READY=1\nSTATUS={text}")
        self._last_status = text

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def reloading(self) -> None:
        self._send("RELOADING=1\nSTATUS=reloading configuration")

    def extend_timeout(self, seconds: float, text: str) -> None:
        """Give the current step (the start, while recovery waits) ``seconds`` more from now, saying why."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}\nSTATUS={text}")
        self._last_status = text

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    async def run_watchdog(self, healthy: Callable[[], bool], interval_s: float | None) -> None:
        """Ping WATCHDOG=1 every ``interval_s`` from the event loop while ``healthy()``; until cancelled."""
        if interval_s is None:
            await asyncio.Event().wait()
            return
        while True:
            if healthy():
                self.watchdog()
            else:
                log.error("health check failed: withholding the watchdog ping", extra={"EVENT": "WATCHDOG_WITHHELD"})
            await asyncio.sleep(interval_s)
