"""The order state machine (every cell of the table) and our client order ids."""

from __future__ import annotations

import hashlib
from collections import deque

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import s1mpled.orders
from s1mpled.errors import LocalStateError, RemoteStateError
from s1mpled.model import ExchangeOrderStatus
from s1mpled.orders import (
    BINANCE_CLIENT_ID_RE,
    CONTRADICTIONS,
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    OrderContradiction,
    OrderEvent,
    OrderState,
    can_cancel,
    client_order_id,
    is_terminal,
    order_prefix,
    parse_client_order_id,
    probe_event,
    render_table,
    state_for_status,
    transition,
)

S, E = OrderState, OrderEvent

# The specification, written independently of the module: "=" stays, "!" exchange contradiction, "-" our bug.
EXPECTED = """
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
"""
ABBREVIATIONS = {
    "PEND": S.PENDING,
    "OPEN": S.OPEN,
    "UNRES": S.UNRESOLVED,
    "CXL_P": S.CANCEL_PENDING,
    "FILLED": S.FILLED,
    "CXLED": S.CANCELED,
    "REJ": S.REJECTED,
    "NOT_PL": S.NOT_PLACED,
    "EXP": S.EXPIRED,
}


def expected_cells() -> dict[tuple[OrderState, OrderEvent], str]:
    """Parse EXPECTED into {(state, event): cell}."""
    header, *rows = EXPECTED.strip().splitlines()
    states = [ABBREVIATIONS[name] for name in header.split()[1:]]
    cells: dict[tuple[OrderState, OrderEvent], str] = {}
    for row in rows:
        event, *values = row.split()
        for state, value in zip(states, values, strict=True):
            cells[(state, OrderEvent(event))] = value
    return cells


ALL_PAIRS = [(state, event) for state in S for event in E]


def test_expected_table_is_complete() -> None:
    """The specification names every one of the 9 x 15 (state, event) pairs."""
    assert set(expected_cells()) == set(ALL_PAIRS)


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_every_cell(state: OrderState, event: OrderEvent) -> None:
    """Each pair gives the specified state, a contradiction (RemoteStateError) or a bug (LocalStateError)."""
    cell = expected_cells()[(state, event)]
    if cell == "!":
        with pytest.raises(OrderContradiction) as contradiction:
            transition(state, event)
        assert not isinstance(contradiction.value, LocalStateError)
        assert (contradiction.value.state, contradiction.value.event) == (state, event)
    elif cell == "-":
        with pytest.raises(IllegalTransition) as bug:
            transition(state, event)
        assert not isinstance(bug.value, RemoteStateError)
    else:
        assert transition(state, event) is (state if cell == "=" else ABBREVIATIONS[cell])


def test_table_sets_partition_all_pairs() -> None:
    """Legal pairs and contradictions are disjoint; together with the bugs they cover all pairs once."""
    legal, contradictions = set(TRANSITIONS), set(CONTRADICTIONS)
    assert not legal & contradictions
    bugs = {pair for pair, cell in expected_cells().items() if cell == "-"}
    assert legal | contradictions | bugs == set(ALL_PAIRS)
    assert not (legal | contradictions) & bugs


def test_docstring_shows_the_table_the_code_implements() -> None:
    """The module docstring contains the table rendered from TRANSITIONS, so documentation cannot drift."""
    rendered = "\n".join("    " + line for line in render_table().splitlines())
    assert s1mpled.orders.__doc__ is not None
    assert rendered in s1mpled.orders.__doc__


def test_terminal_states_absorb() -> None:
    """No legal event moves a terminal order to any other state (late fills change only the filled amount)."""
    assert {s for s in S if is_terminal(s)} == TERMINAL_STATES
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.NOT_PLACED, S.EXPIRED} == TERMINAL_STATES
    for (state, _event), target in TRANSITIONS.items():
        if is_terminal(state):
            assert target is state


