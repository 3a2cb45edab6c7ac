"""State reconciliation (spec §6.2.2): the exchange is the truth; the ledgers are a cache of it.

The comparison is the pure function :func:`reconcile`: (what each ledger believes, what the exchange
reported) -> corrections. It reads no clock, sends nothing and is exhaustively testable. The
:class:`ReconciliationMonitor` is the thin part: it takes every strategy's lock (so no fill or order
races the comparison), pulls one snapshot from the exchange, applies the corrections, logs each one
CRITICAL with before and after, persists, and only then lets the strategies hear about what changed.

Rules of the diff:
- Orders are attributed by client-order-id prefix. An order or trade with a foreign prefix is
  *external*: reported, never touched.
- A ledger order that is not in the exchange's open list was individually probed by the monitor;
  only a probe that answers "no such order" makes a PENDING/UNRESOLVED order NOT_PLACED.
- Missed fills (trade ids the ledger has not applied) are applied, which settles money exactly.
- An order state that differs from the exchange's is overwritten with the exchange's.
- Balances: if the exchange holds less of an asset than the ledgers together believe, the ledgers
  are reduced to match (largest first, exactly); more is external money and only reported.
- Applying the corrections and reconciling again against the same exchange yields none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal, localcontext
from typing import Protocol

from s1mpled.environments.base import ExecutionEnvironment
from s1mpled.errors import ExchangeError, LocalStateError
from s1mpled.events import ConnectionRestored, Event, ReconciliationCompleted, ScheduledEvent
from s1mpled.ledger import LedgerOrder, LedgerSnapshot, StrategyLedger
from s1mpled.model import Balance, ExchangeOrder, Fill, Side
from s1mpled.orders import OrderState, is_terminal, state_for_status
from s1mpled.workers import MonitorWorker, Subscription

__all__ = [
    "AdoptOrder",
    "ApplyFill",
    "Correction",
    "LedgerFacts",
    "ReconciliationMonitor",
    "Report",
    "SetCapital",
    "SetHoldings",
    "SettleOrder",
    "VenueSnapshot",
    "reconcile",
]

log = logging.getLogger("s1mpled.reconciliation")
_ZERO = Decimal(0)
_FOREIGN = "\x00external"


def _amt(value: Decimal) -> str:
    """An amount as plain digits for the log ("0.00000000", never "0E-8")."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What the diff needs of one ledger: its snapshot, its orders (open and recent), applied trades."""

    snapshot: LedgerSnapshot
    prefix: str
    orders: Mapping[str, LedgerOrder]
    applied_trade_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class VenueSnapshot:
    """What the exchange reported, gathered by the monitor in one pass.

    ``probed`` answers, for every ledger order missing from ``open_orders`` (and every order a fill
    names that a ledger does not know), what a query by client id returned: None = no such order.
    """

    open_orders: tuple[ExchangeOrder, ...]
    probed: Mapping[str, ExchangeOrder | None]
    trades: tuple[Fill, ...]
    balances: Mapping[str, Balance]
    at_ms: int = 0  # when the snapshot was taken (decides whether a request may still be in flight)


@dataclass(frozen=True, slots=True)
class AdoptOrder:
    strategy: str
    order: ExchangeOrder

    def describe(self) -> str:
        o = self.order
        return f"adopted order {o.client_order_id} ({o.side} {_amt(o.amount)} {o.symbol}, {o.status}) the ledger lacked"


@dataclass(frozen=True, slots=True)
class ApplyFill:
    strategy: str
    fill: Fill

    def describe(self) -> str:
        f = self.fill
        return f"applied missed fill {f.trade_id} of {f.client_order_id}: {f.side} {_amt(f.amount)} @ {_amt(f.price)}"


@dataclass(frozen=True, slots=True)
class SettleOrder:
    strategy: str
    client_order_id: str
    before: OrderState
    after: OrderState
    filled: Decimal

    def describe(self) -> str:
        return f"order {self.client_order_id}: {self.before} -> {self.after} (filled {_amt(self.filled)})"


@dataclass(frozen=True, slots=True)
class SetHoldings:
    strategy: str
    asset: str
    before: Decimal
    after: Decimal

    def describe(self) -> str:
        return f"holdings {self.asset}: {_amt(self.before)} -> {_amt(self.after)} (the exchange holds less)"


@dataclass(frozen=True, slots=True)
class SetCapital:
    strategy: str
    asset: str
    before: Decimal
    after: Decimal

    def describe(self) -> str:
        return f"capital {self.asset}: {_amt(self.before)} -> {_amt(self.after)} (the exchange holds less)"


