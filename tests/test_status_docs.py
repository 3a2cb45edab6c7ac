"""The documents of the control socket's ``status``, ``reconcile`` and ``subscribe``, byte for byte.

The expected lines were produced by the hand-written projections of s1mpled.status before they moved onto the
record codec (commit 48620a9) and pasted here: key order, Decimal spelling (exponents and trailing zeros kept),
enums by value, None values, absent keys and the rounding of ``streams_healthy_for_s`` are what clients
(``s1mpled status --json``, the dashboard) see, so any changed byte fails here. The objects behind them are
real (ledger snapshots, orders, fills, the breaker, receipts, reports, events); only the daemon around them
is a stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from s1mpled import record
from s1mpled.bus import EventBus
from s1mpled.circuit_breaker import Breaker, BreakerState
from s1mpled.control import encode_reply
from s1mpled.errors import RecordError
from s1mpled.events import (
    ConnectionLost,
    ConnectionRestored,
    Event,
    ExecuteEmergencyExit,
    HaltNewSignals,
    LedgerStateChanged,
    MarketData,
    OrderUpdated,
    ReconciliationCompleted,
    ResumeSignals,
    TradeExecuted,
)
from s1mpled.ledger import LedgerOrder, LedgerSnapshot
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, Fill, MarketTick, OrderType, Side
from s1mpled.orders import OrderState
from s1mpled.receipts import Compared, Receipt
from s1mpled.reconciliation import AdoptOrder, ApplyFill, Report, SetCapital, SettleOrder
from s1mpled.startup import Waiting
from s1mpled.status import BreakerStatus, ControlCommands, OrderDoc, ReconcileReply, StrategyStatus

T = TypeVar("T")
NOW_MS = 1_700_000_000_123


class Grid:
    """A stand-in strategy: status shows only its class name."""


class Dca:
    """Another."""


def _order(cid: str, side: Side, kind: OrderType, amounts: tuple[str, str | None, str], **kw: Any) -> LedgerOrder:
    """An order of the books; ``amounts``: amount, price (None: a market order), filled."""
    amount, price, filled = amounts
    state, exchange_id = kw.pop("state", OrderState.OPEN), kw.pop("exchange_order_id", None)
    return LedgerOrder(cid, "BTC/USDT", side, kind, D(amount), None if price is None else D(price), D(filled), state,
                       exchange_id, 1, 2, **kw)  # fmt: skip


def _snapshot(name: str, symbol: str, open_orders: tuple[LedgerOrder, ...], **money: str) -> LedgerSnapshot:
    base, quote = symbol.split("/")
    d = {k: D(v) for k, v in money.items()}
    return LedgerSnapshot(name, symbol, base, quote, d["capital"], d["holdings"], D(0), open_orders, None,
                          d["realized_pnl"], d["fees_paid"], 3, D(0), None, (), 9)  # fmt: skip


def _worker(name: str, symbol: str, strategy: object, snap: LedgerSnapshot, **kw: Any) -> SimpleNamespace:
    def owns(cid: str) -> bool:
        return cid.startswith(name[:3])

    return SimpleNamespace(name=name, symbol=symbol, strategy=strategy, ledger=SimpleNamespace(snapshot=lambda: snap),
                           state_file=SimpleNamespace(generation=kw.get("generation", 7)), owns=owns,
                           trading=kw.get("trading", True), halted=kw.get("halted", False),
                           last_price=kw.get("last_price"), disk_full=kw.get("disk_full", False))  # fmt: skip


def _receipt(trigger: str, at_ms: int, corrections: tuple[str, ...] = ()) -> Receipt:
    return Receipt(trigger, at_ms, Compared(2, 3, 0, 5, 2, 0), True, corrections, 0, 1, 0, "ab" * 32)


def _components(healthy: float | None, breaker: Breaker, workers: Sequence[SimpleNamespace], **kw: Any) -> Any:
    reconciler = SimpleNamespace(last_at_ms=kw.get("last_at_ms"), last_trigger=kw.get("last_trigger"),
                                 passes=kw.get("passes", 0), last_report=kw.get("last_report"),
                                 receipts=kw.get("receipts", ()), reconcile=kw.get("reconcile"))  # fmt: skip
    env, breaker_worker = SimpleNamespace(streams_healthy_for=lambda: healthy), SimpleNamespace(breaker=breaker)
    return SimpleNamespace(breaker=breaker_worker, env=env, workers=list(workers), reconciler=reconciler)


def _operation(components: Any, phase: str = "trading", waiting: Waiting | None = None) -> Any:
    config = SimpleNamespace(operation="pinned-op", mode="paper", state_dir=Path("/var/lib/s1mpled/pinned-op"))
    return SimpleNamespace(config=config, phase=phase, waiting=waiting, components=components, bus=EventBus(),
                           now_ms=lambda: NOW_MS, steady_status=lambda: f"{phase}: 2 strategies")  # fmt: skip


def _run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def _reply(commands: ControlCommands, cmd: str, args: Mapping[str, Any] | None = None) -> str:
    """The reply line the control socket sends for ``cmd``, as text."""
    handler = commands.handlers()[cmd]
    return encode_reply(result=_run(handler(args or {}))).decode("ascii")


def _feed_lines(commands: ControlCommands, events: Sequence[Event]) -> list[str]:
    """The lines one subscriber receives for ``events``, delivered as the bus would."""
    queue = commands.feed.add()
    handlers: dict[type[Event], Callable[[Any], Any]] = {s.event_type: s.handler for s in commands.feed.subscriptions()}
    for event in events:
        handlers[type(event)](event)
    lines = []
    while len(queue):
        line = _run(queue.get(0))
        assert line is not None
        lines.append(line.decode("ascii"))
    return lines


def _pid(text: str) -> str:
    return text.replace('"pid": PID', f'"pid": {os.getpid()}')


# ---------------------------------------------------------------------------------------------- fixtures

BTC_ORDERS = (
    _order("dca-1-0001", Side.BUY, OrderType.LIMIT, ("0.00100", "42000.50", "0"), tag="rung-3"),
    _order("dca-1-0002", Side.SELL, OrderType.MARKET, ("1E-8", None, "0.5E-8"), state=OrderState.CANCEL_PENDING,
           exchange_order_id="x9"),
)  # fmt: skip
DCA = _worker("dca-btc", "BTC/USDT", Dca(), _snapshot("dca-btc", "BTC/USDT", BTC_ORDERS, capital="1000.50",
              holdings="0.00000000", realized_pnl="-1.25", fees_paid="0.0042"), last_price=D("42001.00"))  # fmt: skip
GRID = _worker("grid-eth", "ETH/USDT", Grid(), _snapshot("grid-eth", "ETH/USDT", (), capital="5E+2", holdings="2",
               realized_pnl="0", fees_paid="0E-8"), trading=False, halted=True, generation=0)  # fmt: skip

EX_ORDER = ExchangeOrder("dca-1-0001", "123", "BTC/USDT", Side.BUY, OrderType.LIMIT, D("0.00100"), D("42000.50"),
                         D("0.00040"), ExchangeOrderStatus.UNKNOWN, 5, "PENDING_NEW")  # fmt: skip
EX_MARKET = ExchangeOrder("zzz-9", "124", "ETH/USDT", Side.SELL, OrderType.MARKET, D("2"), None, D("2"),
                          ExchangeOrderStatus.CLOSED, 6)  # fmt: skip
FILL = Fill("777", "dca-1-0001", "123", "BTC/USDT", Side.BUY, D("42000.50"), D("0.00040"), D("0.0000004"), "BNB", 99)

REPORT = Report(
    corrections=(
        AdoptOrder("dca-btc", EX_ORDER),
        ApplyFill("dca-btc", FILL),
        SettleOrder("grid-eth", "gri-1-0003", OrderState.OPEN, OrderState.FILLED, D("1.50")),
        SetCapital("grid-eth", "USDT", D("500"), D("499.9")),
    ),
    external_orders=(EX_MARKET,),
    external_surplus={"USDT": D("12.30"), "BNB": D("1E-3")},
)


# ------------------------------------------------------------------------------------------------ status

STATUS_TRADING = (
    '{"ok": true, "result": {"operation": "pinned-op", "mode": "paper", "phase": "trading", "pid": PID, '
    '"summary": "trading: 2 strategies", "state_dir": "/var/lib/s1mpled/pinned-op", '
    '"breaker": {"state": "open", "reason": "connection unstable", "manual": false, "opened_ms": 1699999999000, '
    '"emergency_exit": true, "streams_healthy_for_s": 12.3}, '
    '"strategies": [{"name": "dca-btc", "symbol": "BTC/USDT", "strategy": "Dca", "trading": true, "halted": false, '
    '"last_price": "42001.00", "capital": "1000.50", "holdings": "0E-8", "base": "BTC", "quote": "USDT", '
    '"realized_pnl": "-1.25", "fees_paid": "0.0042", "state_generation": 7, "open_orders": ['
    '{"client_order_id": "dca-1-0001", "side": "buy", "type": "limit", "amount": "0.00100", "price": "42000.50", '
    '"filled": "0", "state": "open", "tag": "rung-3"}, '
    '{"client_order_id": "dca-1-0002", "side": "sell", "type": "market", "amount": "1E-8", "price": null, '
    '"filled": "5E-9", "state": "cancel_pending", "tag": ""}]}, '
    '{"name": "grid-eth", "symbol": "ETH/USDT", "strategy": "Grid", "trading": false, "halted": true, '
    '"last_price": null, "capital": "5E+2", "holdings": "2", "base": "ETH", "quote": "USDT", "realized_pnl": "0", '
    '"fees_paid": "0E-8", "state_generation": 0, "open_orders": []}], "disk_full": false, '
    '"last_reconciliation": {"at_ms": 1699999998000, "trigger": "periodic", "passes": 4, "corrections": 4}, '
    '"receipts": [{"trigger": "periodic", "at_ms": 1699999998000, "compared": {"strategies": 2, "open_orders": 3, '
    '"probed": 0, "trades": 5, "balances": 2, "unreadable": 0}, "consistent": true, "corrections": ["a", "b"], '
    '"deferred_cuts": 0, "external_orders": 1, "unsettled": 0, "venue_sha256": '
    '"abababababababababababababababababababababababababababababababab"}, {"trigger": "startup", "at_ms": 10, '
    '"compared": {"strategies": 2, "open_orders": 3, "probed": 0, "trades": 5, "balances": 2, "unreadable": 0}, '
    '"consistent": true, "corrections": [], "deferred_cuts": 0, "external_orders": 1, "unsettled": 0, '
    '"venue_sha256": "abababababababababababababababababababababababababababababababab"}]}}\n'
)

STATUS_PAPER_CLOSED = (
    '{"ok": true, "result": {"operation": "pinned-op", "mode": "paper", "phase": "trading", "pid": PID, '
    '"summary": "trading: 2 strategies", "state_dir": "/var/lib/s1mpled/pinned-op", '
    '"breaker": {"state": "closed", "reason": "", "manual": false, "opened_ms": 0, "emergency_exit": false, '
    '"streams_healthy_for_s": 1000000000.0}, '
    '"strategies": [{"name": "grid-eth", "symbol": "ETH/USDT", "strategy": "Grid", "trading": false, '
    '"halted": true, "last_price": null, "capital": "5E+2", "holdings": "2", "base": "ETH", "quote": "USDT", '
    '"realized_pnl": "0", "fees_paid": "0E-8", "state_generation": 0, "open_orders": []}], "disk_full": true, '
    '"last_reconciliation": {"at_ms": null, "trigger": null, "passes": 0, "corrections": null}, "receipts": []}}\n'
)

STATUS_WAITING = (
    '{"ok": true, "result": {"operation": "pinned-op", "mode": "paper", "phase": "recovery B", "pid": PID, '
    '"summary": "recovery B: 2 strategies", "state_dir": "/var/lib/s1mpled/pinned-op", "waiting": {'
    '"step": "recovery B", "what": "the exchange", "since_ms": 1699999990000, "failed_tries": 2, '
    '"last_error": "timeout", "next_try_in_s": 1.5, "text": "recovery B: the exchange since '
    '2023-11-14 22:13:10 UTC, retry 2 in 2 s"}, "breaker": {"state": "closed", "reason": "", "manual": false, '
    '"opened_ms": 0, "emergency_exit": false, "streams_healthy_for_s": null}, "strategies": [], '
    '"disk_full": false, "last_reconciliation": {"at_ms": null, "trigger": null, "passes": 0, '
    '"corrections": null}, "receipts": []}}\n'
)

STATUS_STARTING = (
    '{"ok": true, "result": {"operation": "pinned-op", "mode": "paper", "phase": "starting", "pid": PID, '
    '"summary": "starting: 2 strategies", "state_dir": "/var/lib/s1mpled/pinned-op"}}\n'
)


def test_status_of_a_trading_operation_is_pinned_byte_for_byte() -> None:
    """Open breaker with an exit pending, rounded stream health, two strategies (one halted, no price), open
    orders of both sides and kinds (a market order's price null, an empty tag), receipts newest first."""
    breaker = Breaker(BreakerState.OPEN, "connection unstable", False, 1_699_999_999_000, True)
    receipts = (_receipt("startup", 10), _receipt("periodic", 1_699_999_998_000, ("a", "b")))
    c = _components(12.345, breaker, [DCA, GRID], last_at_ms=1_699_999_998_000, last_trigger="periodic", passes=4,
                    last_report=REPORT, receipts=receipts)  # fmt: skip
    assert _reply(ControlCommands(_operation(c)), "status") == _pid(STATUS_TRADING)


def test_status_of_a_paper_operation_with_a_full_disk_is_pinned() -> None:
    """Paper's streams never fail (infinitely healthy, shown capped at 1e9 s); no pass yet; the disk full."""
    c = _components(float("inf"), Breaker(), [_worker("grid-eth", "ETH/USDT", Grid(), GRID.ledger.snapshot(),
                    trading=False, halted=True, generation=0, disk_full=True)])  # fmt: skip
    assert _reply(ControlCommands(_operation(c)), "status") == _pid(STATUS_PAPER_CLOSED)


def test_status_while_waiting_and_before_the_state_is_loaded_is_pinned() -> None:
    """What the start waits for (streams not healthy: null), and the document before any component exists."""
    waiting = Waiting("recovery B", "the exchange", 1_699_999_990_000, 2, "timeout", NOW_MS + 1500)
    c = _components(None, Breaker(), [])
    assert _reply(ControlCommands(_operation(c, "recovery B", waiting)), "status") == _pid(STATUS_WAITING)
    assert _reply(ControlCommands(_operation(None, "starting")), "status") == _pid(STATUS_STARTING)


# --------------------------------------------------------------------------------------------- reconcile

RECONCILE = (
    '{"ok": true, "result": {"corrections": ['
    '{"strategy": "dca-btc", "what": "adopted order dca-1-0001 (buy 0.00100 BTC/USDT, unknown) the ledger lacked"}, '
    '{"strategy": "dca-btc", "what": "applied missed fill 777 of dca-1-0001: buy 0.00040 @ 42000.50, '
    'fee 0.0000004 BNB"}, '
    '{"strategy": "grid-eth", "what": "order gri-1-0003: open -> filled (filled 1.50)"}, '
    '{"strategy": "grid-eth", "what": "capital USDT: 500 -> 499.9 (the exchange holds less)"}], '
    '"external_orders": ["zzz-9"], "external_surplus": {"USDT": "12.30", "BNB": "0.001"}}}\n'
)
RECONCILE_CLEAN = '{"ok": true, "result": {"corrections": [], "external_orders": [], "external_surplus": {}}}\n'


@pytest.mark.parametrize(("report", "expected"), [(REPORT, RECONCILE), (Report(()), RECONCILE_CLEAN)])
def test_the_reconcile_reply_is_pinned(report: Report, expected: str) -> None:
    async def reconcile(trigger: str) -> Report:
        return report

    c = _components(None, Breaker(), [DCA], reconcile=reconcile)
    assert _reply(ControlCommands(_operation(c)), "reconcile") == expected


# ---------------------------------------------------------------------------------------------- the feed

FEED = [
    '{"event": "TRADE_EXECUTED", "at_ms": 1700000000123, "strategy": "dca-btc", "fill": {"trade_id": "777", '
    '"client_order_id": "dca-1-0001", "symbol": "BTC/USDT", "side": "buy", "price": "42000.50", '
    '"amount": "0.00040", "fee": "4E-7", "fee_asset": "BNB", "timestamp_ms": 99}}\n',
    '{"event": "TRADE_EXECUTED", "at_ms": 1700000000123, "strategy": null, "fill": {"trade_id": "778", '
    '"client_order_id": "zzz-9", "symbol": "BTC/USDT", "side": "buy", "price": "42000.50", "amount": "0.00040", '
    '"fee": "4E-7", "fee_asset": "BNB", "timestamp_ms": 99}}\n',
    '{"event": "ORDER_UPDATED", "at_ms": 1700000000123, "strategy": "dca-btc", "order": {"client_order_id": '
    '"dca-1-0001", "symbol": "BTC/USDT", "side": "buy", "type": "limit", "amount": "0.00100", "price": "42000.50", '
    '"filled": "0.00040", "status": "unknown"}}\n',
    '{"event": "ORDER_UPDATED", "at_ms": 1700000000123, "strategy": null, "order": {"client_order_id": "zzz-9", '
    '"symbol": "ETH/USDT", "side": "sell", "type": "market", "amount": "2", "price": null, "filled": "2", '
    '"status": "closed"}}\n',
    '{"event": "LEDGER_STATE_CHANGED", "at_ms": 1700000000123, "strategy": "grid-eth", "reason": "fill", '
    '"generation": 8, "status": {"name": "grid-eth", "symbol": "ETH/USDT", "strategy": "Grid", "trading": false, '
    '"halted": true, "last_price": null, "capital": "5E+2", "holdings": "2", "base": "ETH", "quote": "USDT", '
    '"realized_pnl": "0", "fees_paid": "0E-8", "state_generation": 0, "open_orders": []}}\n',
    '{"event": "LEDGER_STATE_CHANGED", "at_ms": 1700000000123, "strategy": "gone", "reason": "reconciled", '
    '"generation": 1}\n',
    '{"event": "MARKET_DATA", "at_ms": 1700000000123, "symbol": "BTC/USDT", "price": "42000.10", "timestamp_ms": 55}\n',
    '{"event": "MARKET_DATA", "at_ms": 1700000000123, "symbol": "ETH/USDT", "price": "2E+3", "timestamp_ms": 56}\n',
    '{"event": "HALT_NEW_SIGNALS", "at_ms": 1700000000123, "reason": "operator halt", "breaker": {"state": "open", '
    '"reason": "operator halt", "manual": true, "opened_ms": 5, "emergency_exit": false, '
    '"streams_healthy_for_s": 0.0}}\n',
    '{"event": "RESUME_SIGNALS", "at_ms": 1700000000123, "reason": "operator resume", "breaker": {"state": "open", '
    '"reason": "operator halt", "manual": true, "opened_ms": 5, "emergency_exit": false, '
    '"streams_healthy_for_s": 0.0}}\n',
    '{"event": "EXECUTE_EMERGENCY_EXIT", "at_ms": 1700000000123, "reason": "unstable", "breaker": {"state": "open", '
    '"reason": "operator halt", "manual": true, "opened_ms": 5, "emergency_exit": false, '
    '"streams_healthy_for_s": 0.0}}\n',
    '{"event": "RECONCILIATION_COMPLETED", "at_ms": 1700000000123, "trigger": "control", "corrections": 2, '
    '"receipt": {"trigger": "control", "at_ms": 20, "compared": {"strategies": 2, "open_orders": 3, "probed": 0, '
    '"trades": 5, "balances": 2, "unreadable": 0}, "consistent": true, "corrections": ["x"], "deferred_cuts": 0, '
    '"external_orders": 1, "unsettled": 0, "venue_sha256": '
    '"abababababababababababababababababababababababababababababababab"}}\n',
    '{"event": "CONNECTION_LOST", "at_ms": 1700000000123, "stream": "market", "error": "reset by peer"}\n',
    '{"event": "CONNECTION_LOST", "at_ms": 1700000000123, "stream": "orders", "error": ""}\n',
    '{"event": "CONNECTION_RESTORED", "at_ms": 1700000000123, "stream": "market"}\n',
]

FEED_WITHOUT_COMPONENTS = [
    '{"event": "HALT_NEW_SIGNALS", "at_ms": 1700000000123, "reason": "early", "breaker": null}\n',
    '{"event": "RECONCILIATION_COMPLETED", "at_ms": 1700000000123, "trigger": "startup", "corrections": 0, '
    '"receipt": null}\n',
    '{"event": "TRADE_EXECUTED", "at_ms": 1700000000123, "strategy": null, "fill": {"trade_id": "777", '
    '"client_order_id": "dca-1-0001", "symbol": "BTC/USDT", "side": "buy", "price": "42000.50", '
    '"amount": "0.00040", "fee": "4E-7", "fee_asset": "BNB", "timestamp_ms": 99}}\n',
]


def test_every_feed_line_is_pinned_byte_for_byte() -> None:
    """Each event kind as a subscriber receives it: fills and orders with their strategy (or null), a ledger
    change with the strategy's status (none for a strategy the daemon lacks), one price a second per symbol,
    the breaker after each of its events, the newest receipt, a lost stream's error (even empty)."""
    breaker = Breaker(BreakerState.OPEN, "operator halt", True, 5)
    c = _components(0.04, breaker, [DCA, GRID], receipts=(_receipt("startup", 10), _receipt("control", 20, ("x",))))
    events: list[Event] = [
        TradeExecuted(FILL),
        TradeExecuted(replace(FILL, trade_id="778", client_order_id="zzz-9")),
        OrderUpdated(EX_ORDER),
        OrderUpdated(EX_MARKET),
        LedgerStateChanged("grid-eth", "fill", 8),
        LedgerStateChanged("gone", "reconciled", 1),
        MarketData(MarketTick("BTC/USDT", D("42000.10"), 55)),
        MarketData(MarketTick("BTC/USDT", D("42000.20"), 56)),  # within the second: not sent
        MarketData(MarketTick("ETH/USDT", D("2E+3"), 56)),
        HaltNewSignals("operator halt"),
        ResumeSignals("operator resume"),
        ExecuteEmergencyExit("unstable"),
        ReconciliationCompleted("control", 2, 20, (("ApplyFill", 2),)),
        ConnectionLost("market", 5, "reset by peer"),
        ConnectionLost("orders", 1, ""),
        ConnectionRestored("market"),
    ]
    assert _feed_lines(ControlCommands(_operation(c)), events) == FEED


def test_feed_lines_before_the_state_is_loaded_are_pinned() -> None:
    events: list[Event] = [HaltNewSignals("early"), ReconciliationCompleted("startup", 0), TradeExecuted(FILL)]
    assert _feed_lines(ControlCommands(_operation(None, "starting")), events) == FEED_WITHOUT_COMPONENTS


def test_the_status_snapshot_line_of_the_feed_is_the_status_document() -> None:
    """The STATUS line a subscriber gets is the ``status`` reply's result in an event envelope."""
    c = _components(float("inf"), Breaker(), [_worker("grid-eth", "ETH/USDT", Grid(), GRID.ledger.snapshot(),
                    trading=False, halted=True, generation=0, disk_full=True)])  # fmt: skip
    commands = ControlCommands(_operation(c))
    status = _pid(STATUS_PAPER_CLOSED).removeprefix('{"ok": true, "result": ').removesuffix("}\n")
    expected = f'{{"event": "STATUS", "at_ms": {NOW_MS}, "status": {status}}}\n'
    assert _run(commands._snapshot()).decode("ascii") == expected


@pytest.mark.parametrize(
    ("cls", "doc"),
    [
        (StrategyStatus, json.loads(_pid(STATUS_TRADING))["result"]["strategies"][0]),
        (StrategyStatus, json.loads(FEED[4])["status"]),
        (BreakerStatus, json.loads(_pid(STATUS_TRADING))["result"]["breaker"]),
        (BreakerStatus, json.loads(_pid(STATUS_PAPER_CLOSED))["result"]["breaker"]),
        (BreakerStatus, json.loads(_pid(STATUS_WAITING))["result"]["breaker"]),
        (OrderDoc, json.loads(FEED[3])["order"]),
        (ReconcileReply, json.loads(RECONCILE)["result"]),
    ],
)
def test_what_a_client_receives_reads_back_into_the_same_record(cls: type[Any], doc: dict[str, Any]) -> None:
    """The documents have a schema, not only a shape: each reads back strictly (JSON dialect) and is written
    again to the same data."""
    assert record.encode(record.decode(cls, doc, record.JSON), record.JSON) == doc


def test_a_damaged_document_is_refused_naming_the_path() -> None:
    status = json.loads(_pid(STATUS_TRADING))["result"]["strategies"][0]
    status["open_orders"][1]["price"] = 1.5
    with pytest.raises(RecordError, match=r"^open_orders\[1\]\.price: expected a decimal number as text, got 1\.5"):
        record.decode(StrategyStatus, status, record.JSON)
