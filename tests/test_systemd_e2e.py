"""End to end: the real .deb, installed with apt-get into a real systemd 252 (PID 1 of a systemd-nspawn
container), trading live against the exchange simulator on the host.

Each test checks one promise of debian/README.Debian and the units, the way an operator would see it:
``systemctl status``, ``journalctl``, ``kill -9``, a hung event loop, a bad config, a crash loop, the
reconcile timer, the sandbox, upgrade and purge. The expensive set-up happens once per session
(tests/container.py: cached build and root file system, boot, install, switch to live mode); each
test then starts from the same healthy daemon (the ``stack`` fixture removes the test drop-ins,
restores the config and starts the daemon if needed), and the destructive tests come last, in file
order (reinstall, then purge). The simulator runs on the host: the container shares its network
namespace, so the daemon reaches it at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from s1mpled.assembly import strategy_state_name
from s1mpled.orders import parse_client_order_id
from s1mpled.state.inspect import inspect
from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET
from tests.container import (
    ROOTFS_PACKAGES,
    Container,
    Phases,
    build_deb,
    deb_depends,
    ensure_host_packages,
    rootfs_tarball,
    wait_until,
)
from tests.live_harness import (
    CAPITAL,
    STRATEGIES,
    Simulator,
    assert_books_equal_exchange,
    assert_no_duplicate_orders,
    read_ledgers,
)

UNIT = "s1mpled.service"
TIMER = "s1mpled-reconcile.timer"
RECONCILE = "s1mpled-reconcile.service"
ALERT = f"s1mpled-alert@{UNIT}.service"  # OnFailure=s1mpled-alert@%n.service
CONFIG = "/etc/s1mpled/s1mpled.yaml"
SCHEDULE = "/etc/s1mpled/e2e-schedule.yaml"
KEY_FILE = "/etc/s1mpled/credentials/binance.key"
STATE_DIR = "/var/lib/s1mpled"
DROPINS = {
    UNIT: "/etc/systemd/system/s1mpled.service.d/e2e.conf",
    TIMER: "/etc/systemd/system/s1mpled-reconcile.timer.d/e2e.conf",
}
SYMBOLS = {"dca-btc": "BTC/USDT", "grid-eth": "ETH/USDT"}
MAX_EXPOSURE = 1.5
START_S = 120  # TimeoutStartSec of the unit


# ------------------------------------------------------------------------------------ configuration


def live_config(sim: Simulator) -> str:
    """Live mode against the simulator, with the packaged paths and the key from LoadCredential=."""
    doc = {
        "operation": "e2e",
        "mode": "live",
        "state_dir": STATE_DIR,
        "control_socket": "/run/s1mpled/control.sock",
        "schedule": Path(SCHEDULE).name,
        "shutdown_timeout": "10s",
        "circuit_breaker": {"emergency_exit": False, "auto_close_after": "2s", "max_reconnect_attempts": 3},
        "live": {
            "exchange": "binance",
            # README.Debian's spelling: LoadCredential=s1mpled:/etc/s1mpled/credentials prefixes each file.
            "credentials": f"s1mpled_{Path(KEY_FILE).name}",
            "urls": {"http": sim.urls["http"], "ws": sim.urls["ws"]},
            "rate_limit": False,
            "request_timeout": "2s",
            "heartbeat": "3s",
        },
        "strategies": [
            {
                "name": "dca-btc",
                "class": "s1mpled.strategies.dca:DCA",
                "symbol": SYMBOLS["dca-btc"],
                "capital": str(CAPITAL["dca-btc"]),
                "params": {"quote_per_buy": "5", "every_event": "strategy_tick"},  # 200 buys: lasts the session
            },
            {
                "name": "grid-eth",
                "class": "s1mpled.strategies.grid:Grid",
                "symbol": SYMBOLS["grid-eth"],
                "capital": str(CAPITAL["grid-eth"]),
                "params": {"levels": 3, "spacing": "0.0008", "order_quote": "100"},
            },
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def schedule(*, frozen: bool = False) -> str:
    """Strategy ticks every 2 s; ``frozen``: no scheduled decisions at all (for comparing books)."""
    events = {
        "five_minute_reconciliation_tick": {"every": "1h"},
        "strategy_tick": {"every": "1h" if frozen else "2s"},
    }
    return yaml.safe_dump({"events": events})


# ------------------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """The booted container with s1mpled installed and live, and the simulator it trades on."""

    ct: Container
    sim: Simulator
    deb: Path
    config: str
    after_install: dict[str, str]
    live_from: str  # journal cursor from after the paper daemon stopped (before the live one started)

    def state(self, *props: str) -> dict[str, str]:
        props = props or ("ActiveState", "SubState", "Result", "NRestarts", "MainPID", "ExecMainStatus")
        return self.ct.show(UNIT, *props)

    def wait_active(self, timeout: float = START_S, *, replacing: str = "") -> dict[str, str]:
        """Wait until the daemon is active (running), i.e. READY=1 came -- from a main process other than
        ``replacing``, if given."""

        def active() -> dict[str, str] | None:
            st = self.state("ActiveState", "SubState", "NRestarts", "MainPID", "InvocationID", "StatusText")
            ready = (st["ActiveState"], st["SubState"]) == ("active", "running") and st["MainPID"] != replacing
            return st if ready else None

        return wait_until(active, timeout, f"{UNIT} to be active (replacing main PID {replacing or '-'})")

    def wait_state(self, timeout: float, **expected: str) -> dict[str, str]:
        """Wait until the unit's properties have the ``expected`` values; all of :meth:`state` then."""

        def reached() -> dict[str, str] | None:
            st = self.state(*{"ActiveState", "SubState", "Result", "NRestarts", "ExecMainStatus", *expected})
            return st if all(st[k] == v for k, v in expected.items()) else None

        return wait_until(reached, timeout, f"{UNIT} to reach {expected}")

    def dropin(self, unit: str, text: str) -> None:
        self.ct.write(DROPINS[unit], text)
        self.ct.systemctl("daemon-reload")

    def restore(self) -> None:
        """Back to the healthy live daemon: no test drop-ins, the good config, started, rate limit reset."""
        ct, changed = self.ct, False
        for path in DROPINS.values():
            if ct.path(path).exists():
                ct.path(path).unlink()
                changed = True
        if changed:
            ct.systemctl("daemon-reload")
            ct.systemctl("restart", TIMER)
        for path, text in ((CONFIG, self.config), (SCHEDULE, schedule())):
            if ct.path(path).read_text() != text:
                ct.write(path, text, mode=0o640, owner="root:s1mpled")
                changed = True
        ct.systemctl("reset-failed", UNIT, check=False)  # also resets the start rate limit and NRestarts
        if changed or self.state("ActiveState")["ActiveState"] != "active":
            ct.systemctl("restart", UNIT, check=False)
        self.wait_active()

    def journal(self, *args: str, after: str | None = None) -> list[dict[str, Any]]:
        return self.ct.journal("-u", UNIT, *args, after=after)

    def wait_journal(self, text: str, after: str | None, timeout: float = 60) -> list[dict[str, Any]]:
        """The daemon's journal after ``after`` once some entry's message contains ``text``."""

        def found() -> list[dict[str, Any]] | None:
            entries = self.journal(after=after)
            return entries if any(text in str(e.get("MESSAGE", "")) for e in entries) else None

        return wait_until(found, timeout, f"{text!r} in the journal of {UNIT}", interval=0.25)

    def daemon_status(self) -> dict[str, Any]:
        return json.loads(self.ct.run("s1mpled", "status", "--json", "--timeout", "10").stdout)  # type: ignore[no-any-return]

    def our_fills(self, symbol: str | None = None) -> int:
        """Trades of the daemon's own orders on the exchange (of ``symbol`` only, if given)."""
        ours = [t for t in self.sim.state()["trades"] if parse_client_order_id(t["client_order_id"]) is not None]
        return sum(1 for t in ours if symbol is None or t["symbol"] == symbol)


