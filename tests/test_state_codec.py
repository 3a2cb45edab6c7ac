"""The state-file codec: exact round trips, and every kind of damage detected."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.errors import StateEncodeError
from s1mpled.state import codec

_keys = st.text(max_size=12).filter(lambda k: k != "$decimal")
_decimals = st.decimals(allow_nan=False, allow_infinity=False)
_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | _decimals
json_states = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=40,
)


def _same(a: Any, b: Any) -> bool:
    """Equality that also requires the same types and, for Decimals, the same digits and exponent."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(json_states, st.integers(min_value=1, max_value=2**63))
def test_round_trip_is_exact(state: Any, generation: int) -> None:
    """Any JSON-shaped state with Decimals decodes to an identical value, same types, same Decimal digits."""
    record = codec.decode(codec.encode(state, generation))
    assert record.generation == generation
    assert _same(record.state, state)


def test_floats_come_back_as_decimal() -> None:
    """A float that slipped into a state is read back as the Decimal of its shortest repr, never as float."""
    state = codec.decode(codec.encode({"price": 0.1}, 1)).state
    assert state == {"price": Decimal("0.1")}
    assert type(state["price"]) is Decimal


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), float("nan"), object(), {(1, 2): "x"}])
def test_values_that_cannot_be_stored_exactly_are_refused(bad: object) -> None:
    """NaN, infinities and unknown types raise StateEncodeError instead of being written approximately."""
    with pytest.raises(StateEncodeError):
        codec.encode({"v": bad}, 1)


