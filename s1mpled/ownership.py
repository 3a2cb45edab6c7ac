"""Who owns a client order id: the one table that routes the stream's fills and order updates to their
strategy's worker and attributes what reconciliation finds to its ledger.

A client order id names its strategy and the epoch of its books: ``s1`` + 8 hex of operation/strategy +
the epoch + ``-`` + sequence (:mod:`s1mpled.orders`). Each strategy claims the prefix of its current epoch
and those of its earlier epochs, and a lookup has three answers:

- ``Claim(strategy, current=True)``: the strategy's current epoch. Ours -- and if its ledger cannot explain
  the order (reconciliation: listed open, or a sequence number the ledger never handed out), it is *ours
  but nobody's*: another process trades these books (an intruder; the breaker opens). That verdict needs
  the ledger, so it is reconciliation's (``_is_intruder``); the table says whose books the id names.
- ``Claim(strategy, current=False)``: an earlier epoch of these books: still ours (adopted if the ledger
  lost it in a fallback).
- ``None``: *foreign* -- another prefix (a hand-placed order, another bot, another operation, another
  strategy name, fresh books under a reused name). Reported, never touched, never delivered to a strategy.

Valid prefixes are never prefixes of one another (they end in ``-`` at one of two fixed lengths, and the
shorter one has its ``-`` where the longer one has a hex digit), so at most one claim can match a valid
id. For arbitrary strings the shortest matching prefix wins, and of two equal prefixes the later claimant
-- the rule reconciliation's table always had. A lookup is one dict probe per distinct prefix length.

Pure: no I/O, no clock (``tests/test_layering.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Claim", "OwnershipTable"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The strategy whose books a client order id names, and whether it carries their current epoch."""

    strategy: str
    current: bool


class OwnershipTable:
    """Client order id -> owning strategy, from every strategy's prefixes (current and earlier epochs)."""

    def __init__(self, prefixes: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        """``prefixes``: (strategy, current prefix, earlier epochs' prefixes) per strategy."""
        by_length: dict[int, dict[str, Claim]] = {}
        for strategy, current, old in prefixes:
            for prefix, is_current in ((current, True), *((p, False) for p in old)):
                by_length.setdefault(len(prefix), {})[prefix] = Claim(strategy, is_current)
        self._table = sorted(by_length.items())

    def claim(self, client_order_id: str) -> Claim | None:
        """Whose books ``client_order_id`` belongs to; None if it is foreign."""
        for length, claims in self._table:
            found = claims.get(client_order_id[:length])
            if found is not None:  # a key of this length: an id shorter than it never matches
                return found
        return None

    def owner(self, client_order_id: str) -> str | None:
        """The owning strategy's name; None if the id is foreign."""
        found = self.claim(client_order_id)
        return None if found is None else found.strategy
