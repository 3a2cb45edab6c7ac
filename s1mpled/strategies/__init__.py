"""Strategy plugins: the interface a strategy author implements and the built-in DCA and grid.

A strategy is pure (views in, signals out); the runner owns orders, ids, persistence and I/O. See
``base`` for the contract and docs/strategies.md for a walk-through. ``BUILTIN`` maps a configuration's
``type:`` to its class; ``strategy_class()`` looks one up with a ConfigError-ready message.
"""

from __future__ import annotations

from collections.abc import Mapping

from s1mpled.strategies.base import (
    CancelOrder,
    FillView,
    MarketRules,
    OpenOrderView,
    Params,
    PlaceOrder,
    Signal,
    StateReader,
    Strategy,
    StrategyView,
    quantize_down,
    quantize_up,
)
from s1mpled.strategies.dca import DCA
from s1mpled.strategies.grid import Grid

__all__ = [
    "BUILTIN",
    "DCA",
    "CancelOrder",
    "FillView",
    "Grid",
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
    "strategy_class",
]

BUILTIN: Mapping[str, type[Strategy]] = {cls.kind: cls for cls in (DCA, Grid)}


def strategy_class(kind: str) -> type[Strategy]:
    """The strategy class for a configuration's ``type:``; ValueError("type: ...") if there is none."""
    try:
        return BUILTIN[kind]
    except KeyError:
        raise ValueError(f"type: unknown strategy {kind!r} (known: {', '.join(sorted(BUILTIN))})") from None
