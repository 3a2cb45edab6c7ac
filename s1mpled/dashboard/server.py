"""The dashboard's HTTP and WebSocket side: one read-only page, its three assets, and ``/ws``.

Served with ``websockets`` (its ``process_request`` hook answers the plain HTTP requests; only ``/ws``
becomes a WebSocket). A browser gets ``hello`` (every instance's whole view) and then the small updates
the views return (s1mpled.dashboard.view), through a bounded queue per browser: a browser that cannot
keep up is disconnected (it reconnects and gets a fresh ``hello``), never the other way round.

Access: bound to 127.0.0.1 by default (reach it with ``ssh -L``). With a token (``--token-file``, or the
systemd credential ``dashboard_token``) every request needs it -- ``?token=`` once (answered with a cookie
and a redirect, so it leaves the address bar), the cookie, or ``Authorization: Bearer`` -- compared in
constant time; none is 401, a wrong one 403. The token is registered as a secret, so no log line shows it.
On a loopback address only loopback host names are served (DNS rebinding), and the WebSocket only to
its own page's origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import importlib.resources
import ipaddress
import json
import logging
import os
import signal
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from s1mpled.control import EventQueue
from s1mpled.dashboard.links import Link
from s1mpled.dashboard.view import InstanceView, Update
from s1mpled.errors import ConfigError, ControlError, S1mpledError
from s1mpled.logs import register_secret

__all__ = ["ASSETS", "Dashboard", "instance_sockets", "load_token", "main", "parse_listen", "serve_dashboard"]

log = logging.getLogger("s1mpled.dashboard")
COOKIE = "s1mpled_dashboard"
BROWSER_QUEUE = 2000  # updates a browser may fall behind by before it is disconnected
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT``; ConfigError (exit 78) if it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("--listen", "listen", f"{text!r} is not HOST:PORT")
    return host, int(port)


def load_token(token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The token: ``--token-file``, else the systemd credential ``dashboard_token``, else none (no auth)."""
    path: Path | None = Path(token_file) if token_file else None
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / "dashboard_token"
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "token", f"cannot read the dashboard token: {exc}") from None
    if len(token) < 16:
        raise ConfigError(str(path), "token", "the dashboard token must be at least 16 characters")
    register_secret(token)
    return token


async def _close_when_gone(connection: ServerConnection, queue: EventQueue) -> None:
    """A browser that leaves ends its stream at once, not at the next update."""
    await connection.wait_closed()
    queue.close()


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # numbers the daemon sent with a fraction stay exact on their way to the page
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _wire(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, default=_exact, allow_nan=False)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:8787`` -> ``::1``, ``localhost:8787`` -> ``localhost``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


@dataclass(frozen=True, slots=True)
class _Asked:
    """What a request presented: the token (from where) and the path without the query."""

    path: str
    token: str | None
    via_query: bool


def _asked(request: Request) -> _Asked:
    url = urllib.parse.urlsplit(request.path)
    query = urllib.parse.parse_qs(url.query)
    if "token" in query:
        return _Asked(url.path, query["token"][0], True)
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return _Asked(url.path, auth.removeprefix("Bearer ").strip(), False)
    cookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        cookie.load(request.headers.get("Cookie", ""))
    morsel = cookie.get(COOKIE)
    return _Asked(url.path, morsel.value if morsel is not None else None, False)


