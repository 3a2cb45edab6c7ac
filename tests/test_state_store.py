"""The state store against a real file system: leftovers, damage, locking, full and read-only disks."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from s1mpled.errors import (
    LocalStateError,
    StateCorruptError,
    StateDiskFullError,
    StateEncodeError,
    StateError,
    StateFsyncError,
    StateLockedError,
)
from s1mpled.state import StatefulPlugin, codec, protocol
from s1mpled.state.store import StateDirectory
from tests.disks import FailingDisk, fill

NAME = "s.state.json"


def _saved(path: Path, *states: dict[str, Any]) -> None:
    with StateDirectory.open(path) as sd:
        f = sd.file(NAME)
        f.load()
        for s in states:
            f.save_sync(s)


def _load(path: Path) -> Any:
    with StateDirectory.open(path, create=False) as sd:
        return sd.file(NAME).load()


def test_save_then_load_returns_the_state_with_files_0600_dir_0700(tmp_path: Path) -> None:
    """A saved state loads back; state files are 0600 and the directory 0700 (secrets and positions are private)."""
    d = tmp_path / "st"
    _saved(d, {"a": Decimal("1.5")}, {"a": Decimal("2.5")})
    result = _load(d)
    assert (result.state, result.generation, result.source) == ({"a": Decimal("2.5")}, 2, "main")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in (NAME, f"{NAME}.prev"):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    assert codec.decode((d / f"{NAME}.prev").read_bytes()).state == {"a": Decimal("1.5")}


def test_first_start_is_fresh_and_distinguishable(tmp_path: Path) -> None:
    """No files at all is a fresh start (state None, fresh True) -- not an error and not a loss."""
    result = _load(tmp_path)
    assert result.fresh and result.state is None and result.generation == 0


def test_truncated_main_falls_back_loudly_to_prev(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged main file is set aside and the verified previous generation is loaded, with a CRITICAL log."""
    _saved(tmp_path, {"v": 1}, {"v": 2})
    main = tmp_path / NAME
    main.write_bytes(main.read_bytes()[:-3])
    with caplog.at_level(logging.CRITICAL, "s1mpled.state"):
        result = _load(tmp_path)
    assert (result.state, result.source, result.fallback) == ({"v": 1}, "prev", True)
    assert any(r.levelno == logging.CRITICAL and "FELL BACK" in r.getMessage() for r in caplog.records)
    assert not main.exists() and len(list(tmp_path.glob(f"{NAME}.corrupt-*"))) == 1


def test_after_fallback_the_next_saves_never_rotate_the_damaged_file_into_prev(tmp_path: Path) -> None:
    """Saving after a fallback keeps the good previous generation as .prev and never reuses the damaged bytes."""
    _saved(tmp_path, {"v": 1}, {"v": 2})
    (tmp_path / NAME).write_bytes(b"garbage")
    with StateDirectory.open(tmp_path) as sd:
        f = sd.file(NAME)
        assert f.load().state == {"v": 1}
        f.save_sync({"v": 3})
        f.save_sync({"v": 4})
    assert _load(tmp_path).state == {"v": 4}
    assert codec.decode((tmp_path / f"{NAME}.prev").read_bytes()).state == {"v": 3}


def test_flipped_byte_without_prev_is_refused_naming_the_file(tmp_path: Path) -> None:
    """With no verified generation left, load raises StateCorruptError naming the file and the damage; nothing moves."""
    _saved(tmp_path, {"v": 1})
    main = tmp_path / NAME
    data = bytearray(main.read_bytes())
    data[-2] ^= 0x01
    main.write_bytes(bytes(data))
    with pytest.raises(StateCorruptError, match=r"s\.state\.json.*checksum mismatch"):
        _load(tmp_path)
    assert main.read_bytes() == bytes(data) and sorted(p.name for p in tmp_path.iterdir()) == [NAME, "s1mpled.lock"]


