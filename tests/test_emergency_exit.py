"""The emergency exit is a goal, not one attempt (issue #9, item 2).

A step of :meth:`StrategyWorker.pursue_exit` (over the real paper environment) never sends a new sell while an
earlier exit sell's fate is unknown, and the breaker repeats steps until the strategies are flat. End to end,
through the real ccxt against the simulator: an exit that meets an outage (its market sell answered 503) is
retried once the exchange is back -- in the same process, or after a restart -- until nothing is held, with an
alert for each failed attempt; ``s1mpled halt --keep-positions`` cancels it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import yaml

from s1mpled.circuit_breaker import EXIT_TAG
from s1mpled.errors import ExchangeUnavailable
from s1mpled.model import OrderRequest, Side
from s1mpled.orders import OrderState
from s1mpled.state import StateDirectory
from tests.daemon_harness import Daemon, write_config
from tests.live_harness import (
    Simulator,
    assert_books_equal_exchange,
    assert_no_duplicate_orders,
    read_ledgers,
    wait_until,
    write_live_config,
)
from tests.test_strategy_worker import Scripted, Setup, buy, cid, run

# ----------------------------------------------------------------------------- one strategy's steps


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[StateDirectory]:
    with StateDirectory.open(tmp_path / "state") as d:
        yield d


async def _holding(s: Setup, amount: str) -> None:
    await s.start()
    s.strategy.plan = [buy(amount=amount, tag="entry")]
    await s.tick()
    await s.deliver_all()


def _exit_orders(s: Setup) -> list[Any]:
    """The sells on the exchange among the orders after the entry."""
    found = [s.env.exchange.order(cid(n)) for n in range(2, 6)]
    return [o for o in found if o is not None and o.side is Side.SELL]


def test_an_unanswered_exit_sell_is_settled_before_another_is_sent(state_dir: StateDirectory) -> None:
    """A sell answered with an error is UNRESOLVED: the next steps wait; once a query proves it never
    arrived (NOT_PLACED), a new sell goes out, fills, and the step after reports the strategy flat."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await _holding(s, "0.5")
        s.env.fail_next = ExchangeUnavailable("create order: 503 Service Unavailable")
        first = await s.worker.pursue_exit()
        assert first.failed is not None and "no answer to the market sell" in first.failed
        for _ in range(3):
            again = await s.worker.pursue_exit()
            assert again.waiting == f"exit order {cid(2)} is unresolved" and again.failed is None
        s.clock.now += 60_000
        await s.worker.check_in_flight()  # the query by client id: the exchange never saw it
        order = s.worker.ledger.order(cid(2))
        assert order is not None and order.state is OrderState.NOT_PLACED
        second = await s.worker.pursue_exit()
        assert second.failed is None and not second.done
        await s.deliver_all()
        assert (await s.worker.pursue_exit()).done

    run(main)
    assert s.env.sent[cid(2)] == 1 and s.env.sent[cid(3)] == 1
    sells = _exit_orders(s)
    assert [(o.client_order_id, o.amount) for o in sells] == [(cid(3), D("0.5"))]
    assert s.worker.ledger.snapshot().holdings == 0 and s.env.exchange.balances()["BTC"].total == 0