def _report(config: pytest.Config, line: str) -> None:
    """A line on the terminal even while pytest captures output (set-up timings are worth seeing)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(line)


def _go_live(ct: Container, sim: Simulator) -> tuple[str, str]:
    """From the packaged paper daemon to live mode, as README.Debian says, with fresh books for the new account.
    Returns the config and a journal cursor taken once the paper daemon has stopped (its last lines come before)."""
    before = ct.cursor()
    ct.systemctl("stop", UNIT)
    # journald reads the daemon's stream on its own time: its last line in the journal means all the others are
    wait_until(lambda: ct.journal("MESSAGE=stopped", "EVENT=SHUTDOWN", after=before), 30, "its last line")
    stopped = ct.cursor()
    ct.run("find", STATE_DIR, "-mindepth", "1", "-delete")  # the paper ledgers are not the live account's
    ct.write(KEY_FILE, yaml.safe_dump({"api_key": DEFAULT_API_KEY, "secret": DEFAULT_API_SECRET}), mode=0o600)
    config = live_config(sim)
    ct.write(SCHEDULE, schedule(), mode=0o640, owner="root:s1mpled")
    ct.write(CONFIG, config, mode=0o640, owner="root:s1mpled")
    assert "live mode" in ct.run("s1mpled", "check-config").stdout
    ct.systemctl("start", UNIT)
    return config, stopped


@pytest.fixture(scope="session")
def e2e(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Build (cached), root fs (cached), boot, install the .deb, go live; torn down whatever happens."""
    phases = Phases()
    logs = tmp_path_factory.mktemp("systemd-e2e")
    with contextlib.ExitStack() as cleanup:
        with phases("host packages"):
            ensure_host_packages()
        with phases("build"):
            deb = build_deb()
        with phases("rootfs"):
            tarball = rootfs_tarball([*ROOTFS_PACKAGES, *deb_depends(deb)])
        sim = Simulator(logs / "sim.log", tick=0.05, seed=3)
        cleanup.callback(sim.stop)
        with phases("unpack"):
            ct = cleanup.enter_context(Container(tarball))
        cleanup.callback(_save_journal, ct, logs / "journal.txt")
        with phases("boot"):
            failed = ct.boot()
        with phases("install"):
            ct.install_deb(deb)
        after_install = {
            **ct.show(UNIT, "ActiveState", "SubState", "UnitFileState", "StatusText"),
            **{f"timer.{k}": v for k, v in ct.show(TIMER, "ActiveState", "UnitFileState").items()},
        }
        with phases("live"):
            config, live_from = _go_live(ct, sim)
            stack = Stack(ct, sim, deb, config, after_install, live_from)
            stack.wait_active()
        _report(pytestconfig, f"\nsystemd e2e set-up: {phases.report()}; failed units at boot: {failed or 'none'}")
        _report(pytestconfig, f"systemd e2e logs (simulator, container journal at teardown): {logs}")
        yield stack


def _save_journal(ct: Container, path: Path) -> None:
    with contextlib.suppress(Exception):  # a post-mortem aid only: never mask the test's own failure
        path.write_text(ct.run("journalctl", "--no-pager", "-o", "short-precise", check=False).stdout)


@pytest.fixture
def stack(e2e: Stack) -> Stack:
    """The shared container, restored to the healthy live daemon before the test."""
    e2e.restore()
    return e2e


# ------------------------------------------------------------------------------------------- the tests


def test_install_enables_and_starts_the_paper_daemon_and_the_timer(e2e: Stack) -> None:
    """apt-get install enables and starts s1mpled (paper mode, no setup) and enables the reconcile timer."""
    facts = dict(e2e.after_install)
    assert facts.pop("StatusText").startswith("trading: 2 strategies, breaker closed")
    assert facts == {
        "ActiveState": "active",
        "SubState": "running",
        "UnitFileState": "enabled",
        "timer.ActiveState": "active",
        "timer.UnitFileState": "enabled",
    }


def _usec(timestamp: str) -> int:
    """``systemctl show --timestamp=us+utc`` ('Sun 2026-11-22 00:48:56.068933 UTC') as Unix microseconds."""
    dt = datetime.strptime(timestamp, "%a %Y-%m-%d %H:%M:%S.%f %Z").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def test_status_line_and_ready_only_after_recovery(stack: Stack) -> None:
    """systemctl status shows the daemon's STATUS line, and READY=1 came after the startup reconciliation."""
    ct = stack.ct
    st = ct.show(UNIT, "Type", "InvocationID", "ActiveEnterTimestamp", "StatusText")
    assert st["Type"] == "notify"
    status = ct.systemctl("status", UNIT, "-n", "0").stdout
    assert "Active: active (running)" in status
    assert 'Status: "trading: 2 strategies, breaker closed, last reconciliation' in status
    entries = ct.journal(f"_SYSTEMD_INVOCATION_ID={st['InvocationID']}")
    done = [e for e in entries if str(e.get("MESSAGE", "")).startswith("startup reconciliation done")]
    assert len(done) == 1, [e.get("MESSAGE") for e in entries]
    # Sent before READY=1 by the same process; systemd entered "active" when it received READY=1.
    assert int(done[0]["_SOURCE_REALTIME_TIMESTAMP"]) < _usec(st["ActiveEnterTimestamp"])


