"""Crash states by enumeration: a power cut after any step of a save never loses an acknowledged state.

The simulated disk replays the store's own protocol steps; every disk a crash could leave is written
to a real directory and loaded by the real store. Recovery must yield exactly the last acknowledged
state or the new one -- never corruption, never an error, never anything older -- and a second crash
during recovery must not change that answer.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

from s1mpled.state import codec, protocol, recovery
from s1mpled.state.store import StateDirectory, read_record
from tests.crashsim import SimDisk

NAME = "ledger.state.json"


def _state(generation: int) -> dict[str, Any]:
    return {"generation_marker": generation, "capital": Decimal("1000.5") - generation, "orders": ["x"] * generation}


def _disk_with_saves(count: int) -> tuple[SimDisk, bool]:
    """A disk on which ``count`` saves completed (all durable); returns it and whether NAME exists."""
    disk = SimDisk()
    for gen in range(1, count + 1):
        for op in protocol.save_ops(NAME, codec.encode(_state(gen), gen), main_exists=gen > 1):
            disk.apply(op)
    return disk, count > 0


def _materialize(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def _load(directory: Path) -> tuple[int, Any]:
    with StateDirectory.open(directory, create=False) as sd:
        result = sd.file(NAME).load()
    return result.generation, result.state


def _enumerate(prior_saves: int, tmp_path: Path) -> int:
    disk, main_exists = _disk_with_saves(prior_saves)
    new_gen = prior_saves + 1
    ops = protocol.save_ops(NAME, codec.encode(_state(new_gen), new_gen), main_exists)
    checked = 0
    for step in range(len(ops) + 1):
        if step:
            disk.apply(ops[step - 1])
        acknowledged = new_gen if step == len(ops) else prior_saves
        for files in disk.crash_states():
            generation, state = _load(_materialize(files, tmp_path / f"c{checked}"))
            assert generation in (acknowledged, new_gen), (step, sorted(files), generation)
            assert state == (_state(generation) if generation else None)
            checked += 1
    return checked


def test_crash_during_first_save(tmp_path: Path) -> None:
    """A crash anywhere in the very first save leaves either no state (a fresh start) or the new one."""
    assert _enumerate(0, tmp_path) > 10


def test_crash_during_later_save(tmp_path: Path) -> None:
    """A crash anywhere in a save over existing state yields the acknowledged generation or the new one."""
    assert _enumerate(2, tmp_path) == 16  # 1+5+2+3+4+1 disks over the six crash points


def _plan(files: dict[str, bytes]) -> recovery.Plan:
    def obs(name: str) -> recovery.Observation:
        return read_record(files[name])[0] if name in files else recovery.Missing()

    return recovery.plan_load(NAME, obs(NAME), obs(f"{NAME}.journal"), obs(f"{NAME}.prev"), "T")


def test_crash_during_recovery_does_not_change_the_outcome() -> None:
    """If recovery's own renames are interrupted by a crash, the next recovery reaches the same generation."""
    disk, main_exists = _disk_with_saves(2)
    ops = protocol.save_ops(NAME, codec.encode(_state(3), 3), main_exists)
    cases = 0
    for step in range(len(ops) + 1):
        if step:
            disk.apply(ops[step - 1])
        for files in disk.crash_states():
            first = _plan(files)
            assert first.error is None
            rdisk = SimDisk()
            for name, data in files.items():
                rdisk.apply(protocol.WriteFile(name, data))
                rdisk.apply(protocol.FsyncFile(name))
            rdisk.apply(protocol.FsyncDir())
            for r in first.renames:
                rdisk.apply(protocol.RenameFile(r.src, r.dst))
            for again in itertools.chain(rdisk.crash_states(), [rdisk.settled()]):
                second = _plan(again)
                assert second.error is None and second.generation == first.generation, (sorted(files), sorted(again))
                cases += 1
    assert cases > 30


def test_an_older_verified_journal_never_beats_a_newer_prev(tmp_path: Path) -> None:
    """NAME damaged, an older verified journal left over, NAME.prev newer: the newest verified generation wins.

    Every disk a power cut can leave during that recovery and during the save after it loads .prev's
    generation or the new one -- never the journal's older one, and the newer generation is never lost.
    """
    files = {
        NAME: b"S1MPLED-STATE 1 3 bit rot",
        f"{NAME}.journal": codec.encode(_state(1), 1),
        f"{NAME}.prev": codec.encode(_state(2), 2),
    }
    real = _materialize(files, tmp_path / "real")
    with StateDirectory.open(real, create=False) as sd:
        f = sd.file(NAME)
        result = f.load()
        assert (result.generation, result.source, result.fallback) == (2, "prev", True)
        f.save_sync(_state(3))
    assert _load(real) == (3, _state(3))
    assert codec.decode((real / f"{NAME}.prev").read_bytes()).state == _state(2)

    disk = SimDisk()
    for name, data in files.items():
        disk.apply(protocol.WriteFile(name, data))
        disk.apply(protocol.FsyncFile(name))
    disk.apply(protocol.FsyncDir())
    plan = _plan(files)
    steps: list[protocol.Op] = [protocol.RenameFile(r.src, r.dst) for r in plan.renames]
    steps += [protocol.FsyncDir(), *protocol.save_ops(NAME, codec.encode(_state(3), 3), main_exists=False)]
    checked = 0
    for index, op in enumerate(steps):
        disk.apply(op)
        acknowledged = 3 if index == len(steps) - 1 else 2
        for crashed in disk.crash_states():
            generation, state = _load(_materialize(crashed, tmp_path / f"c{checked}"))
            assert generation in (acknowledged, 3), (index, sorted(crashed), generation)
            assert state == _state(generation)
            checked += 1
    assert checked > 10
