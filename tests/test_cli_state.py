"""`s1mpled state verify|show` as an operator runs them: a real process, real files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from s1mpled.state import codec
from s1mpled.state.store import StateDirectory

NAME = "dca.state.json"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s1mpled", *args], check=False, capture_output=True, text=True, timeout=60
    )


def _make(tmp_path: Path) -> Path:
    with StateDirectory.open(tmp_path) as sd:
        f = sd.file(NAME)
        f.load()
        f.save_sync({"capital": Decimal("1000.10"), "n": 1})
        f.save_sync({"capital": Decimal("975.35"), "n": 2})
    return tmp_path / NAME


def test_verify_ok_prints_generation_and_checksum(tmp_path: Path) -> None:
    """verify exits 0 and reports the generation, the length and what load() would use."""
    path = _make(tmp_path)
    out = _run("state", "verify", str(path))
    assert out.returncode == 0, out.stderr
    assert "OK generation 2" in out.stdout and "load() would use dca.state.json (generation 2)" in out.stdout


def test_verify_damaged_file_exits_65_with_reason(tmp_path: Path) -> None:
    """verify of a damaged file exits 65 and names the file and the damage on stderr."""
    path = _make(tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    out = _run("state", "verify", str(path))
    assert out.returncode == 65
    assert str(path) in out.stderr and "truncated" in out.stderr


def test_verify_prev_reports_the_fallback(tmp_path: Path) -> None:
    """verify of .prev next to a damaged main file says load() would fall back to it."""
    path = _make(tmp_path)
    path.write_bytes(b"junk")
    out = _run("state", "verify", str(path) + ".prev")
    assert out.returncode == 0
    assert "would use dca.state.json.prev (generation 1)" in out.stdout and "FELL BACK" in out.stdout


def test_show_prints_exact_decimals(tmp_path: Path) -> None:
    """show prints the state as JSON with generation and sha256; Decimals keep every digit."""
    out = _run("state", "show", str(_make(tmp_path)))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["generation"] == 2 and len(doc["sha256"]) == 64
    assert doc["state"] == {"capital": "975.35", "n": 2}


def test_show_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """show of a file that does not exist exits non-zero naming it."""
    out = _run("state", "show", str(tmp_path / "nope.json"))
    assert out.returncode == 65 and "nope.json" in out.stderr and "No such file" in out.stderr


BREAKER = "circuit-breaker.state.json"
_BREAKER_PAYLOAD = (
    b'{"state":"open","reason":"x","manual":false,"opened_ms":%s,'
    b'"stable_since_ms":null,"reconciled_after_stable":false}'
)
SCHEDULE = "events:\n  five_minute_reconciliation_tick: {every: 5m}\n  strategy_tick: {every: 5s}\n"
_CONFIG = """\
operation: cli-state
mode: paper
state_dir: state
control_socket: ctl.sock
paper:
  balances: {USDT: "5000"}
  markets:
    BTC/USDT: {start_price: "50000", volatility: "0.002", liquidity: "0.05", price_step: "0.01", amount_step: "0.00001"}
strategies:
  - {name: dca-btc, class: "s1mpled.strategies.dca:DCA", symbol: BTC/USDT, capital: "1000",
     params: {quote_per_buy: "25", every_event: strategy_tick}}
"""


def test_verify_refuses_an_infinity_naming_the_key(tmp_path: Path) -> None:
    """A checksummed breaker state holding `opened_ms: Infinity` fails verify (65), naming the file and the key."""
    path = tmp_path / BREAKER
    path.write_bytes(codec.frame(_BREAKER_PAYLOAD % b"Infinity", 1))
    out = _run("state", "verify", str(path))
    assert out.returncode == 65, out.stdout
    assert str(path) in out.stderr and "refused value at opened_ms: Infinity is not a finite number" in out.stderr


def test_verify_refuses_a_symlink(tmp_path: Path) -> None:
    """verify never follows a symbolic link (load() would refuse it too)."""
    path = _make(tmp_path / "d")
    link = tmp_path / "d" / "link.state.json"
    link.symlink_to(path)
    out = _run("state", "verify", str(link))
    assert out.returncode == 65 and "is a symbolic link" in out.stderr


@pytest.mark.parametrize(
    ("value", "why"), [(b"Infinity", "refused value at opened_ms"), (b'"soon"', "state.opened_ms")]
)
def test_run_refuses_an_unusable_breaker_state_in_one_line(tmp_path: Path, value: bytes, why: str) -> None:
    """`run` with a bad breaker state exits with the state-error code and one line naming file and key, no traceback."""
    (tmp_path / "s1mpled.yaml").write_text(_CONFIG)
    (tmp_path / "schedule.yaml").write_text(SCHEDULE)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / BREAKER).write_bytes(codec.frame(_BREAKER_PAYLOAD % value, 1))
    out = _run("run", "--config", str(tmp_path / "s1mpled.yaml"))
    assert out.returncode == 70, out.stderr
    assert "Traceback" not in out.stderr
    [line] = [x for x in out.stderr.splitlines() if "CRITICAL s1mpled.cli: s1mpled stopped: " in x]
    assert str(tmp_path / "state" / BREAKER) in line and why in line, line


def test_verify_of_the_record_log_reports_its_entries_or_its_damage(tmp_path: Path) -> None:
    """`state verify state.wal`: OK with the records and each state's entries; damage exits 65 naming it."""
    with StateDirectory.open(tmp_path) as sd:
        f = sd.file(NAME)
        f.use_log()
        f.load()
        for n in range(1, 6):
            f.save_sync({"capital": Decimal("1000.10") - n, "n": n})
    log = tmp_path / "state.wal"
    out = _run("state", "verify", str(log))
    assert out.returncode == 0, out.stderr
    assert "OK record log, 5 records" in out.stdout and f"entries: {NAME} 4" in out.stdout, out.stdout
    data = bytearray(log.read_bytes())
    data[120] ^= 1  # inside the first batch: verified records follow it
    log.write_bytes(bytes(data))
    out = _run("state", "verify", str(log))
    assert out.returncode == 65 and str(log) in out.stderr and "followed by verified records" in out.stderr, out
    shown = _run("state", "show", str(tmp_path / NAME))
    assert shown.returncode == 65 and "state.wal" in shown.stderr
