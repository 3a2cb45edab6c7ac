"""SIGKILL torture: a writer killed at random moments never loses an acknowledged save.

A child process saves an increasing counter and acknowledges each save on a pipe only after save()
returned. The parent kills it with SIGKILL at a random moment, then loads the state itself: it must
verify and be at least the last acknowledged value. S1MPLED_TORTURE_KILLS sets the number of kills
(1,000 by default; the benchmark uses 10,000).
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from s1mpled.state.store import StateDirectory

NAME = "counter.state.json"
KILLS = int(os.environ.get("S1MPLED_TORTURE_KILLS", "1000"))


def _child(path: Path, ack_fd: int) -> None:
    """Runs in the forked child: save forever, acknowledging each durable save."""
    try:
        with StateDirectory.open(path) as sd:
            f = sd.file(NAME)
            loaded = f.load().state
            n = loaded["n"] if loaded else 0
            pad = "p" * random.randrange(1, 20_000)  # vary sizes so kills land in different write phases
            while True:
                n += 1
                f.save_sync({"n": n, "pad": pad})
                os.write(ack_fd, b"%d\n" % n)
    finally:
        os._exit(1)


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def _kill_moment(r: int, rng: random.Random) -> bytes:
    """Waits for a random moment to kill: after 0-2 acknowledged saves, then a random part of a save.

    The moment is measured in saves, not in wall time, so a slow disk (CI) gets the same mix of
    kills before, inside and after a save as a fast one, instead of a child killed before it ever
    completes one.
    """
    wanted = rng.choice((0, 1, 1, 2))
    acks = b""
    started = time.monotonic()
    last = started
    interval = 0.002
    deadline = started + 30.0
    while acks.count(b"\n") < wanted and time.monotonic() < deadline:
        if select.select([r], [], [], 0.05)[0]:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            acks += chunk
            now = time.monotonic()
            interval, last = now - last, now
    pause = time.monotonic() + rng.uniform(0.0, 1.5) * max(interval, 0.0005)
    while time.monotonic() < pause:
        acks += _drain(r)
    return acks


def _kill_and_load(
    tmp_path: Path, kills: int, child: Callable[[Path, int], None]
) -> Iterator[tuple[dict[str, Any] | None, int]]:
    """Start ``child`` and SIGKILL it at a random moment, ``kills`` times; after each kill, the state load()
    returns (the record log, if any, replayed) and the last save the child acknowledged."""
    rng = random.Random(int(os.environ.get("S1MPLED_TORTURE_SEED", "20261121")))
    last_ack = 0
    for _ in range(kills):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(tmp_path, w)
        os.close(w)
        acks = _kill_moment(r, rng)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acks += _drain(r)
        os.close(r)
        if acks.strip():
            last_ack = int(acks.split()[-1])
        with StateDirectory.open(tmp_path) as sd:
            state: dict[str, Any] | None = sd.file(NAME).load().state
        yield state, last_ack


def test_sigkill_at_random_moments_never_loses_an_acknowledged_save(tmp_path: Path) -> None:
    """After each of KILLS random SIGKILLs, load() verifies and returns >= the last acknowledged counter."""
    progressed = 0
    for state, last_ack in _kill_and_load(tmp_path, KILLS, _child):
        value = state["n"] if state else 0
        assert value >= last_ack, f"lost an acknowledged save: loaded {value}, acknowledged {last_ack}"
        progressed = max(progressed, value)
    assert progressed > KILLS // 4, "the writer hardly ever completed a save; the test proves little"


LOG_KILLS = int(os.environ.get("S1MPLED_TORTURE_LOG_KILLS", "300"))
HISTORY = 300


def _log_child(path: Path, ack_fd: int) -> None:
    """Like _child, through the directory's record log: each step saves this state and a second one in one
    batch (one append), with compactions and rewrites of the log every few saves and a bounded history."""
    try:
        from s1mpled.state import dirlog, wal

        wal.MIN_COMPACT_BYTES = 2048  # compact often, so kills land in compactions as well as appends
        dirlog.MIN_ROTATE_BYTES = 4096  # and in rewrites of the log
        with StateDirectory.open(path) as sd:
            f, other = sd.file(NAME), sd.file(f"other-{NAME}")
            f.use_log()
            other.use_log()
            loaded = f.load().state
            other.load()
            n = loaded["n"] if loaded else 0
            pad = "p" * random.randrange(1, 2_000)

            async def steps(n: int) -> None:
                while True:
                    n += 1
                    history = list(range(max(1, n - HISTORY + 1), n + 1))
                    await asyncio.gather(f.save({"n": n, "history": history, "pad": pad}), other.save({"m": n}))
                    os.write(ack_fd, b"%d\n" % n)

            asyncio.run(steps(n))
    finally:
        os._exit(1)


def test_sigkill_of_a_log_writer_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    """After each of LOG_KILLS SIGKILLs of a writer appending to the record log, load() returns >= the last ack."""
    progressed = 0
    for state, last_ack in _kill_and_load(tmp_path, LOG_KILLS, _log_child):
        value = state["n"] if state else 0
        assert value >= last_ack, f"lost an acknowledged record: loaded {value}, acknowledged {last_ack}"
        if state:
            assert state["history"] == list(range(max(1, value - HISTORY + 1), value + 1))
        progressed = max(progressed, value)
    assert progressed > LOG_KILLS // 4, "the writer hardly ever completed a save; the test proves little"
