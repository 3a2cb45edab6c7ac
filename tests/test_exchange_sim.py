"""The Binance-spot simulator, driven by the REAL ccxt (``ccxt.pro.binance``) plus a few raw clients.

Every scenario starts a simulator in-process on port 0 and bounds itself with ``asyncio.timeout``;
waiting is always on a condition with a deadline. Most scenarios pause the synthetic feed so that
prices move only when the test says so (``sim.set_price``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from decimal import Decimal as D
from typing import Any

import aiohttp
import ccxt.pro
import pytest
from ccxt.base.errors import (
    AuthenticationError,
    DDoSProtection,
    ExchangeNotAvailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    NetworkError,
    OrderNotFound,
    RequestTimeout,
)
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.exchange_sim import ExchangeSimulator, SimConfig
from s1mpled.exchange_sim.auth import BinanceError, Credentials, sign, verify_rest, verify_ws, ws_payload
from s1mpled.exchange_sim.faults import FaultPlan, parse_fault
from s1mpled.exchange_sim.venue import Venue
from s1mpled.exchange_sim.wire import fmt

BTC = "BTC/USDT"
PAUSED = SimConfig(feed_paused=True)
NOW = 1_700_000_000_000


def run(scenario: Callable[[ExchangeSimulator], Coroutine[Any, Any, None]], config: SimConfig = PAUSED) -> None:
    """Run one scenario against a fresh simulator; fail it if it takes more than 15 s."""

    async def main() -> None:
        async with asyncio.timeout(15), ExchangeSimulator(config) as sim:
            await scenario(sim)

    asyncio.run(main())


@asynccontextmanager
async def binance(sim: ExchangeSimulator, secret: str | None = None, timeout_ms: int = 3000) -> AsyncIterator[Any]:
    """A real ccxt.pro.binance pointed at the simulator, markets loaded, closed afterwards."""
    ex = ccxt.pro.binance(
        {
            "apiKey": sim.config.api_key,
            "secret": secret or sim.config.api_secret,
            "enableRateLimit": False,
            "timeout": timeout_ms,
            "options": {
                "defaultType": "spot",
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "adjustForTimeDifference": False,
                "recvWindow": 5000,
            },
        }
    )
    ex.urls["api"] = sim.ccxt_urls()
    ex.options["fetchOpenOrders"] = {"warnWithoutSymbol": False}
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the condition lives in the simulator/ccxt, no event to await
            await asyncio.sleep(0.005)


async def watch_until(watch: Callable[[], Coroutine[Any, Any, list[Any]]], found: Callable[[Any], bool]) -> Any:
    """Call a ccxt ``watch_*`` until one of the items it returns satisfies ``found``; return that item."""
    async with asyncio.timeout(5):
        while True:
            for item in await watch():
                if found(item):
                    return item


def by_cid(cid: str) -> dict[str, Any]:
    return {"origClientOrderId": cid}


# --------------------------------------------------------------------- REST through ccxt


def test_markets_and_balance() -> None:
    """load_markets reads the filters (tick size, step, min qty) and fetch_balance the configured balances."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            market = ex.markets[BTC]
            assert market["id"] == "BTCUSDT" and market["spot"] and market["active"]
            assert market["precision"] == {"amount": 1e-05, "price": 0.01, "base": 1e-08, "quote": 1e-08}
            assert market["limits"]["amount"]["min"] == 1e-05
            balance = await ex.fetch_balance()
            assert balance["USDT"] == {"free": 100000.0, "used": 0.0, "total": 100000.0}
            assert balance["BTC"]["free"] == 1.0
            assert await ex.fetch_time() == pytest.approx(time.time() * 1000, abs=5000)

    run(scenario)


