"""The one record codec: today's files load and are written again byte for byte, every record type round-trips,
and garbage is refused with one RecordError naming the path -- never a crash."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled import record
from s1mpled.circuit_breaker import Breaker, BreakerState
from s1mpled.environments.paper import PaperState
from s1mpled.environments.paper_exchange import ExchangeRecord, SimulatedExchange
from s1mpled.errors import LocalStateError, RecordError
from s1mpled.ledger import LedgerOrder, LedgerRecord, SeenTradesRecord, StrategyLedger
from s1mpled.model import Balance, ExchangeOrder, Fill
from s1mpled.state import codec
from s1mpled_sim.wire import order_state, trade_state

# Written by the code before the codec existed (commit 78f9a90), through the state store's payload encoding.
DATA = Path(__file__).parent / "data"


def _stored(name: str) -> Any:
    """A pinned payload read back as the state store reads a file."""
    return codec.decode(codec.frame((DATA / name).read_bytes(), 1)).state


# ------------------------------------------------------------------------------ today's bytes, pinned


def test_a_ledger_written_before_the_codec_is_written_again_byte_for_byte() -> None:
    """A ledger file of the old writer (orders, history, fees in base/quote/BNB, a seen-id floor, two epochs)
    loads, and to_state() encodes to exactly the bytes it was read from."""
    state = _stored("pinned_ledger.json")
    ledger = StrategyLedger.from_state(state["ledger"], seen_limit=3, history_limit=2)
    assert codec.encode_payload({"ledger": ledger.to_state()}) == (DATA / "pinned_ledger.json").read_bytes()
    assert ledger.epochs == ("a1b2c3", "d4e5f6") and ledger.has_applied("101") and ledger.has_applied("abc-uuid")


@pytest.mark.parametrize("name", ["pinned_paper_account.json", "pinned_paper_default.json"])
def test_a_paper_account_written_before_the_codec_is_written_again_byte_for_byte(name: str) -> None:
    """A paper account of the old writer (with and without the fee options) loads and encodes to the same bytes."""
    state = _stored(name)
    exchange = SimulatedExchange.from_state(state["exchange"])
    again = {"exchange": exchange.to_state(), "step": state["step"], "replay_index": state["replay_index"]}
    assert codec.encode_payload(again) == (DATA / name).read_bytes()
    saved = record.decode(PaperState, state)  # the paper environment's own reading and writing of its file
    rewritten = PaperState(SimulatedExchange.from_record(saved.exchange).to_record(), saved.step, saved.replay_index)
    assert codec.encode_payload(record.encode(rewritten)) == (DATA / name).read_bytes()


def test_the_breaker_and_the_simulators_records_are_written_as_before() -> None:
    """The breaker's state and the simulator's /__admin/state orders and trades are today's JSON, key for key."""
    exchange = SimulatedExchange.from_state(_stored("pinned_paper_account.json")["exchange"])
    canceled = exchange.order("c1")
    assert canceled is not None
    doc = {
        "breaker": Breaker(BreakerState.OPEN, "link lost", False, 1_000, True).to_state(),
        "orders": [order_state(o) for o in exchange.open_orders()] + [order_state(canceled, "EXPIRED_IN_MATCH")],
        "trades": [trade_state(f, i % 2 == 0) for i, f in enumerate(exchange.trades())],
    }
    assert codec.encode_payload(doc) == (DATA / "pinned_records.json").read_bytes()


def test_books_from_before_the_cursor_epochs_and_created_ms_still_load() -> None:
    """The keys later formats added may be absent: no cursor, the one epoch "", created_ms from the oldest order."""
    state = _stored("pinned_ledger.json")["ledger"]
    for key in ("reconciled_trade_id", "epochs", "created_ms"):
        del state[key]
    ledger = StrategyLedger.from_state(state)
    snap = ledger.snapshot()
    assert snap.reconciled_trade_id is None and snap.epochs == ("",) and snap.created_ms == 1_700_000_000_003


# ---------------------------------------------------------------------------------- strict reading


LEDGER = _stored("pinned_ledger.json")["ledger"]


