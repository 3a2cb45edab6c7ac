"""State reconciliation (spec §6.2.2): the exchange is the truth; the ledgers are a cache of it.

The comparison is the pure function :func:`reconcile`: (what each ledger believes, what the exchange
reported) -> corrections. It reads no clock, sends nothing and is exhaustively testable. Applying a
correction is the pure :func:`apply_correction`, which each StrategyWorker -- the one writer of its
ledger -- runs under its own lock. What a pass must read (:func:`symbols_to_read`, :func:`trade_cursors`,
:func:`orders_to_probe`) is decided here too. This module does no I/O and imports no asyncio; the
:class:`~s1mpled.reconciliation_monitor.ReconciliationMonitor` is the thin part: it freezes the workers
(takes their locks, so no fill or order races the comparison), pulls a view of the exchange, hands each
worker its corrections, and lets the workers persist and notify their strategies.

The consistent-view rule. An exchange answers one request at a time and its state moves between them
(a fill between the balance and the trade request is routine on Binance), so a pass never corrects
money from a view assembled across such a move:

- Trades are facts: a missed fill is applied whatever else the view says.
- Orders only move forward: pending -> live -> finished (:func:`s1mpled.orders.progress`). A listing
  that is older than a fill never turns a filled order back into an open one; ``filled`` moves only by
  applied fills, never by the exchange's executed quantity (an order whose status is ahead of the trades
  we have is left *unsettled* until its trades show up). A venue that contradicts what it said before
  (a finished order listed open) is reported, never applied.
- Balances are read twice, before and after the trade reads; only if both readings are identical did
  nothing that moves money happen in between (a *consistent* view). Holdings or capital are cut only
  from a consistent view, and only when two consecutive consistent views (two passes) ask for exactly
  the same cut: a lagging trade history or a transfer in flight is not a loss.
- Balances are claims per asset: a strategy's holdings (base), its capital (quote) and, negatively, the
  fees it paid in a third asset (BNB). A shortfall is taken from holdings and capital only, largest
  first; more than the strategies claim is outside money and only reported. Spot balances are fungible:
  coins sold by hand are visible only as the account holding *less* than the strategies claim.

Ownership: a client order id names its strategy and the epoch of its books (:mod:`s1mpled.orders`).
Another prefix is *external* (reported, never touched, whatever it contains -- it need not even parse).
An order of an *earlier* epoch that the ledger lacks is adopted (a fallback to an older generation
lost it); one of the *current* epoch that no ledger explains means another process trades these books:
it is reported as an intruder and the monitor opens the circuit breaker (split-brain fencing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from typing import Protocol

from s1mpled.errors import LocalStateError
from s1mpled.ledger import LedgerOrder, LedgerSnapshot, StrategyLedger
from s1mpled.model import MONEY, Balance, ExchangeOrder, ExchangeOrderStatus, Fill, Side, UnparsedOrder, trade_order
from s1mpled.orders import OrderState, is_terminal, parse_client_order_id, progress, state_for_status
from s1mpled.ownership import OwnershipTable

__all__ = [
    "CONFIRM_AFTER_MS",
    "IN_FLIGHT_MS",
    "AdoptOrder",
    "Applied",
    "ApplyFill",
    "Correction",
    "FactsSource",
    "LedgerFacts",
    "Proposal",
    "Report",
    "SetCapital",
    "SetHoldings",
    "SettleOrder",
    "VenueSnapshot",
    "apply_correction",
    "confirm_cuts",
    "facts_of",
    "ledger_line",
    "moved_symbols",
    "order_of",
    "orders_to_probe",
    "reconcile",
    "symbols_to_read",
    "total_claims",
    "trade_cursors",
    "with_applied",
]

_ZERO = Decimal(0)
_FOREIGN = "\x00external"
CONFIRM_AFTER_MS = 2_000  # a proposed cut is checked again by a follow-up pass this much later


def _amt(value: Decimal) -> str:
    """An amount as plain digits for the log ("0.00000000", never "0E-8")."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What the diff needs of one ledger: its snapshot, its orders (open and recent), applied trades.

    ``prefix`` is the current epoch's client-id prefix; ``old_prefixes`` those of earlier epochs.
    """

    snapshot: LedgerSnapshot
    prefix: str
    orders: Mapping[str, LedgerOrder]
    applied_trade_ids: frozenset[str]
    old_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VenueSnapshot:
    """What the exchange reported, gathered by the monitor in one pass.

    ``probed`` answers, for every ledger order missing from ``open_orders`` (and every order a fill
    names that a ledger does not know), what a query by client id returned: None = no such order.
    ``consistent`` says the balances did not move while the trades were read (see the module docstring);
    ``unparsed`` are listed open orders that could not be read.
    """

    open_orders: tuple[ExchangeOrder, ...]
    probed: Mapping[str, ExchangeOrder | None]
    trades: tuple[Fill, ...]
    balances: Mapping[str, Balance]
    at_ms: int = 0  # when the snapshot was taken (decides whether a request may still be in flight)
    consistent: bool = True
    unparsed: tuple[UnparsedOrder, ...] = ()


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
        fee = f", fee {_amt(f.fee)} {f.fee_asset}" if f.fee else ""
        return (
            f"applied missed fill {f.trade_id} of {f.client_order_id}: {f.side} {_amt(f.amount)} @ {_amt(f.price)}{fee}"
        )


@dataclass(frozen=True, slots=True)
class SettleOrder:
    """Move an order to the state the exchange shows; ``revive`` marks a written-off order that exists."""

    strategy: str
    client_order_id: str
    before: OrderState
    after: OrderState
    filled: Decimal
    revive: bool = False

    def describe(self) -> str:
        what = "revived written-off order" if self.revive else "order"
        return f"{what} {self.client_order_id}: {self.before} -> {self.after} (filled {_amt(self.filled)})"


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
Cut = SetHoldings | SetCapital


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of one comparison: corrections to apply, and what is only reported."""

    corrections: tuple[Correction, ...]
    external_orders: tuple[ExchangeOrder, ...] = ()
    external_surplus: Mapping[str, Decimal] = field(default_factory=dict)
    unsettled: tuple[str, ...] = ()  # orders the exchange does not show settled yet: ask again soon
    contradictions: tuple[str, ...] = ()  # what the venue said against itself (never applied)
    intruders: tuple[ExchangeOrder, ...] = ()  # our current epoch, explained by no ledger: split brain
    unknown_status: tuple[ExchangeOrder, ...] = ()  # ours, in a status ccxt does not map: kept open
    unreadable: tuple[UnparsedOrder, ...] = ()  # listed open, could not be read: never written off
    deferred_cuts: tuple[Cut, ...] = ()  # cuts a consistent view asked for, awaiting confirmation
    balances_checked: bool = True  # False: the view was not consistent, balances were not compared


