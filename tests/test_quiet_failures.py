"""Expected failures say why in one line, never with a traceback at ERROR: a refused WebSocket handshake
(and no "Future exception was never retrieved" from ccxt's futures), a failed ``s1mpled reconcile``, a
bus handler whose save or request fails. A traceback stays the mark of a bug."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s1mpled.bus import EventBus
from s1mpled.control import ControlServer, request
from s1mpled.errors import ControlError, ExchangeUnavailable, LocalStateError, StateError
from s1mpled.events import ScheduledEvent
from tests.daemon_harness import Daemon
from tests.live_harness import Simulator, wait_until, write_live_config


def test_refused_handshakes_and_a_failed_reconcile_leave_no_traceback(tmp_path: Path, sim: Simulator) -> None:
    """Live against the simulator: WebSocket upgrades refused (HTTP 503) during a reconnect, then REST down
    while an operator runs `s1mpled reconcile`: the CLI says why, the daemon logs it in one WARNING line,
    and its log has no traceback and no unretrieved future of ccxt's."""
    log = tmp_path / "daemon.log"
    config = write_live_config(tmp_path, sim)
    daemon = Daemon(config, log)
    daemon.wait_trading(timeout=60)
    sim.inject("ws_refuse", seconds=3)
    sim.inject("ws_drop")
    wait_until(lambda: "503" in log.read_text(), 30, "a refused handshake")
    wait_until(lambda: "reconciliation (reconnect:" in log.read_text(), 60, "the reconnect's reconciliation")
    sim.inject("http_error", path="openOrders", seconds=20)
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "reconcile", "--config", str(config), "--timeout", "60"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert out.returncode != 0 and "reconcile failed" in out.stderr, out.stdout + out.stderr
    wait_until(lambda: "control command reconcile failed" in log.read_text(), 10, "the daemon's line")
    sim.clear()
    assert daemon.stop() == 0, daemon.log_tail()
    text = log.read_text()
    tail = "\n".join(text.splitlines()[-200:])
    assert "never retrieved" not in text, tail
    assert "Traceback" not in text, tail
    [line] = [x for x in text.splitlines() if "control command reconcile failed" in x]
    assert " WARNING s1mpled.control: control command reconcile failed: " in line and "503" in line, line


# ------------------------------------------------------------------------------ the same, unit by unit


async def _serve(handler: Any, path: Path) -> str:
    server = ControlServer(path, {"reconcile": handler})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.serve())
        try:
            async with asyncio.timeout(5):
                while not await asyncio.to_thread(path.exists):  # noqa: ASYNC110 - it appears when it listens
                    await asyncio.sleep(0.01)
            try:
                await request(path, "reconcile", timeout_s=5)
            except ControlError as exc:
                return str(exc)
            return "no error"
        finally:
            task.cancel()


@pytest.mark.parametrize(
    ("exc", "level", "traceback"),
    [
        (ExchangeUnavailable("fetch open orders: HTTP 503"), logging.WARNING, False),
        (LocalStateError("an invariant broke"), logging.ERROR, True),
        (KeyError("bug"), logging.ERROR, True),
    ],
)
def test_a_failed_control_command_is_one_warning_line_unless_it_is_a_bug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, exc: Exception, level: int, traceback: bool
) -> None:
    """An S1mpledError from a command is an answer (WARNING, one line); a bug keeps its traceback at ERROR."""

    async def failing(args: Any) -> Any:
        raise exc

    with caplog.at_level(logging.DEBUG, "s1mpled.control"):
        answer = asyncio.run(_serve(failing, tmp_path / "c.sock"))
    assert "reconcile failed" in answer
    [record] = [r for r in caplog.records if getattr(r, "EVENT", None) == "CONTROL_HANDLER_FAILED"]
    assert (record.levelno, record.exc_info is not None) == (level, traceback)


@pytest.mark.parametrize(
    ("exc", "traceback"), [(StateError("/x/s.state.json", "No space left"), False), (LocalStateError("bug"), True)]
)
def test_a_bus_handler_that_fails_expectedly_logs_one_line(
    caplog: pytest.LogCaptureFixture, exc: Exception, traceback: bool
) -> None:
    """A handler's StateError or ExchangeError is logged with its reason and no traceback; a bug with one."""

    async def main() -> None:
        bus = EventBus()

        async def handler(event: ScheduledEvent) -> None:
            raise exc

        bus.subscribe(ScheduledEvent, handler, name="h")
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(bus.run())
            await bus.publish(ScheduledEvent("tick", 0))
            await bus.drain()
            runner.cancel()

    with caplog.at_level(logging.ERROR, "s1mpled.bus"):
        asyncio.run(main())
    [record] = caplog.records
    assert str(exc) in record.getMessage() or traceback
    assert (record.exc_info is not None) == traceback
