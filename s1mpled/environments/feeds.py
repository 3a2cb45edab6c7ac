"""Price feeds for paper mode: pure functions of their inputs, so a restart resumes them exactly.

Neither feed keeps a cursor or reads a clock. The synthetic feed's price at a step depends only on
(seed, symbol, step, previous price), and the replay feed's position is a plain ``int`` index --
both are what the paper adapter persists, so after a crash the same prices come out again.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, InvalidOperation
from decimal import Decimal as D

from s1mpled.model import MONEY, split_symbol

__all__ = ["REPLAY_HEADER", "ReplayFeed", "ReplayRow", "SyntheticFeed", "quantize_to_step", "read_replay_csv"]

REPLAY_HEADER = ("timestamp_ms", "symbol", "price")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def quantize_to_step(value: D, step: D) -> D:
    """The multiple of ``step`` nearest to ``value`` (ties to even), written with ``step``'s exponent."""
    units = MONEY.divide(value, step).to_integral_value(rounding=ROUND_HALF_EVEN, context=MONEY)
    return MONEY.multiply(units, step).quantize(step, context=MONEY)


class SyntheticFeed:
    """A deterministic, seeded random walk for one symbol.

    ``price_at(step, previous)`` is ``previous * (1 + volatility * z)`` with ``z ~ N(0, 1)`` drawn
    from ``random.Random(f"{seed}:{symbol}:{step}")`` -- a fresh generator per step, so no hidden
    generator state needs persisting. ``z`` is the only float; it enters the Decimal arithmetic as
    ``Decimal(str(round(z, 6)))``. The result is quantized to ``price_step`` (ties to even) and
    never falls below one ``price_step``.
    """

    def __init__(self, seed: int, symbol: str, start_price: D, volatility: D, price_step: D) -> None:
        split_symbol(symbol)
        if not price_step.is_finite() or price_step <= 0:
            raise ValueError(f"{symbol}: price_step must be positive, got {price_step}")
        if not start_price.is_finite() or start_price < price_step:
            raise ValueError(f"{symbol}: start_price must be at least price_step {price_step}, got {start_price}")
        if quantize_to_step(start_price, price_step) != start_price:
            raise ValueError(f"{symbol}: start_price {start_price} is not a multiple of price_step {price_step}")
        if not volatility.is_finite() or volatility < 0:
            raise ValueError(f"{symbol}: volatility must be non-negative, got {volatility}")
        self.seed, self.symbol = seed, symbol
        self.start_price, self.volatility, self.price_step = start_price, volatility, price_step

    def z_at(self, step: int) -> D:
        """The standard-normal draw of a step, as the Decimal the walk uses."""
        z = random.Random(f"{self.seed}:{self.symbol}:{step}").gauss(0.0, 1.0)
        return D(str(round(z, 6)))

    def price_at(self, step: int, previous: D | None) -> D:
        """The price at ``step``: ``start_price`` at step 0, else one random move away from ``previous``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step == 0:
            return self.start_price
        if previous is None:
            raise ValueError(f"step {step} needs the previous price")
        moved = MONEY.multiply(previous, MONEY.add(1, MONEY.multiply(self.volatility, self.z_at(step))))
        return max(quantize_to_step(moved, self.price_step), self.price_step)


@dataclass(frozen=True)
class ReplayRow:
    """One recorded price: what ``SimulatedExchange.on_price`` is fed at ``timestamp_ms``."""

    timestamp_ms: int
    symbol: str
    price: D


def read_replay_csv(text: str) -> list[ReplayRow]:
    """Parse a replay file: header ``timestamp_ms,symbol,price``, rows sorted by timestamp.

    Blank lines are skipped. Any bad row raises ValueError naming its line number and why (wrong
    column count, empty field, bad number, bad symbol, price not positive, unsorted timestamp).
    Prices are parsed from their text, so ``"0.10"`` stays ``Decimal("0.10")``.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[ReplayRow] = []
    try:
        header = next(reader, None)
        if header is None or tuple(f.strip() for f in header) != REPLAY_HEADER:
            raise ValueError(f"line 1: expected the header {','.join(REPLAY_HEADER)!r}, got {header!r}")
        for fields in reader:
            if not fields or fields == [""]:
                continue
            row = _parse_row(fields, reader.line_num)
            if rows and row.timestamp_ms < rows[-1].timestamp_ms:
                raise ValueError(
                    f"line {reader.line_num}: timestamp {row.timestamp_ms} is before the previous row's "
                    f"{rows[-1].timestamp_ms} (rows must be sorted by timestamp)"
                )
            rows.append(row)
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: malformed CSV: {exc}") from None
    return rows


