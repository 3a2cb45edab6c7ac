"""Prometheus metrics from the status document: names, labels and values, and the atomic textfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from s1mpled.instruments import Instruments
from s1mpled.metrics import METRIC_NAMES, registry_of, write_textfile
from tests.daemon_harness import Daemon, write_config

DOC: dict[str, Any] = {
    "operation": "demo",
    "phase": "trading",
    "disk_full": False,
    "breaker": {
        "state": "open",
        "reason": "user stream lost after 3 attempts: " + "x" * 200,
        "manual": True,
        "emergency_exit": False,
        "streams_healthy_for_s": 12.5,
    },
    "last_reconciliation": {"at_ms": 1_800_000_000_500, "passes": 7, "corrections": 2},
    "receipts": [{"compared": {"open_orders": 4, "trades": 9}, "consistent": True}, {"compared": {"trades": 1}}],
    "strategies": [
        {
            "name": "grid-eth",
            "symbol": "ETH/USDT",
            "trading": True,
            "halted": True,
            "capital": "2000.39926762",
            "holdings": "0.5",
            "last_price": "3000",
            "realized_pnl": "0.39926762",
            "fees_paid": {"USDT": "0.1", "BNB": "0.0001"},
            "state_generation": 41,
            "quote": "USDT",
            "open_orders": [{"state": "open"}, {"state": "unresolved"}, {"state": "open"}],
        }
    ],
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_status_document_becomes_labelled_gauges() -> None:
    got = _samples(generate_latest(registry_of(DOC)).decode())
    strategy = (("operation", "demo"), ("strategy", "grid-eth"), ("symbol", "ETH/USDT"))
    assert got[("s1mpled_phase", (("operation", "demo"), ("phase", "trading")))] == 1
    assert got[("s1mpled_breaker_open", (("operation", "demo"),))] == 1
    assert got[("s1mpled_breaker_manual", (("operation", "demo"),))] == 1
    assert got[("s1mpled_streams_healthy_seconds", (("operation", "demo"),))] == 12.5
    assert got[("s1mpled_reconciliation_last_timestamp_seconds", (("operation", "demo"),))] == 1_800_000_000.5
    assert got[("s1mpled_reconciliation_last_corrections", (("operation", "demo"),))] == 2
    assert got[("s1mpled_reconciliation_last_compared", (("operation", "demo"), ("what", "trades")))] == 9  # newest
    assert got[("s1mpled_reconciliation_last_consistent", (("operation", "demo"),))] == 1
    assert got[("s1mpled_strategy_trading", strategy)] == 0  # halted by the breaker
    assert got[("s1mpled_strategy_open_orders", strategy)] == 3
    assert got[("s1mpled_strategy_orders", tuple(sorted((*strategy, ("state", "open")))))] == 2
    assert got[("s1mpled_strategy_orders", tuple(sorted((*strategy, ("state", "unresolved")))))] == 1
    reasons = [dict(labels)["reason"] for name, labels in got if name == "s1mpled_breaker_reason"]
    assert reasons == [("user stream lost after 3 attempts: " + "x" * 200)[:120]]
    assert got[("s1mpled_strategy_equity", strategy)] == 2000.39926762 + 1500
    assert (
        got[("s1mpled_strategy_fees_paid", (("asset", "BNB"), ("operation", "demo"), ("strategy", "grid-eth")))]
        == 0.0001
    )
    assert {name for name, _ in got} <= METRIC_NAMES


def test_a_closed_breaker_has_no_reason() -> None:
    doc = {**DOC, "breaker": {**DOC["breaker"], "state": "closed", "manual": False}}
    got = _samples(generate_latest(registry_of(doc)).decode())
    assert got[("s1mpled_breaker_open", (("operation", "demo"),))] == 0
    assert not [name for name, _ in got if name == "s1mpled_breaker_reason"]


def test_a_daemon_that_does_not_answer_is_down_with_no_stale_values() -> None:
    got = _samples(generate_latest(registry_of(DOC, up=False)).decode())
    assert got == {("s1mpled_up", (("operation", "demo"),)): 0}


def test_a_daemon_that_has_not_loaded_yet_still_exports_what_it_knows() -> None:
    got = _samples(generate_latest(registry_of({"operation": "x", "phase": "loading-state"})).decode())
    assert got[("s1mpled_up", (("operation", "x"),))] == 1
    assert not [name for name, _ in got if name.startswith("s1mpled_strategy_")]


def test_the_textfile_of_a_running_paper_daemon_parses_and_replaces_the_old_one(tmp_path: Path) -> None:
    """The real status document of a paper daemon, written as node_exporter reads it; a rewrite replaces it."""
    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    try:
        daemon.wait_trading()
        doc = daemon.wait_for(lambda d: all(s["last_price"] is not None for s in d["strategies"]))
        path = tmp_path / "s1mpled-demo.prom"
        path.write_text("stale garbage\n")
        write_textfile(str(path), doc)
        got = _samples(path.read_text())
        names = {name for name, _ in got}
        assert {"s1mpled_strategy_capital", "s1mpled_strategy_equity", "s1mpled_reconciliation_passes"} <= names
        assert len([k for k in got if k[0] == "s1mpled_strategy_capital"]) == len(doc["strategies"])
        assert [p.name for p in tmp_path.glob("s1mpled-demo.prom*")] == ["s1mpled-demo.prom"]  # no temp left
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_the_textfile_holds_the_status_gauges_and_the_daemons_own_instruments_in_one_file(tmp_path: Path) -> None:
    """The daemon's exposition (the ``metrics`` command's text) is parsed back and written beside the gauges;
    a daemon that is down writes neither."""
    instruments = Instruments("demo")
    instruments.rest("GET /api/v3/account", 0.02, None, {"X-MBX-USED-WEIGHT-1M": "41"})
    instruments.state_saved("strategy-grid-eth.state.json", 2048, 0.001)
    path = tmp_path / "s1mpled-demo.prom"
    write_textfile(str(path), DOC, instruments=instruments.exposition())
    got = _samples(path.read_text())
    assert got[("s1mpled_rate_limit_weight_used", (("interval", "1m"), ("operation", "demo")))] == 41
    account = (("endpoint", "GET /api/v3/account"), ("operation", "demo"))
    assert got[("s1mpled_rest_request_duration_seconds_count", account)] == 1
    assert got[("s1mpled_breaker_open", (("operation", "demo"),))] == 1
    write_textfile(str(path), {"operation": "demo"}, up=False, instruments=instruments.exposition())
    assert _samples(path.read_text()) == {("s1mpled_up", (("operation", "demo"),)): 0}


GRAFANA = Path(__file__).resolve().parents[1] / "packaging" / "grafana" / "s1mpled.json"
_PROMQL_WORDS = {
    *("max", "by", "time", "sum", "rate", "increase", "histogram_quantile", "label_values", "on", "without"),
    *("operation", "phase", "le", "endpoint", "error", "file", "stream", "interval"),  # label names
    *("symbol", "kind", "strategy", "state", "reason"),
}


def test_every_expression_of_the_shipped_grafana_dashboard_names_a_metric_the_daemon_exports() -> None:
    import json
    import re

    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 18
    for expr in exprs:
        bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", expr)  # label matchers, strings, ranges name no metric
        names = {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if w not in _PROMQL_WORDS}
        assert names, expr
        assert names <= METRIC_NAMES, f"{expr!r} names {sorted(names - METRIC_NAMES)}, not exported"


def test_export_writes_the_running_daemons_metrics_and_up_0_when_it_does_not_answer(tmp_path: Path) -> None:
    """`s1mpled metrics` (what s1mpled-metrics.timer runs): up 1 with the daemon's numbers while it runs,
    up 0 and nothing else once it is stopped -- never the last numbers forever."""
    from s1mpled.config import load_config
    from s1mpled.metrics import export

    config_path = write_config(tmp_path)
    config = load_config(config_path)
    out = tmp_path / "s1mpled-x.prom"
    daemon = Daemon(config_path, tmp_path / "daemon.log")
    try:
        daemon.wait_trading()
        assert export(config, str(out), 10) == (str(out), True)
        running = _samples(out.read_text())
        assert running[("s1mpled_up", (("operation", config.operation),))] == 1
        assert any(name == "s1mpled_strategy_capital" for name, _ in running)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert export(config, str(out), 2) == (str(out), False)
    assert _samples(out.read_text()) == {("s1mpled_up", (("operation", config.operation),)): 0}
