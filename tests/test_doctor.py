"""s1mpled doctor: the verdicts (pure, any numbers) and the command against the real ccxt and the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from s1mpled.doctor import (
    FAIL,
    MAX_CLOCK_OFFSET_MS,
    MIN_FREE_BYTES,
    OK,
    WARN,
    Finding,
    PathFacts,
    exit_code,
    format_findings,
    judge_api_key,
    judge_clock,
    judge_exchange_status,
    judge_state_dir,
    judge_units,
)
from tests.daemon_harness import write_config
from tests.live_harness import Simulator, write_live_config

GOOD_KEY = {"enableSpotAndMarginTrading": True, "enableWithdrawals": False, "ipRestrict": True}


@given(st.integers(-(10**9), 10**9))
def test_the_clock_fails_exactly_beyond_the_bound_either_way(offset: int) -> None:
    finding = judge_clock(offset)
    assert finding.level == (OK if abs(offset) <= MAX_CLOCK_OFFSET_MS else FAIL)
    assert ("behind" if offset > 0 else "ahead of") in finding.detail
    assert finding.level == OK or "timedatectl" in finding.fix


def test_a_key_that_can_withdraw_or_cannot_trade_fails_with_the_fix() -> None:
    assert [f.level for f in judge_api_key(GOOD_KEY)] == [OK]
    withdraw = judge_api_key({**GOOD_KEY, "enableWithdrawals": True})
    assert [f.level for f in withdraw] == [FAIL] and "disable withdrawals" in withdraw[0].fix
    no_trade = judge_api_key({**GOOD_KEY, "enableSpotAndMarginTrading": False})
    assert [f.level for f in no_trade] == [FAIL] and "enable spot trading" in no_trade[0].fix
    assert [f.level for f in judge_api_key({**GOOD_KEY, "ipRestrict": False})] == [OK, WARN]
    assert [f.level for f in judge_api_key({})] == [FAIL, FAIL, WARN]  # a field missing is not "disabled"
    unknown = judge_api_key(None, "404")
    assert [f.level for f in unknown] == [WARN] and "404" in unknown[0].detail


def test_the_exchange_unreachable_or_in_maintenance_fails_and_an_unknown_status_warns() -> None:
    assert judge_exchange_status(True, "", {"status": 0, "msg": "normal"}).level == OK
    assert judge_exchange_status(True, "", {"status": 1, "msg": "system_maintenance"}).level == FAIL
    assert judge_exchange_status(False, "ConnectError", None).level == FAIL
    assert judge_exchange_status(True, "NotSupported", None).level == WARN


def _facts(name: str, kind: str = "file", mode: int = 0o600, uid: int = 100) -> PathFacts:
    return PathFacts(name, kind, mode, uid)


def test_the_state_directory_must_be_private_hold_only_its_owners_files_and_have_room() -> None:
    d = _facts("s1mpled", "dir", 0o700)
    instance = _facts("inst", "dir", 0o700)  # s1mpled@inst's books live below the main state directory
    ok = judge_state_dir("/v", True, d, [_facts("a.state.json"), instance], MIN_FREE_BYTES)
    assert [(f.level, f.detail) for f in ok] == [(OK, "/v: private, 1 file(s), 100 MiB free")]
    assert judge_state_dir("/v", False, None, [], None)[0].level == FAIL
    loose = judge_state_dir("/v", True, _facts("s1mpled", "dir", 0o755), [], MIN_FREE_BYTES)
    assert [f.level for f in loose] == [FAIL] and "chmod 0700" in loose[0].fix
    odd = judge_state_dir("/v", True, d, [_facts("x", "link"), _facts("y", uid=0)], MIN_FREE_BYTES)
    assert [f.detail for f in odd] == ["/v/x: link", "/v/y: owned by uid 0, not 100"]
    full = judge_state_dir("/v", True, d, [], MIN_FREE_BYTES - 1)
    assert [(f.check, f.level) for f in full] == [("free space", FAIL)]


def test_units_need_systemd_an_active_daemon_with_a_watchdog_and_an_enabled_timer() -> None:
    assert [f.level for f in judge_units(False, {})] == [WARN]
    good = {
        "s1mpled.service": {"ActiveState": "active", "SubState": "running", "WatchdogUSec": "10s"},
        "s1mpled-reconcile.timer": {"ActiveState": "active", "UnitFileState": "enabled"},
    }
    assert [f.level for f in judge_units(True, good)] == [OK, OK]
    bad = {
        "s1mpled.service": {"ActiveState": "failed", "WatchdogUSec": "10s"},
        "s1mpled-reconcile.timer": {"ActiveState": "inactive", "UnitFileState": "disabled"},
    }
    assert [f.level for f in judge_units(True, bad)] == [FAIL, FAIL]
    assert judge_units(True, {"s1mpled.service": {"ActiveState": "active", "WatchdogUSec": "0"}})[0].level == FAIL


def test_exit_code_and_text_say_what_failed_and_how_to_fix_it() -> None:
    findings = [Finding("a", OK, "fine"), Finding("b", WARN, "hm", "look"), Finding("c", FAIL, "bad", "do x")]
    assert exit_code(findings) == 1 and exit_code(findings[:2]) == 0
    text = format_findings(findings)
    assert "FAIL  c: bad\n      fix: do x" in text and "3 checks: 1 failed, 1 warnings" in text


# ------------------------------------------------------------------------------ the command


def _doctor(config: Path) -> tuple[int, list[dict[str, Any]]]:
    out = subprocess.run(
        [sys.executable, "-m", "s1mpled", "doctor", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    findings = json.loads(out.stdout)
    assert out.returncode == (1 if any(f["level"] == FAIL for f in findings) else 0)
    return out.returncode, findings


def _by_check(findings: list[dict[str, Any]]) -> dict[str, list[str]]:
    levels: dict[str, list[str]] = {}
    for f in findings:
        levels.setdefault(f["check"], []).append(f["level"])
    return levels


def test_doctor_against_the_exchange_finds_clock_maintenance_and_a_key_that_can_withdraw(
    tmp_path: Path, sim: Simulator
) -> None:
    """Live mode, the real ccxt against the simulator: healthy first (clock, status, key), then the server's
    clock 3 s off, the system in maintenance and withdrawals enabled on the key -- each a failure."""
    config = write_live_config(tmp_path, sim)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    code, findings = _doctor(config)
    levels = _by_check(findings)
    assert levels["clock"] == [OK] and levels["exchange"] == [OK] and levels["credentials"] == [OK]
    assert levels["API key permissions"] == [OK, WARN]  # no IP restriction on the simulator's key
    assert levels["state directory"] == [OK]
    sim.inject("clock_skew", ms=3000)
    sim.account(maintenance=True, withdrawals=True)
    code, findings = _doctor(config)
    levels = _by_check(findings)
    assert code == 1
    assert levels["clock"] == [FAIL] and levels["exchange"] == [FAIL]
    assert FAIL in levels["API key permissions"]
    assert any("withdrawals are ENABLED" in f["detail"] and "disable withdrawals" in f["fix"] for f in findings)


def test_doctor_in_paper_mode_checks_the_state_directory(tmp_path: Path) -> None:
    """A loose state directory with a symlink planted in it: both named, with their fix, exit 1."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o755, exist_ok=True)
    os.chmod(state, 0o755)
    (state / "planted").symlink_to("/etc/passwd")
    code, findings = _doctor(config)
    assert code == 1
    details = [f["detail"] for f in findings if f["check"] == "state directory"]
    assert f"{state} is mode 0755" in details and f"{state}/planted: link" in details
    assert _by_check(findings)["exchange"] == [OK]  # paper mode: nothing to reach