def test_journal_carries_the_structured_fields(stack: Stack) -> None:
    """Order lines in the journal carry SYSLOG_IDENTIFIER, OPERATION, STRATEGY, EVENT, ORDER_ID and SYMBOL."""

    def placed_by_both() -> list[dict[str, Any]] | None:
        entries = stack.journal("EVENT=ORDER_PLACED", after=stack.live_from)
        return entries if {e.get("STRATEGY") for e in entries} >= set(STRATEGIES) else None

    entries = wait_until(placed_by_both, 60, "orders placed by both strategies")
    sim_orders = stack.sim.state()["orders"]
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == "s1mpled"
        assert e["OPERATION"] == "e2e"
        assert e["SYMBOL"] == SYMBOLS[e["STRATEGY"]]
        assert e["ORDER_ID"] in sim_orders, e  # the id the exchange knows the order by
        assert e["PRIORITY"] == "6"
    grid = stack.journal("EVENT=ORDER_PLACED", "STRATEGY=grid-eth", after=stack.live_from)  # matches on our fields
    assert grid and {e["STRATEGY"] for e in grid} == {"grid-eth"}


def test_reconcile_service_and_timer_make_the_daemon_reconcile(stack: Stack) -> None:
    """s1mpled-reconcile.service (by hand, and fired by its timer) makes the running daemon reconcile."""
    ct = stack.ct
    cursor = ct.cursor()
    ct.systemctl("start", RECONCILE)
    assert ct.show(RECONCILE, "Result")["Result"] == "success"
    stack.wait_journal("reconciliation (control):", cursor)
    # The timer, shortened (an empty assignment drops the packaged OnBootSec/OnUnitActiveSec). The
    # timer is restarted after daemon-reload: systemd 252 re-arms timers on reload (a package's
    # postinst runs one), and restarting makes the new schedule count from now.
    before = ct.show(TIMER, "LastTriggerUSecMonotonic")["LastTriggerUSecMonotonic"]
    cursor = ct.cursor()
    stack.dropin(TIMER, "[Timer]\nOnUnitActiveSec=\nOnUnitActiveSec=3s\nAccuracySec=100ms\n")
    ct.systemctl("restart", TIMER)
    wait_until(
        lambda: ct.show(TIMER, "LastTriggerUSecMonotonic")["LastTriggerUSecMonotonic"] != before,
        30,
        "the timer to fire",
    )
    stack.wait_journal("reconciliation (control):", cursor)
    wait_until(lambda: ct.show(RECONCILE, "ActiveState")["ActiveState"] == "inactive", 30, "the oneshot to finish")
    assert ct.show(RECONCILE, "Result")["Result"] == "success"


def _settled(doc: dict[str, Any]) -> bool:
    return all(o["state"] not in ("pending", "unresolved") for s in doc["strategies"] for o in s["open_orders"])


def _verify_books(stack: Stack) -> None:
    """Freeze prices and decisions, let a fresh start reconcile, stop, and compare the books with the exchange."""
    ct, sim = stack.ct, stack.sim
    sim.clear()
    sim.pause_feed(True)
    try:
        ct.write(SCHEDULE, schedule(frozen=True), mode=0o640, owner="root:s1mpled")
        ct.systemctl("reset-failed", UNIT, check=False)
        ct.systemctl("restart", UNIT)
        stack.wait_active()
        wait_until(lambda: _settled(stack.daemon_status()), 60, "every order settled")
        ct.run("s1mpled", "reconcile", "--timeout", "60")
        ct.systemctl("stop", UNIT)
        ledgers, ex = read_ledgers(ct.path(STATE_DIR)), sim.state()
        assert set(ledgers) == set(STRATEGIES)
        assert_books_equal_exchange(ledgers, ex)
        assert_no_duplicate_orders(ledgers, ex)
    finally:
        sim.pause_feed(False)
        ct.write(SCHEDULE, schedule(), mode=0o640, owner="root:s1mpled")


def test_kill_9_is_restarted_recovered_and_never_duplicates_an_order(stack: Stack) -> None:
    """kill -9 of MainPID: systemd restarts it, it recovers and reconciles, and no order is doubled."""
    ct = stack.ct
    wait_until(lambda: stack.our_fills() >= 2, 60, "the daemon to trade")
    before = stack.state()
    cursor = ct.cursor()
    ct.run("kill", "-9", before["MainPID"])

    after = stack.wait_active(replacing=before["MainPID"])
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    messages = [str(e.get("MESSAGE")) for e in stack.journal(after=cursor)]
    assert any("Main process exited, code=killed, status=9/KILL" in m for m in messages), messages
    recovery = [str(e.get("MESSAGE")) for e in ct.journal(f"_SYSTEMD_INVOCATION_ID={after['InvocationID']}")]
    for name in STRATEGIES:
        assert any(m.startswith(f"strategy {name}: state generation") for m in recovery), recovery
    assert any(m.startswith("reconciliation (startup):") for m in recovery), recovery
    open_ids = [o["client_order_id"] for o in stack.sim.state()["open_orders"]]
    assert len(open_ids) == len(set(open_ids))
    _verify_books(stack)


def test_position_sold_by_hand_is_corrected_and_only_critical_lines_show_with_p_crit(stack: Stack) -> None:
    """BTC sold by hand while the daemon is stopped: the start corrects the ledger with CRITICAL lines, and
    ``journalctl -p crit`` shows exactly the critical entries."""
    ct = stack.ct
    wait_until(lambda: stack.our_fills("BTC/USDT") >= 1, 60, "a DCA buy")
    ct.systemctl("stop", UNIT)
    stack.sim.sell_everything_by_hand("BTC/USDT")
    cursor = ct.cursor()
    ct.systemctl("start", UNIT)
    stack.wait_journal("startup reconciliation done", cursor)
    critical, everything = stack.journal("-p", "crit", after=cursor), stack.journal(after=cursor)
    # Compared up to the end of recovery: later passes may log more while we read.
    done = next(e for e in everything if str(e.get("MESSAGE")).startswith("startup reconciliation done"))
    upto = int(done["__REALTIME_TIMESTAMP"])
    critical = [e for e in critical if int(e["__REALTIME_TIMESTAMP"]) <= upto]
    everything = [e for e in everything if int(e["__REALTIME_TIMESTAMP"]) <= upto]
    assert [e["__CURSOR"] for e in critical] == [e["__CURSOR"] for e in everything if int(e["PRIORITY"]) <= 2]
    corrections = [
        e for e in critical if str(e["MESSAGE"]).startswith("reconciliation corrected dca-btc: holdings BTC")
    ]
    assert corrections, [e["MESSAGE"] for e in critical]
    assert {(e["EVENT"], e["STRATEGY"], e["SYMBOL"]) for e in corrections} == {
        ("RECONCILIATION_CORRECTION", "dca-btc", "BTC/USDT")
    }
    assert any(e["PRIORITY"] == "6" for e in everything)  # the INFO lines exist; -p crit left them out
    status = stack.daemon_status()
    # what is left is at most the dust below one lot the hand sale could not sell (Binance charges buy fees in BTC)
    assert Decimal(next(s for s in status["strategies"] if s["name"] == "dca-btc")["holdings"]) < Decimal("0.00001")


