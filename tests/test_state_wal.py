"""The directory's record log: O(change) saves, one fsync per batch, torn tails, refusals, crash states, old files."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.errors import StateCorruptError, StateDiskFullError
from s1mpled.state import codec, dirlog, protocol, wal
from s1mpled.state.store import StateDirectory, StateFile
from tests.crashsim import SimDisk, _Inode

NAME = "ledger.state.json"
LOG = dirlog.LOG_NAME


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
    changes = wal.decode_changes(codec.encode_payload(wal.diff(old, new)), 2)
    got = wal.apply(codec.decode(codec.encode(old, 1)).state, changes)
    assert codec.encode(got, 1) == codec.encode(new, 1)


_ITEMS = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "c"]), st.just(None))


@given(
    old=st.lists(_ITEMS, max_size=12),
    drop=st.integers(0, 4),
    middle=st.lists(_ITEMS, max_size=3),
    at=st.integers(0, 12),
    cut=st.integers(0, 3),
    tail=st.lists(_ITEMS, max_size=4),
)
def test_any_edit_of_a_list_is_recorded_exactly(
    *, old: list[Any], drop: int, middle: list[Any], at: int, cut: int, tail: list[Any]
) -> None:
    """Oldest out at the front, a splice in the middle, newest in at the back, in any mix: apply(diff) is new."""
    new = old[drop:]
    at = min(at, len(new))
    new = [*new[:at], *middle, *new[at + cut :], *tail]
    for before, after in (({"h": old}, {"h": new}), ({"h": new}, {"h": old})):
        changes = wal.decode_changes(codec.encode_payload(wal.diff(before, after)), 2)
        got = wal.apply(codec.decode(codec.encode(before, 1)).state, changes)
        assert codec.encode(got, 1) == codec.encode(after, 1)


def test_a_change_record_is_o_of_the_change_not_of_the_history() -> None:
    """One more fill on a 500-order history and 10,000 seen ids is a record of well under 1 KB."""
    old, new = _big(20_000), _big(20_001)
    assert len(codec.encode(new, 1)) > 100_000
    assert len(dirlog.entry(NAME, 2, codec.encode_payload(wal.diff(old, new)))) < 1_000


def _entry(n: int, name: str = NAME) -> bytes:
    return dirlog.entry(name, n, codec.encode_payload([["set", ["n"], n]]))


def _log(count: int) -> bytes:
    data = dirlog.base()
    for seq in range(1, 1 + count):
        data += dirlog.batch([_entry(5 + seq), _entry(seq, "other")], seq)
    return data


def _generations(parsed: dirlog.ParsedLog, name: str = NAME) -> list[int]:
    return [e.generation for e in parsed.entries.get(name, [])]


def test_a_torn_tail_is_dropped_at_every_cut_and_the_records_before_it_kept() -> None:
    """Every cut through the last record (and a zero-filled one) keeps exactly the records before it."""
    whole, head = _log(3), _log(2)
    for cut in range(len(head) + 1, len(whole)):
        parsed = dirlog.parse(whole[:cut])
        assert (_generations(parsed), parsed.valid_length, parsed.torn_bytes) == ([6, 7], len(head), cut - len(head))
    zeroed = head + b"\0" * (len(whole) - len(head))
    assert _generations(dirlog.parse(zeroed)) == [6, 7]
    assert _generations(dirlog.parse(whole)) == [6, 7, 8] and dirlog.parse(whole).torn_bytes == 0
    assert _generations(dirlog.parse(whole), "other") == [1, 2, 3]


def test_damage_followed_by_a_verified_record_is_refused() -> None:
    """A flipped byte in a record that later records follow cannot be a torn append: LogCorrupt."""
    data = bytearray(_log(3))
    data[len(dirlog.base()) + 100] ^= 1
    with pytest.raises(dirlog.LogCorrupt, match="followed by verified records"):
        dirlog.parse(bytes(data))


def test_a_gap_in_the_sequence_and_a_generation_out_of_order_are_refused() -> None:
    """Records must follow each other: a missing record, or a state's generation going back, is LogCorrupt."""
    gap = dirlog.base() + dirlog.batch([_entry(6)], 1) + dirlog.batch([_entry(7)], 3)
    with pytest.raises(dirlog.LogCorrupt, match="expected 2"):
        dirlog.parse(gap)
    back = dirlog.base() + dirlog.batch([_entry(6)], 1) + dirlog.batch([_entry(6)], 2)
    with pytest.raises(dirlog.LogCorrupt, match="out of order"):
        dirlog.parse(back)
    with pytest.raises(dirlog.LogCorrupt, match="no verified base"):
        dirlog.parse(dirlog.batch([_entry(6)], 1))


