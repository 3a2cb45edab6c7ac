"""The durable state store: the I/O adapter around the pure codec, protocol and recovery plan.

Guarantee: when ``save()`` (or ``save_sync()``) returns, the saved state -- or a newer one -- is on
disk, its directory entry included, and a later ``load()`` returns it or something newer, whatever
crash or power cut happens in between. ``load()`` never returns an empty default for a state that
existed: it completes an interrupted save, falls back loudly to a verified previous generation, or
raises StateCorruptError naming the file.

One process writes a state directory at a time (``fcntl.flock`` on ``s1mpled.lock``); fsync runs
on a dedicated writer thread, never on the event loop -- not even at start-up: a ``load()`` called
on an event-loop thread queues its directory fsync on the writer thread, ahead of every later save;
saves issued while a write is under way coalesce into one write of the newest state (group commit).

Nothing in the directory is ever followed or trusted blindly: state files are opened with
``O_NOFOLLOW`` (and the journal is created with ``O_EXCL``), so a symbolic link, a file that is not
a regular file, or one owned by another user where ``NAME``, ``NAME.prev`` or ``NAME.journal``
belongs is refused with a StateError naming it -- never read through, never written through.

When the disk is full (ENOSPC, or EDQUOT: the quota) a save has written nothing that counts: its
journal is removed and the previous generation is intact. ``save()`` then waits and retries with
backoff, and writes the newest state requested meanwhile once space returns (nothing acknowledged is
lost, nothing is acknowledged early); ``save(..., wait_for_space=False)`` raises StateDiskFullError
instead, for a caller that must not wait (an order whose intent cannot be recorded is not sent).
While any state waits, :attr:`StateDirectory.disk_full` is true; the episode is reported once
(CRITICAL, and an alert under :meth:`StateDirectory.supervise`) and its end once.

A StateFile that calls ``use_log()`` saves through the directory's one record log ``state.wal``
(``s1mpled.state.dirlog``): a save appends only its change, and every save of the same batch -- all those
prepared in one event-loop tick, or while the batch before was on the disk, whatever state they belong
to -- is one record, one write and one fsync (group commit across every component). A state's snapshot
is rewritten by the protocol above once its entries since it have outgrown it (a compaction), and the
log is rewritten, keeping what each state still needs, once it has outgrown that. ``load()`` applies a
state's entries whenever it finds some, so nothing depends on the caller remembering ``use_log()``; an
append on a file system without a free block is ENOSPC like a snapshot's.

An error from fsync is different: the kernel may already have dropped the dirty pages and marked
them clean, so the page cache no longer says what is on disk, and a retried fsync can "succeed"
with the data lost (Rebello et al., USENIX ATC'20). Any fsync error -- EIO, and ENOSPC too, which
is how a thin-provisioned or loop device reports a failed writeback -- is StateFsyncError and
fail-stop: the directory refuses every later write (nothing is acknowledged after it), and
:meth:`StateDirectory.supervise` raises it so the daemon exits 70, systemd restarts it and
recovery reloads the state from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import fcntl
import functools
import logging
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from s1mpled.errors import (
    LocalStateError,
    StateCorruptError,
    StateDiskFullError,
    StateEncodeError,
    StateError,
    StateFsyncError,
    StateLockedError,
)
from s1mpled.state import codec, dirlog, protocol, recovery, wal

__all__ = [
    "LOCK_NAME",
    "Alert",
    "LoadResult",
    "StateDirectory",
    "StateFile",
    "StoreStats",
    "observe",
    "read_path",
    "read_record",
]

log = logging.getLogger("s1mpled.state")
LOCK_NAME = "s1mpled.lock"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What load() found: the state (None on a fresh start), its generation and how it got it."""

    state: Any
    generation: int
    source: recovery.Source | None
    fresh: bool
    fallback: bool
    messages: tuple[str, ...]


@dataclass(slots=True)
class StoreStats:
    """Counters of real file-system work, for benchmarks and tests."""

    writes: int = 0
    fsyncs: int = 0
    saves_requested: int = 0


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class Alert(Protocol):
    """What :meth:`StateDirectory.supervise` reports a full disk to (``Alerter.send``)."""

    def __call__(self, message: str, *, event: str = ...) -> Awaitable[object]: ...


def _why(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {errno.errorcode.get(exc.errno or 0, exc.errno)})"


def _os_error(path: str, exc: OSError) -> StateError:
    return StateError(path, _why(exc))


def _fsync_failed(path: str, exc: OSError) -> StateFsyncError:
    return StateFsyncError(
        path,
        f"fsync failed: {_why(exc)}; after a failed fsync the page cache cannot be trusted, so nothing more "
        "is written: s1mpled stops (fail-stop) and recovery reloads the state from disk",
    )


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a planted FIFO cannot hang us
_JOURNAL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC  # no O_APPEND: an append writes at the verified end


class _Refused(Exception):
    """A directory entry that must not be read or written through; ``str()`` says why."""


def _refusal(st: os.stat_result, *, check_owner: bool) -> str | None:
    """Why a file with this (lstat/fstat) status must not be used, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; refusing to follow it (state files are never links)"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file; refusing to use it"
    if check_owner and st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this process's user (uid {os.geteuid()}); refusing to use it"
    return None


def _read(dirfd: int, name: str, *, check_owner: bool = True) -> bytes | None:
    """The file's bytes (None if it does not exist); raises _Refused for a link, a non-file, a stranger's file."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        why = _refusal(os.stat(name, dir_fd=dirfd, follow_symlinks=False), check_owner=False)
        raise _Refused(why or "cannot be opened without following a symbolic link") from None
    try:
        why = _refusal(os.fstat(fd), check_owner=check_owner)
        if why is not None:
            raise _Refused(why)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_path(path: Path, *, check_owner: bool = False) -> bytes | None:
    """The bytes of the file at ``path`` (None if missing), refused as load() refuses: StateError saying why.

    For read-only tools (``s1mpled state verify``), which may run as another user than the daemon,
    so the owner is checked only when asked.
    """
    try:
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(str(path.parent), exc) from None
    try:
        return _read(dirfd, path.name, check_owner=check_owner)
    except _Refused as exc:
        raise StateError(str(path), str(exc)) from None
    except OSError as exc:
        raise _os_error(str(path), exc) from None
    finally:
        os.close(dirfd)


