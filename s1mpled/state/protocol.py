"""The save protocol as data: the exact file-system steps of one durable save.

Keeping the steps as a plain list lets the I/O adapter (``store.py``) execute them and the crash
tests replay them on a simulated disk, stopping after any step, so that both are guaranteed to
talk about the same protocol.

    1. write NAME.journal (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: never through a planted link)
    2. fsync NAME.journal                     -- the new generation is on disk
    3. rename NAME -> NAME.prev               -- keep the previous generation (if NAME exists)
    4. rename NAME.journal -> NAME            -- atomic switch
    5. fsync the directory                    -- the renames themselves survive a power cut

With the directory's record log (``s1mpled.state.dirlog``) a save that only appends is one ``AppendFile``
+ ``FsyncFile`` of ``state.wal`` shared by every state saved in the same batch (the file exists, so no
directory fsync); the snapshot saves of a batch share one directory fsync (``save_ops(..., sync_dir=False)``
for each, one ``FsyncDir`` after them all). The log itself is created -- and rewritten when it has grown
(``log_ops``) -- as a whole new file, written and fsynced before it is renamed into place.

Step 5 is missing from the spec's §6.1; without it the renames can be lost on power failure
(Pillai et al., "All File Systems Are Not Created Equal", OSDI'14). save() returns only after it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppendFile", "FsyncDir", "FsyncFile", "Op", "RenameFile", "WriteFile", "log_ops", "save_ops"]


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Create ``name`` afresh (never through a link) and write ``data`` to it (not yet durable)."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AppendFile:
    """Write ``data`` at offset ``at`` of the existing regular file ``name``, cutting whatever followed it.

    Never through a link; not yet durable. ``at`` is the end of the last verified record: a torn tail
    left by a crash (or by a failed append) is cut off, never written after.
    """

    name: str
    data: bytes
    at: int


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


def save_ops(name: str, record: bytes, main_exists: bool, *, sync_dir: bool = True) -> list[Op]:
    """The steps that durably replace state file ``name`` with ``record``.

    ``sync_dir=False`` leaves out the final directory fsync, for a batch that makes several snapshots'
    renames durable with one; the batch is acknowledged only after it.
    """
    journal = f"{name}.journal"
    ops: list[Op] = [WriteFile(journal, record), FsyncFile(journal)]
    if main_exists:
        ops.append(RenameFile(name, f"{name}.prev"))
    ops.append(RenameFile(journal, name))
    if sync_dir:
        ops.append(FsyncDir())
    return ops


def log_ops(name: str, data: bytes) -> list[Op]:
    """The steps that durably put a whole new log ``name`` (``data``) in place of the old one, if any.

    A crash leaves either the old log or the new one -- both hold everything the states need -- and at
    worst a leftover ``NAME.new``, which the next log write replaces.
    """
    fresh = f"{name}.new"
    return [WriteFile(fresh, data), FsyncFile(fresh), RenameFile(fresh, name), FsyncDir()]
