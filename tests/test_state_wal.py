"""The record log next to a snapshot: O(change) saves, torn tails, refusals, crash states, old files."""

from __future__ import annotations

import asyncio
import itertools
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from s1mpled.errors import StateCorruptError
from s1mpled.state import codec, protocol, wal
from s1mpled.state.store import StateDirectory, StateFile
from tests.crashsim import SimDisk, _Inode

NAME = "ledger.state.json"
LOG = f"{NAME}.wal"


def _big(n: int) -> dict[str, Any]:
    """A ledger-shaped state after ``n`` fills: bounded history and seen ids, a few amounts."""
    return {
        "capital": Decimal("1000.00") - n,
        "sequence": n,
        "open_orders": [{"id": f"o{n}", "filled": Decimal("0.1")}],
        "history": [{"id": f"h{i}", "price": Decimal(i) / 7} for i in range(max(0, n - 500), n)],
        "seen": [str(i) for i in range(max(0, n - 10_000), n)],
    }


def _open(path: Path, *, log: bool = True) -> tuple[StateDirectory, StateFile]:
    sd = StateDirectory.open(path)
    f = sd.file(NAME)
    if log:
        f.use_log()
    return sd, f


# -- pure: diff / apply / parse


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"h": [1, 2, 3, 4]}, {"h": [2, 3, 4, 5]}),  # bounded history: oldest out, newest in
        ({"h": [1, 2, 3]}, {"h": [1, 9, 3]}),  # one item changed in place
        ({"h": [1, 2, 3]}, {"h": []}),
        ({"h": []}, {"h": [1]}),
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": 3, "d": None}}),  # a key gone, a nested one changed and added
        ({"a": Decimal("1.0")}, {"a": Decimal("1.00")}),  # same value, other exponent: recorded
        ({"a": 1}, {"a": True}),
        ({"a": [1, 2]}, {"a": (1, 2, 3)}),
        ({"a": {"x": 1}}, {"a": [1]}),
    ],
)
def test_diff_then_apply_gives_the_new_state_exactly(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Applying the encoded and decoded diff to the old state yields the new one, types and exponents included."""
    record = wal.encode_record(wal.diff(old, new), 2)
    changes = wal.parse(wal.base_record(1) + record).records[0].changes
    got = wal.apply(codec.decode(codec.encode(old, 1)).state, changes)
    assert codec.encode(got, 1) == codec.encode(new, 1)


def test_a_change_record_is_o_of_the_change_not_of_the_history() -> None:
    """One more fill on a 500-order history and 10,000 seen ids is a record of well under 1 KB."""
    old, new = _big(20_000), _big(20_001)
    assert len(codec.encode(new, 1)) > 100_000
    assert len(wal.encode_record(wal.diff(old, new), 2)) < 1_000


def _log(count: int) -> bytes:
    data = wal.base_record(5)
    for g in range(6, 6 + count):
        data += wal.encode_record([["set", ["n"], g]], g)
    return data


def test_a_torn_tail_is_dropped_at_every_cut_and_the_records_before_it_kept() -> None:
    """Every cut through the last record (and a zero-filled one) keeps exactly the records before it."""
    whole, head = _log(3), _log(2)
    for cut in range(len(head) + 1, len(whole)):
        parsed = wal.parse(whole[:cut])
        assert (parsed.last_generation, parsed.valid_length, parsed.torn_bytes) == (7, len(head), cut - len(head))
    zeroed = head + b"\0" * (len(whole) - len(head))
    assert wal.parse(zeroed).last_generation == 7
    assert wal.parse(whole).last_generation == 8 and wal.parse(whole).torn_bytes == 0


def test_damage_followed_by_a_verified_record_is_refused() -> None:
    """A flipped byte in a record that later records follow cannot be a torn append: LogCorrupt."""
    data = bytearray(_log(3))
    data[len(wal.base_record(5)) + 70] ^= 1
    with pytest.raises(wal.LogCorrupt, match="followed by verified records"):
        wal.parse(bytes(data))


def test_a_gap_in_the_generations_is_refused() -> None:
    """Records must continue each other: a missing generation is LogCorrupt, not a silent skip."""
    data = wal.base_record(5) + wal.encode_record([], 6) + wal.encode_record([], 8)
    with pytest.raises(wal.LogCorrupt, match="expected 7"):
        wal.parse(data)


# -- the store


def test_log_saves_cost_one_fsync_and_reload_to_the_newest_state(tmp_path: Path) -> None:
    """After the first (compacting) save each save is one append and one fsync; load replays the log."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        f.save_sync(_big(19_999))  # the first two saves are snapshots: NAME.prev exists before the first append
        f.save_sync(_big(20_000))
        before = (sd.stats.fsyncs, (tmp_path / NAME).stat().st_size)
        for n in range(20_001, 20_051):
            f.save_sync(_big(n))
        assert sd.stats.fsyncs - before[0] == 50
        assert (tmp_path / LOG).stat().st_size < 50_000
        assert (tmp_path / NAME).stat().st_size == before[1]  # the snapshot was not rewritten
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
    assert result.generation == 52 and result.state == _big(20_050)


def test_the_log_is_compacted_into_the_snapshot_once_it_outgrows_it(tmp_path: Path) -> None:
    """Compaction (§6.1 protocol plus a fresh log) bounds the log; the state survives every compaction."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 400):
            f.save_sync({"n": n, "pad": "x" * (n % 50) * 40})
            assert (tmp_path / LOG).stat().st_size < 2 * wal.MIN_COMPACT_BYTES
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 399, "pad": "x" * (399 % 50) * 40}


def test_a_torn_tail_loads_the_acknowledged_state_and_the_next_save_compacts(tmp_path: Path) -> None:
    """A half-written last record is dropped with a warning; the following save replaces the log whole."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 4):
            f.save_sync({"n": n})
    with (tmp_path / LOG).open("ab") as out:
        out.write(wal.encode_record([["set", ["n"], 4]], 4)[:30])
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 3}
        f.save_sync({"n": 5})
    assert wal.parse((tmp_path / LOG).read_bytes()) == wal.ParsedLog(base=4, valid_length=len(wal.base_record(4)))
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 5}


