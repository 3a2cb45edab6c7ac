"""Run the real daemon as a subprocess and check its durable state against the simulated exchange.

Nothing is mocked: the daemon is ``python -m s1mpled run``, it is stopped with real signals, and the
checks read the very state files it wrote (read-only, through ``s1mpled.state.inspect``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import yaml

from s1mpled.assembly import strategy_state_name
from s1mpled.control import request
from s1mpled.environments.paper import STATE_NAME as PAPER_STATE
from s1mpled.environments.paper_exchange import SimulatedExchange
from s1mpled.errors import ControlError
from s1mpled.ledger import StrategyLedger
from s1mpled.orders import OrderState, is_terminal, parse_client_order_id
from s1mpled.state.inspect import inspect

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "etc" / "s1mpled" / "s1mpled.yaml"
UNALLOCATED_USDT = Decimal("7000")  # example balances 10000 minus the two strategies' capital


def write_config(
    directory: Path,
    *,
    tick: str = "20ms",
    strategy_tick: str = "150ms",
    reconcile: str = "1s",
    latency: str = "40ms",
    **overrides: Any,
) -> Path:
    """A copy of the shipped example with its state and socket in ``directory`` and fast clocks."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["state_dir"] = str(directory / "state")
    doc["control_socket"] = str(directory / "control.sock")
    doc["paper"]["tick_interval"] = tick
    doc["paper"]["stream_latency"] = latency
    doc["schedule"] = "schedule.yaml"
    doc.update(overrides)
    path = directory / "s1mpled.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    schedule = {
        "events": {"five_minute_reconciliation_tick": {"every": reconcile}, "strategy_tick": {"every": strategy_tick}}
    }
    (directory / "schedule.yaml").write_text(yaml.safe_dump(schedule))
    return path


def frozen_config(directory: Path) -> Path:
    """Same operation, but nothing moves: prices and strategy ticks come once an hour (for exact checks)."""
    return write_config(directory, tick="1h", strategy_tick="1h", reconcile="1h")


class Daemon:
    """One ``s1mpled run`` process with its log in a file."""

    running: ClassVar[list[Daemon]] = []  # killed after each test by tests/conftest.py, even when it fails

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.log_path = config, log
        self._log = log.open("ab")
        base = dict(os.environ)
        base.pop("NOTIFY_SOCKET", None)  # never talk to a systemd the test run itself may be under
        env = {**base, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s1mpled", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
        )
        Daemon.running.append(self)

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        socket = Path(yaml.safe_load(self.config.read_text())["control_socket"])
        result = asyncio.run(request(socket, "status", timeout_s=timeout))
        assert isinstance(result, dict)
        return result

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll status until ``predicate(status)`` holds; fail with the log if the daemon dies first."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                doc = self.status()
                if predicate(doc):
                    return doc
            except ControlError as exc:
                last = exc
            time.sleep(0.02)
        raise AssertionError(f"condition not reached in {timeout} s (last error {last}):\n{self.log_tail()}")

    def wait_trading(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_for(lambda d: d["phase"] == "trading", timeout)

    def reconcile(self, timeout: float = 60.0) -> dict[str, Any]:
        """Run a reconciliation inside the daemon (what `s1mpled reconcile` does) and return its report."""
        socket = Path(yaml.safe_load(self.config.read_text())["control_socket"])
        result = asyncio.run(request(socket, "reconcile", timeout_s=timeout))
        assert isinstance(result, dict)
        return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    @classmethod
    def kill_leftovers(cls) -> None:
        """SIGKILL every daemon a test left running (a failed assertion must not leave orphans)."""
        for d in cls.running:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait(timeout=10)
        cls.running.clear()

    def log_tail(self, lines: int = 60) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Books:
    """The durable state of one operation, read back from its files."""

    exchange: SimulatedExchange
    ledgers: dict[str, StrategyLedger]


def read_books(state_dir: Path, strategies: tuple[str, ...] = ("dca-btc", "grid-eth")) -> Books | None:
    """The books, or None if the daemon died before the exchange was first persisted."""
    if not (state_dir / PAPER_STATE).exists():
        return None
    exchange = SimulatedExchange.from_state(inspect(state_dir / PAPER_STATE).record.state["exchange"])
    ledgers = {
        name: StrategyLedger.from_state(inspect(state_dir / strategy_state_name(name)).record.state["ledger"])
        for name in strategies
        if (state_dir / strategy_state_name(name)).exists()
    }
    return Books(exchange, ledgers)


def _owner(books: Books, cid: str) -> StrategyLedger:
    matches = [lg for lg in books.ledgers.values() if lg.order(cid) is not None]
    assert len(matches) == 1, f"order {cid} is known to {len(matches)} ledgers"
    return matches[0]


def assert_no_phantoms(books: Books | None) -> None:
    """After any crash: the ledgers never know more than the exchange (no fill or order it lacks)."""
    if books is None:
        return
    for ledger in books.ledgers.values():
        for order in (*ledger.history(), *ledger.snapshot().open_orders):
            if order.state in (OrderState.PENDING, OrderState.NOT_PLACED, OrderState.REJECTED, OrderState.UNRESOLVED):
                continue
            assert books.exchange.order(order.client_order_id) is not None, (
                f"ledger order {order} unknown to the exchange"
            )


def assert_ledgers_equal_exchange(books: Books) -> None:
    """After a reconciled, orderly stop: every order, fill and balance agrees exactly."""
    ex = books.exchange
    for trade in ex.trades():
        assert _owner(books, trade.client_order_id).has_applied(trade.trade_id), f"lost fill {trade}"
    for ledger in books.ledgers.values():
        for lo in (*ledger.history(), *ledger.snapshot().open_orders):
            eo = ex.order(lo.client_order_id)
            if eo is None:
                assert is_terminal(lo.state) and lo.state in (OrderState.NOT_PLACED, OrderState.REJECTED), lo
                continue
            assert (lo.filled, is_terminal(lo.state)) == (eo.filled, eo.status != "open"), (lo, eo)
    for order in ex.open_orders() + [o for t in ex.trades() if (o := ex.order(t.client_order_id))]:
        assert parse_client_order_id(order.client_order_id) is not None, f"foreign order {order}"
        _owner(books, order.client_order_id)  # every order on the exchange belongs to exactly one ledger
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for ledger in books.ledgers.values():
        snap = ledger.snapshot()
        totals[snap.base] += snap.holdings
        totals[snap.quote] += snap.capital
    totals["USDT"] += UNALLOCATED_USDT
    balances = ex.balances()
    for asset, believed in totals.items():
        actual = balances[asset].total if asset in balances else Decimal(0)
        assert believed == actual, f"{asset}: ledgers {believed} != exchange {actual}"


def assert_no_duplicate_orders(books: Books) -> None:
    """No strategy ever has two live orders for one purpose (tag), and no order exists twice."""
    for ledger in books.ledgers.values():
        live: dict[str, list[str]] = defaultdict(list)
        for o in books.exchange.open_orders():
            lo = ledger.order(o.client_order_id)
            if lo is not None:
                live[lo.tag].append(o.client_order_id)
        assert all(len(v) == 1 for v in live.values()), f"{ledger.strategy}: duplicate live orders {dict(live)}"
    cids = [t.client_order_id for t in books.exchange.trades()]
    assert len(set(cids)) <= len(cids)


def signal_name(sig: int) -> str:
    return signal.Signals(sig).name