def test_unknown_version_is_refused_not_skipped(tmp_path: Path) -> None:
    """A state file in a newer format is refused even though an older generation verifies (no silent downgrade)."""
    _saved(tmp_path, {"v": 1}, {"v": 2})
    main = tmp_path / NAME
    main.write_bytes(main.read_bytes().replace(b"S1MPLED-STATE 1 ", b"S1MPLED-STATE 7 ", 1))
    with pytest.raises(StateCorruptError, match="format version 7"):
        _load(tmp_path)


@pytest.mark.parametrize("journal", [b"garbage\x00\xff", b"", "torn-newer"])
def test_bad_journal_is_set_aside_and_main_loaded(tmp_path: Path, journal: bytes | str) -> None:
    """A garbage, empty or torn newer journal is kept as .corrupt-<time> for forensics; the main state loads."""
    _saved(tmp_path, {"v": 1}, {"v": 2})
    data = codec.encode({"v": 3}, 3)[:-5] if journal == "torn-newer" else journal
    assert isinstance(data, bytes)
    (tmp_path / f"{NAME}.journal").write_bytes(data)
    result = _load(tmp_path)
    assert (result.state, result.generation) == ({"v": 2}, 2)
    [aside] = tmp_path.glob(f"{NAME}.journal.corrupt-*")
    assert aside.read_bytes() == data and not (tmp_path / f"{NAME}.journal").exists()


def test_complete_newer_journal_is_promoted(tmp_path: Path) -> None:
    """A verified journal newer than the main file is the interrupted save: it is finished, main becomes prev."""
    _saved(tmp_path, {"v": 1}, {"v": 2})
    (tmp_path / f"{NAME}.journal").write_bytes(codec.encode({"v": 3}, 3))
    result = _load(tmp_path)
    assert (result.state, result.source) == ({"v": 3}, "journal")
    assert codec.decode((tmp_path / f"{NAME}.prev").read_bytes()).state == {"v": 2}
    assert _load(tmp_path).source == "main"


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """Opening a state directory that does not exist (without create) names it; a missing parent too."""
    with pytest.raises(StateError, match=r"nope.*No such file"):
        StateDirectory.open(tmp_path / "nope", create=False)
    with pytest.raises(StateError, match="No such file"):
        StateDirectory.open(tmp_path / "a" / "b", create=True)


def test_save_before_load_is_refused(tmp_path: Path) -> None:
    """Saving a state that was never loaded would push the real one out of existence; it is a LocalStateError."""
    _saved(tmp_path, {"v": 1})
    with StateDirectory.open(tmp_path) as sd, pytest.raises(LocalStateError, match="before load"):
        sd.file(NAME).save_sync({})
    assert _load(tmp_path).state == {"v": 1}


