"""The state directory's one record log (``state.wal``): pure framing, verification and the carry-over plan.

Why one log for the whole directory: a fill changes several states in the same event-loop tick -- the
paper exchange's books, the strategy's ledger, its intents -- and with a log per state each of them was
its own append and its own fsync. Here every save of a tick that only appends goes into ONE record, so
the tick costs one write and one fsync whatever number of components it touched (group commit across
files), and the records of one tick reach the disk together or not at all: the checksum covers the
whole batch.

File layout (``state.wal``)::

    S1MPLED-LOG 1 <seq> <payload-length> <sha256-hex>\\n<payload>      (repeated; seq 0, 1, 2, ...)

Record 0 (the *base*) is empty. Every later payload is a batch of entries, one per state saved::

    <generation> <length> <name>\\n<changes>                          (repeated)

``changes`` is the codec's payload encoding of the list of changes (``wal.diff``) that turns generation
``g - 1`` of state ``name`` into ``g``. The checksum covers version, sequence, length and payload, as in
the snapshot codec; sequence numbers are consecutive, so a lost record in the middle is a gap, refused.

What a snapshot ``NAME`` at generation ``g`` needs from the log: its entries with a generation above
``g``, consecutive. Entries at or below it are already in the snapshot and are skipped. For the fallback
to ``NAME.prev`` (generation ``p``) the log also keeps every entry above ``p``: the writer maintains
that invariant when it rewrites the log (``carry``), so a damaged ``NAME`` is rebuilt exactly from
``NAME.prev`` plus the log -- nothing acknowledged is lost by a fallback.

Torn tails. A crash in the middle of an append leaves an incomplete (or unverifiable) last record. It
was never acknowledged -- a save returns only after the append's fsync -- so it is dropped, loudly, and
the next append first cuts the file back to the last verified record. Damage *followed by* a verified
record cannot be a torn append: it is refused (:class:`LogCorrupt`). Bit rot in the very last record is
indistinguishable from a torn append; it is reported as a torn tail, never silently.

Pure: no I/O, no clock; the store (``store.py``) reads and writes the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from s1mpled.state import wal

__all__ = [
    "LOG_NAME",
    "MAGIC",
    "Entry",
    "LogCorrupt",
    "LogGap",
    "ParsedLog",
    "apply_entries",
    "base",
    "batch",
    "carry",
    "chain",
    "entry",
    "gap",
    "index_record",
    "needed",
    "parse",
    "replay",
    "should_rotate",
]

LOG_NAME = "state.wal"
MAGIC = b"S1MPLED-LOG"
VERSION = 1
MIN_ROTATE_BYTES = 256 * 1024  # the log is never rewritten below this size (bounded replay, rare rewrites)


class LogCorrupt(ValueError):
    """The log is damaged in a way a torn append cannot explain; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One state's change in a verified record: its name, its generation, where its changes lie in the file."""

    name: str
    generation: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class ParsedLog:
    """A verified log: its entries by state name (in generation order) and how much of the file is verified."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)
    records: int = 1  # the next record's sequence number (the base is record 0)
    valid_length: int = 0
    torn_bytes: int = 0
    torn_why: str = ""

    def add(self, one: Entry) -> None:
        """Index a verified entry; LogCorrupt for a generation of a state that is already there."""
        mine = self.entries.setdefault(one.name, [])
        if mine and one.generation <= mine[-1].generation:
            raise LogCorrupt(
                f"{one.name}: generation {one.generation} after generation {mine[-1].generation} (out of order)"
            )
        mine.append(one)


def _digest(seq: int, length: int, payload: bytes) -> str:
    h = hashlib.sha256(b"LOG %d %d %d " % (VERSION, seq, length))
    h.update(payload)
    return h.hexdigest()


def _frame(payload: bytes, seq: int) -> bytes:
    header = b"%s %d %d %d %s\n" % (MAGIC, VERSION, seq, len(payload), _digest(seq, len(payload), payload).encode())
    return header + payload


def base() -> bytes:
    """The first record of a fresh log."""
    return _frame(b"", 0)


def entry(name: str, generation: int, changes: bytes) -> bytes:
    """One state's entry in a batch (``changes``: the codec's payload bytes of its change list)."""
    return b"%d %d %s\n" % (generation, len(changes), name.encode()) + changes


def batch(entries: Iterable[bytes], seq: int) -> bytes:
    """The record that makes ``entries`` durable together (one append, one fsync)."""
    return _frame(b"".join(entries), seq)


FRAMING = wal.Framing(MAGIC, VERSION, _digest)


def _entries(data: bytes, start: int, stop: int) -> Iterable[Entry]:
    """The entries of a verified payload; LogCorrupt if it is not a list of well-formed entries."""
    pos = start
    while pos < stop:
        end = data.find(b"\n", pos, stop)
        fields = data[pos:end].split(b" ", 2) if end >= 0 else []
        try:
            generation, length, name = int(fields[0]), int(fields[1]), fields[2].decode()
        except (IndexError, ValueError, UnicodeDecodeError):
            raise LogCorrupt(f"malformed entry at byte {pos} of a verified record (a writer bug)") from None
        if generation < 1 or length < 0 or end + 1 + length > stop or not name:
            raise LogCorrupt(f"entry at byte {pos} does not fit its record")
        yield Entry(name, generation, end + 1, end + 1 + length)
        pos = end + 1 + length


def parse(data: bytes) -> ParsedLog:
    """Verify and index a whole log; a torn tail is reported (``torn_bytes``), anything else damaged raises."""
    first = wal.read_frame(data, 0, FRAMING)
    if isinstance(first, str) or first[0] != 0 or first[1] != first[2]:
        # A log is created whole (its first record fsynced before it is renamed into place), so even a
        # damaged base cannot be a torn append: refuse rather than guess.
        raise LogCorrupt(f"no verified base record ({first if isinstance(first, str) else 'not an empty record 0'})")
    parsed, pos = ParsedLog(records=1), first[2]
    while pos < len(data):
        one = wal.read_frame(data, pos, FRAMING)
        if isinstance(one, str):
            if wal.any_verified_after(data, pos + 1, FRAMING):
                raise LogCorrupt(f"damaged record at byte {pos} ({one}) followed by verified records")
            parsed.valid_length, parsed.torn_bytes, parsed.torn_why = pos, len(data) - pos, one
            return parsed
        seq, start, stop = one
        if seq != parsed.records:
            raise LogCorrupt(f"record at byte {pos} has sequence number {seq}, expected {parsed.records}")
        for found in _entries(data, start, stop):
            parsed.add(found)
        parsed.records, pos = parsed.records + 1, stop
    parsed.valid_length = pos
    return parsed


def index_record(parsed: ParsedLog, record: bytes, offset: int) -> None:
    """Index ``record`` (written by :func:`batch`, now durable at ``offset``) as the log's next record."""
    start = record.index(b"\n") + 1
    for found in _entries(record, start, len(record)):
        parsed.add(Entry(found.name, found.generation, found.start + offset, found.end + offset))
    parsed.records += 1
    parsed.valid_length = offset + len(record)


