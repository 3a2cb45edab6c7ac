"""sd_notify as systemd sees it, without systemd: the daemon process talks to a datagram socket we bind.

READY=1 must come only after recovery steps A and B, WATCHDOG=1 only from a running event loop (a
loop blocked by a stuck call stops the pings), RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.daemon_harness import Daemon, write_config


class NotifySocket:
    """What systemd's notification socket receives, with arrival times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self) -> list[str]:
        return [m for _, m in self.messages]

    def wait_for(self, line: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, m in list(self.messages):
                if m == line or (line.endswith("*") and m.startswith(line[:-1])):
                    return at
            time.sleep(0.02)
        raise AssertionError(f"{line!r} never arrived; got {self.lines()[-20:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _daemon(tmp_path: Path, notify: NotifySocket, **env: str) -> Daemon:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000", **env}
    return Daemon(write_config(tmp_path), tmp_path / "daemon.log", env)


def _pings(notify: NotifySocket, after: float = 0.0) -> list[float]:
    return [t for t, m in notify.messages if m == "WATCHDOG=1" and t > after]


def test_ready_only_after_recovery_then_watchdog_reload_and_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    """STATUS for A and B, READY=1 after B, WATCHDOG=1 at half the interval, RELOADING/READY on SIGHUP, STOPPING."""
    daemon = _daemon(tmp_path, notify)
    ready = notify.wait_for("READY=1")
    lines = notify.lines()
    a, b = (
        lines.index("STATUS=recovery A: loading state"),
        lines.index("STATUS=recovery B: reconciling with the exchange"),
    )
    assert a < b < lines.index("READY=1")
    assert lines[lines.index("READY=1") + 1].startswith("STATUS=trading: 2 strategies, breaker closed")
    deadline = time.monotonic() + 30
    while len(_pings(notify, ready)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    pings = _pings(notify, ready)  # WATCHDOG_USEC 0.4 s -> one ping every 0.2 s, never a gap of 0.4 s
    assert len(pings) >= 5 and max(b - a for a, b in itertools.pairwise(pings)) < 0.4
    daemon.proc.send_signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    assert notify.lines()[-20:].count("READY=1") >= 1
    assert daemon.stop() == 0
    assert "STOPPING=1" in notify.lines()


def test_a_blocked_event_loop_stops_the_watchdog_pings(tmp_path: Path, notify: NotifySocket) -> None:
    """A call stuck on the event loop (not SIGSTOP: the process still runs) stops WATCHDOG=1, so systemd kills it."""
    daemon = _daemon(tmp_path, notify, S1MPLED_FAILPOINTS="hang:control.status")
    notify.wait_for("READY=1")
    notify.wait_for("WATCHDOG=1")
    config = tmp_path / "s1mpled.yaml"
    hung = subprocess.Popen([sys.executable, "-m", "s1mpled", "status", "--config", str(config), "--timeout", "3"])
    hung.wait(timeout=30)
    blocked_at = time.monotonic()
    time.sleep(1.5)  # a negative check needs a window: 3.75 watchdog intervals with the loop blocked
    late = _pings(notify, blocked_at - 0.5)
    assert late == [], "the watchdog kept pinging while the event loop was blocked"
    assert daemon.proc.poll() is None, "the process is alive: only the watchdog can notice it is stuck"
    daemon.proc.kill()
    daemon.proc.wait(timeout=10)


def test_outside_systemd_notify_is_a_no_op(tmp_path: Path) -> None:
    """Without NOTIFY_SOCKET the daemon runs the same (nothing to notify, no error)."""
    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    daemon.wait_trading()
    assert daemon.stop() == 0
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
