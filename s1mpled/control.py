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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from s1mpled.errors import ControlError

__all__ = [
    "ControlServer",
    "Handler",
    "Request",
    "decode_reply",
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
    ) -> None:
        if max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.max_request_bytes = max_request_bytes
        self.request_timeout_s = request_timeout_s
        self.mode = mode
        self._known = frozenset(self.handlers)
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False

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
                        return
                    self._writers.add(writer)
                    tg.create_task(self._serve_client(reader, writer))

                server = await asyncio.start_unix_server(on_connect, sock=sock, limit=self.max_request_bytes)
                log.info("control socket listening on %s", self.path, extra={"EVENT": "CONTROL_LISTENING"})
                if ready is not None:
                    ready.set()
                try:
                    await asyncio.Future()  # until cancelled
                finally:
                    self._closing = True
                    server.close()
                    for writer in list(self._writers):
                        writer.close()
        finally:
            sock.close()
            self._unlink_if_ours(inode)

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
            sock.listen(64)
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
        """Answer requests on one connection, one at a time, until EOF, an over-long line or an I/O error."""
        try:
            while (line := await self._read_request(reader, writer)) is not None:
                writer.write(await self._answer(line))
                await writer.drain()
        except OSError as exc:
            log.debug("control client went away: %s", exc)
        except Exception:  # a bug serving one client must not take the control socket down
            log.exception("control connection failed", extra={"EVENT": "CONTROL_CONNECTION_FAILED"})
        finally:
            self._writers.discard(writer)
            await _close(writer)

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """The next request line, or None when the client is done (EOF) or sent a line longer than allowed."""
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.debug("control client disconnected mid-request (%d bytes)", len(exc.partial))
            return None
        except asyncio.LimitOverrunError:
            log.warning(
                "control request longer than %d bytes; closing the connection",
                self.max_request_bytes,
                extra={"EVENT": "CONTROL_BAD_REQUEST"},
            )
            writer.write(encode_reply(error=f"request longer than {self.max_request_bytes} bytes"))
            await writer.drain()
            return None

    async def _answer(self, line: bytes) -> bytes:
        """The reply line for one request line; never raises except CancelledError."""
        try:
            req = parse_request(line, self._known)
        except ControlError as exc:
            log.warning("bad control request: %s", exc, extra={"EVENT": "CONTROL_BAD_REQUEST"})
            return encode_reply(error=str(exc))
        log.debug("control command %s", req.cmd, extra={"EVENT": "CONTROL_REQUEST"})
        try:
            async with asyncio.timeout(self.request_timeout_s) as deadline:
                result = await self.handlers[req.cmd](req.args)
        except TimeoutError:
            if not deadline.expired():
                return self._failed(req.cmd, TimeoutError("handler raised TimeoutError"))
            log.error("control command %s took longer than %ss", req.cmd, self.request_timeout_s)
            return encode_reply(error=f"{req.cmd} did not finish within {self.request_timeout_s}s")
        except Exception as exc:
            return self._failed(req.cmd, exc)
        try:
            return encode_reply(result=result)
        except (TypeError, ValueError) as exc:
            return self._failed(req.cmd, exc, what="returned a result that is not JSON")

    @staticmethod
    def _failed(cmd: str, exc: BaseException, what: str = "failed") -> bytes:
        log.error("control command %s %s", cmd, what, exc_info=exc, extra={"EVENT": "CONTROL_HANDLER_FAILED"})
        return encode_reply(error=f"{cmd} {what}: {exc or type(exc).__name__}")


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
