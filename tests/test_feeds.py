"""Tests of the paper-mode price feeds: the seeded random walk, the replay CSV parser and the replay cursor."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.environments.feeds import (
    ReplayFeed,
    ReplayRow,
    SyntheticFeed,
    quantize_to_step,
    read_replay_csv,
    write_replay_csv,
)

# ------------------------------------------------------------------- synthetic feed


def feed(seed: int = 7, symbol: str = "BTC/USDT", vol: str = "0.01", step: str = "0.01") -> SyntheticFeed:
    return SyntheticFeed(seed, symbol, D("100.00"), D(vol), D(step))


def walk(f: SyntheticFeed, steps: int, start: int = 0, previous: D | None = None) -> list[D]:
    prices = []
    for step in range(start, start + steps):
        previous = f.price_at(step, previous)
        prices.append(previous)
    return prices


def test_step_zero_is_the_start_price() -> None:
    """Step 0 returns start_price whatever the previous price."""
    assert feed().price_at(0, None) == D("100.00")
    assert feed().price_at(0, D(5)) == D("100.00")


def test_price_follows_the_documented_formula() -> None:
    """price = previous * (1 + vol * z), z from Random(f"{seed}:{symbol}:{step}") rounded to 6 places, quantized."""
    z = random.Random("7:BTC/USDT:3").gauss(0.0, 1.0)
    expected = (D("123.45") * (1 + D("0.01") * D(str(round(z, 6))))).quantize(D("0.01"))
    assert feed().price_at(3, D("123.45")) == expected
    assert feed().z_at(3) == D(str(round(z, 6)))


def test_same_inputs_give_the_same_price_across_instances() -> None:
    """Two feeds with the same seed and symbol produce the same walk; seed, symbol and step all matter."""
    assert walk(feed(), 50) == walk(feed(), 50)
    assert walk(feed(seed=8), 50) != walk(feed(), 50)
    assert walk(feed(symbol="ETH/USDT"), 50) != walk(feed(), 50)
    assert feed().price_at(1, D(100)) != feed().price_at(2, D(100))


def test_a_resumed_walk_continues_identically() -> None:
    """Resuming from a persisted (step, previous price) gives exactly the prices of an uninterrupted walk."""
    full = walk(feed(), 100)
    resumed = walk(feed(), 60, start=40, previous=full[39])
    assert resumed == full[40:]


def test_zero_volatility_keeps_the_price() -> None:
    """With volatility 0 every step repeats the previous price."""
    assert walk(feed(vol="0"), 20) == [D("100.00")] * 20


def test_huge_moves_are_clamped_to_one_price_step() -> None:
    """A move that would reach zero or below yields price_step instead."""
    f = feed(vol="100")
    down = next(step for step in range(1, 1000) if f.z_at(step) < D("-0.02"))
    assert f.price_at(down, D(100)) == D("0.01")


def test_synthetic_feed_refuses_bad_parameters() -> None:
    """Bad symbol, step, start price, volatility, a negative step or a missing previous price are ValueErrors."""
    with pytest.raises(ValueError):
        SyntheticFeed(1, "BTCUSDT", D(100), D("0.01"), D("0.01"))
    with pytest.raises(ValueError, match="price_step"):
        SyntheticFeed(1, "BTC/USDT", D(100), D("0.01"), D(0))
    with pytest.raises(ValueError, match="multiple"):
        SyntheticFeed(1, "BTC/USDT", D("100.005"), D("0.01"), D("0.01"))
    with pytest.raises(ValueError, match="start_price"):
        SyntheticFeed(1, "BTC/USDT", D(0), D("0.01"), D("0.01"))
    with pytest.raises(ValueError, match="volatility"):
        SyntheticFeed(1, "BTC/USDT", D(100), D("-0.01"), D("0.01"))
    with pytest.raises(ValueError, match="step must be"):
        feed().price_at(-1, None)
    with pytest.raises(ValueError, match="previous"):
        feed().price_at(1, None)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    step_text=st.sampled_from(["0.01", "0.5", "0.00001", "1", "25", "0.25"]),
    vol=st.sampled_from(["0", "0.001", "0.05", "0.5", "3"]),
)
def test_every_price_is_a_positive_multiple_of_the_step(seed: int, step_text: str, vol: str) -> None:
    """All walk prices are multiples of price_step (with its exponent) and at least one step."""
    step = D(step_text)
    f = SyntheticFeed(seed, "X/Y", step * 40, D(vol), step)
    for price in walk(f, 30):
        assert price >= step
        assert price % step == 0
        assert price.as_tuple().exponent == step.as_tuple().exponent


def test_quantize_to_step_rounds_half_to_even() -> None:
    """Ties go to the even multiple, including for steps that are not powers of ten."""
    assert quantize_to_step(D("0.25"), D("0.1")) == D("0.2")
    assert quantize_to_step(D("0.35"), D("0.1")) == D("0.4")
    assert quantize_to_step(D("0.75"), D("0.5")) == D("1.0")
    assert quantize_to_step(D("1.25"), D("0.5")) == D("1.0")
    assert quantize_to_step(D("0.26"), D("0.5")) == D("0.5")
    assert str(quantize_to_step(D("1000"), D("0.01"))) == "1000.00"


# ------------------------------------------------------------------- replay CSV

GOOD = "timestamp_ms,symbol,price\n1000,BTC/USDT,100.10\n1000,ETH/USDT,2000\n2000,BTC/USDT,101\n"


def test_read_replay_csv_parses_rows_exactly() -> None:
    """Rows come back with int timestamps and Decimal prices that keep their written digits."""
    rows = read_replay_csv(GOOD)
    assert rows == [
        ReplayRow(1000, "BTC/USDT", D("100.10")),
        ReplayRow(1000, "ETH/USDT", D("2000")),
        ReplayRow(2000, "BTC/USDT", D("101")),
    ]
    assert str(rows[0].price) == "100.10"


def test_blank_lines_crlf_and_padding_are_tolerated() -> None:
    """CRLF line ends, blank lines and spaces around fields do not matter."""
    text = "timestamp_ms, symbol, price\r\n\r\n1, A/B , 1.5\r\n\r\n"
    assert read_replay_csv(text) == [ReplayRow(1, "A/B", D("1.5"))]


def test_header_only_gives_no_rows() -> None:
    """A file with just the header is a valid, empty replay."""
    assert read_replay_csv("timestamp_ms,symbol,price\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected the header"),
        ("ts,symbol,price\n1,A/B,1\n", "line 1: expected the header"),
        ("timestamp_ms,symbol,price\n1,A/B\n", "line 2: expected 3 columns, got 2"),
        ("timestamp_ms,symbol,price\n1,A/B,1,2\n", "line 2: expected 3 columns, got 4"),
        ("timestamp_ms,symbol,price\n1,A/B,1\n,A/B,1\n", "line 3: empty field timestamp_ms"),
        ("timestamp_ms,symbol,price\n1,,1\n", "line 2: empty field symbol"),
        ("timestamp_ms,symbol,price\n1,A/B, \n", "line 2: empty field price"),
        ("timestamp_ms,symbol,price\n1.5,A/B,1\n", "line 2: bad number '1.5' in timestamp_ms"),
        ("timestamp_ms,symbol,price\nnow,A/B,1\n", "line 2: bad number 'now' in timestamp_ms"),
        ("timestamp_ms,symbol,price\n1,A/B,abc\n", "line 2: bad number 'abc' in price"),
        ("timestamp_ms,symbol,price\n1,A/B,NaN\n", "line 2: bad number 'NaN' in price"),
        ("timestamp_ms,symbol,price\n1,A/B,Infinity\n", "line 2: bad number 'Infinity' in price"),
        ("timestamp_ms,symbol,price\n1,A/B,-1\n", "line 2: negative price"),
        ("timestamp_ms,symbol,price\n1,A/B,0\n", "line 2: price must be positive"),
        ("timestamp_ms,symbol,price\n-1,A/B,1\n", "line 2: negative timestamp"),
        ("timestamp_ms,symbol,price\n1,AB,1\n", "line 2: symbol must look like BASE/QUOTE"),
        ("timestamp_ms,symbol,price\n5,A/B,1\n\n4,A/B,1\n", "line 4: timestamp 4 is before the previous row's 5"),
        ('timestamp_ms,symbol,price\n1,"A/B,1\n', "line"),
    ],
)
def test_bad_replay_files_name_the_line_and_the_reason(text: str, message: str) -> None:
    """Each malformed file raises ValueError whose message names the line number and what is wrong."""
    with pytest.raises(ValueError, match=message):
        read_replay_csv(text)


replay_rows = st.lists(
    st.builds(
        ReplayRow,
        timestamp_ms=st.integers(0, 2**53),
        symbol=st.sampled_from(["BTC/USDT", "ETH/BTC", "A/B"]),
        price=st.decimals(min_value=D("1e-12"), max_value=D("1e12"), allow_nan=False, allow_infinity=False, places=8)
        | st.decimals(min_value=D("0.000001"), allow_nan=False, allow_infinity=False),
    ),
    max_size=30,
).map(lambda rows: sorted(rows, key=lambda r: r.timestamp_ms))


@given(replay_rows)
def test_replay_csv_round_trip(rows: list[ReplayRow]) -> None:
    """Rows written as CSV text read back as the same rows, prices digit for digit."""
    back = read_replay_csv(write_replay_csv(rows))
    assert back == rows
    assert [str(r.price) for r in back] == [str(r.price) for r in rows]


@given(st.text(alphabet="0123456789,.-/ABn\n\r \"'eE+", max_size=80))
def test_read_replay_csv_fails_only_with_value_error(body: str) -> None:
    """Arbitrary text after the header either parses or raises ValueError, never anything else."""
    try:
        rows = read_replay_csv("timestamp_ms,symbol,price\n" + body)
    except ValueError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(r.price > 0 and r.timestamp_ms >= 0 for r in rows)


# ------------------------------------------------------------------- replay feed


def test_next_batch_returns_one_timestamp_at_a_time() -> None:
    """Each batch holds the rows of one timestamp; the returned index resumes after them; the end gives ()."""
    f = ReplayFeed(read_replay_csv(GOOD))
    batch, index = f.next_batch(0)
    assert [r.symbol for r in batch] == ["BTC/USDT", "ETH/USDT"] and index == 2
    batch, index = f.next_batch(index)
    assert [r.price for r in batch] == [D(101)] and index == 3
    assert f.exhausted(index)
    assert f.next_batch(index) == ((), 3)
    assert not f.exhausted(0) and len(f) == 3


def test_replay_feed_refuses_bad_index_and_unsorted_rows() -> None:
    """An index outside 0..len and rows going back in time are ValueErrors."""
    f = ReplayFeed(read_replay_csv(GOOD))
    with pytest.raises(ValueError, match="outside"):
        f.next_batch(4)
    with pytest.raises(ValueError, match="outside"):
        f.exhausted(-1)
    with pytest.raises(ValueError, match="sorted"):
        ReplayFeed([ReplayRow(2, "A/B", D(1)), ReplayRow(1, "A/B", D(1))])


def test_empty_replay_is_exhausted_at_once() -> None:
    """A feed without rows is exhausted at index 0."""
    assert ReplayFeed([]).next_batch(0) == ((), 0)


@given(replay_rows)
def test_batches_cover_all_rows_in_order(rows: list[ReplayRow]) -> None:
    """Walking the batches yields every row once, in order, each batch one timestamp, timestamps increasing."""
    f = ReplayFeed(rows)
    seen: list[ReplayRow] = []
    index, last_ts = 0, -1
    while not f.exhausted(index):
        batch, index = f.next_batch(index)
        assert batch and len({r.timestamp_ms for r in batch}) == 1
        assert batch[0].timestamp_ms > last_ts
        last_ts = batch[0].timestamp_ms
        seen += batch
    assert seen == rows