# ---------------------------------------------------------------------------------------------- ownership


class _Owners:
    """Which strategy a client order id belongs to, and whether it carries the current epoch: the daemon's one
    :class:`~s1mpled.ownership.OwnershipTable` (the stream's fills are routed by it too), built once per pass."""

    def __init__(self, facts: Iterable[LedgerFacts]) -> None:
        self._table = OwnershipTable((f.snapshot.strategy, f.prefix, f.old_prefixes) for f in facts)

    def lookup(self, cid: str) -> tuple[str, bool]:
        found = self._table.claim(cid)
        return (_FOREIGN, False) if found is None else (found.strategy, found.current)

    def __call__(self, cid: str) -> str:
        return self.lookup(cid)[0]


def _trade_key(fill: Fill) -> tuple[str, int, str]:
    """Trades in the exchange's order: per symbol, by integer id (ids are compared as numbers)."""
    return fill.symbol, *trade_order(fill.trade_id)


def _is_intruder(cid: str, fact: LedgerFacts, listed: bool) -> bool:
    """A current-epoch order the ledger lacks. Intent is durable before every request, so such an order
    that is open, or whose sequence number the ledger never handed out, was placed by someone else.
    (A finished one named only by a fill may just have left the ledger's bounded history.)"""
    parsed = parse_client_order_id(cid)
    return listed or parsed is None or parsed[1] > fact.snapshot.sequence