Correction = AdoptOrder | ApplyFill | SettleOrder | SetHoldings | SetCapital


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of one comparison: corrections to apply, and what is only reported."""

    corrections: tuple[Correction, ...]
    external_orders: tuple[ExchangeOrder, ...] = ()
    external_surplus: Mapping[str, Decimal] = field(default_factory=dict)
    unsettled: tuple[str, ...] = ()  # orders the exchange does not show yet but may still receive


class _Owners:
    """Which strategy a client order id belongs to: one dict lookup per prefix length, built once per pass."""

    def __init__(self, facts: Iterable[LedgerFacts]) -> None:
        by_length: dict[int, dict[str, str]] = defaultdict(dict)
        for f in facts:
            by_length[len(f.prefix)][f.prefix] = f.snapshot.strategy
        self._table = sorted(by_length.items())

    def __call__(self, cid: str) -> str:
        for length, owners in self._table:
            strategy = owners.get(cid[:length])
            if strategy is not None:
                return strategy
        return _FOREIGN


def _missed_fills(facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, owner: _Owners) -> list[ApplyFill]:
    out = []
    for fill in sorted(venue.trades, key=lambda f: (f.symbol, int(f.trade_id) if f.trade_id.isdigit() else 0)):
        strategy = owner(fill.client_order_id)
        if strategy != _FOREIGN and fill.trade_id not in facts[strategy].applied_trade_ids:
            out.append(ApplyFill(strategy, fill))
    return out


def _adoptions(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, fills: Iterable[ApplyFill], owner: _Owners
) -> list[AdoptOrder]:
    """Orders of ours that the exchange has (open, or named by a missed fill) and no ledger knows."""
    candidates: dict[str, ExchangeOrder] = {o.client_order_id: o for o in venue.open_orders}
    for f in fills:
        probed = venue.probed.get(f.fill.client_order_id)
        if probed is not None:
            candidates.setdefault(probed.client_order_id, probed)
    out = []
    for cid, order in candidates.items():
        strategy = owner(cid)
        if strategy != _FOREIGN and cid not in facts[strategy].orders:
            out.append(AdoptOrder(strategy, order))
    return out


def _exchange_view(
    order: LedgerOrder, venue: VenueSnapshot, open_by_cid: Mapping[str, ExchangeOrder]
) -> ExchangeOrder | None:
    cid = order.client_order_id
    if cid in open_by_cid:
        return open_by_cid[cid]
    if cid not in venue.probed:
        raise LocalStateError(f"reconciliation: order {cid} was neither listed open nor probed")
    return venue.probed[cid]


IN_FLIGHT_MS = 15_000  # > Binance's recvWindow (5 s) + our timeout: a later request is refused by the exchange
_DEAD = (OrderState.NOT_PLACED, OrderState.REJECTED)  # terminal without ever trading


def _revivals(facts: Mapping[str, LedgerFacts], fills: Sequence[ApplyFill]) -> list[SettleOrder]:
    """An order we wrote off (not placed, rejected) that the exchange shows trading: it exists after all."""
    out: dict[str, SettleOrder] = {}
    for f in fills:
        order = facts[f.strategy].orders.get(f.fill.client_order_id)
        if order is not None and order.state in _DEAD and order.client_order_id not in out:
            out[order.client_order_id] = SettleOrder(
                f.strategy, order.client_order_id, order.state, OrderState.OPEN, order.filled
            )
    return list(out.values())


def _settlements(
    facts: Mapping[str, LedgerFacts],
    venue: VenueSnapshot,
    fills: Sequence[ApplyFill],
    revived: Sequence[SettleOrder],
    in_flight_ms: int,
) -> tuple[list[SettleOrder], list[str]]:
    open_by_cid = {o.client_order_id: o for o in venue.open_orders}
    added: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        added[f.fill.client_order_id] += f.fill.amount
    revived_ids = {r.client_order_id for r in revived}
    out, unsettled = [], []
    for strategy, fact in facts.items():
        orders = [*fact.snapshot.open_orders]
        orders += [replace(o, state=OrderState.OPEN) for o in fact.orders.values() if o.client_order_id in revived_ids]
        for order in orders:
            seen = _exchange_view(order, venue, open_by_cid)
            if seen is None:
                if order.state in (OrderState.PENDING, OrderState.UNRESOLVED):
                    if venue.at_ms - order.updated_ms < in_flight_ms:
                        unsettled.append(order.client_order_id)  # the request may still land: ask again later
                        continue
                    after = OrderState.NOT_PLACED
                else:
                    after = OrderState.EXPIRED
                filled = order.filled
            else:
                after = state_for_status(seen.status)
                filled = min(seen.filled, order.amount)
            expected_filled = min(order.filled + added[order.client_order_id], order.amount)
            if after is OrderState.FILLED and expected_filled == order.amount == filled:
                continue  # the missed fills move it to FILLED themselves
            if after != order.state or filled != expected_filled:
                out.append(SettleOrder(strategy, order.client_order_id, order.state, after, filled))
    return out, unsettled


def _signed_flows(fill: Fill, base: str, quote: str) -> tuple[Decimal, Decimal]:
    """(base delta, quote delta) of one fill for the strategy that owns it."""
    sign = 1 if fill.side is Side.BUY else -1
    d_base, d_quote = sign * fill.amount, -sign * fill.cost
    if fill.fee_asset == quote:
        d_quote -= fill.fee
    elif fill.fee_asset == base:
        d_base -= fill.fee
    return d_base, d_quote


_WIDE = Context(prec=60)  # like the ledger: sums of exchange amounts stay exact


def _balance_corrections(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, fills: Sequence[ApplyFill]
) -> tuple[list[Correction], dict[str, Decimal]]:
    with localcontext(_WIDE):
        return _balance_corrections_exact(facts, venue, fills)


def _balance_corrections_exact(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, fills: Sequence[ApplyFill]
) -> tuple[list[Correction], dict[str, Decimal]]:
    holdings = {s: f.snapshot.holdings for s, f in facts.items()}
    capital = {s: f.snapshot.capital for s, f in facts.items()}
    for a in fills:
        snap = facts[a.strategy].snapshot
        d_base, d_quote = _signed_flows(a.fill, snap.base, snap.quote)
        holdings[a.strategy] += d_base
        capital[a.strategy] += d_quote
    claims: dict[str, list[tuple[str, str, Decimal]]] = defaultdict(list)  # asset -> (kind, strategy, amount)
    for s, f in facts.items():
        claims[f.snapshot.base].append(("holdings", s, holdings[s]))
        claims[f.snapshot.quote].append(("capital", s, capital[s]))
    corrections: list[Correction] = []
    surplus: dict[str, Decimal] = {}
    for asset, owed in sorted(claims.items()):
        balance = venue.balances.get(asset)
        on_exchange = balance.total if balance is not None else _ZERO
        believed = sum((amount for _, _, amount in owed), _ZERO)
        if on_exchange > believed:
            surplus[asset] = on_exchange - believed
        shortfall = believed - on_exchange
        for kind, strategy, amount in sorted(owed, key=lambda c: (-c[2], c[1])):
            if shortfall <= 0:
                break
            cut = min(max(amount, _ZERO), shortfall)
            if cut > 0:
                cls = SetHoldings if kind == "holdings" else SetCapital
                corrections.append(cls(strategy, asset, amount, amount - cut))
                shortfall -= cut
    return corrections, surplus


def reconcile(ledgers: Sequence[LedgerFacts], venue: VenueSnapshot, in_flight_ms: int = IN_FLIGHT_MS) -> Report:
    """Compare the ledgers with the exchange; pure. Corrections are listed in the order to apply them.

    A PENDING or UNRESOLVED order the exchange does not know is declared NOT_PLACED only once no
    request for it can still arrive (``in_flight_ms`` after its last change); until then it is
    reported ``unsettled`` and left alone.
    """
    facts = {f.snapshot.strategy: f for f in ledgers}
    owner = _Owners(ledgers)
    fills = _missed_fills(facts, venue, owner)
    adoptions = _adoptions(facts, venue, fills, owner)
    revived = _revivals(facts, fills)
    settlements, unsettled = _settlements(facts, venue, fills, revived, in_flight_ms)
    balances, surplus = _balance_corrections(facts, venue, fills)
    external = tuple(o for o in venue.open_orders if owner(o.client_order_id) == _FOREIGN)
    corrections: tuple[Correction, ...] = (*adoptions, *revived, *fills, *settlements, *balances)
    return Report(corrections, external, surplus, tuple(unsettled))


# ---------------------------------------------------------------------------------------------- the monitor


def _known_alive(cid: str, facts: Sequence[LedgerFacts]) -> bool:
    for f in facts:
        order = f.orders.get(cid)
        if order is not None:
            return order.state not in _DEAD
    return False


class ReconciledWorker(Protocol):
    """What the monitor needs of a strategy's worker."""

    name: str
    symbol: str
    prefix: str
    ledger: StrategyLedger
    lock: asyncio.Lock

    async def persist(self, reason: str) -> None: ...

    def notify_fill(self, fill: Fill) -> None: ...

    def notify_closed(self, order: LedgerOrder) -> None: ...


