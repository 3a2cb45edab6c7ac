"""The order state machine as one explicit transition table, and our client order ids.

Why a table: every way an order's state can change is one visible cell, so "what happens when a fill
arrives for an order whose cancel timed out?" has exactly one answer that a test checks (model: h11's
``_state.py``). Three kinds of cell exist:

* a state: the transition is legal (``=`` below: the state stays what it is);
* ``!``: the exchange contradicts what it told us before (it acknowledged the order and now cannot find it).
  :func:`transition` raises :class:`OrderContradiction` (a ``RemoteStateError``); the caller keeps the
  ledger unchanged, logs CRITICAL and lets reconciliation force-correct the order;
* ``-``: nothing outside our own code produces this event in this state (a second cancel while one is
  in flight, a cancel answer without a cancel request, cancelling a finished order). :func:`transition`
  raises :class:`IllegalTransition` (a ``LocalStateError``): a bug, crash and recover.

Rules behind the cells: the exchange is the truth, so a fill or an ``open`` report proves the order
exists, whatever we believed; ambiguity (a submit or cancel that timed out, a crash in flight) is the
state UNRESOLVED, never REJECTED, and only a query by client id (``PROBE_*``) settles it; timeouts carry
no news, so they never move an order whose fate we know; the stream and REST answers race, so a stale
report of an earlier stage (``PROBE_OPEN`` after the fill) and late fills of a canceled or expired order
(they executed before the cancel) are accepted and change nothing but the filled amount. A cancel that
the exchange refuses means "unknown order" on Binance (-2011: filled, canceled, expired or never placed),
so it leads to UNRESOLVED and a probe. ``PROBE_NOT_FOUND`` turns only PENDING and UNRESOLVED orders into
NOT_PLACED; for REJECTED and NOT_PLACED orders it is the expected answer (the exchange keeps no rejected
orders). Probe a PENDING order only when no submit for it can still be in flight (after a restart):
otherwise the request may land after the probe.

Columns: PEND=PENDING OPEN UNRES=UNRESOLVED CXL_P=CANCEL_PENDING FILLED CXLED=CANCELED REJ=REJECTED
NOT_PL=NOT_PLACED EXP=EXPIRED; the last five are terminal.

.. code-block:: text

    event             PEND    OPEN    UNRES   CXL_P   FILLED  CXLED   REJ     NOT_PL  EXP
    submit_ack        OPEN    =       OPEN    =       =       =       !       !       =
    submit_rejected   REJ     !       REJ     REJ     !       !       =       =       !
    submit_timeout    UNRES   =       =       =       =       =       =       =       =
    partial_fill      OPEN    =       OPEN    =       =       =       !       !       =
    full_fill         FILLED  FILLED  FILLED  FILLED  =       =       !       !       =
    cancel_requested  CXL_P   CXL_P   CXL_P   -       -       -       -       -       -
    cancel_ack        -       -       -       CXLED   !       =       !       -       !
    cancel_rejected   -       -       -       UNRES   =       =       =       -       =
    cancel_timeout    -       -       -       UNRES   =       =       =       -       =
    probe_open        OPEN    =       OPEN    =       =       =       !       !       =
    probe_filled      FILLED  FILLED  FILLED  FILLED  =       !       !       !       !
    probe_canceled    CXLED   CXLED   CXLED   CXLED   !       =       !       !       !
    probe_rejected    REJ     !       REJ     REJ     !       !       =       !       !
    probe_expired     EXP     EXP     EXP     EXP     !       !       !       !       =
    probe_not_found   NOT_PL  !       NOT_PL  !       !       !       =       =       !

Client order ids are deterministic so that a replay or a restart recognises its own orders:
``"s1" + sha256(f"{operation}/{strategy}")[:8] + epoch + "-" + seq``. The *epoch* (6 hex digits, random,
created with the books and persisted in them; empty for books made before epochs existed) fences one
set of books from another: fresh books under a reused strategy name never mistake the old books' orders
for their own, and a fallback to an older generation starts a new epoch so a sequence number is never
handed out twice under one prefix. The prefix ends in ``-`` and has one of two fixed lengths, so one
prefix is never a prefix of another strategy's ids; 32 bits of hash make a collision between the
handful of strategies of one account negligible. Anything else on the account is "external":
reported, never touched.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping

from s1mpled.errors import LocalStateError, RemoteStateError
from s1mpled.model import ExchangeOrderStatus

__all__ = [
    "BINANCE_CLIENT_ID_RE",
    "CONTRADICTIONS",
    "EPOCH_RE",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "IllegalTransition",
    "OrderContradiction",
    "OrderEvent",
    "OrderState",
    "can_cancel",
    "client_order_id",
    "is_terminal",
    "order_prefix",
    "parse_client_order_id",
    "probe_event",
    "progress",
    "render_table",
    "state_for_status",
    "transition",
]


class OrderState(enum.StrEnum):
    """Where an order stands as far as we can prove; see the module docstring for the table."""

    PENDING = "pending"  # client id recorded durably; request not yet known to be sent or acknowledged
    OPEN = "open"  # acknowledged by the exchange, possibly partially filled
    UNRESOLVED = "unresolved"  # a submit/cancel timed out or we crashed in flight: only a probe settles it
    CANCEL_PENDING = "cancel_pending"  # a cancel request is in flight
    FILLED = "filled"
    CANCELED = "canceled"  # possibly after partial fills
    REJECTED = "rejected"
    NOT_PLACED = "not_placed"  # a probe proved the exchange never received it
    EXPIRED = "expired"  # possibly after partial fills


class OrderEvent(enum.StrEnum):
    """What can happen to an order: answers to our calls, fills, and probe (query by client id) results."""

    SUBMIT_ACK = "submit_ack"
    SUBMIT_REJECTED = "submit_rejected"
    SUBMIT_TIMEOUT = "submit_timeout"
    PARTIAL_FILL = "partial_fill"
    FULL_FILL = "full_fill"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_ACK = "cancel_ack"
    CANCEL_REJECTED = "cancel_rejected"
    CANCEL_TIMEOUT = "cancel_timeout"
    PROBE_OPEN = "probe_open"
    PROBE_FILLED = "probe_filled"
    PROBE_CANCELED = "probe_canceled"
    PROBE_REJECTED = "probe_rejected"
    PROBE_EXPIRED = "probe_expired"
    PROBE_NOT_FOUND = "probe_not_found"


class IllegalTransition(LocalStateError):
    """Our code produced an event that cannot happen in the order's state: a bug."""

    def __init__(self, state: OrderState, event: OrderEvent) -> None:
        self.state, self.event = state, event
        super().__init__(f"illegal order transition: {event} in state {state}")