def _adoptions(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, owner: _Owners
) -> tuple[list[AdoptOrder], list[ExchangeOrder], list[ExchangeOrder]]:
    """Orders of ours that the exchange has (open, or named by a fill) and no ledger knows:
    (to adopt, intruders, ours by prefix but on a symbol the strategy does not trade)."""
    candidates: dict[str, ExchangeOrder] = {o.client_order_id: o for o in venue.open_orders}
    listed = set(candidates)
    for fill in venue.trades:
        probed = venue.probed.get(fill.client_order_id)
        if probed is not None:
            candidates.setdefault(probed.client_order_id, probed)
    adopt, intruders, strays = [], [], []
    for cid, order in candidates.items():
        strategy, current = owner.lookup(cid)
        if strategy == _FOREIGN or cid in facts[strategy].orders:
            continue
        if order.symbol != facts[strategy].snapshot.symbol:
            strays.append(order)
        elif current and _is_intruder(cid, facts[strategy], cid in listed):
            intruders.append(order)
        else:
            adopt.append(AdoptOrder(strategy, order))
    return adopt, intruders, strays


def _missed_fills(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, owner: _Owners, barred: set[str]
) -> list[ApplyFill]:
    out = []
    for fill in sorted(venue.trades, key=_trade_key):
        strategy = owner(fill.client_order_id)
        if strategy == _FOREIGN or fill.client_order_id in barred:
            continue
        if fill.trade_id not in facts[strategy].applied_trade_ids and fill.symbol == facts[strategy].snapshot.symbol:
            out.append(ApplyFill(strategy, fill))
    return out


IN_FLIGHT_MS = 15_000  # > Binance's recvWindow (5 s) + our timeout: a later request is refused by the exchange
_DEAD = (OrderState.NOT_PLACED, OrderState.REJECTED)  # terminal without ever trading


def _revivals(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, fills: Sequence[ApplyFill], owner: _Owners
) -> list[SettleOrder]:
    """Orders we wrote off (not placed, rejected) that the exchange shows after all: listed, or trading.

    A 5xx or a timeout leaves the outcome unknown; the order can appear long after the in-flight window
    that let us write it off. The exchange is the truth: the order is ours again, with its tag.
    """
    named = [o.client_order_id for o in venue.open_orders]
    named += [u.client_order_id for u in venue.unparsed if u.client_order_id is not None]
    named += [f.fill.client_order_id for f in fills]
    named += [cid for cid, o in venue.probed.items() if o is not None]
    out: dict[str, SettleOrder] = {}
    for cid in named:
        strategy = owner(cid)
        order = None if strategy == _FOREIGN else facts[strategy].orders.get(cid)
        if order is not None and order.state in _DEAD and cid not in out:
            out[cid] = SettleOrder(strategy, cid, order.state, OrderState.OPEN, order.filled, revive=True)
    return list(out.values())


@dataclass(slots=True)
class _Verdicts:
    settle: list[SettleOrder] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    contradictions: list[str] = field(default_factory=list)
    unknown: list[ExchangeOrder] = field(default_factory=list)
    unreadable: list[UnparsedOrder] = field(default_factory=list)


def _exchange_view(
    order: LedgerOrder, venue: VenueSnapshot, listed: Mapping[str, ExchangeOrder]
) -> ExchangeOrder | None:
    cid = order.client_order_id
    if cid in listed:
        return listed[cid]
    if cid not in venue.probed:
        raise LocalStateError(f"reconciliation: order {cid} was neither listed open nor probed")
    return venue.probed[cid]


def _settle_one(
    strategy: str, order: LedgerOrder, seen: ExchangeOrder | None, expected: Decimal, *, venue: VenueSnapshot,
    in_flight_ms: int, cancel_window_ms: int, out: _Verdicts,
) -> None:  # fmt: skip
    """The verdict on one ledger order that is not finished (or was just revived)."""
    cid = order.client_order_id
    settled_ago = venue.at_ms - order.updated_ms
    if seen is None:
        if order.exchange_order_id is None and order.filled == 0:  # never acknowledged (in any state)
            if settled_ago < in_flight_ms:
                out.unsettled.append(cid)  # the request may still land: ask again later
                return
            after = OrderState.NOT_PLACED  # revived if it lands after all
        else:
            after = OrderState.EXPIRED  # acknowledged once, unknown now: gone without further trades
        out.settle.append(SettleOrder(strategy, cid, order.state, after, expected))
        return
    if seen.status is ExchangeOrderStatus.UNKNOWN:
        out.unknown.append(seen)
    after = state_for_status(seen.status)
    if is_terminal(after) and min(seen.filled, order.amount) > expected:
        out.unsettled.append(cid)  # the exchange is ahead of the trades we have: wait for them
        return
    if after is OrderState.FILLED:
        if expected < order.amount:
            out.unsettled.append(cid)
        return  # the missed fills move it to FILLED themselves
    if progress(after) > progress(order.state) or (is_terminal(after) and after != order.state):
        out.settle.append(SettleOrder(strategy, cid, order.state, after, expected))
    elif after is OrderState.OPEN and order.state is OrderState.CANCEL_PENDING and settled_ago >= cancel_window_ms:
        # our cancel was lost (a crash between saving it and sending it, or it reached the exchange before
        # the order did): the order is simply open again, so it can be cancelled again
        out.settle.append(SettleOrder(strategy, cid, order.state, OrderState.OPEN, expected))