@given(st.lists(st.tuples(st.sampled_from(["a", "b c", "ü.json"]), st.binary(max_size=40)), max_size=12))
def test_entries_come_back_exactly_as_written(written: list[tuple[str, bytes]]) -> None:
    """Whatever names and bytes a batch holds, the index points at exactly those bytes, in order."""
    counters: dict[str, int] = {}
    data = dirlog.base()
    for seq, (name, payload) in enumerate(written, start=1):
        counters[name] = counters.get(name, 0) + 1
        data += dirlog.batch([dirlog.entry(name, counters[name], payload)], seq)
    parsed = dirlog.parse(data)
    got = sorted((e.name, e.generation, data[e.start : e.end]) for es in parsed.entries.values() for e in es)
    seen: dict[str, int] = {}
    expected = []
    for name, payload in written:
        seen[name] = seen.get(name, 0) + 1
        expected.append((name, seen[name], payload))
    assert got == sorted(expected)


# -- the store


def test_log_saves_cost_one_fsync_and_reload_to_the_newest_state(tmp_path: Path) -> None:
    """After the first (snapshot) saves each save is one append and one fsync; load replays the log."""
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


def test_the_saves_of_several_states_in_one_tick_are_one_append_and_one_fsync(tmp_path: Path) -> None:
    """Three states saved in the same event-loop tick (a fill: the exchange, a ledger, another ledger) reach
    the disk as one record of the directory's log: one write, one fsync; each reloads to its newest state."""
    names = ("exchange.state.json", "grid.state.json", "dca.state.json")

    async def main() -> tuple[int, int]:
        with StateDirectory.open(tmp_path) as sd:
            files = [sd.file(n) for n in names]
            for f in files:
                f.use_log()
                f.load()
            for n in (1, 2):  # the first two saves of a state are snapshots
                await asyncio.gather(*(f.save({"n": n, "of": f.name}) for f in files))
            writes, fsyncs = sd.stats.writes, sd.stats.fsyncs
            for n in range(3, 23):
                await asyncio.gather(*(f.save({"n": n, "of": f.name}) for f in files))
            return sd.stats.writes - writes, sd.stats.fsyncs - fsyncs

    assert asyncio.run(main()) == (20, 20)
    with StateDirectory.open(tmp_path) as sd:
        for name in names:
            assert sd.file(name).load().state == {"n": 22, "of": name}


def test_saves_issued_while_a_batch_is_written_join_the_next_one(tmp_path: Path) -> None:
    """Group commit across states: saves of other states that arrive while a batch is on the disk go
    together in the next one, instead of one fsync each."""

    async def main() -> int:
        with StateDirectory.open(tmp_path) as sd:
            files = [sd.file(f"s{i}.state.json") for i in range(8)]
            for f in files:
                f.use_log()
                f.load()
                f.save_sync({"v": 0})
                f.save_sync({"v": 1})
            gate = threading.Event()
            blocker = asyncio.get_running_loop().run_in_executor(sd._executor, gate.wait)
            first = asyncio.create_task(files[0].save({"v": 2}))
            await asyncio.sleep(0.05)  # its batch is queued behind the blocked writer
            rest = [asyncio.create_task(f.save({"v": 2})) for f in files[1:]]
            await asyncio.sleep(0.05)
            fsyncs = sd.stats.fsyncs
            gate.set()
            await blocker
            await asyncio.gather(first, *rest)
            return sd.stats.fsyncs - fsyncs

    assert asyncio.run(main()) == 2  # the first state's batch, then the seven others in one