def test_limit_order_lifecycle_by_client_id() -> None:
    """A limit order is found by client id, listed by one openOrders request, canceled, and then unknown to cancel."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            order = await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "grid-1"})
            assert (order["clientOrderId"], order["status"], order["id"]) == ("grid-1", "open", "1")
            before = sim.request_counts["GET", "/api/v3/openOrders"]
            open_orders = await ex.fetch_open_orders()
            assert sim.request_counts["GET", "/api/v3/openOrders"] == before + 1
            assert [(o["clientOrderId"], o["symbol"], o["amount"], o["price"]) for o in open_orders] == [
                ("grid-1", BTC, 0.01, 20000.0)
            ]
            fetched = await ex.fetch_order("", BTC, by_cid("grid-1"))
            assert (fetched["id"], fetched["status"], fetched["filled"]) == ("1", "open", 0.0)
            assert (await ex.fetch_balance())["USDT"]["used"] == pytest.approx(200.2)
            canceled = await ex.cancel_order("", BTC, by_cid("grid-1"))
            assert canceled["status"] == "canceled" and canceled["info"]["origClientOrderId"] == "grid-1"
            assert (await ex.fetch_order("1", BTC))["status"] == "canceled"
            assert await ex.fetch_open_orders() == []
            with pytest.raises(OrderNotFound):
                await ex.cancel_order("", BTC, by_cid("grid-1"))
            with pytest.raises(OrderNotFound):
                await ex.fetch_order("", BTC, by_cid("never-sent"))
            assert (await ex.fetch_balance())["USDT"] == {"free": 100000.0, "used": 0.0, "total": 100000.0}

    run(scenario)


def test_rejections_map_to_ccxt_errors() -> None:
    """A reused client order id is InvalidOrder, too big an order InsufficientFunds; neither leaves a trace."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "dup"})
            with pytest.raises(InvalidOrder, match="Duplicate order sent"):
                await ex.create_order(BTC, "limit", "buy", 0.02, 21000, {"clientOrderId": "dup"})
            with pytest.raises(InsufficientFunds):
                await ex.create_order(BTC, "limit", "buy", 10, 20000, {"clientOrderId": "too-big"})
            assert list(sim.state()["orders"]) == ["dup"]

    run(scenario)


def test_market_order_fill_and_my_trades() -> None:
    """A market buy fills at the last price; myTrades, the balance and the admin state all agree."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            order = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "mkt-1"})
            assert (order["status"], order["filled"], order["cost"]) == ("closed", 0.01, 300.0)
            assert order["fee"] == {"currency": "USDT", "cost": 0.3}
            trades = await ex.fetch_my_trades(BTC)
            assert [(t["order"], t["amount"], t["price"], t["takerOrMaker"]) for t in trades] == [
                (order["id"], 0.01, 30000.0, "taker")
            ]
            assert await ex.fetch_my_trades(BTC, params={"fromId": int(trades[0]["id"]) + 1}) == []
            balance = await ex.fetch_balance()
            state = sim.state()
            assert balance["BTC"]["free"] == 1.01 and D(state["balances"]["BTC"]["free"]) == D("1.01")
            assert D(state["balances"]["USDT"]["free"]) == D("100000") - D("300") - D("0.3")
            assert [t["client_order_id"] for t in state["trades"]] == ["mkt-1"]
            assert state["orders"]["mkt-1"]["status"] == "closed"

    run(scenario)


# --------------------------------------------------------------------- the user data stream


def test_watch_orders_and_my_trades_receive_fills() -> None:
    """watch_orders and watch_my_trades see a resting order fill (maker) when the price crosses it."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            orders = asyncio.create_task(watch_until(ex.watch_orders, lambda o: o["status"] == "closed"))
            trades = asyncio.create_task(watch_until(ex.watch_my_trades, lambda t: True))
            await until(lambda: sim.hub.counts()["user"] >= 1)
            placed = await ex.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "rest-1"})
            sim.set_price(BTC, D("28999.99"))
            filled, trade = await orders, await trades
            assert (filled["clientOrderId"], filled["id"], filled["filled"]) == ("rest-1", placed["id"], 0.01)
            assert (trade["order"], trade["price"], trade["amount"]) == (placed["id"], 29000.0, 0.01)
            assert trade["takerOrMaker"] == "maker" and trade["fee"] == {"cost": 0.29, "currency": "USDT"}
            assert sim.state()["trades"][0]["trade_id"] == trade["id"]

    run(scenario)