def facts_of(worker: ReconciledWorker) -> LedgerFacts:
    ledger = worker.ledger
    snap = ledger.snapshot()
    orders = {o.client_order_id: o for o in (*ledger.history(), *snap.open_orders)}
    return LedgerFacts(snap, worker.prefix, orders, frozenset())


def _order_of(c: Correction) -> str | None:
    """The client id of the order a correction concerns, if any."""
    if isinstance(c, AdoptOrder):
        return c.order.client_order_id
    if isinstance(c, ApplyFill):
        return c.fill.client_order_id
    if isinstance(c, SettleOrder):
        return c.client_order_id
    return None


def _ledger_line(ledger: StrategyLedger, cid: str | None) -> str:
    """What a correction changes, for its CRITICAL log line: the order (if any), holdings and capital."""
    snap = ledger.snapshot()
    money = f"holdings {_amt(snap.holdings)} {snap.base}, capital {_amt(snap.capital)} {snap.quote}"
    if cid is None:
        return money
    order = ledger.order(cid)
    state = "absent" if order is None else f"{order.state} (filled {_amt(order.filled)})"
    return f"order {cid} {state}, {money}"


def with_applied(
    facts: Sequence[LedgerFacts], workers: Sequence[ReconciledWorker], venue: VenueSnapshot
) -> list[LedgerFacts]:
    """The facts completed with which of the venue's trades each ledger has already applied."""
    return [
        replace(f, applied_trade_ids=frozenset(t.trade_id for t in venue.trades if w.ledger.has_applied(t.trade_id)))
        for f, w in zip(facts, workers, strict=True)
    ]


