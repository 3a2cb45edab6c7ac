"""The dashboard's side of each control socket: subscribe, apply every line to the instance's view, re-dial.

A daemon that is stopped, restarting or not yet listening is normal (the page shows the instance as
lost, with the reason and when the next try is); the link re-dials with capped full-jitter backoff,
forever. Nothing a socket sends can take the dashboard down: a line that is not JSON, or JSON the view
cannot use, is dropped and logged once per connection (then counted); a line over the size limit or a
silent daemon (no line for three snapshot periods) ends the connection, which is then re-dialled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from s1mpled.clock import wall_ms
from s1mpled.connection import Backoff
from s1mpled.control import decode_reply, encode_request
from s1mpled.dashboard.view import InstanceView, Update
from s1mpled.errors import ControlError

__all__ = ["BACKOFF", "Link"]

log = logging.getLogger("s1mpled.dashboard")
BACKOFF = Backoff(base_s=0.5, cap_s=15.0)
LINE_LIMIT = 64 * 1024 * 1024  # a status of many strategies may be large; past this the stream is garbage
DIAL_TIMEOUT_S = 10.0

Publish = Callable[[list[Update]], None]


class _Lost(Exception):
    """The connection ended (the reason is the message)."""


class Link:
    """One instance's subscription, kept up for as long as :meth:`run` runs."""

    def __init__(self, view: InstanceView, path: Path, publish: Publish, *, snapshot_every_s: float = 5.0) -> None:
        self.view, self.path, self.publish = view, Path(path), publish
        self.snapshot_every_s = snapshot_every_s
        self._rng = random.Random()
        self._garbage = 0

    async def run(self) -> None:
        """Dial, stream, and on any loss wait (backoff) and dial again; until cancelled. Logged once per outage."""
        attempt, logged = 0, False
        while True:
            try:
                await self._session()
            except (_Lost, ControlError, OSError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug here must cost one instance a re-dial, never the whole dashboard
                log.exception("instance %s: the link failed", self.path, extra={"EVENT": "DASHBOARD_LINK_FAILED"})
                reason = f"{type(exc).__name__}: {exc}"
            if self.view.link["state"] == "connected":  # it was up: a new outage begins
                attempt, logged = 0, False
            delay = BACKOFF.delay(attempt, self._rng)
            attempt += 1
            if not logged:
                log.warning("instance %s lost: %s; re-dialling", self.path, reason, extra={"EVENT": "DASHBOARD_LOST"})
                logged = True
            self.publish(self.view.set_link("lost", wall_ms(), reason, round(delay, 1)))
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One connection: subscribe, then apply lines until it ends (always by an exception)."""
        reader, writer = await self._dial()
        try:
            log.info("instance %s subscribed", self.path, extra={"EVENT": "DASHBOARD_LINKED"})
            self._garbage = 0
            self.publish(self.view.set_link("connected", wall_ms()))
            silence = 3 * self.snapshot_every_s + 5.0
            while True:
                async with asyncio.timeout(silence):
                    line = await reader.readline()
                if not line.endswith(b"\n"):
                    raise _Lost("the daemon closed the connection")
                self._take(line)
        except TimeoutError:
            raise _Lost(f"no line from the daemon for {3 * self.snapshot_every_s + 5.0:g} s") from None
        finally:
            writer.close()

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connected and subscribed (the daemon's reply read); ControlError/OSError/TimeoutError if not."""
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self.path), limit=LINE_LIMIT)
                try:
                    writer.write(encode_request("subscribe", {"snapshot_every_s": self.snapshot_every_s}))
                    await writer.drain()
                    reply = await reader.readline()
                    if not reply.endswith(b"\n"):
                        raise ControlError("the daemon closed the connection without answering")
                    decode_reply(reply)
                except BaseException:
                    writer.close()
                    raise
        except TimeoutError:
            raise ControlError(f"no answer within {DIAL_TIMEOUT_S:g} s") from None
        except FileNotFoundError:
            raise ControlError(f"nothing listens on {self.path} (is the daemon running?)") from None
        return reader, writer

    def _take(self, line: bytes) -> None:
        """Apply one line; garbage is dropped (logged the first time on this connection)."""
        try:
            doc = json.loads(line, parse_float=Decimal)
            if not isinstance(doc, dict):
                raise TypeError(f"a JSON {type(doc).__name__}, not an object")
            updates = self.view.apply(doc)
        except Exception as exc:  # whatever a socket sends must not take the dashboard down
            self._garbage += 1
            if self._garbage == 1:
                log.warning(
                    "instance %s sent a line the dashboard cannot use (%s: %s): %r; dropping such lines",
                    self.path, type(exc).__name__, exc, line[:200], extra={"EVENT": "DASHBOARD_GARBAGE"},
                )  # fmt: skip
            return
        if updates:
            self.publish(updates)  # outside the guard: a failure to publish is the dashboard's bug, not garbage