def test_ws_drop_raises_and_next_watch_reconnects_without_replay() -> None:
    """After a drop the pending watch raises NetworkError; fills while disconnected are lost; a new watch reconnects."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            for mode in ("abort", "close"):
                pending = asyncio.create_task(ex.watch_orders())
                await until(lambda: sim.hub.counts()["user"] == 1)
                await sim.inject("ws_drop", mode=mode)
                with pytest.raises(NetworkError):
                    await pending
                await until(lambda: sim.hub.counts()["ws_api"] == 0)
            await ex.create_order(BTC, "limit", "buy", 0.01, 29000, {"clientOrderId": "missed"})
            sim.set_price(BTC, D("29000.00"))  # fills while nobody listens
            resumed = asyncio.create_task(ex.watch_orders())
            await until(lambda: sim.hub.counts()["user"] == 1)
            await ex.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "after"})
            seen = {o["clientOrderId"] for o in await resumed}
            assert seen == {"after"}
            assert (await ex.fetch_order("", BTC, by_cid("missed")))["status"] == "closed"

    run(scenario)


def test_ws_refuse_then_recover() -> None:
    """While WebSocket upgrades are refused watch_orders raises NetworkError; after clearing it works again."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await sim.inject("ws_refuse", seconds=5)
            with pytest.raises(NetworkError):
                await ex.watch_orders()
            sim.clear_faults()
            watch = asyncio.create_task(ex.watch_orders())
            await until(lambda: sim.hub.counts()["user"] == 1)
            await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "ok"})
            assert [o["clientOrderId"] for o in await watch] == ["ok"]

    run(scenario)


def test_ws_stall_holds_events_until_it_ends() -> None:
    """A stalled connection stays open but delivers the fill only once the stall is over."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            watch = asyncio.create_task(ex.watch_orders())
            await until(lambda: sim.hub.counts()["user"] == 1)
            started = time.monotonic()
            await sim.inject("ws_stall", seconds=0.5)
            await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "held"})
            assert [o["clientOrderId"] for o in await watch] == ["held"]
            assert time.monotonic() - started >= 0.45
            assert sim.hub.counts()["user"] == 1

    run(scenario)


def test_ws_api_errors_and_malformed_events() -> None:
    """The WS API answers a bad signature in Binance's error format; ws_malformed spoils the next pushed event."""

    async def scenario(sim: ExchangeSimulator) -> None:
        params: dict[str, Any] = {"apiKey": sim.config.api_key, "timestamp": sim.now_ms(), "recvWindow": 5000}
        subscribe = {"method": "userDataStream.subscribe.signature"}
        async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url + "/ws-api/v3") as ws:
            await ws.send_json({**subscribe, "id": "1", "params": {**params, "signature": "00"}})
            assert await ws.receive_json() == {
                "id": "1",
                "status": 400,
                "error": {"code": -1022, "msg": "Signature for this request is not valid."},
                "rateLimits": sim_rate_limits(),
            }
            signed = {**params, "signature": sign(ws_payload(params), sim.config.api_secret)}
            await ws.send_json({**subscribe, "id": 2, "params": signed})
            answer = await ws.receive_json()
            assert (answer["id"], answer["status"], answer["result"]) == (2, 200, {"subscriptionId": 0})
            await sim.inject("ws_malformed", times=1)
            sim.hub.push_user(sim.venue.place(market_buy("spoiled"), sim.now_ms())[1])
            with pytest.raises(ValueError):
                json.loads(await ws.receive_str())  # the NEW report, cut in half
            following = json.loads(await ws.receive_str())
            assert following["subscriptionId"] == 0
            assert (following["event"]["x"], following["event"]["c"]) == ("TRADE", "spoiled")

    run(scenario)


def sim_rate_limits() -> list[dict[str, Any]]:
    return [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 2}]


def market_buy(cid: str) -> dict[str, str]:
    return {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01", "newClientOrderId": cid}


# --------------------------------------------------------------------- faults through ccxt


def test_authentication_errors() -> None:
    """A wrong secret or an unknown API key is AuthenticationError."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim, secret="wrong-secret") as ex:
            with pytest.raises(AuthenticationError, match="-1022"):
                await ex.fetch_balance()
            ex.apiKey = "unknown-key"
            with pytest.raises(AuthenticationError, match="-2015"):
                await ex.fetch_balance()

    run(scenario)


def test_http_faults_map_to_ccxt_errors() -> None:
    """5xx is ExchangeNotAvailable, 504 RequestTimeout, 429/418 DDoSProtection, and a path filter spares other paths."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            for fault, params, error in [
                ("http_error", {}, ExchangeNotAvailable),
                ("http_error", {"status": 502}, ExchangeNotAvailable),
                ("http_error", {"status": 504}, RequestTimeout),
                ("rate_limit", {}, DDoSProtection),
                ("rate_limit", {"status": 418}, DDoSProtection),
            ]:
                await sim.inject(fault, **params)
                with pytest.raises(error):
                    await ex.fetch_balance()
            assert (await ex.fetch_balance())["USDT"]["free"] == 100000.0  # each fault hit once
            await sim.inject("http_error", path="/account$", seconds=5)
            assert await ex.fetch_open_orders() == []
            with pytest.raises(ExchangeNotAvailable):
                await ex.fetch_balance()
            with pytest.raises(ExchangeNotAvailable):
                await ex.fetch_balance()

    run(scenario)