def test_hung_event_loop_is_killed_by_the_watchdog_and_restarted(stack: Stack) -> None:
    """A blocked event loop stops the WATCHDOG=1 pings: systemd logs "Watchdog timeout" and restarts it."""
    ct = stack.ct
    stack.dropin(UNIT, "[Service]\nEnvironment=S1MPLED_FAILPOINTS=hang:control.status\n")
    ct.systemctl("restart", UNIT)
    before = stack.wait_active()
    cursor = ct.cursor()
    hung = ct.run("timeout", "30", "s1mpled", "status", "--timeout", "3", check=False)
    assert hung.returncode != 0, hung.stdout
    stack.wait_journal("Watchdog timeout", cursor, timeout=30)

    after = stack.wait_active(replacing=before["MainPID"])
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    messages = [str(e.get("MESSAGE")) for e in stack.journal(after=cursor)]
    assert any("Killing process" in m and "SIGABRT" in m for m in messages), messages


def _assert_stays(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.2)


def test_config_error_fails_with_status_78_and_is_not_restarted(stack: Stack) -> None:
    """A bad config: exit 78/CONFIG with file:line in the journal, the unit failed, no restart loop."""
    ct = stack.ct
    bad = stack.config.replace("mode: live\n", "mode: live\nmodee: live\n", 1)
    line = bad.splitlines().index("modee: live") + 1
    ct.write(CONFIG, bad, mode=0o640, owner="root:s1mpled")
    cursor = ct.cursor()
    assert ct.systemctl("restart", UNIT, check=False).returncode != 0
    st = stack.wait_state(30, ActiveState="failed")
    assert (st["Result"], st["ExecMainStatus"], st["NRestarts"]) == ("exit-code", "78", "0")
    _assert_stays(lambda: stack.state()["ActiveState"] == "failed", 4, "restarted despite RestartPreventExitStatus=78")
    assert stack.state()["NRestarts"] == "0"
    messages = [str(e.get("MESSAGE")) for e in stack.journal(after=cursor)]
    assert any("status=78/CONFIG" in m for m in messages), messages
    assert any(f"{CONFIG}:{line}: modee: unknown key" in m for m in messages), messages


def test_restart_storm_ends_failed_with_the_alert_sent(stack: Stack) -> None:
    """A daemon that crashes on every start is restarted StartLimitBurst-1 times (ten starts within five
    minutes), then left failed ("Start request repeated too quickly"), and OnFailure= sends the critical alert."""
    ct = stack.ct
    # SIGKILL right after the exchange accepted an order: the next start settles that order at once (with
    # after_intent it would wait out the in-flight window first) and the next order kills it again.
    stack.dropin(UNIT, "[Service]\nEnvironment=S1MPLED_FAILPOINTS=order.after_send\n")
    cursor = ct.cursor()
    ct.systemctl("restart", "--no-block", UNIT)
    stack.wait_journal("Start request repeated too quickly", cursor, timeout=180)
    # systemd 252 keeps the last failure as the Result ("signal"); start-limit-hit shows only in the log.
    st = stack.wait_state(30, ActiveState="failed", Result="signal")
    messages = [str(e.get("MESSAGE")) for e in stack.journal(after=cursor)]
    kills = [m for m in messages if "Main process exited, code=killed, status=9/KILL" in m]
    assert len(kills) == 10, messages  # StartLimitBurst=10 starts in StartLimitIntervalSec=300
    _assert_stays(lambda: stack.state()["ActiveState"] == "failed", 4, "restarted after the start limit")
    assert stack.state()["NRestarts"] == st["NRestarts"] == "10"  # the tenth scheduled restart was refused

    def alerted() -> list[dict[str, Any]] | None:
        entries = ct.journal(f"_SYSTEMD_UNIT={ALERT}", "-p", "crit", after=cursor)
        return entries or None

    alerts = wait_until(alerted, 60, f"the alert from {ALERT}")
    assert [(e["EVENT"], e["MESSAGE"]) for e in alerts] == [
        ("ALERT", f"ALERT: {UNIT} failed and is not being restarted: trading is stopped")
    ]
    wait_until(lambda: ct.show(ALERT, "ActiveState")["ActiveState"] == "inactive", 60, f"{ALERT} to finish")
    assert ct.show(ALERT, "Result")["Result"] == "success"


def test_five_manual_restarts_in_two_minutes_do_not_lock_the_unit(stack: Stack) -> None:
    """An operator starts the daemon and restarts it five times within two minutes (systemd counts every
    start against the start limit, manual ones too): the unit is active afterwards, never start-limit-hit."""
    ct = stack.ct
    ct.systemctl("reset-failed", UNIT, check=False)
    cursor = ct.cursor()
    began = time.monotonic()
    for _ in range(6):  # the start an operator begins with, then five restarts
        ct.systemctl("restart", UNIT)  # Type=notify: returns once READY=1 came
    assert time.monotonic() - began < 120
    st = stack.wait_active()
    messages = [str(e.get("MESSAGE")) for e in stack.journal(after=cursor)]
    assert not any("Start request repeated too quickly" in m for m in messages), messages
    assert st["ActiveState"] == "active"


