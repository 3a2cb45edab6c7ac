"""The optional metrics HTTP endpoint: the daemon's registry over localhost, refused elsewhere unless allowed,
and the listen address's parser."""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from s1mpled.config import load_config
from s1mpled.config.model import parse_listen
from s1mpled.errors import ConfigError
from tests.daemon_harness import Daemon, write_config
from tests.live_harness import wait_until

_SERVED = re.compile(r"metrics served on http://(\S+)/metrics")


def _url(daemon: Daemon) -> str | None:
    found = _SERVED.search(daemon.log_path.read_text(errors="replace"))
    return None if found is None else f"http://{found.group(1)}/metrics"


def _saves(url: str) -> float:
    """The daemon's durable saves so far, as its HTTP endpoint reports them."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "s1mpled_state_save_duration_seconds_count" and s.labels["operation"] == "paper-demo"
    )


def test_a_paper_daemon_serves_its_registry_on_localhost_and_releases_the_port_when_it_stops(
    tmp_path: Path,
) -> None:
    """GET /metrics answers the daemon's registry (its saves, growing as it trades); after SIGTERM the daemon
    exits 0 and nothing listens there any more."""
    daemon = Daemon(write_config(tmp_path, metrics={"listen": "127.0.0.1:0"}), tmp_path / "daemon.log")
    url = ""
    try:
        daemon.wait_trading()
        wait_until(lambda: _url(daemon) is not None, 10, "the daemon to say where it serves its metrics")
        url = _url(daemon) or ""
        assert url.startswith("http://127.0.0.1:")
        first = _saves(url)
        assert first > 0
        wait_until(lambda: _saves(url) > first, 10, "the served counts to grow with the daemon's saves")
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_a_port_that_cannot_be_bound_is_logged_and_the_daemon_trades_on(tmp_path: Path) -> None:
    """Metrics never stop trading: a port already taken is one ERROR line; the control socket still has them."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(write_config(tmp_path, metrics={"listen": f"127.0.0.1:{port}"}), tmp_path / "daemon.log")
        try:
            daemon.wait_for(lambda d: d["phase"] == "trading" and len(d["receipts"]) >= 2)
            assert f"metrics: cannot listen on 127.0.0.1:{port}" in daemon.log_path.read_text()
            assert _url(daemon) is None
        finally:
            assert daemon.stop() == 0, daemon.log_tail()


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "192.168.1.5:9464", "[::]:9464"])
def test_a_listen_address_that_is_not_loopback_is_refused_at_its_line(tmp_path: Path, listen: str) -> None:
    """file:line: metrics.listen: why -- from load_config and from `s1mpled check-config`, which exits 78."""
    path = write_config(tmp_path, metrics={"listen": listen})
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "listen:" in text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == line and "metrics.listen" in str(info.value) and "loopback" in str(info.value)
    done = subprocess.run(
        [sys.executable, "-m", "s1mpled", "check-config", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 78 and f"{path}:{line}: metrics.listen" in done.stderr, done.stderr


def test_a_remote_listen_address_is_accepted_when_explicitly_allowed(tmp_path: Path) -> None:
    """``allow_remote: true`` is the explicit way to listen beyond loopback."""
    config = load_config(write_config(tmp_path, metrics={"listen": "0.0.0.0:9464", "allow_remote": True}))
    assert config.metrics.listen == ("0.0.0.0", 9464)


def test_without_a_metrics_section_there_is_no_http_endpoint(tmp_path: Path) -> None:
    """The default is off (the shipped example only documents the section, commented out)."""
    assert load_config(write_config(tmp_path)).metrics.listen is None


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_PORTS = st.integers(min_value=0, max_value=65535)
_LOOPBACK_V4 = st.integers(min_value=0x7F000000, max_value=0x7FFFFFFF).map(ipaddress.IPv4Address)


def _hostport(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@given(st.one_of(_LOOPBACK_V4, st.just(ipaddress.IPv6Address("::1"))), _PORTS)
def test_every_loopback_address_and_port_is_accepted_as_written(address: Address, port: int) -> None:
    """All of 127.0.0.0/8 and [::1], any port, read back exactly."""
    assert parse_listen(_hostport(address, port)) == (str(address), port)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), _PORTS)
def test_a_remote_address_needs_allow_remote(address: Address, port: int) -> None:
    """Any other IPv4 or IPv6 address is refused, naming loopback, unless allow_remote; then read back exactly."""
    text = _hostport(address, port)
    if address.is_loopback:
        assert parse_listen(text) == (str(address), port)
        return
    with pytest.raises(ValueError, match="loopback"):
        parse_listen(text)
    assert parse_listen(text, allow_remote=True) == (str(address), port)


@given(st.text(max_size=40), st.booleans())
def test_any_text_is_an_address_and_port_or_a_value_error(text: str, allow_remote: bool) -> None:
    """Never another exception, never a port out of range, never a host that is not an IP address."""
    try:
        host, port = parse_listen(text, allow_remote=allow_remote)
    except ValueError:
        return
    assert 0 <= port <= 65535
    address = ipaddress.ip_address(host)
    assert allow_remote or address.is_loopback
