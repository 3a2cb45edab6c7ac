"""Connection management (spec §6.2.3), the pure part: backoff, link health, CONNECTION_LOST, proof of life.

ccxt does not reconnect in the background: a dead WebSocket surfaces as an exception from the next
``watch_*`` call, and a stalled one surfaces as nothing at all. So every stream the daemon keeps is
supervised by a :class:`Link` -- a pure state machine fed with "data arrived", "connected" and
"failed" at times passed in -- and a thin loop (in the environment) that sleeps the delays it asks for.
Nothing here does I/O, reads a clock or imports asyncio; the
:class:`~s1mpled.connection_monitor.ConnectionMonitor` is the bus worker beside it.

- **Heartbeat:** no data for ``heartbeat_s`` means the stream is dead, even if no error was raised (the
  environment's loop waits on each step with that deadline).
- **Backoff:** exponential with full jitter (``uniform(0, min(cap, base * 2**n))``), so a fleet of
  daemons does not reconnect in lock-step; capped.
- **Escalation:** after ``max_failures`` consecutive failed attempts the link publishes
  CONNECTION_LOST (once per outage); the ConnectionMonitor turns that into
  CONNECTION_UNSTABLE_DETECTED for the circuit breaker. The link keeps trying.
- **Recovery:** the first successful connection after any failure publishes CONNECTION_RESTORED,
  which triggers a reconciliation: events sent while disconnected are lost for good.
- **Health:** ``connected_at`` is when the current connection began (None while there is none); the
  circuit breaker closes on how long *every* link has been connected, never on counted events.
- **Proof of life:** a quiet private stream is normal for an idle account, and it is also exactly what
  a deaf one looks like (subscription gone, receive loop dead). Healthy means proven alive, so
  :class:`Hearing` judges it by what it reports: our own acknowledged orders must show up on it, and
  while it is quiet a cheap look at the account must agree with what it reported.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from s1mpled.events import ConnectionLost, ConnectionRestored, Event

__all__ = ["Backoff", "Hearing", "Holdings", "Link"]


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
    last_error: str | None = None  # why the last attempt failed (for "what are we waiting for" logs)
    connected_at: float | None = None  # when the current connection began; None while not connected

    def on_connected(self, now: float) -> list[Event]:
        """A (re)connection succeeded; after an outage that is CONNECTION_RESTORED."""
        events: list[Event] = []
        if self.ever_connected or self.failures:
            events.append(ConnectionRestored(self.name))
        self.connected, self.ever_connected, self.connected_at = True, True, now
        self.failures, self.lost = 0, False
        self.last_data, self.last_error = now, None
        return events

    def on_data(self, now: float) -> None:
        self.last_data = now

    def on_failure(self, error: str) -> list[Event]:
        """An attempt or the live connection failed; the N-th consecutive failure is CONNECTION_LOST."""
        self.connected, self.connected_at = False, None
        self.failures += 1
        self.last_error = error
        if self.failures >= self.max_failures and not self.lost:
            self.lost = True
            return [ConnectionLost(self.name, self.failures, error)]
        return []

    def next_delay(self, rng: random.Random) -> float:
        """How long to wait before the next attempt (0 for the first one after a healthy period)."""
        return 0.0 if self.failures == 0 else self.backoff.delay(self.failures - 1, rng)


Holdings = Mapping[str, tuple[Decimal, Decimal]]
"""Balances as (free, used) per asset."""
_NOTHING = (Decimal(0), Decimal(0))


def _agree(model: Holdings, account: Holdings) -> bool:
    return all(model.get(a, _NOTHING) == account.get(a, _NOTHING) for a in {*model, *account})


@dataclass(slots=True)
class Hearing:
    """Whether a subscribed private stream still hears the account: pure, monotonic seconds passed in.

    Proof of life is one of two things; silence is neither.

    - **It reports what we did.** An order or cancel the exchange acknowledged must appear on the stream
      within ``grace_s``: our own requests are free probes. The client id is registered *before* the
      request leaves (the report often overtakes the answer) and armed when the answer comes.
    - **It agrees with a look at the account.** While the stream is quiet, at most once per
      ``heartbeat_s``, the balances are fetched over REST and compared with a model: the first look after
      the subscription, overlaid with every balance the stream itself reported since. A look that
      disagrees is a suspicion; a second look one interval later that still disagrees, with nothing
      from the stream in between, makes the stream deaf (an interval is far longer than an event in
      flight). A look during which the stream delivered something proves nothing and is ignored, and
      so is one taken after the stream's own record of balances was reset (a new ``epoch``).

    The first look is due at once after a (re)subscription: the reconciliation that follows every
    subscription covers what happened before it, the model everything after.
    """

    heartbeat_s: float
    grace_s: float
    subscribed: bool = False
    fresh: bool = False  # subscribed and not looked at since: the first look is due without waiting
    last_heard: float = 0.0
    last_look: float | None = None
    baseline: dict[str, tuple[Decimal, Decimal]] | None = None
    epoch: int | None = None
    suspected_at: float | None = None
    verdict: str | None = None
    owed: dict[str, float | None] = field(default_factory=dict)  # client id -> report deadline (None: unanswered)

    def on_subscribed(self, now: float) -> None:
        """The exchange acknowledged a (new) subscription: everything before it is reconciliation's."""
        self._forget()
        self.subscribed, self.fresh, self.last_heard = True, True, now

    def on_lost(self) -> None:
        """The subscription is gone (dropped, or judged deaf): nothing is owed on it any more."""
        self._forget()

    def _forget(self) -> None:
        self.subscribed = self.fresh = False
        self.baseline = self.epoch = self.suspected_at = self.verdict = None
        self.owed.clear()

    def on_heard(self, now: float, client_ids: Iterable[str] = ()) -> None:
        """The stream delivered events (about these orders)."""
        self.last_heard, self.suspected_at = now, None
        for cid in client_ids:
            self.owed.pop(cid, None)

    def expect(self, client_id: str) -> None:
        """A request about this order is about to leave; if the exchange acknowledges it, the stream owes a report."""
        if self.subscribed:
            self.owed[client_id] = None

    def acknowledged(self, client_id: str, now: float) -> None:
        """The exchange answered: the report is due within ``grace_s`` (unless it already came)."""
        if client_id in self.owed and self.owed[client_id] is None:
            self.owed[client_id] = now + self.grace_s

    def withdraw(self, client_id: str) -> None:
        """The request failed: no report is owed (a rejected order is never reported)."""
        self.owed.pop(client_id, None)

    def look_due(self, now: float) -> bool:
        """A REST look is due: subscribed, no look for a heartbeat, and quiet for one (or just subscribed)."""
        if not self.subscribed:
            return False
        if self.last_look is not None and now - self.last_look < self.heartbeat_s:
            return False
        return self.fresh or now - self.last_heard >= self.heartbeat_s

    def on_look(self, now: float, account: Holdings | None, stream: Holdings, epoch: int, *, clean: bool) -> None:
        """A look at the account (None: the request failed); ``stream``: the balances the stream reported."""
        self.last_look, self.fresh = now, False
        if account is None or not clean or not self.subscribed:
            return
        if self.baseline is None or epoch != self.epoch:
            self.baseline, self.epoch = dict(account), epoch
            return
        if _agree({**self.baseline, **stream}, account):
            self.suspected_at = None
        elif self.suspected_at is None:
            self.suspected_at = now
        else:
            self.verdict = f"the account changed and the stream has not reported it for {now - self.suspected_at:.0f} s"

    def deaf(self, now: float) -> str | None:
        """Why the stream is deaf, or None while nothing proves it."""
        if self.verdict is not None:
            return self.verdict
        late = sorted(cid for cid, due in self.owed.items() if due is not None and due <= now)
        if late:
            return f"order {late[0]} was acknowledged and not reported on the stream within {self.grace_s:g} s"
        return None