def test_an_unreachable_exchange_at_start_keeps_the_unit_starting_then_it_trades(stack: Stack) -> None:
    """Every REST call 503 for 25 s at start, TimeoutStartSec only 10 s: the unit stays "activating" past its
    start timeout (each retry sends EXTEND_TIMEOUT_USEC), never restarts or fails, shows why in its STATUS line,
    answers `s1mpled status` -- and becomes active, trading, once the exchange answers."""
    ct, sim = stack.ct, stack.sim
    stack.dropin(UNIT, "[Service]\nTimeoutStartSec=10s\n")
    restarts = stack.state()["NRestarts"]
    cursor = ct.cursor()
    sim.inject("http_error", seconds=25, status=503)
    ct.systemctl("restart", "--no-block", UNIT)
    began = time.monotonic()

    def waiting() -> dict[str, str] | None:
        st = stack.state("ActiveState", "SubState", "StatusText", "NRestarts")
        return st if st["StatusText"].startswith("recovery A: exchange unreachable since ") else None

    st = wait_until(waiting, 30, "the STATUS line to say the exchange is unreachable")
    assert (st["ActiveState"], st["SubState"]) == ("activating", "start"), st
    assert ", retry " in st["StatusText"], st
    doc = stack.daemon_status()
    assert doc["phase"] == "loading-state" and doc["summary"].startswith("recovery A: exchange unreachable"), doc
    _assert_stays(
        lambda: stack.state("ActiveState")["ActiveState"] == "activating",
        max(0.0, 15 - (time.monotonic() - began)),
        "the start did not outlive TimeoutStartSec=10s while the daemon was waiting",
    )
    after = stack.wait_active(timeout=120)
    assert after["NRestarts"] == restarts  # waited, never exited
    messages = [str(e.get("MESSAGE")) for e in stack.journal(after=cursor)]
    assert not any("Start operation timed out" in m or "Failed with result" in m for m in messages), messages
    assert any("recovery A: the exchange answers again after" in m for m in messages), messages
    fills = stack.our_fills()
    wait_until(lambda: stack.our_fills() > fills, 60, "the daemon to trade after the outage")


def test_a_breaker_open_across_a_restart_closes_by_itself(stack: Stack) -> None:
    """Under systemd: an outage of every WebSocket opens the breaker (automatically); the unit is restarted
    while it is open and comes back with it open -- and the new process closes it by itself once every
    stream has been healthy for auto_close_after (2 s here) and a reconciliation succeeded."""
    ct, sim = stack.ct, stack.sim
    try:
        sim.inject("ws_refuse", seconds=600)
        sim.inject("ws_drop")
        wait_until(lambda: stack.daemon_status()["breaker"]["state"] == "open", 60, "the breaker to open")
        ct.systemctl("stop", UNIT)
    finally:
        sim.clear()
    cursor = ct.cursor()
    ct.systemctl("start", UNIT)
    stack.wait_active()
    # A closed breaker cannot close again: this line from the new process proves it started open.
    closed = stack.wait_journal("circuit breaker CLOSED: every stream healthy for", cursor)
    assert "and reconciled" in str(next(e["MESSAGE"] for e in closed if "CLOSED" in str(e.get("MESSAGE"))))
    assert stack.daemon_status()["breaker"]["state"] == "closed"
    fills = stack.our_fills()
    wait_until(lambda: stack.our_fills() > fills, 60, "the daemon to trade after the breaker closed")


def test_doctor_on_the_installed_live_daemon_finds_it_healthy_then_names_what_breaks(stack: Stack) -> None:
    """`sudo s1mpled doctor` on the packaged live daemon: config, state directory, credentials (their source in
    /etc/s1mpled/credentials), clock, exchange, key permissions and the units under the real systemd all pass
    (the simulator's key has no IP restriction: a warning). Then the timer disabled and the key able to
    withdraw: each a failure with its fix, exit 1."""
    ct, sim = stack.ct, stack.sim

    def doctor() -> tuple[int, dict[str, list[dict[str, str]]]]:
        out = ct.run("s1mpled", "doctor", "--json", check=False)
        found: dict[str, list[dict[str, str]]] = {}
        for f in json.loads(out.stdout):
            found.setdefault(f["check"], []).append(f)
        return out.returncode, found

    code, found = doctor()
    assert code == 0, found
    for check in ("configuration", "state directory", "credentials", "clock", "exchange"):
        assert [f["level"] for f in found[check]] == ["ok"], found[check]
    assert [f["level"] for f in found["systemd units"]] == ["ok", "ok"], found["systemd units"]
    assert [f["level"] for f in found["API key permissions"]] == ["ok", "warn"]
    assert KEY_FILE in found["credentials"][0]["detail"]
    ct.systemctl("disable", "--now", TIMER)
    sim.account(withdrawals=True)
    try:
        code, found = doctor()
        assert code == 1
        timer = next(f for f in found["systemd units"] if TIMER in f["detail"])
        assert timer["level"] == "fail" and f"systemctl enable --now {TIMER}" in timer["fix"]
        assert any("withdrawals are ENABLED" in f["detail"] for f in found["API key permissions"])
    finally:
        sim.account(withdrawals=False)
        ct.systemctl("enable", "--now", TIMER)


def test_the_metrics_timer_writes_node_exporters_textfile_and_says_when_the_daemon_is_down(stack: Stack) -> None:
    """s1mpled-metrics.timer is enabled by the package; where node_exporter's directory exists its service
    writes s1mpled-e2e.prom (readable by the collector) from the running daemon, and `s1mpled_up 0` with
    no stale numbers once the daemon is stopped. Skipped (condition) without the directory."""
    ct = stack.ct
    assert ct.show("s1mpled-metrics.timer", "UnitFileState")["UnitFileState"] == "enabled"
    textfiles = "/var/lib/prometheus/node-exporter"
    ct.run("rm", "-rf", textfiles)
    ct.systemctl("start", "s1mpled-metrics.service")
    shown = ct.show("s1mpled-metrics.service", "ConditionResult", "Result")
    assert shown == {"ConditionResult": "no", "Result": "success"}, shown
    ct.run("mkdir", "-p", "-m", "0755", textfiles)
    prom = ct.path(f"{textfiles}/s1mpled-e2e.prom")
    ct.systemctl("start", "s1mpled-metrics.service")
    text = prom.read_text()
    assert 's1mpled_up{operation="e2e"} 1.0' in text and "s1mpled_strategy_equity{" in text, text
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    ct.systemctl("stop", UNIT)
    try:
        assert ct.systemctl("start", "s1mpled-metrics.service", check=False).returncode != 0
        samples = [line for line in prom.read_text().splitlines() if not line.startswith("#")]
        assert samples == ['s1mpled_up{operation="e2e"} 0.0'], samples
    finally:
        ct.systemctl("start", UNIT)
        ct.systemctl("reset-failed", "s1mpled-metrics.service", check=False)


