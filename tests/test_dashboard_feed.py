"""Tests of the control socket's ``subscribe`` command (the dashboard's feed): a real paper daemon over its
real socket, and the server's bounds on subscribers."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from s1mpled.control import ControlServer, EventQueue, Stream, encode_request, request
from tests.daemon_harness import Daemon, write_config

DEADLINE_S = 30.0


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    d = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    d.wait_trading()
    return d


@asynccontextmanager
async def subscription(path: Path, args: Mapping[str, Any] | None = None) -> AsyncIterator[asyncio.StreamReader]:
    """A subscribed connection (the reply already read and checked)."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=2**24)
    try:
        writer.write(encode_request("subscribe", args))
        await writer.drain()
        reply = json.loads(await reader.readline())
        assert reply["ok"], reply
        assert {"STATUS", "TRADE_EXECUTED", "LEDGER_STATE_CHANGED", "RECONCILIATION_COMPLETED"} <= set(
            reply["result"]["events"]
        )
        yield reader
    finally:
        writer.close()


async def next_event(reader: asyncio.StreamReader, found: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read event lines until one satisfies ``found``; fail at the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            line = await reader.readline()
            assert line.endswith(b"\n"), "the daemon ended the stream"
            doc = json.loads(line, parse_float=Decimal)
            if found(doc):
                return dict(doc)


def test_a_subscriber_gets_a_snapshot_then_fills_and_ledger_changes(daemon: Daemon, tmp_path: Path) -> None:
    """The first line is the whole status document; then the daemon's fills arrive as they happen, each with
    its strategy, and the ledger change it causes carries the strategy's new status -- money as strings."""

    async def watch() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with subscription(tmp_path / "control.sock", {"snapshot_every_s": 1}) as reader:
            first = await next_event(reader, lambda d: True)
            fill = await next_event(reader, lambda d: d["event"] == "TRADE_EXECUTED")
            ledger = await next_event(reader, lambda d: d["event"] == "LEDGER_STATE_CHANGED" and "status" in d)
        return first, fill, ledger

    first, fill, ledger = asyncio.run(watch())
    assert first["event"] == "STATUS" and first["status"]["phase"] == "trading"
    assert {s["name"] for s in first["status"]["strategies"]} == {"dca-btc", "grid-eth"}
    assert fill["strategy"] in ("dca-btc", "grid-eth")
    assert isinstance(fill["fill"]["price"], str) and Decimal(fill["fill"]["price"]) > 0
    assert isinstance(ledger["status"]["capital"], str) and ledger["status"]["name"] == ledger["strategy"]


def test_snapshots_come_at_the_period_asked_for(daemon: Daemon, tmp_path: Path) -> None:
    """``snapshot_every_s`` sets how often the status document comes; a period out of bounds is refused."""

    async def watch() -> list[float]:
        seen: list[float] = []
        async with subscription(tmp_path / "control.sock", {"snapshot_every_s": 0.5}) as reader:
            while len(seen) < 4:
                await next_event(reader, lambda d: d["event"] == "STATUS")
                seen.append(time.monotonic())
        return seen

    seen = asyncio.run(watch())
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(0.3 < g < 2.0 for g in gaps), gaps
    with pytest.raises(Exception, match="snapshot_every_s"):
        asyncio.run(request(tmp_path / "control.sock", "subscribe", {"snapshot_every_s": 0.01}))


def test_a_subscriber_that_does_not_read_is_cut_off_and_status_keeps_answering(daemon: Daemon, tmp_path: Path) -> None:
    """A subscriber that never reads is disconnected (one log line), and meanwhile every ``status`` answers
    at once and the daemon keeps trading: the feed never waits for a subscriber."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(tmp_path / "control.sock"))
    sock.sendall(encode_request("subscribe", {"snapshot_every_s": 0.5}))
    slowest = 0.0
    deadline = time.monotonic() + 90
    cut_off = ("CONTROL_SLOW_SUBSCRIBER", "CONTROL_SLOW_CLIENT")
    while not any(event in daemon.log_tail(400) for event in cut_off):
        assert time.monotonic() < deadline, f"the silent subscriber was never cut off:\n{daemon.log_tail()}"
        started = time.monotonic()
        doc = daemon.status(timeout=5)
        slowest = max(slowest, time.monotonic() - started)
        assert doc["phase"] == "trading"
        time.sleep(0.2)
    assert slowest < 2.0, f"status took {slowest:.2f} s while a subscriber did not read"
    log = daemon.log_path.read_text()
    assert sum(log.count(f"EVENT={event}") for event in cut_off) == 1, log[-3000:]
    sock.settimeout(DEADLINE_S)
    while sock.recv(1 << 20):  # what the kernel still holds for it, then the end: the daemon hung up
        pass
    sock.close()
    daemon.wait_for(lambda d: d["phase"] == "trading")


def test_garbage_around_a_subscription_is_still_answered(daemon: Daemon, tmp_path: Path) -> None:
    """Bad requests get error replies on a subscriber's socket too; what a subscriber sends after subscribing
    is ignored, and its stream goes on."""

    async def scenario() -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control.sock"), limit=2**24)
        try:
            for bad, fragment in ((b"not json\n", "not valid JSON"), (b'{"cmd": "subscribe", "args": []}\n', "args")):
                writer.write(bad)
                await writer.drain()
                reply = json.loads(await reader.readline())
                assert not reply["ok"] and fragment in reply["error"]
            writer.write(encode_request("subscribe", {"snapshot_every_s": "soon"}))
            await writer.drain()
            assert "snapshot_every_s" in json.loads(await reader.readline())["error"]
            writer.write(encode_request("subscribe", {"snapshot_every_s": 0.5}))
            writer.write(b"\xff garbage after the subscription \x00\n" * 1000)
            await writer.drain()
            assert json.loads(await reader.readline())["ok"]
            await next_event(reader, lambda d: d["event"] == "STATUS")
            return await next_event(reader, lambda d: d["event"] == "STATUS")
        finally:
            writer.close()

    assert asyncio.run(scenario())["status"]["phase"] == "trading"
    assert daemon.status()["phase"] == "trading"


# ------------------------------------------------------------------ the server's bounds, on a real socket


def _run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(DEADLINE_S):
            return await coro

    return asyncio.run(bounded())


async def _status(args: Mapping[str, Any]) -> Any:
    return {"state": "running"}


@asynccontextmanager
async def serving(
    path: Path, queues: list[EventQueue], subscribed: asyncio.Event | None = None, **kw: Any
) -> AsyncIterator[ControlServer]:
    """A ControlServer whose ``subscribe`` hands out a fresh queue (kept in ``queues`` for the test to fill)."""

    async def subscribe(args: Mapping[str, Any]) -> Stream:
        queue = EventQueue(int(args.get("capacity", 1000)))
        queues.append(queue)
        if subscribed is not None:
            subscribed.set()
        return Stream({"subscribed": True}, queue)

    server = ControlServer(path, {"status": _status, "subscribe": subscribe}, **kw)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.serve(ready))
        await ready.wait()
        try:
            yield server
        finally:
            task.cancel()


def test_subscriptions_take_at_most_half_the_connections(tmp_path: Path) -> None:
    """With room for four connections, two may subscribe; the third is refused with a reply, and status answers."""
    path = tmp_path / "c.sock"

    async def scenario() -> None:
        queues: list[EventQueue] = []
        async with serving(path, queues, max_clients=4):
            held = []
            for _ in range(2):
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(encode_request("subscribe"))
                assert json.loads(await reader.readline())["ok"]
                held.append(writer)
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(encode_request("subscribe"))
            refused = json.loads(await reader.readline())
            assert not refused["ok"] and "too many subscriptions" in refused["error"]
            assert await request(path, "status") == {"state": "running"}
            queues[0].offer(b'{"event": "X"}\n')
            for w in [*held, writer]:
                w.close()

    _run(scenario())


def test_a_full_queue_cuts_the_subscriber_off_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A subscriber whose queue fills is disconnected at that moment (long before the write deadline), said once."""
    path = tmp_path / "c.sock"

    async def scenario() -> float:
        queues: list[EventQueue] = []
        subscribed = asyncio.Event()
        async with serving(path, queues, subscribed, write_timeout_s=60.0):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(str(path))
            sock.sendall(encode_request("subscribe", {"capacity": 5}))
            await subscribed.wait()
            big = b'{"event": "X", "pad": "' + b"x" * 1_000_000 + b'"}\n'
            started = time.monotonic()
            assert queues[0].offer(big)
            async with asyncio.timeout(DEADLINE_S):  # the server takes it, and is stuck writing it
                while len(queues[0]):  # noqa: ASYNC110 -- a plain length, no event to wait on
                    await asyncio.sleep(0.01)
            offered = 1
            while queues[0].offer(big):  # never waits: the daemon's side of a slow subscriber
                offered += 1
            assert offered == 6  # the one being written, then five queued
            elapsed = time.monotonic() - started
            sock.close()
            await asyncio.sleep(0.05)
            return elapsed

    with caplog.at_level(logging.WARNING, "s1mpled.control"):
        elapsed = _run(scenario())
    assert elapsed < 10.0
    slow = [r for r in caplog.records if getattr(r, "EVENT", "") == "CONTROL_SLOW_SUBSCRIBER"]
    assert len(slow) == 1 and "5 events behind" in slow[0].getMessage()


def test_an_event_queue_never_waits_and_closes_when_full() -> None:
    """offer() takes lines up to the capacity, then closes the queue as overflowed (once) and refuses the rest."""
    calls: list[str] = []
    queue = EventQueue(2)
    queue.on_overflow = lambda: calls.append("cut")
    assert queue.offer(b"a\n") and queue.offer(b"b\n")
    assert not queue.offer(b"c\n") and queue.overflowed and queue.closed
    assert not queue.offer(b"d\n")
    assert calls == ["cut"]
    assert asyncio.run(queue.get(0.0)) is None