def test_a_damaged_log_is_refused_naming_it(tmp_path: Path) -> None:
    """A log damaged before its last record is a StateCorruptError naming NAME.wal, never an older state."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 5):
            f.save_sync({"n": n})
    data = bytearray((tmp_path / LOG).read_bytes())
    data[len(wal.base_record(1)) + 75] ^= 1
    (tmp_path / LOG).write_bytes(bytes(data))
    sd, f = _open(tmp_path)
    with sd, pytest.raises(StateCorruptError, match=r"ledger\.state\.json\.wal"):
        f.load()


def test_a_log_newer_than_the_snapshot_is_refused(tmp_path: Path) -> None:
    """A log continuing a generation newer than the verified NAME (no fallback) is refused, not skipped."""
    (tmp_path / NAME).write_bytes(codec.encode({"n": 1}, 1))
    (tmp_path / LOG).write_bytes(wal.base_record(3) + wal.encode_record([["set", ["n"], 4]], 4))
    sd, f = _open(tmp_path)
    with sd, pytest.raises(StateCorruptError, match="continues generation 3"):
        f.load()


def test_a_damaged_snapshot_falls_back_to_prev_and_replays_the_logs_to_the_newest_state(tmp_path: Path) -> None:
    """A damaged NAME loads NAME.prev loudly, then NAME.wal.prev and NAME.wal: nothing acknowledged is lost."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 6):
            f.save_sync({"n": n})
    assert (tmp_path / f"{NAME}.prev").exists() and (tmp_path / LOG).stat().st_size > len(wal.base_record(2))
    (tmp_path / NAME).write_bytes(b"junk")
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.fallback, result.generation, result.state) == (True, 5, {"n": 5})
        f.save_sync({"n": 6})
    assert codec.decode((tmp_path / NAME).read_bytes()).state == {"n": 6}  # a snapshot again, not an append
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 6}


def test_a_log_that_cannot_continue_a_fallback_is_set_aside_loudly(tmp_path: Path) -> None:
    """Without a NAME.wal.prev bridging NAME.prev to the lost NAME, its log is set aside (the fallback is loud)."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 6):
            f.save_sync({"n": n})
    (tmp_path / NAME).write_bytes(b"junk")
    (tmp_path / f"{LOG}.prev").unlink()
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.fallback, result.state) == (True, {"n": 1})
    assert list(tmp_path.glob(f"{LOG}.stale-*"))


def test_a_file_in_todays_format_loads_and_is_upgraded_in_place(tmp_path: Path) -> None:
    """A snapshot written by the store before the log existed (no NAME.wal) loads, saves and reloads."""
    old = _big(700)
    (tmp_path / NAME).write_bytes(codec.encode(old, 41))  # exactly what save_sync() wrote before: header + JSON
    assert (tmp_path / NAME).read_bytes().startswith(b"S1MPLED-STATE 1 41 ")
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.generation, result.state) == (41, old)
        f.save_sync(_big(701))
        f.save_sync(_big(702))
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
    assert (result.generation, result.state) == (43, _big(702))


def test_a_snapshot_a_log_continues_says_so_in_its_version_so_an_older_s1mpled_refuses_it(tmp_path: Path) -> None:
    """A s1mpled from before the log reads only version 1 and would ignore NAME.wal -- silently older books.
    A logged file's snapshot is version 2, which such a reader refuses by name; a plain file stays version 1."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        f.save_sync(_big(1))
    data = (tmp_path / NAME).read_bytes()
    assert codec.peek_version(data) == codec.LOGGED_VERSION != 1
    assert codec.decode(data).state == _big(1)
    plain = tmp_path / "plain"
    plain.mkdir()
    sd, f = _open(plain, log=False)
    with sd:
        f.load()
        f.save_sync({"v": 1})
    assert codec.peek_version((plain / NAME).read_bytes()) == codec.FORMAT_VERSION == 1
    header = data.split(b"\n", 1)[0].split(b" ")
    header[1] = b"1"  # the same bytes claiming version 1: the checksum covers the version, so this is refused
    with pytest.raises(codec.InvalidRecord, match="checksum"):
        codec.decode(b" ".join(header) + b"\n" + data.split(b"\n", 1)[1])