# Inside the container, with the package's own interpreter: the page, then the page's WebSocket until its
# first message shows the instance with its strategies (re-dialled while the dashboard is starting).
_DASHBOARD_PROBE = """
import json, time, urllib.request
from websockets.sync.client import connect
deadline, last = time.monotonic() + 60, None
while time.monotonic() < deadline:
    try:
        page = urllib.request.urlopen("http://127.0.0.1:8787/", timeout=5).read().decode()
        with connect("ws://127.0.0.1:8787/ws", origin="http://127.0.0.1:8787", open_timeout=5) as ws:
            hello = json.loads(ws.recv(timeout=5))
        shown = [(i["socket"], i["link"], sorted(i["strategies"])) for i in hello["instances"]]
        if any(strategies for _, _, strategies in shown):
            print(json.dumps({"page": "s1mpled" in page, "instances": shown}))
            raise SystemExit(0)
        last = shown
    except OSError as exc:
        last = repr(exc)
    time.sleep(0.5)
raise SystemExit(f"no instance with strategies on the dashboard: {last}")
"""


def test_the_dashboard_ships_disabled_and_once_enabled_shows_the_running_daemon(stack: Stack) -> None:
    """s1mpled-dashboard.service is installed but not enabled. Enabled, its dynamic user in the daemons' group
    finds the instance the way `status --all` does, reaches its control socket through the real sandbox, and the
    page's WebSocket shows its strategies; it listens on 127.0.0.1 only."""
    ct, unit = stack.ct, "s1mpled-dashboard.service"
    assert ct.show(unit, "UnitFileState")["UnitFileState"] == "disabled"
    assert ct.show(unit, "ActiveState")["ActiveState"] == "inactive"
    ct.systemctl("enable", "--now", unit)
    try:
        out = ct.run("/opt/venvs/s1mpled/bin/python", "-c", _DASHBOARD_PROBE, check=False, timeout=90)
        assert out.returncode == 0, out.stdout + out.stderr + ct.run("journalctl", "-u", unit, "--no-pager").stdout
        seen = json.loads(out.stdout)
        assert seen["page"] and [sorted(SYMBOLS)] == [s for _, _, s in seen["instances"] if s], seen
        # /proc/net/tcp: local address:port in hex, state 0A = LISTEN; 8787 = 0x2253, 127.0.0.1 = 0100007F
        rows = [line.split() for line in ct.run("cat", "/proc/net/tcp", "/proc/net/tcp6").stdout.splitlines()[1:]]
        listening = [r[1] for r in rows if len(r) > 3 and r[3] == "0A" and r[1].endswith(":2253")]
        assert listening == ["0100007F:2253"], listening
    finally:
        ct.systemctl("disable", "--now", unit, check=False)


def test_api_secret_never_reaches_the_journal(stack: Stack) -> None:
    """Nothing in the whole journal (every field of every entry) contains the API secret or key."""
    ct = stack.ct
    assert DEFAULT_API_SECRET in ct.path(KEY_FILE).read_text()  # the daemon had it all along
    ct.systemctl("start", RECONCILE)  # one more client that loaded the config
    export = ct.run("journalctl", "--no-pager", "-o", "export").stdout
    assert "s1mpled" in export
    assert DEFAULT_API_SECRET not in export
    assert DEFAULT_API_KEY not in export


@pytest.mark.parametrize("unit", [UNIT, "s1mpled@e2e.service", RECONCILE, ALERT, "s1mpled-dashboard.service"])
def test_systemd_rates_the_sandbox_at_most_1_5(e2e: Stack, unit: str) -> None:
    """systemd-analyze security, inside the container with the package installed, rates every unit <= 1.5."""
    out = e2e.ct.run("systemd-analyze", "security", "--no-pager", unit).stdout
    level = out.rsplit(f"Overall exposure level for {unit}: ", 1)[1].split()[0]
    assert float(level) <= MAX_EXPOSURE, out[-2000:]


def _generations(stack: Stack) -> dict[str, int]:
    state = stack.ct.path(STATE_DIR)
    return {name: inspect(state / strategy_state_name(name)).record.generation for name in STRATEGIES}


def test_reinstall_keeps_state_and_config_and_restarts_the_daemon(stack: Stack) -> None:
    """apt-get install --reinstall keeps /var/lib/s1mpled and the edited config, and restarts the daemon."""
    ct = stack.ct
    state = ct.path(STATE_DIR)
    wait_until(lambda: all((state / strategy_state_name(n)).exists() for n in STRATEGIES), 60, "state files")
    files, generations = {p.name for p in state.iterdir()}, _generations(stack)
    before = stack.state()
    ct.install_deb(stack.deb, "--reinstall")
    stack.wait_active(replacing=before["MainPID"])  # debhelper's postinst restarts the unit on upgrade
    assert files <= {p.name for p in state.iterdir()}
    assert all(_generations(stack)[n] >= g for n, g in generations.items())
    assert ct.path(CONFIG).read_text() == stack.config  # a conffile the admin edited is kept


def test_purge_removes_state_and_config_but_not_the_admins_keys(stack: Stack) -> None:
    """apt-get purge stops and removes the daemon and deletes /var/lib/s1mpled; the key file stays."""
    ct = stack.ct
    assert ct.path(STATE_DIR).is_dir()
    ct.run("apt-get", "purge", "-y", "s1mpled", timeout=300)
    assert not ct.path(STATE_DIR).exists()
    assert not ct.path(CONFIG).exists()
    assert ct.path(KEY_FILE).exists()
    assert ct.show(UNIT, "LoadState")["LoadState"] == "not-found"


# ------------------------------------------- why it stopped, and a full state disk (issue 9, items 4 and 5)
# These come after the purge in file order, so they reinstall the package first when it is gone.


@pytest.fixture
def installed(e2e: Stack) -> Stack:
    """The healthy live daemon, reinstalled (and switched to live again) if an earlier test purged it."""
    if e2e.ct.show(UNIT, "LoadState")["LoadState"] == "not-found":
        e2e.ct.install_deb(e2e.deb)
        _go_live(e2e.ct, e2e.sim)
    e2e.restore()
    return e2e


def _daemon_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The daemon's own entries (systemd logs about the unit under -u too)."""
    return [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "s1mpled"]