class OrderContradiction(RemoteStateError):
    """The exchange reported something that contradicts what it reported before about this order."""

    def __init__(self, state: OrderState, event: OrderEvent) -> None:
        self.state, self.event = state, event
        super().__init__(f"the exchange contradicts itself: {event} for an order in state {state}")


S, E = OrderState, OrderEvent
TERMINAL_STATES = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.NOT_PLACED, S.EXPIRED})

# Legal cells, one row per state (h11 style); an event missing here is a contradiction or a bug.
_LEGAL: dict[OrderState, dict[OrderEvent, OrderState]] = {
    S.PENDING: {
        E.SUBMIT_ACK: S.OPEN, E.SUBMIT_REJECTED: S.REJECTED, E.SUBMIT_TIMEOUT: S.UNRESOLVED,
        E.PARTIAL_FILL: S.OPEN, E.FULL_FILL: S.FILLED, E.CANCEL_REQUESTED: S.CANCEL_PENDING,
        E.PROBE_OPEN: S.OPEN, E.PROBE_FILLED: S.FILLED, E.PROBE_CANCELED: S.CANCELED,
        E.PROBE_REJECTED: S.REJECTED, E.PROBE_EXPIRED: S.EXPIRED, E.PROBE_NOT_FOUND: S.NOT_PLACED,
    },
    S.OPEN: {
        E.SUBMIT_ACK: S.OPEN, E.SUBMIT_TIMEOUT: S.OPEN,
        E.PARTIAL_FILL: S.OPEN, E.FULL_FILL: S.FILLED, E.CANCEL_REQUESTED: S.CANCEL_PENDING,
        E.PROBE_OPEN: S.OPEN, E.PROBE_FILLED: S.FILLED, E.PROBE_CANCELED: S.CANCELED,
        E.PROBE_EXPIRED: S.EXPIRED,
    },
    S.UNRESOLVED: {
        E.SUBMIT_ACK: S.OPEN, E.SUBMIT_REJECTED: S.REJECTED, E.SUBMIT_TIMEOUT: S.UNRESOLVED,
        E.PARTIAL_FILL: S.OPEN, E.FULL_FILL: S.FILLED, E.CANCEL_REQUESTED: S.CANCEL_PENDING,
        E.PROBE_OPEN: S.OPEN, E.PROBE_FILLED: S.FILLED, E.PROBE_CANCELED: S.CANCELED,
        E.PROBE_REJECTED: S.REJECTED, E.PROBE_EXPIRED: S.EXPIRED, E.PROBE_NOT_FOUND: S.NOT_PLACED,
    },
    S.CANCEL_PENDING: {
        E.SUBMIT_ACK: S.CANCEL_PENDING, E.SUBMIT_REJECTED: S.REJECTED, E.SUBMIT_TIMEOUT: S.CANCEL_PENDING,
        E.PARTIAL_FILL: S.CANCEL_PENDING, E.FULL_FILL: S.FILLED,
        E.CANCEL_ACK: S.CANCELED, E.CANCEL_REJECTED: S.UNRESOLVED, E.CANCEL_TIMEOUT: S.UNRESOLVED,
        E.PROBE_OPEN: S.CANCEL_PENDING, E.PROBE_FILLED: S.FILLED, E.PROBE_CANCELED: S.CANCELED,
        E.PROBE_REJECTED: S.REJECTED, E.PROBE_EXPIRED: S.EXPIRED,
    },
    S.FILLED: {
        E.SUBMIT_ACK: S.FILLED, E.SUBMIT_TIMEOUT: S.FILLED, E.PARTIAL_FILL: S.FILLED, E.FULL_FILL: S.FILLED,
        E.CANCEL_REJECTED: S.FILLED, E.CANCEL_TIMEOUT: S.FILLED, E.PROBE_OPEN: S.FILLED, E.PROBE_FILLED: S.FILLED,
    },
    S.CANCELED: {
        E.SUBMIT_ACK: S.CANCELED, E.SUBMIT_TIMEOUT: S.CANCELED, E.PARTIAL_FILL: S.CANCELED,
        E.FULL_FILL: S.CANCELED, E.CANCEL_ACK: S.CANCELED, E.CANCEL_REJECTED: S.CANCELED,
        E.CANCEL_TIMEOUT: S.CANCELED, E.PROBE_OPEN: S.CANCELED, E.PROBE_CANCELED: S.CANCELED,
    },
    S.REJECTED: {
        E.SUBMIT_REJECTED: S.REJECTED, E.SUBMIT_TIMEOUT: S.REJECTED, E.CANCEL_REJECTED: S.REJECTED,
        E.CANCEL_TIMEOUT: S.REJECTED, E.PROBE_REJECTED: S.REJECTED, E.PROBE_NOT_FOUND: S.REJECTED,
    },
    S.NOT_PLACED: {
        E.SUBMIT_REJECTED: S.NOT_PLACED, E.SUBMIT_TIMEOUT: S.NOT_PLACED, E.PROBE_NOT_FOUND: S.NOT_PLACED,
    },
    S.EXPIRED: {
        E.SUBMIT_ACK: S.EXPIRED, E.SUBMIT_TIMEOUT: S.EXPIRED, E.PARTIAL_FILL: S.EXPIRED, E.FULL_FILL: S.EXPIRED,
        E.CANCEL_REJECTED: S.EXPIRED, E.CANCEL_TIMEOUT: S.EXPIRED, E.PROBE_OPEN: S.EXPIRED,
        E.PROBE_EXPIRED: S.EXPIRED,
    },
}  # fmt: skip

