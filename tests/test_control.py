"""Tests of the control socket: protocol, robustness against bad clients, lifecycle of the socket file."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.assembly import strategy_state_name
from s1mpled.config import load_config
from s1mpled.control import ControlServer, Handler, encode_request, parse_request, request
from s1mpled.environments.paper import STATE_NAME as PAPER_STATE
from s1mpled.errors import ControlError, StateError
from s1mpled.operation import Operation
from s1mpled.sd_notify import Notifier
from s1mpled.state.inspect import inspect
from tests.daemon_harness import Daemon, write_config

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


# ------------------------------------------------------------------ limits: clients, idle, writes, logs


async def _connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed this connection (EOF or reset), within the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        try:
            return await reader.read() == b""
        except ConnectionResetError:
            return True


async def _until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():  # noqa: ASYNC110 - server counters and log records, no event to await
            await asyncio.sleep(0.01)


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "s1mpled.control" and getattr(r, "EVENT", None) == event]


def test_connections_beyond_the_limit_close_the_longest_idle_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At max_clients a new connection closes the one idle longest, so status still answers; logged once."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, max_clients=4) as server:
            idle = [await _connect(path) for _ in range(4)]
            await _until(lambda: server.clients == 4, "4 clients")
            extra = [await _connect(path) for _ in range(10)]
            assert await _closed_by_server(idle[0][0])  # the oldest went first
            await assert_healthy(path)  # and an operator still gets in
            assert server.clients == 4
            assert len(_records(caplog, "CONTROL_CROWDED")) == 1
            for _, writer in idle + extra:
                writer.close()

    run(body())
    first, count = (r.getMessage() for r in _records(caplog, "CONTROL_CROWDED"))  # the count: at shutdown
    assert first == "4 control connections are open (the limit): closing the longest idle one for each new one"
    assert count == "10 more idle control connections closed to make room in the last 0 s"


def test_when_every_connection_is_busy_a_newcomer_is_refused_with_a_reply(tmp_path: Path) -> None:
    """If all max_clients connections are running commands, a new client gets "too many" and can retry later."""
    release = asyncio.Event()

    async def slow(args: Mapping[str, Any]) -> Any:
        await release.wait()
        return "done"

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "slow": slow}, max_clients=2):
            busy = [asyncio.create_task(request(path, "slow", timeout_s=DEADLINE_S)) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(ControlError, match=r"too many control connections \(2\)"):
                await request(path, "status", timeout_s=DEADLINE_S)
            release.set()
            assert await asyncio.gather(*busy) == ["done", "done"]
            await assert_healthy(path)

    run(body())


def test_an_idle_or_dribbling_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    """A silent connection, and one sending half a request byte by byte, are closed after idle_timeout_s."""

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, idle_timeout_s=0.3) as server:
            silent_reader, silent = await _connect(path)
            reader, writer = await _connect(path)  # answered once, then idle: the timeout restarts per request
            writer.write(encode_request("status"))
            assert reply_of(await reader.readline())["ok"] is True
            drip_reader, drip = await _connect(path)
            closed = asyncio.create_task(_closed_by_server(drip_reader))
            for byte in b'{"cmd": "status", "args": {}}':  # a byte every 50 ms: 1.5 s for the line
                if closed.done():
                    break
                drip.write(bytes([byte]))
                await asyncio.sleep(0.05)
            assert await closed  # before the line was complete: each byte does not restart the timeout
            assert await _closed_by_server(silent_reader)
            assert await _closed_by_server(reader)
            assert server.clients == 0
            for w in (silent, writer, drip):
                w.close()
            await assert_healthy(path)

    run(body())


def test_a_client_that_does_not_read_its_replies_is_cut_off(tmp_path: Path) -> None:
    """A reply the client does not take within write_timeout_s aborts that connection; the others go on."""

    async def big(args: Mapping[str, Any]) -> Any:
        return "x" * 16_000_000  # far more than the socket buffers hold

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "big": big}, write_timeout_s=0.2) as server:
            _, writer = await _connect(path)
            writer.write(encode_request("big"))  # and never read
            await _until(lambda: server.clients == 1, "the client to connect")
            await _until(lambda: server.clients == 0, "the server to cut the client off")
            await assert_healthy(path)
            writer.transport.abort()

    run(body())


def test_garbage_is_logged_once_then_counted_per_window(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Hundreds of bad lines: each gets its error reply, the log gets one line, then one count per window."""
    lines = [b"{not json\n", b"\xff\xfe\n", b'{"cmd": "launch"}\n', b"[1]\n", b'{"cmd": "status", "args": 3}\n']

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, log_window_s=0.3):
            reader, writer = await _connect(path)
            for _ in range(100):
                writer.write(b"".join(lines))
            replies = [reply_of(await reader.readline()) for _ in range(100 * len(lines))]
            assert not any(r["ok"] for r in replies)
            assert len(_records(caplog, "CONTROL_BAD_REQUEST")) == 1
            await _until(lambda: len(_records(caplog, "CONTROL_BAD_REQUEST")) == 2, "the count after the window")
            await assert_healthy(path)
            writer.close()

    run(body())
    first, count = (r.getMessage() for r in _records(caplog, "CONTROL_BAD_REQUEST"))
    assert first.startswith("bad control request: request is not valid JSON")
    assert count.startswith(f"{100 * len(lines) - 1} more bad or refused control requests in the last 0 s")


