"""The ReconciliationMonitor (spec §6.2.2): the I/O shell around the pure diff in :mod:`s1mpled.reconciliation`.

At startup (recovery step B, always), on the schedule's reconciliation tick, after every reconnect and on
``s1mpled reconcile`` it freezes the strategies' workers (takes their locks, so no fill or order races the
comparison), pulls one view of the exchange (open orders, balances before and after the trades, the trades
of the symbols that need it, probes by client id), runs :func:`~s1mpled.reconciliation.reconcile` and
:func:`~s1mpled.reconciliation.confirm_cuts`, hands each worker its corrections and lets the workers persist
and notify their strategies. A current-epoch order no ledger explains fences the circuit breaker. See
:mod:`s1mpled.reconciliation` for the rules. Each pass leaves a receipt (:mod:`s1mpled.receipts`); the
newest :data:`~s1mpled.receipts.KEEP` are persisted by the :class:`ReceiptLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from s1mpled.clock import ClockMs
from s1mpled.environments.base import ExecutionEnvironment
from s1mpled.errors import (
    ExchangeError,
    LocalStateError,
    RemoteStateError,
    StateCorruptError,
    StateError,
    StateFsyncError,
)
from s1mpled.events import ConnectionRestored, Publish, ReconciliationCompleted, ScheduledEvent
from s1mpled.ledger import StrategyLedger
from s1mpled.model import Balance, ExchangeOrder, Fill, UnparsedOrder, trade_number
from s1mpled.receipts import KEEP, Receipt, receipt_of
from s1mpled.reconciliation import (
    CONFIRM_AFTER_MS,
    Correction,
    FactsSource,
    LedgerFacts,
    Proposal,
    Report,
    VenueSnapshot,
    confirm_cuts,
    facts_of,
    moved_symbols,
    orders_to_probe,
    reconcile,
    symbols_to_read,
    trade_cursors,
    with_applied,
)
from s1mpled.state import protocol
from s1mpled.state.plugin import StatefulPlugin
from s1mpled.state.store import StateFile
from s1mpled.workers import MonitorWorker, Subscription

__all__ = ["HISTORY_LAG_MS", "SWEEP_EVERY", "ReceiptLog", "ReconciledWorker", "ReconciliationMonitor"]

log = logging.getLogger("s1mpled.reconciliation")  # the name the journal and log filters know it by

SWEEP_EVERY = 12  # every 12th scheduled pass (an hour at the default 5 minutes) reads every symbol
HISTORY_LAG_MS = 5_000  # a trade history may lag the balances: a moved symbol is read again this much later


class ReconciledWorker(FactsSource, Protocol):
    """What the monitor needs of a strategy's worker (the one writer of its ledger)."""

    name: str
    symbol: str
    ledger: StrategyLedger
    lock: asyncio.Lock

    async def persist(self, reason: str) -> None: ...

    def apply_corrections(self, corrections: Sequence[Correction], now_ms: int, cursor: str | None) -> bool:
        """Apply under the worker's lock (held by the pass); True if anything changed."""
        ...


def _split(
    listing: Iterable[ExchangeOrder | UnparsedOrder],
) -> tuple[tuple[ExchangeOrder, ...], tuple[UnparsedOrder, ...]]:
    orders = tuple(o for o in listing if isinstance(o, ExchangeOrder))
    return orders, tuple(o for o in listing if isinstance(o, UnparsedOrder))