def test_lock_names_the_holder_pid(tmp_path: Path) -> None:
    """A second writer of the same directory gets StateLockedError with the holder's pid; after it exits, it works."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from s1mpled.state import StateDirectory as D; d = D.open(sys.argv[1]); "
            "print('locked', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(StateLockedError, match=f"locked by process {holder.pid}") as info:
            StateDirectory.open(tmp_path)
        assert info.value.holder_pid == holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    StateDirectory.open(tmp_path).close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real, tiny tmpfs (64 KiB), so that ENOSPC and read-only are the kernel's, not a mock's."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full_is_a_clear_error_and_loses_nothing(tmpfs: Path) -> None:
    """ENOSPC during a save raises StateError saying so; the previous state still loads and the journal is gone."""
    _saved(tmpfs, {"v": "small"})
    with StateDirectory.open(tmpfs) as sd:
        f = sd.file(NAME)
        f.load()
        with pytest.raises(StateError, match="No space left on device"):
            f.save_sync({"v": "x" * 200_000})
    assert _load(tmpfs).state == {"v": "small"}
    assert not (tmpfs / f"{NAME}.journal").exists()


def test_read_only_file_system_is_a_clear_error_and_state_stays_readable(tmpfs: Path) -> None:
    """On a read-only mount, opening for writing fails with a clear error; after remounting rw the state is intact."""
    _saved(tmpfs, {"v": 1})
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(StateError, match="Read-only file system"):
            StateDirectory.open(tmpfs)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert _load(tmpfs).state == {"v": 1}


def test_group_commit_coalesces_a_burst_into_one_write(tmp_path: Path) -> None:
    """1,000 saves issued in one event-loop tick cost one write and two fsyncs, and the newest state wins."""

    async def burst(sd: StateDirectory) -> list[int]:
        f = sd.file(NAME)
        f.load()
        return await asyncio.gather(*(f.save({"i": i}) for i in range(1000)))

    with StateDirectory.open(tmp_path) as sd:
        before = sd.stats.fsyncs
        generations = asyncio.run(burst(sd))
        assert sd.stats.fsyncs - before == 2 and sd.stats.writes == 1
    assert set(generations) == {1}
    assert _load(tmp_path).state == {"i": 999}


def test_cancelled_saver_does_not_leave_a_half_done_write(tmp_path: Path) -> None:
    """Cancelling save() after the write was handed to the writer thread still completes that write."""

    async def scenario(sd: StateDirectory) -> None:
        f = sd.file(NAME)
        f.load()
        task = asyncio.create_task(f.save({"v": "cancelled-but-written"}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await f.save({"v": "next"})

    with StateDirectory.open(tmp_path) as sd:
        asyncio.run(scenario(sd))
    result = _load(tmp_path)
    assert result.state == {"v": "next"}


class Counter(StatefulPlugin):
    """A minimal stateful plugin."""

    value = 0

    def state_snapshot(self) -> dict[str, Any]:
        return {"value": self.value}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.value = state["value"]


def test_stateful_plugin_save_and_load_state(tmp_path: Path) -> None:
    """A plugin's save_state()/load_state() round-trip its state through the store."""
    with StateDirectory.open(tmp_path) as sd:
        p = Counter(sd.file("counter.state.json"))
        assert p.load_state().fresh
        p.value = 41
        asyncio.run(p.save_state())
        p.value = 42
        p.save_state_sync()
    with StateDirectory.open(tmp_path) as sd:
        q = Counter(sd.file("counter.state.json"))
        q.load_state()
        assert q.value == 42


# ------------------------------------------------------- hostile directory entries: links, strangers, FIFOs


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not yours to overwrite\n")
    return victim


def test_a_journal_symlink_planted_before_a_save_is_refused_and_never_written_through(tmp_path: Path) -> None:
    """A symbolic link at NAME.journal (planted after load) makes the save fail naming it; its target is untouched."""
    d = tmp_path / "st"
    _saved(d, {"v": 1})
    victim = _victim(tmp_path)
    with StateDirectory.open(d) as sd:
        f = sd.file(NAME)
        f.load()
        (d / f"{NAME}.journal").symlink_to(victim)
        with pytest.raises(StateError, match=rf"{NAME}\.journal: is a symbolic link"):
            f.save_sync({"v": 2})
    assert victim.read_bytes() == b"not yours to overwrite\n"
    assert (d / f"{NAME}.journal").is_symlink()  # refused, not removed: it is evidence
    assert codec.decode((d / NAME).read_bytes()).state == {"v": 1}


@pytest.mark.parametrize("suffix", ["", ".prev", ".journal"])
def test_a_symlinked_state_file_is_refused_with_its_name(tmp_path: Path, suffix: str) -> None:
    """A symbolic link where NAME, NAME.prev or NAME.journal belongs is a StateError naming it; nothing is moved."""
    d = tmp_path / "st"
    _saved(d, {"v": 1}, {"v": 2})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(codec.encode({"v": 99}, 99))  # a valid record: following it would load it
    link = d / f"{NAME}{suffix}"
    link.unlink(missing_ok=True)
    link.symlink_to(elsewhere)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(StateError, match=rf"{NAME}{suffix}: is a symbolic link; refusing to follow it"):
        _load(d)
    assert sorted(p.name for p in d.iterdir()) == before and link.is_symlink()