def test_journalctl_p_err_says_why_the_daemon_is_down(installed: Stack) -> None:
    """A bad config: `journalctl -u s1mpled -p err` shows the daemon's one line saying why, at PRIORITY 2,
    naming file:line and the exit code -- not a traceback, not a line at info."""
    ct, stack = installed.ct, installed
    bad = stack.config.replace("mode: live\n", "mode: live\nmodee: live\n", 1)
    line = bad.splitlines().index("modee: live") + 1
    ct.write(CONFIG, bad, mode=0o640, owner="root:s1mpled")
    cursor = ct.cursor()
    assert ct.systemctl("restart", UNIT, check=False).returncode != 0
    stack.wait_state(30, ActiveState="failed")
    urgent = _daemon_entries(stack.journal("-p", "err", after=cursor))
    assert [e["PRIORITY"] for e in urgent] == ["2"], [e.get("MESSAGE") for e in urgent]
    message = str(urgent[0]["MESSAGE"])
    assert message.startswith(f"s1mpled stopped: {CONFIG}:{line}: modee: unknown key"), message
    assert "(exit 78, a configuration error" in message and urgent[0]["EVENT"] == "STOPPED"
    everything = _daemon_entries(stack.journal(after=cursor))
    assert not [e for e in everything if "modee" in str(e.get("MESSAGE")) and e["PRIORITY"] != "2"], everything
    assert not [e for e in everything if "Traceback" in str(e.get("MESSAGE"))]


_FILL = """
import os
fd = os.open("/var/lib/s1mpled/e2e-filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
for size in (65536, 4096, 512, 1):
    try:
        while True:
            os.write(fd, bytes(size))
    except OSError:
        pass
"""


@contextlib.contextmanager
def _state_on_tmpfs(stack: Stack, size: str) -> Iterator[None]:
    """/var/lib/s1mpled on a tmpfs of ``size`` holding a copy of the books, while the block runs; the books
    as the block left them are copied back to the real directory afterwards (the daemon stopped around it)."""
    ct = stack.ct
    ids = ct.run("sh", "-c", "echo $(id -u s1mpled):$(id -g s1mpled)").stdout.strip().split(":")
    saved = "/var/lib/s1mpled.e2e-copy"
    ct.systemctl("stop", UNIT)
    ct.run("rm", "-rf", saved)
    ct.run("cp", "-a", STATE_DIR, saved)
    opts = f"size={size},mode=0700,uid={ids[0]},gid={ids[1]}"
    ct.run("mount", "-t", "tmpfs", "-o", opts, "tmpfs", STATE_DIR)
    try:
        ct.run("cp", "-a", f"{saved}/.", f"{STATE_DIR}/")
        yield
    finally:
        ct.systemctl("stop", UNIT)
        ct.run("rm", "-f", f"{STATE_DIR}/e2e-filler")
        ct.run("rm", "-rf", saved)
        ct.run("cp", "-a", STATE_DIR, saved)
        ct.run("umount", STATE_DIR)
        ct.run("find", STATE_DIR, "-mindepth", "1", "-delete")
        ct.run("cp", "-a", f"{saved}/.", f"{STATE_DIR}/")
        ct.run("rm", "-rf", saved)
        ct.systemctl("start", UNIT)  # as the block found it: running, on the real directory


def test_a_full_state_disk_halts_orders_alerts_once_and_trading_resumes_when_space_is_freed(
    installed: Stack,
) -> None:
    """/var/lib/s1mpled on a small tmpfs, filled up under the real systemd: one CRITICAL alert line, the daemon
    stays active and sends no order while full, `s1mpled status` says DISK FULL; space freed: it trades
    again by itself, and every state file verifies."""
    ct, stack = installed.ct, installed
    with _state_on_tmpfs(stack, "16m"):
        ct.systemctl("start", UNIT)
        before = stack.wait_active()
        cursor = ct.cursor()
        stack.wait_journal("placed:", cursor)
        ct.run("python3", "-c", _FILL)
        full = stack.wait_journal("disk full", cursor)
        critical = [e for e in _daemon_entries(full) if e["PRIORITY"] == "2" and "disk full" in str(e["MESSAGE"])]
        assert [e["EVENT"] for e in critical] == ["STATE_DISK_FULL"], [e.get("MESSAGE") for e in critical]
        assert "No space left on device" in str(critical[0]["MESSAGE"])
        wait_until(lambda: _settled(stack.daemon_status()), 30, "the orders sent before to be answered")
        ours = len([c for c in stack.sim.state()["orders"] if parse_client_order_id(c) is not None])

        def no_new_order() -> bool:
            now = [c for c in stack.sim.state()["orders"] if parse_client_order_id(c) is not None]
            return len(now) == ours

        _assert_stays(no_new_order, 6, "an order reached the exchange while the disk was full")
        assert "DISK FULL: no new orders" in ct.run("s1mpled", "status", "--timeout", "10").stdout
        assert stack.state("MainPID")["MainPID"] == before["MainPID"]  # survived, no restart
        freed = ct.cursor()
        ct.run("rm", f"{STATE_DIR}/e2e-filler")
        stack.wait_journal("disk space is back", freed)
        stack.wait_journal("placed:", freed)
        wait_until(lambda: not no_new_order(), 30, "an order on the exchange after the space came back")
        assert len([e for e in _daemon_entries(stack.journal("-p", "crit", after=cursor))
                    if "disk full" in str(e["MESSAGE"])]) == 1  # fmt: skip
        assert not [e for e in stack.journal(after=cursor) if "Traceback" in str(e.get("MESSAGE"))]
        ct.systemctl("stop", UNIT)
        for name in ct.run("sh", "-c", f"ls {STATE_DIR}/*.state.json").stdout.split():
            assert "OK generation" in ct.run("s1mpled", "state", "verify", name).stdout


# ------------------------------------------ the package cleans up after itself (issue 9, item 10)
# Remove, upgrade and purge with s1mpled@NAME instances running. Destructive (the last one purges), so
# they come last and each one installs the package first if an earlier test removed it.

INSTANCES = {"inst": True, "hand": False}  # name -> enabled (`systemctl enable --now`) or only started


def _instance_config(name: str) -> str:
    """The packaged paper configuration as README.Debian says for NAME: its own operation, state and socket."""
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "etc/s1mpled/s1mpled.yaml").read_text())
    doc.update(
        operation=f"e2e-{name}", state_dir=f"{STATE_DIR}/{name}", control_socket=f"/run/s1mpled/{name}/control.sock"
    )
    return yaml.safe_dump(doc, sort_keys=False)