def needed(entries: list[Entry], after: int) -> list[Entry]:
    """The entries that continue a snapshot at generation ``after`` (those above it, in order)."""
    return [e for e in entries if e.generation > after]


class LogGap(LogCorrupt):
    """A state's entries do not continue the snapshot that loaded (it is older than what they continue)."""


def chain(entries: list[Entry], generation: int) -> tuple[list[Entry], list[Entry]]:
    """The entries that continue a snapshot at ``generation`` one after the other, and any above a gap."""
    todo = needed(entries, generation)
    n = 0
    while n < len(todo) and todo[n].generation == generation + 1 + n:
        n += 1
    return todo[:n], todo[n:]


def apply_entries(state: Any, entries: list[Entry], data: bytes) -> Any:
    """``state`` with ``entries`` (a chain that continues it) applied in place; LogCorrupt if one does not fit."""
    for e in entries:
        state = wal.apply(state, wal.decode_changes(data[e.start : e.end], e.generation))
    return state


def gap(state: Any, generation: int, run: list[Entry], rest: list[Entry]) -> str | None:
    """Why the entries above a snapshot at ``generation`` (``chain``'s split) do not continue it, or None.

    They do not when some lie above a missing generation, or when there is no state to apply them to.
    """
    if not rest and (state is not None or not run):
        return None
    above = run + rest
    return (
        f"its entries of {above[0].name} (generations {above[0].generation} to {above[-1].generation}) do "
        f"not continue the snapshot, generation {generation}"
    )


def replay(state: Any, generation: int, entries: list[Entry], data: bytes) -> tuple[Any, int]:
    """The state at ``generation`` with its entries above it applied (in place), and the generation reached.

    LogGap if the entries above it do not continue it exactly (``gap``); LogCorrupt if one does not fit it.
    """
    run, rest = chain(entries, generation)
    if (why := gap(state, generation, run, rest)) is not None:
        raise LogGap(why)
    return apply_entries(state, run, data), (run[-1].generation if run else generation)


def carry(parsed: ParsedLog, keep_after: Mapping[str, int]) -> list[Entry]:
    """The entries a rewritten log must keep: for each state, those above its ``NAME.prev`` generation.

    ``keep_after`` names, for the states this process has loaded, the generation of their ``NAME.prev``
    (0 if there is none); a state it does not name keeps every entry -- nothing is dropped on behalf of
    a state nobody has looked at.
    """
    kept: list[Entry] = []
    for name, entries in parsed.entries.items():
        kept += needed(entries, keep_after.get(name, 0))
    return kept


def should_rotate(log_bytes: int, carried_bytes: int, snapshot_bytes: int) -> bool:
    """Whether the log is rewritten (keeping only what ``carry`` keeps) before the next append.

    Once the log has grown past what the last rewrite kept (twice over) and past the snapshots it
    continues: the rewrite then costs at most what was appended since, so the cost per save stays
    O(change), and a load never replays more than a few snapshots' worth.
    """
    return log_bytes >= max(MIN_ROTATE_BYTES, 2 * carried_bytes, 2 * snapshot_bytes)
