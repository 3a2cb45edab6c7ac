"""The strategy plugin interface: facts in, signals out, nothing else.

A strategy is a *pure* decision function with memory. The runner calls one of its ``on_*`` methods with
a read-only :class:`StrategyView` (and a :class:`FillView` for fills); the strategy answers with a list
of signals (:class:`PlaceOrder`, :class:`CancelOrder`). It never does I/O, never awaits, never reads a
clock (``view.now_ms`` is the time) and never invents order ids. The runner turns signals into orders,
assigns client order ids, records them durably *before* sending them, and saves the strategy's
``state_snapshot()`` after every call that changed it; at startup it calls ``restore_state()`` and,
once the ledger is reconciled with the exchange, ``on_start()``.

Keeping strategies pure is what makes them safe across crashes: everything a strategy knows is either
in its snapshot or in the view, so a restarted strategy decides exactly as the old one would have.

Rules for strategy authors
--------------------------
1. **Halted means reduce only.** When ``view.halted`` is true (the circuit breaker is open) return only
   ``CancelOrder`` or SELL signals that reduce holdings. The runner drops anything else and logs it,
   but a well-behaved strategy does not emit it.
2. **A signal is a request, not a fact.** Never assume a signal was executed: wait for ``on_fill``, for
   ``on_order_closed`` or for the order to appear in ``view.open_orders``.
3. **Unresolved is not absent.** An order listed with ``unresolved=True`` may or may not exist on the
   exchange (its submit timed out). Never re-place while one is unresolved: that is how duplicates
   happen. Only reconciliation settles it, and the runner then reports a fill or a closed order.
4. **Trust the view and your memory together.** Place an order only if your own state says one is
   needed *and* the view shows none for that purpose: the view covers what you forgot (a crash between
   the runner recording an order and saving your state), your memory covers what the view does not
   show yet.
5. **Tag your orders.** ``PlaceOrder.tag`` is persisted with the order and given back in fills, views
   and closures; encode what the order is for (``"grid:buy:3"``) so a restarted strategy recognises it.
6. **State is JSON-shaped.** ``state_snapshot()`` returns str keys and str, int, bool, None, Decimal,
   lists and dicts -- never float. ``restore_state()`` raises ValueError for a snapshot it cannot use.
7. **Bad parameters raise ValueError(f"{key}: {why}")** from ``__init__``; the builder turns that into
   a ConfigError naming the configuration line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar, TypeVar

from s1mpled.config import MAX_PARAM_INT, decimal_bound_error
from s1mpled.model import OrderType, Side

_T = TypeVar("_T")

__all__ = [
    "CancelOrder",
    "FillView",
    "MarketRules",
    "OpenOrderView",
    "Params",
    "PlaceOrder",
    "Signal",
    "StateReader",
    "Strategy",
    "StrategyView",
    "quantize_down",
    "quantize_up",
]


def _quantize(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if not step.is_finite() or step <= 0:
        raise ValueError(f"step must be a positive finite Decimal, got {step}")
    steps, rest = divmod(value, step)  # exact: integer quotient truncated toward zero, rest has value's sign
    if rest and rounding == ROUND_FLOOR and value < 0:
        steps -= 1
    elif rest and rounding == ROUND_CEILING and value > 0:
        steps += 1
    return steps * step


def quantize_down(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` not above ``value`` (``quantize_down(1.2345, 0.01) == 1.23``)."""
    return _quantize(value, step, ROUND_FLOOR)


