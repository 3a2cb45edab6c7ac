"""Read-only inspection of state files for operators: ``s1mpled state verify|show PATH``.

Nothing here takes the directory lock or renames anything, so it is safe to run next to a live
daemon. Besides the file itself it reports what ``load()`` would do with the file's siblings. Like
``load()`` it never follows a symbolic link (the file's owner is not checked: an operator may inspect
the daemon's files as root).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from s1mpled.errors import StateCorruptError, StateError
from s1mpled.state import codec, dirlog, recovery, wal
from s1mpled.state.store import read_path, read_record

__all__ = ["Inspection", "inspect", "inspect_log", "to_display_json"]

_SUFFIXES = (".journal", ".prev")


@dataclass(frozen=True, slots=True)
class Inspection:
    """The verified record of one file and the load plan of the state it belongs to."""

    path: Path
    record: codec.Record
    plan: recovery.Plan


def _base_name(path: Path) -> str:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _observe(path: Path) -> recovery.Observation:
    data = read_path(path)
    return recovery.Missing() if data is None else read_record(data)[0]


def inspect(path: str | os.PathLike[str]) -> Inspection:
    """Verify the file at ``path``; raises StateCorruptError (or StateError if unreadable) saying why."""
    p = Path(path)
    data = read_path(p)
    if data is None:
        raise StateError(str(p), "No such file or directory")
    try:
        record = codec.decode(data)
    except codec.InvalidRecord as exc:
        raise StateCorruptError(str(p), str(exc)) from None
    name = _base_name(p)
    try:
        main, journal, prev = (_observe(p.with_name(name + s)) for s in ("", *_SUFFIXES))
    except StateError as exc:  # a sibling load() would refuse (a symbolic link, a FIFO)
        return Inspection(p, record, recovery.Plan(error=str(exc)))
    plan = recovery.plan_load(name, main, journal, prev, stamp="<time>")
    if p.name == name:
        record = _with_log(p, record)
    return Inspection(p, record, plan)


def _with_log(p: Path, record: codec.Record) -> codec.Record:
    """The snapshot ``p`` with its log entries applied, as ``load()`` would: the newest state.

    A format-2 snapshot first gets its own log (``NAME.wal``, written by development builds); then the
    entries of the directory's log (``state.wal``) above it. Entries that do not continue it, or a log
    damaged beyond a torn tail, are refused: StateCorruptError naming the log.
    """
    if record.version == codec.WAL_VERSION:
        record = _with_own_log(p, record)
    log_path = p.with_name(dirlog.LOG_NAME)
    data = read_path(log_path)
    if data is None:
        return record
    try:
        parsed = dirlog.parse(data)
        entries = parsed.entries.get(p.name, [])
        state, generation = dirlog.replay(copy.deepcopy(record.state), record.generation, entries, data)
    except dirlog.LogCorrupt as exc:
        raise StateCorruptError(str(log_path), str(exc)) from None
    return dataclasses.replace(record, generation=generation, state=state)


def _with_own_log(p: Path, record: codec.Record) -> codec.Record:
    log_path = p.with_name(p.name + ".wal")
    data = read_path(log_path)
    if data is None:
        return record
    try:
        parsed = wal.parse(data)
        if parsed.base > record.generation:
            raise wal.LogCorrupt(f"the log continues generation {parsed.base}, the snapshot is {record.generation}")
        if parsed.base < record.generation:
            return record
        state = copy.deepcopy(record.state)
        for one in parsed.records:
            state = wal.apply(state, one.changes)
    except wal.LogCorrupt as exc:
        raise StateCorruptError(str(log_path), str(exc)) from None
    return dataclasses.replace(record, generation=parsed.last_generation, state=state)


def inspect_log(path: str | os.PathLike[str]) -> dirlog.ParsedLog:
    """Verify the directory's record log at ``path`` (``state.wal``); StateCorruptError saying why if damaged.

    A torn last record is not damage (``torn_bytes``: never acknowledged, the next save cuts it off).
    """
    p = Path(path)
    data = read_path(p)
    if data is None:
        raise StateError(str(p), "No such file or directory")
    try:
        return dirlog.parse(data)
    except dirlog.LogCorrupt as exc:
        raise StateCorruptError(str(p), str(exc)) from None


def _plain(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def to_display_json(inspection: Inspection) -> str:
    """The state and its facts as indented JSON (Decimals shown as strings, exactly)."""
    doc: dict[str, Any] = {
        "file": str(inspection.path),
        "format_version": codec.FORMAT_VERSION,
        "generation": inspection.record.generation,
        "length": inspection.record.length,
        "sha256": inspection.record.checksum,
        "state": inspection.record.state,
    }
    return json.dumps(doc, indent=2, default=_plain, ensure_ascii=False)
