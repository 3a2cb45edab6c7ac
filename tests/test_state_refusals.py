"""Every from_state/restore_state refuses NaN, sNaN and infinities (and other unusable values), naming the key.

The codec already refuses a non-finite number in a state file; these readers are the second line: a
snapshot that reaches them from anywhere else (a test, a future codec, a hand-built dict) is refused with
an error that names the key -- and, through ``StatefulPlugin.load_state`` or the paper environment, the
file -- never a traceback from deep inside the arithmetic.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.circuit_breaker import Breaker, BreakerState
from s1mpled.circuit_breaker_worker import CircuitBreakerWorker
from s1mpled.config import load_config
from s1mpled.environments.paper import STATE_NAME as PAPER_STATE_NAME
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.environments.paper_exchange import MarketSpec, SimulatedExchange
from s1mpled.errors import LocalStateError, StateError
from s1mpled.ledger import StrategyLedger
from s1mpled.model import OrderRequest, OrderType, Side
from s1mpled.orders import client_order_id, order_prefix
from s1mpled.state.store import StateDirectory
from s1mpled.strategies.base import StateReader

NON_FINITE = [D("NaN"), D("sNaN"), D("Infinity"), D("-Infinity"), D("-NaN")]
_bad_numbers = st.sampled_from([*NON_FINITE, float("inf"), float("nan"), float("-inf")])
_bad_values = _bad_numbers | st.sampled_from(["soon", "", None, True, [], {}, D("1.5"), -1, 2.5])


def _decimal_paths(node: Any, path: str = "") -> Iterator[str]:
    """The path (``a.b[2].c``) of every Decimal leaf of a JSON-shaped state."""
    if isinstance(node, D):
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _decimal_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _decimal_paths(value, f"{path}[{index}]")


def _with(state: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``state`` with the leaf at ``path`` replaced by ``value``."""
    out = copy.deepcopy(state)
    steps = path.replace("[", ".[").split(".")
    node: Any = out
    for step in steps[:-1]:
        node = node[int(step[1:-1])] if step.startswith("[") else node[step]
    last = steps[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return out


# ------------------------------------------------------------------------------------ the breaker

BREAKER = Breaker(BreakerState.OPEN, "link lost", False, 1_000, True).to_state()


@given(st.sampled_from(sorted(BREAKER)), _bad_values)
def test_breaker_from_state_refuses_bad_values_naming_the_key(key: str, bad: Any) -> None:
    """Infinity, NaN, sNaN, a string or a bool where the breaker expects something else: ValueError naming the key."""
    if key == "reason" and isinstance(bad, str):
        return  # any text is a reason
    if key in ("manual", "exiting") and isinstance(bad, bool):
        return  # a valid flag
    state = {**BREAKER, key: bad}
    with pytest.raises(ValueError, match=rf"^state\.{key}: "):
        Breaker.from_state(state)


def test_breaker_from_state_refuses_a_missing_key_or_an_unknown_state() -> None:
    """A missing key or an unknown state word is a ValueError naming it, never a KeyError (``exiting`` may be
    missing: a breaker saved before the emergency exit was a goal has none pending)."""
    for key in set(BREAKER) - {"exiting"}:
        with pytest.raises(ValueError, match=rf"^state\.{key}: "):
            Breaker.from_state({k: v for k, v in BREAKER.items() if k != key})
    with pytest.raises(ValueError, match=r"^state\.state: expected one of closed, open, got 'half-open'"):
        Breaker.from_state({**BREAKER, "state": "half-open"})


def test_breaker_worker_names_the_file_and_the_key(tmp_path: Path) -> None:
    """The worker's load_state() turns the refusal into a StateError naming circuit-breaker.state.json and the key."""

    async def nothing(_: object) -> None:
        return None

    with StateDirectory.open(tmp_path) as sd:
        f = sd.file("circuit-breaker.state.json")
        f.load()
        f.save_sync({**BREAKER, "opened_ms": "soon"})
    with StateDirectory.open(tmp_path) as sd:
        worker = CircuitBreakerWorker(
            sd.file("circuit-breaker.state.json"),
            nothing,
            lambda: 0,
            emergency_exit=False,
            auto_close_after_s=None,
            alert=nothing,
        )
        with pytest.raises(StateError, match=r"circuit-breaker\.state\.json: .*state\.opened_ms: expected an integer"):
            worker.load_state()


# -------------------------------------------------------------------------------- strategy states


@pytest.mark.parametrize("bad", NON_FINITE)
def test_state_reader_refuses_non_finite_decimals_naming_the_key(bad: D) -> None:
    """StateReader.decimal (every built-in strategy's restore_state) refuses NaN, sNaN and infinities."""
    with pytest.raises(ValueError, match=r"^state\.levels\.3\.price: must be finite"):
        StateReader({"levels": {"3": {"price": bad}}}).child("levels").child("3").decimal("price")
    with pytest.raises(ValueError, match=r"^state\.cost: must be finite"):
        StateReader({"cost": bad}).optional_decimal("cost")


# ------------------------------------------------------------------------------------- the ledger

SYMBOL = "BTC/USDT"


def _ledger_state() -> dict[str, Any]:
    ledger = StrategyLedger("dca", SYMBOL, D("1000"))
    prefix = order_prefix("test", "dca")
    for seq in (1, 2):
        request = OrderRequest(client_order_id(prefix, seq), SYMBOL, Side.BUY, OrderType.LIMIT, D("0.5"), D("100"))
        ledger.record_intent(request, now_ms=seq)
    return ledger.to_state()


def test_ledger_from_state_refuses_non_finite_amounts_everywhere() -> None:
    """Every Decimal of a ledger snapshot, replaced by NaN, sNaN or an infinity, is a LocalStateError naming it."""
    state = _ledger_state()
    paths = list(_decimal_paths(state))
    assert len(paths) >= 8
    for path in paths:
        for bad in NON_FINITE:
            with pytest.raises(LocalStateError, match=path.rsplit(".", 1)[-1]):
                StrategyLedger.from_state(_with(state, path, bad))


# --------------------------------------------------------------------------- the paper exchange

BTC, ETH = "BTC/USDT", "ETH/BTC"


def _exchange_state() -> dict[str, Any]:
    markets = {
        BTC: MarketSpec(BTC, price_step=D("0.01"), amount_step=D("0.001"), liquidity=D("1")),
        ETH: MarketSpec(ETH, price_step=D("0.00001"), amount_step=D("0.01"), liquidity=D("5")),
    }
    ex = SimulatedExchange(markets, {"USDT": D("100000"), "BTC": D("10"), "ETH": D("100")}, D("0.001"))
    ex.on_price(BTC, D(100), 1)
    ex.place_order(OrderRequest("b", BTC, Side.BUY, OrderType.LIMIT, D("2"), D("100")), 2)
    ex.place_order(OrderRequest("m", BTC, Side.BUY, OrderType.MARKET, D("0.5"), None), 3)
    return ex.to_state()


def test_paper_exchange_from_state_refuses_non_finite_amounts_naming_the_key() -> None:
    """Every Decimal of a simulated-exchange snapshot, made non-finite, is a LocalStateError naming its key path."""
    state = _exchange_state()
    paths = list(_decimal_paths(state))
    assert any(p.startswith("trades[") for p in paths) and any(p.startswith("orders[") for p in paths)
    for path in paths:
        for bad in NON_FINITE:
            with pytest.raises(LocalStateError) as info:
                SimulatedExchange.from_state(_with(state, path, bad))
            assert path in str(info.value), (path, str(info.value))


# ----------------------------------------------------------------------- the paper environment

CONFIG = """\
operation: refusals
mode: paper
state_dir: state
paper:
  balances: {USDT: "5000"}
  markets:
    BTC/USDT: {start_price: "50000", volatility: "0.002", liquidity: "0.05", price_step: "0.01", amount_step: "0.00001"}
strategies:
  - {name: dca-btc, class: "s1mpled.strategies.dca:DCA", symbol: BTC/USDT, capital: "1000",
     params: {quote_per_buy: "25", every_event: strategy_tick}}
"""
SCHEDULE = "events:\n  five_minute_reconciliation_tick: {every: 5m}\n  strategy_tick: {every: 5s}\n"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda s: s.update(step="soon"), "step"),
        (lambda s: s.pop("replay_index"), "replay_index"),
        (lambda s: s["exchange"].update(fee_rate="0.001"), "fee_rate"),
        (lambda s: s["exchange"]["balances"]["USDT"].update(free="12"), "balances.USDT.free"),
    ],
)
def test_paper_environment_names_the_file_and_the_key(tmp_path: Path, change: Any, key: str) -> None:
    """A verified paper-exchange.state.json the simulator cannot use is a StateError naming that file and the key."""
    (tmp_path / "s1mpled.yaml").write_text(CONFIG)
    (tmp_path / "schedule.yaml").write_text(SCHEDULE)
    config = load_config(tmp_path / "s1mpled.yaml", {"HOME": str(tmp_path)})
    paper = config.paper
    assert paper is not None

    async def start(sd: StateDirectory) -> None:
        env = PaperEnvironment(paper, sd.file(PAPER_STATE_NAME), lambda: 1_000)
        await env.start()
        await env.close()

    with StateDirectory.open(config.state_dir) as sd:
        asyncio.run(start(sd))  # a first start writes a valid state
    with StateDirectory.open(config.state_dir) as sd:
        f = sd.file(PAPER_STATE_NAME)
        state = f.load().state
        change(state)
        f.save_sync(state)  # verified: only its content is wrong
    with StateDirectory.open(config.state_dir) as sd, pytest.raises(StateError) as info:
        asyncio.run(start(sd))
    assert str(config.state_dir / PAPER_STATE_NAME) in str(info.value) and key in str(info.value), info.value
