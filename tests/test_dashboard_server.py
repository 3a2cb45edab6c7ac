"""Tests of the dashboard process: its token, its assets, its WebSocket relaying a real daemon, its links."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from s1mpled.cli import main
from s1mpled.control import EventQueue, encode_event, encode_reply
from s1mpled.dashboard.links import Link
from s1mpled.dashboard.server import Dashboard, instance_sockets, load_token
from s1mpled.dashboard.view import InstanceView
from s1mpled.errors import ConfigError
from tests.daemon_harness import Daemon, write_config

TOKEN = "correct-horse-battery-staple-42"
DEADLINE_S = 30.0


class DashboardProcess:
    """``s1mpled dashboard`` as a process on a free loopback port, its output in a file."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = log.open("wb")
        cmd = [sys.executable, "-m", "s1mpled", "dashboard", "--listen", "127.0.0.1:0", "--snapshot-every", "1", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            self.url = self._wait_url()
        except BaseException:
            self.proc.kill()  # a dashboard that never came up is not left behind
            self.proc.wait(timeout=10)
            raise

    def _wait_url(self) -> str:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("s1mpled dashboard: "):
                    return line.split()[-1]
            assert self.proc.poll() is None, f"the dashboard exited {self.proc.returncode}:\n{self.output()}"
            time.sleep(0.05)
        raise AssertionError(f"the dashboard never said where it listens:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and its exit code; a dashboard that does not stop is killed (never left behind) and fails."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"the dashboard did not stop on SIGTERM:\n{self.output()}") from None
        finally:
            self._log.close()
        return code


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A trading paper daemon (fast clocks: it fills orders every few seconds)."""
    d = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    d.wait_trading()
    yield d
    d.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def dashboard(tmp_path: Path, daemon: Daemon, token_file: Path) -> Iterator[DashboardProcess]:
    d = DashboardProcess(
        tmp_path / "dashboard.log", "--socket", str(tmp_path / "control.sock"), "--token-file", str(token_file)
    )
    yield d
    assert d.stop() == 0, d.output()


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects; (status, headers, body) whatever the status."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def ws_url(dashboard: DashboardProcess) -> str:
    return dashboard.url.replace("http://", "ws://") + "ws"


async def recv_until(ws: Any, found: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read WebSocket messages until one satisfies ``found`` (or fail at the deadline)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            message = json.loads(await ws.recv())
            if found(message):
                return dict(message)


def test_without_the_token_the_page_and_the_websocket_are_refused(dashboard: DashboardProcess) -> None:
    """No token is 401, a wrong one 403 -- for the page, an asset and the WebSocket alike."""
    for path in ("", "app.js", "ws"):
        assert http_get(dashboard.url + path)[0] == 401
        assert http_get(dashboard.url + path, {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 403
        assert http_get(dashboard.url + path + "?token=wrong-token-wrong-token")[0] == 403
        assert http_get(dashboard.url + path, {"Cookie": "s1mpled_dashboard=nope"})[0] == 403

    async def handshake(headers: dict[str, str]) -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(dashboard), additional_headers=headers):
                pass
        return refused.value.response.status_code

    assert asyncio.run(handshake({})) == 401
    assert asyncio.run(handshake({"Authorization": "Bearer wrong-token-wrong-token"})) == 403
    assert TOKEN not in dashboard.output()


def test_the_token_in_the_url_becomes_a_cookie_and_the_assets_are_served(dashboard: DashboardProcess) -> None:
    """?token= answers 303 with an HttpOnly cookie; with it the page and its assets come from the package."""
    status, headers, _ = http_get(dashboard.url + "?token=" + TOKEN)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    expected = {
        "": ("text/html", b"<!doctype html>"),
        "app.js": ("text/javascript", b"//"),
        "style.css": ("text/css", b":root"),
    }
    for path, (kind, start) in expected.items():
        status, headers, body = http_get(dashboard.url + path, {"Cookie": cookie})
        assert status == 200 and headers["Content-Type"].startswith(kind) and body.startswith(start)
        assert "default-src 'self'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"
    assert http_get(dashboard.url + "style.css", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert http_get(dashboard.url + "etc/passwd", {"Cookie": cookie})[0] == 404
    assert b"http" not in http_get(dashboard.url, {"Cookie": cookie})[2].split(b"<body>")[0]  # nothing remote
    assert http_get(dashboard.url, {"Cookie": cookie, "Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert TOKEN not in dashboard.output()


def test_the_websocket_relays_a_fill_from_the_daemon(dashboard: DashboardProcess) -> None:
    """A browser's WebSocket gets every instance's view at once, then the daemon's fills as they happen."""

    async def watch() -> tuple[dict[str, Any], dict[str, Any]]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(ws_url(dashboard), additional_headers=headers, max_size=2**24) as ws:
            hello = await recv_until(ws, lambda m: m["type"] == "hello")
            fill = await recv_until(ws, lambda m: any(u["type"] == "fill" for u in m["updates"]))
        return hello, next(u for u in fill["updates"] if u["type"] == "fill")

    hello, fill = asyncio.run(watch())
    assert [i["id"] for i in hello["instances"]] == ["i0"]
    assert fill["fill"]["strategy"] in ("dca-btc", "grid-eth")
    assert Decimal(fill["fill"]["price"]) > 0 and isinstance(fill["fill"]["amount"], str)  # exact, as strings


def test_a_websocket_from_another_origin_is_refused(dashboard: DashboardProcess) -> None:
    """Even with the token, a page of another origin cannot open the WebSocket (cross-site WebSocket hijacking)."""

    async def handshake() -> int:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(dashboard), additional_headers=headers, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        return refused.value.response.status_code

    assert asyncio.run(handshake()) == 403


def test_the_token_comes_from_the_systemd_credential_and_must_be_long(tmp_path: Path) -> None:
    """Without --token-file the credential dashboard_token is used; a short token is a configuration error."""
    (tmp_path / "dashboard_token").write_text(TOKEN + "\n")
    assert load_token(None, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == TOKEN
    assert load_token(None, {"CREDENTIALS_DIRECTORY": str(tmp_path / "empty")}) is None
    assert load_token(None, {}) is None
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(str(tmp_path / "short"), {})


# ------------------------------------------------------------------ the links (a socket we control)


async def _serve_lines(path: Path, lines: list[bytes], hang_up: asyncio.Event) -> asyncio.Server:
    """A stand-in daemon on a real unix socket: answers the subscribe request, sends ``lines``, and closes
    the connection when ``hang_up`` is set."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(encode_reply(result={"events": ["STATUS"], "snapshot_every_s": 1}))
        for line in lines:
            writer.write(line)
        await writer.drain()
        await hang_up.wait()
        writer.close()

    return await asyncio.start_unix_server(client, str(path))


def _status_line(operation: str) -> bytes:
    strategy = {
        "name": "s",
        "symbol": "BTC/USDT",
        "capital": "100.5",
        "holdings": "0.5",
        "last_price": "20",
        "realized_pnl": "1.25",
    }
    return encode_event(
        {"event": "STATUS", "at_ms": 1000, "status": {"operation": operation, "strategies": [strategy]}}
    )


async def _until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (state other tasks change) until it holds; fail with ``what`` at the deadline."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not check():  # noqa: ASYNC110 -- the state is plain attributes, there is no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not reached within {DEADLINE_S} s: {what}") from None


def test_garbage_from_a_socket_is_dropped_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lines that are not JSON, not objects, or JSON the view cannot use are dropped (one warning); the good
    line after them is applied, and the link stays up."""
    garbage = [
        b"\xff\xfe not utf-8\n",
        b"[1, 2]\n",
        b'{"event": "STATUS", "status": 7}\n',
        b'{"event": "TRADE_EXECUTED"}\n',
    ]
    view = InstanceView("i0", str(tmp_path / "c.sock"))
    updates: list[dict[str, Any]] = []

    async def scenario() -> None:
        hang_up = asyncio.Event()
        server = await _serve_lines(tmp_path / "c.sock", [*garbage, _status_line("demo")], hang_up)
        async with server, asyncio.TaskGroup() as tg:
            task = tg.create_task(Link(view, tmp_path / "c.sock", updates.extend, snapshot_every_s=1).run())
            await _until(lambda: view.status is not None, "the good line was applied")
            task.cancel()
            hang_up.set()

    with caplog.at_level(logging.WARNING, "s1mpled.dashboard"):
        asyncio.run(scenario())
    assert view.status is not None and view.status["operation"] == "demo" and view.link["state"] == "connected"
    assert view.equity["s"].points[-1][1:] == ["110.5", "1.25"]  # 100.5 + 0.5 * 20, exact
    assert len([r for r in caplog.records if getattr(r, "EVENT", "") == "DASHBOARD_GARBAGE"]) == 1


def test_a_lost_socket_is_shown_and_redialled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens: the view says lost, with the reason (logged once, not per try); once a daemon
    listens, the link re-dials it by itself, and a daemon that goes away again is shown lost again."""
    path = tmp_path / "c.sock"
    view = InstanceView("i0", str(path))
    updates: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(Link(view, path, updates.extend, snapshot_every_s=1).run())
            await _until(lambda: view.link["state"] == "lost" and len(updates) >= 3, "three failed dials")
            assert "nothing listens" in view.link["error"]
            hang_up = asyncio.Event()
            server = await _serve_lines(path, [_status_line("back")], hang_up)
            async with server:
                await _until(lambda: view.link["state"] == "connected" and view.status is not None, "re-dialled")
                server.close()
                hang_up.set()
                await _until(lambda: view.link["state"] == "lost", "lost again")
            task.cancel()

    with caplog.at_level(logging.WARNING, "s1mpled.dashboard"):
        asyncio.run(scenario())
    lost = [r for r in caplog.records if getattr(r, "EVENT", "") == "DASHBOARD_LOST"]
    assert len(lost) == 2  # once per outage, not once per try
    assert any(u["type"] == "link" and u["link"]["state"] == "lost" for u in updates)


def test_a_browser_that_falls_behind_is_disconnected(tmp_path: Path) -> None:
    """The dashboard never waits for a browser: a full queue closes that browser's stream."""
    dashboard = Dashboard([tmp_path / "none.sock"])
    queue = EventQueue(3)
    dashboard._browsers.add(queue)
    for _ in range(4):
        dashboard.publish([{"type": "price", "instance": "i0"}])
    assert queue.overflowed and queue.closed


def test_instances_come_from_sockets_and_configs_else_the_default_config(tmp_path: Path) -> None:
    """--socket and --config name instances (a config's socket as the daemon places it); without either, the
    instances systemd knows, else the configuration --config would default to ($S1MPLED_CONFIG here)."""
    config = write_config(tmp_path)
    assert instance_sockets(["/run/a.sock"], [str(config)], {}) == [Path("/run/a.sock"), tmp_path / "control.sock"]
    assert instance_sockets([], [], {"S1MPLED_CONFIG": str(config)}) == [tmp_path / "control.sock"]


def test_a_bad_listen_address_or_period_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`s1mpled dashboard` refuses what it cannot serve in one line, exit 78 (systemd does not restart it)."""
    assert main(["dashboard", "--socket", "/nowhere.sock", "--listen", "127.0.0.1:http"]) == 78
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["dashboard", "--socket", "/nowhere.sock", "--snapshot-every", "0.1"]) == 78