# Events only our own code produces: in a state without a legal cell for them they are bugs, never "!".
_OURS = frozenset({E.CANCEL_REQUESTED})
# Answers to a cancel call: a bug wherever no cancel can be in flight (the state was never CANCEL_PENDING).
_CANCEL_ANSWERS = frozenset({E.CANCEL_ACK, E.CANCEL_REJECTED, E.CANCEL_TIMEOUT})
_NO_CANCEL_IN_FLIGHT = frozenset({S.PENDING, S.OPEN, S.UNRESOLVED, S.NOT_PLACED})

TRANSITIONS: Mapping[tuple[OrderState, OrderEvent], OrderState] = {
    (state, event): target for state, row in _LEGAL.items() for event, target in row.items()
}
"""Every legal (state, event) pair and the state it leads to."""


def _is_bug(state: OrderState, event: OrderEvent) -> bool:
    return event in _OURS or (event in _CANCEL_ANSWERS and state in _NO_CANCEL_IN_FLIGHT)


CONTRADICTIONS: frozenset[tuple[OrderState, OrderEvent]] = frozenset(
    (state, event) for state in S for event in E if (state, event) not in TRANSITIONS and not _is_bug(state, event)
)
"""The (state, event) pairs in which the exchange contradicts itself (``!`` in the table)."""


