"""Shared fixtures: no test may leave a daemon process behind, whatever its outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon_harness import Daemon


@pytest.fixture(autouse=True)
def _no_orphan_daemons() -> Iterator[None]:
    yield
    Daemon.kill_leftovers()