def test_slow_response_is_request_timeout_and_still_executes() -> None:
    """A reply slower than ccxt's timeout is RequestTimeout, yet the delayed order is executed."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim, timeout_ms=300) as ex:
            await sim.inject("delay", ms=800, path="/order$")
            with pytest.raises(RequestTimeout):
                await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "slow"})
            await until(lambda: "slow" in sim.state()["orders"])
            assert (await ex.fetch_order("", BTC, by_cid("slow")))["status"] == "open"

    run(scenario)


def test_lost_response_order_exists() -> None:
    """When the reply to POST order is lost create_order raises a NetworkError, but fetch_order finds the order."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await sim.inject("lost_response")
            with pytest.raises(ExchangeNotAvailable):
                await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "lost-1"})
            found = await ex.fetch_order("", BTC, by_cid("lost-1"))
            assert (found["clientOrderId"], found["status"]) == ("lost-1", "open")
            with pytest.raises(InvalidOrder):  # re-sending the same client id is safe: it is refused
                await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "lost-1"})

    run(scenario)


def test_tcp_reset_is_network_error() -> None:
    """Resets on every attempt surface as ExchangeNotAvailable (aiohttp retries a GET once by itself)."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await sim.inject("reset", times=2)
            with pytest.raises(ExchangeNotAvailable):
                await ex.fetch_balance()
            assert sim.request_counts["GET", "/api/v3/account"] == 2
            assert (await ex.fetch_balance())["BTC"]["free"] == 1.0

    run(scenario)


def test_clock_skew_is_invalid_nonce() -> None:
    """A server clock 10 s behind or ahead of the client's timestamps is InvalidNonce (-1021)."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            for skew in (-10_000, 10_000):
                await sim.inject("clock_skew", ms=skew)
                with pytest.raises(InvalidNonce):
                    await ex.fetch_balance()
                assert await ex.fetch_time() == pytest.approx(time.time() * 1000 + skew, abs=2000)
            await sim.inject("clear")
            assert (await ex.fetch_balance())["BTC"]["free"] == 1.0

    run(scenario)


def test_malformed_http_bodies() -> None:
    """malformed answers HTTP 200 with an HTML page, cut JSON or nothing, after executing the request."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with aiohttp.ClientSession() as session:
            for kind in ("html", "json", "empty"):
                await sim.inject("malformed", kind=kind)
                async with session.get(sim.http_url + "/api/v3/time") as response:
                    assert response.status == 200
                    with pytest.raises(ValueError):
                        json.loads(await response.text())
            async with session.get(sim.http_url + "/api/v3/time") as response:
                assert abs((await response.json())["serverTime"] - sim.now_ms()) < 2000

    run(scenario)


# --------------------------------------------------------------------- public data, admin, CLI


def test_public_streams_follow_the_feed() -> None:
    """With the feed running, watch_trades and watch_ticker follow the prices the matching engine uses."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            first = await watch_until(lambda: ex.watch_trades(BTC), lambda t: True)
            later = await watch_until(lambda: ex.watch_trades(BTC), lambda t: int(t["id"]) > int(first["id"]))
            assert later["symbol"] == BTC and later["amount"] == 1.0
            ticker = await asyncio.wait_for(ex.watch_ticker(BTC), 5)
            assert ticker["symbol"] == BTC and ticker["open"] == 30000.0
            assert ticker["low"] <= ticker["last"] <= ticker["high"]
            rest = await ex.fetch_ticker(BTC)
            assert rest["open"] == 30000.0 and rest["low"] <= rest["last"] <= rest["high"]
            async with aiohttp.ClientSession() as session:
                url = sim.ws_url + "/stream?streams=ethusdt@bookTicker/btcusdt@trade"
                async with session.ws_connect(url) as ws:
                    message = await asyncio.wait_for(ws.receive_json(), 5)
                    assert message["stream"] in ("ethusdt@bookTicker", "btcusdt@trade")
                    await ws.send_json({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 7})
                    await watch_raw(ws, lambda m: m.get("id") == 7 and m["error"]["code"] == 2)

    run(scenario, SimConfig(tick_interval_s=0.05))


