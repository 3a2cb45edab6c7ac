"""Critical alerts: always the journal at CRIT, and every Apprise URL of the config.

Apprise (Telegram, Discord, ntfy, e-mail, JSON webhooks, ...) is imported only when a URL is
configured, and sending runs on a thread with a deadline, so a slow or dead notification service
can never stall trading. A failed alert is logged; it never raises into the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

__all__ = ["Alerter"]

log = logging.getLogger("s1mpled.alerts")


class Alerter:
    """Sends one-line critical alerts to the configured Apprise URLs."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float = 15.0) -> None:
        self.urls = tuple(urls)
        self._timeout_s = timeout_s
        self.sent = 0

    def _notify_blocking(self, message: str) -> bool:
        import apprise  # noqa: PLC0415 -- ~110 ms, paid only by operations that configured alerts

        client = apprise.Apprise()
        for url in self.urls:
            client.add(url)
        return bool(client.notify(title="s1mpled", body=message))

    def log_only(self, message: str, *, event: str = "ALERT") -> None:
        """The alert as a CRITICAL journal entry (every alert is one, whatever else happens).

        ``event``: the entry's EVENT field, so ``journalctl EVENT=STATE_DISK_FULL`` finds it too.
        """
        log.critical("ALERT: %s", message, extra={"EVENT": event})
        self.sent += 1

    async def send(self, message: str, *, event: str = "ALERT") -> bool:
        """Log at CRITICAL and deliver to every URL (best effort, bounded in time); True if all delivered."""
        self.log_only(message, event=event)
        if not self.urls:
            return True
        try:
            async with asyncio.timeout(self._timeout_s):
                ok = await asyncio.to_thread(self._notify_blocking, message)
        except TimeoutError:
            log.error("alert delivery timed out after %.0f s", self._timeout_s, extra={"EVENT": "ALERT_FAILED"})
            return False
        except Exception as exc:  # a notification plugin failing must not take the daemon down
            log.error("alert delivery failed: %s", exc, extra={"EVENT": "ALERT_FAILED"})
            return False
        if not ok:
            log.error("alert delivery failed for at least one URL", extra={"EVENT": "ALERT_FAILED"})
        return ok