def _instances_running(e2e: Stack) -> dict[str, str]:
    """The package installed and every instance of INSTANCES running; unit -> its MainPID."""
    ct = e2e.ct
    if ct.run("dpkg-query", "-W", "-f=${Status}", "s1mpled", check=False).stdout != "install ok installed":
        ct.install_deb(e2e.deb)
    for name, enabled in INSTANCES.items():
        ct.write(f"/etc/s1mpled/{name}.yaml", _instance_config(name), mode=0o640, owner="root:s1mpled")
        ct.systemctl("enable" if enabled else "start", *(["--now"] if enabled else []), f"s1mpled@{name}.service")
    units = [f"s1mpled@{n}.service" for n in INSTANCES]

    def all_running() -> dict[str, str] | None:
        shown = {u: ct.show(u, "ActiveState", "SubState", "MainPID") for u in units}
        ok = all((s["ActiveState"], s["SubState"]) == ("active", "running") for s in shown.values())
        return {u: s["MainPID"] for u, s in shown.items()} if ok else None

    return wait_until(all_running, START_S, "the s1mpled@ instances to run")


def _package_files_ctime_us(ct: Container) -> tuple[int, int]:
    """The first and last time dpkg wrote one of the package's files under /opt/venvs/s1mpled (ctime, µs)."""
    listed = ct.run("dpkg-query", "-L", "s1mpled").stdout.split()
    times = [
        ct.path(p).lstat().st_ctime_ns // 1000
        for p in listed
        if p.startswith("/opt/venvs/s1mpled/") and ct.path(p).is_file() and not ct.path(p).is_symlink()
    ]
    return min(times), max(times)


def _unit_events_us(ct: Container, unit: str, after: str, text: str) -> list[int]:
    """When systemd logged ``text`` about ``unit`` after the cursor (µs)."""
    return [
        int(e["__REALTIME_TIMESTAMP"])
        for e in ct.journal("-u", unit, after=after)
        if text in str(e.get("MESSAGE", "")) and e.get("_PID") == "1"
    ]


def test_status_all_shows_every_instance_and_says_which_one_is_down(e2e: Stack) -> None:
    """`s1mpled status --all`: s1mpled.service and every s1mpled@NAME in one table, each asked over its own
    control socket; an enabled instance stopped is a row saying so, and the exit status is 1."""
    ct = e2e.ct
    _instances_running(e2e)
    ct.systemctl("start", UNIT)
    units = [UNIT, *(f"s1mpled@{n}.service" for n in INSTANCES)]

    def fleet() -> dict[str, dict[str, Any]]:
        out = ct.run("s1mpled", "status", "--all", "--json", check=False)
        return {i["unit"]: i for i in json.loads(out.stdout)}

    def all_answer() -> dict[str, dict[str, Any]] | None:
        shown = fleet()
        return shown if all((shown.get(u) or {}).get("status") for u in units) else None

    everyone = wait_until(all_answer, START_S, "every instance to answer status --all")
    assert sorted(everyone) == sorted(units)
    for unit in units:
        assert everyone[unit]["active"] == "active" and everyone[unit]["status"]["phase"] == "trading", everyone[unit]
    operations = {everyone[f"s1mpled@{n}.service"]["status"]["operation"] for n in INSTANCES}
    assert operations == {f"e2e-{n}" for n in INSTANCES}  # each answered from its own socket
    # An enabled instance stays loaded when stopped (multi-user.target wants it); systemd forgets a stopped
    # instance that was only started by hand, so there is nothing to list for it then.
    ct.systemctl("stop", "s1mpled@inst.service")
    try:
        table = ct.run("s1mpled", "status", "--all", check=False)
        assert table.returncode == 1
        inst = next(line for line in table.stdout.splitlines() if line.startswith("s1mpled@inst.service"))
        assert "inactive/dead" in inst and "(not running)" in inst, table.stdout
        hand = next(line for line in table.stdout.splitlines() if line.startswith("s1mpled@hand.service"))
        assert "active/running" in hand and "trading" in hand, table.stdout
    finally:
        ct.systemctl("start", "s1mpled@inst.service")


def test_an_upgrade_stops_every_daemon_before_unpacking_and_starts_them_after(e2e: Stack) -> None:
    """apt install of the package over itself (an upgrade to dpkg: old prerm, new preinst, unpack, postinst):
    s1mpled, an enabled and a hand-started s1mpled@NAME are all stopped before the first file is replaced,
    and started again -- new processes -- after the last one."""
    ct = e2e.ct
    before = _instances_running(e2e)
    ct.systemctl("start", UNIT)  # running whatever an earlier test left behind
    wait_until(lambda: ct.show(UNIT, "ActiveState")["ActiveState"] == "active", START_S, f"{UNIT} to run")
    before[UNIT] = ct.show(UNIT, "MainPID")["MainPID"]
    cursor = ct.cursor()
    ct.install_deb(e2e.deb, "--reinstall")
    first_write, last_write = _package_files_ctime_us(ct)
    for unit, pid in before.items():
        stopped = _unit_events_us(ct, unit, cursor, "Deactivated successfully")
        started = _unit_events_us(ct, unit, cursor, "Started ")
        assert stopped and max(stopped) < first_write, f"{unit} was stopped after dpkg began unpacking"
        assert started and min(started) > last_write, f"{unit} started before dpkg had finished unpacking"
        after = ct.show(unit, "ActiveState", "MainPID")
        assert after["ActiveState"] == "active" and after["MainPID"] != pid, (unit, after)


def test_apt_remove_stops_every_running_instance(e2e: Stack) -> None:
    """apt remove with s1mpled@NAME instances running (enabled or not): none keeps running deleted code."""
    ct = e2e.ct
    units = list(_instances_running(e2e))
    ct.run("apt-get", "remove", "-y", "s1mpled", timeout=300)
    for unit in [*units, UNIT]:
        assert ct.show(unit, "ActiveState")["ActiveState"] == "inactive", unit
    leftovers = ct.run("pgrep", "-af", "/opt/venvs/s1mpled/", check=False)
    assert leftovers.returncode == 1, leftovers.stdout


def test_apt_purge_leaves_no_links_to_the_removed_template(e2e: Stack) -> None:
    """apt purge removes the multi-user.target.wants links of instances the admin enabled: nothing dangles."""
    ct = e2e.ct
    _instances_running(e2e)
    wants = ct.path("/etc/systemd/system/multi-user.target.wants/s1mpled@inst.service")
    assert wants.is_symlink()
    ct.run("apt-get", "purge", "-y", "s1mpled", timeout=300)
    left = ct.run("find", "/etc/systemd/system", "-name", "s1mpled*", "-type", "l").stdout.split()
    assert left == []
    assert "s1mpled" not in ct.systemctl("list-unit-files", "s1mpled*", "--no-legend", check=False).stdout