def _settlements(
    facts: Mapping[str, LedgerFacts],
    venue: VenueSnapshot,
    fills: Sequence[ApplyFill],
    revived: Sequence[SettleOrder],
    in_flight_ms: int,
    *,
    cancel_window_ms: int,
) -> _Verdicts:
    listed = {o.client_order_id: o for o in venue.open_orders}
    unreadable = {u.client_order_id: u for u in venue.unparsed if u.client_order_id is not None}
    added: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        added[f.fill.client_order_id] += f.fill.amount
    revived_ids = {r.client_order_id for r in revived}
    out = _Verdicts()
    for strategy, fact in facts.items():
        orders = [*fact.snapshot.open_orders]
        orders += [replace(o, state=OrderState.OPEN) for o in fact.orders.values() if o.client_order_id in revived_ids]
        for order in orders:
            cid = order.client_order_id
            if cid in unreadable:
                out.unreadable.append(unreadable[cid])  # listed, so it exists: never written off
                continue
            expected = min(order.filled + added[cid], order.amount)
            _settle_one(
                strategy, order, _exchange_view(order, venue, listed), expected,
                venue=venue, in_flight_ms=in_flight_ms, cancel_window_ms=cancel_window_ms, out=out,
            )  # fmt: skip
        _contradictions(fact, listed, revived_ids, out)
    return out


def _contradictions(fact: LedgerFacts, listed: Mapping[str, ExchangeOrder], revived: set[str], out: _Verdicts) -> None:
    """A finished order the exchange lists open: the venue contradicts itself (or lags); never applied."""
    for cid, order in fact.orders.items():
        if is_terminal(order.state) and cid in listed and cid not in revived:
            out.contradictions.append(f"{cid} is {order.state} in the ledger but the exchange lists it open")


def _flows(fill: Fill, base: str, quote: str) -> dict[str, Decimal]:
    """What one fill moves, per asset, for the strategy that owns it (fees in whatever asset charged)."""
    sign = 1 if fill.side is Side.BUY else -1
    out: dict[str, Decimal] = defaultdict(Decimal)
    out[base] += sign * fill.amount
    out[quote] -= sign * fill.cost
    if fill.fee and fill.fee_asset:
        out[fill.fee_asset] -= fill.fee
    return out


def _balance_corrections(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, fills: Sequence[ApplyFill]
) -> tuple[list[Cut], dict[str, Decimal]]:
    with localcontext(MONEY):  # like the ledger: sums of exchange amounts stay exact
        return _balance_corrections_exact(facts, venue, fills)


def total_claims(snapshots: Iterable[LedgerSnapshot]) -> dict[str, Decimal]:
    """Per asset, what the strategies claim together: holdings, capital, minus fee debts (exact sums).

    What the balance check holds against the account (before missed fills); the harnesses that compare
    books with an exchange use the same sum, so they check what reconciliation means by "claims".
    """
    totals: dict[str, Decimal] = {}
    with localcontext(MONEY):
        for snap in snapshots:
            for asset, amount in snap.claims().items():
                totals[asset] = totals.get(asset, _ZERO) + amount
    return totals


def _claims(facts: Mapping[str, LedgerFacts], fills: Sequence[ApplyFill]) -> dict[str, dict[str, Decimal]]:
    """asset -> strategy -> what the strategy claims of it, after the missed fills."""
    claims: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for s, f in facts.items():
        for asset, amount in f.snapshot.claims().items():
            claims[asset][s] = amount
    for a in fills:
        snap = facts[a.strategy].snapshot
        for asset, delta in _flows(a.fill, snap.base, snap.quote).items():
            claims[asset][a.strategy] = claims[asset].get(a.strategy, _ZERO) + delta
    return claims