def test_fills_prove_the_order_exists() -> None:
    """A fill for a PENDING, UNRESOLVED or CANCEL_PENDING order is accepted, never an error."""
    for state in (S.PENDING, S.UNRESOLVED, S.CANCEL_PENDING):
        assert not is_terminal(transition(state, E.PARTIAL_FILL))
        assert transition(state, E.FULL_FILL) is S.FILLED


def test_late_fill_for_canceled_order_is_accepted() -> None:
    """A fill that raced the cancel leaves the order CANCELED (and EXPIRED orders EXPIRED)."""
    for event in (E.PARTIAL_FILL, E.FULL_FILL):
        assert transition(S.CANCELED, event) is S.CANCELED
        assert transition(S.EXPIRED, event) is S.EXPIRED


def test_not_found_settles_only_ambiguous_orders() -> None:
    """PROBE_NOT_FOUND turns only PENDING/UNRESOLVED into NOT_PLACED; for an acknowledged order it is theirs."""
    assert {s for s in S if TRANSITIONS.get((s, E.PROBE_NOT_FOUND)) is S.NOT_PLACED} == {
        S.PENDING,
        S.UNRESOLVED,
        S.NOT_PLACED,
    }
    for state in (S.OPEN, S.CANCEL_PENDING, S.FILLED, S.CANCELED, S.EXPIRED):
        with pytest.raises(RemoteStateError):
            transition(state, E.PROBE_NOT_FOUND)


def test_ambiguity_never_becomes_rejected_or_not_placed_without_the_exchange() -> None:
    """Through timeouts and our own cancel requests alone, an order never reaches a terminal state."""
    ours = (E.SUBMIT_TIMEOUT, E.CANCEL_REQUESTED, E.CANCEL_TIMEOUT)
    reached, queue = {S.PENDING}, deque([S.PENDING])
    while queue:
        state = queue.popleft()
        for event in ours:
            target = TRANSITIONS.get((state, event))
            if target is not None and target not in reached:
                reached.add(target)
                queue.append(target)
    assert reached == {S.PENDING, S.UNRESOLVED, S.CANCEL_PENDING}


def test_timeouts_carry_no_news() -> None:
    """A timeout only ever moves PENDING (submit) or CANCEL_PENDING (cancel) to UNRESOLVED."""
    for (state, event), target in TRANSITIONS.items():
        if event in (E.SUBMIT_TIMEOUT, E.CANCEL_TIMEOUT) and target is not state:
            assert (state, target) in {(S.PENDING, S.UNRESOLVED), (S.CANCEL_PENDING, S.UNRESOLVED)}


def test_can_cancel() -> None:
    """A cancel may be requested for live orders without a cancel in flight, never for finished ones."""
    assert {s for s in S if can_cancel(s)} == {S.PENDING, S.OPEN, S.UNRESOLVED}


def test_probe_events_and_adopted_states() -> None:
    """Each exchange status maps to its probe event and the state an adopted order starts in."""
    assert probe_event(None) is E.PROBE_NOT_FOUND
    expected = {
        ExchangeOrderStatus.OPEN: (E.PROBE_OPEN, S.OPEN),
        ExchangeOrderStatus.CLOSED: (E.PROBE_FILLED, S.FILLED),
        ExchangeOrderStatus.CANCELED: (E.PROBE_CANCELED, S.CANCELED),
        ExchangeOrderStatus.REJECTED: (E.PROBE_REJECTED, S.REJECTED),
        ExchangeOrderStatus.EXPIRED: (E.PROBE_EXPIRED, S.EXPIRED),
    }
    for status, (event, state) in expected.items():
        assert probe_event(status) is event
        assert state_for_status(status) is state


# ----------------------------------------------------------------------------- client order ids

names = st.text(min_size=1, max_size=40)
operations = names.filter(lambda name: "/" not in name)
sequences = st.integers(min_value=0, max_value=10**19 - 1)


