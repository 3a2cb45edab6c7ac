"""The control socket: how ``s1mpled status / halt / resume / reconcile`` talk to the running daemon.

Why a unix socket with JSON lines: access is governed by file permissions (mode 0660, the socket's
group is the operators' group), there is no port to secure, and any client -- the CLI, ``socat``,
a monitoring script -- can speak it. One request is one JSON object on one line,
``{"cmd": "status", "args": {...}}``; the answer is one line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Decimals in results are sent as strings (exact, never float);
JSON numbers with a fraction in requests are read as Decimal for the same reason.

The server never trusts a client: a malformed request gets an error reply, an over-long line gets
an error reply and the connection is closed (nothing is buffered beyond ``max_request_bytes``), a
handler that raises or runs too long gets an error reply, and none of it disturbs other
connections. Requests on one connection run one after another; connections run concurrently,
each client task owned by the server's TaskGroup.

Nor can clients exhaust the daemon (a daemon out of file descriptors cannot save its state):

* at most ``max_clients`` connections are open at once. A new one beyond that closes the connection
  that has waited longest for a request (so a flood of idle connections never locks the operator
  out); if every connection is busy in a command, the newcomer gets an error reply and is closed;
* a connection that sends no complete request line within ``idle_timeout_s`` (connected and silent,
  or dribbling a line byte by byte) is closed;
* a client that does not take its reply within ``write_timeout_s`` is cut off;
* what any client can provoke at will (bad requests, turned-away connections) is logged once, then
  at most once per ``log_window_s`` as a count -- never one line per request.

A command may answer with a :class:`Stream` (``subscribe``): after its reply line the connection stays
open and carries one JSON object per line -- whatever the daemon puts in the stream's
:class:`EventQueue`, and every ``every_s`` the line its ``tick`` makes (a status snapshot). The
daemon never waits for a subscriber: the queue is bounded and filled without waiting; a subscriber
that falls behind by a full queue, or does not read within ``write_timeout_s``, is cut off (logged
once per window). Subscriptions count against ``max_clients`` and take at most half of it, so
``status`` always finds a slot.

Parsing and encoding are pure functions (:func:`parse_request`, :func:`encode_reply`); the rest
is the asyncio adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from s1mpled.errors import ControlError, LocalStateError, S1mpledError

__all__ = [
    "ControlServer",
    "EventQueue",
    "Handler",
    "Request",
    "Stream",
    "decode_reply",
    "encode_event",
    "encode_reply",
    "encode_request",
    "parse_request",
    "request",
]

log = logging.getLogger("s1mpled.control")

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]

_CLIENT_REPLY_LIMIT = 64 * 1024 * 1024  # a status of many strategies may be large; the daemon is trusted
_PROBE_TIMEOUT_S = 2.0  # how long bind waits for an existing socket's owner to accept
_CLOSE_TIMEOUT_S = 1.0  # how long closing a connection may wait for the peer to take our last bytes
_TURN_AWAY_S = 1.0  # how long a turned-away client has to send its request and read the refusal
# The listen backlog, which is also how many connections asyncio accepts in one go before any of them
# is served (or closed): a flood holds at most about three such batches of descriptors in flight.
_BACKLOG = 32
MAX_CLIENTS = 64  # open control connections at once (file descriptors: the daemon's LimitNOFILE is far above)
IDLE_TIMEOUT_S = 30.0  # a connection without a complete request line for this long is closed
WRITE_TIMEOUT_S = 10.0  # a client that does not read its reply for this long is cut off
LOG_WINDOW_S = 60.0  # what clients can provoke at will is logged at most once per window (then as a count)
STREAM_QUEUE = 1000  # event lines a subscriber may fall behind by before it is cut off


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed control request."""

    cmd: str
    args: Mapping[str, Any]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_request(line: bytes, known: frozenset[str] | set[str]) -> Request:
    """Parse one request line (without or with its newline); ControlError says what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlError("request is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ControlError(f"request is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ControlError(f"request must be a JSON object, not {type(value).__name__}")
    cmd = value.get("cmd")
    if not isinstance(cmd, str):
        raise ControlError('request needs a string "cmd"')
    if cmd not in known:
        raise ControlError(f"unknown command {cmd!r}; known commands: {', '.join(sorted(known))}")
    args = value.get("args", {})
    if not isinstance(args, dict):
        raise ControlError(f'"args" must be a JSON object, not {type(args).__name__}')
    return Request(cmd, args)


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_reply(*, result: Any = None, error: str | None = None) -> bytes:
    """One reply line: the error if there is one, else the result (Decimal → string); TypeError if not JSON-able."""
    body = {"ok": False, "error": error} if error is not None else {"ok": True, "result": result}
    return json.dumps(body, default=_json_default, allow_nan=False).encode("ascii") + b"\n"


def encode_event(doc: Mapping[str, Any]) -> bytes:
    """One line of a stream (Decimal → string, like replies); TypeError/ValueError if not JSON-able."""
    return json.dumps(doc, default=_json_default, allow_nan=False).encode("ascii") + b"\n"


def encode_request(cmd: str, args: Mapping[str, Any] | None = None) -> bytes:
    """One request line as the client sends it."""
    return json.dumps({"cmd": cmd, "args": dict(args or {})}, default=_json_default, allow_nan=False).encode() + b"\n"


def decode_reply(line: bytes) -> Any:
    """The result of a reply line; ControlError with the server's message, or if the line is garbage."""
    try:
        reply = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ControlError(f"the daemon sent an unreadable reply: {line[:200]!r}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"the daemon sent a malformed reply: {line[:200]!r}")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error", "unknown error")))
    return reply.get("result")