def _parse_row(fields: list[str], line: int) -> ReplayRow:
    if len(fields) != len(REPLAY_HEADER):
        raise ValueError(f"line {line}: expected {len(REPLAY_HEADER)} columns, got {len(fields)}")
    ts_text, symbol, price_text = (f.strip() for f in fields)
    for name, value in zip(REPLAY_HEADER, (ts_text, symbol, price_text), strict=True):
        if not value:
            raise ValueError(f"line {line}: empty field {name}")
    if not _INTEGER.fullmatch(ts_text):
        raise ValueError(f"line {line}: bad number {ts_text!r} in timestamp_ms")
    timestamp = int(ts_text)
    if timestamp < 0:
        raise ValueError(f"line {line}: negative timestamp {timestamp}")
    try:
        split_symbol(symbol)
    except ValueError as exc:
        raise ValueError(f"line {line}: {exc}") from None
    try:
        price = D(price_text)
    except InvalidOperation:
        raise ValueError(f"line {line}: bad number {price_text!r} in price") from None
    if not price.is_finite():
        raise ValueError(f"line {line}: bad number {price_text!r} in price")
    if price < 0:
        raise ValueError(f"line {line}: negative price {price}")
    if price == 0:
        raise ValueError(f"line {line}: price must be positive, got {price}")
    return ReplayRow(timestamp, symbol, price)


def write_replay_csv(rows: Sequence[ReplayRow]) -> str:
    """The CSV text ``read_replay_csv`` reads back as the same rows (used to record and in tests)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPLAY_HEADER)
    writer.writerows((r.timestamp_ms, r.symbol, str(r.price)) for r in rows)
    return out.getvalue()


class ReplayFeed:
    """Replays rows in timestamp order, one timestamp (a batch of rows) at a time.

    The position is a plain ``int`` index into the rows, owned and persisted by the adapter::

        index = 0
        while True:
            batch, index = feed.next_batch(index)
            if not batch:
                break  # exhausted
            for row in batch: exchange.on_price(row.symbol, row.price, row.timestamp_ms)
    """

    def __init__(self, rows: Sequence[ReplayRow]) -> None:
        self._rows = tuple(rows)
        for i in range(1, len(self._rows)):
            if self._rows[i].timestamp_ms < self._rows[i - 1].timestamp_ms:
                raise ValueError(f"replay rows must be sorted by timestamp (row {i} goes back in time)")

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> tuple[ReplayRow, ...]:
        return self._rows

    def exhausted(self, index: int) -> bool:
        """Whether nothing is left to replay from ``index``."""
        self._check(index)
        return index == len(self._rows)

    def next_batch(self, index: int) -> tuple[tuple[ReplayRow, ...], int]:
        """The rows from ``index`` that share its timestamp, and the index after them; ``((), index)`` at the end."""
        self._check(index)
        end = index
        while end < len(self._rows) and self._rows[end].timestamp_ms == self._rows[index].timestamp_ms:
            end += 1
        return self._rows[index:end], end

    def _check(self, index: int) -> None:
        if not 0 <= index <= len(self._rows):
            raise ValueError(f"replay index {index} is outside 0..{len(self._rows)}")