async def watch_raw(ws: aiohttp.ClientWebSocketResponse, found: Callable[[dict[str, Any]], bool]) -> None:
    async with asyncio.timeout(5):
        while not found(await ws.receive_json()):
            pass


def test_admin_http_endpoints() -> None:
    """Faults, prices, the feed and the state can be driven over /__admin from another process."""

    async def scenario(sim: ExchangeSimulator) -> None:
        admin = sim.http_url + "/__admin"
        async with binance(sim) as ex, aiohttp.ClientSession() as http:
            async with http.post(admin + "/faults", json={"fault": "http_error", "times": 1}) as r:
                assert r.status == 200 and (await r.json())["faults"][0]["fault"] == "http_error"
            with pytest.raises(ExchangeNotAvailable):
                await ex.fetch_balance()
            async with http.post(admin + "/faults", json={"fault": "nope"}) as r:
                assert r.status == 400 and "unknown fault" in await r.text()
            async with http.post(admin + "/faults", json={"fault": "clock_skew", "ms": 500}) as r:
                assert r.status == 200
            async with http.get(admin + "/faults") as r:
                assert (await r.json())["skew_ms"] == 500
            async with http.delete(admin + "/faults") as r:
                assert r.status == 200 and sim.faults.skew_ms == 0
            await ex.create_order(BTC, "limit", "sell", 0.5, 31000, {"clientOrderId": "ask"})
            async with http.post(admin + "/price", json={"symbol": BTC, "price": "31000.00"}) as r:
                assert (await r.json())["last_prices"][BTC] == "31000.00"
            async with http.post(admin + "/feed", json={"paused": True}) as r:
                assert (await r.json())["feed_paused"] is True
            async with http.get(admin + "/state") as r:
                state = await r.json()
            balance = await ex.fetch_balance()
            assert state["orders"]["ask"]["status"] == "closed" and state["open_orders"] == []
            assert float(state["balances"]["BTC"]["free"]) == balance["BTC"]["free"] == 0.5
            assert float(state["balances"]["USDT"]["free"]) == balance["USDT"]["free"]

    run(scenario)


def test_cli_prints_urls_and_stops_on_sigterm() -> None:
    """``python -m s1mpled.exchange_sim --port 0 --seed 1`` prints its URLs as JSON, serves, and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "s1mpled.exchange_sim", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert urls["rest"].startswith("http://127.0.0.1:") and urls["ws_api"].endswith("/ws-api/v3")

        async def ping() -> Any:
            async with aiohttp.ClientSession() as session, session.get(urls["rest"] + "/time") as response:
                return await response.json()

        assert "serverTime" in asyncio.run(ping())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------- pure parts


CREDS = Credentials("key", "secret")


@given(st.decimals(min_value=0, max_value=D("1e12"), places=12, allow_nan=False, allow_infinity=False))
def test_fmt_never_rounds(value: D) -> None:
    """Binance number formatting keeps the exact value and at least 8 decimals."""
    text = fmt(value)
    assert D(text) == value and len(text.split(".")[1]) >= 8


@given(st.dictionaries(st.sampled_from(["symbol", "side", "quantity", "price"]), st.text("ABC019.", min_size=1)))
def test_rest_signature_roundtrip(extra: dict[str, str]) -> None:
    """A request signed like ccxt signs it verifies; one changed byte in the payload does not."""
    query = "&".join(f"{k}={v}" for k, v in {**extra, "timestamp": str(NOW), "recvWindow": "5000"}.items())
    signed = f"{query}&signature={sign(query, 'secret')}"
    assert verify_rest(signed, "", "key", CREDS, NOW)["timestamp"] == str(NOW)
    assert verify_rest("", signed, "key", CREDS, NOW)["recvWindow"] == "5000"
    with pytest.raises(BinanceError) as bad:
        verify_rest(signed.replace("recvWindow=5000", "recvWindow=5001"), "", "key", CREDS, NOW)
    assert bad.value.code == -1022


def test_timestamp_and_key_checks() -> None:
    """recvWindow, the 1 s look-ahead, and missing or unknown keys give Binance's codes."""
    params = {"apiKey": "key", "timestamp": NOW, "recvWindow": 5000}

    def code(now: int, changes: dict[str, Any]) -> int | None:
        p = {**params, **changes}
        try:
            verify_ws({**p, "signature": sign(ws_payload(p), "secret")}, CREDS, now)
        except BinanceError as exc:
            return exc.code
        return None

    assert code(NOW + 5000, {}) is None
    assert code(NOW + 5001, {}) == -1021
    assert code(NOW - 1000, {}) == -1021
    assert code(NOW - 999, {}) is None
    assert code(NOW, {"recvWindow": 60001}) == -1131
    assert code(NOW, {"apiKey": "other"}) == -2015
    assert code(NOW, {"apiKey": ""}) == -2014
    with pytest.raises(BinanceError) as missing:
        verify_rest("timestamp=1", "", "key", CREDS, NOW)
    assert missing.value.code == -1102


