"""In-flight checks: an order whose request got no answer is asked about by client id within seconds.

A submit that timed out or got a 5xx leaves its order UNRESOLVED -- the exchange may have it or not --
and so does a cancel without an answer. Waiting for the next scheduled reconciliation (minutes) would
leave the strategy idle that long, so, like nautilus_trader's in-flight checks, such an order is
queried by its client id a few seconds later: with backoff, a bounded number of times per order, at a
bounded rate over all strategies. What an answer means is decided here:

- the exchange has the order: its status is a probe event of the transition table (:mod:`s1mpled.orders`);
- it has not: that proves "never placed" only for an order it never acknowledged (no exchange id, no
  fill), and only once the order's in-flight window (``env.in_flight_ms`` since its last change:
  recvWindow plus a margin) has passed -- a request still in transit may land after the answer. Until
  then, and for an acknowledged order (a contradiction for reconciliation to judge), ask again later;
- after ``max_checks`` questions the order is left to the scheduled reconciliation.

Pure: no clock, no I/O; ``now_ms`` comes in. ``StrategyWorker.check_in_flight`` does the asking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from s1mpled.model import ExchangeOrderStatus
from s1mpled.orders import OrderEvent, probe_event

__all__ = ["POLICY", "Candidate", "InFlightChecks", "Policy", "QueryBudget", "decide"]


@dataclass(frozen=True, slots=True)
class Policy:
    """When to ask, how often, how fast."""

    first_check_ms: int = 2_000  # after the order became UNRESOLVED: most answers are in by then
    max_interval_ms: int = 30_000  # the backoff doubles up to this
    max_checks: int = 8  # per order (about two minutes), then it is the scheduled reconciliation's
    queries_per_s: float = 5.0  # over all strategies: Binance weighs GET /order 4, and allows 6,000 a minute


POLICY = Policy()


@dataclass(frozen=True, slots=True)
class Candidate:
    """An UNRESOLVED order as the checks need it."""

    client_order_id: str
    updated_ms: int  # when it became UNRESOLVED: its in-flight window starts here
    acknowledged: bool  # the exchange gave it an id or filled it: "not found" cannot mean "never placed"


def decide(order: Candidate, found: ExchangeOrderStatus | None, now_ms: int, in_flight_ms: int) -> OrderEvent | None:
    """What an answer means: the probe event to apply, or None to ask again later.

    ``found``: the status of the order the exchange reported, None if it said there is no such order.
    """
    if found is not None:
        return probe_event(found)
    if order.acknowledged or now_ms - order.updated_ms < in_flight_ms:
        return None
    return probe_event(None)


class QueryBudget:
    """A token bucket shared by every strategy: at most ``per_s`` questions a second, ``burst`` at once."""

    def __init__(self, per_s: float = POLICY.queries_per_s, burst: float | None = None) -> None:
        if per_s <= 0:
            raise ValueError(f"the query rate must be positive, not {per_s}")
        self.per_s = per_s
        self.burst = max(1.0, per_s if burst is None else burst)
        self._tokens = self.burst
        self._at_ms: int | None = None

    def take(self, now_ms: int) -> bool:
        """Spend one question now if the rate allows it."""
        if self._at_ms is not None:
            elapsed_s = max(0, now_ms - self._at_ms) / 1000
            self._tokens = min(self.burst, self._tokens + elapsed_s * self.per_s)
        self._at_ms = now_ms
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass(slots=True)
class _Track:
    updated_ms: int  # the episode: an order that becomes UNRESOLVED again is a new one
    due_ms: int
    checks: int = 0


class InFlightChecks:
    """Which UNRESOLVED orders of one strategy are due for a question, and when the next one is."""

    def __init__(self, policy: Policy = POLICY, budget: QueryBudget | None = None) -> None:
        self.policy = policy
        self.budget = budget if budget is not None else QueryBudget(policy.queries_per_s)
        self._tracks: dict[str, _Track] = {}

    def due(self, unresolved: Iterable[Candidate], now_ms: int) -> list[Candidate]:
        """The orders to ask about now, most overdue first, as many as the budget allows (spent here).

        ``unresolved`` is every UNRESOLVED order: new ones are tracked (first question
        ``first_check_ms`` after they became UNRESOLVED), orders no longer in it are forgotten.
        """
        orders = {c.client_order_id: c for c in unresolved}
        self._tracks = {cid: self._track(c) for cid, c in orders.items()}
        ready = sorted(
            (t.due_ms, cid)
            for cid, t in self._tracks.items()
            if t.due_ms <= now_ms and t.checks < self.policy.max_checks
        )
        out = []
        for _, cid in ready:
            if not self.budget.take(now_ms):
                break
            out.append(orders[cid])
        return out

    def _track(self, c: Candidate) -> _Track:
        track = self._tracks.get(c.client_order_id)
        if track is None or track.updated_ms != c.updated_ms:
            track = _Track(c.updated_ms, c.updated_ms + self.policy.first_check_ms)
        return track

    def asked(self, order: Candidate, now_ms: int, in_flight_ms: int) -> bool:
        """A question went unsettled ("not yet", or it failed): schedule the next; True if it was the last.

        The backoff doubles from ``first_check_ms``; an unacknowledged order is also asked right when
        its in-flight window closes, since only then does "not found" settle it.
        """
        track = self._tracks.get(order.client_order_id)
        if track is None:
            return False
        track.checks += 1
        p = self.policy
        wait = min(p.max_interval_ms, p.first_check_ms * 2 ** min(track.checks, 30))
        track.due_ms = now_ms + wait
        window_ends = order.updated_ms + in_flight_ms
        if not order.acknowledged and now_ms < window_ends:
            track.due_ms = min(track.due_ms, window_ends)
        return track.checks >= p.max_checks

    def tracked(self) -> int:
        """How many orders are being followed."""
        return len(self._tracks)