def _balance_corrections_exact(
    facts: Mapping[str, LedgerFacts], venue: VenueSnapshot, fills: Sequence[ApplyFill]
) -> tuple[list[Cut], dict[str, Decimal]]:
    corrections: list[Cut] = []
    surplus: dict[str, Decimal] = {}
    for asset, owed in sorted(_claims(facts, fills).items()):
        balance = venue.balances.get(asset)
        on_exchange = balance.total if balance is not None else _ZERO
        believed = sum(owed.values(), _ZERO)
        if on_exchange > believed:
            surplus[asset] = on_exchange - believed
        shortfall = believed - on_exchange
        cuttable = [(s, a) for s, a in owed.items() if a > 0 and asset in _own_assets(facts[s])]
        for strategy, amount in sorted(cuttable, key=lambda c: (-c[1], c[0])):
            if shortfall <= 0:
                break
            cut = min(amount, shortfall)
            cls = SetHoldings if asset == facts[strategy].snapshot.base else SetCapital
            corrections.append(cls(strategy, asset, amount, amount - cut))
            shortfall -= cut
    return corrections, surplus


def _lagging_assets(facts: Mapping[str, LedgerFacts], unsettled: Sequence[str]) -> set[str]:
    """Assets of strategies with an order the exchange shows ahead of its trades (or still in flight): the
    trade history lags, so a shortfall there may be a fill not yet visible -- no cut until it settles."""
    pending = set(unsettled)
    out: set[str] = set()
    for f in facts.values():
        if any(cid in pending for cid in f.orders):
            out.update(f.snapshot.claims())
    return out


def _own_assets(fact: LedgerFacts) -> tuple[str, str]:
    """Only holdings (base) and capital (quote) can be cut; a fee debt is never increased."""
    return fact.snapshot.base, fact.snapshot.quote


def reconcile(
    ledgers: Sequence[LedgerFacts], venue: VenueSnapshot, in_flight_ms: int = IN_FLIGHT_MS, *, restarted: bool = False
) -> Report:
    """Compare the ledgers with the exchange; pure. Corrections are listed in the order to apply them.

    An order the exchange never acknowledged and does not know is declared NOT_PLACED only once no
    request for it can still arrive (``in_flight_ms`` after its last change); until then it is
    reported ``unsettled`` and left alone. A cancel we saved but that did not take (the order is listed
    open) is taken as lost after the same window -- at once after a restart (``restarted``), since no
    cancel of this process can be under way. Balance cuts are computed only from a consistent view.
    """
    facts = {f.snapshot.strategy: f for f in ledgers}
    owner = _Owners(ledgers)
    adoptions, intruders, strays = _adoptions(facts, venue, owner)
    fills = _missed_fills(facts, venue, owner, {o.client_order_id for o in (*intruders, *strays)})
    revived = _revivals(facts, venue, fills, owner)
    verdicts = _settlements(
        facts, venue, fills, revived, in_flight_ms, cancel_window_ms=0 if restarted else in_flight_ms
    )
    cuts: list[Cut] = []
    surplus: dict[str, Decimal] = {}
    if venue.consistent:
        cuts, surplus = _balance_corrections(facts, venue, fills)
        lagging = _lagging_assets(facts, verdicts.unsettled)
        cuts = [c for c in cuts if c.asset not in lagging]
    external = tuple(o for o in venue.open_orders if owner(o.client_order_id) == _FOREIGN) + tuple(strays)
    corrections: tuple[Correction, ...] = (*adoptions, *revived, *fills, *verdicts.settle, *cuts)
    return Report(
        corrections,
        external,
        surplus,
        tuple(verdicts.unsettled),
        tuple(verdicts.contradictions),
        tuple(intruders),
        tuple(verdicts.unknown),
        tuple(u for u in venue.unparsed if u.client_order_id is None or owner(u.client_order_id) != _FOREIGN),
        balances_checked=venue.consistent,
    )


@dataclass(frozen=True, slots=True)
class Proposal:
    """Cuts a consistent view asked for, and when they were first asked for."""

    cuts: frozenset[Cut] = frozenset()
    since_ms: int = 0