def test_the_log_is_compacted_and_rewritten_so_it_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction (a snapshot by the §6.1 protocol) and rewrites of the log bound it; every state survives."""
    monkeypatch.setattr(dirlog, "MIN_ROTATE_BYTES", 16 * 1024)
    sd, f = _open(tmp_path)
    with sd:
        other = sd.file("other.state.json")
        other.use_log()
        f.load()
        other.load()
        for n in range(1, 400):
            f.save_sync({"n": n, "pad": "x" * (n % 50) * 40})
            other.save_sync({"m": n})
            # each state keeps its entries since NAME.prev (at most two compaction intervals), and the log is
            # rewritten once it has twice what the last rewrite kept: two states, 8 intervals at most
            assert n < 3 or (tmp_path / LOG).stat().st_size < 8 * wal.MIN_COMPACT_BYTES
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 399, "pad": "x" * (399 % 50) * 40}
        assert sd.file("other.state.json").load().state == {"m": 399}


def test_a_rewrite_of_the_log_keeps_the_entries_of_a_state_nobody_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state this process never opened (a strategy removed from the config, say) keeps its entries through
    every rewrite of the log: re-added later, it loads its newest state -- and still falls back exactly."""
    monkeypatch.setattr(dirlog, "MIN_ROTATE_BYTES", 8 * 1024)
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 8):
            f.save_sync({"n": n})
    sd, busy = _open(tmp_path)
    with sd:
        busy = sd.file("busy.state.json")
        busy.use_log()
        busy.load()
        for n in range(1, 600):
            busy.save_sync({"b": n, "pad": "y" * 200})
        assert sd._carried > 0  # the log was rewritten
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 7}
    (tmp_path / NAME).write_bytes(b"junk")
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.fallback, result.state) == (True, {"n": 7})


def test_a_rewrite_of_the_log_that_fails_leaves_the_old_one_and_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No space for the rewritten log: every save still lands (in the old log), one warning says so, and the
    rewrite happens after a later save once it can."""
    monkeypatch.setattr(dirlog, "MIN_ROTATE_BYTES", 4 * 1024)
    refused: list[str] = []
    sd, f = _open(tmp_path)
    with sd, caplog.at_level(logging.WARNING):
        real = sd.apply

        def no_space_for_a_new_log(ops: list[protocol.Op]) -> None:
            first = ops[0]
            rewrite = isinstance(first, protocol.WriteFile) and first.name == f"{LOG}.new" and (tmp_path / LOG).exists()
            if rewrite and len(refused) < 20:
                refused.append(f"{LOG}.new")
                raise StateDiskFullError(str(tmp_path / f"{LOG}.new"), "No space left on device (errno ENOSPC)")
            real(ops)

        sd.apply = no_space_for_a_new_log  # type: ignore[method-assign]
        f.load()
        n = 0
        while len(refused) < 20:
            n += 1
            f.save_sync({"n": n, "pad": "z" * 300})
        assert (tmp_path / LOG).stat().st_size > 4 * 1024 and sd._carried == 0
        assert caplog.text.count("not rewritten") == 1, caplog.text
        f.save_sync({"n": n + 1, "pad": "z" * 300})
        assert sd._carried > 0 and (tmp_path / LOG).stat().st_size < 4 * 1024
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": n + 1, "pad": "z" * 300}


def test_a_torn_tail_loads_the_acknowledged_state_and_the_next_save_cuts_it_off(tmp_path: Path) -> None:
    """A half-written last record is dropped with a warning; the following save writes where it began."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 4):
            f.save_sync({"n": n})
    good = (tmp_path / LOG).read_bytes()
    with (tmp_path / LOG).open("ab") as out:
        out.write(dirlog.batch([_entry(4)], dirlog.parse(good).records)[:30])
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 3}
        f.save_sync({"n": 5})
    data = (tmp_path / LOG).read_bytes()
    assert data.startswith(good) and dirlog.parse(data).torn_bytes == 0
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 5}