@pytest.mark.parametrize(
    ("path", "bad", "why"),
    [
        ("open_orders[0].price", "x", "ledger.open_orders[0].price: expected a decimal, got 'x'"),
        ("open_orders[0].price", 1.5, "ledger.open_orders[0].price: expected a decimal, got 1.5"),
        ("history[0].amount", 2, "ledger.history[0].amount: expected a decimal, got 2"),
        ("capital", D("NaN"), "ledger.capital: expected a finite decimal, got NaN"),
        ("capital", D("sNaN"), "ledger.capital: expected a finite decimal, got sNaN"),
        ("capital", D("-Infinity"), "ledger.capital: expected a finite decimal, got -Infinity"),
        ("capital", D("1E+1000000"), "ledger.capital: expected a decimal with an exponent"),
        ("other_fees.BNB", True, "ledger.other_fees.BNB: expected a decimal, got True"),
        ("history[1].side", "up", "ledger.history[1].side: expected one of buy, sell, got 'up'"),
        ("history[1].state", 1, "ledger.history[1].state: expected one of pending, "),
        ("sequence", True, "ledger.sequence: expected an integer, got True"),
        ("sequence", 3.0, "ledger.sequence: expected an integer, got 3.0"),
        ("seen_trades.floor", 5, "ledger.seen_trades.floor: expected a string, got 5"),
        ("open_orders", "ab", "ledger.open_orders: expected a list, got 'ab'"),
        ("other_fees", [], "ledger.other_fees: expected a mapping, got []"),
        ("open_orders[0].colour", "red", "ledger.open_orders[0].colour: unknown key 'colour'"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_naming_its_path(path: str, bad: object, why: str) -> None:
    """Decimal only as a finite Decimal (never a float, an int or text in the state dialect), an int never a bool,
    an enum by one of its values, no key the record lacks: one RecordError whose message starts with the path."""
    with pytest.raises(RecordError) as info:
        record.decode(LedgerRecord, _set(LEDGER, path, bad), where="ledger")
    assert str(info.value).startswith(why), str(info.value)


def test_missing_keys_are_refused_unless_optional_and_legacy_keys_are_ignored() -> None:
    """A key the record needs is an error naming it; an OPTIONAL one takes its default; a legacy key is ignored;
    a bool is not a flag's stand-in for 1; mapping keys are strings."""
    with pytest.raises(RecordError, match=r"^ledger\.sequence: a required key is missing"):
        record.decode(LedgerRecord, {k: v for k, v in LEDGER.items() if k != "sequence"}, where="ledger")
    assert record.decode(LedgerRecord, {k: v for k, v in LEDGER.items() if k != "created_ms"}).created_ms == 0
    with pytest.raises(RecordError, match=r"^ledger\.other_fees: expected str keys, got 1"):
        record.decode(LedgerRecord, {**LEDGER, "other_fees": {1: D(1)}}, where="ledger")
    breaker = _stored("pinned_records.json")["breaker"]
    assert record.decode(Breaker, {**breaker, "stable_since_ms": 5, "reconciled_after_stable": True}).halted
    with pytest.raises(RecordError, match=r"^state\.manual: expected true or false, got 1"):
        record.decode(Breaker, {**breaker, "manual": 1}, where="state")


@pytest.mark.parametrize("version", [2, 0, True, "1", None])
def test_a_layout_of_another_format_is_refused_before_anything_else(version: object) -> None:
    """RECORD_FORMAT is checked first (a future layout is named as such), and written first."""
    future = {**LEDGER, "format": version, "something_new": 1}
    with pytest.raises(RecordError, match=r"^ledger\.format: unsupported format .* \(this program reads format 1\)"):
        record.decode(LedgerRecord, future, where="ledger")
    with pytest.raises(LocalStateError, match="unsupported format"):
        StrategyLedger.from_state(future)
    assert next(iter(record.encode(record.decode(LedgerRecord, LEDGER)))) == "format"


def test_omit_default_leaves_a_default_out_and_writes_anything_else() -> None:
    """An OMIT_DEFAULT field at its default is not written (old layouts stay byte-identical), otherwise it is."""
    rec = record.decode(ExchangeRecord, _stored("pinned_paper_default.json")["exchange"])
    assert not {"fee_model", "bnb_fees", "bnb_price"} & set(record.encode(rec))
    changed = dataclasses.replace(rec, fee_model="binance")
    assert record.encode(changed)["fee_model"] == "binance"
    assert record.decode(ExchangeRecord, record.encode(changed)) == changed


@dataclasses.dataclass(frozen=True, slots=True)
class _Bounded:
    """A record with checked fields: a required one, and an OPTIONAL one whose default the check would refuse."""

    size: int = dataclasses.field(metadata=record.check(lambda n: n >= 0, "a size >= 0"))
    limit: D = dataclasses.field(default=D(-1), metadata={**record.OPTIONAL, **record.check(lambda d: d > 0, "> 0")})


@dataclasses.dataclass(frozen=True, slots=True)
class _Outer:
    inner: tuple[_Bounded, ...]


def test_a_checked_field_refuses_a_value_that_fails_its_test_naming_its_path() -> None:
    """check(): a value of the right kind that fails the test is refused with the path, in either dialect; an
    absent OPTIONAL field takes its default unchecked; writing is not checked."""
    assert record.decode(_Outer, {"inner": [{"size": 0, "limit": D(2)}, {"size": 3}]}).inner[1].limit == D(-1)
    with pytest.raises(RecordError, match=r"^outer\.inner\[1\]\.size: expected a size >= 0, got -3$"):
        record.decode(_Outer, {"inner": [{"size": 0}, {"size": -3}]}, where="outer")
    with pytest.raises(RecordError, match=r"^limit: expected > 0, got 0$"):
        record.decode(_Bounded, {"size": 1, "limit": "0"}, record.JSON)
    with pytest.raises(RecordError, match=r"^size: expected an integer, got '1'$"):  # the kind is read first
        record.decode(_Bounded, {"size": "1"})
    assert record.encode(_Bounded(-1)) == {"size": -1, "limit": D(-1)}


@pytest.mark.parametrize("text", ["1.50", "-0", "+7", ".5", "5.", "1e-8", "2E+3", "123456789012345678901234567890"])
def test_the_json_dialect_reads_decimals_exactly_from_their_text(text: str) -> None:
    """In JSON a Decimal is its exact text: same digits, same exponent, back and forth."""
    balance = record.decode(Balance, {"asset": "BTC", "free": text, "used": "0"}, record.JSON)
    assert balance.free.as_tuple() == D(text).as_tuple()
    assert record.encode(balance, record.JSON)["free"] == str(D(text))


@pytest.mark.parametrize("bad", ["NaN", "-Infinity", "inf", "sNaN", " 1", "1_000", "0x10", "", "1e1000000", "\u0661"])
def test_the_json_dialect_refuses_text_that_is_no_finite_decimal(bad: str) -> None:
    """Non-finite spellings, white space, underscores, non-ASCII digits and unusable exponents are refused."""
    with pytest.raises(RecordError, match=r"^free: expected a "):
        record.decode(Balance, {"asset": "BTC", "free": bad, "used": "0"}, record.JSON)


@pytest.mark.parametrize("bad", [1.5, 2, D("1.5"), True, None])
def test_the_json_dialect_refuses_numbers_for_decimals(bad: object) -> None:
    """A JSON number (which a reader may have turned into a float) is never read as a Decimal."""
    with pytest.raises(RecordError, match=r"^free: expected a decimal number as text"):
        record.decode(Balance, {"asset": "BTC", "free": bad, "used": "0"}, record.JSON)


@dataclasses.dataclass(frozen=True, slots=True)
class _Measured:
    """A record with a float (seconds an operator reads, never money), as the status documents have."""

    seconds: float | None


def test_a_float_is_written_as_it_is_and_read_back_finite_in_the_json_dialect_only() -> None:
    """JSON: written as it is, read back as a finite float (an int is one, a bool or text is not); the state
    dialect has no floats (the store reads them back as Decimals), so a float field there is a TypeError."""
    assert record.encode(_Measured(12.3), record.JSON) == {"seconds": 12.3}
    assert record.decode(_Measured, {"seconds": 1e9}, record.JSON) == _Measured(1e9)
    assert type(record.decode(_Measured, {"seconds": 2}, record.JSON).seconds) is float
    for bad in (True, "1.5", float("inf"), float("nan"), 10**400, D("1.5")):
        with pytest.raises(RecordError, match=r"^seconds: expected a finite number, got "):
            record.decode(_Measured, {"seconds": bad}, record.JSON)
    with pytest.raises(TypeError, match="a float is for the JSON dialect only"):
        record.encode(_Measured(1.0))
    with pytest.raises(TypeError, match="a float is for the JSON dialect only"):
        record.decode(_Measured, {"seconds": 1.0})


# ------------------------------------------------------------------------------ hypothesis: every record

_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_KEYS = _TEXT.filter(lambda t: t != "$decimal")  # the state store reserves a mapping with only that key
_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: not d or -9999 < d.adjusted() < 9999)
RECORDS = [LedgerOrder, LedgerRecord, SeenTradesRecord, ExchangeRecord, PaperState, ExchangeOrder, Fill, Breaker]


def _values(hint: Any) -> st.SearchStrategy[Any]:
    """Any value of an annotation the codec supports, built from the annotation itself."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.none() | _values(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return st.lists(_values(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(_KEYS, _values(args[1]), max_size=3)
    if dataclasses.is_dataclass(hint):
        return _instances(typing.cast(type[Any], hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    scalars: dict[Any, st.SearchStrategy[Any]] = {D: _DECIMALS, str: _TEXT, int: st.integers(), bool: st.booleans()}
    return scalars[hint]


def _instances(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _values(hints[f.name]) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_record_type_round_trips_in_both_dialects(cls: type[Any], data: st.DataObject) -> None:
    """decode(encode(r)) == r, in the state dialect through the state store's own payload bytes and in JSON."""
    rec = data.draw(_instances(cls))
    stored = codec.decode(codec.encode(record.encode(rec), 1)).state
    assert record.decode(cls, stored) == rec
    assert record.encode(record.decode(cls, stored)) == record.encode(rec)
    assert record.decode(cls, record.encode(rec, record.JSON), record.JSON) == rec


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _TEXT
    | st.sampled_from([D("NaN"), D("sNaN"), D("-Infinity"), D("1E+999999999"), D("1.5"), "1.5", "buy", "open"])
)
_GARBAGE = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3))


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(garbage=_GARBAGE)
def test_garbage_is_a_record_error_and_nothing_else(cls: type[Any], garbage: object) -> None:
    """Whatever the data, decoding gives a record or a RecordError, in either dialect."""
    for dialect in record.Dialect:
        with contextlib.suppress(RecordError):
            record.decode(cls, garbage, dialect)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), garbage=_LEAVES | st.just({}) | st.just([]))
