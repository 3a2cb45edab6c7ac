"""Tests of the control socket: protocol, robustness against bad clients, lifecycle of the socket file."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.control import ControlServer, Handler, encode_request, parse_request, request
from s1mpled.errors import ControlError

T = TypeVar("T")
DEADLINE_S = 5.0


async def _status(args: Mapping[str, Any]) -> Any:
    return {"state": "running", "capital": Decimal("1000.50"), "args": dict(args)}


async def _boom(args: Mapping[str, Any]) -> Any:
    raise RuntimeError("the ledger exploded")


def run(coro: Awaitable[T]) -> T:
    """Run a test coroutine with an overall deadline, so a hang fails instead of blocking the suite."""

    async def bounded() -> T:
        async with asyncio.timeout(DEADLINE_S * 2):
            return await coro

    return asyncio.run(bounded())


@asynccontextmanager
async def serving(path: Path, handlers: Mapping[str, Handler] | None = None, **kw: Any) -> AsyncIterator[ControlServer]:
    """Run a ControlServer in a task for the duration of the block, then cancel it and wait for it."""
    server = ControlServer(path, handlers if handlers is not None else {"status": _status, "boom": _boom}, **kw)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve(ready))
    try:
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.wait({task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise what serve() raised
        yield server
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def exchange(path: Path, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read one reply line."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            return await reader.readline()
    finally:
        writer.close()


async def assert_healthy(path: Path) -> None:
    """A good status request on a new connection is answered."""
    result = await request(path, "status", timeout_s=DEADLINE_S)
    assert result["state"] == "running"


def reply_of(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def test_status_round_trip_renders_decimals_as_strings(tmp_path: Path) -> None:
    """A status request returns the handler's result with Decimals as exact strings."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            result = await request(path, "status", {"verbose": True})
        assert result == {"state": "running", "capital": "1000.50", "args": {"verbose": True}}

    run(body())


def test_request_args_with_fractions_arrive_as_decimal(tmp_path: Path) -> None:
    """JSON numbers with a fraction in a request reach the handler as Decimal, never float."""
    seen: list[Any] = []

    async def record(args: Mapping[str, Any]) -> Any:
        seen.append(args["amount"])
        return None

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"buy": record}):
            await exchange(path, b'{"cmd": "buy", "args": {"amount": 0.1}}\n')

    run(body())
    assert seen == [Decimal("0.1")]


def test_socket_mode_is_0660(tmp_path: Path) -> None:
    """The bound socket file has mode 0660, whatever the umask."""

    async def body() -> int:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            st_mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(st_mode)
        return stat.S_IMODE(st_mode)

    assert run(body()) == 0o660


def test_several_requests_on_one_connection(tmp_path: Path) -> None:
    """One connection may send several requests and gets one reply line per request, in order."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "status"}\n{"cmd": "nope"}\n{"cmd": "status", "args": {"n": 3}}\n')
            replies = [reply_of(await reader.readline()) for _ in range(3)]
            writer.close()
        assert replies[0]["ok"] is True
        assert replies[1]["ok"] is False
        assert replies[2]["result"]["args"] == {"n": 3}

    run(body())


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"{not json\n", "not valid JSON"),
        (b"\n", "not valid JSON"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b'"status"\n', "must be a JSON object"),
        (b'{"args": {}}\n', '"cmd"'),
        (b'{"cmd": 7}\n', '"cmd"'),
        (b'{"cmd": "status", "args": [1]}\n', '"args" must be a JSON object'),
        (b'{"cmd": "status", "args": null}\n', '"args" must be a JSON object'),
        (b'{"cmd": "status", "args": {"x": NaN}}\n', "not valid JSON"),
        (b'{"cmd": "st\xffatus"}\n', "not valid UTF-8"),
        (b"[" * 5000 + b"\n", "not valid JSON"),
    ],
)
def test_bad_request_gets_error_reply_and_server_survives(tmp_path: Path, line: bytes, fragment: str) -> None:
    """Each kind of malformed request gets an error reply naming the problem; the server keeps serving."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            reply = reply_of(await exchange(path, line))
            await assert_healthy(path)
        assert reply["ok"] is False
        assert fragment in reply["error"]

    run(body())


