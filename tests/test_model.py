"""The domain values' shared rules: the one trade-id parser and the one Decimal context."""

from __future__ import annotations

from decimal import ROUND_DOWN, Inexact
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.model import MONEY, money_context, trade_number, trade_order


@pytest.mark.parametrize(
    ("text", "number"), [("0", 0), ("7", 7), ("17", 17), ("123456789012345678901", 123456789012345678901)]
)
def test_canonical_decimal_trade_ids_are_numbers(text: str, number: int) -> None:
    """A trade id written the way Binance and the paper exchange write them is its integer."""
    assert trade_number(text) == number


@pytest.mark.parametrize("text", ["", "007", "-1", "+1", "1.0", "T7", " 7", "7 ", "\u00b2", "\u0661", "abc-uuid"])
def test_other_trade_ids_have_no_number(text: str) -> None:
    """Leading zeros, signs, non-ASCII digits and UUIDs are not numbered (they have no order)."""
    assert trade_number(text) is None


@given(st.lists(st.integers(0, 10**12).map(str) | st.uuids().map(str), max_size=20))
def test_trade_order_sorts_numbers_numerically_and_the_others_first(ids: list[str]) -> None:
    """Sorted by trade_order, numbered ids ascend as numbers ("9" before "10"), unordered ids come first."""
    ordered = sorted(ids, key=trade_order)
    numbers = [trade_number(i) for i in ordered]
    first_numbered = next((k for k, n in enumerate(numbers) if n is not None), len(numbers))
    assert all(n is None for n in numbers[:first_numbered])
    tail = [n for n in numbers[first_numbered:] if n is not None]
    assert len(tail) == len(numbers) - first_numbered and tail == sorted(tail)


def test_the_money_context_and_its_variants() -> None:
    """MONEY has 100 digits and traps what would give NaN or infinity; variants are copies that round down or
    trap Inexact, and leave MONEY as it was."""
    assert MONEY.prec == 100 and MONEY.divide(D(1), D(3)) == D("0." + "3" * 100)
    with pytest.raises(ArithmeticError):
        MONEY.divide(D(1), D(0))
    assert money_context(rounding=ROUND_DOWN).divide(D(2), D(3)) == D("0." + "6" * 100)
    with pytest.raises(Inexact):
        money_context(exact=True).divide(D(1), D(3))
    assert MONEY.rounding != ROUND_DOWN and not MONEY.traps[Inexact]