def test_a_damaged_log_is_refused_naming_it(tmp_path: Path) -> None:
    """A log damaged before its last record is a StateCorruptError naming state.wal, never an older state."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 5):
            f.save_sync({"n": n})
    data = bytearray((tmp_path / LOG).read_bytes())
    data[len(dirlog.base()) + 75] ^= 1
    (tmp_path / LOG).write_bytes(bytes(data))
    sd, f = _open(tmp_path)
    with sd, pytest.raises(StateCorruptError, match=r"state\.wal"):
        f.load()


def test_entries_that_do_not_continue_the_snapshot_are_refused(tmp_path: Path) -> None:
    """Entries continuing a generation newer than the verified NAME (no fallback) are refused, not skipped."""
    (tmp_path / NAME).write_bytes(codec.encode({"n": 1}, 1, logged=True))
    (tmp_path / LOG).write_bytes(dirlog.base() + dirlog.batch([_entry(4)], 1))
    sd, f = _open(tmp_path)
    with sd, pytest.raises(StateCorruptError, match="do not continue the snapshot, generation 1"):
        f.load()


def test_a_damaged_snapshot_falls_back_to_prev_and_replays_the_log_to_the_newest_state(tmp_path: Path) -> None:
    """A damaged NAME loads NAME.prev loudly, then the log's entries above it: nothing acknowledged is lost."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 6):
            f.save_sync({"n": n})
    assert (tmp_path / f"{NAME}.prev").exists()
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


def _drop_entry(log: Path, generation: int) -> None:
    """Rewrite the log at ``log`` as if the record holding NAME's entry of ``generation`` had been lost."""
    data = log.read_bytes()
    entries = dirlog.parse(data).entries[NAME]
    assert any(e.generation == generation for e in entries)
    kept = [dirlog.entry(NAME, e.generation, data[e.start : e.end]) for e in entries if e.generation != generation]
    log.write_bytes(dirlog.base() + b"".join(dirlog.batch([one], seq) for seq, one in enumerate(kept, start=1)))


def test_entries_that_cannot_continue_a_fallback_are_passed_loudly_and_never_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NAME damaged and the entries above NAME.prev incomplete: the fallback state loads (loudly), and its
    next generations come after the unusable entries, so a later load never applies them to it."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 6):
            f.save_sync({"n": n})
    _drop_entry(tmp_path / LOG, 2)  # the chain from NAME.prev (1) is broken
    (tmp_path / NAME).write_bytes(b"junk")
    sd, f = _open(tmp_path)
    with sd, caplog.at_level(logging.CRITICAL):
        result = f.load()
        assert (result.fallback, result.state) == (True, {"n": 1})
        assert "do not continue the state (a fallback)" in caplog.text
        assert f.save_sync({"n": 100}) == 6
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 100}


def test_a_file_in_the_first_format_loads_and_is_upgraded_in_place(tmp_path: Path) -> None:
    """A snapshot written by the store before any log existed (format 1) loads, saves and reloads."""
    old = _big(700)
    (tmp_path / NAME).write_bytes(codec.encode(old, 41))  # exactly what save_sync() wrote before: header + JSON
    assert (tmp_path / NAME).read_bytes().startswith(b"S1MPLED-STATE 1 41 ")
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.generation, result.state) == (41, old)
        f.save_sync(_big(701))
        f.save_sync(_big(702))
        f.save_sync(_big(703))
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
    assert (result.generation, result.state) == (44, _big(703))


def _format_2(state: Any, generation: int) -> bytes:
    """A snapshot as development builds wrote it for a state with its own NAME.wal (format version 2)."""
    payload = codec.encode_payload(state)
    digest = codec._digest(generation, len(payload), payload, codec.WAL_VERSION)
    return b"S1MPLED-STATE 2 %d %d %s\n" % (generation, len(payload), digest.encode()) + payload


def test_a_state_with_its_own_log_of_format_2_is_upgraded_without_losing_a_record(tmp_path: Path) -> None:
    """NAME (format 2) + NAME.wal, as development builds left them: load replays NAME.wal, the next save
    writes today's snapshot, and from then on the directory's log continues it."""
    (tmp_path / NAME).write_bytes(_format_2({"n": 3}, 3))
    own = wal.base_record(3) + wal.encode_record([["set", ["n"], 4]], 4) + wal.encode_record([["set", ["n"], 5]], 5)
    (tmp_path / f"{NAME}.wal").write_bytes(own)
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.generation, result.state) == (5, {"n": 5})
        f.save_sync({"n": 6})
        assert codec.peek_version((tmp_path / NAME).read_bytes()) == codec.LOGGED_VERSION
        f.save_sync({"n": 7})
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 7}