def test_unknown_command_lists_known_commands(tmp_path: Path) -> None:
    """An unknown command is refused with a message that lists the known commands."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            with pytest.raises(ControlError, match=r"unknown command 'launch'.*boom, status"):
                await request(path, "launch")
            await assert_healthy(path)

    run(body())


def test_overlong_line_gets_error_and_connection_closed(tmp_path: Path) -> None:
    """A line longer than max_request_bytes gets an error reply and the connection is closed, unbuffered."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, max_request_bytes=1024):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "status", "args": {"pad": "' + b"x" * 1_000_000)  # never ends the line
            reply = reply_of(await reader.readline())
            try:
                rest = await reader.read()
            except ConnectionResetError:  # the server closed with our unread bytes in its queue
                rest = b""
            writer.transport.abort()
            await assert_healthy(path)
        assert reply == {"ok": False, "error": "request longer than 1024 bytes"}
        assert rest == b""

    run(body())


def test_line_of_exactly_max_bytes_is_accepted(tmp_path: Path) -> None:
    """A request line of exactly max_request_bytes (newline excluded) is still served."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, max_request_bytes=256):
            head = b'{"cmd": "status", "args": {"pad": "'
            tail = b'"}}'
            line = head + b"x" * (256 - len(head) - len(tail)) + tail
            assert len(line) == 256
            reply = reply_of(await exchange(path, line + b"\n"))
        assert reply["ok"] is True

    run(body())


def test_silent_client_does_not_block_others(tmp_path: Path) -> None:
    """Clients that connect and send nothing, or half a line, do not delay other clients."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            _, silent = await asyncio.open_unix_connection(str(path))
            _, half = await asyncio.open_unix_connection(str(path))
            half.write(b'{"cmd": "sta')
            await half.drain()
            await assert_healthy(path)
            silent.close()
            half.close()

    run(body())


def test_client_disconnecting_mid_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A client leaving with half a line, or before its slow handler answers, harms nothing and logs no error."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(args: Mapping[str, Any]) -> Any:
        started.set()
        await release.wait()
        return "done"

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "slow": slow}):
            _, partial = await asyncio.open_unix_connection(str(path))
            partial.write(b'{"cmd": "status", "ar')
            await partial.drain()
            partial.close()
            _, leaver = await asyncio.open_unix_connection(str(path))
            leaver.write(encode_request("slow"))
            await leaver.drain()
            await started.wait()
            leaver.close()
            await leaver.wait_closed()
            release.set()
            await assert_healthy(path)
            await assert_healthy(path)

    run(body())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_handler_exception_becomes_error_reply_and_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A handler that raises yields an error reply with its message, an ERROR traceback, and service goes on."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            with pytest.raises(ControlError, match="the ledger exploded"):
                await request(path, "boom")
            await assert_healthy(path)

    run(body())
    errors = [r for r in caplog.records if r.name == "s1mpled.control" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)


def test_handler_result_that_is_not_json_becomes_error_reply(tmp_path: Path) -> None:
    """A handler returning something JSON cannot carry gets an error reply instead of a broken line."""

    async def odd(args: Mapping[str, Any]) -> Any:
        return {"when": object()}

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "odd": odd}):
            with pytest.raises(ControlError, match="not JSON"):
                await request(path, "odd")
            await assert_healthy(path)

    run(body())


def test_handler_timeout_becomes_error_reply(tmp_path: Path) -> None:
    """A handler running longer than request_timeout_s is abandoned with an error reply."""
    cancelled = asyncio.Event()

    async def hang(args: Mapping[str, Any]) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "hang": hang}, request_timeout_s=0.05):
            with pytest.raises(ControlError, match=r"did not finish within 0\.05s"):
                await request(path, "hang")
            assert cancelled.is_set()
            await assert_healthy(path)

    run(body())