def transition(state: OrderState, event: OrderEvent) -> OrderState:
    """The state ``event`` leads to; OrderContradiction for ``!`` cells, IllegalTransition for ``-`` cells."""
    target = TRANSITIONS.get((state, event))
    if target is not None:
        return target
    if (state, event) in CONTRADICTIONS:
        raise OrderContradiction(state, event)
    raise IllegalTransition(state, event)


def is_terminal(state: OrderState) -> bool:
    """True for FILLED, CANCELED, REJECTED, NOT_PLACED and EXPIRED: nothing will change them but late fills."""
    return state in TERMINAL_STATES


def can_cancel(state: OrderState) -> bool:
    """True if a cancel may be requested now (not finished, no cancel already in flight)."""
    return (state, E.CANCEL_REQUESTED) in TRANSITIONS


_PROBE_EVENTS: Mapping[ExchangeOrderStatus, OrderEvent] = {
    ExchangeOrderStatus.OPEN: E.PROBE_OPEN,
    ExchangeOrderStatus.CLOSED: E.PROBE_FILLED,
    ExchangeOrderStatus.CANCELED: E.PROBE_CANCELED,
    ExchangeOrderStatus.REJECTED: E.PROBE_REJECTED,
    ExchangeOrderStatus.EXPIRED: E.PROBE_EXPIRED,
    ExchangeOrderStatus.UNKNOWN: E.PROBE_OPEN,  # it exists; until its status is known it counts as open
}

_PROGRESS: Mapping[OrderState, int] = {
    S.PENDING: 0, S.UNRESOLVED: 0, S.OPEN: 1, S.CANCEL_PENDING: 1,
    S.FILLED: 2, S.CANCELED: 2, S.REJECTED: 2, S.NOT_PLACED: 2, S.EXPIRED: 2,
}  # fmt: skip


def progress(state: OrderState) -> int:
    """How far an order has come: 0 not known to exist, 1 live, 2 finished. Reconciliation never lowers it."""
    return _PROGRESS[state]