def test_a_sell_executed_without_an_answer_is_never_sold_twice(
    state_dir: StateDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange executed the exit sell but the answer was lost: the steps wait until the fill settles
    it, and no second sell is ever sent."""
    s = Setup(state_dir, Scripted())
    real = s.env.create_order

    async def lost(request: OrderRequest) -> Any:
        await real(request)
        raise ExchangeUnavailable("create order: connection reset")

    async def main() -> None:
        await _holding(s, "0.5")
        monkeypatch.setattr(s.env, "create_order", lost)
        assert (await s.worker.pursue_exit()).failed is not None
        monkeypatch.setattr(s.env, "create_order", real)
        assert (await s.worker.pursue_exit()).waiting == f"exit order {cid(2)} is unresolved"
        await s.deliver_all()  # the stream's report of the fill
        assert (await s.worker.pursue_exit()).done

    run(main)
    assert [o.client_order_id for o in _exit_orders(s)] == [cid(2)]
    assert s.env.sent[cid(3)] == 0


def test_an_exit_cancels_open_orders_and_the_strategy_places_none_meanwhile(state_dir: StateDirectory) -> None:
    """Exiting: the strategy's own orders (even sells) are dropped, open ones are cancelled, holdings sold at
    market under the exit's tag; with nothing held and nothing open the strategy is done."""
    s = Setup(state_dir, Scripted())

    async def main() -> None:
        await _holding(s, "0.2")
        s.strategy.plan = [buy(amount="0.1", price="90", tag="dip")]
        await s.tick()
        s.worker.exiting = True
        s.strategy.plan = [buy(amount="0.1", price="80", tag="dip2")]
        await s.tick()
        assert s.env.sent[cid(3)] == 0
        assert not (await s.worker.pursue_exit()).done
        await s.deliver_all()
        assert (await s.worker.pursue_exit()).done

    run(main)
    dip = s.worker.ledger.order(cid(2))
    assert dip is not None and dip.state is OrderState.CANCELED
    sold = s.worker.ledger.order(cid(3))
    assert sold is not None and (sold.tag, sold.amount, sold.state) == (EXIT_TAG, D("0.2"), OrderState.FILLED)


def test_an_order_whose_submit_is_unresolved_is_settled_not_cancelled(
    state_dir: StateDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order whose submit got no answer is not cancelled by the exit (the exchange would call it unknown,
    and every refusal would restart its in-flight wait: a livelock); the exit waits until a query settles it."""
    s = Setup(state_dir, Scripted())
    cancels: list[str] = []
    real = s.env.cancel_order

    async def counted(symbol: str, client_order_id: str) -> Any:
        cancels.append(client_order_id)
        return await real(symbol, client_order_id)

    monkeypatch.setattr(s.env, "cancel_order", counted)

    async def main() -> None:
        await s.start()
        s.env.fail_next = ExchangeUnavailable("create order: 503 Service Unavailable")
        s.strategy.plan = [buy(price="90", tag="dip")]
        await s.tick()
        for _ in range(3):
            step = await s.worker.pursue_exit()
            assert (step.done, step.waiting) == (False, "1 order(s) still open")
        s.clock.now += 60_000
        await s.worker.check_in_flight()
        assert (await s.worker.pursue_exit()).done

    run(main)
    order = s.worker.ledger.order(cid(1))
    assert order is not None and order.state is OrderState.NOT_PLACED
    assert cancels == []


# ----------------------------------------------------------------------------- the daemon, live


def _exit_config(tmp_path: Path, sim: Simulator) -> Path:
    """Emergency exit on; the breaker stays open afterwards (no auto close), so nothing buys again."""
    path = write_live_config(tmp_path, sim)
    doc = yaml.safe_load(path.read_text())
    doc["circuit_breaker"] = {"emergency_exit": True, "auto_close_after": None, "max_reconnect_attempts": 3}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _holdings(doc: dict[str, Any], name: str) -> D:
    return D(next(s for s in doc["strategies"] if s["name"] == name)["holdings"])


def _flat(doc: dict[str, Any]) -> bool:
    """Every strategy holds less than a lot (0.00001 BTC, 0.0001 ETH on the simulator) and has nothing open."""
    lots = {"dca-btc": D("0.00001"), "grid-eth": D("0.0001")}
    return all(D(s["holdings"]) < lots[s["name"]] and not s["open_orders"] for s in doc["strategies"])


def _sell_failed(log: Path) -> bool:
    """After the exit began, an order got no answer (a 503): UNRESOLVED (strategy_worker's own line; the only
    orders sent after the exit began are its market sells)."""
    lines = log.read_text().splitlines()
    began = [i for i, line in enumerate(lines) if "CRITICAL s1mpled.circuit_breaker: emergency exit:" in line]
    return bool(began) and any("outcome unknown" in line and "UNRESOLVED" in line for line in lines[began[0] :])


def _outage(sim: Simulator, seconds: float) -> None:
    """REST answers 503 and WebSockets are refused: the streams are lost, the breaker opens, the exit's
    market sells and cancels get 503s (never executed)."""
    sim.inject("http_error", seconds=seconds, status=503)
    sim.inject("ws_refuse", seconds=seconds)
    sim.inject("ws_drop")


def _exit_sells(sim: Simulator) -> list[dict[str, Any]]:
    return [o for o in sim.state()["orders"].values() if o["side"] == "sell" and o["type"] == "market"]


def _verify(tmp_path: Path, sim: Simulator, log: Path) -> None:
    """Restart with prices frozen, reconcile, stop, and compare the books with the exchange."""
    sim.clear()
    sim.pause_feed(True)
    config = write_live_config(tmp_path, sim, frozen=True)
    doc = yaml.safe_load(config.read_text())
    doc["circuit_breaker"] = {"emergency_exit": True, "auto_close_after": None, "max_reconnect_attempts": 3}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    daemon = Daemon(config, log)
    daemon.wait_trading(timeout=60)
    daemon.reconcile()
    assert daemon.stop() == 0, daemon.log_tail()
    ledgers, ex = read_ledgers(tmp_path / "state"), sim.state()
    assert_books_equal_exchange(ledgers, ex)
    assert_no_duplicate_orders(ledgers, ex)


def _start_holding(tmp_path: Path, sim: Simulator, log: Path) -> Daemon:
    daemon = Daemon(_exit_config(tmp_path, sim), log)
    daemon.wait_trading(timeout=60)
    daemon.wait_for(lambda d: _holdings(d, "dca-btc") >= D("0.001"), timeout=60)
    return daemon


def test_an_exit_that_meets_an_outage_is_retried_until_nothing_is_held(tmp_path: Path, sim: Simulator) -> None:
    """The breaker opens in an outage and the exit's first market sell gets a 503: it is alerted, settled
    (not placed) once the exchange answers, and retried until every strategy is flat; books stay exact."""
    log = tmp_path / "daemon.log"
    daemon = _start_holding(tmp_path, sim, log)
    _outage(sim, 12)
    daemon.wait_for(lambda d: d["breaker"]["state"] == "open", timeout=60)
    wait_until(lambda: _sell_failed(log), 60, "the exit's sell to meet the outage")
    doc = daemon.wait_for(_flat, timeout=120)
    assert doc["breaker"]["state"] == "open"  # flat and halted: nothing buys again until `s1mpled resume`
    daemon.wait_for(lambda d: not d["breaker"]["emergency_exit"], timeout=10)  # the goal is reached
    wait_until(lambda: "ALERT: s1mpled emergency exit done" in log.read_text(), 10, "the alert that it is done")
    assert "ALERT: s1mpled emergency exit of dca-btc: attempt 1 failed: no answer to the market sell" in log.read_text()
    filled = [o for o in _exit_sells(sim) if o["status"] == "closed"]
    assert any(o["symbol"] == "BTC/USDT" for o in filled), _exit_sells(sim)
    assert daemon.stop() == 0, daemon.log_tail()
    _verify(tmp_path, sim, log)


def test_a_pending_exit_carries_on_after_a_restart(tmp_path: Path, sim: Simulator) -> None:
    """Stopped while the exit is still failing, the daemon comes back with the goal (persisted in the
    breaker's state) and finishes it once the exchange answers."""
    log = tmp_path / "daemon.log"
    daemon = _start_holding(tmp_path, sim, log)
    _outage(sim, 600)
    daemon.wait_for(lambda d: d["breaker"]["state"] == "open", timeout=60)
    wait_until(lambda: _sell_failed(log), 60, "the exit's sell to meet the outage")
    assert daemon.stop() == 0, daemon.log_tail()
    assert _holdings(_last_status(tmp_path), "dca-btc") >= D("0.001")
    sim.clear()
    daemon = Daemon(_exit_config(tmp_path, sim), log)
    daemon.wait_trading(timeout=60)
    daemon.wait_for(_flat, timeout=120)
    assert "the emergency exit is still pending after restart" in log.read_text()
    assert daemon.stop() == 0, daemon.log_tail()
    _verify(tmp_path, sim, log)


def _last_status(tmp_path: Path) -> dict[str, Any]:
    """What the stopped daemon's books say (the form of ``status``' strategies)."""
    return {
        "strategies": [
            {"name": name, "holdings": str(ledger.snapshot().holdings)}
            for name, ledger in read_ledgers(tmp_path / "state").items()
        ]
    }


def test_halt_keep_positions_is_an_operator_halt_without_an_exit(tmp_path: Path) -> None:
    """``s1mpled halt --keep-positions`` opens the breaker by hand with no emergency exit pending (it cancels
    one that is), and ``resume`` closes it."""
    config = write_config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "s1mpled", *args, "--config", str(config)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    halted = cli("halt", "--keep-positions", "--reason", "checking by hand")
    assert halted.returncode == 0, halted.stderr
    assert "no emergency exit: the strategies keep what they hold" in halted.stdout
    breaker = daemon.status()["breaker"]
    assert (breaker["state"], breaker["manual"], breaker["emergency_exit"]) == ("open", True, False)
    assert "keep-positions" in cli("halt", "--help").stdout
    assert cli("resume").returncode == 0
    assert daemon.status()["breaker"]["state"] == "closed"
    assert daemon.stop() == 0