@pytest.mark.parametrize("suffix", ["", ".prev", ".journal"])
def test_a_state_file_owned_by_another_user_is_refused_with_its_name(tmp_path: Path, suffix: str) -> None:
    """A state file of another user (someone else wrote it) is refused, naming the file and the owner."""
    d = tmp_path / "st"
    _saved(d, {"v": 1}, {"v": 2})
    path = d / f"{NAME}{suffix}"
    if suffix == ".journal":
        path.write_bytes(codec.encode({"v": 3}, 3))
    os.chown(path, 4242, 4242)  # the tests run as root; under systemd the daemon is user s1mpled
    with pytest.raises(StateError, match=rf"{NAME}{suffix}: is owned by uid 4242"):
        _load(d)


def test_a_fifo_in_place_of_a_state_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO at NAME would block open() forever; it is refused as not a regular file, at once."""
    d = tmp_path / "st"
    d.mkdir()
    os.mkfifo(d / NAME)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            _load(d)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert outcome, "load() hung on a FIFO"
    assert isinstance(outcome[0], StateError) and "is not a regular file" in str(outcome[0])


def test_a_lock_file_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """s1mpled.lock is truncated and written with our pid: a link there is refused, never followed."""
    d = tmp_path / "st"
    d.mkdir()
    victim = _victim(tmp_path)
    (d / "s1mpled.lock").symlink_to(victim)
    with pytest.raises(StateError, match=r"s1mpled\.lock: is a symbolic link"):
        StateDirectory.open(d)
    assert victim.read_bytes() == b"not yours to overwrite\n"


def test_a_leftover_journal_of_our_own_failed_save_is_replaced(tmp_path: Path) -> None:
    """A regular journal of ours that a failed save could not remove does not block the next save (O_EXCL)."""
    d = tmp_path / "st"
    _saved(d, {"v": 1})
    with StateDirectory.open(d) as sd:
        f = sd.file(NAME)
        f.load()
        (d / f"{NAME}.journal").write_bytes(b"half a save")
        f.save_sync({"v": 2})
    assert _load(d).state == {"v": 2} and not (d / f"{NAME}.journal").exists()


def test_an_unstorable_value_names_the_file_and_the_key(tmp_path: Path) -> None:
    """Saving a NaN is a StateEncodeError naming the state file and the key path; nothing is written."""
    d = tmp_path / "st"
    _saved(d, {"v": 1})
    with StateDirectory.open(d) as sd:
        f = sd.file(NAME)
        f.load()
        with pytest.raises(StateEncodeError, match=rf"{NAME}: ledger\.orders\[1\]\.price: NaN is not a finite"):
            f.save_sync({"ledger": {"orders": [{"price": Decimal(1)}, {"price": Decimal("NaN")}]}})
        assert f.generation == 1
    assert _load(d).state == {"v": 1}


def test_a_verified_file_whose_values_are_unusable_is_a_clear_state_error(tmp_path: Path) -> None:
    """restore_state() refusing a snapshot (a wrong type) is a StateError naming the file and the key."""
    with StateDirectory.open(tmp_path) as sd:
        sd.file("counter.state.json").load()
        sd.file("counter.state.json").save_sync({"other": 1})
    refused = r"counter\.state\.json: the saved state cannot be used: missing key 'value'"
    with StateDirectory.open(tmp_path) as sd, pytest.raises(StateError, match=refused):
        Counter(sd.file("counter.state.json")).load_state()


# ------------------------------------------------------------------ a full disk waits, a failed fsync stops


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """Wait on the event loop until ``predicate()`` holds; fail naming ``what`` after 10 s."""
    try:
        async with asyncio.timeout(10):
            while not predicate():  # noqa: ASYNC110 - store counters and callbacks, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _on_disk(directory: Path) -> Any:
    """The state NAME holds, read as another process would (the directory stays locked by the test)."""
    return codec.decode((directory / NAME).read_bytes()).state


def test_a_save_on_a_full_disk_waits_then_writes_the_newest_state(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC: save() does not fail and does not return; the disk keeps the last acknowledged state; once
    space is freed the newest state is written once, every waiting save returns, and one CRITICAL line
    (and one "space is back" line) tells the story."""
    _saved(tmpfs, {"v": 1})

    async def scenario(sd: StateDirectory) -> None:
        f = sd.file(NAME)
        f.load()
        sd.retry_first_s, sd.retry_max_s = 0.01, 0.05
        filler = fill(tmpfs)
        first = asyncio.create_task(f.save({"v": 2, "pad": "x" * 3000}))
        await _until(lambda: sd.disk_full, "the save to meet the full disk")
        later = [asyncio.create_task(f.save({"v": v, "pad": "x" * 3000})) for v in (3, 4)]
        await asyncio.sleep(0.2)  # several retries happen meanwhile
        assert not first.done() and not any(t.done() for t in later)
        assert _on_disk(tmpfs) == {"v": 1} and not (tmpfs / f"{NAME}.journal").exists()
        filler.unlink()
        async with asyncio.timeout(10):
            generations = await asyncio.gather(first, *later)
        assert not sd.disk_full
        assert len(set(generations)) <= 2 and max(generations) == f.generation

    with caplog.at_level(logging.INFO, "s1mpled.state"), StateDirectory.open(tmpfs) as sd:
        asyncio.run(scenario(sd))
    assert _on_disk(tmpfs) == {"v": 4, "pad": "x" * 3000}
    assert codec.decode((tmpfs / f"{NAME}.prev").read_bytes()).state == {"v": 1}
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "disk full" in critical[0].getMessage(), [r.getMessage() for r in critical]
    assert "No space left on device" in critical[0].getMessage()
    assert getattr(critical[0], "EVENT", None) == "STATE_DISK_FULL"
    assert sum("disk space is back" in r.getMessage() for r in caplog.records) == 1


