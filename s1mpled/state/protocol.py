"""The save protocol as data: the exact file-system steps of one durable save.

Keeping the steps as a plain list lets the I/O adapter (``store.py``) execute them and the crash
tests replay them on a simulated disk, stopping after any step, so that both are guaranteed to
talk about the same protocol.

    1. write NAME.journal (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: never through a planted link)
    2. fsync NAME.journal                     -- the new generation is on disk
    3. rename NAME -> NAME.prev               -- keep the previous generation (if NAME exists)
    4. rename NAME.journal -> NAME            -- atomic switch
    5. fsync the directory                    -- the renames themselves survive a power cut

With a record log (``s1mpled.state.wal``) a save is either one append (``AppendFile`` + ``FsyncFile`` of
``NAME.wal``: the file exists, so no directory fsync) or a compaction (``compact_ops``): the steps above
plus a fresh log ``NAME.wal.new`` holding only its base record, written and fsynced before the renames
and renamed over ``NAME.wal`` before the one directory fsync.

Step 5 is missing from the spec's §6.1; without it the renames can be lost on power failure
(Pillai et al., "All File Systems Are Not Created Equal", OSDI'14). save() returns only after it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppendFile", "FsyncDir", "FsyncFile", "Op", "RenameFile", "WriteFile", "compact_ops", "save_ops"]


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Create ``name`` afresh (never through a link) and write ``data`` to it (not yet durable)."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AppendFile:
    """Append ``data`` to the existing regular file ``name`` (never through a link; not yet durable)."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class FsyncFile:
    """Make the contents of ``name`` durable."""

    name: str


@dataclass(frozen=True, slots=True)
class RenameFile:
    """Atomically rename ``src`` to ``dst`` in the directory (durable after FsyncDir)."""

    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class FsyncDir:
    """Make the directory's entries (creations, renames) durable."""


Op = WriteFile | AppendFile | FsyncFile | RenameFile | FsyncDir


def save_ops(name: str, record: bytes, main_exists: bool) -> list[Op]:
    """The steps that durably replace state file ``name`` with ``record``."""
    journal = f"{name}.journal"
    ops: list[Op] = [WriteFile(journal, record), FsyncFile(journal)]
    if main_exists:
        ops.append(RenameFile(name, f"{name}.prev"))
    ops += [RenameFile(journal, name), FsyncDir()]
    return ops


def compact_ops(
    name: str, record: bytes, main_exists: bool, log_base: bytes, *, tail: bytes | None = None, log_exists: bool = False
) -> list[Op]:
    """A snapshot save that also starts a fresh ``NAME.wal`` holding only ``log_base``.

    ``tail`` (this save's change record) is first appended to the old log, which then becomes
    ``NAME.wal.prev``: with ``NAME.prev`` it rebuilds the new snapshot should ``NAME`` be damaged. Every new
    byte is durable before the first rename; any prefix of the renames that survives a crash leaves either
    the old snapshot with a complete journal of the new one (recovery finishes it) or the new snapshot, and
    a log that either continues it or is older than it (ignored).
    """
    journal, log, fresh = f"{name}.journal", f"{name}.wal", f"{name}.wal.new"
    ops: list[Op] = [WriteFile(journal, record), FsyncFile(journal)]
    if tail is not None:
        ops += [AppendFile(log, tail), FsyncFile(log)]
    ops += [WriteFile(fresh, log_base), FsyncFile(fresh)]
    if main_exists:
        ops.append(RenameFile(name, f"{name}.prev"))
    ops.append(RenameFile(journal, name))
    if log_exists:
        ops.append(RenameFile(log, f"{log}.prev"))
    ops += [RenameFile(fresh, log), FsyncDir()]
    return ops