class ReconciliationMonitor(MonitorWorker):
    """Pulls the exchange's truth and force-corrects the ledgers (at startup, on schedule, after reconnects)."""

    name = "reconciliation-monitor"

    def __init__(
        self,
        env: ExecutionEnvironment,
        workers: Sequence[ReconciledWorker],
        publish: Callable[[Event], Awaitable[None]],
        clock_ms: Callable[[], int],
        schedule_event: str,
    ) -> None:
        self._env, self._workers, self._publish, self._clock_ms = env, workers, publish, clock_ms
        self._event = schedule_event
        self._running = asyncio.Lock()
        self._stopped = False
        self._follow_up_at: int | None = None
        self.last_report: Report | None = None
        self.last_at_ms: int | None = None
        self.last_trigger: str | None = None
        self.passes = 0

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(ScheduledEvent, self._on_schedule), Subscription(ConnectionRestored, self._on_reconnect)]

    async def _on_schedule(self, event: ScheduledEvent) -> None:
        if event.name == self._event:
            await self._reconcile_logged("schedule")

    async def _on_reconnect(self, event: ConnectionRestored) -> None:
        await self._reconcile_logged(f"reconnect:{event.stream}")

    async def stop(self) -> None:
        """No pass starts after this; returns once a pass under way has finished (before the client closes)."""
        self._stopped = True
        async with self._running:
            pass

    async def follow_up(self) -> None:
        """Run the extra pass a previous one asked for (orders it could not settle yet), when it is due."""
        due = self._follow_up_at
        if due is not None and self._clock_ms() >= due:
            await self._reconcile_logged("follow-up")

    async def _reconcile_logged(self, trigger: str) -> None:
        """A periodic pass that fails is logged and retried next time; it never corrects anything."""
        if self._stopped:
            return
        try:
            await self.reconcile(trigger)
        except ExchangeError as exc:
            log.error(
                "reconciliation (%s) failed, nothing corrected: %s",
                trigger,
                exc,
                extra={"EVENT": "RECONCILIATION_FAILED"},
            )

    async def _venue(self, facts: Sequence[LedgerFacts]) -> VenueSnapshot:
        """One pass of queries; any failure raises (a failed query is never an empty answer)."""
        open_orders = tuple(await self._env.get_open_orders())
        balances = await self._env.get_balances()
        listed = {o.client_order_id for o in open_orders}
        cursors: dict[str, str | None] = {}
        for f in facts:
            cur = f.snapshot.reconciled_trade_id
            prev = cursors.get(f.snapshot.symbol, cur)
            cursors[f.snapshot.symbol] = None if cur is None or prev is None else min(cur, prev, key=int)
        fetched: list[Fill] = []
        for symbol, after in sorted(cursors.items()):
            fetched += await self._env.fetch_trades(symbol, after)
        trades = tuple(fetched)
        probed: dict[str, ExchangeOrder | None] = {}
        owner = _Owners(facts)
        to_probe = [(o.symbol, o.client_order_id) for f in facts for o in f.snapshot.open_orders]
        to_probe += [  # an order of ours a fill names that no ledger knows, or that one wrote off
            (t.symbol, t.client_order_id)
            for t in trades
            if owner(t.client_order_id) != _FOREIGN and not _known_alive(t.client_order_id, facts)
        ]
        for symbol, cid in to_probe:
            if cid not in listed and cid not in probed:
                probed[cid] = await self._env.fetch_order(symbol, cid)
        return VenueSnapshot(open_orders, probed, trades, balances, self._clock_ms())

    async def reconcile(self, trigger: str) -> Report:
        """One full pass: lock the ledgers, pull, diff, correct, persist, then notify the strategies."""
        async with self._running, contextlib.AsyncExitStack() as stack:
            for w in sorted(self._workers, key=lambda w: w.name):
                await stack.enter_async_context(w.lock)
            base_facts = [facts_of(w) for w in self._workers]
            venue = await self._venue(base_facts)
            facts = with_applied(base_facts, self._workers, venue)
            report = reconcile(facts, venue, self._env.in_flight_ms)
            await self._apply(report, venue)
        self._follow_up_at = self._clock_ms() + self._env.in_flight_ms if report.unsettled else None
        self._summarize(trigger, report)
        await self._publish(ReconciliationCompleted(trigger, len(report.corrections), self.last_at_ms or 0))
        return report

    async def _apply(self, report: Report, venue: VenueSnapshot) -> None:
        by_name = {w.name: w for w in self._workers}
        now = self._clock_ms()
        touched: dict[str, None] = {}
        for c in report.corrections:
            w = by_name[c.strategy]
            cid = _order_of(c)
            before = _ledger_line(w.ledger, cid)
            self._apply_one(w, c, now)
            log.critical(
                "reconciliation corrected %s: %s; before: %s; after: %s",
                c.strategy,
                c.describe(),
                before,
                _ledger_line(w.ledger, cid),
                extra={
                    "EVENT": "RECONCILIATION_CORRECTION",
                    "STRATEGY": c.strategy,
                    "SYMBOL": w.symbol,
                    "ORDER_ID": cid or "",
                },
            )
            touched[c.strategy] = None
        for w in self._workers:  # every trade fetched this pass is now applied: advance the cursor
            ids = [int(t.trade_id) for t in venue.trades if t.symbol == w.symbol and t.trade_id.isdigit()]
            if ids and w.ledger.mark_reconciled(str(max(ids))):
                touched.setdefault(w.name, None)
        for name in touched:
            await by_name[name].persist("reconciliation")
        self.last_report, self.last_at_ms = report, now

    @staticmethod
    def _apply_one(w: ReconciledWorker, c: Correction, now: int) -> None:
        ledger = w.ledger
        if isinstance(c, AdoptOrder):
            ledger.adopt_order(c.order, now)
        elif isinstance(c, ApplyFill):
            if ledger.apply_fill(c.fill):
                w.notify_fill(c.fill)
        elif isinstance(c, SettleOrder):
            _, after = ledger.set_order_state(c.client_order_id, c.after, c.filled, now_ms=now)
            if is_terminal(after.state) and after.state is not OrderState.FILLED:
                w.notify_closed(after)
        elif isinstance(c, SetHoldings):
            ledger.set_holdings(c.after)
        else:
            ledger.set_capital(c.after)

    def _summarize(self, trigger: str, report: Report) -> None:
        self.passes += 1
        self.last_trigger = trigger
        for o in report.external_orders:
            log.warning("external order on the account (not ours, not touched): %s %s", o.client_order_id, o.symbol)
        level = logging.CRITICAL if report.corrections else logging.INFO
        log.log(
            level,
            "reconciliation (%s): %d correction(s), %d external order(s)",
            trigger,
            len(report.corrections),
            len(report.external_orders),
            extra={"EVENT": ReconciliationCompleted.TOPIC},
        )