def test_a_save_that_must_not_wait_raises_and_the_next_save_writes_it(tmpfs: Path) -> None:
    """wait_for_space=False: StateDiskFullError at once (no retry), and at once again while the disk is full;
    nothing reaches the disk until a later save, which writes the newest state when space returns."""
    _saved(tmpfs, {"v": 1})

    async def scenario(sd: StateDirectory) -> None:
        f = sd.file(NAME)
        f.load()
        sd.retry_first_s = 0.01
        filler = fill(tmpfs)
        with pytest.raises(StateDiskFullError, match="No space left on device"):
            await f.save({"v": 2, "pad": "x" * 3000}, wait_for_space=False)
        assert sd.disk_full and f.generation == 1
        writes = sd.stats.writes
        with pytest.raises(StateDiskFullError, match="the disk is full"):
            await f.save({"v": 3}, wait_for_space=False)
        assert sd.stats.writes == writes  # refused without touching the disk
        waiting = asyncio.create_task(f.save({"v": 4}))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        filler.unlink()
        async with asyncio.timeout(10):
            assert await waiting == 2  # generations are handed out again after a failed write
        assert not sd.disk_full

    with StateDirectory.open(tmpfs) as sd:
        asyncio.run(scenario(sd))
    assert _on_disk(tmpfs) == {"v": 4}