def probe_event(status: ExchangeOrderStatus | None) -> OrderEvent:
    """The event for a status the exchange reported for one of our orders; ``None`` means "no such order"."""
    return E.PROBE_NOT_FOUND if status is None else _PROBE_EVENTS[status]


def state_for_status(status: ExchangeOrderStatus) -> OrderState:
    """The state of an order we learn about only from the exchange (reconciliation adopting it)."""
    return TRANSITIONS[(S.UNRESOLVED, _PROBE_EVENTS[status])]


_ABBREVIATIONS: Mapping[OrderState, str] = {
    S.PENDING: "PEND",
    S.OPEN: "OPEN",
    S.UNRESOLVED: "UNRES",
    S.CANCEL_PENDING: "CXL_P",
    S.FILLED: "FILLED",
    S.CANCELED: "CXLED",
    S.REJECTED: "REJ",
    S.NOT_PLACED: "NOT_PL",
    S.EXPIRED: "EXP",
}


def _cell(state: OrderState, event: OrderEvent) -> str:
    target = TRANSITIONS.get((state, event))
    if target is None:
        return "!" if (state, event) in CONTRADICTIONS else "-"
    return "=" if target is state else _ABBREVIATIONS[target]


def render_table() -> str:
    """The transition table as text (events down, states across); the module docstring shows it."""
    states = list(_LEGAL)
    lines = ["event".ljust(18) + "".join(_ABBREVIATIONS[s].ljust(8) for s in states).rstrip()]
    for event in E:
        lines.append(event.value.ljust(18) + "".join(_cell(s, event).ljust(8) for s in states).rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- client order ids

BINANCE_CLIENT_ID_RE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")  # what Binance accepts; use fullmatch()
_PREFIX_LEN = 17  # "s1" + 8 hex + 6 hex epoch + "-" (11 for epoch-less books)
_MAX_SEQ_DIGITS = 36 - _PREFIX_LEN
_OURS_RE = re.compile(rf"(s1[0-9a-f]{{8}}(?:[0-9a-f]{{6}})?-)(0|[1-9][0-9]{{0,{_MAX_SEQ_DIGITS - 1}}})")
_PREFIX_RE = re.compile(r"s1[0-9a-f]{8}(?:[0-9a-f]{6})?-")
EPOCH_RE = re.compile(r"(?:[0-9a-f]{6})?")  # fullmatch: six hex digits, or "" for epoch-less books


def order_prefix(operation: str, strategy: str, epoch: str = "") -> str:
    """The client-order-id prefix of one strategy of one operation in one epoch of its books.

    ``operation`` may not contain ``/`` (and neither name may be empty), so ``f"{operation}/{strategy}"``
    names exactly one pair.
    """
    if not operation or not strategy or "/" in operation:
        raise ValueError(f"bad operation/strategy names for an order prefix: {operation!r}, {strategy!r}")
    if not EPOCH_RE.fullmatch(epoch):
        raise ValueError(f"an epoch is six hex digits, got {epoch!r}")
    digest = hashlib.sha256(f"{operation}/{strategy}".encode()).hexdigest()
    return f"s1{digest[:8]}{epoch}-"


def client_order_id(prefix: str, seq: int) -> str:
    """``prefix`` (from :func:`order_prefix`) followed by ``seq`` in base 10: a valid Binance client id."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"not an order prefix: {prefix!r}")
    if seq < 0 or len(str(seq)) > _MAX_SEQ_DIGITS:
        raise ValueError(f"order sequence number out of range: {seq}")
    return f"{prefix}{seq}"


def parse_client_order_id(cid: str) -> tuple[str, int] | None:
    """``(prefix, seq)`` for an id we made, ``None`` for anyone else's ("external") id."""
    match = _OURS_RE.fullmatch(cid)
    if match is None:
        return None
    return match.group(1), int(match.group(2))
