"""Reconciliation receipts: what one pass compared, what it corrected, and a hash of what it saw.

A receipt lets an operator (status --json, the metrics) tell "reconciled, nothing to do" from
"reconciled against an empty view", and two passes that saw the same account from two that did not:
the hash covers the venue view in a canonical order (orders by client id, trades by symbol and id,
balances by asset, every amount as its exact Decimal text), so it is the same for the same view
whatever order the exchange listed things in. Pure: no clock (the pass's time is passed in), no I/O.

Receipts are persisted (the ReconciliationMonitor's ReceiptLog, a state file of their own) in the
shape ``status --json`` shows, written and read by the record codec (:mod:`s1mpled.record`): reading
refuses anything that is not exactly that shape, a negative count too (RecordError, a ValueError,
naming the key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from s1mpled import record
from s1mpled.reconciliation import Report, VenueSnapshot

__all__ = ["KEEP", "Compared", "Receipt", "receipt_of", "receipts_doc", "venue_hash"]

KEEP = 50  # receipts a monitor keeps (the newest): about four hours of five-minute passes


def _not_negative(value: int) -> bool:
    return value >= 0


_COUNT = record.check(_not_negative, "a count (an integer >= 0)")
_TIME = record.check(_not_negative, "a time in ms >= 0")


@dataclass(frozen=True, slots=True)
class Compared:
    """What one pass compared, by kind: the ``compared`` part of a receipt's document."""

    strategies: int = field(metadata=_COUNT)
    open_orders: int = field(metadata=_COUNT)
    probed: int = field(metadata=_COUNT)
    trades: int = field(metadata=_COUNT)
    balances: int = field(metadata=_COUNT)
    unreadable: int = field(metadata=_COUNT)


@dataclass(frozen=True, slots=True)
class Receipt:
    """One pass: when and why, the counts compared, the corrections (as logged), the view's hash.

    The fields, in this order, are the document's keys (the record codec writes and reads it).
    """

    trigger: str
    at_ms: int = field(metadata=_TIME)
    compared: Compared
    consistent: bool  # the balances did not move while the pass read (they were compared)
    corrections: tuple[str, ...]
    deferred_cuts: int = field(metadata=_COUNT)
    external_orders: int = field(metadata=_COUNT)
    unsettled: int = field(metadata=_COUNT)
    venue_sha256: str

    def to_doc(self) -> dict[str, Any]:
        """The document status --json shows and the receipts file holds (no Decimal: either dialect writes it
        alike; JSON is the one a Decimal added later would have to be written in for status --json)."""
        return record.encode(self, record.JSON)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Receipt:
        """The receipt ``to_doc`` made (read back from its state file); RecordError, a ValueError, "key: why"
        for anything not exactly that shape (an unknown key too)."""
        return record.decode(cls, doc, record.JSON)


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
        compared=Compared(
            strategies=strategies,
            open_orders=len(venue.open_orders),
            probed=len(venue.probed),
            trades=len(venue.trades),
            balances=len(venue.balances),
            unreadable=len(venue.unparsed),
        ),
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