def test_a_command_that_refuses_is_an_answer_not_a_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A handler raising ControlError (e.g. "not trading yet") is replied to and logged without a traceback."""

    async def refuse(args: Mapping[str, Any]) -> Any:
        raise ControlError("the operation is not trading yet (phase: reconciling)")

    async def body() -> None:
        path = tmp_path / "ctl.sock"
        async with serving(path, {"status": _status, "halt": refuse}):
            for _ in range(20):
                with pytest.raises(ControlError, match="not trading yet"):
                    await request(path, "halt")

    run(body())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert [r.getMessage() for r in _records(caplog, "CONTROL_BAD_REQUEST")] == [
        "control command halt refused: the operation is not trading yet (phase: reconciling)",
        "19 more bad or refused control requests in the last 0 s",  # at shutdown
    ]


# ------------------------------------------------------------------------------- in the daemon


class _ReadyProbe(Notifier):
    """A notifier that, when READY=1 would go out, checks that the control socket answers."""

    def __init__(self, operation: list[Operation]) -> None:
        super().__init__(env={})
        self._operation = operation
        self.socket_at_ready: bool | None = None

    def ready(self, text: str) -> None:
        path = self._operation[0].config.control_socket
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            self.socket_at_ready = True
        except OSError:
            self.socket_at_ready = False
        finally:
            probe.close()
        self._operation[0].request_stop()


def test_ready_is_sent_only_once_the_control_socket_is_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY=1 promises a working control socket, even when binding it takes longer than recovery."""
    claim = ControlServer._claim_path

    async def slow_claim(self: ControlServer) -> None:
        await asyncio.sleep(0.5)  # e.g. probing a stale socket; paper recovery takes a few ms
        await claim(self)

    monkeypatch.setattr(ControlServer, "_claim_path", slow_claim)
    holder: list[Operation] = []
    probe = _ReadyProbe(holder)
    holder.append(Operation(load_config(write_config(tmp_path)), notifier=probe))
    asyncio.run(asyncio.wait_for(holder[0].run(), 30))
    assert probe.socket_at_ready is True


FD_LIMIT = 512  # the daemon's RLIMIT_NOFILE here: well below the connections the test opens
FLOOD = 1000