def test_fault_plan_counts_and_windows() -> None:
    """HTTP faults hit only matching requests, as many times as asked or while their window lasts."""
    plan = FaultPlan()
    plan.add(parse_fault("lost_response", {}), NOW)
    plan.add(parse_fault("http_error", {"times": 2, "method": "GET"}), NOW)
    plan.add(parse_fault("delay", {"ms": 50, "seconds": 1}), NOW)
    assert plan.http("POST", "/api/v3/order", NOW).after == "lost"
    assert plan.http("POST", "/api/v3/order", NOW).after is None
    assert [plan.http("GET", "/api/v3/account", NOW).before for _ in range(3)] == ["error", "error", None]
    assert plan.http("GET", "/api/v3/time", NOW + 999).delay_ms == 50
    assert plan.http("GET", "/api/v3/time", NOW + 1000).delay_ms == 0
    plan.add(parse_fault("ws_stall", {"seconds": 0.5}), NOW)
    assert plan.ws_stalled(NOW + 499) and not plan.ws_stalled(NOW + 500)
    plan.add(parse_fault("ws_malformed", {"times": 1, "stream": "public"}), NOW)
    assert [plan.ws_garble("user"), plan.ws_garble("public"), plan.ws_garble("public")] == [False, True, False]
    plan.add(parse_fault("clock_skew", {"ms": -300}), NOW)
    plan.clear()
    assert plan.skew_ms == 0 and plan.describe(NOW) == []
    for name, params in [("nope", {}), ("http_error", {"status": 404}), ("delay", {}), ("ws_stall", {"x": 1})]:
        with pytest.raises(ValueError):
            parse_fault(name, params)


def test_venue_rejections_carry_binance_codes() -> None:
    """Parameter and filter errors carry the codes ccxt maps (-1121, -1102, -1013, -1116, -2013, -2011)."""
    venue = Venue(PAUSED, NOW)
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"}
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: venue.place({**base, "symbol": "NOPE", "price": "1"}, NOW), -1121),
        (lambda: venue.place(base, NOW), -1102),
        (lambda: venue.place({**base, "price": "20000.001"}, NOW), -1013),
        (lambda: venue.place({**base, "price": "20000", "quantity": "0.000001"}, NOW), -1013),
        (lambda: venue.place({**base, "price": "2e4"}, NOW), -1100),
        (lambda: venue.place({**base, "type": "STOP_LOSS", "price": "1"}, NOW), -1116),
        (lambda: venue.get_order({"symbol": "BTCUSDT", "orderId": "9"}), -2013),
        (lambda: venue.cancel({"symbol": "BTCUSDT", "origClientOrderId": "x"}, NOW), -2011),
        (lambda: venue.my_trades({}), -1102),
    ]
    for call, expected in cases:
        with pytest.raises(BinanceError) as err:
            call()
        assert err.value.code == expected
    answer, events = venue.place({**base, "price": "30000.00", "newClientOrderId": "cross"}, NOW)
    assert answer["status"] == "FILLED" and [e.get("x") for e in events] == ["NEW", "TRADE", None]
    assert events[1]["m"] is False and events[2]["e"] == "outboundAccountPosition"