def quantize_up(value: Decimal, step: Decimal) -> Decimal:
    """The smallest multiple of ``step`` not below ``value`` (``quantize_up(1.2301, 0.01) == 1.24``)."""
    return _quantize(value, step, ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Ask the runner for a new order; ``tag`` is persisted with it and given back in fills and views."""

    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None = None  # required for LIMIT
    tag: str = ""


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Ask the runner to cancel one of the strategy's orders."""

    client_order_id: str


Signal = PlaceOrder | CancelOrder


@dataclass(frozen=True, slots=True)
class OpenOrderView:
    """One of the strategy's orders that is not finished; ``unresolved``: its submit outcome is unknown."""

    client_order_id: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    filled: Decimal
    tag: str
    unresolved: bool


@dataclass(frozen=True, slots=True)
class MarketRules:
    """The symbol's trading rules: prices on ``price_step``, amounts on ``amount_step``, >= ``min_amount``."""

    price_step: Decimal
    amount_step: Decimal
    min_amount: Decimal

    def __post_init__(self) -> None:
        for name in ("price_step", "amount_step"):
            step: Decimal = getattr(self, name)
            if not step.is_finite() or step <= 0:
                raise ValueError(f"{name} must be positive, got {step}")
        if not self.min_amount.is_finite() or self.min_amount < 0:
            raise ValueError(f"min_amount must not be negative, got {self.min_amount}")

    def amount_down(self, amount: Decimal) -> Decimal:
        """``amount`` rounded down to the amount step."""
        return quantize_down(amount, self.amount_step)

    def price_down(self, price: Decimal) -> Decimal:
        """``price`` rounded down to the price step (for buys: never pay more than meant)."""
        return quantize_down(price, self.price_step)

    def price_up(self, price: Decimal) -> Decimal:
        """``price`` rounded up to the price step (for sells: never sell cheaper than meant)."""
        return quantize_up(price, self.price_step)


@dataclass(frozen=True, slots=True)
class StrategyView:
    """The read-only facts the runner gives the strategy on every call.

    ``capital`` is quote the strategy owns that its open buys do not reserve; ``holdings`` is base it
    owns that its open sells do not reserve. ``halted``: the circuit breaker is open (reduce only).
    """

    strategy: str
    symbol: str
    now_ms: int
    last_price: Decimal | None
    capital: Decimal
    holdings: Decimal
    open_orders: tuple[OpenOrderView, ...]
    rules: MarketRules
    halted: bool

    def orders_tagged(self, prefix: str) -> tuple[OpenOrderView, ...]:
        """The open (or unresolved) orders whose tag starts with ``prefix``."""
        return tuple(o for o in self.open_orders if o.tag.startswith(prefix))


@dataclass(frozen=True, slots=True)
class FillView:
    """One execution of one of the strategy's orders; ``order_complete``: the order is now fully filled."""

    client_order_id: str
    tag: str
    side: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    order_complete: bool


class Params:
    """Typed access to a strategy's parameters that reports problems as ``ValueError("key: why")``.

    Values may be Decimal, int or str (config amounts arrive as the YAML scalar's text); floats are
    refused because they cannot hold money exactly. Whatever the spelling (``"1e400"`` quoted is text
    until it gets here), a decimal obeys the configuration's bounds -- finite, at most 30 decimal places,
    below 1e30 -- and an integer is below 1e18. ``finish()`` refuses keys nobody asked for, so a typo
    (``take_proft``) is a configuration error instead of a silently ignored setting. A parameter that
    names a schedule event ends in ``_event`` (a list of them: ``_events``): the configuration checks
    it against schedule.yaml, so a typo there is refused before the strategy is even built.
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = dict(params)
        self._seen: set[str] = set()

    def decimal(
        self, key: str, default: Decimal | None = None, *, above: Decimal | None = None, below: Decimal | None = None
    ) -> Decimal | None:
        """A Decimal (or ``default`` if absent), strictly between ``above`` and ``below`` when given."""
        raw = self._get(key)
        if raw is None:
            return default
        value = _to_decimal(key, raw)
        if above is not None and not value > above:
            raise ValueError(f"{key}: must be greater than {above}, got {value}")
        if below is not None and not value < below:
            raise ValueError(f"{key}: must be less than {below}, got {value}")
        return value

    def required_decimal(self, key: str, *, above: Decimal | None = None, below: Decimal | None = None) -> Decimal:
        """Like ``decimal()`` but the key must be present."""
        value = self.decimal(key, above=above, below=below)
        if value is None:
            raise ValueError(f"{key}: required")
        return value

    def integer(
        self, key: str, default: int | None = None, *, low: int | None = None, high: int | None = None
    ) -> int | None:
        """An int in ``low..high`` (inclusive) or ``default`` if absent; "12" is accepted, 12.5 is not."""
        raw = self._get(key)
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int | str | Decimal):
            raise ValueError(f"{key}: must be an integer, got {raw!r}")
        try:
            dec = Decimal(str(raw).strip())
        except ArithmeticError:
            raise ValueError(f"{key}: must be an integer, got {raw!r}") from None
        if not dec.is_finite() or dec != dec.to_integral_value():
            raise ValueError(f"{key}: must be an integer, got {raw!r}")
        if abs(dec) >= MAX_PARAM_INT:  # int() of "1e999999999" would take forever
            raise ValueError(f"{key}: must be an integer below 1e18 in size, got {raw!r}")
        value = int(dec)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{key}: must be in {_bound(low, '-inf')}..{_bound(high, 'inf')}, got {value}")
        return value

    def required_integer(self, key: str, *, low: int | None = None, high: int | None = None) -> int:
        """Like ``integer()`` but the key must be present."""
        value = self.integer(key, low=low, high=high)
        if value is None:
            raise ValueError(f"{key}: required")
        return value

    def string(self, key: str, default: str) -> str:
        """A non-empty string, or ``default`` if absent."""
        raw = self._get(key)
        if raw is None:
            return default
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"{key}: must be a non-empty string, got {raw!r}")
        return raw.strip()

    def finish(self) -> None:
        """Raise for the first parameter no accessor asked for."""
        for key in sorted(set(self._params) - self._seen):
            raise ValueError(f"{key}: unknown parameter (known: {', '.join(sorted(self._seen))})")

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._params.get(key)


class StateReader:
    """Typed access to a restored snapshot; a missing key or wrong type is ``ValueError("<where>.<key>: why")``.

    Snapshots come back from the state store with Decimals as Decimal and integers as int; anything
    else (a float, a string where an amount belongs) means the snapshot is not one this code wrote.
    """

    def __init__(self, state: Mapping[str, Any], where: str = "state") -> None:
        if not isinstance(state, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(state).__name__}")
        self._state, self._where = state, where

    def decimal(self, key: str) -> Decimal:
        """A finite Decimal."""
        value = self._typed(key, Decimal, "a Decimal")
        if not value.is_finite():
            raise ValueError(f"{self._where}.{key}: must be finite, got {value}")
        return value

    def optional_decimal(self, key: str) -> Decimal | None:
        """A finite Decimal or None."""
        return None if self._state.get(key, 0) is None else self.decimal(key)

    def integer(self, key: str) -> int:
        """An int (not a bool)."""
        value = self._state.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self._where}.{key}: expected an integer, got {value!r}")
        return value

    def optional_integer(self, key: str) -> int | None:
        """An int or None."""
        return None if self._state.get(key, 0) is None else self.integer(key)

    def string(self, key: str) -> str:
        """A str."""
        return self._typed(key, str, "a string")

    def optional_string(self, key: str) -> str | None:
        """A str or None."""
        return None if self._state.get(key, 0) is None else self.string(key)

    def boolean(self, key: str) -> bool:
        """A bool."""
        return self._typed(key, bool, "true or false")

    def child(self, key: str) -> StateReader:
        """A nested mapping, read with the same rules."""
        value = self._state.get(key)
        if not isinstance(value, Mapping):
            raise ValueError(f"{self._where}.{key}: expected a mapping, got {value!r}")
        return StateReader(value, f"{self._where}.{key}")

    def keys(self) -> list[str]:
        """The snapshot's keys."""
        return [str(k) for k in self._state]

    def _typed(self, key: str, kind: type[_T], what: str) -> _T:
        value = self._state.get(key)
        if not isinstance(value, kind):
            raise ValueError(f"{self._where}.{key}: expected {what}, got {value!r}")
        return value


def _bound(value: int | None, missing: str) -> str:
    return missing if value is None else str(value)


def _to_decimal(key: str, raw: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, Decimal | int | str):
        raise ValueError(f'{key}: must be a decimal number written exactly (e.g. "0.01"), got {raw!r}')
    try:
        value = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except ArithmeticError:
        raise ValueError(f"{key}: not a number: {raw!r}") from None
    if not value.is_finite():
        raise ValueError(f"{key}: must be finite, got {raw!r}")
    problem = decimal_bound_error(value)
    if problem is not None:
        raise ValueError(f"{key}: {problem}")
    return value


class Strategy(ABC):
    """Base of every strategy plugin; see the module docstring for the rules.

    Lifecycle: ``__init__`` (validate parameters) -> ``restore_state`` (if a snapshot exists) ->
    ``on_start`` (after the ledger is reconciled) -> ``on_tick`` / ``on_fill`` / ``on_event`` /
    ``on_order_closed`` in any order, each returning the signals it wants executed. Every hook
    defaults to "no signals", so a strategy overrides only what it reacts to.
    """

    kind: ClassVar[str] = ""  # the configuration's ``type:`` for this strategy

    def __init__(self, name: str, symbol: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.symbol = symbol

    def waits_for(self) -> tuple[str, ...]:
        """The schedule events this strategy acts on, defaults included.

        The configuration checks each against schedule.yaml when the strategy is built, so a default
        event that the operator's schedule lacks is refused as loudly as a misspelt parameter:
        otherwise the strategy would wait forever for an event nobody publishes.
        """
        return ()

    def on_start(self, view: StrategyView) -> list[Signal]:
        """Called once after recovery: state restored and ledger reconciled with the exchange."""
        return []

    def on_tick(self, view: StrategyView) -> list[Signal]:
        """Called on each market price update (``view.last_price``)."""
        return []

    def on_fill(self, fill: FillView, view: StrategyView) -> list[Signal]:
        """Called once per execution of one of this strategy's orders."""
        return []

    def on_event(self, event_name: str, view: StrategyView) -> list[Signal]:
        """Called for each named schedule event (schedule.yaml)."""
        return []

    def on_order_closed(self, client_order_id: str, tag: str, state: str, view: StrategyView) -> list[Signal]:
        """Called when an order ends without completing (canceled, rejected, not placed): re-arm here."""
        return []

    def on_order_revived(self, client_order_id: str, tag: str, view: StrategyView) -> list[Signal]:
        """Called when an order we wrote off (not placed) turns up on the exchange after all.

        The strategy was told it was not placed and may have replaced it, so by default the late order
        is cancelled when another open order carries the same tag (one order per purpose); otherwise it
        is kept and serves its purpose. Its fills (if any) arrive through ``on_fill`` as usual.
        """
        mine = any(o.client_order_id == client_order_id for o in view.open_orders)
        taken = any(o.tag == tag and o.client_order_id != client_order_id for o in view.open_orders)
        return [CancelOrder(client_order_id)] if tag and mine and taken else []

    @abstractmethod
    def state_snapshot(self) -> dict[str, Any]:
        """Everything the strategy must remember across a restart (JSON-shaped, Decimal not float)."""

    @abstractmethod
    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Adopt a snapshot taken by ``state_snapshot()``; raise ValueError if it is unusable."""
