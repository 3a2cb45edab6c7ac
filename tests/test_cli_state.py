"""`s1mpled state verify|show` as an operator runs them: a real process, real files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

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
