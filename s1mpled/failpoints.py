"""Fail points: crash the real process at a named step, so tests can prove crash safety exactly there.

``S1MPLED_FAILPOINTS=order.after_intent`` makes the daemon SIGKILL itself the first time it reaches
that point (a comma-separated list arms several). Unset -- always, in production -- every call is a
set lookup and nothing else. The points mark the steps where a crash is most dangerous:

- ``order.after_intent``   the order is recorded durably, the request is not sent yet
- ``order.after_send``     the exchange answered, the ledger has not recorded the answer
- ``fill.before_apply``    a fill arrived on the stream, the ledger has not applied it
- ``fill.after_apply``     the fill is applied in memory, not yet saved

``hang:NAME`` instead blocks the event loop for an hour at that point -- a stuck call, as a bug in a
library would cause -- so the watchdog test can prove that a blocked loop stops the WATCHDOG=1 pings:

- ``hang:control.status``  the next ``s1mpled status`` request blocks the loop
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["POINTS", "failpoint"]

POINTS = frozenset(
    {"order.after_intent", "order.after_send", "fill.before_apply", "fill.after_apply", "hang:control.status"}
)
_ARMED = frozenset(p.strip() for p in os.environ.get("S1MPLED_FAILPOINTS", "").split(",") if p.strip())


def failpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is armed (a real kill: no cleanup, no flush, like a power cut's cousin)."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"hang:{name}" in _ARMED:
        time.sleep(3600)  # deliberately on the event loop's thread