def confirm_cuts(report: Report, previous: Proposal, now_ms: int) -> tuple[Report, Proposal]:
    """Apply holdings/capital cuts only when a consistent view at least ``CONFIRM_AFTER_MS`` earlier asked
    for exactly the same: a trade history lagging the balances (two passes a few milliseconds apart would
    both miss the same trade) or a transfer in flight is not a loss.

    Returns the report to apply (cuts removed unless confirmed, unconfirmed ones in ``deferred_cuts``)
    and the proposal to remember for the next pass. A view that was not consistent keeps what was proposed.
    """
    if not report.balances_checked:
        return report, previous
    cuts = frozenset(c for c in report.corrections if isinstance(c, SetHoldings | SetCapital))
    if not cuts:
        return report, Proposal()
    if cuts == previous.cuts and now_ms - previous.since_ms >= CONFIRM_AFTER_MS:
        return report, Proposal()
    kept = tuple(c for c in report.corrections if not isinstance(c, SetHoldings | SetCapital))
    deferred = tuple(c for c in report.corrections if isinstance(c, SetHoldings | SetCapital))
    proposal = previous if cuts == previous.cuts else Proposal(cuts, now_ms)
    return replace(report, corrections=kept, deferred_cuts=deferred), proposal


# ---------------------------------------------------------------------------------------------- applying


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one correction did, for the worker's notifications (None fields: nothing to say)."""

    fill: Fill | None = None  # a fill was accounted: tell the strategy
    closed: LedgerOrder | None = None  # the order ended without completing: tell the strategy
    revived: LedgerOrder | None = None  # a written-off order exists after all: tell the strategy


def apply_correction(ledger: StrategyLedger, c: Correction, now_ms: int) -> Applied | None:
    """Apply one correction to the ledger of its strategy; None if the ledger already moved past it.

    Pure (the ledger is); the StrategyWorker calls it under its own lock. Re-checked here because the
    ledger may have changed since the facts were taken (an earlier correction of the same pass): an
    order is never moved backwards, a fill never applied twice, a known order never adopted again.
    A contradicting fill raises RemoteStateError (the caller logs it and goes on).
    """
    if isinstance(c, AdoptOrder):
        if ledger.order(c.order.client_order_id) is not None:
            return None
        ledger.adopt_order(c.order, now_ms)
        return Applied()
    if isinstance(c, ApplyFill):
        return Applied(fill=c.fill) if ledger.apply_fill(c.fill) else None
    if isinstance(c, SettleOrder):
        return _settle(ledger, c, now_ms)
    if isinstance(c, SetHoldings):
        ledger.set_holdings(c.after)
    else:
        ledger.set_capital(c.after)
    return Applied()


def _settle(ledger: StrategyLedger, c: SettleOrder, now_ms: int) -> Applied | None:
    current = ledger.order(c.client_order_id)
    if current is None:
        return None
    if c.revive:
        if current.state not in _DEAD:
            return None
    elif is_terminal(current.state) or progress(c.after) < progress(current.state):
        return None  # moved on since the facts were taken (a fill of this pass finished it)
    _, after = ledger.set_order_state(c.client_order_id, c.after, max(current.filled, c.filled), now_ms=now_ms)
    if c.revive:
        return Applied(revived=after)
    if is_terminal(after.state) and after.state is not OrderState.FILLED:
        return Applied(closed=after)
    return Applied()


def order_of(c: Correction) -> str | None:
    """The client id of the order a correction concerns, if any."""
    if isinstance(c, AdoptOrder):
        return c.order.client_order_id
    if isinstance(c, ApplyFill):
        return c.fill.client_order_id
    if isinstance(c, SettleOrder):
        return c.client_order_id
    return None


def ledger_line(ledger: StrategyLedger, cid: str | None) -> str:
    """What a correction changes, for its CRITICAL log line: the order (if any), holdings and capital."""
    snap = ledger.snapshot()
    money = f"holdings {_amt(snap.holdings)} {snap.base}, capital {_amt(snap.capital)} {snap.quote}"
    debts = "".join(f", fee debt {_amt(d)} {a}" for a, d in snap.other_fees)
    if cid is None:
        return money + debts
    order = ledger.order(cid)
    state = "absent" if order is None else f"{order.state} (filled {_amt(order.filled)})"
    return f"order {cid} {state}, {money}{debts}"


# ---------------------------------------------------------------------------------------------- what a pass reads


class FactsSource(Protocol):
    """What the facts are taken from: a strategy's ledger and its client-id prefixes (a strategy's worker)."""

    ledger: StrategyLedger

    @property
    def prefix(self) -> str: ...

    @property
    def old_prefixes(self) -> tuple[str, ...]: ...


