"""StrategyWorker: the ExecutionWorker that runs one strategy plugin over its StrategyLedger.

It is the only writer of its ledger, and everything it does keeps one order of events:

1. **Intent before action.** A new order gets its client order id from the ledger's persisted
   sequence and is recorded PENDING -- together with the strategy's state, in one atomic save --
   *before* the request leaves. A crash at any point therefore leaves an order the next start can
   look up by client id, and never a second order (the exchange refuses a reused client id).
   One reaction is one write: the fill (or order update) the strategy reacts to, every intent of
   its decision and its new state are saved together before the first request leaves, and the
   answers to those requests together after the last.
2. **Ambiguity is a state.** A submit or cancel that fails without an answer leaves the order
   UNRESOLVED; a query by client id settles it (:meth:`check_in_flight`, seconds later, bounded by
   :mod:`s1mpled.in_flight`; else the next reconciliation). It is never re-sent blindly.
3. **Fills are applied once.** The ledger de-duplicates by trade id, so the stream and the
   reconciliation's REST catch-up can both deliver the same fill.
4. **Nothing trades before phase C.** Until :meth:`start_trading`, market data only updates the
   last price and strategy notifications are deferred.
5. **No order without a durable intent.** While the disk is full (some state waits for space in the
   store) the strategy does not decide and notifications wait; an intent that cannot be saved is
   not sent (the order is NOT_PLACED), and trading resumes by itself once the store has written.

The ledger and the strategy's own state live in one state file, so they are always consistent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from s1mpled.circuit_breaker import EXIT_TAG, ExitProgress, exit_failure
from s1mpled.clock import ClockMs
from s1mpled.environments.base import ExecutionEnvironment
from s1mpled.errors import (
    ConfigError,
    ExchangeError,
    ExchangeRejected,
    LocalStateError,
    RemoteStateError,
    StateDiskFullError,
)
from s1mpled.events import (
    ExecuteEmergencyExit,
    HaltNewSignals,
    LedgerStateChanged,
    MarketData,
    OrderUpdated,
    Publish,
    ResumeSignals,
    ScheduledEvent,
    TradeExecuted,
)
from s1mpled.failpoints import failpoint
from s1mpled.in_flight import Candidate, InFlightChecks, decide
from s1mpled.ledger import LedgerOrder, StrategyLedger
from s1mpled.model import ExchangeOrderStatus, Fill, OrderRequest, OrderType, Side
from s1mpled.orders import OrderEvent, OrderState, can_cancel, client_order_id, is_terminal, probe_event
from s1mpled.reconciliation import Applied, Correction, apply_correction, ledger_line, order_of
from s1mpled.state.plugin import StatefulPlugin
from s1mpled.state.store import LoadResult, StateFile
from s1mpled.strategies.base import (
    CancelOrder,
    FillView,
    OpenOrderView,
    PlaceOrder,
    Signal,
    Strategy,
    StrategyView,
)
from s1mpled.workers import ExecutionWorker, Subscription

__all__ = ["StrategyWorker"]

log = logging.getLogger("s1mpled.strategy_worker")
_UNRESOLVED = (OrderState.PENDING, OrderState.UNRESOLVED)
STATE_FORMAT = 1

Decision = Callable[[StrategyView], list[Signal]]


@dataclass(frozen=True, slots=True)
class _Intent:
    """A recorded request of one decision: a cancel (no ``request``) or a new PENDING order."""

    cid: str
    reason: str
    request: OrderRequest | None = None


class StrategyWorker(ExecutionWorker, StatefulPlugin):
    """Runs one strategy: events in, ledger updated durably, signals turned into orders."""

    def __init__(
        self,
        *,
        strategy: Strategy,
        capital: Decimal,
        env: ExecutionEnvironment,
        state_file: StateFile,
        prefix: str,
        publish: Publish,
        clock_ms: ClockMs,
        new_epoch: Callable[[], str] = lambda: secrets.token_hex(3),
    ) -> None:
        StatefulPlugin.__init__(self, state_file)
        state_file.use_log()  # a fill appends what changed, not the 500-order history and 10,000 trade ids
        self.strategy = strategy
        self.name, self.symbol = strategy.name, strategy.symbol
        self._base_prefix, self._new_epoch = prefix, new_epoch
        self.ledger = StrategyLedger(strategy.name, strategy.symbol, capital, epoch=new_epoch(), created_ms=clock_ms())
        self.lock = asyncio.Lock()
        self.halted = False
        self.trading = False
        self.exiting = False  # an emergency exit is pending (set by the breaker): the strategy places nothing
        self.last_price: Decimal | None = None
        self._env, self._publish, self._clock_ms = env, publish, clock_ms
        self._deferred: list[Decision] = []
        self._saved_strategy: dict[str, Any] | None = None

    # -- client order ids: one prefix per epoch of the books (s1mpled.orders) --

    def _prefix_of(self, epoch: str) -> str:
        return f"{self._base_prefix[:-1]}{epoch}-"

    @property
    def prefix(self) -> str:
        """The prefix of the client order ids this worker hands out now."""
        return self._prefix_of(self.ledger.epoch)

    @property
    def old_prefixes(self) -> tuple[str, ...]:
        """Prefixes of earlier epochs of these books: their orders are still ours."""
        return tuple(self._prefix_of(e) for e in self.ledger.epochs[:-1])

    def owns(self, client_order_id: str) -> bool:
        """The id carries one of our epochs' prefixes. The bus routes fills and order updates by the same rule
        (s1mpled.ownership); the handlers check it too, for a caller that drives them directly."""
        return any(client_order_id.startswith(self._prefix_of(e)) for e in self.ledger.epochs)

    # -- persistence --

    def load_state(self) -> LoadResult:
        """Load; after a fallback to an older generation, start a new epoch.

        The lost newer generation may have handed out sequence numbers the older one has not: under
        the old prefix they would be reused, and an order of the lost generation would be taken for
        ours-in-flight. Its orders keep their old epoch, so reconciliation adopts them.
        """
        result = super().load_state()
        if result.fallback:
            self.ledger.begin_epoch(self._fresh_epoch())
            log.critical(
                "%s: state fell back to an older generation; new client-order-id epoch %s",
                self.name, self.ledger.epoch, extra=self._extra("", "EPOCH"),
            )  # fmt: skip
        return result

    def _fresh_epoch(self) -> str:
        while (epoch := self._new_epoch()) in self.ledger.epochs:
            pass
        return epoch

    def state_snapshot(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "ledger": self.ledger.to_state(), "strategy": self.strategy.state_snapshot()}

    def restore_state(self, state: dict[str, Any]) -> None:
        ledger = StrategyLedger.from_state(state["ledger"])
        if ledger.symbol != self.symbol:
            raise ConfigError(
                str(self.state_file.path),
                f"strategies.{self.name}.symbol",
                f"the saved ledger trades {ledger.symbol}, the config says {self.symbol}; "
                "a strategy with positions cannot change symbol (use a new strategy name)",
            )
        self.ledger = ledger
        self.strategy.restore_state(state["strategy"])
        self._saved_strategy = self.strategy.state_snapshot()

    async def persist(self, *reasons: str, wait_for_space: bool = True) -> None:
        """Durably save ledger + strategy state, then announce LedgerStateChanged (once per reason: one
        write can carry a fill and the intents it led to).

        On a full disk this waits until the state is written, unless ``wait_for_space=False``
        (StateDiskFullError: nothing was written).
        """
        generation = await self.save_state(wait_for_space=wait_for_space)
        self._saved_strategy = self.strategy.state_snapshot()
        for reason in reasons:
            await self._publish(LedgerStateChanged(self.name, reason, generation))

    # -- what the strategy sees --

    def view(self) -> StrategyView:
        snap = self.ledger.snapshot()
        reserved_base = sum((o.remaining for o in snap.open_orders if o.side is Side.SELL), Decimal(0))
        orders = tuple(
            OpenOrderView(o.client_order_id, o.side, o.type, o.amount, o.price, o.filled, o.tag, o.state in _UNRESOLVED)
            for o in snap.open_orders
        )
        return StrategyView(
            strategy=self.name,
            symbol=self.symbol,
            now_ms=self._clock_ms(),
            last_price=self.last_price,
            capital=snap.capital - snap.reserved_quote,
            holdings=snap.holdings - reserved_base,
            open_orders=orders,
            rules=self._env.market_rules(self.symbol),
            halted=self.halted,
        )

    # -- the bus --

    def subscriptions(self) -> Sequence[Subscription]:
        return [
            Subscription(MarketData, self.on_market),
            Subscription(TradeExecuted, self.on_trade, owned=True),  # routed by the ownership table: ours only
            Subscription(OrderUpdated, self.on_order, owned=True),
            Subscription(ScheduledEvent, self.on_schedule),
            Subscription(HaltNewSignals, self.on_halt),
            Subscription(ResumeSignals, self.on_resume),
        ]

    async def start_trading(self) -> None:
        """Phase C: the strategy starts deciding (after state load and reconciliation)."""
        async with self.lock:
            self.trading = True
            self._deferred.append(self.strategy.on_start)  # after the fills reconciliation found
            await self._flush()

    async def on_market(self, event: MarketData) -> None:
        if event.tick.symbol != self.symbol:
            return
        self.last_price = event.tick.price
        if self.trading and not self.disk_full:
            async with self.lock:
                if self.trading and not self.disk_full:  # a shutdown may have begun while we waited for the lock
                    await self._flush()
                    await self._decide(self.strategy.on_tick)

    async def on_schedule(self, event: ScheduledEvent) -> None:
        if self.trading and not self.disk_full:
            async with self.lock:
                if self.trading and not self.disk_full:
                    await self._flush()
                    await self._decide(lambda view: self.strategy.on_event(event.name, view))

    def on_halt(self, event: HaltNewSignals) -> None:
        self.halted = True

    def on_resume(self, event: ResumeSignals) -> None:
        self.halted = False

    async def on_trade(self, event: TradeExecuted) -> None:
        fill = event.fill
        if not self.owns(fill.client_order_id):
            return
        async with self.lock:
            failpoint("fill.before_apply")
            try:
                applied = self.ledger.apply_fill(fill)
            except RemoteStateError as exc:
                log.critical("%s; reconciliation will settle it", exc, extra=self._extra(fill.client_order_id))
                return
            if applied:
                failpoint("fill.after_apply")
                log.info(
                    "fill %s: %s %s @ %s", fill.trade_id, fill.side, fill.amount, fill.price,
                    extra=self._extra(fill.client_order_id, "TRADE_EXECUTED"),
                )  # fmt: skip
                self.notify_fill(fill)
                await self._react("fill")

    async def on_order(self, event: OrderUpdated) -> None:
        order = event.order
        cid = order.client_order_id
        if not self.owns(cid) or order.status is ExchangeOrderStatus.CLOSED:
            return  # fills, not the status report, move an order to FILLED
        async with self.lock:
            known = self.ledger.order(cid)
            if known is None:
                log.warning("status for unknown order %s; reconciliation will adopt it", cid, extra=self._extra(cid))
                return
            event_ = probe_event(order.status)
            try:
                updated = self.ledger.on_order_event(cid, event_, self._clock_ms(), order.exchange_order_id)
            except (LocalStateError, RemoteStateError) as exc:
                log.critical("order %s: %s", cid, exc, extra=self._extra(cid))
                return
            if (updated.state, updated.exchange_order_id) != (known.state, known.exchange_order_id):
                if is_terminal(updated.state) and updated.state is not OrderState.FILLED:
                    self.notify_closed(updated)
                await self._react(f"order {updated.state}")

    async def on_emergency_exit(self, event: ExecuteEmergencyExit) -> None:
        """Exit now: the strategy places nothing from here on, and the first :meth:`pursue_exit` step runs.
        (The daemon's breaker takes every step itself -- it alerts on each failed one -- so this worker
        does not subscribe to the event.)"""
        self.exiting = True
        await self.pursue_exit()

    async def pursue_exit(self) -> ExitProgress:
        """One step of the emergency exit, a goal the breaker keeps: cancel every open order and sell what
        the strategy holds at market -- but nothing while an earlier exit sell's fate is still unknown, and
        no order is cancelled while a request for it is in flight (the stream, the in-flight checks or
        reconciliation settle them first), so no retry can sell twice."""
        async with self.lock:
            if not self.trading:
                return ExitProgress(waiting="not trading yet (recovery first)")
            open_orders = self.ledger.snapshot().open_orders
            selling = [o for o in open_orders if o.tag == EXIT_TAG]
            if selling:
                return ExitProgress(waiting=f"exit order {selling[0].client_order_id} is {selling[0].state}")
            # only orders the exchange acknowledged and nothing is in flight for: an unresolved one is settled
            # first (a cancel of it would be refused as unknown and restart its in-flight wait, forever)
            await self._execute([CancelOrder(o.client_order_id) for o in open_orders if o.state is OrderState.OPEN])
            view = self.view()
            amount = view.rules.amount_down(view.holdings)
            if amount <= 0 or amount < view.rules.min_amount:
                left = len(self.ledger.snapshot().open_orders)
                return ExitProgress(done=not left, waiting=f"{left} order(s) still open" if left else None)
            before = self.ledger.snapshot().sequence
            await self._place_exit(PlaceOrder(Side.SELL, OrderType.MARKET, amount, tag=EXIT_TAG))
            after = self.ledger.snapshot().sequence
            sent = self.ledger.order(client_order_id(self.prefix, after)) if after != before else None
            return ExitProgress(failed=exit_failure(sent))

    # -- corrections from reconciliation: this worker is the one writer of its ledger --

    def apply_corrections(self, corrections: Sequence[Correction], now_ms: int, cursor: str | None) -> bool:
        """Apply what reconciliation found, under our lock (the pass holds it for us while it compares).

        Each correction is logged CRITICAL with the ledger before and after it; the strategy hears of
        fills, closed orders and revived orders once trading. ``cursor``: every trade up to it was
        compared. True if the ledger changed (the caller persists).
        """
        if not self.lock.locked():
            raise LocalStateError(f"{self.name}: corrections applied without the worker's lock")
        changed = False
        for c in corrections:
            cid = order_of(c)
            before = ledger_line(self.ledger, cid)
            try:
                applied = apply_correction(self.ledger, c, now_ms)
            except (LocalStateError, RemoteStateError) as exc:
                log.critical("reconciliation could not apply %s: %s", c.describe(), exc, extra=self._extra(cid or ""))
                continue
            if applied is None:
                continue  # the ledger had moved past it
            changed = True
            log.critical(
                "reconciliation corrected %s: %s; before: %s; after: %s",
                self.name, c.describe(), before, ledger_line(self.ledger, cid),
                extra=self._extra(cid or "", "RECONCILIATION_CORRECTION"),
            )  # fmt: skip
            self._notify(applied)
        return self.ledger.mark_reconciled(cursor) or changed

    def _notify(self, applied: Applied) -> None:
        if applied.fill is not None:
            self.notify_fill(applied.fill)
        if applied.closed is not None:
            self.notify_closed(applied.closed)
        if applied.revived is not None:
            self.notify_revived(applied.revived)

    # -- notifications from reconciliation (made while it holds our lock) --

    def notify_revived(self, order: LedgerOrder) -> None:
        """A written-off order exists after all: the strategy decides (by default: no duplicate level)."""
        cid, tag = order.client_order_id, order.tag
        self._deferred.append(lambda v: self.strategy.on_order_revived(cid, tag, v))

    def notify_fill(self, fill: Fill) -> None:
        order = self.ledger.order(fill.client_order_id)
        tag = order.tag if order else ""
        complete = order is not None and order.state is OrderState.FILLED
        view = FillView(fill.client_order_id, tag, fill.side, fill.price, fill.amount, fill.fee, complete)
        self._deferred.append(lambda v: self.strategy.on_fill(view, v))

    def notify_closed(self, order: LedgerOrder) -> None:
        cid, tag, state = order.client_order_id, order.tag, str(order.state)
        self._deferred.append(lambda v: self.strategy.on_order_closed(cid, tag, state, v))

    def _dropped(self, signal: PlaceOrder) -> None:
        """Tell the strategy a signal never became an order, so it does not wait for it forever."""
        tag = signal.tag
        self._deferred.append(lambda v: self.strategy.on_order_closed("", tag, str(OrderState.NOT_PLACED), v))

    @property
    def disk_full(self) -> bool:
        """Some state of the directory waits for space: no decisions (their orders' intents cannot be saved)."""
        return self.state_file.directory.disk_full

    async def _flush(self, pending: list[str] | None = None) -> None:
        """Run deferred notifications; ones they cause wait for the next event (no feedback loops).

        While the disk is full they stay deferred: the strategy hears of them once it can act again.
        ``pending``: reasons for a change not yet saved; the first decision's write carries it (and clears it).
        """
        if not self.trading or self.disk_full:
            return
        batch, self._deferred = self._deferred, []
        for decision in batch:
            await self._decide(decision, pending)

    async def _react(self, reason: str) -> None:
        """Save a change (``reason``) together with what the strategy decides about it: a fill and the next
        order's intent are one durable write, made before that order's request leaves."""
        pending = [reason]
        await self._flush(pending)
        if pending:  # nothing decided (not trading, disk full, no signal): the change is saved on its own
            await self.persist(*pending)

    # -- turning signals into orders --

    async def _decide(self, decision: Decision, pending: list[str] | None = None) -> None:
        signals = decision(self.view())
        await self._execute(signals, pending)
        if pending or self.strategy.state_snapshot() != self._saved_strategy:
            await self.persist(*(pending or ["strategy state"]))
            if pending:
                pending.clear()

    async def _execute(self, signals: list[Signal], pending: list[str] | None = None, *, exit_: bool = False) -> None:
        """One decision's signals: every intent recorded and saved in one write (with ``pending``, the change
        the decision reacts to) before the first request leaves; the requests in the signals' order; then
        their answers saved in one write. ``exit_``: the emergency exit's own order (neither the exit nor an
        open breaker drops it)."""
        intents = [i for i in (self._intend(signal, exit_) for signal in signals) if i is not None]
        if not intents:
            return
        reasons = [*(pending or []), *dict.fromkeys(i.reason for i in intents)]
        try:
            # durable before the requests leave; an order intent must not wait for space (it would go stale)
            await self.persist(*reasons, wait_for_space=not any(i.request for i in intents))
        except StateDiskFullError as exc:
            intents = self._not_sent(intents, exc.why)
            await self.persist(*reasons, "order not sent")  # waits for space: written once it returns
        if pending:
            pending.clear()
        for intent in intents:
            await (self._send_cancel(intent.cid) if intent.request is None else self._send_order(intent.request))
        if intents:
            await self.persist(*dict.fromkeys("cancel sent" if i.request is None else "order sent" for i in intents))

    async def _place_exit(self, signal: PlaceOrder) -> None:
        await self._execute([signal], exit_=True)

    def _intend(self, signal: Signal, exit_: bool = False) -> _Intent | None:
        """Record what a signal asks for (a cancel request, or a PENDING order) -- or drop it, saying why."""
        if isinstance(signal, CancelOrder):
            order = self.ledger.order(signal.client_order_id)
            if order is None or not can_cancel(order.state):
                return None
            self.ledger.on_order_event(signal.client_order_id, OrderEvent.CANCEL_REQUESTED, self._clock_ms())
            return _Intent(signal.client_order_id, "cancel intent")
        why = "disk full" if self.disk_full else None if exit_ else self._why_not(signal)
        if why is not None:
            log.warning("%s: dropped %s signal %s", why, signal.side, signal.tag, extra=self._extra(""))
            self._dropped(signal)
            return None
        cid = client_order_id(self.prefix, self.ledger.next_sequence())
        req = OrderRequest(cid, self.symbol, signal.side, signal.type, signal.amount, signal.price)
        try:
            self.ledger.record_intent(req, self._clock_ms(), signal.tag)
        except LocalStateError as exc:
            log.error("strategy asked for an invalid order: %s", exc, extra=self._extra(cid))
            self._dropped(signal)
            return None
        return _Intent(cid, "order intent", req)

    def _why_not(self, signal: PlaceOrder) -> str | None:
        if self.exiting:
            return "emergency exit"
        if self.halted and signal.side is not Side.SELL:
            return "breaker open"
        if self.disk_full:
            return "disk full"
        return None

    def _not_sent(self, intents: list[_Intent], why: str) -> list[_Intent]:
        """The disk filled up under the intents' write: their orders are never sent (what a query by client
        id would prove: PENDING -> NOT_PLACED); the cancels still go out once the write has waited for space."""
        for intent in intents:
            if intent.request is not None:
                self._event(intent.cid, OrderEvent.PROBE_NOT_FOUND)
                log.warning("order %s not sent: its intent cannot be saved (%s)", intent.cid, why,
                            extra=self._extra(intent.cid))  # fmt: skip
                self._notify_closed_cid(intent.cid)
        return [i for i in intents if i.request is None]

    async def _send_order(self, req: OrderRequest) -> None:
        cid = req.client_order_id
        failpoint("order.after_intent")
        try:
            placed = await self._env.create_order(req)
        except ExchangeRejected as exc:
            log.warning("order %s rejected: %s", cid, exc, extra=self._extra(cid))
            if self._event(cid, OrderEvent.SUBMIT_REJECTED):
                self._notify_closed_cid(cid)
        except ExchangeError as exc:
            log.error("order %s outcome unknown (%s): UNRESOLVED", cid, exc, extra=self._extra(cid))
            self._event(cid, OrderEvent.SUBMIT_TIMEOUT)
        else:
            failpoint("order.after_send")
            self._event(cid, OrderEvent.SUBMIT_ACK, placed.exchange_order_id)
            log.info(
                "order %s placed: %s %s %s @ %s", cid, req.side, req.type, req.amount, req.price,
                extra=self._extra(cid, "ORDER_PLACED"),
            )  # fmt: skip

    async def _send_cancel(self, cid: str) -> None:
        try:
            await self._env.cancel_order(self.symbol, cid)
        except ExchangeRejected as exc:
            log.warning("cancel of %s refused: %s", cid, exc, extra=self._extra(cid))
            self._event(cid, OrderEvent.CANCEL_REJECTED)
        except ExchangeError as exc:
            log.error("cancel of %s outcome unknown (%s)", cid, exc, extra=self._extra(cid))
            self._event(cid, OrderEvent.CANCEL_TIMEOUT)
        else:
            if self._event(cid, OrderEvent.CANCEL_ACK):
                self._notify_closed_cid(cid)

    def _notify_closed_cid(self, cid: str) -> None:
        order = self.ledger.order(cid)
        if order is not None and is_terminal(order.state):
            self.notify_closed(order)

    def _event(self, cid: str, event: OrderEvent, exchange_order_id: str | None = None) -> bool:
        """Apply the answer to our own request; True if it changed the order's state.

        A stream report can overtake the answer (the fill or the cancel report came first); then the
        order is already past this step and the answer changes nothing.
        """
        before = self.ledger.order(cid)
        if before is None:
            return False
        try:
            after = self.ledger.on_order_event(cid, event, self._clock_ms(), exchange_order_id)
        except (LocalStateError, RemoteStateError) as exc:
            if not is_terminal(before.state):
                log.critical("order %s: %s", cid, exc, extra=self._extra(cid))
            return False
        return after.state != before.state

    def _extra(self, cid: str, event: str = "ORDER") -> dict[str, str]:
        return {"STRATEGY": self.name, "SYMBOL": self.symbol, "ORDER_ID": cid, "EVENT": event}

    # -- in-flight checks: an order whose request got no answer is asked about within seconds --

    in_flight_checks: InFlightChecks | None = None
    """Which UNRESOLVED orders are due for a question (the Operation shares one query budget among all
    strategies); made on first use if nobody set it."""

    async def check_in_flight(self) -> None:
        """Ask the exchange by client id about the UNRESOLVED orders that are due (:mod:`s1mpled.in_flight`).

        Without this, an order whose submit timed out (or got a 5xx) idles its strategy until the next
        scheduled reconciliation. Runs under our lock, so no fill or report races an answer; persists and
        tells the strategy when an answer settled something, as the stream's reports do.
        """
        if not self.trading:
            return
        checks = self.in_flight_checks = self.in_flight_checks or InFlightChecks()
        async with self.lock:
            if not self.trading:  # a shutdown began while we waited for the lock
                return
            changed = False
            for order in checks.due(self._in_flight_candidates(), self._clock_ms()):
                changed = await self._check_in_flight_order(checks, order) or changed
            if changed:
                await self.persist("in-flight check")
                await self._flush()

    def _in_flight_candidates(self) -> list[Candidate]:
        return [
            Candidate(o.client_order_id, o.updated_ms, o.exchange_order_id is not None or o.filled > 0)
            for o in self.ledger.snapshot().open_orders
            if o.state is OrderState.UNRESOLVED
        ]

    async def _check_in_flight_order(self, checks: InFlightChecks, order: Candidate) -> bool:
        """One question and its answer; True if the ledger changed."""
        cid = order.client_order_id
        try:
            seen = await self._env.fetch_order(self.symbol, cid)
        except ExchangeError as exc:
            log.warning("in-flight check of %s failed: %s", cid, exc, extra=self._extra(cid, "IN_FLIGHT_CHECK"))
            seen, event = None, None
        else:
            event = decide(order, None if seen is None else seen.status, self._clock_ms(), self._env.in_flight_ms)
        if event is None:
            if checks.asked(order, self._clock_ms(), self._env.in_flight_ms):
                log.warning(
                    "order %s still unresolved after %d in-flight checks; the next reconciliation settles it",
                    cid, checks.policy.max_checks, extra=self._extra(cid, "IN_FLIGHT_CHECK"),
                )  # fmt: skip
            return False
        if not self._event(cid, event, None if seen is None else seen.exchange_order_id):
            return False  # a contradiction (logged): reconciliation judges it
        after = self.ledger.order(cid)
        log.info("in-flight check: order %s %s", cid, event, extra=self._extra(cid, "IN_FLIGHT_CHECK"))
        if after is not None and is_terminal(after.state) and after.state is not OrderState.FILLED:
            self.notify_closed(after)  # a filled one: its fills tell the strategy, as on the stream
        return True
