"""A full disk and a failing disk, for real (tests/disks.py): the StrategyWorker, then the paper daemon as a process.

Disk full (ENOSPC) is survived: one CRITICAL line, no order whose intent cannot be saved, saves retried
until space returns, trading resumes by itself. A failed fsync is fail-stop: exit 70 with the reason,
and the next start recovers from what is on disk.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s1mpled.orders import OrderState
from s1mpled.state import StateDirectory
from tests.daemon_harness import (
    Daemon,
    assert_ledgers_equal_exchange,
    assert_no_duplicate_orders,
    assert_no_phantoms,
    frozen_config,
    read_books,
    write_config,
)
from tests.disks import FailingDisk, fill, tmpfs
from tests.test_strategy_worker import Scripted, Setup, buy, cid, run

STATE_FILES = "*.state.json"


# ------------------------------------------------------------------------ the StrategyWorker on a full disk


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with tmpfs(tmp_path / "state", "256k") as mnt, StateDirectory.open(mnt) as d:
        d.retry_first_s, d.retry_max_s = 0.01, 0.05
        yield d


async def _until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(4):
            while not predicate():  # noqa: ASYNC110 - the store's own flags, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_an_order_whose_intent_cannot_be_saved_is_never_sent(small_state_dir: StateDirectory) -> None:
    """ENOSPC on the intent save: create_order is not called, the order is NOT_PLACED (on disk once space
    returns) and the strategy is told; while the disk is full the strategy does not decide; afterwards it
    trades again by itself."""
    s = Setup(small_state_dir, Scripted())
    mnt = small_state_dir.path

    async def main() -> None:
        await s.start()
        filler = fill(mnt)
        s.strategy.plan = [buy(price="90", tag="grid:1")]
        tick = asyncio.create_task(s.tick())  # decides, and cannot record the intent
        await _until(lambda: s.worker.disk_full, "the disk-full episode")
        assert not s.env.sent, "an order left without a durable intent"
        order = s.worker.ledger.order(cid(1))
        assert order is not None and order.state is OrderState.NOT_PLACED
        ticks = s.strategy.ticks
        s.strategy.plan = [buy(price="91", tag="grid:2")]
        await s.tick()  # while full: no decision at all
        assert s.strategy.ticks == ticks and not s.env.sent
        filler.unlink()
        async with asyncio.timeout(4):
            await tick  # the "not placed" state was written once space returned
        assert not s.worker.disk_full
        await s.tick()  # trading resumes: the closed notification, then the waiting signal
        assert (cid(1), "grid:1", "not_placed") in s.strategy.closed
        assert list(s.env.sent) == [cid(2)]

    run(main)
    written = s.disk_order(cid(1))
    assert written is not None and written["state"] == "not_placed"
    assert s.disk_order(cid(2)) is not None and s.env.exchange.order(cid(2)) is not None


# ------------------------------------------------------------------------------- the paper daemon, for real


def _verify_files(state: Path) -> None:
    """`s1mpled state verify` accepts every state file (what an operator runs after the incident)."""
    files = sorted(state.glob(STATE_FILES))
    assert files, f"no state files in {state}"
    for path in files:
        out = subprocess.run(
            [sys.executable, "-m", "s1mpled", "state", "verify", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0 and "OK generation" in out.stdout, (path, out.stdout, out.stderr)


def _verify_books_after_restart(tmp_path: Path, log: Path) -> None:
    """Frozen restart: recovery from the files on disk, a reconciliation, a clean stop; books == exchange."""
    daemon = Daemon(frozen_config(tmp_path), log)
    daemon.wait_trading()
    daemon.reconcile()
    assert daemon.stop() == 0, daemon.log_tail()
    books = read_books(tmp_path / "state")
    assert books is not None
    assert_ledgers_equal_exchange(books)
    assert_no_duplicate_orders(books)


def _disk_critical(text: str) -> list[str]:
    """CRITICAL lines about the disk (reconciliation may log its own CRITICAL corrections meanwhile)."""
    return [line for line in text.splitlines() if " CRITICAL " in line and ("disk" in line or "DISK" in line)]


def _placed(text: str) -> int:
    return text.count("[EVENT=ORDER_PLACED")


def _holds(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """``predicate`` stays true for ``seconds`` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.1)