def test_a_state_written_without_the_log_is_snapshotted_in_todays_format_before_it_appends(tmp_path: Path) -> None:
    """NAME and NAME.prev in format 1 (saved without the log), then saved with it: the first save writes NAME as
    format 3 -- never appends behind a format-1 NAME that an older s1mpled would load without the log."""
    sd, f = _open(tmp_path, log=False)
    with sd:
        f.load()
        f.save_sync({"v": 1})
        f.save_sync({"v": 2})
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        f.save_sync({"v": 3})
        assert codec.peek_version((tmp_path / NAME).read_bytes()) == codec.LOGGED_VERSION
        assert codec.decode((tmp_path / NAME).read_bytes()).state == {"v": 3}
        for v in range(4, 8):
            f.save_sync({"v": v})
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"v": 7}


def test_a_failing_metrics_hook_never_leaves_a_state_diffed_against_the_wrong_base(tmp_path: Path) -> None:
    """on_saved raising for the first state of a batch: the batch is durable, every state's next save is computed
    against what is on disk, and each reloads to exactly what was saved."""

    async def main() -> None:
        with StateDirectory.open(tmp_path) as sd:
            a, b = sd.file("a.state.json"), sd.file("b.state.json")
            for f in (a, b):
                f.use_log()
                f.load()
            for n in (1, 2):
                await asyncio.gather(a.save({"h": [n]}), b.save({"h": [n]}))

            def hook(name: str, size: int, seconds: float) -> None:
                if name == "a.state.json":
                    raise RuntimeError("a broken metrics hook")

            sd.on_saved = hook
            await asyncio.gather(a.save({"h": [1, 2, 3]}), b.save({"h": [1, 2, 3]}))
            sd.on_saved = None
            await asyncio.gather(a.save({"h": [1, 2, 3, 4]}), b.save({"h": [1, 2, 3, 4]}))

    asyncio.run(main())
    with StateDirectory.open(tmp_path) as sd:
        for name in ("a.state.json", "b.state.json"):
            assert sd.file(name).load().state == {"h": [1, 2, 3, 4]}, name


def test_runs_with_and_without_the_log_leave_no_gap_a_fallback_could_not_cross(tmp_path: Path) -> None:
    """Saved with the log, then a run without it (a snapshot, no entry), then with it again; NAME is then
    damaged: the fallback rebuilds exactly the last acknowledged state."""

    def run(log: bool, values: list[int]) -> None:
        sd, f = _open(tmp_path, log=log)
        with sd:
            f.load()
            for v in values:
                f.save_sync({"v": v})

    run(True, [1, 2, 3, 4, 5])
    run(False, [6])
    run(True, [7, 8])
    with (tmp_path / NAME).open("r+b") as damaged:
        damaged.seek(20)
        damaged.write(b"XX")
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
    assert (result.fallback, result.state, result.generation) == (True, {"v": 8}, 8)