class Dashboard:
    """The views of every instance, their links, and the browsers watching them."""

    def __init__(self, sockets: Sequence[Path], *, token: str | None = None, snapshot_every_s: float = 5.0) -> None:
        self.token = token
        self.views = [InstanceView(f"i{n}", str(path)) for n, path in enumerate(sockets)]
        self.links = [Link(v, Path(v.socket), self.publish, snapshot_every_s=snapshot_every_s) for v in self.views]
        self._browsers: set[EventQueue] = set()
        self._assets = importlib.resources.files("s1mpled.dashboard") / "assets"
        self._slow_logged = False

    # -- to the browsers --

    def publish(self, updates: list[Update]) -> None:
        """Queue updates for every browser without waiting; a browser whose queue is full is disconnected."""
        line = _wire({"type": "updates", "updates": updates}).encode()
        for queue in list(self._browsers):
            if not queue.offer(line) and queue.overflowed and not self._slow_logged:
                self._slow_logged = True
                log.warning("a dashboard browser fell behind; disconnecting it", extra={"EVENT": "DASHBOARD_SLOW"})

    def hello(self) -> str:
        return _wire({"type": "hello", "instances": [v.to_doc() for v in self.views]})

    async def handler(self, connection: ServerConnection) -> None:
        """One browser: the whole view, then every update, until it leaves or falls behind."""
        queue = EventQueue(BROWSER_QUEUE)
        self._browsers.add(queue)
        try:
            async with asyncio.TaskGroup() as tg:
                gone = tg.create_task(_close_when_gone(connection, queue))
                await self._feed(connection, queue)
                gone.cancel()
        finally:
            self._browsers.discard(queue)
            queue.close()

    async def _feed(self, connection: ServerConnection, queue: EventQueue) -> None:
        try:
            await connection.send(self.hello())
            while not queue.closed:
                line = await queue.get(3600.0)
                if line is not None:
                    await connection.send(line.decode())
            if queue.overflowed:
                await connection.close(1013, "too slow: reconnect for a fresh view")
        except ConnectionClosed:
            pass

    # -- HTTP --

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Assets and refusals as plain HTTP; None lets ``/ws`` become a WebSocket."""
        refused = self._refusal(connection, request)
        if refused is not None:
            return refused
        asked = _asked(request)
        if asked.via_query and self.token is not None:  # the token leaves the address bar for a cookie
            return self._redirect_with_cookie(connection, asked.path)
        if asked.path == "/ws":
            return self._check_origin(connection, request)
        return self._asset(connection, asked.path)

    def _refusal(self, connection: ServerConnection, request: Request) -> Response | None:
        """401 without the token, 403 with a wrong one or a foreign Host name (when serving loopback)."""
        local = connection.local_address
        host_name = _host_name(request.headers.get("Host", ""))
        if local and _is_loopback(str(local[0])) and not _is_loopback(host_name):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "This dashboard answers to localhost only.\n")
        if self.token is None:
            return None
        token = _asked(request).token
        if token is None:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "A token is needed: open /?token=TOKEN.\n")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "Wrong token.\n")
        return None

    def _redirect_with_cookie(self, connection: ServerConnection, path: str) -> Response:
        assert self.token is not None
        response = connection.respond(http.HTTPStatus.SEE_OTHER, "")
        response.headers["Location"] = path if path in ASSETS else "/"
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        response.headers["Set-Cookie"] = cookie
        return response

    @staticmethod
    def _check_origin(connection: ServerConnection, request: Request) -> Response | None:
        """A WebSocket only from this page: a browser sends its page's origin, which must be this host."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None  # not a browser (a script with the token)
        if urllib.parse.urlsplit(origin).netloc != request.headers.get("Host", ""):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "Cross-origin WebSocket refused.\n")
        return None

    def _asset(self, connection: ServerConnection, path: str) -> Response:
        if path not in ASSETS:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not found.\n")
        name, content_type = ASSETS[path]
        body = (self._assets / name).read_bytes()
        headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), **_SECURITY_HEADERS})
        return Response(200, "OK", headers, body)

    # -- running --

    async def run(self, host: str, port: int, *, ready: asyncio.Future[int] | None = None) -> None:
        """Serve and keep every link up until cancelled; ``ready`` gets the bound port."""
        try:
            server = await serve(self.handler, host, port, process_request=self.process_request, max_size=4096)
        except OSError as exc:
            raise ControlError(f"the dashboard cannot listen on {host}:{port}: {exc}") from None
        async with server, asyncio.TaskGroup() as tg:
            bound = next(iter(server.sockets)).getsockname()[1]
            for link in self.links:
                tg.create_task(link.run())
            where = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/"
            log.info("dashboard listening on %s for %d instance(s)", where, len(self.views))
            print(f"s1mpled dashboard: {where}", flush=True)
            if ready is not None:
                ready.set_result(bound)
            try:
                await asyncio.Future()
            finally:
                for queue in self._browsers:
                    queue.close()  # their handlers end, so the server's close does not wait for them


def _unit_env(unit: str) -> dict[str, str]:
    """The directories systemd gives the daemon of ``unit`` (its socket's default lives there)."""
    name = unit.removesuffix(".service").partition("@")[2]
    suffix = f"/{name}" if name else ""
    return {"RUNTIME_DIRECTORY": f"/run/s1mpled{suffix}", "STATE_DIRECTORY": f"/var/lib/s1mpled{suffix}"}


def instance_sockets(sockets: Sequence[str], configs: Sequence[str], env: Mapping[str, str]) -> list[Path]:
    """The control sockets to watch: those named (``--socket``, ``--config``), else every instance systemd
    knows (as ``status --all`` finds them), else the one configuration ``--config`` would default to."""
    from s1mpled import fleet  # noqa: PLC0415 -- systemd discovery only when nothing is named
    from s1mpled.config import resolve_config_path, resolve_control_socket  # noqa: PLC0415

    if sockets or configs:
        return [*map(Path, sockets), *(resolve_control_socket(c, env) for c in configs)]
    found = []
    for unit, _, _ in fleet.discover():
        try:
            found.append(resolve_control_socket(fleet.config_of(unit), {**env, **_unit_env(unit)}))
        except S1mpledError as exc:  # one instance's broken configuration must not hide the others
            log.warning("%s: not shown: %s", unit, exc, extra={"EVENT": "DASHBOARD_SKIPPED"})
    return found or [resolve_control_socket(resolve_config_path(None, env), env)]


def main(sockets: Sequence[str], configs: Sequence[str], listen: str, token_file: str | None, every: float) -> int:
    """``s1mpled dashboard``: find the instances, read the token, serve until SIGTERM or SIGINT."""
    from s1mpled.logs import setup_logging  # noqa: PLC0415

    setup_logging()
    logging.getLogger("websockets").setLevel(logging.WARNING)  # not a line per page load
    if not 0.5 <= every <= 60:
        raise ConfigError("--snapshot-every", "snapshot-every", "must be from 0.5 to 60 seconds")
    token = load_token(token_file, os.environ)
    if token is None:
        log.warning("no dashboard token: anyone who can reach the port can read the page", extra={"EVENT": "NO_TOKEN"})
    serve_dashboard(instance_sockets(sockets, configs, os.environ), listen, token, every)
    return 0


def serve_dashboard(sockets: Sequence[Path], listen: str, token: str | None, snapshot_every_s: float) -> None:
    """Run the dashboard until SIGTERM or SIGINT."""
    host, port = parse_listen(listen)
    dashboard = Dashboard(sockets, token=token, snapshot_every_s=snapshot_every_s)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await dashboard.run(host, port)
        except asyncio.CancelledError:
            log.info("dashboard stopped")

    asyncio.run(main())