class _Quieted:
    """A warning any client can provoke at will: logged the first time, then at most once per window,
    as a count of what happened meanwhile (so a flood costs one line a minute, not one per request)."""

    def __init__(self, event: str, window_s: float) -> None:
        self.event, self.window_s = event, window_s
        self._suppressed = 0
        self._first = self._last = self._summary = ""
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, message: str, summary: str) -> None:
        """Log ``message`` now, or count it; ``summary`` says what a count means ("bad control requests")."""
        if self._timer is None:
            log.warning("%s", message, extra={"EVENT": self.event})
            self._first = message
            self._open_window()
        else:
            self._suppressed += 1
            self._last, self._summary = message, summary

    def _open_window(self) -> None:
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        self._timer = loop.call_later(self.window_s, self._flush)

    def _flush(self) -> None:
        """The window is over: say how many came meanwhile and open a new window, or close it if none did."""
        self._timer = None
        if self._say_count():
            self._open_window()

    def _say_count(self) -> bool:
        if not self._suppressed:
            return False
        elapsed = asyncio.get_running_loop().time() - self._since
        last = f" (the last: {self._last})" if self._last != self._first else ""
        log.warning(
            "%d more %s in the last %.0f s%s", self._suppressed, self._summary, elapsed, last,
            extra={"EVENT": self.event},
        )  # fmt: skip
        self._suppressed = 0
        return True

    def close(self) -> None:
        """Stop the timer; what was counted and not yet said is said now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._say_count()


class EventQueue:
    """One subscriber's bounded queue of encoded lines: filled by the daemon without ever waiting, emptied
    by the server writing to that subscriber. Full means the subscriber is too slow: the queue is closed
    as ``overflowed`` (and ``on_overflow`` cuts the connection at once), so it never costs memory or time."""

    def __init__(self, capacity: int = STREAM_QUEUE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.closed = self.overflowed = False
        self.on_overflow: Callable[[], None] | None = None
        self._lines: deque[bytes] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._lines)

    def offer(self, line: bytes) -> bool:
        """Queue ``line`` now; False if the queue is closed, or full (then it closes as overflowed)."""
        if self.closed:
            return False
        if len(self._lines) >= self.capacity:
            self.overflowed = True
            self.close()
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        self._lines.append(line)
        self._ready.set()
        return True

    def close(self) -> None:
        """No more lines; a waiting :meth:`get` returns None."""
        self.closed = True
        self._ready.set()

    async def get(self, timeout_s: float) -> bytes | None:
        """The next line, or None after ``timeout_s`` without one, or once the queue is closed."""
        if not self._lines and not self.closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout_s, 0.0)):
                    await self._ready.wait()
        if self.closed or not self._lines:
            return None
        return self._lines.popleft()


@dataclass(eq=False, slots=True)
class Stream:
    """A command's answer that goes on: ``reply`` as usual, then the lines of ``queue`` and, every ``every_s``
    (the first at once), the line ``tick()`` makes (encoded by the command: subscribers share one) -- until
    either side closes."""

    reply: Any
    queue: EventQueue = field(default_factory=EventQueue)
    tick: Callable[[], Awaitable[bytes]] | None = None
    every_s: float = 5.0


@dataclass(eq=False, slots=True)
class _Client:
    """One open connection: since when it has been waiting for a request (None: busy in a command)."""

    writer: asyncio.StreamWriter
    idle_since: float | None


class ControlServer:
    """Serves the control socket at ``path`` until cancelled, dispatching commands to ``handlers``."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        *,
        max_request_bytes: int = 65536,
        request_timeout_s: float = 30.0,
        mode: int = 0o660,
        max_clients: int = MAX_CLIENTS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        log_window_s: float = LOG_WINDOW_S,
    ) -> None:
        if max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        if max_clients < 1:
            raise ValueError("max_clients must be positive")
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.max_request_bytes = max_request_bytes
        self.request_timeout_s = request_timeout_s
        self.mode = mode
        self.max_clients = max_clients
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self._known = frozenset(self.handlers)
        self._clients: dict[asyncio.StreamWriter, _Client] = {}
        self._turning_away: set[asyncio.StreamWriter] = set()
        self._closing = False
        self._crowded = _Quieted("CONTROL_CROWDED", log_window_s)
        self._bad = _Quieted("CONTROL_BAD_REQUEST", log_window_s)
        self._slow = _Quieted("CONTROL_SLOW_CLIENT", log_window_s)
        self._slow_subscriber = _Quieted("CONTROL_SLOW_SUBSCRIBER", log_window_s)
        self._streams = 0  # subscriptions open now (each is a client too)

    @property
    def clients(self) -> int:
        """Connections open now (turned-away ones not counted)."""
        return len(self._clients)

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Bind (replacing a stale socket), set ``ready``, serve until cancelled, then clean up."""
        await self._claim_path()
        sock, inode = self._bind()
        self._closing = False
        try:
            async with asyncio.TaskGroup() as tg:

                def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    if self._closing:
                        writer.close()
                    elif len(self._clients) < self.max_clients or self._evict_idlest():
                        self._clients[writer] = _Client(writer, _now())
                        tg.create_task(self._serve_client(reader, writer))
                    else:
                        self._turn_away(tg, reader, writer)

                server = await asyncio.start_unix_server(
                    on_connect, sock=sock, limit=self.max_request_bytes, backlog=_BACKLOG
                )
                log.info("control socket listening on %s", self.path, extra={"EVENT": "CONTROL_LISTENING"})
                if ready is not None:
                    ready.set()
                try:
                    await asyncio.Future()  # until cancelled
                finally:
                    self._closing = True
                    server.close()
                    for writer in [*self._clients, *self._turning_away]:
                        writer.close()
        finally:
            sock.close()
            self._unlink_if_ours(inode)
            for quieted in (self._crowded, self._bad, self._slow, self._slow_subscriber):
                quieted.close()

    def _evict_idlest(self) -> bool:
        """At the limit: close the connection that has waited longest for a request; False if all are busy."""
        idle = [c for c in self._clients.values() if c.idle_since is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        del self._clients[victim.writer]  # its slot is free now; its task ends on the abort
        victim.writer.transport.abort()
        self._crowded.warn(
            f"{self.max_clients} control connections are open (the limit): closing the longest idle one "
            "for each new one",
            "idle control connections closed to make room",
        )
        return True

    def _turn_away(self, tg: asyncio.TaskGroup, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Every slot is busy in a command: refuse with an error reply (or, past a bound, just close)."""
        self._crowded.warn(
            f"{self.max_clients} control connections are busy (the limit): refusing new connections",
            "control connections refused",
        )
        if len(self._turning_away) >= self.max_clients:
            writer.transport.abort()
            return
        self._turning_away.add(writer)
        tg.create_task(self._refuse(reader, writer))

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send the refusal, and read the client's request line first (closing a socket with unread
        data resets it, and the client would never see why)."""
        try:
            writer.write(encode_reply(error=f"too many control connections ({self.max_clients}); try again"))
            async with asyncio.timeout(_TURN_AWAY_S):
                await writer.drain()
                await reader.readuntil(b"\n")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._turning_away.discard(writer)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # it did not even take the refusal
            else:
                writer.close()

    async def _claim_path(self) -> None:
        """Remove a stale socket left by a crashed daemon; refuse if a live server answers on it."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; refusing to replace it")
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                _, writer = await asyncio.open_unix_connection(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.warning("removing stale control socket %s", self.path, extra={"EVENT": "CONTROL_STALE_SOCKET"})
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        except TimeoutError:
            raise ControlError(f"{self.path} is in use (a server holds it but does not accept)") from None
        except OSError as exc:
            raise ControlError(f"cannot probe existing control socket {self.path}: {exc}") from None
        await _close(writer)
        raise ControlError(f"another server is already answering on {self.path}; is s1mpled running already?")

    def _bind(self) -> tuple[socket.socket, int]:
        """Bind and chmod before listen(), so no client can connect while the mode is still the umask's."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, self.mode)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            inode = os.stat(self.path).st_ino
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot listen on control socket {self.path}: {exc}") from None
        return sock, inode

    def _unlink_if_ours(self, inode: int) -> None:
        try:
            if os.lstat(self.path).st_ino == inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove control socket %s: %s", self.path, exc)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection, one at a time, until EOF, an over-long line, silence for
        ``idle_timeout_s``, a reply the client does not take within ``write_timeout_s``, or an I/O error."""
        try:
            while (line := await self._read_request(reader, writer)) is not None:
                self._busy(writer, True)
                reply = await self._answer(line)
                if isinstance(reply, Stream):
                    await self._stream(reader, writer, reply)
                    break
                if not await self._send(writer, reply):
                    break
                self._busy(writer, False)
        except OSError as exc:
            log.debug("control client went away: %s", exc)
        except Exception:  # a bug serving one client must not take the control socket down
            log.exception("control connection failed", extra={"EVENT": "CONTROL_CONNECTION_FAILED"})
        finally:
            self._clients.pop(writer, None)
            await _close(writer)

    def _busy(self, writer: asyncio.StreamWriter, busy: bool) -> None:
        client = self._clients.get(writer)
        if client is not None:
            client.idle_since = None if busy else _now()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> bool:
        """Write ``data`` within the write deadline; False (the connection aborted) if the client does not read."""
        writer.write(data)
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await writer.drain()
        except TimeoutError:
            self._slow.warn(
                f"a control client did not read its reply within {self.write_timeout_s}s; cutting it off",
                "control clients cut off for not reading",
            )
            writer.transport.abort()
            return False
        return True

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """The next request line, or None when the client is done (EOF), silent for ``idle_timeout_s``
        or sent a line longer than allowed."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                return await reader.readuntil(b"\n")
        except TimeoutError:
            log.debug("control client sent no request for %ss; closing the connection", self.idle_timeout_s)
            return None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.debug("control client disconnected mid-request (%d bytes)", len(exc.partial))
            return None
        except asyncio.LimitOverrunError:
            self._bad.warn(
                f"control request longer than {self.max_request_bytes} bytes; closing the connection",
                "bad or refused control requests",
            )
            await self._send(writer, encode_reply(error=f"request longer than {self.max_request_bytes} bytes"))
            return None

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Stream) -> None:
        """Serve a subscription until the client leaves or falls behind (then the connection ends)."""
        if self._streams >= max(1, self.max_clients // 2):
            stream.queue.close()
            self._crowded.warn("too many control subscriptions: refusing one", "control subscriptions refused")
            await self._send(writer, encode_reply(error=f"too many subscriptions ({self.max_clients // 2})"))
            return
        self._streams += 1
        stream.queue.on_overflow = writer.transport.abort
        try:
            if await self._send(writer, encode_reply(result=stream.reply)):
                async with asyncio.TaskGroup() as tg:
                    eof = tg.create_task(_until_eof(reader, stream.queue))
                    try:
                        await self._pump(writer, stream)
                    except OSError as exc:  # the subscriber went away mid-write
                        log.debug("control subscriber went away: %s", exc)
                    finally:
                        eof.cancel()
        finally:
            self._streams -= 1
            stream.queue.close()
        if stream.queue.overflowed:
            self._slow_subscriber.warn(
                f"a control subscriber fell {stream.queue.capacity} events behind; cut off",
                "slow control subscribers cut off",
            )

    async def _pump(self, writer: asyncio.StreamWriter, stream: Stream) -> None:
        """Write the stream's lines and ticks, each within the write deadline, until the queue closes."""
        due = _now()
        while not stream.queue.closed:
            if stream.tick is not None and _now() >= due:
                due = _now() + stream.every_s
                line = await self._tick(stream)
            else:
                line = await stream.queue.get(due - _now() if stream.tick is not None else 3600.0)
            if line is not None and not await self._send(writer, line):
                return

    async def _tick(self, stream: Stream) -> bytes | None:
        """The periodic line; None (logged: a bug) if making it failed."""
        assert stream.tick is not None
        try:
            return await stream.tick()
        except Exception:
            log.exception("a control stream's periodic document failed", extra={"EVENT": "CONTROL_STREAM_FAILED"})
            return None

    async def _answer(self, line: bytes) -> bytes | Stream:
        """The reply line for one request line; never raises except CancelledError."""
        try:
            req = parse_request(line, self._known)
        except ControlError as exc:
            self._bad.warn(f"bad control request: {exc}", "bad or refused control requests")
            return encode_reply(error=str(exc))
        log.debug("control command %s", req.cmd, extra={"EVENT": "CONTROL_REQUEST"})
        return await self._run(req)

    async def _run(self, req: Request) -> bytes | Stream:
        """The reply line of one parsed request: the handler's result or why there is none (or a Stream)."""
        try:
            async with asyncio.timeout(self.request_timeout_s) as deadline:
                result = await self.handlers[req.cmd](req.args)
        except TimeoutError:
            if not deadline.expired():
                return self._failed(req.cmd, TimeoutError("handler raised TimeoutError"))
            log.error("control command %s took longer than %ss", req.cmd, self.request_timeout_s)
            return encode_reply(error=f"{req.cmd} did not finish within {self.request_timeout_s}s")
        except ControlError as exc:  # the command refused (e.g. not trading yet): an answer, not a bug
            self._bad.warn(f"control command {req.cmd} refused: {exc}", "bad or refused control requests")
            return encode_reply(error=str(exc))
        except Exception as exc:
            return self._failed(req.cmd, exc)
        return result if isinstance(result, Stream) else self._encoded(req.cmd, result)

    def _encoded(self, cmd: str, result: Any) -> bytes:
        try:
            return encode_reply(result=result)
        except (TypeError, ValueError) as exc:
            return self._failed(cmd, exc, what="returned a result that is not JSON")

    @staticmethod
    def _failed(cmd: str, exc: BaseException, what: str = "failed") -> bytes:
        if isinstance(exc, S1mpledError) and not isinstance(exc, LocalStateError):
            # expected (the exchange is down, a save failed): one line; a traceback only for a bug
            log.warning("control command %s %s: %s", cmd, what, exc, extra={"EVENT": "CONTROL_HANDLER_FAILED"})
        else:  # a bug: the traceback is the evidence
            log.error("control command %s %s", cmd, what, exc_info=exc, extra={"EVENT": "CONTROL_HANDLER_FAILED"})
        return encode_reply(error=f"{cmd} {what}: {exc or type(exc).__name__}")


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _until_eof(reader: asyncio.StreamReader, queue: EventQueue) -> None:
    """A subscriber sends nothing after its request: read (and drop) until it leaves, then end its stream."""
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass
    finally:
        queue.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a stream; abort it if the peer does not take the remaining bytes soon."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass


async def request(path: Path, cmd: str, args: Mapping[str, Any] | None = None, *, timeout_s: float = 30.0) -> Any:
    """Send one command to the daemon at ``path`` and return its result; ControlError on any failure."""
    line = encode_request(cmd, args)
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=_CLIENT_REPLY_LIMIT)
            try:
                writer.write(line)
                await writer.drain()
                reply = await reader.readline()
            finally:
                await _close(writer)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"the daemon does not seem to run: nothing answers on {path}") from None
    except (ConnectionResetError, BrokenPipeError):
        raise ControlError(f"the daemon closed {path} without answering") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}; are you in the daemon's group?") from None
    except TimeoutError:
        raise ControlError(f"no answer from the daemon on {path} within {timeout_s}s") from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"control socket {path}: {exc}") from None
    if not reply.endswith(b"\n"):
        raise ControlError(f"the daemon closed {path} without answering")
    return decode_reply(reply)
