"""The daemon's own instruments: REST latency and errors by endpoint, the exchange's weight, the clock offset,
state saves and sizes, the streams -- measured inside a live daemon against the simulator process."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from s1mpled.config import load_config
from s1mpled.control import request
from s1mpled.errors import ControlError
from s1mpled.events import ReconciliationCompleted, TradeExecuted
from s1mpled.instruments import MAX_ENDPOINTS, EventTally, Instruments, StreamFacts, endpoint_of, used_weights
from s1mpled.metrics import METRIC_NAMES, export
from s1mpled.model import Fill, Side
from s1mpled.state.store import StateDirectory
from tests.daemon_harness import Daemon, write_config
from tests.live_harness import Simulator, wait_until, write_live_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
STREAMS = ("market", "user-trades", "user-orders")


def _samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "operation"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(socket: Path) -> Samples:
    answer = asyncio.run(request(socket, "metrics", {}, timeout_s=10))
    return _samples(answer["text"])


def _by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in samples.items() if n == name}


def test_an_endpoint_is_its_method_and_path_never_its_query() -> None:
    """Ids and signatures in the query never become labels."""
    url = "http://127.0.0.1:1/api/v3/order?symbol=BTCUSDT&origClientOrderId=s1ab-7&signature=f00"
    assert endpoint_of("get", url) == "GET /api/v3/order"


def test_the_weight_headers_are_read_whatever_their_case_and_garbage_is_ignored() -> None:
    """Binance's X-MBX-USED-WEIGHT-<interval> headers, by interval; a value that is no count is skipped."""
    headers = {"x-mbx-used-weight-1m": "23", "X-MBX-USED-WEIGHT-1S": " 4 ", "X-MBX-USED-WEIGHT-1H": "lots"}
    assert used_weights({**headers, "Date": "now"}) == {"1m": 23, "1s": 4}
    assert used_weights(None) == {}


def test_the_endpoint_label_set_is_bounded() -> None:
    """A path with an id in it could grow the label set without end: past MAX_ENDPOINTS it is "other"."""
    instruments = Instruments("t")
    for i in range(MAX_ENDPOINTS + 10):
        instruments.rest(f"GET /api/v3/thing/{i}", 0.01, None, None)
    endpoints = _by(_samples(instruments.exposition()), "s1mpled_rest_request_duration_seconds_count", "endpoint")
    assert len(endpoints) == MAX_ENDPOINTS + 1 and endpoints["other"] == 10


def test_every_exported_sample_name_is_declared_for_the_dashboard_test() -> None:
    """Every sample the instruments can export is in METRIC_NAMES (which the Grafana test checks against)."""
    instruments = Instruments("t")
    instruments.rest("GET /api/v3/time", 0.01, "RequestTimeout", {"X-MBX-USED-WEIGHT-1M": "1"})
    instruments.state_saved("x.state.json", 10, 0.001)
    instruments.clock_offset(0.01)
    instruments.reconnected("market")
    instruments.watch_streams(lambda: [StreamFacts("market", True, 0, 0.5)])
    assert {name for name, _ in _samples(instruments.exposition())} <= METRIC_NAMES


def test_pushed_fills_are_counted_by_symbol_and_corrections_by_kind() -> None:
    """The event tally: each fill the stream pushes (whoever owns it) and each pass's corrections, by kind."""
    instruments = Instruments("t")
    tally = EventTally(instruments)
    fill = Fill("7", "s1x-1", "1", "ETH/USDT", Side.BUY, Decimal(3000), Decimal("0.1"), Decimal(0), "ETH", 1)
    for _ in range(3):
        tally.on_fill(TradeExecuted(fill))
    tally.on_reconciled(ReconciliationCompleted("startup", 3, 0, (("AdoptOrder", 1), ("ApplyFill", 2))))
    tally.on_reconciled(ReconciliationCompleted("schedule", 1, 0, (("ApplyFill", 1),)))
    got = _samples(instruments.exposition())
    assert _by(got, "s1mpled_fills_total", "symbol") == {"ETH/USDT": 3}
    assert _by(got, "s1mpled_reconciliation_corrections_total", "kind") == {"AdoptOrder": 1, "ApplyFill": 3}
    assert {name for name, _ in got} <= METRIC_NAMES


def test_a_paper_daemon_counts_its_fills_for_the_metrics(tmp_path: Path) -> None:
    """The tally is wired in the real daemon: its ``metrics`` command counts the fills it pushed."""
    daemon = Daemon(write_config(tmp_path), tmp_path / "daemon.log")
    try:
        daemon.wait_trading()
        socket = tmp_path / "control.sock"
        wait_until(lambda: sum(_by(_scrape(socket), "s1mpled_fills_total", "symbol").values()) >= 2, 60, "fills")
        assert set(_by(_scrape(socket), "s1mpled_fills_total", "symbol")) <= {"BTC/USDT", "ETH/USDT"}
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_the_store_reports_each_durable_save_with_its_size_and_duration(tmp_path: Path) -> None:
    """The store's one hook: every save that returned is observed once, with the bytes of the record on disk."""
    instruments = Instruments("t")
    with StateDirectory.open(tmp_path / "state") as directory:
        directory.on_saved = instruments.state_saved
        f = directory.file("a.state.json")
        f.load()
        for i in range(3):
            f.save_sync({"n": i, "pad": "x" * 100 * i})
    got = _samples(instruments.exposition())
    size = (tmp_path / "state" / "a.state.json").stat().st_size
    assert got[("s1mpled_state_size_bytes", (("file", "a.state.json"),))] == size
    assert got[("s1mpled_state_save_duration_seconds_count", (("file", "a.state.json"),))] == 3
    assert got[("s1mpled_state_save_duration_seconds_sum", (("file", "a.state.json"),))] > 0


