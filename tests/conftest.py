"""Shared fixtures: no test may leave a daemon process behind, whatever its outcome; the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemon
from tests.live_harness import Simulator
from tests.test_systemd_notify import NotifySocket


@pytest.fixture(autouse=True)
def _no_orphan_daemons() -> Iterator[None]:
    yield
    Daemon.kill_leftovers()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    """The Binance-compatible simulator on loopback, funded generously (a test needing exact funding
    overrides this fixture), stopped whatever the test's outcome."""
    s = Simulator(tmp_path / "sim.log")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET, closed whatever the test's outcome."""
    ns = NotifySocket(tmp_path / "notify.sock")
    try:
        yield ns
    finally:
        ns.close()
