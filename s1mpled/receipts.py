"""Reconciliation receipts: what one pass compared, what it corrected, and a hash of what it saw.

A receipt lets an operator (status --json, the metrics) tell "reconciled, nothing to do" from
"reconciled against an empty view", and two passes that saw the same account from two that did not:
the hash covers the venue view in a canonical order (orders by client id, trades by symbol and id,
balances by asset, every amount as its exact Decimal text), so it is the same for the same view
whatever order the exchange listed things in. Pure: no clock (the pass's time is passed in), no I/O.

Receipts are persisted (the ReconciliationMonitor's ReceiptLog, a state file of their own) in the
shape ``status --json`` shows, and read back with :meth:`Receipt.from_doc`, which refuses anything
that is not exactly that shape (ValueError naming the key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from s1mpled.reconciliation import Report, VenueSnapshot

__all__ = ["KEEP", "Receipt", "receipt_of", "receipts_doc", "venue_hash"]

KEEP = 50  # receipts a monitor keeps (the newest): about four hours of five-minute passes


@dataclass(frozen=True, slots=True)
class Receipt:
    """One pass: when and why, the counts compared, the corrections (as logged), the view's hash."""

    trigger: str
    at_ms: int
    strategies: int
    open_orders: int
    probed: int
    trades: int
    balances: int
    unreadable: int
    consistent: bool  # the balances did not move while the pass read (they were compared)
    corrections: tuple[str, ...]
    deferred_cuts: int
    external_orders: int
    unsettled: int
    venue_sha256: str

    def to_doc(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "at_ms": self.at_ms,
            "compared": {
                "strategies": self.strategies,
                "open_orders": self.open_orders,
                "probed": self.probed,
                "trades": self.trades,
                "balances": self.balances,
                "unreadable": self.unreadable,
            },
            "consistent": self.consistent,
            "corrections": list(self.corrections),
            "deferred_cuts": self.deferred_cuts,
            "external_orders": self.external_orders,
            "unsettled": self.unsettled,
            "venue_sha256": self.venue_sha256,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Receipt:
        """The receipt ``to_doc`` made (read back from its state file); ValueError("key: why") otherwise."""
        compared = doc.get("compared")
        if not isinstance(compared, Mapping):
            raise ValueError("compared: not a mapping")
        corrections = doc.get("corrections")
        if not isinstance(corrections, list) or not all(isinstance(c, str) for c in corrections):
            raise ValueError("corrections: not a list of strings")
        consistent = doc.get("consistent")
        if not isinstance(consistent, bool):
            raise ValueError("consistent: not a boolean")
        counts = {k: _count(compared, k) for k in ("strategies", "open_orders", "probed", "trades", "balances")}
        return cls(
            trigger=_text(doc, "trigger"),
            at_ms=_count(doc, "at_ms"),
            **counts,
            unreadable=_count(compared, "unreadable"),
            consistent=consistent,
            corrections=tuple(corrections),
            deferred_cuts=_count(doc, "deferred_cuts"),
            external_orders=_count(doc, "external_orders"),
            unsettled=_count(doc, "unsettled"),
            venue_sha256=_text(doc, "venue_sha256"),
        )


def _count(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key}: not a count ({value!r})")
    return value


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: not a string ({value!r})")
    return value


def _lines(venue: VenueSnapshot) -> Iterable[str]:
    for o in sorted(venue.open_orders, key=lambda o: o.client_order_id):
        yield f"open|{o.client_order_id}|{o.symbol}|{o.side}|{o.amount}|{o.price}|{o.filled}|{o.status}|{o.raw_status}"
    for cid, p in sorted(venue.probed.items()):
        yield f"probe|{cid}|-" if p is None else f"probe|{cid}|{p.symbol}|{p.amount}|{p.filled}|{p.status}"
    for t in sorted(venue.trades, key=lambda t: (t.symbol, t.trade_id)):
        yield f"trade|{t.symbol}|{t.trade_id}|{t.client_order_id}|{t.side}|{t.price}|{t.amount}|{t.fee}|{t.fee_asset}"
    for asset, b in sorted(venue.balances.items()):
        yield f"balance|{asset}|{b.free}|{b.used}"
    for u in sorted(venue.unparsed, key=lambda u: (u.client_order_id or "", u.reason)):
        yield f"unparsed|{u.client_order_id}|{u.reason}"


def venue_hash(venue: VenueSnapshot) -> str:
    """SHA-256 of the view in canonical order (the same account gives the same hash)."""
    digest = hashlib.sha256()
    for line in _lines(venue):
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def receipt_of(trigger: str, at_ms: int, strategies: int, venue: VenueSnapshot, report: Report) -> Receipt:
    return Receipt(
        trigger=trigger,
        at_ms=at_ms,
        strategies=strategies,
        open_orders=len(venue.open_orders),
        probed=len(venue.probed),
        trades=len(venue.trades),
        balances=len(venue.balances),
        unreadable=len(venue.unparsed),
        consistent=report.balances_checked,
        corrections=tuple(f"{c.strategy}: {c.describe()}" for c in report.corrections),
        deferred_cuts=len(report.deferred_cuts),
        external_orders=len(report.external_orders),
        unsettled=len(report.unsettled),
        venue_sha256=venue_hash(venue),
    )


def receipts_doc(receipts: Iterable[Receipt]) -> list[Mapping[str, Any]]:
    """Newest first, as status --json shows them."""
    return [r.to_doc() for r in reversed(list(receipts))]