def _sim_weight(sim: Simulator) -> Any:
    with urllib.request.urlopen(f"{sim.urls['http']}/__admin/weight", timeout=5) as resp:
        return json.loads(resp.read())["last_sent"]


def _weight_agrees(sim: Simulator, socket: Path) -> bool:
    """The daemon's gauge equals the weight the simulator last sent, with no request in between."""
    before = _scrape(socket).get(("s1mpled_rate_limit_weight_used", (("interval", "1m"),)))
    sent = _sim_weight(sim)
    after = _scrape(socket).get(("s1mpled_rate_limit_weight_used", (("interval", "1m"),)))
    return before is not None and before == sent == after


def _wait_samples(socket: Path, predicate: Callable[[Samples], bool], what: str, timeout: float = 30) -> Samples:
    found: dict[str, Samples] = {}

    def check() -> bool:
        try:
            found["s"] = _scrape(socket)
        except ControlError:
            return False
        return predicate(found["s"])

    wait_until(check, timeout, what)
    return found["s"]


def test_a_live_daemon_measures_its_requests_saves_clock_and_streams(tmp_path: Path, sim: Simulator) -> None:
    """After some trading against the simulator: REST latency by endpoint, the exchange's weight as it sent it,
    a clock offset that follows the exchange's skew, save latencies and sizes per state file, per-stream
    reconnects that go up when the simulator drops the streams, last-message ages -- over the control
    socket and in the textfile ``s1mpled metrics`` writes."""
    config = write_live_config(tmp_path, sim)
    socket = tmp_path / "control.sock"
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_trading()
        wait_until(lambda: len(sim.state()["trades"]) >= 3, 30, "some trading")
        got = _wait_samples(
            socket,
            lambda s: (
                {"POST /api/v3/order", "GET /api/v3/openOrders", "GET /api/v3/account", "GET /api/v3/time"}
                <= set(_by(s, "s1mpled_rest_request_duration_seconds_count", "endpoint"))
            ),
            "REST latency samples of orders, reconciliation and the clock",
        )
        assert all(v > 0 for v in _by(got, "s1mpled_rest_request_duration_seconds_sum", "endpoint").values())
        wait_until(lambda: _weight_agrees(sim, socket), 20, "the weight gauge to equal what the simulator sent")

        saves = _by(got, "s1mpled_state_save_duration_seconds_count", "file")
        sizes = _by(got, "s1mpled_state_size_bytes", "file")
        assert saves["strategy-dca-btc.state.json"] > 0 and saves["reconciliation-receipts.state.json"] > 0
        assert sizes["strategy-grid-eth.state.json"] > 0 and set(sizes) == set(saves)

        assert abs(got[("s1mpled_exchange_clock_offset_seconds", ())]) < 0.25
        sim.inject("clock_skew", ms=400)
        daemon.reconcile()  # one pass: one clock look after it
        _wait_samples(
            socket,
            lambda s: abs(s[("s1mpled_exchange_clock_offset_seconds", ())] - 0.4) < 0.15,
            "the clock offset to show the exchange's 400 ms skew",
        )

        ages = _by(got, "s1mpled_stream_last_message_age_seconds", "stream")
        assert 0 <= ages["market"] < 3  # ticks every 50 ms; the heartbeat is 3 s
        assert _by(got, "s1mpled_stream_up", "stream") == dict.fromkeys(STREAMS, 1)
        before = _by(got, "s1mpled_stream_reconnects_total", "stream")
        assert set(before) == set(STREAMS)
        sim.inject("ws_drop")
        _wait_samples(
            socket,
            lambda s: (
                all(_by(s, "s1mpled_stream_reconnects_total", "stream")[n] > before[n] for n in STREAMS)
                and _by(s, "s1mpled_stream_up", "stream") == dict.fromkeys(STREAMS, 1)
            ),
            "every stream to count its reconnection and be up again",
        )

        out = tmp_path / "s1mpled-live-test.prom"
        assert export(load_config(config), str(out), 10) == (str(out), True)
        names = {name for name, _ in _samples(out.read_text())}
        assert {"s1mpled_strategy_capital", "s1mpled_rest_request_duration_seconds_bucket"} <= names
        assert {"s1mpled_stream_reconnects_total", "s1mpled_state_size_bytes"} <= names <= METRIC_NAMES
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_rest_errors_are_counted_by_endpoint_and_error_class(tmp_path: Path, sim: Simulator) -> None:
    """Two 503s on the account endpoint are two ExchangeNotAvailable errors there, and latency samples too."""
    config = write_live_config(tmp_path, sim, frozen=True)
    socket = tmp_path / "control.sock"
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_trading()
        sim.inject("http_error", status=503, times=2, path="^/api/v3/account$")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a pass fails on the first 503; the next one meets the second
            try:
                daemon.reconcile(timeout=15)
            except ControlError:
                continue
            if not sim.faults()["faults"]:
                break
        got = _scrape(socket)
        errors = {
            (dict(labels)["endpoint"], dict(labels)["error"]): v
            for (n, labels), v in got.items()
            if n == "s1mpled_rest_errors_total"
        }
        assert errors[("GET /api/v3/account", "ExchangeNotAvailable")] == 2, errors
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