def test_prefix_is_the_documented_hash() -> None:
    """The prefix is "s1", 8 hex digits of sha256("operation/strategy") and "-" (stable across releases)."""
    digest = hashlib.sha256(b"live-1/dca-btc").hexdigest()[:8]
    assert order_prefix("live-1", "dca-btc") == f"s1{digest}-"
    assert client_order_id(order_prefix("live-1", "dca-btc"), 42) == f"s1{digest}-42"


@given(operations, names, sequences)
def test_ids_are_valid_binance_ids_and_round_trip(operation: str, strategy: str, seq: int) -> None:
    """Every id we make is a valid Binance client id and parses back to its prefix and sequence number."""
    prefix = order_prefix(operation, strategy)
    cid = client_order_id(prefix, seq)
    assert BINANCE_CLIENT_ID_RE.fullmatch(cid)
    assert len(prefix) == 11
    assert parse_client_order_id(cid) == (prefix, seq)


@given(operations, names, operations, names, sequences)
def test_different_strategies_never_share_ids(op1: str, st1: str, op2: str, st2: str, seq: int) -> None:
    """Different (operation, strategy) pairs get different prefixes, and no prefix starts the other's ids."""
    assume((op1, st1) != (op2, st2))
    p1, p2 = order_prefix(op1, st1), order_prefix(op2, st2)
    assert p1 != p2
    assert not client_order_id(p2, seq).startswith(p1)
    assert not client_order_id(p1, seq).startswith(p2)


@given(st.text(max_size=40))
def test_foreign_ids_are_external(cid: str) -> None:
    """parse_client_order_id recognises only ids of exactly our shape (anything else is external)."""
    parsed = parse_client_order_id(cid)
    if parsed is not None:
        assert client_order_id(*parsed) == cid


@pytest.mark.parametrize(
    "cid",
    [
        "",
        "x-R4BD3S82abc",  # a ccxt broker-prefixed id
        "s1abcdef01-",
        "s1abcdef01-007",  # not canonical: we never write leading zeros
        "s1ABCDEF01-1",
        "s1abcdef0-1",
        "s1abcdef01-1\n",
        "s1abcdef01--1",
        "s1abcdef01-1" + "0" * 25,  # 37 characters: longer than Binance allows
        "web_3f1a2b",
    ],
)
def test_examples_of_foreign_ids(cid: str) -> None:
    """Ids made by people, by ccxt or malformed lookalikes are not ours."""
    assert parse_client_order_id(cid) is None


def test_bad_arguments_are_refused() -> None:
    """Ambiguous names, foreign prefixes and out-of-range sequence numbers raise ValueError."""
    for operation, strategy in (("a/b", "c"), ("", "x"), ("x", "")):
        with pytest.raises(ValueError, match="names"):
            order_prefix(operation, strategy)
    with pytest.raises(ValueError, match="prefix"):
        client_order_id("x-", 1)
    for seq in (-1, 10**19):
        with pytest.raises(ValueError, match="range"):
            client_order_id(order_prefix("op", "s"), seq)
    assert client_order_id(order_prefix("op", "s", "a1b2c3"), 10**19 - 1).__len__() == 36
    with pytest.raises(ValueError, match="epoch"):
        order_prefix("op", "s", "A1B2C3")


@given(
    st.text("0123456789abcdef", min_size=6, max_size=6), st.text("0123456789abcdef", min_size=6, max_size=6), sequences
)
def test_epochs_fence_one_set_of_books_from_another(e1: str, e2: str, seq: int) -> None:
    """Ids of one epoch never start with another epoch's prefix (nor with the epoch-less one), and parse."""
    legacy, p1, p2 = order_prefix("op", "s"), order_prefix("op", "s", e1), order_prefix("op", "s", e2)
    cid = client_order_id(p1, seq)
    assert parse_client_order_id(cid) == (p1, seq)
    assert not cid.startswith(legacy)
    assert e1 == e2 or not cid.startswith(p2)
    assert not client_order_id(legacy, seq).startswith(p1)
