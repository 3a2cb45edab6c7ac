"""The live trading path end to end: the daemon process, through the real ccxt, against the exchange
simulator process on 127.0.0.1, with faults injected over the simulator's admin API.

The books are compared with the exchange's own account (``GET /__admin/state``), never with a model.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from s1mpled.assembly import strategy_state_name
from s1mpled.environments.live import ccxt_urls
from s1mpled.ledger import StrategyLedger
from s1mpled.orders import OrderState, is_terminal, parse_client_order_id
from s1mpled.reconciliation import total_claims
from s1mpled.state.inspect import inspect
from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET

STRATEGIES = ("dca-btc", "grid-eth")
CAPITAL = {"dca-btc": Decimal(1000), "grid-eth": Decimal(2000)}
# The simulator's opening account; what the strategies do not own is "external" money.
OPENING = {"USDT": Decimal(100000), "BTC": Decimal(1), "ETH": Decimal(10)}


class Simulator:
    """``python -m s1mpled_sim`` as a process, driven over its admin endpoints.

    ``balances`` replaces the simulator's opening account (assets not named start at 0; pass the same
    to :func:`assert_books_equal_exchange` as ``opening``); ``fee_model`` is ``"binance"`` (buy fees in
    base, sell fees in quote; None: the simulator's default, binance) or ``"quote"`` (every fee in
    quote); ``bnb_fees`` charges fees in BNB while the account has some. The admin endpoints
    answer HTTP 400 (``urllib.error.HTTPError``) for a request that cannot be carried out.
    """

    def __init__(
        self,
        log: Path,
        *,
        tick: float = 0.05,
        seed: int = 3,
        balances: dict[str, Decimal] | None = None,
        fee_model: str | None = None,
        bnb_fees: bool = False,
    ) -> None:
        self._log = log.open("ab")
        argv = [sys.executable, "-m", "s1mpled_sim", "--port", "0", "--seed", str(seed)]
        argv += ["--tick-interval", str(tick)]
        for asset, amount in (balances or {}).items():
            argv += ["--balance", f"{asset}={amount}"]
        if fee_model is not None:
            argv += ["--fee-model", fee_model]
        if bnb_fees:
            argv.append("--bnb-fees")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        self.urls: dict[str, Any] = json.loads(self.proc.stdout.readline())

    def _admin(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.urls['http']}/__admin/{path}", data=data, method=method or ("POST" if data else "GET")
        )
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def state(self) -> dict[str, Any]:
        return self._admin("state")  # type: ignore[no-any-return]

    def inject(self, fault: str, **params: Any) -> None:
        self._admin("faults", {"fault": fault, **params})

    def clear(self) -> None:
        self._admin("faults", method="DELETE")

    def account(self, **flags: bool) -> dict[str, Any]:
        """What the exchange says about itself and the key: maintenance, withdrawals, trading, ip_restrict."""
        return self._admin("account", flags)  # type: ignore[no-any-return]

    def pause_feed(self, paused: bool = True) -> None:
        self._admin("feed", {"paused": paused})

    def set_price(self, symbol: str, price: Decimal) -> None:
        """One market trade at ``price`` now: resting orders it crosses fill."""
        self._admin("price", {"symbol": symbol, "price": str(price)})

    def deposit(self, asset: str, delta: Decimal) -> dict[str, Any]:
        """A deposit (``delta`` > 0) or withdrawal (< 0) of free ``asset``, no trade; returns the balance."""
        return self._admin("balance", {"asset": asset, "delta": str(delta)})["result"]  # type: ignore[no-any-return]

    def foreign_order(
        self,
        symbol: str,
        side: str,
        amount: Decimal,
        price: Decimal | None = None,
        *,
        client_order_id: str | None = None,
        order_type: str = "limit",
        status: str = "NEW",
    ) -> dict[str, Any]:
        """An order placed by hand; ``status="PENDING_NEW"``: listed, never matched (see server.py)."""
        body: dict[str, Any] = {
            "symbol": symbol,
            "side": side,
            "type": order_type,
            "amount": str(amount),
            "status": status,
        }
        if price is not None:
            body["price"] = str(price)
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        return self._admin("foreign_order", body)["result"]  # type: ignore[no-any-return]

    def expire_in_match(self, client_order_id: str) -> dict[str, Any]:
        """Self-trade prevention expires the open order (status EXPIRED_IN_MATCH, fills kept)."""
        return self._admin("expire_in_match", {"client_order_id": client_order_id})["result"]  # type: ignore[no-any-return]

    def order_status(self, client_order_id: str, status: str | None) -> dict[str, Any]:
        """REST and the stream report this raw status for the order from now on (None: the real one again)."""
        return self._admin("order_status", {"client_order_id": client_order_id, "status": status})["result"]  # type: ignore[no-any-return]

    def fill(self, client_order_id: str, amount: Decimal | None = None) -> dict[str, Any]:
        """Fill the open order now at its limit price (``amount`` or all that remains), one trade."""
        body: dict[str, Any] = {"client_order_id": client_order_id}
        if amount is not None:
            body["amount"] = str(amount)
        return self._admin("fill", body)["result"]  # type: ignore[no-any-return]

    def fill_in_pieces(self, client_order_id: str, pieces: int) -> dict[str, Any]:
        """Fill the open order completely in ``pieces`` separate trades."""
        return self._admin("fill_in_pieces", {"client_order_id": client_order_id, "pieces": pieces})["result"]  # type: ignore[no-any-return]

    def faults(self) -> dict[str, Any]:
        """``GET /__admin/faults``: the active faults and the ``between_requests`` runs (``fired``)."""
        return self._admin("faults")  # type: ignore[no-any-return]

    def sell_everything_by_hand(self, symbol: str) -> None:
        """What a user does on the exchange's website: sell the whole balance, under a foreign order id."""
        asyncio.run(self._sell_everything(symbol))

    async def _sell_everything(self, symbol: str) -> None:
        import ccxt.pro

        ex: Any = ccxt.pro.binance({"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_API_SECRET, "enableRateLimit": False})
        ex.urls["api"] = ccxt_urls({"http": self.urls["http"], "ws": self.urls["ws"]})
        ex.options.update({"fetchCurrencies": False, "fetchMargins": False, "fetchMarkets": {"types": ["spot"]}})
        try:
            await ex.load_markets()
            balance = await ex.fetch_balance()
            amount = ex.amount_to_precision(symbol, balance["free"][symbol.split("/", maxsplit=1)[0]])
            await ex.create_order(symbol, "market", "sell", amount, None, {"newClientOrderId": "web_manual_1"})
        finally:
            await ex.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self._log.close()


def write_live_config(
    directory: Path,
    sim: Simulator,
    *,
    secret: str = DEFAULT_API_SECRET,
    frozen: bool = False,
    dca_every: str | None = None,
) -> Path:
    """A live-mode config pointing every ccxt endpoint at the simulator; fast clocks unless ``frozen``.

    ``dca_every``: the DCA buys on an event of its own at that period instead of every strategy tick
    (which spends its whole capital in about 15 s), for a test that needs free money left on the account.
    """
    key = directory / "exchange.key"
    key.write_text(yaml.safe_dump({"api_key": DEFAULT_API_KEY, "secret": secret}))
    os.chmod(key, 0o600)
    doc: dict[str, Any] = {
        "operation": "live-test",
        "mode": "live",
        "state_dir": str(directory / "state"),
        "control_socket": str(directory / "control.sock"),
        "schedule": "schedule.yaml",
        "shutdown_timeout": "10s",
        "circuit_breaker": {"emergency_exit": False, "auto_close_after": "2s", "max_reconnect_attempts": 3},
        "live": {
            "exchange": "binance",
            "credentials": str(key),
            "urls": {"http": sim.urls["http"], "ws": sim.urls["ws"]},
            "rate_limit": False,
            "request_timeout": "2s",
            "heartbeat": "3s",
        },
        "strategies": [
            {
                "name": "dca-btc",
                "class": "s1mpled.strategies.dca:DCA",
                "symbol": "BTC/USDT",
                "capital": str(CAPITAL["dca-btc"]),
                "params": {"quote_per_buy": "20", "every_event": "strategy_tick"},
            },
            {
                "name": "grid-eth",
                "class": "s1mpled.strategies.grid:Grid",
                "symbol": "ETH/USDT",
                "capital": str(CAPITAL["grid-eth"]),
                "params": {"levels": 3, "spacing": "0.0008", "order_quote": "100"},
            },
        ],
    }
    slow = "1h" if frozen else None
    events = {
        "five_minute_reconciliation_tick": {"every": slow or "1s"},
        "strategy_tick": {"every": slow or "300ms"},
    }
    if dca_every is not None:
        events["dca_tick"] = {"every": dca_every}
        doc["strategies"][0]["params"]["every_event"] = "dca_tick"
    (directory / "schedule.yaml").write_text(yaml.safe_dump({"events": events}))
    path = directory / "s1mpled.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def read_ledgers(state_dir: Path) -> dict[str, StrategyLedger]:
    out = {}
    for name in STRATEGIES:
        path = state_dir / strategy_state_name(name)
        if path.exists():
            out[name] = StrategyLedger.from_state(inspect(path).record.state["ledger"])
    return out


def assert_books_equal_exchange(
    ledgers: dict[str, StrategyLedger],
    ex: dict[str, Any],
    skip_assets: tuple[str, ...] = (),
    opening: dict[str, Decimal] | None = None,
) -> None:
    """Every fill of ours applied once, every order's fate agreed, every balance equal to the last unit.

    ``opening``: the account the simulator started with (its default, or what the test funded exactly);
    what the strategies do not own of it is outside money.
    """

    def owner(cid: str) -> StrategyLedger:
        found = [lg for lg in ledgers.values() if lg.order(cid) is not None]
        assert len(found) == 1, f"order {cid} known to {len(found)} ledgers"
        return found[0]

    ours = [t for t in ex["trades"] if parse_client_order_id(t["client_order_id"]) is not None]
    for t in ours:
        assert owner(t["client_order_id"]).has_applied(t["trade_id"]), f"lost fill {t}"
    for cid, eo in ex["orders"].items():
        if parse_client_order_id(cid) is None:
            continue
        lo = owner(cid).order(cid)
        assert lo is not None and lo.filled == Decimal(eo["filled"]), (lo, eo)
        assert is_terminal(lo.state) == (eo["status"] != "open"), (lo, eo)
    for ledger in ledgers.values():
        for lo in (*ledger.history(), *ledger.snapshot().open_orders):
            if lo.client_order_id not in ex["orders"]:
                assert lo.state in (OrderState.NOT_PLACED, OrderState.REJECTED), f"ledger-only order {lo}"
    totals: dict[str, Decimal] = defaultdict(Decimal, OPENING if opening is None else opening)
    totals["USDT"] -= sum(CAPITAL.values())
    external_flow(ex, totals)
    for asset, claim in total_claims(lg.snapshot() for lg in ledgers.values()).items():  # minus fee debts
        totals[asset] += claim
    for asset, believed in totals.items():
        if asset in skip_assets:
            continue
        b = ex["balances"].get(asset, {"free": "0", "used": "0"})
        assert believed == Decimal(b["free"]) + Decimal(b["used"]), f"{asset}: books {believed} != exchange {b}"


def external_flow(ex: dict[str, Any], totals: dict[str, Decimal]) -> None:
    """Add what foreign (hand-placed) trades moved, so they are not mistaken for our mistakes."""
    for t in ex["trades"]:
        if parse_client_order_id(t["client_order_id"]) is not None:
            continue
        base, quote = t["symbol"].split("/")
        sign = 1 if t["side"] == "buy" else -1
        totals[base] += sign * Decimal(t["amount"])
        totals[quote] -= sign * Decimal(t["price"]) * Decimal(t["amount"])
        totals[t.get("fee_asset") or quote] -= Decimal(t["fee"])  # Binance: base on buys, quote on sells, or BNB


def assert_no_duplicate_orders(ledgers: dict[str, StrategyLedger], ex: dict[str, Any]) -> None:
    """No two live exchange orders serve one purpose (a grid level, the DCA buy in flight)."""
    for ledger in ledgers.values():
        purposes: dict[str, list[str]] = defaultdict(list)
        for o in ex["open_orders"]:
            lo = ledger.order(o["client_order_id"])
            if lo is not None:
                purposes[lo.tag].append(o["client_order_id"])
        assert all(len(v) == 1 for v in purposes.values()), f"{ledger.strategy}: duplicates {dict(purposes)}"


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
