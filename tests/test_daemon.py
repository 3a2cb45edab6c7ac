"""The daemon as a real process in paper mode: it trades, survives SIGKILL anywhere, stops cleanly.

Every crash scenario ends with the durable books compared against the simulated exchange, which is
the source of truth: no lost fill, no fill counted twice, no duplicate order, balances equal.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from s1mpled.assembly import strategy_state_name
from tests.daemon_harness import (
    Daemon,
    assert_ledgers_equal_exchange,
    assert_no_duplicate_orders,
    assert_no_phantoms,
    frozen_config,
    read_books,
    write_config,
)

KILLS = int(os.environ.get("S1MPLED_DAEMON_KILLS", "24"))


def _fills(doc: dict[str, object]) -> int:
    strategies = doc["strategies"]
    assert isinstance(strategies, list)
    return sum(1 for s in strategies if s["holdings"] != "0")


def _verify_after_orderly_restart(tmp_path: Path, log: Path) -> None:
    """Restart with frozen prices (nothing can move), let recovery reconcile, stop, compare exactly."""
    daemon = Daemon(frozen_config(tmp_path), log)
    daemon.wait_trading()
    daemon.reconcile()  # catches a fill of an order placed at start that the stream had not delivered yet
    assert daemon.stop() == 0, daemon.log_tail()
    books = read_books(tmp_path / "state")
    assert books is not None
    assert_ledgers_equal_exchange(books)
    assert_no_duplicate_orders(books)


def test_paper_daemon_trades_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """Paper mode starts with zero setup, trades both strategies, and SIGTERM exits 0 with state persisted."""
    log = tmp_path / "daemon.log"
    daemon = Daemon(write_config(tmp_path), log)
    daemon.wait_trading()
    daemon.wait_for(lambda d: _fills(d) == 2, timeout=30)
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log_tail()
    text = log.read_text()
    assert "READY" in text and "stopped" in text
    assert (tmp_path / "state" / strategy_state_name("dca-btc")).exists()
    _verify_after_orderly_restart(tmp_path, log)


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """Dozens of SIGKILLs mid-trading: after each restart the ledgers equal the exchange, nothing lost or doubled."""
    rng = random.Random(int(os.environ.get("S1MPLED_DAEMON_SEED", "6")))
    log = tmp_path / "daemon.log"
    config = write_config(tmp_path)
    for i in range(KILLS):
        daemon = Daemon(write_config(tmp_path) if i else config, log)
        if rng.random() < 0.25:  # sometimes during recovery itself
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            daemon.wait_trading()
            time.sleep(rng.uniform(0.05, 0.8))
        daemon.stop(signal.SIGKILL)
        assert_no_phantoms(read_books(tmp_path / "state"))
        if i % 4 == 3:
            _verify_after_orderly_restart(tmp_path, log)
    _verify_after_orderly_restart(tmp_path, log)
    books = read_books(tmp_path / "state")
    assert books is not None and len(books.exchange.trades()) > KILLS, "the daemon hardly traded"
    corrected = log.read_text().count("reconciliation corrected")
    assert corrected > 0, "no kill ever landed between the exchange and the ledger; the test proved little"


def test_bad_config_exits_78_with_file_line_and_key(tmp_path: Path) -> None:
    """A typo in the config is one precise message and exit 78 (systemd will not restart-loop)."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("operation:", "operaton:", 1))
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 78
    assert f"{config}:" in out.stderr and "operaton" in out.stderr
    assert not (tmp_path / "state").exists(), "nothing may be created before the config is valid"


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    """`s1mpled check-config` accepts the example and rejects a bad strategy parameter at its line with 78."""
    config = write_config(tmp_path)
    ok = subprocess.run(
        [sys.executable, "-m", "s1mpled", "check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    config.write_text(config.read_text().replace("levels: 4", "levels: 400"))
    bad = subprocess.run(
        [sys.executable, "-m", "s1mpled", "check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 78 and "levels" in bad.stderr, bad.stderr


def test_damaged_ledger_falls_back_to_prev_and_reconciliation_restores_truth(tmp_path: Path) -> None:
    """A bit-flipped ledger loads its previous generation loudly; startup reconciliation then catches it up."""
    log = tmp_path / "daemon.log"
    daemon = Daemon(write_config(tmp_path), log)
    daemon.wait_trading()
    daemon.wait_for(lambda d: _fills(d) == 2, timeout=30)
    assert daemon.stop() == 0
    path = tmp_path / "state" / strategy_state_name("grid-eth")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x20
    path.write_bytes(bytes(data))
    _verify_after_orderly_restart(tmp_path, log)
    text = log.read_text()
    assert "FELL BACK to the previous generation" in text
    assert list((tmp_path / "state").glob("strategy-grid-eth.state.json.corrupt-*"))


def test_damaged_ledger_without_prev_refuses_to_start(tmp_path: Path) -> None:
    """With no verified generation left, the daemon refuses to start, naming the file; nothing is overwritten."""
    log = tmp_path / "daemon.log"
    daemon = Daemon(write_config(tmp_path), log)
    daemon.wait_trading()
    assert daemon.stop() == 0
    state = tmp_path / "state"
    for name in (strategy_state_name("dca-btc"), strategy_state_name("dca-btc") + ".prev"):
        if (state / name).exists():
            (state / name).write_bytes(b"garbage")
    before = (state / strategy_state_name("dca-btc")).read_bytes()
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "run", "--config", str(tmp_path / "s1mpled.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "strategy-dca-btc.state.json" in out.stderr and "no verified generation" in out.stderr
    assert (state / strategy_state_name("dca-btc")).read_bytes() == before


def test_garbage_on_the_control_socket_is_answered_and_survived(tmp_path: Path) -> None:
    """Malformed and oversized requests get an error reply; the daemon keeps trading and answering."""
    import socket as sk

    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    daemon.wait_trading()
    for payload in (b"not json\n", b'{"cmd": 5}\n', b'{"cmd": "rm -rf"}\n', b"\xff\xfe\n", b"x" * 70000 + b"\n"):
        with sk.socket(sk.AF_UNIX, sk.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(tmp_path / "control.sock"))
            s.sendall(payload)
            reply = s.recv(65536)
        assert b'"ok": false' in reply or b'"ok":false' in reply, (payload[:20], reply)
    assert daemon.status()["phase"] == "trading"
    assert daemon.stop() == 0


def test_halt_and_resume_through_the_control_socket_survive_restart(tmp_path: Path) -> None:
    """`s1mpled halt` opens the breaker, which stays open across a restart until `s1mpled resume`."""
    config = write_config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()
    cli = [sys.executable, "-m", "s1mpled"]
    out = subprocess.run(
        [*cli, "halt", "--config", str(config), "--reason", "test"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert daemon.status()["breaker"]["state"] == "open"
    daemon.stop(signal.SIGKILL)
    daemon = Daemon(config, tmp_path / "daemon.log")
    doc = daemon.wait_trading()
    assert doc["breaker"]["state"] == "open" and all(s["halted"] for s in doc["strategies"])
    out = subprocess.run([*cli, "resume", "--config", str(config)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert daemon.status()["breaker"]["state"] == "closed"
    assert daemon.stop() == 0


def test_sighup_reloads_log_level_and_keeps_trading(tmp_path: Path) -> None:
    """SIGHUP re-reads the config; an invalid new config is refused and the daemon keeps running."""
    config = write_config(tmp_path)
    log = tmp_path / "daemon.log"
    daemon = Daemon(config, log)
    daemon.wait_trading()
    config.write_text(config.read_text().replace("log_level: info", "log_level: debug"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda d: "configuration reloaded" in log.read_text())
    config.write_text(config.read_text().replace("log_level: debug", "log_level: loud"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda d: "reload refused" in log.read_text())
    assert daemon.status()["phase"] == "trading"
    assert daemon.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_exit_zero_within_seconds(tmp_path: Path, sig: int) -> None:
    """SIGINT and SIGTERM both stop the daemon with exit 0 in well under the shutdown timeout."""
    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    daemon.wait_trading()
    started = time.monotonic()
    assert daemon.stop(sig) == 0
    assert time.monotonic() - started < 5


def test_status_json_and_reconcile_cli_against_the_running_daemon(tmp_path: Path) -> None:
    """`status --json` and `reconcile` talk to the running daemon; the reconciliation runs inside it."""
    config = write_config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()
    cli = [sys.executable, "-m", "s1mpled"]
    out = subprocess.run(
        [*cli, "status", "--json", "--config", str(config)], capture_output=True, text=True, check=False
    )
    doc = json.loads(out.stdout)
    assert doc["phase"] == "trading" and {s["name"] for s in doc["strategies"]} == {"dca-btc", "grid-eth"}
    before = doc["last_reconciliation"]["passes"]
    out = subprocess.run([*cli, "reconcile", "--config", str(config)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "reconciliation done" in out.stdout, out.stderr
    assert daemon.status()["last_reconciliation"]["passes"] > before
    assert daemon.stop() == 0


def test_control_commands_fail_clearly_without_a_daemon(tmp_path: Path) -> None:
    """`s1mpled status` with no daemon running says so and exits non-zero (no traceback)."""
    config = write_config(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "status", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0 and "does not seem to run" in out.stderr and "Traceback" not in out.stderr


def test_paper_replay_of_a_recorded_csv_drives_prices(tmp_path: Path) -> None:
    """With paper.replay_csv the simulated exchange replays recorded prices instead of simulating them."""
    rows = ["timestamp_ms,symbol,price"]
    for i in range(400):
        rows.append(f"{1_700_000_000_000 + i * 1000},ETH/USDT,{3000 - (i % 40) * 5}.00")
        rows.append(f"{1_700_000_000_000 + i * 1000},BTC/USDT,{50000 + i}.00")
    (tmp_path / "prices.csv").write_text("\n".join(rows) + "\n")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("replay_csv: null", f"replay_csv: {tmp_path / 'prices.csv'}"))
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()
    doc = daemon.wait_for(lambda d: all(s["last_price"] is not None for s in d["strategies"]))
    prices = {s["symbol"]: Decimal(s["last_price"]) for s in doc["strategies"]}
    assert prices["BTC/USDT"] >= Decimal("50000") and prices["BTC/USDT"] == prices["BTC/USDT"].to_integral_value()
    assert prices["ETH/USDT"] % 5 == 0
    daemon.wait_for(lambda d: _fills(d) >= 1)
    assert daemon.stop() == 0


def test_paper_mode_never_imports_ccxt() -> None:
    """Importing the whole daemon for paper mode does not import ccxt (~0.6 s and ~100 MiB)."""
    code = "import sys, s1mpled.cli, s1mpled.operation; assert not [m for m in sys.modules if m.startswith('ccxt')]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_shipped_config_runs_with_zero_setup_on_a_fresh_home(tmp_path: Path) -> None:
    """`make run`'s path: the example config, no state_dir, a home without ~/.local/state: it starts trading."""
    import asyncio

    from s1mpled.control import request
    from s1mpled.errors import ControlError

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "STATE_DIRECTORY", "RUNTIME_DIRECTORY")}
    env["HOME"] = str(home)
    example = Path(__file__).resolve().parents[1] / "etc" / "s1mpled" / "s1mpled.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "s1mpled", "run", "--config", str(example)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    socket = home / ".local" / "state" / "s1mpled" / "control.sock"
    try:
        deadline = time.monotonic() + 30
        phase = None
        while time.monotonic() < deadline and phase != "trading":
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                phase = asyncio.run(request(socket, "status", timeout_s=5))["phase"]
            except ControlError:
                time.sleep(0.05)
        assert phase == "trading"
        assert oct((home / ".local" / "state" / "s1mpled").stat().st_mode & 0o777) == "0o700"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_books_of_another_mode_or_operation_are_refused(tmp_path: Path) -> None:
    """Paper books never become live capital: a state dir made by another mode/operation stops the start (78)."""
    config = write_config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()
    assert daemon.stop() == 0
    config.write_text(config.read_text().replace("operation: paper-demo", "operation: other-op"))
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 78
    assert "belongs to" in out.stderr and "'operation': 'paper-demo'" in out.stderr and "move" in out.stderr