def test_a_plain_state_file_is_unchanged_without_use_log(tmp_path: Path) -> None:
    """A StateFile that does not opt in keeps writing whole snapshots (NAME and NAME.prev), no log."""
    sd, f = _open(tmp_path, log=False)
    with sd:
        f.load()
        f.save_sync({"v": 1})
        f.save_sync({"v": 2})
    assert not (tmp_path / LOG).exists()
    assert codec.decode((tmp_path / NAME).read_bytes()).state == {"v": 2}


# -- crash states of appends and compactions, by enumeration


class _LogDisk(SimDisk):
    """SimDisk that also appends: a crash leaves the durable prefix plus none, part or all of the rest."""

    def apply(self, op: protocol.Op) -> None:
        if isinstance(op, protocol.AppendFile):
            inode = self.inodes[self.volatile_ns[op.name]]
            inode.volatile = inode.volatile + op.data
        else:
            super().apply(op)

    @staticmethod
    def _versions(inode: _Inode) -> list[bytes]:
        old, new = inode.durable, inode.volatile
        if old and new.startswith(old) and new != old:
            tail = new[len(old) :]
            return list(
                dict.fromkeys([old, new, old + tail[: len(tail) // 2], old + tail[:1], old + b"\0" * len(tail)])
            )
        return SimDisk._versions(inode)


def _recorded_saves(tmp_path: Path, count: int) -> list[list[protocol.Op]]:
    """The ops of ``count`` real saves of a log-enabled StateFile (compacting every few saves)."""
    saves: list[list[protocol.Op]] = []
    sd, f = _open(tmp_path / "rec")
    with sd:
        real = sd.apply

        def record(ops: list[protocol.Op]) -> None:
            saves.append(list(ops))
            real(ops)

        sd.apply = record  # type: ignore[method-assign]
        f.load()
        for n in range(1, count + 1):
            f.save_sync({"n": n, "history": list(range(n)), "pad": "p" * 300})
    return saves


def test_a_crash_at_any_step_of_appends_and_compactions_keeps_every_acknowledged_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every disk a power cut can leave during appends and compactions loads the acknowledged state or the new one."""
    monkeypatch.setattr(wal, "MIN_COMPACT_BYTES", 1024)
    saves = _recorded_saves(tmp_path, 12)
    assert {type(op) for ops in saves for op in ops} >= {protocol.AppendFile, protocol.RenameFile}
    disk = _LogDisk()
    checked = 0
    for n, ops in enumerate(saves, start=1):
        for step in range(len(ops) + 1):
            if step:
                disk.apply(ops[step - 1])
            acknowledged = n if step == len(ops) else n - 1
            for files in itertools.islice(disk.crash_states(), 400):
                directory = tmp_path / f"c{checked}"
                directory.mkdir()
                for name, data in files.items():
                    (directory / name).write_bytes(data)
                sd, f = _open(directory)
                with sd:
                    state = f.load().state
                got = state["n"] if state else 0
                assert got in (acknowledged, n), (n, step, sorted(files), got)
                assert state is None or state["history"] == list(range(got))
                checked += 1
    assert checked > 100


def test_a_save_after_a_cancelled_one_is_computed_against_what_that_one_wrote(tmp_path: Path) -> None:
    """A cancelled save's write still completes (shielded); the next record must continue it, not the state before."""

    async def main() -> None:
        sd, f = _open(tmp_path)
        with sd:
            f.load()
            f.save_sync({"h": [0]})
            f.save_sync({"h": [0, 1]})  # NAME.prev exists: the next saves append
            gate = threading.Event()
            blocker = asyncio.get_running_loop().run_in_executor(sd._executor, gate.wait)
            first = asyncio.create_task(f.save({"h": [0, 1, 2]}))
            await asyncio.sleep(0.05)  # queued behind the blocked writer
            first.cancel()
            second = asyncio.create_task(f.save({"h": [0, 1, 2, 3]}))
            await asyncio.sleep(0.05)
            gate.set()
            await blocker
            await second

    asyncio.run(main())
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"h": [0, 1, 2, 3]}