class ReceiptLog(StatefulPlugin):
    """The newest KEEP receipts, persisted in a state file of their own so that status --json shows them
    across a restart.

    Receipts are an audit view, not trading state: nothing decides on them. So, unlike a ledger, a
    receipts file that cannot be used never stops the daemon: it is logged once, set aside as
    ``NAME.corrupt-<time>`` (nothing is deleted) and the log starts empty; a file that must not be
    touched at all (a symbolic link, another user's) is left alone and receipts stay in memory for this
    run. They are saved after each pass, once the ledgers' locks are released (never on the fill path);
    a failed save is logged and costs only the audit trail.
    """

    def __init__(self, state_file: StateFile, clock_ms: ClockMs) -> None:
        super().__init__(state_file)
        self._clock_ms = clock_ms
        self.receipts: deque[Receipt] = deque(maxlen=KEEP)
        self._usable = False  # loaded (or set aside and started afresh): saving cannot overwrite unread history
        self._save_failed = False

    def state_snapshot(self) -> dict[str, Any]:
        return {"receipts": [r.to_doc() for r in self.receipts]}  # oldest first

    def restore_state(self, state: dict[str, Any]) -> None:
        docs = state["receipts"]
        if not isinstance(docs, list):
            raise ValueError("receipts: not a list")
        loaded = [Receipt.from_doc(d) for d in docs]
        self.receipts.clear()
        self.receipts.extend(loaded)

    def recover(self) -> None:
        """Recovery step A for the receipts: load them, or log why not and start with none."""
        try:
            result = self.state_file.load()
        except StateCorruptError as exc:
            self._unusable(f"{exc}; it is set aside and receipts start empty")
            self._set_aside()
            return
        except StateError as exc:  # a link, a FIFO, another user's file: never touched
            self._unusable(f"{exc}; left as it is, receipts are kept in memory only this run")
            return
        self._usable = True
        if result.state is None:
            return
        try:
            self.restore_state(result.state)
        except (ValueError, LookupError, TypeError) as exc:
            self._unusable(f"{self.state_file.path}: {exc}; it is set aside and receipts start empty")
            self._set_aside()

    def _unusable(self, why: str) -> None:
        log.error("reconciliation receipts not restored: %s (trading is not affected)", why,
                  extra={"EVENT": "RECEIPTS_UNREADABLE"})  # fmt: skip

    def _set_aside(self) -> None:
        """Rename every file of the receipts aside (never deleted, kept for forensics), then start afresh."""
        self._usable = False
        d, name = self.state_file.directory, self.state_file.name
        stamp = datetime.fromtimestamp(self._clock_ms() / 1000, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        try:
            found = [n for n in (name, f"{name}.journal", f"{name}.prev") if d.exists(n)]
            d.apply([protocol.RenameFile(n, f"{n}.corrupt-{stamp}") for n in found])
            d.sync()
            self.load_state()  # now a fresh start
        except StateError as exc:
            log.error("could not set the receipts file aside: %s; receipts are kept in memory only", exc)
            return
        self._usable = True

    async def save(self) -> None:
        """Persist the receipts (after a pass). A failed fsync is raised (fail-stop, as for every state);
        any other failure is logged once and the receipts stay in memory."""
        if not self._usable:
            return
        try:
            await self.save_state()
        except StateFsyncError:
            raise
        except (StateError, LocalStateError) as exc:
            if not self._save_failed:
                log.error("could not save the reconciliation receipts: %s", exc, extra={"EVENT": "RECEIPTS_UNSAVED"})
            self._save_failed = True


class ReconciliationMonitor(MonitorWorker):
    """Pulls the exchange's truth and force-corrects the ledgers (at startup, on schedule, after reconnects)."""

    name = "reconciliation-monitor"

    def __init__(
        self,
        env: ExecutionEnvironment,
        workers: Sequence[ReconciledWorker],
        publish: Publish,
        clock_ms: ClockMs,
        schedule_event: str,
        *,
        fence: Callable[[str], Awaitable[None]] | None = None,
        receipts: ReceiptLog | None = None,
    ) -> None:
        self._env, self._workers, self._publish, self._clock_ms = env, workers, publish, clock_ms
        self._event = schedule_event
        self._fence = fence
        self._running = asyncio.Lock()
        self._stopped = False
        self._follow_up_at: int | None = None
        self._proposed = Proposal()
        self._said: set[str] = set()  # "logged once" keys: unknown statuses, unreadable orders
        self._last_balances: Mapping[str, Balance] | None = None
        self._baseline: Mapping[str, Balance] | None = None
        self._moved: set[str] = set()
        self._hot: dict[str, int] = {}  # symbol -> when its balances were first seen moved (read until lag passed)
        self._since_sweep = 0
        self.last_report: Report | None = None
        self.last_at_ms: int | None = None
        self.last_trigger: str | None = None
        self.passes = 0
        self._receipt_log = receipts  # None: receipts are kept in memory only
        # the newest passes' receipts (status, metrics), restored at step A when they are persisted
        self.receipts: deque[Receipt] = deque(maxlen=KEEP) if receipts is None else receipts.receipts

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(ScheduledEvent, self._on_schedule), Subscription(ConnectionRestored, self._on_reconnect)]

    @property
    def confirming(self) -> bool:
        """A cut was proposed and awaits the confirming pass."""
        return bool(self._proposed.cuts)

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
        """Run the extra pass a previous one asked for (orders not settled yet, a cut to confirm), when due."""
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

    async def _trades(self, facts: Sequence[LedgerFacts], symbols: set[str] | None) -> list[Fill]:
        fetched: list[Fill] = []
        for symbol, (after, since) in sorted(trade_cursors(facts).items()):
            if symbols is None or symbol in symbols:
                fetched += await self._env.fetch_trades(symbol, after, since)
        return fetched

    def _sweep(self, trigger: str) -> bool:
        """Every pass but the routine scheduled one reads every symbol; so does every SWEEP_EVERY-th of those."""
        if trigger != "schedule":
            return True
        self._since_sweep = (self._since_sweep + 1) % SWEEP_EVERY
        return self._since_sweep == 0

    async def _venue(self, facts: Sequence[LedgerFacts], sweep: bool) -> VenueSnapshot:
        """One pass of queries; any failure raises (a failed query is never an empty answer).

        Balances are read before and after the trades: identical readings make the view consistent.
        """
        open_orders, unparsed = _split(await self._env.get_open_orders())
        before = await self._env.get_balances()
        wanted = None if sweep else symbols_to_read(facts, open_orders, before, self._last_balances) | set(self._hot)
        self._baseline = before  # what the trades read here account for (not what moved while reading)
        # against a known previous pass only: the first pass reads every symbol anyway
        self._moved = set() if self._last_balances is None else moved_symbols(facts, before, self._last_balances)
        trades = tuple(await self._trades(facts, wanted))
        after = await self._env.get_balances()
        listed = {o.client_order_id for o in open_orders} | {u.client_order_id for u in unparsed}
        probed: dict[str, ExchangeOrder | None] = {}
        for symbol, cid in orders_to_probe(facts, trades, listed):
            probed[cid] = await self._env.fetch_order(symbol, cid)
        return VenueSnapshot(open_orders, probed, trades, after, self._clock_ms(), before == after, unparsed)

    async def reconcile(self, trigger: str) -> Report:
        """One full pass: freeze the ledgers, pull, diff, hand the corrections to their workers."""
        async with self._running, contextlib.AsyncExitStack() as stack:
            for w in sorted(self._workers, key=lambda w: w.name):
                await stack.enter_async_context(w.lock)
            base_facts = [facts_of(w) for w in self._workers]
            venue = await self._venue(base_facts, self._sweep(trigger))
            facts = with_applied(base_facts, self._workers, venue)
            restarted = trigger.startswith("startup")
            report = reconcile(facts, venue, self._env.in_flight_ms, restarted=restarted)
            report, self._proposed = confirm_cuts(report, self._proposed, self._clock_ms())
            await self._apply(report, venue)
            # The baseline of "balance moved" for the next pass: the balances read *before* the trades (money that
            # moved while they were read is still to be read), and only of a pass that completed
            self._last_balances = self._baseline
            self._cool(self._moved)
        self.receipts.append(receipt_of(trigger, self.last_at_ms or 0, len(self._workers), venue, report))
        self._plan_follow_up(report)
        self._summarize(trigger, report)
        if report.intruders and self._fence is not None:
            await self._fence(_intrusion(report.intruders))
        kinds = tuple(sorted(Counter(type(c).__name__ for c in report.corrections).items()))
        await self._publish(ReconciliationCompleted(trigger, len(report.corrections), self.last_at_ms or 0, kinds))
        if self._receipt_log is not None:
            await self._receipt_log.save()  # last: the locks are free, the fence and the event are out
        return report

    async def startup(self, *, confirm_after_s: float = CONFIRM_AFTER_MS / 1000) -> Report:
        """Recovery step B: a pass, and -- if it proposed a cut or read a moving account -- one more a
        moment later, so trading starts from books confirmed by two consistent views."""
        report = await self.reconcile("startup")
        if self.confirming or not report.balances_checked:
            await asyncio.sleep(confirm_after_s)
            report = await self.reconcile("startup-confirm")
        return report

    def _cool(self, moved: set[str]) -> None:
        """Symbols whose balances moved stay to be read until a pass read them HISTORY_LAG_MS after: a fill
        the trade history did not show yet must not be taken as caught up by the balance it moved."""
        now = self._clock_ms()
        for symbol in moved:
            self._hot.setdefault(symbol, now)
        for symbol, since in list(self._hot.items()):
            if now - since >= HISTORY_LAG_MS and symbol not in moved:
                del self._hot[symbol]

    def _plan_follow_up(self, report: Report) -> None:
        now = self._clock_ms()
        due = [since + HISTORY_LAG_MS for since in self._hot.values()]
        if report.unsettled:
            due.append(now + self._env.in_flight_ms)
        if self._proposed.cuts or not report.balances_checked:
            due.append(now + CONFIRM_AFTER_MS)
        self._follow_up_at = min(due) if due else None

    async def _apply(self, report: Report, venue: VenueSnapshot) -> None:
        now = self._clock_ms()
        by_strategy: dict[str, list[Correction]] = defaultdict(list)
        for c in report.corrections:
            by_strategy[c.strategy].append(c)
        for w in self._workers:
            numbers = (trade_number(t.trade_id) for t in venue.trades if t.symbol == w.symbol)
            ids = [n for n in numbers if n is not None]
            cursor = str(max(ids)) if ids else None
            if w.apply_corrections(by_strategy.get(w.name, []), now, cursor):
                await w.persist("reconciliation")
        self.last_report, self.last_at_ms = report, now

    def _once(self, key: str) -> bool:
        if key in self._said:
            return False
        if len(self._said) > 10_000:  # bounded: a long run with churning odd orders may repeat a line
            self._said.clear()
        self._said.add(key)
        return True

    def _summarize(self, trigger: str, report: Report) -> None:
        self.passes += 1
        self.last_trigger = trigger
        for o in report.external_orders:
            log.warning("external order on the account (not ours, not touched): %s %s", o.client_order_id, o.symbol)
        for o in report.unknown_status:
            if self._once(f"status:{o.client_order_id}:{o.raw_status}"):
                log.warning(
                    "order %s has a status ccxt does not map (%r): kept open, status unknown",
                    o.client_order_id, o.raw_status,
                    extra={"EVENT": "ORDER_STATUS_UNKNOWN", "ORDER_ID": o.client_order_id},
                )  # fmt: skip
        for u in report.unreadable:
            if self._once(f"unreadable:{u.client_order_id}:{u.reason}"):
                log.error(
                    "order %s listed open could not be read (%s): kept as it is", u.client_order_id, u.reason,
                    extra={"EVENT": "BAD_EXCHANGE_MESSAGE", "ORDER_ID": u.client_order_id or ""},
                )  # fmt: skip
        for text in report.contradictions:
            log.critical("%s", RemoteStateError(f"the exchange contradicts the ledger: {text}; not applied"))
        for c in report.deferred_cuts:
            log.warning(
                "reconciliation would correct %s: %s; waiting for a second consistent view to confirm",
                c.strategy, c.describe(), extra={"EVENT": "RECONCILIATION_CUT_PROPOSED", "STRATEGY": c.strategy},
            )  # fmt: skip
        if not report.balances_checked:
            log.warning(
                "reconciliation (%s): the account moved while it was read; balances not compared this pass",
                trigger, extra={"EVENT": "RECONCILIATION_VIEW_MOVED"},
            )  # fmt: skip
        level = logging.CRITICAL if report.corrections or report.intruders else logging.INFO
        log.log(
            level,
            "reconciliation (%s): %d correction(s), %d external order(s)",
            trigger,
            len(report.corrections),
            len(report.external_orders),
            extra={"EVENT": ReconciliationCompleted.TOPIC},
        )


def _intrusion(orders: Sequence[ExchangeOrder]) -> str:
    ids = ", ".join(o.client_order_id for o in orders[:5])
    return (
        f"split brain: order(s) {ids} carry these books' current epoch but no ledger placed them; "
        "another process may be trading these books"
    )