def test_paper_daemon_survives_a_full_disk_and_resumes_trading_by_itself(tmp_path: Path) -> None:
    """State on a 2 MiB tmpfs, filled up while trading: one CRITICAL line (the alert), no order while full,
    `status` says DISK FULL; space freed: the waiting saves land, trading resumes, every file verifies
    and the books equal the exchange."""
    log = tmp_path / "daemon.log"
    with tmpfs(tmp_path / "state", "2m") as state:
        daemon = Daemon(write_config(tmp_path, strategy_tick="400ms"), log)
        daemon.wait_trading()
        daemon.wait_for(lambda d: sum(len(s["open_orders"]) for s in d["strategies"]) > 0, timeout=30)
        filler = fill(state)
        daemon.wait_for(lambda d: d.get("disk_full") is True, timeout=30)
        text = log.read_text()
        lines = _disk_critical(text)
        assert len(lines) == 1 and "ALERT: disk full: cannot save" in lines[0], lines
        assert "EVENT=STATE_DISK_FULL" in lines[0] and "No space left on device" in lines[0]
        assert "Traceback" not in text, daemon.log_tail()
        placed = _placed(log.read_text())
        _holds(lambda: _placed(log.read_text()) == placed, 3, "an order was placed while the disk was full")
        out = subprocess.run(
            [sys.executable, "-m", "s1mpled", "status", "--config", str(tmp_path / "s1mpled.yaml")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0 and "DISK FULL: no new orders" in out.stdout, out.stdout + out.stderr
        filler.unlink()
        daemon.wait_for(lambda d: d.get("disk_full") is False, timeout=30)
        after = log.read_text().index("disk space is back")
        deadline = time.monotonic() + 30
        while _placed(log.read_text()[after:]) == 0:  # trading resumed by itself
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.1)
        assert daemon.stop() == 0, daemon.log_tail()
        assert len(_disk_critical(log.read_text())) == 1, daemon.log_tail()  # once per episode, not per retry
        assert not list(state.glob("*.journal")), sorted(p.name for p in state.iterdir())
        _verify_files(state)
        assert_no_phantoms(read_books(state))
        _verify_books_after_restart(tmp_path, log)


def test_sigterm_on_a_full_disk_stops_within_the_shutdown_timeout_and_says_why(tmp_path: Path) -> None:
    """A stop while states wait for space: exit 75 after shutdown_timeout with one CRITICAL line saying so;
    what was acknowledged is on disk, and the next start (space freed) reconciles the rest."""
    log = tmp_path / "daemon.log"
    with tmpfs(tmp_path / "state", "2m") as state:
        daemon = Daemon(write_config(tmp_path, strategy_tick="400ms", shutdown_timeout="2s"), log)
        daemon.wait_trading()
        daemon.wait_for(lambda d: sum(len(s["open_orders"]) for s in d["strategies"]) > 0, timeout=30)
        filler = fill(state)
        daemon.wait_for(lambda d: d.get("disk_full") is True, timeout=30)
        assert daemon.stop(timeout=30) == 75
        [line] = [x for x in log.read_text().splitlines() if "s1mpled stopped:" in x]
        assert " CRITICAL " in line and "with state still waiting for space (the disk is full)" in line, line
        assert "Traceback" not in log.read_text()
        filler.unlink()
        _verify_files(state)
        _verify_books_after_restart(tmp_path, log)


def test_paper_daemon_stops_on_a_failed_fsync_and_recovers_from_disk(tmp_path: Path) -> None:
    """The state's device fails writes (a real fsync error): the daemon exits 70 within seconds with one
    CRITICAL line saying why; once repaired, the next start recovers from the files on disk."""
    log = tmp_path / "daemon.log"
    with FailingDisk(tmp_path / "disk") as disk:
        (tmp_path / "state").symlink_to(disk.mountpoint)
        daemon = Daemon(write_config(tmp_path, strategy_tick="400ms"), log)
        daemon.wait_trading()
        daemon.wait_for(lambda d: sum(len(s["open_orders"]) for s in d["strategies"]) > 0, timeout=30)
        disk.break_writes()
        code = daemon.proc.wait(timeout=60)
        text = log.read_text()
        assert code == 70, daemon.log_tail()
        stopped = [line for line in text.splitlines() if "s1mpled stopped:" in line]
        assert len(stopped) == 1 and " CRITICAL " in stopped[0], daemon.log_tail()
        assert re.search(r"fsync failed: .*\(errno E[A-Z]+\).*fail-stop.*\(exit 70, systemd restarts it", stopped[0])
        assert "Traceback" not in text, daemon.log_tail()
        disk.repair()
        _verify_files(disk.mountpoint)
        _verify_books_after_restart(tmp_path, log)