def test_every_truncation_is_detected() -> None:
    """Cutting a record at any byte gives InvalidRecord, never a (possibly valid-looking) shorter state."""
    data = codec.encode({"orders": [{"id": "a", "px": Decimal("1.5")}] * 3, "n": 7}, 9)
    for cut in range(len(data)):
        with pytest.raises(codec.InvalidRecord):
            codec.decode(data[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    """Flipping any one bit anywhere (header or payload) is caught by the checksum or the header parser."""
    data = codec.encode({"capital": Decimal("1000.00"), "holdings": {"BTC": Decimal("0.25")}}, 3)
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(codec.InvalidRecord):
                codec.decode(bytes(damaged))


def test_trailing_bytes_are_detected() -> None:
    """Bytes after the announced payload mean the file is not what was written."""
    with pytest.raises(codec.InvalidRecord, match="unexpected bytes"):
        codec.decode(codec.encode({}, 1) + b" ")


def test_unknown_version_is_reported_as_such() -> None:
    """A record from a newer format version says so, so the store can refuse instead of falling back."""
    data = codec.encode({"a": 1}, 1).replace(b"S1MPLED-STATE 1 ", b"S1MPLED-STATE 4 ", 1)
    with pytest.raises(codec.InvalidRecord, match="unknown format version 4") as info:
        codec.decode(data)
    assert info.value.unsupported_version == 4


@pytest.mark.parametrize("junk", [b"", b"{}", b"not a state\n", b"S1MPLED-STATE\n", b"\x00" * 300])
def test_garbage_is_rejected(junk: bytes) -> None:
    """Arbitrary bytes are never decoded into a state."""
    with pytest.raises(codec.InvalidRecord):
        codec.decode(junk)


@given(st.binary(max_size=400))
def test_random_bytes_never_decode(junk: bytes) -> None:
    """Random bytes are rejected with InvalidRecord (and nothing else escapes the decoder)."""
    with pytest.raises(codec.InvalidRecord):
        codec.decode(junk)


def test_header_is_human_readable() -> None:
    """The first line names the format, generation, length and checksum (useful to an operator with `head -1`)."""
    data = codec.encode({"a": 1}, 42)
    header = data.split(b"\n", 1)[0].decode()
    magic, version, generation, length, checksum = header.split(" ")
    assert (magic, version, generation, length) == (
        "S1MPLED-STATE",
        "1",
        "42",
        str(len(json.dumps({"a": 1}, separators=(",", ":")))),
    )
    assert len(checksum) == 64


# ------------------------------------------------------------------ refusals: NaN, sNaN, infinities

_NON_FINITE = st.sampled_from(["NaN", "-NaN", "sNaN", "-sNaN", "NaN123", "Infinity", "-Infinity", "inf", "-Inf"])
_OUT_OF_RANGE = st.sampled_from(["1E+1000000", "-9.5E+1000001", "1E-1000000", "1E-1000100"])
_path_keys = st.text(st.characters(exclude_characters="._[]$", exclude_categories=["Cs"]), min_size=1, max_size=6)
_paths = st.lists(_path_keys | st.integers(0, 3), max_size=4)
_SENTINEL = "§refused-value§"


def _plant(base: dict[str, Any], path: list[str | int], bad: Any) -> tuple[Any, str]:
    """``base`` with ``bad`` at ``path`` (str: a mapping key, int: a list index), and the path as the codec names it."""
    node: Any = bad
    for step in reversed(path):
        node = {step: node} if isinstance(step, str) else [None] * step + [node]
    if not path:
        return node, "(top level)"
    named = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path).removeprefix(".")
    if isinstance(path[0], int):
        return node, named
    return {**{k: v for k, v in base.items() if k != path[0]}, path[0]: node[path[0]]}, named


@given(st.dictionaries(_keys, json_states, max_size=4), _paths, _NON_FINITE | _OUT_OF_RANGE)
def test_encode_refuses_non_finite_decimals_anywhere_naming_the_key(
    base: dict[str, Any], path: list[str | int], text: str
) -> None:
    """A NaN, sNaN, infinite or out-of-range Decimal anywhere in a state: StateEncodeError naming its key path."""
    state, named = _plant(base, path, Decimal(text))
    with pytest.raises(StateEncodeError) as info:
        codec.encode(state, 1)
    assert info.value.why.startswith(f"{named}: "), info.value.why


@given(st.dictionaries(_keys, json_states, max_size=4), _paths, st.sampled_from([float("nan"), float("-inf")]))
def test_encode_refuses_non_finite_floats_anywhere_naming_the_key(
    base: dict[str, Any], path: list[str | int], bad: float
) -> None:
    """A float NaN or infinity slipped into a state is refused too, naming where it is."""
    state, named = _plant(base, path, bad)
    with pytest.raises(StateEncodeError, match="not a finite number") as info:
        codec.encode(state, 1)
    assert info.value.why.startswith(f"{named}: ")


_RAW_BAD = (
    _NON_FINITE.map(lambda t: json.dumps({"$decimal": t}))
    | _OUT_OF_RANGE.map(lambda t: json.dumps({"$decimal": t}))
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999999999", "-2.5E+1000000", "1e-9999999"])
)


@given(st.dictionaries(_keys, json_states, max_size=4), _paths, _RAW_BAD, st.integers(1, 2**40))
def test_decode_refuses_non_finite_numbers_anywhere_naming_the_key(
    base: dict[str, Any], path: list[str | int], raw: str, generation: int
) -> None:
    """A checksummed record holding NaN/Infinity (tagged or as JSON constants) is InvalidRecord naming the key."""
    state, named = _plant(base, path, _SENTINEL)
    payload = codec.encode_payload(state).replace(json.dumps(_SENTINEL, ensure_ascii=False).encode(), raw.encode())
    with pytest.raises(codec.InvalidRecord) as info:
        codec.decode(codec.frame(payload, generation))
    assert str(info.value).startswith(f"refused value at {named}: "), str(info.value)


@given(json_states)
def test_what_encode_accepts_decode_reads_back(state: Any) -> None:
    """The refusals are symmetric: nothing encode writes is refused by decode (a save is always loadable)."""
    assert _same(codec.decode(codec.encode(state, 1)).state, state)


def test_refused_breaker_state_names_the_key() -> None:
    """The circuit-breaker state of issue #9 (`opened_ms: Infinity`) no longer verifies, and says where."""
    payload = b'{"state":"open","reason":"x","manual":false,"opened_ms":Infinity,"stable_since_ms":null}'
    with pytest.raises(codec.InvalidRecord, match=r"refused value at opened_ms: Infinity is not a finite number"):
        codec.decode(codec.frame(payload, 4))