def facts_of(worker: FactsSource) -> LedgerFacts:
    ledger = worker.ledger
    snap = ledger.snapshot()
    orders = {o.client_order_id: o for o in (*ledger.history(), *snap.open_orders)}
    return LedgerFacts(snap, worker.prefix, orders, frozenset(), worker.old_prefixes)


def with_applied(
    facts: Sequence[LedgerFacts], workers: Sequence[FactsSource], venue: VenueSnapshot
) -> list[LedgerFacts]:
    """The facts completed with which of the venue's trades each ledger has already applied."""
    return [
        replace(f, applied_trade_ids=frozenset(t.trade_id for t in venue.trades if w.ledger.has_applied(t.trade_id)))
        for f, w in zip(facts, workers, strict=True)
    ]


def trade_cursors(facts: Sequence[LedgerFacts]) -> dict[str, tuple[str | None, int]]:
    """Per symbol: (the lowest reconciled trade id, or None if a ledger has none; the oldest start time).

    Never "just the newest page": a ledger without a cursor (fresh books, a strategy added on a symbol
    another one trades, a fallback) is caught up from when its books began or its oldest order.
    """
    out: dict[str, tuple[str | None, int]] = {}
    for f in facts:
        snap = f.snapshot
        since = min([snap.created_ms, *(o.created_ms for o in snap.open_orders)])
        cur = snap.reconciled_trade_id
        if snap.symbol in out:
            prev, prev_since = out[snap.symbol]
            cur = None if cur is None or prev is None else min(cur, prev, key=int)
            since = min(since, prev_since)
        out[snap.symbol] = (cur, since)
    return out


def _known_alive(cid: str, facts: Sequence[LedgerFacts]) -> bool:
    for f in facts:
        order = f.orders.get(cid)
        if order is not None:
            return order.state not in _DEAD
    return False


def orders_to_probe(
    facts: Sequence[LedgerFacts], trades: Iterable[Fill], listed: Set[str | None]
) -> list[tuple[str, str]]:
    """(symbol, client id) of the orders a pass queries by client id, each once, in this order: every ledger
    order not finished that the exchange does not list (``listed``), then every order of ours a fill names
    that no ledger knows (or that one wrote off)."""
    owner = _Owners(facts)
    wanted = [(o.symbol, o.client_order_id) for f in facts for o in f.snapshot.open_orders]
    wanted += [
        (t.symbol, t.client_order_id)
        for t in trades
        if owner(t.client_order_id) != _FOREIGN and not _known_alive(t.client_order_id, facts)
    ]
    out: dict[str, str] = {}
    for symbol, cid in wanted:
        if cid not in listed and cid not in out:
            out[cid] = symbol
    return [(symbol, cid) for cid, symbol in out.items()]


def symbols_to_read(
    facts: Sequence[LedgerFacts],
    open_orders: Sequence[ExchangeOrder],
    balances: Mapping[str, Balance],
    previous: Mapping[str, Balance] | None,
) -> set[str]:
    """The symbols whose trades a (non-sweeping) pass must read, decided from the exchange's own answers.

    Never from the push stream: reconciliation exists for when the push failed. A symbol is read when
    one of our orders on it is not finished and no longer listed open
    (it filled or ended), when a listed order of ours shows an executed quantity the ledger lacks, or
    when its base or quote balance moved since the previous pass (a fill of an order nobody knows, a
    sale by hand). A quiet account thus costs three requests, not one per symbol. (Startup, reconnects
    and every SWEEP_EVERY-th pass read every symbol regardless.)
    """
    listed = {o.client_order_id: o for o in open_orders}
    out = moved_symbols(facts, balances, previous)
    for f in facts:
        snap = f.snapshot
        for o in snap.open_orders:
            seen = listed.get(o.client_order_id)
            if seen is None or seen.filled != o.filled:
                out.add(snap.symbol)
                break
    return out


def moved_symbols(
    facts: Sequence[LedgerFacts], balances: Mapping[str, Balance], previous: Mapping[str, Balance] | None
) -> set[str]:
    """The symbols of the strategies whose base or quote balance differs from ``previous``."""
    moved = {a for a, b in balances.items() if previous is None or previous.get(a) != b}
    moved |= set() if previous is None else {a for a in previous if a not in balances}
    return {f.snapshot.symbol for f in facts if f.snapshot.base in moved or f.snapshot.quote in moved}