def test_requests_serial_per_connection_concurrent_across(tmp_path: Path) -> None:
    """Requests on one connection run one after another, while another connection is served meanwhile."""
    trace: list[str] = []
    release = asyncio.Event()

    async def slow(args: Mapping[str, Any]) -> Any:
        trace.append(f"start {args['n']}")
        await release.wait()
        trace.append(f"end {args['n']}")
        return args["n"]

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "slow": slow}):
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(encode_request("slow", {"n": 1}) + encode_request("slow", {"n": 2}))
            await writer.drain()
            await assert_healthy(path)  # answered although connection 1 is blocked in a handler
            assert trace == ["start 1"]
            release.set()
            results = [reply_of(await reader.readline())["result"] for _ in range(2)]
            writer.close()
        assert results == [1, 2]
        assert trace == ["start 1", "end 1", "start 2", "end 2"]

    run(body())


def _stale_socket(path: Path) -> None:
    """Leave a socket file nobody listens on, as a crashed daemon would."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    """A socket file left by a crashed daemon is removed and the server binds anew."""
    path = tmp_path / "ctl.sock"
    _stale_socket(path)

    async def body() -> None:
        async with serving(path):
            await assert_healthy(path)

    run(body())


def test_live_server_on_path_is_not_replaced(tmp_path: Path) -> None:
    """A second server refuses to bind while a live server answers on the socket, leaving the first intact."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            with pytest.raises(ControlError, match="already answering"):
                await ControlServer(path, {"status": _status}).serve()
            await assert_healthy(path)

    run(body())


def test_regular_file_on_path_is_not_replaced(tmp_path: Path) -> None:
    """A path occupied by something that is not a socket is left alone and serving is refused."""
    path = tmp_path / "ctl.sock"
    path.write_text("precious")

    async def body() -> None:
        with pytest.raises(ControlError, match="not a socket"):
            await ControlServer(path, {"status": _status}).serve()

    run(body())
    assert path.read_text() == "precious"


def test_shutdown_closes_clients_and_removes_socket(tmp_path: Path) -> None:
    """Cancelling serve() closes open connections, leaves no task behind and unlinks the socket file."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path):
            reader, writer = await asyncio.open_unix_connection(str(path))
            await assert_healthy(path)
        assert not path.exists()
        async with asyncio.timeout(DEADLINE_S):
            assert await reader.read() == b""  # the server closed our idle connection
        writer.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(body())


def test_request_without_daemon_says_it_does_not_run(tmp_path: Path) -> None:
    """The client reports a missing socket or a refused connection as 'daemon does not seem to run' with the path."""
    missing = tmp_path / "missing.sock"
    stale = tmp_path / "stale.sock"
    _stale_socket(stale)
    for path in (missing, stale):
        with pytest.raises(ControlError, match="does not seem to run") as info:
            run(request(path, "status"))
        assert str(path) in str(info.value)


def test_request_times_out_on_slow_daemon(tmp_path: Path) -> None:
    """The client gives up after timeout_s with a ControlError naming the socket."""
    release = asyncio.Event()

    async def slow(args: Mapping[str, Any]) -> Any:
        await release.wait()

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"slow": slow}):
            with pytest.raises(ControlError, match="no answer"):
                await request(path, "slow", timeout_s=0.05)
            release.set()

    run(body())


def test_request_reports_server_closing_without_answer(tmp_path: Path) -> None:
    """A server that closes the connection without a reply line gives a ControlError, not a crash."""

    async def body() -> None:
        path = tmp_path / "mute.sock"

        def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_unix_server(hang_up, path=str(path))
        async with server:
            with pytest.raises(ControlError, match="without answering"):
                await request(path, "status")

    run(body())


KNOWN = frozenset({"status", "halt"})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.binary(max_size=200))
def test_parse_request_only_raises_control_error(line: bytes) -> None:
    """Arbitrary bytes either parse into a known command with object args or raise ControlError."""
    try:
        req = parse_request(line, KNOWN)
    except ControlError:
        return
    assert req.cmd in KNOWN
    assert isinstance(req.args, dict)


@given(st.sampled_from(sorted(KNOWN)), st.dictionaries(st.text(), json_values, max_size=4))
def test_encoded_request_parses_back(cmd: str, args: dict[str, Any]) -> None:
    """What the client encodes, the server parses back to the same command and arguments."""
    req = parse_request(encode_request(cmd, args), KNOWN)
    assert (req.cmd, dict(req.args)) == (cmd, args)
