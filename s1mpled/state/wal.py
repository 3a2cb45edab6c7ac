"""The changes between two states (``diff``/``apply``), and the per-file record log an upgrade still reads.

The diff below is what every record log stores: the directory's one log (``s1mpled.state.dirlog``, which
s1mpled writes) and the per-file log ``NAME.wal`` described next, which s1mpled 0.1 development builds
wrote and which ``load()`` still replays for a snapshot of format version 2 (the next save writes the
state in today's format). Nothing writes a per-file log any more.

Why: a snapshot rewrite costs O(state) -- a strategy's bounded history and 10,000 seen trade ids, the
paper exchange's order and trade history -- although a fill changes a few hundred bytes. With a log, a
save appends one checksummed record holding only what changed since the last durable save, and fsyncs
that one file (the file already exists, so no directory fsync). From time to time the state is
*compacted*: written as a full snapshot by the §6.1 protocol (journal -> fsync -> rename -> directory
fsync) together with a fresh, empty log, so the log never grows beyond about the snapshot's size and a
load never replays more than that.

Files, for state file ``NAME``: ``NAME`` (the snapshot, unchanged format, generation G) and ``NAME.wal``:

    S1MPLED-WAL 1 <generation> <payload-length> <sha256-hex>\\n<payload>   (repeated)

A compaction first appends its own change to the old log, which then becomes ``NAME.wal.prev`` (as
``NAME`` becomes ``NAME.prev``): should ``NAME`` be damaged, ``NAME.prev`` + ``NAME.wal.prev`` rebuild it
exactly and ``NAME.wal`` continues from there, so a fallback loses nothing. For the same reason a state
appends only once ``NAME.prev`` exists (its first two saves are snapshots) and while ``NAME`` exists (the
save after a fallback is a snapshot).

The first record has an empty payload and the generation of the snapshot the log continues (its
*base*); every later record holds the changes that turn generation g-1 into g (consecutive). The
checksum covers version, generation, length and payload, as in the snapshot codec.

Torn tails. A crash in the middle of an append leaves an incomplete last record (or a complete-length
one whose bytes never reached the disk). It was never acknowledged -- a save returns only after the
append's fsync -- so it is dropped, loudly, and the next save compacts (which replaces the log
atomically). Damage *followed by* a verified record cannot be a torn append: it is refused
(:class:`LogCorrupt`), naming the file; so is a gap in the generations or a log whose base is newer
than the snapshot that loaded (the log continues a snapshot that is gone). Bit rot in the very last
acknowledged record is indistinguishable from a torn append; it is reported as a torn tail, never
silently.

The diff (:func:`diff`) works on the JSON-shaped state: mappings are compared key by key (recursively),
lists as one splice -- drop ``k`` items from the front, then replace the middle between the longest
common prefix and suffix -- which is exactly the shape of a bounded history (oldest out at the front,
newest in at the back) and of an order updated in place. The comparisons run in C (``list.index``,
slice ``==``). Scalars directly under a mapping are compared strictly (same type; a Decimal's exponent
too), so ``Decimal("1.0")`` -> ``Decimal("1.00")`` is recorded. Items *inside* a list are compared with
``==``: an item rewritten to an equal value of another representation (``1`` and ``True``, ``1.0`` and
``1.00``) inside an otherwise unchanged list is not recorded until the next compaction writes the whole
state -- the value is the same, only its spelling differs.

Cost. Building the snapshot (``state_snapshot()``) and the C-speed comparisons are still O(state) CPU;
the encoding, the checksum, the bytes written and the fsyncs are O(change), and the snapshot rewrite is
amortized: a compaction happens once the log has grown by about the snapshot's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from s1mpled.state import codec

__all__ = [
    "MAGIC",
    "LogCorrupt",
    "LogRecord",
    "ParsedLog",
    "apply",
    "base_record",
    "decode_changes",
    "diff",
    "encode_record",
    "parse",
    "should_compact",
]

MAGIC = b"S1MPLED-WAL"
VERSION = 1
_MAX_HEADER = 160
MIN_COMPACT_BYTES = 64 * 1024  # a small state compacts after this much log (bounded replay at load)


class LogCorrupt(ValueError):
    """The log is damaged in a way a torn append cannot explain; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One verified record: its generation and its changes (empty for the base record)."""

    generation: int
    changes: list[Any]


@dataclass(frozen=True, slots=True)
class ParsedLog:
    """A verified log: its base generation, the change records after it, and any torn tail dropped."""

    base: int
    records: list[LogRecord] = field(default_factory=list)
    valid_length: int = 0
    torn_bytes: int = 0
    torn_why: str = ""

    @property
    def last_generation(self) -> int:
        return self.records[-1].generation if self.records else self.base


def _digest(generation: int, length: int, payload: bytes) -> str:
    h = hashlib.sha256(b"WAL %d %d %d " % (VERSION, generation, length))
    h.update(payload)
    return h.hexdigest()


def _frame(payload: bytes, generation: int) -> bytes:
    return b"%s %d %d %d %s\n" % (
        MAGIC, VERSION, generation, len(payload), _digest(generation, len(payload), payload).encode()
    ) + payload  # fmt: skip


def base_record(generation: int) -> bytes:
    """The first record of a log that continues the snapshot at ``generation``."""
    return _frame(b"", generation)


def encode_record(changes: list[Any], generation: int) -> bytes:
    """A change record; raises StateEncodeError (as the codec does) for a value not stored exactly."""
    return _frame(codec.encode_payload(changes), generation)


@dataclass(frozen=True, slots=True)
class Framing:
    """How a log frames its records: ``<magic> <version> <number> <length> <sha256>\\n<payload>``.

    Both logs -- this per-file one and the directory's (``dirlog``) -- frame records alike and differ
    only in magic, version and what their checksum covers, so one reader verifies both.
    """

    magic: bytes
    version: int
    digest: Callable[[int, int, bytes], str]  # (number, length, payload) -> sha256 hex


def read_frame(data: bytes, pos: int, framing: Framing) -> tuple[int, int, int] | str:  # noqa: PLR0911 (one reason each)
    """(number, payload start, end) of the record at ``pos``, or why it is not a complete verified record."""
    end = data.find(b"\n", pos, pos + _MAX_HEADER)
    if end < 0:
        return "incomplete or unreadable record header"
    fields = data[pos:end].split(b" ")
    if len(fields) != 5 or fields[0] != framing.magic:
        return "not a record header"
    try:
        version, number, length = int(fields[1]), int(fields[2]), int(fields[3])
        checksum = fields[4].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return "malformed record header"
    if version != framing.version:
        return f"unknown log record version {version} (this s1mpled reads version {framing.version})"
    start, stop = end + 1, end + 1 + length
    if stop > len(data):
        return f"truncated record: announces {length} bytes, {len(data) - start} present"
    if framing.digest(number, length, data[start:stop]) != checksum:
        return "checksum mismatch"
    return number, start, stop


def any_verified_after(data: bytes, pos: int, framing: Framing) -> bool:
    """Whether a verified record starts anywhere at or after ``pos`` (damage before it is no torn append)."""
    while (found := data.find(framing.magic, pos)) >= 0:
        if not isinstance(read_frame(data, found, framing), str):
            return True
        pos = found + 1
    return False


FRAMING = Framing(MAGIC, VERSION, _digest)


def _read_one(data: bytes, pos: int) -> tuple[int, bytes, int] | str:
    """(generation, payload, end) of the record at ``pos``, or why it is not a complete verified record."""
    one = read_frame(data, pos, FRAMING)
    return one if isinstance(one, str) else (one[0], data[one[1] : one[2]], one[2])


def decode_changes(payload: bytes, generation: int) -> list[Any]:
    try:
        record = codec.decode(codec.frame(payload, max(generation, 1)))
    except codec.InvalidRecord as exc:  # verified bytes that do not decode: a writer bug, never a torn append
        raise LogCorrupt(f"record of generation {generation}: {exc}") from None
    if not isinstance(record.state, list):
        raise LogCorrupt(f"record of generation {generation}: changes are not a list")
    return record.state


def parse(data: bytes) -> ParsedLog:
    """Verify a whole log; a torn tail is reported (``torn_bytes``), anything else damaged raises LogCorrupt."""
    first = _read_one(data, 0)
    if isinstance(first, str):
        if data.find(MAGIC, 1) >= 0:
            raise LogCorrupt(f"the base record is damaged ({first}) and records follow it")
        # A log is created whole (base record fsynced before it is renamed into place), so even a
        # damaged base cannot be a torn append: refuse rather than guess the base.
        raise LogCorrupt(f"no verified base record ({first})")
    base, payload, pos = first
    if payload:
        raise LogCorrupt("the base record is not empty")
    parsed = ParsedLog(base=base)
    expected = base + 1
    while pos < len(data):
        one = _read_one(data, pos)
        if isinstance(one, str):
            if any_verified_after(data, pos + 1, FRAMING):
                raise LogCorrupt(f"damaged record at byte {pos} ({one}) followed by verified records")
            return ParsedLog(base, parsed.records, pos, len(data) - pos, one)
        generation, payload, end = one
        if generation != expected:
            raise LogCorrupt(f"record at byte {pos} has generation {generation}, expected {expected}")
        parsed.records.append(LogRecord(generation, decode_changes(payload, generation)))
        expected, pos = expected + 1, end
    return ParsedLog(base, parsed.records, pos)


# -- diff and apply: JSON-shaped data (dict with str keys, list/tuple, str, int, bool, None, Decimal, float)


_PLAIN = frozenset({str, int, bool, float, type(None)})


def _same_scalar(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is Decimal:
        return a.compare_total(b) == 0  # the same value *and* spelling (exponent, sign of zero), in C
    return bool(a == b)


def _diff_list(old: list[Any], new: list[Any] | tuple[Any, ...], path: list[str], out: list[Any]) -> None:
    if type(new) is list and old == new:
        return
    if old and new and old[0] != new[0]:
        try:
            k = old.index(new[0])
        except ValueError:
            k = -1
        if k > 0 and old[k:] == list(new[: len(old) - k]):
            # a bounded history: the oldest out at the front, what is left is new's beginning, the rest is new
            # (the one comparison of the whole list, in C: a fill on 10,000 seen ids compares them once)
            out.append(["splice", path, k, len(old) - k, 0, list(new[len(old) - k :])])
            return
    limit = min(len(old), len(new))
    if old[:limit] == list(new[:limit]):  # the common case, in C: only appended (or only cut at the back)
        prefix = limit
    else:
        prefix = 0
        while old[prefix] == new[prefix]:
            prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
        suffix += 1
    delete = len(old) - prefix - suffix
    insert = list(new[prefix : len(new) - suffix])
    if delete or insert:
        out.append(["splice", path, 0, prefix, delete, insert])


def _diff(old: Any, new: Any, path: list[str], out: list[Any]) -> None:
    if type(old) is dict and isinstance(new, dict):
        for key in old:
            if key not in new:
                out.append(["del", [*path, key]])
        for key, value in new.items():
            if key not in old:
                out.append(["set", [*path, key], value])
                continue
            before, kind = old[key], type(value)
            if type(before) is kind and (
                (kind in _PLAIN and before == value) or (kind is Decimal and before.compare_total(value) == 0)
            ):
                continue  # the common case, without a call per key: an unchanged scalar (as _same_scalar says)
            _diff(before, value, [*path, key], out)
    elif type(old) is list and isinstance(new, list | tuple):
        _diff_list(old, new, path, out)
    elif isinstance(old, dict | list) or isinstance(new, dict | list | tuple) or not _same_scalar(old, new):
        out.append(["set", path, new])


def diff(old: Any, new: Any) -> list[Any]:
    """The changes that turn ``old`` (as decoded from the store) into ``new`` (as handed to save)."""
    if not isinstance(new, dict) or type(old) is not dict:
        return [["set", [], new]]
    out: list[Any] = []
    _diff(old, new, [], out)
    return out


def _parent(root: dict[str, Any], path: list[Any]) -> Any:
    node: Any = root
    for key in path[:-1]:
        node = node[key]
    return node


def apply(state: Any, changes: list[Any]) -> Any:
    """Apply decoded changes to ``state`` in place (returns the new root); LogCorrupt if they do not fit."""
    try:
        for change in changes:
            kind, path = change[0], change[1]
            if kind == "set":
                if not path:
                    state = change[2]
                else:
                    _parent(state, path)[path[-1]] = change[2]
            elif kind == "del":
                del _parent(state, path)[path[-1]]
            elif kind == "splice":
                target = _parent(state, path)[path[-1]] if path else state
                drop, start, delete, items = change[2:6]
                if not isinstance(target, list) or drop + start + delete > len(target):
                    raise LogCorrupt(f"splice at {path} does not fit the state")
                del target[:drop]
                target[start : start + delete] = items
            else:
                raise LogCorrupt(f"unknown change {kind!r}")
    except (LookupError, TypeError, ValueError) as exc:
        raise LogCorrupt(f"a change does not fit the state: {exc!r}") from None
    return state


def should_compact(log_bytes: int, snapshot_bytes: int) -> bool:
    """Whether the next save writes a snapshot instead of appending: once the log outgrows the snapshot.

    The snapshot rewrite is then amortized over at least its own size in appended bytes, so the cost per
    save stays O(change) on average, and a load replays at most about one snapshot's worth of log.
    """
    return log_bytes >= max(MIN_COMPACT_BYTES, snapshot_bytes)