def _generations(state: Path, timeout: float = 20) -> dict[str, int]:
    """The generation of each state file the paper daemon writes (waiting for its first save)."""
    names = [PAPER_STATE, strategy_state_name("dca-btc"), strategy_state_name("grid-eth")]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return {name: inspect(state / name).record.generation for name in names}
        except StateError:  # not written yet, or NAME between its two renames (.prev, then the journal)
            assert time.monotonic() < deadline, f"state files missing in {state}: {sorted(os.listdir(state))}"
            time.sleep(0.05)


def _connect_to(path: str, daemon: Daemon) -> socket.socket:
    """A connected client; a full listen backlog (EAGAIN on a unix socket) is retried while the daemon lives."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.connect(path)
            return client
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            daemon.proc.wait(timeout=10)
            raise AssertionError(f"the daemon exited {daemon.proc.returncode}:\n{daemon.log_tail()}") from exc
        except BlockingIOError:
            assert daemon.proc.poll() is None, f"the daemon died:\n{daemon.log_tail()}"
            assert time.monotonic() < deadline, "the daemon stopped accepting connections"
            time.sleep(0.005)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _log_lines(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if text in line]


def test_a_thousand_idle_connections_and_garbage_leave_the_paper_daemon_trading(tmp_path: Path) -> None:
    """1,000 idle control connections, more than the daemon may open files, and a burst of garbage lines:
    the daemon keeps trading and saving, status still answers, and each kind of abuse is logged once."""
    config = write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["strategies"][0]["params"]["quote_per_buy"] = "2"  # DCA keeps buying (and saving) for a minute
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    log = tmp_path / "daemon.log"
    daemon = Daemon(config, log)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, hard))  # before it opens the socket
    daemon.wait_trading()
    sock_path = str(tmp_path / "control.sock")
    state = tmp_path / "state"
    clients: list[socket.socket] = []
    peak = 0
    try:
        before = _generations(state)
        for i in range(FLOOD):
            assert daemon.proc.poll() is None, f"the daemon died after {i} connections:\n{daemon.log_tail()}"
            clients.append(_connect_to(sock_path, daemon))
            if i % 50 == 0:
                peak = max(peak, _open_fds(daemon.proc.pid))
        # Held open, idle: the daemon trades and saves on, and still answers an operator.
        daemon.wait_for(lambda d: d["phase"] == "trading")
        deadline = time.monotonic() + 20
        while not all(g >= before[n] + 5 for n, g in _generations(state).items()):
            assert time.monotonic() < deadline, f"no saves under the flood: {before} -> {_generations(state)}"
            assert daemon.proc.poll() is None, daemon.log_tail()
            peak = max(peak, _open_fds(daemon.proc.pid))
            time.sleep(0.1)
        garbage = [b"{not json\n", b"\xff\xfe\x00\n", b'{"cmd": "launch"}\n', b"[1]\n", b'{"cmd": 7}\n', b"\n"]
        for _ in range(10):
            bad = _connect_to(sock_path, daemon)
            bad.settimeout(10)
            bad.sendall(b"".join(garbage) * 20)
            replies = b""
            while replies.count(b"\n") < 20 * len(garbage):
                chunk = bad.recv(65536)
                assert chunk, "the daemon closed a connection that sent bad lines"
                replies += chunk
            assert all(json.loads(r)["ok"] is False for r in replies.splitlines())
            bad.close()
        status = daemon.status()
        assert status["phase"] == "trading"
        assert daemon.proc.poll() is None
        peak = max(peak, _open_fds(daemon.proc.pid))
        assert len(_log_lines(log, "bad control request:")) == 1, daemon.log_tail()
        assert len(_log_lines(log, "control connections are open (the limit)")) == 1, daemon.log_tail()
    finally:
        for client in clients:
            client.close()
    assert daemon.stop() == 0, daemon.log_tail()
    text = log.read_text(errors="replace")
    assert "Too many open files" not in text and "Traceback" not in text, daemon.log_tail()
    assert peak < FD_LIMIT // 2, f"{peak} descriptors open at the peak"