def test_after_a_fallback_past_a_gap_the_next_save_is_acknowledged_only_as_a_whole_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries above NAME.prev with a gap (generation 3's record lost) and NAME damaged: the fallback applies
    what continues NAME.prev and passes the rest; the next save is a whole snapshot, so a full disk fails it
    instead of acknowledging an entry that continues a state no file holds."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        for n in range(1, 7):
            f.save_sync({"n": n})
    _drop_entry(tmp_path / LOG, 3)
    (tmp_path / NAME).write_bytes(b"junk")  # NAME.prev is generation 1; entries 2, 4, 5, 6 remain
    sd, f = _open(tmp_path)
    with sd:
        result = f.load()
        assert (result.fallback, result.state) == (True, {"n": 2})  # generation 1 + entry 2; 4..6 passed
        real = StateDirectory._apply_one

        def no_space_for_the_snapshot(self: StateDirectory, op: protocol.Op, fds: dict[str, int]) -> None:
            if isinstance(op, protocol.WriteFile) and op.name == f"{NAME}.journal":
                raise OSError(errno.ENOSPC, "No space left on device")
            real(self, op, fds)

        monkeypatch.setattr(StateDirectory, "_apply_one", no_space_for_the_snapshot)
        with pytest.raises(StateDiskFullError):
            f.save_sync({"n": 100})
        monkeypatch.setattr(StateDirectory, "_apply_one", real)
        assert f.save_sync({"n": 101}) == 7
    sd, f = _open(tmp_path)
    with sd:
        assert f.load().state == {"n": 101}


def test_a_snapshot_a_log_continues_says_so_in_its_version_so_an_older_s1mpled_refuses_it(tmp_path: Path) -> None:
    """A s1mpled that knows no directory log reads versions 1 (and 2) and would ignore state.wal -- silently
    older books. A logged state's snapshot is version 3, which such a reader refuses by name; a plain file
    stays version 1."""
    sd, f = _open(tmp_path)
    with sd:
        f.load()
        f.save_sync(_big(1))
    data = (tmp_path / NAME).read_bytes()
    assert codec.peek_version(data) == codec.LOGGED_VERSION == 3
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
    """SimDisk that also appends (at an offset, cutting what followed): a crash leaves the durable prefix plus
    none, part or all of the rest."""

    def apply(self, op: protocol.Op) -> None:
        if isinstance(op, protocol.AppendFile):
            inode = self.inodes[self.volatile_ns[op.name]]
            inode.volatile = inode.volatile[: op.at] + op.data
        else:
            super().apply(op)

    @staticmethod
    def _versions(inode: _Inode) -> list[bytes]:
        old, new = inode.durable, inode.volatile
        common = next((k for k, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
        if common and new != old:
            head, tail = new[:common], new[common:]
            return list(
                dict.fromkeys([old, new, head + tail[: len(tail) // 2], head + tail[:1], head + b"\0" * len(tail)])
            )
        return SimDisk._versions(inode)


def _recorded_batches(tmp_path: Path, count: int) -> list[list[protocol.Op]]:
    """The ops of ``count`` real batches, each saving two log-enabled states in one tick (compacting and
    rewriting the log every few batches)."""
    batches: list[list[protocol.Op]] = []
    sd, f = _open(tmp_path / "rec")
    with sd:
        other = sd.file(OTHER)
        other.use_log()
        real, current = sd.apply, []

        def record(ops: list[protocol.Op]) -> None:
            current.extend(ops)
            real(ops)

        sd.apply = record  # type: ignore[method-assign]
        f.load()
        other.load()

        async def main() -> None:
            for n in range(1, count + 1):
                await asyncio.gather(f.save(_state(n)), other.save({"m": n, "pad": "q" * 200}))
                batches.append(list(current))
                current.clear()

        asyncio.run(main())
    return batches


OTHER = "other.state.json"


def _state(n: int) -> dict[str, Any]:
    return {"n": n, "history": list(range(n)), "pad": "p" * 300}


def test_a_crash_at_any_step_of_batches_compactions_and_rewrites_keeps_every_acknowledged_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every disk a power cut can leave during batches of two states -- appends, snapshots, compactions,
    rewrites of the log -- loads each state at its acknowledged generation or the new one, never older."""
    monkeypatch.setattr(wal, "MIN_COMPACT_BYTES", 1024)
    monkeypatch.setattr(dirlog, "MIN_ROTATE_BYTES", 2048)
    batches = _recorded_batches(tmp_path, 14)
    kinds = [(type(op), getattr(op, "name", "")) for ops in batches for op in ops]
    assert (protocol.AppendFile, LOG) in kinds and (protocol.RenameFile, "") in kinds
    assert kinds.count((protocol.WriteFile, f"{LOG}.new")) >= 2, "the log was never rewritten"
    disk = _LogDisk()
    checked = 0
    for n, ops in enumerate(batches, start=1):
        for step in range(len(ops) + 1):
            if step:
                disk.apply(ops[step - 1])
            acknowledged = n if step == len(ops) else n - 1
            for files in itertools.islice(disk.crash_states(), 300):
                directory = tmp_path / f"c{checked}"
                directory.mkdir()
                for name, data in files.items():
                    (directory / name).write_bytes(data)
                sd, f = _open(directory)
                with sd:
                    state, other = f.load().state, sd.file(OTHER).load().state
                got, got_other = (state["n"] if state else 0), (other["m"] if other else 0)
                assert got in (acknowledged, n) and got_other in (acknowledged, n), (n, step, sorted(files), got)
                assert state is None or state == _state(got)
                checked += 1
    assert checked > 150


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