def test_supervise_alerts_a_full_disk_once_through_the_alert(tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Under supervise(alert) the episode's report is the alert (the Alerter's one CRITICAL line), not a second one."""
    _saved(tmpfs, {"v": 1})
    alerts: list[tuple[str, str]] = []

    async def alert(message: str, *, event: str = "ALERT") -> bool:
        alerts.append((message, event))
        return True

    async def scenario(sd: StateDirectory) -> None:
        f = sd.file(NAME)
        f.load()
        sd.retry_first_s = 0.01
        async with asyncio.TaskGroup() as tg:
            supervisor = tg.create_task(sd.supervise(alert))
            filler = fill(tmpfs)
            saves = [tg.create_task(f.save({"v": v, "pad": "x" * 3000})) for v in (2, 3)]
            await _until(lambda: bool(alerts), "the alert")
            filler.unlink()
            await asyncio.gather(*saves)
            supervisor.cancel()

    with caplog.at_level(logging.INFO, "s1mpled.state"), StateDirectory.open(tmpfs) as sd:
        asyncio.run(scenario(sd))
    assert [e for _, e in alerts] == ["STATE_DISK_FULL"] and "disk full" in alerts[0][0]
    assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[FailingDisk]:
    """An ext4 whose device starts failing writes on demand (tests/disks.py): a real fsync error."""
    with FailingDisk(tmp_path / "disk") as disk:
        yield disk


def test_a_failed_fsync_is_fail_stop_and_recovery_reloads_from_disk(failing_disk: FailingDisk) -> None:
    """EIO from fsync: StateFsyncError naming the file; every later write is refused without touching the
    disk, supervise() raises it (the daemon exits 70); after a repair the last acknowledged state loads."""
    d = failing_disk.mountpoint / "st"
    with StateDirectory.open(d) as sd:
        f = sd.file(NAME)
        f.load()
        for v in range(3):
            f.save_sync({"v": v, "pad": "y" * 5000})
        failing_disk.break_writes()
        with pytest.raises(StateFsyncError, match=rf"{NAME}\.journal: fsync failed: .*fail-stop") as info:
            for v in range(3, 40):  # a freed block of an earlier save may still be writable: the next is not
                f.save_sync({"v": v, "pad": "z" * 5000})
        acknowledged = v - 1
        assert sd.failure is not None and sd.failure.exit_code == 70 and "errno E" in str(info.value)
        writes = sd.stats.writes
        with pytest.raises(StateFsyncError, match="refusing to write after an earlier fsync failed"):
            f.save_sync({"v": "never"})
        with pytest.raises(StateFsyncError, match="refusing to write"):
            asyncio.run(f.save({"v": "never"}))
        assert sd.stats.writes == writes

        async def supervised() -> None:
            async with asyncio.timeout(5):
                await sd.supervise()

        with pytest.raises(StateFsyncError, match="fsync failed"):
            asyncio.run(supervised())
    failing_disk.repair()
    result = _load(d)
    assert result.state["v"] == acknowledged and not result.fallback, result


def test_saves_waiting_for_space_are_written_in_the_order_they_first_failed(tmpfs: Path) -> None:
    """Two files waiting for space land in the order their saves first failed (as the one writer thread would
    have written them): a ledger never reaches the disk before the exchange state it was derived from."""
    written: list[str] = []

    async def scenario(sd: StateDirectory) -> None:
        first, second = sd.file("exchange.state.json"), sd.file("ledger.state.json")
        first.load()
        second.load()
        sd.retry_first_s, sd.retry_max_s = 0.01, 0.4  # the first file's backoff grows past the second's
        apply = sd.apply

        def recording(ops: list[Any]) -> None:
            apply(ops)
            if not isinstance(ops[0], protocol.FsyncDir):  # a batch's one directory fsync names no file
                written.append(ops[0].name)

        sd.apply = recording  # type: ignore[method-assign]
        filler = fill(tmpfs)
        a = asyncio.create_task(first.save({"fill": "x" * 3000}))
        await _until(lambda: sd.disk_full, "the first save to fail")
        await asyncio.sleep(0.5)  # its backoff is at its longest now
        b = asyncio.create_task(second.save({"applied": "x" * 3000}))
        await asyncio.sleep(0.05)
        filler.unlink()
        async with asyncio.timeout(10):
            await asyncio.gather(a, b)

    with StateDirectory.open(tmpfs) as sd:
        asyncio.run(scenario(sd))
    assert written == ["exchange.state.json.journal", "ledger.state.json.journal"]
