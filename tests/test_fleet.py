"""status --all's table, from what systemd and each daemon said (pure); the real thing is in test_systemd_e2e."""

from __future__ import annotations

from pathlib import Path

from s1mpled.fleet import Instance, config_of, format_fleet, row_of

NOW = 1_800_000_000_000
TRADING = {
    "phase": "trading",
    "breaker": {"state": "closed"},
    "last_reconciliation": {"at_ms": NOW - 41_500},
    "strategies": [{"realized_pnl": "0.39926762"}, {"realized_pnl": "-0.1"}, {"realized_pnl": None}],
}


def test_each_unit_finds_the_configuration_its_execstart_names() -> None:
    assert config_of("s1mpled.service") == Path("/etc/s1mpled/s1mpled.yaml")
    assert config_of("s1mpled@eth-grid.service") == Path("/etc/s1mpled/eth-grid.yaml")


def test_a_row_sums_the_pnl_exactly_and_a_silent_instance_says_why() -> None:
    row = row_of(Instance("s1mpled@a.service", "active", "running", status=TRADING), NOW)
    assert row == {
        "unit": "s1mpled@a.service",
        "systemd": "active/running",
        "phase": "trading",
        "breaker": "closed",
        "last reconciliation": "41 s ago",
        "strategies": "3",
        "pnl": "0.29926762",
    }
    silent = row_of(Instance("s1mpled@b.service", "failed", "failed", error="not running"), NOW)
    assert (silent["phase"], silent["strategies"], silent["pnl"]) == ("(not running)", "-", "-")


def test_the_table_aligns_its_columns_and_says_when_there_is_nothing() -> None:
    text = format_fleet(
        [
            Instance("s1mpled.service", "active", "running", status=TRADING),
            Instance("s1mpled@longer-name.service", "inactive", "dead", error="not running"),
        ],
        NOW,
    )
    header, first, second = text.splitlines()
    assert header.startswith("UNIT") and "PHASE" in header
    assert first.index("active/running") == second.index("inactive/dead") == header.index("SYSTEMD")
    assert "no s1mpled instance" in format_fleet([], NOW)
