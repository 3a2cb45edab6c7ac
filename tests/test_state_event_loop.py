"""No fsync on the event loop, start-up included: recovery's and the identity file's fsyncs run on the writer thread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s1mpled.config import load_config
from s1mpled.operation import BREAKER_STATE_NAME, IDENTITY_STATE_NAME, Operation
from s1mpled.state import codec
from s1mpled.state.store import StateDirectory

NAME = "s.state.json"

CONFIG = """\
operation: loop-test
mode: paper
state_dir: state
control_socket: ctl.sock
paper:
  balances: {USDT: "5000"}
  markets:
    BTC/USDT: {start_price: "50000", volatility: "0.002", liquidity: "0.05", price_step: "0.01", amount_step: "0.00001"}
strategies:
  - {name: dca-btc, class: "s1mpled.strategies.dca:DCA", symbol: BTC/USDT, capital: "1000",
     params: {quote_per_buy: "25", every_event: strategy_tick}}
"""
SCHEDULE = "events:\n  five_minute_reconciliation_tick: {every: 5m}\n  strategy_tick: {every: 5s}\n"


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Every os.fsync call, as 'was it on an event-loop thread?'."""
    calls: list[bool] = []
    real: Callable[[int], None] = os.fsync

    def recording(fd: int) -> None:
        calls.append(_on_event_loop())
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    yield calls


def test_load_on_the_event_loop_queues_its_directory_fsync_on_the_writer_thread(
    tmp_path: Path, fsyncs: list[bool]
) -> None:
    """Finishing an interrupted save from a coroutine fsyncs off the loop, before the next save, and is durable."""
    with StateDirectory.open(tmp_path) as sd:
        f = sd.file(NAME)
        f.load()
        f.save_sync({"v": 1})
    (tmp_path / f"{NAME}.journal").write_bytes(codec.encode({"v": 2}, 2))
    fsyncs.clear()

    async def start() -> None:
        with StateDirectory.open(tmp_path) as sd:
            f = sd.file(NAME)
            assert f.load().state == {"v": 2}  # the journal was promoted: renames, then a directory fsync
            assert await f.save({"v": 3}) == 3

    asyncio.run(start())
    assert fsyncs and not any(fsyncs), fsyncs  # recovery's fsync and the save's three: none on the loop
    assert len(fsyncs) == 3
    assert codec.decode((tmp_path / NAME).read_bytes()).state == {"v": 3}
    assert codec.decode((tmp_path / f"{NAME}.prev").read_bytes()).state == {"v": 2}


def test_load_off_the_loop_still_fsyncs_before_returning(tmp_path: Path, fsyncs: list[bool]) -> None:
    """Outside an event loop (CLI, tools) load() keeps its promise: the recovery is durable when it returns."""
    (tmp_path / f"{NAME}.journal").write_bytes(codec.encode({"v": 1}, 1))
    with StateDirectory.open(tmp_path) as sd:
        sd.file(NAME).load()
        assert fsyncs == [False]


def test_start_up_never_fsyncs_on_the_event_loop(tmp_path: Path, fsyncs: list[bool]) -> None:
    """Recovery step A in paper mode -- a first start, a restart finishing interrupted saves -- fsyncs off the loop."""
    (tmp_path / "s1mpled.yaml").write_text(CONFIG)
    (tmp_path / "schedule.yaml").write_text(SCHEDULE)
    config = load_config(tmp_path / "s1mpled.yaml", {"HOME": str(tmp_path)})

    async def step_a() -> None:
        with StateDirectory.open(config.state_dir) as sd:
            op = Operation(config)
            components = await op._step_a(sd)
            assert components is not None
            await components.env.close()

    asyncio.run(step_a())  # a first start: the identity file and the paper exchange are written
    assert fsyncs and not any(fsyncs), f"{fsyncs.count(True)} of {len(fsyncs)} fsyncs ran on the event loop"
    state = config.state_dir
    for name in (IDENTITY_STATE_NAME, BREAKER_STATE_NAME):  # a crash left journals to finish
        record = codec.decode((state / name).read_bytes()) if (state / name).exists() else None
        if record is not None:
            (state / f"{name}.journal").write_bytes(codec.encode(record.state, record.generation + 1))
    if not (state / BREAKER_STATE_NAME).exists():
        breaker = {
            "state": "closed",
            "reason": "",
            "manual": False,
            "opened_ms": 0,
            "stable_since_ms": None,
            "reconciled_after_stable": False,
        }
        (state / f"{BREAKER_STATE_NAME}.journal").write_bytes(codec.encode(breaker, 1))
    fsyncs.clear()
    asyncio.run(step_a())
    assert fsyncs and not any(fsyncs), f"{fsyncs.count(True)} of {len(fsyncs)} fsyncs ran on the event loop"
    assert not list(state.glob("*.journal"))


def test_a_save_already_queued_does_not_wait_for_a_later_loads_fsync(tmp_path: Path) -> None:
    """A save handed to the writer before another file's load queues its fsync completes (no deadlock)."""
    (tmp_path / "b.state.json.journal").write_bytes(codec.encode({"b": 1}, 1))

    async def scenario() -> None:
        with StateDirectory.open(tmp_path) as sd:
            a, b = sd.file("a.state.json"), sd.file("b.state.json")
            a.load()
            first = asyncio.create_task(a.save({"a": 1}))
            await asyncio.sleep(0)  # let it reach the writer thread
            assert b.load().state == {"b": 1}  # queues a directory fsync behind a's write
            async with asyncio.timeout(10):
                assert await first == 1
                assert await b.save({"b": 2}) == 2

    asyncio.run(scenario())
    assert codec.decode((tmp_path / "b.state.json").read_bytes()).state == {"b": 2}