def _on_event_loop() -> bool:
    """Whether the calling thread is running an asyncio event loop (which must never wait for fsync)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def read_record(data: bytes) -> tuple[recovery.Observation, codec.Record | None]:
    """Classify raw file contents as an observation for the recovery plan."""
    try:
        record = codec.decode(data)
    except codec.InvalidRecord as exc:
        if exc.unsupported_version is not None:
            return recovery.Unsupported(exc.unsupported_version), None
        return recovery.Invalid(str(exc)), None
    return recovery.Verified(record.generation), record


def observe(dirfd: int, name: str) -> tuple[recovery.Observation, codec.Record | None]:
    """Read and classify one file of the directory; StateError for a file that must not be used."""
    try:
        data = _read(dirfd, name)
    except _Refused as exc:
        raise StateError(name, str(exc)) from None
    if data is None:
        return recovery.Missing(), None
    return read_record(data)


def _refuse_when_full(fd: int) -> None:
    """ENOSPC for an append on a file system without a free block, although it might fit in the log's last one.

    Why: a full disk must stop new orders as soon as it is full, as it did when every save needed new
    blocks -- not at some later save that happens to cross a block boundary -- and the compaction that
    follows would need space anyway. (The blocks reserved for root count as free for root.)
    """
    st = os.fstatvfs(fd)
    if (st.f_bfree if os.geteuid() == 0 else st.f_bavail) == 0:
        raise OSError(errno.ENOSPC, "No space left on device (no free block for the record log)")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class StateDirectory:
    """An opened, locked state directory (0700); hands out StateFiles and owns the writer thread."""

    def __init__(self, path: Path, dirfd: int, lockfd: int) -> None:
        self.path, self._dirfd, self._lockfd = path, dirfd, lockfd
        self.stats = StoreStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s1mpled-state")
        self._files: dict[str, StateFile] = {}
        self._deferred: list[Future[None]] = []  # directory fsyncs queued by load() on an event loop
        self._deferred_lock = threading.Lock()
        self.retry_first_s, self.retry_max_s = 0.1, 5.0  # backoff of a save waiting for space
        self._short: set[str] = set()  # files whose newest requested state could not be written: no space
        self._line: list[str] = []  # files with a save waiting for space, in the order they first failed
        self._full_since: float | None = None
        self._failure: StateFsyncError | None = None  # set once, by a failed fsync: every write is refused
        self._supervisor: tuple[asyncio.AbstractEventLoop, asyncio.Event, list[tuple[str, str]]] | None = None
        # (name, record bytes, seconds) after every durable save, on the thread that wrote it: the metrics'
        # one hook into the store (s1mpled.instruments); it must not raise
        self.on_saved: Callable[[str, int, float], None] | None = None
        # the directory's record log: its index, its verified bytes; one writer at a time (writer thread, save_sync)
        self._log_lock = threading.Lock()
        self._log_index: dirlog.ParsedLog | None = None  # read on first use
        self._log_error: StateCorruptError | None = None
        self._log_data = bytearray()
        self._log_exists = False
        self._carried = 0  # bytes the last rewrite of the log kept
        self._rotate_failed = False
        self._pending: list[tuple[StateFile, _Write, asyncio.Future[StateError | None]]] = []  # the next batch
        self._batch_running = False

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> StateDirectory:
        """Open and lock ``path``; create it (0700) if ``create`` and its parent exists."""
        p = Path(path)
        if create and not p.exists():
            try:
                p.mkdir(mode=0o700)
            except OSError as exc:
                raise _os_error(str(p), exc) from None
        try:
            dirfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(str(p), exc) from None
        with contextlib.suppress(OSError):  # not ours to tighten, or read-only: the lock below says so
            os.fchmod(dirfd, 0o700)
        try:
            lockfd = cls._lock(p, dirfd)
        except BaseException:
            os.close(dirfd)
            raise
        return cls(p, dirfd, lockfd)

    @staticmethod
    def _lock(path: Path, dirfd: int) -> int:
        lock_path = str(path / LOCK_NAME)
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # we truncate and write the lock file: never through a link
                raise StateError(lock_path, "is a symbolic link; refusing to follow it") from None
            raise _os_error(lock_path, exc) from None
        why = _refusal(os.fstat(fd), check_owner=False)
        if why is not None:
            os.close(fd)
            raise StateError(lock_path, why)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).strip()
            os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            who = f"process {pid}" if pid else "another process"
            raise StateLockedError(str(path), f"state directory is locked by {who}", pid) from None
        with contextlib.suppress(OSError):  # only informative (who holds it); a full disk must not stop the start
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        return fd

    def file(self, name: str) -> StateFile:
        """The StateFile called ``name`` (one object per name, so group commit sees every save)."""
        if "/" in name or "\n" in name or name in ("", ".", "..", LOCK_NAME, dirlog.LOG_NAME, f"{dirlog.LOG_NAME}.new"):
            raise StateError(str(self.path / name), "invalid state file name")
        if name not in self._files:
            self._files[name] = StateFile(self, name)
        return self._files[name]

    # -- a full disk and a failed fsync --

    @property
    def disk_full(self) -> bool:
        """Whether some state waits for space (ENOSPC/EDQUOT): no order may be placed until it is written."""
        return bool(self._short)

    @property
    def failure(self) -> StateFsyncError | None:
        """The failed fsync that stopped every write of this directory (fail-stop), if one did."""
        return self._failure

    def _my_turn(self, name: str) -> bool:
        """Whether a save of ``name`` may write now: no save of another file has waited for space longer.

        Waiting saves are written in the order they first failed, as the single writer thread wrote them
        before: a ledger must not reach the disk ahead of the exchange state it was derived from (paper).
        """
        if not self._line or self._line[0] == name:
            return True
        if name not in self._line:
            self._line.append(name)
        return False

    def _wait_in_line(self, name: str) -> None:
        if name not in self._line:
            self._line.append(name)

    def _leave_line(self, name: str) -> None:
        with contextlib.suppress(ValueError):
            self._line.remove(name)

    def _note_short(self, name: str) -> None:
        """``name``'s newest state is not written for lack of space (the next save of it writes it)."""
        self._short.add(name)

    def _note_full(self, name: str, exc: StateDiskFullError) -> None:
        """A save found no space (event-loop thread): the first of an episode is reported, once."""
        first = not self._short
        self._short.add(name)
        if not first:
            return
        self._full_since = time.monotonic()
        message = (
            f"disk full: cannot save {exc}; no new orders until space is freed in {self.path} "
            "(saves are retried; the newest state is written once space returns)"
        )
        if not self._notify("full", message):
            log.critical("%s", message, extra={"EVENT": "STATE_DISK_FULL"})

    def _note_written(self, name: str) -> None:
        """A save of ``name`` succeeded: if it was the last state waiting for space, the episode is over."""
        if name not in self._short:
            return
        self._short.discard(name)
        if not self._short:
            waited = time.monotonic() - (self._full_since or time.monotonic())
            log.warning(
                "disk space is back in %s: every state that waited is written (after %.1f s); trading resumes",
                self.path, waited, extra={"EVENT": "STATE_DISK_SPACE"},
            )  # fmt: skip

    def _fail_stop(self, path: str, exc: OSError) -> StateFsyncError:
        """Record the first failed fsync (any thread): from now on this directory writes nothing."""
        failure = _fsync_failed(path, exc)
        if self._failure is None:
            self._failure = failure
            self._notify("failed", str(failure))
        return failure

    def _notify(self, kind: str, message: str) -> bool:
        """Hand a notice to the running supervisor (from any thread); False if none runs."""
        supervisor = self._supervisor
        if supervisor is None:
            return False
        loop, wake, notices = supervisor
        notices.append((kind, message))
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # its loop is closed: nobody is listening any more
            return False
        return True

    async def supervise(self, alert: Alert | None = None) -> None:
        """Run for as long as the daemon runs (in its TaskGroup): the watch over the disk.

        A full disk is reported once per episode through ``alert`` (``Alerter.send``: the one CRITICAL
        line, and every Apprise URL); a failed fsync is raised here -- wherever the save that met it
        ran, even in a bus handler that isolates errors -- so the daemon stops (fail-stop, exit 70).
        """
        wake = asyncio.Event()
        notices: list[tuple[str, str]] = []
        self._supervisor = (asyncio.get_running_loop(), wake, notices)
        try:
            while True:
                if self._failure is not None:
                    raise StateFsyncError(self._failure.path, self._failure.why)
                await wake.wait()
                wake.clear()
                while notices:
                    kind, message = notices.pop(0)
                    if kind != "full":
                        continue  # "failed": raised at the top of the loop
                    if alert is None:
                        log.critical("%s", message, extra={"EVENT": "STATE_DISK_FULL"})
                    else:
                        await alert(message, event="STATE_DISK_FULL")
        finally:
            self._supervisor = None

    def close(self) -> None:
        """Wait for the writer thread, release the lock."""
        self._executor.shutdown(wait=True)
        for future in self._deferred:
            if future.exception() is not None:
                log.critical("%s", future.exception(), extra={"EVENT": "STATE_RECOVERY"})
        self._deferred.clear()
        for fd in (self._lockfd, self._dirfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dirfd = self._lockfd = -1

    def __enter__(self) -> StateDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O primitives, run on the writer thread (or the caller's thread for sync use) --

    def sync(self) -> None:
        """fsync the directory: now, or -- called on an event-loop thread -- queued on the writer thread.

        The queued fsync runs before any later save's first step (one writer thread, in order), and a
        failure of it is raised by the next ``apply()``; so the loop never waits for the disk, and no
        save can be acknowledged before what load() renamed is durable.
        """
        if _on_event_loop():
            with self._deferred_lock:
                self._deferred.append(self._executor.submit(self._fsync_dir))
        else:
            self._fsync_dir()

    def _raise_deferred(self) -> None:
        """A failed directory fsync of load() stops the next write. Only finished ones are looked at: on
        the writer thread every fsync queued before this write has run, and waiting there for one queued
        after it would deadlock; a save on another thread fsyncs the directory itself anyway."""
        with self._deferred_lock:
            done = [f for f in self._deferred if f.done()]
            self._deferred = [f for f in self._deferred if not f.done()]
        for future in done:
            future.result()

    def _fsync_dir(self) -> None:
        self._refuse_if_failed()
        try:
            os.fsync(self._dirfd)
        except OSError as exc:
            raise self._fail_stop(str(self.path), exc) from None
        self.stats.fsyncs += 1

    def _refuse_if_failed(self) -> None:
        if self._failure is not None:
            raise StateFsyncError(self._failure.path, f"refusing to write after an earlier {self._failure.why}")

    def exists(self, name: str) -> bool:
        """Whether the directory has an entry ``name`` (never followed)."""
        try:
            os.stat(name, dir_fd=self._dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def apply(self, ops: list[protocol.Op]) -> None:
        """Execute protocol steps; on failure remove a journal that cannot have been acknowledged.

        Raises StateDiskFullError for ENOSPC/EDQUOT while writing or renaming (retryable), a
        StateFsyncError for any error of an fsync (fail-stop: every later call raises it too), and a
        StateError for anything else.
        """
        self._refuse_if_failed()
        self._raise_deferred()
        open_fds: dict[str, int] = {}
        created: set[str] = set()  # files this call created (a failure may remove them: nothing acknowledged)
        try:
            for op in ops:
                if isinstance(op, protocol.WriteFile):
                    created.add(op.name)
                try:
                    self._apply_one(op, open_fds)
                except OSError as exc:
                    name = op.src if isinstance(op, protocol.RenameFile) else getattr(op, "name", "")
                    if isinstance(op, protocol.WriteFile | protocol.FsyncFile) and name in created:
                        with contextlib.suppress(OSError):
                            os.unlink(name, dir_fd=self._dirfd)  # give the space back (ENOSPC); never a log
                    path = str(self.path / name)
                    if isinstance(op, protocol.FsyncFile | protocol.FsyncDir):
                        raise self._fail_stop(path, exc) from None
                    if exc.errno in _NO_SPACE:
                        raise StateDiskFullError(path, _why(exc)) from None
                    raise _os_error(path, exc) from None
        finally:
            for fd in open_fds.values():
                with contextlib.suppress(OSError):  # an fsync that failed has closed it already
                    os.close(fd)

    def _apply_one(self, op: protocol.Op, open_fds: dict[str, int]) -> None:
        d = self._dirfd
        if isinstance(op, protocol.WriteFile):
            fd = self._create(op.name)
            open_fds[op.name] = fd
            os.fchmod(fd, 0o600)  # whatever the umask
            _write_all(fd, op.data)
            self.stats.writes += 1
        elif isinstance(op, protocol.AppendFile):
            fd = os.open(op.name, _APPEND_FLAGS, dir_fd=d)
            open_fds[op.name] = fd
            st = os.fstat(fd)
            why = _refusal(st, check_owner=True)
            if why is not None:
                raise StateError(str(self.path / op.name), why)
            _refuse_when_full(fd)
            if st.st_size != op.at:
                os.ftruncate(fd, op.at)  # a torn tail (a crash, a failed append): never written after
            _write_all_at(fd, op.data, op.at)
            self.stats.writes += 1
        elif isinstance(op, protocol.FsyncFile):
            fd = open_fds.pop(op.name)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.stats.fsyncs += 1
        elif isinstance(op, protocol.RenameFile):
            os.rename(op.src, op.dst, src_dir_fd=d, dst_dir_fd=d)
        else:
            os.fsync(d)
            self.stats.fsyncs += 1

    def _create(self, name: str) -> int:
        """Create the journal afresh (O_EXCL|O_NOFOLLOW): never truncate or write through what is there.

        load() sets every journal aside, so one found here is the leftover of a save of ours that failed
        and could not remove it (never acknowledged): it is removed. Anything else -- a symbolic link,
        a FIFO, a file of another user -- is refused, not touched.
        """
        try:
            return os.open(name, _JOURNAL_FLAGS, 0o600, dir_fd=self._dirfd)
        except FileExistsError:
            pass
        why = _refusal(os.stat(name, dir_fd=self._dirfd, follow_symlinks=False), check_owner=True)
        if why is not None:
            raise StateError(str(self.path / name), why)
        os.unlink(name, dir_fd=self._dirfd)
        return os.open(name, _JOURNAL_FLAGS, 0o600, dir_fd=self._dirfd)

    def observe(self, name: str) -> tuple[recovery.Observation, codec.Record | None]:
        """Read and classify one file of this directory; a file that must not be used is a StateError."""
        try:
            data = _read(self._dirfd, name)
        except _Refused as exc:
            raise StateError(str(self.path / name), str(exc)) from None
        except OSError as exc:
            raise _os_error(str(self.path / name), exc) from None
        return (recovery.Missing(), None) if data is None else read_record(data)

    # -- the directory's record log (s1mpled.state.dirlog) and the batches that write it --

    def _the_log(self) -> dirlog.ParsedLog:
        """The verified index of ``state.wal`` (read once); StateCorruptError naming it if it is damaged.

        Called with ``_log_lock`` held. A torn tail is reported once and cut off by the next append.
        """
        if self._log_error is not None:
            raise self._log_error
        if self._log_index is not None:
            return self._log_index
        path = str(self.path / dirlog.LOG_NAME)
        try:
            data = _read(self._dirfd, dirlog.LOG_NAME)
        except _Refused as exc:
            raise StateError(path, str(exc)) from None
        except OSError as exc:
            raise _os_error(path, exc) from None
        if data is None:
            self._log_index, self._log_exists = dirlog.ParsedLog(), False
            return self._log_index
        try:
            parsed = dirlog.parse(data)
        except dirlog.LogCorrupt as exc:
            self._log_error = StateCorruptError(path, f"{exc}; refusing to load without its acknowledged records")
            raise self._log_error from None
        if parsed.torn_bytes:
            log.warning(
                "%s: dropped a torn tail of %d bytes (%s): a save interrupted by a crash, never acknowledged; "
                "the next save cuts it off",
                path, parsed.torn_bytes, parsed.torn_why, extra={"EVENT": "STATE_RECOVERY"},
            )  # fmt: skip
        self._log_data = bytearray(data[: parsed.valid_length])
        self._log_index, self._log_exists = parsed, True
        return parsed

    def _entries_of(self, name: str) -> tuple[list[dirlog.Entry], bytes]:
        """The log's entries of state ``name`` and the bytes they point into (for load)."""
        with self._log_lock:
            parsed = self._the_log()
            return list(parsed.entries.get(name, ())), bytes(self._log_data)

    def _append(self, entries: list[bytes]) -> None:
        """Make ``entries`` durable as one record of the log: one write, one fsync (``_log_lock`` held)."""
        parsed = self._the_log()
        record = dirlog.batch(entries, parsed.records)
        if self._log_exists:
            offset = parsed.valid_length
            self.apply([protocol.AppendFile(dirlog.LOG_NAME, record, offset), protocol.FsyncFile(dirlog.LOG_NAME)])
        else:  # the first append of this directory creates the log whole
            offset = len(dirlog.base())
            self.apply(protocol.log_ops(dirlog.LOG_NAME, dirlog.base() + record))
            self._log_data, self._log_exists = bytearray(dirlog.base()), True
        del self._log_data[offset:]
        self._log_data += record
        dirlog.index_record(parsed, record, offset)

    def _maybe_rotate(self) -> None:
        """Rewrite the log with only what the states still need, once it has outgrown that (``_log_lock`` held).

        What is kept (``dirlog.carry``): for each state, the entries above its ``NAME.prev`` -- all of
        them for a state this process has not loaded. A failure leaves the old log, which holds
        everything too; it is reported and tried again after a later save.
        """
        parsed = self._log_index
        if parsed is None or not self._log_exists:
            return
        files = list(self._files.values())  # file() may add one on the event loop meanwhile
        snapshots = sum(f._snapshot_bytes for f in files if f._log)
        if not dirlog.should_rotate(parsed.valid_length, self._carried, snapshots):
            return
        keep_after = {f.name: f._log_needed_after() for f in files if f._loaded}
        kept = dirlog.carry(parsed, keep_after)
        data = dirlog.base()
        if kept:
            body = (dirlog.entry(e.name, e.generation, bytes(self._log_data[e.start : e.end])) for e in kept)
            data += dirlog.batch(body, 1)
        try:
            self.apply(protocol.log_ops(dirlog.LOG_NAME, data))
        except StateFsyncError:
            raise
        except StateError as exc:
            if not self._rotate_failed:  # once until a rewrite succeeds (a full disk retries after every batch)
                log.warning("%s: not rewritten (%s); it keeps growing until a later try succeeds", exc.path,
                            exc.why, extra={"EVENT": "STATE_LOG"})  # fmt: skip
            self._rotate_failed = True
            return
        self._log_data, self._log_index, self._carried = bytearray(data), dirlog.parse(data), len(data)
        self._rotate_failed = False

    def _commit_batch(self, items: list[tuple[StateFile, _Write]]) -> list[StateError | None]:
        """Write one batch (on the writer thread, or a save_sync caller's): one result per item, in order.

        First every entry, as one record of the log (one fsync): the logged states of a batch reach the
        disk together or not at all (a ledger never lands without the exchange state it was derived from),
        and ahead of the batch's snapshot-only saves. Then the snapshots, in the order they were asked
        for, with one directory fsync for them all; the first that fails stops the snapshot-only saves
        after it. A save with an entry is durable once the record is; a snapshot that fails after it only
        postpones its compaction.
        """
        with self._log_lock:
            started, n = time.monotonic(), len(items)
            results: list[StateError | None] = [None] * n
            entries = [w.entry for _, w in items if w.entry is not None]
            try:
                if entries:
                    self._append(entries)
            except StateError as exc:
                for f, w in items:
                    f._not_written(w)
                return [exc] * n
            snapshots_ok = self._write_snapshots(items, results)
            if any(snapshots_ok):
                try:
                    self.apply([protocol.FsyncDir()])
                except StateError as exc:  # fail-stop: nothing of this batch is acknowledged
                    return [exc] * n
            written = [(f, w, snapshots_ok[i]) for i, (f, w) in enumerate(items) if results[i] is None]
            try:
                for f, w, snapshot in written:
                    f._written(w, snapshot=snapshot)
            except BaseException:
                # Durable, but what is remembered of it may be half updated: the next save of each of them is a
                # whole snapshot (no base to diff against), never an entry computed against the wrong state.
                for f, _, _ in written:
                    f._base = None
                raise
            self._report_saved(written, time.monotonic() - started)
            self._maybe_rotate()
            return results

    def _write_snapshots(self, items: list[tuple[StateFile, _Write]], results: list[StateError | None]) -> list[bool]:
        """The snapshots of a batch, in order, without their directory fsync: which were written. The first that
        fails stops the rest; a save it stops that has no entry fails with it (``results``)."""
        written, failed = [False] * len(items), None
        for i, (f, w) in enumerate(items):
            if not w.ops:
                continue
            if failed is None:
                try:
                    self.apply(w.ops)
                    written[i] = True
                    continue
                except StateError as exc:
                    failed = exc
            f._snapshot_not_written(w)
            if w.entry is None:
                results[i] = failed
        return written

    def _report_saved(self, written: list[tuple[StateFile, _Write, bool]], seconds: float) -> None:
        """Tell the metrics' hook what was written; a hook that raises is logged, never fails a durable save."""
        if (saved := self.on_saved) is None:
            return
        for f, w, _ in written:
            try:
                saved(f.name, len(w.entry or b"") + len(w.record), seconds)  # bytes written for it
            except Exception:
                log.exception("the on_saved hook failed for %s (the save is durable)", f.name)

    def _enqueue(self, file: StateFile, write: _Write) -> asyncio.Future[StateError | None]:
        """Hand a prepared save to the next batch: every save prepared in this tick, or while a batch is
        being written, goes to the disk with it (group commit across every state of the directory)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[StateError | None] = loop.create_future()
        self._pending.append((file, write, done))
        if not self._batch_running:
            self._batch_running = True
            loop.call_soon(self._next_batch)
        return done

    def _next_batch(self) -> None:
        items, self._pending = self._pending, []
        if not items:
            self._batch_running = False
            return
        try:
            job = self._executor.submit(self._commit_batch, [(f, w) for f, w, _ in items])
        except RuntimeError as exc:  # the directory was closed: nothing of it is written
            for f, w, done in items:
                f._not_written(w)
                if not done.done():
                    done.set_result(StateError(str(self.path), f"not written: {exc}"))
            self._batch_running = False
            return
        asyncio.wrap_future(job).add_done_callback(functools.partial(self._batch_done, items))

    def _batch_done(self, items: list[tuple[StateFile, _Write, asyncio.Future[StateError | None]]], job: Any) -> None:
        """Resolve the savers' futures (each saver may be gone: its future is then simply left), go on."""
        error = None if job.cancelled() else job.exception()
        results = job.result() if not job.cancelled() and error is None else None
        for n, (_, _, done) in enumerate(items):
            if done.done():
                continue
            if results is not None:
                done.set_result(results[n])
            else:
                done.set_exception(error or StateError(str(self.path), "the write was cancelled"))
        self._next_batch()


@dataclass(frozen=True, slots=True)
class _Write:
    """One prepared save: its entry for the directory's log and/or its snapshot's steps."""

    generation: int
    entry: bytes | None = None  # dirlog.entry of its changes (None: a snapshot only)
    changes: bytes = b""  # the changes' payload, to bring the base up to date once durable (O(change))
    ops: list[protocol.Op] = field(default_factory=list)  # the snapshot's steps, without the directory fsync
    record: bytes = b""  # the snapshot (b"": none)


@dataclass(slots=True)
class _Batch:
    """Group-commit bookkeeping: the newest requested state and how far durability has got."""

    latest: Any = None
    requested: int = 0
    durable: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    inflight: asyncio.Future[StateError | None] | None = None  # the write handed to the writer thread last


class StateFile:
    """One named state (e.g. ``dca.state.json``) in a StateDirectory.

    ``load()`` must come first: saving a state that was never loaded would rotate the real one
    into ``.prev`` and lose it on the next save, which is exactly the silent forgetting this
    store exists to prevent.
    """

    def __init__(self, directory: StateDirectory, name: str) -> None:
        self.directory, self.name = directory, name
        self.generation = 0
        self._loaded = False
        self._main_exists = False
        self._prev_exists = False  # appends wait until NAME.prev exists: a damaged NAME can then fall back
        self._main_gen = 0  # the generation of the snapshot NAME
        self._prev_gen = 0  # of NAME.prev; 0 if not known (the log then keeps every entry of this state)
        self._batch = _Batch()
        self._log = False  # saves append their changes to the directory's log (use_log)
        self._base: Any = None  # with a log: the durable state, as decoded (owned here, never the caller's)
        self._log_bytes = 0  # bytes of this state's entries in the log since its snapshot
        self._snapshot_bytes = 0
        self._main_version = 0  # the format version of the snapshot NAME (a logged state's must be LOGGED_VERSION)
        self._resync = False  # a fallback passed entries it could not apply: the next save is a whole snapshot

    def use_log(self) -> None:
        """Save through the directory's record log (``s1mpled.state.dirlog``): a save appends only what changed.

        For states with a large, slowly changing part (bounded histories, seen trade ids). Every save of
        the same batch -- this state's and every other's -- is one append and one fsync. ``load()``
        always applies the log's entries of a state, whether or not this was called, so a state once
        saved with the log is never read without it. The snapshot is rewritten (compacted) once this
        state's entries since it have outgrown it.
        """
        self._log = True

    @property
    def log_name(self) -> str:
        return f"{self.name}.wal"

    def _read_log(self, name: str) -> bytes | None:
        try:
            return _read(self.directory._dirfd, name)
        except _Refused as exc:
            raise StateError(str(self.directory.path / name), str(exc)) from None
        except OSError as exc:
            raise _os_error(str(self.directory.path / name), exc) from None

    def _replay_prev_log(self, state: Any) -> Any:
        """After a fallback to ``NAME.prev``: replay ``NAME.wal.prev``, the log that led from it to the lost ``NAME``.

        A compaction appends its own change to the old log before it becomes ``NAME.wal.prev``, so this
        chain reaches the damaged snapshot's generation and ``NAME.wal`` continues it: nothing is lost.
        A chain that does not fit is left alone (the fallback is loud already).
        """
        name = f"{self.log_name}.prev"
        data = self._read_log(name)
        if data is None:
            return state
        try:
            parsed = wal.parse(data)
            if parsed.base != self.generation:
                return state
            replayed = copy.deepcopy(state)
            for record in parsed.records:
                replayed = wal.apply(replayed, record.changes)
        except wal.LogCorrupt as exc:
            log.critical("%s: not replayed after the fallback: %s", self.directory.path / name, exc,
                         extra={"EVENT": "STATE_RECOVERY"})  # fmt: skip
            return state
        self.generation = parsed.last_generation
        log.critical(
            "%s: replayed %d records after the fallback: generation %d recovered",
            self.directory.path / name, len(parsed.records), self.generation, extra={"EVENT": "STATE_RECOVERY"},
        )  # fmt: skip
        return replayed

    def _replay_legacy_log(self, state: Any, fallback: bool) -> Any:
        """Apply ``NAME.wal`` to the format-2 snapshot just loaded (at ``self.generation``); StateCorruptError
        if unusable. The log of its own such a snapshot had (s1mpled 0.1 development builds): an upgrade
        reads it once, and the next save writes the state as today's snapshot."""
        d, log_path = self.directory, str(self.directory.path / self.log_name)
        if fallback and state is not None:
            state = self._replay_prev_log(state)
        data = self._read_log(self.log_name)
        if data is None:
            return state
        try:
            parsed = wal.parse(data)
        except wal.LogCorrupt as exc:
            raise StateCorruptError(log_path, f"{exc}; refusing to load without its acknowledged records") from None
        if fallback and parsed.base > self.generation:
            # NAME was damaged and the previous generation loaded (loudly, as without a log): the log
            # continues the lost snapshot and cannot be applied to the older one. It is set aside, like
            # the damaged NAME, and reconciliation catches the books up, as after any fallback.
            aside = f"{self.log_name}.stale-{_stamp()}"
            d.apply([protocol.RenameFile(self.log_name, aside)])
            d.sync()
            log.critical(
                "%s: continues generation %d, but the previous generation %d loaded (fallback): its %d records "
                "cannot be applied; set aside as %s",
                log_path, parsed.base, self.generation, len(parsed.records), aside, extra={"EVENT": "STATE_RECOVERY"},
            )  # fmt: skip
            return state
        if parsed.base > self.generation or (state is None and parsed.records):
            raise StateCorruptError(
                log_path,
                f"the log continues generation {parsed.base} but the snapshot that loaded is generation "
                f"{self.generation}{' (a fallback)' if fallback else ''}: its records cannot be applied; "
                "refusing to load an older state",
            )
        if parsed.base < self.generation:
            if parsed.last_generation > self.generation:
                raise StateCorruptError(
                    log_path,
                    f"the log reaches generation {parsed.last_generation} from base {parsed.base}, past the "
                    f"snapshot's {self.generation}: inconsistent, refusing to guess",
                )
            return state  # older than the snapshot (a compaction's leftover): the next save replaces it
        for record in parsed.records:
            state = wal.apply(state, record.changes)
        self.generation = parsed.last_generation
        if parsed.torn_bytes:
            log.warning(
                "%s: dropped a torn tail of %d bytes (%s) after generation %d: a save interrupted by a crash, "
                "never acknowledged",
                log_path, parsed.torn_bytes, parsed.torn_why, self.generation, extra={"EVENT": "STATE_RECOVERY"},
            )  # fmt: skip
        return state

    @property
    def path(self) -> Path:
        return self.directory.path / self.name

    def _replay(self, state: Any, fallback: bool) -> Any:
        """Apply this state's entries in the directory's log to the snapshot just loaded (at ``self.generation``).

        Entries at or below the snapshot's generation are in it already. Those above must continue it
        exactly; if they do not, the snapshot is older than what was acknowledged: refused (never an
        older state loaded silently) -- except after a fallback, which is loud already and which
        reconciliation catches up: the entries that do continue it are applied, the state continues
        past the rest (no generation the log holds is handed out again), and its next save is a whole
        snapshot (``_resync``): an entry continuing a state the disk does not hold could never be replayed.
        """
        entries, data = self.directory._entries_of(self.name)
        log_path = self.directory.path / dirlog.LOG_NAME
        loaded = self.generation
        run, rest = dirlog.chain(entries, loaded)
        gap = dirlog.gap(state, loaded, run, rest)
        if gap is not None and not fallback:
            raise StateCorruptError(str(log_path), f"{gap}: refusing to load an older state")
        try:
            if state is not None:
                state = dirlog.apply_entries(state, run, data)
                self.generation = run[-1].generation if run else loaded
        except dirlog.LogCorrupt as exc:
            raise StateCorruptError(str(log_path), f"{self.name}: {exc}") from None
        self._log_bytes = sum(e.size for e in run)
        if gap is not None:
            applied, self.generation, self._resync = self.generation, entries[-1].generation, True
            log.critical(
                "%s: %s: those above generation %d do not continue the state (a fallback): not applied; "
                "its next generation is %d (reconciliation catches the books up)",
                log_path, gap, applied, self.generation + 1, extra={"EVENT": "STATE_RECOVERY"},
            )  # fmt: skip
        elif fallback and self.generation > loaded:
            log.critical(
                "%s: applied the entries of %s after the fallback: generation %d recovered",
                log_path, self.name, self.generation, extra={"EVENT": "STATE_RECOVERY"},
            )  # fmt: skip
        return state

    def load(self) -> LoadResult:
        """Recover and return the newest verified state (see ``recovery`` for the rules)."""
        d = self.directory
        observed = {n: d.observe(n) for n in (self.name, f"{self.name}.journal", f"{self.name}.prev")}
        main, journal, prev = (observed[n][0] for n in observed)
        plan = recovery.plan_load(self.name, main, journal, prev, _stamp())
        for message in plan.messages:
            (log.critical if plan.fallback else log.warning)("%s", message, extra={"EVENT": "STATE_RECOVERY"})
        if plan.error is not None:
            raise StateCorruptError(str(self.path), plan.error)
        if plan.renames:
            d.apply([protocol.RenameFile(r.src, r.dst) for r in plan.renames])
            d.sync()  # on an event loop: queued on the writer thread, ahead of every later save
        state, record = None, None
        if plan.load_from is not None:
            origin = {"main": self.name, "journal": f"{self.name}.journal", "prev": f"{self.name}.prev"}
            record = observed[origin[plan.source or "main"]][1]
            assert record is not None  # the plan only loads verified files
            state = record.state
            self._snapshot_bytes = record.length
        self.generation = plan.generation
        self._main_exists = plan.source in ("main", "journal")
        self._main_gen = plan.generation if self._main_exists else 0
        self._main_version = record.version if record is not None and self._main_exists else 0
        self._resync = False
        if record is not None and record.version == codec.WAL_VERSION:
            state = self._replay_legacy_log(state, plan.fallback)
        state = self._replay(state, plan.fallback)
        self._prev_exists = d.exists(f"{self.name}.prev")
        known = not plan.renames and isinstance(prev, recovery.Verified)
        self._prev_gen = prev.generation if known and isinstance(prev, recovery.Verified) else 0
        # never shared with the caller (once, at start); none after a gap: the next save is a whole snapshot
        self._base = copy.deepcopy(state) if self._log and not self._resync else None
        self._loaded = True
        return LoadResult(state, self.generation, plan.source, plan.fresh, plan.fallback, plan.messages)

    def _log_needed_after(self) -> int:
        """The generation above which this state's entries must stay in the log: its NAME.prev's (what a
        fallback replays from), the snapshot's if it has no NAME.prev, 0 (all of them) if not known."""
        if self._prev_exists:
            return self._prev_gen
        return self._main_gen if self._main_exists else 0

    def _prepare(self, state: Any) -> _Write:
        """Encode the save (event-loop thread): its changes as a log entry, and a snapshot if one is due.

        A snapshot is due without a log, without a base (the first save, or after a fallback that passed
        entries), until NAME and NAME.prev both exist (a damaged NAME can then fall back), while NAME is
        in another format than a logged state's (written without the log, or by a development build: an
        older s1mpled must refuse it rather than load it without the log), and once this state's entries
        since its snapshot have outgrown it (a compaction, amortized over at least its size in appends).
        """
        if not self._loaded:
            raise LocalStateError(f"{self.path}: save() before load() would discard the stored state")
        generation = self.generation + 1
        try:
            entry, changes = None, b""
            if self._log and self._base is not None:
                changes = codec.encode_payload(wal.diff(self._base, state))
                entry = dirlog.entry(self.name, generation, changes)
            due = (
                entry is None
                or self._main_version != codec.LOGGED_VERSION  # an older s1mpled must refuse NAME, not load it
                or not (self._main_exists and self._prev_exists)
                or wal.should_compact(self._log_bytes + len(entry), self._snapshot_bytes)
            )
            write = _Write(generation, entry, changes)
            if due:
                record = codec.encode(state, generation, logged=self._log)
                ops = protocol.save_ops(self.name, record, self._main_exists, sync_dir=False)
                write = _Write(generation, entry, changes, ops, record)
        except StateEncodeError as exc:
            raise StateEncodeError(str(self.path), exc.why) from None
        self.generation = generation
        return write

    def _written(self, write: _Write, *, snapshot: bool) -> None:
        """The batch made ``write`` durable (writer thread): remember what is on disk now."""
        if write.entry is not None:
            self._base = wal.apply(self._base, wal.decode_changes(write.changes, write.generation))  # own copy
            self._log_bytes += len(write.entry)
        if snapshot:
            if self._main_exists:
                self._prev_exists, self._prev_gen = True, self._main_gen
            self._main_exists, self._main_gen = True, write.generation
            self._main_version = codec.LOGGED_VERSION if self._log else codec.FORMAT_VERSION
            self._snapshot_bytes, self._log_bytes = len(write.record), 0
            if self._log and write.entry is None:
                self._base = codec.decode(write.record).state  # the first save of a state with a log

    def _snapshot_not_written(self, write: _Write) -> None:
        """The snapshot part of ``write`` failed or was not tried: a rename NAME -> NAME.prev may have
        happened before the failure, so look what is there. Without an entry nothing was acknowledged:
        the generation is handed out again."""
        if write.entry is None:
            self.generation = write.generation - 1
        with contextlib.suppress(OSError):
            if self._main_exists and not self.directory.exists(self.name):
                self._main_exists, self._prev_exists, self._prev_gen = False, True, self._main_gen

    def _not_written(self, write: _Write) -> None:
        """Nothing of ``write`` is durable (its batch failed): the generation is handed out again."""
        self.generation = write.generation - 1

    def save_sync(self, state: Any) -> int:
        """Durably save ``state`` on the calling thread; returns its generation.

        Never waits for space: a full disk raises StateDiskFullError (nothing written). For tools, tests and
        code without an event loop: a state is saved either this way or by ``save()``, never both at once
        (both prepare against the same last durable state).
        """
        self.directory.stats.saves_requested += 1
        failed = self.directory._commit_batch([(self, self._prepare(state))])[0]
        if failed is not None:
            raise failed
        return self.generation

    async def save(self, state: Any, *, wait_for_space: bool = True) -> int:
        """Durably save ``state`` (or a newer one saved meanwhile); returns the durable generation.

        Saves arriving while a write is in progress -- or within the same event-loop tick -- are
        coalesced: one write of the newest state acknowledges them all. The state is serialized on
        the event-loop thread when its write begins, so callers may keep mutating it afterwards.

        A full disk (ENOSPC/EDQUOT) makes the save wait: it is retried with backoff (the newest state
        each time) until it is written, and only then returns. With ``wait_for_space=False`` it raises
        StateDiskFullError instead -- at once if some state already waits for space; the state stays
        queued and is written by the next save of this file. A failed fsync raises StateFsyncError.
        """
        b, d = self._batch, self.directory
        d.stats.saves_requested += 1
        b.latest, b.requested = state, b.requested + 1
        mine = b.requested
        delay = d.retry_first_s
        try:
            while True:
                pause = d.retry_first_s  # waiting for its turn costs no I/O: look again soon
                async with b.lock:
                    if b.durable >= mine:
                        return self.generation
                    if not wait_for_space and d.disk_full:
                        d._note_short(self.name)
                        raise StateDiskFullError(str(self.path), "not written: the disk is full (saves wait for space)")
                    if d._my_turn(self.name):
                        await asyncio.sleep(0)  # let the rest of this tick's saves join the write
                        if b.inflight is not None and not b.inflight.done():
                            # a write whose saver was cancelled is still running: the next record is computed
                            # against what it leaves behind (the log's base), never against a half-updated one
                            await asyncio.wait([b.inflight])
                        upto, write = b.requested, self._prepare(b.latest)
                        try:
                            # shield: once handed to the batch the write completes even if we are cancelled
                            b.inflight = d._enqueue(self, write)
                            failed = await asyncio.shield(b.inflight)
                            if failed is not None:
                                raise failed
                        except StateDiskFullError as exc:
                            d._note_full(self.name, exc)
                            if not wait_for_space:
                                raise
                            d._wait_in_line(self.name)
                            pause, delay = delay, min(delay * 2, d.retry_max_s)
                        else:
                            b.durable = max(b.durable, upto)
                            d._leave_line(self.name)
                            d._note_written(self.name)
                            return self.generation
                await asyncio.sleep(pause)  # outside the lock: a save that must not wait finds out at once
        except BaseException:
            d._leave_line(self.name)  # cancelled (a shutdown) or failed for good: never block the others
            raise