def test_one_damaged_value_is_a_record_error_and_nothing_else(
    cls: type[Any], data: st.DataObject, garbage: object
) -> None:
    """A valid encoding with one leaf replaced by garbage reads back, or is refused with a RecordError naming a path."""
    encoded = record.encode(data.draw(_instances(cls)))
    paths = list(_leaf_paths(encoded))
    if not paths:
        return
    damaged = _set(encoded, data.draw(st.sampled_from(paths)), garbage)
    try:
        record.decode(cls, damaged)
    except RecordError as exc:
        assert ": " in str(exc)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), garbage=_LEAVES | st.just({}) | st.just([]))
def test_damaged_books_and_accounts_are_local_state_errors(data: st.DataObject, garbage: object) -> None:
    """from_state of a ledger, a paper account or a breaker with one leaf damaged loads or raises LocalStateError."""
    books: dict[str, tuple[Any, Callable[[Any], object]]] = {
        "ledger": (_stored("pinned_ledger.json")["ledger"], StrategyLedger.from_state),
        "exchange": (_stored("pinned_paper_account.json")["exchange"], SimulatedExchange.from_state),
        "breaker": (_stored("pinned_records.json")["breaker"], Breaker.from_state),
    }
    state, read = books[data.draw(st.sampled_from(sorted(books)))]
    damaged = _set(state, data.draw(st.sampled_from(list(_leaf_paths(state)))), garbage)
    with contextlib.suppress(LocalStateError):
        read(damaged)


# ------------------------------------------------------------------------------------------- helpers


Path_ = tuple[str | int, ...]


def _leaf_paths(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """The steps (keys and indexes) to every leaf, and every empty container, of JSON-shaped data."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, (*path, key))
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from _leaf_paths(value, (*path, index))
    elif path:
        yield path


def _set(data: Any, path: str | Path_, value: object) -> Any:
    """A copy of ``data`` with the value at ``path`` (steps, or ``a.b[2].c``) replaced by ``value``."""
    if isinstance(path, str):
        text = path.replace("[", ".[").split(".")
        path = tuple(int(s[1:-1]) if s.startswith("[") else s for s in text if s)
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        return [_set(v, rest, value) if i == step else v for i, v in enumerate(data)]
    return {**data, step: _set(data.get(step), rest, value) if rest else value}
