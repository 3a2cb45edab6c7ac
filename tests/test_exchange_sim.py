"""The Binance-spot simulator, driven by the REAL ccxt (``ccxt.pro.binance``) plus a few raw clients.

Every scenario starts a simulator in-process on port 0 and bounds itself with ``asyncio.timeout``;
waiting is always on a condition with a deadline. Most scenarios pause the synthetic feed so that
prices move only when the test says so (``sim.set_price``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import ccxt.pro
import pytest
from ccxt.base.errors import (
    AuthenticationError,
    BadRequest,
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

from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSimulator, SimConfig, SimMarket
from s1mpled_sim.auth import BinanceError, Credentials, sign, verify_rest, verify_ws, ws_payload
from s1mpled_sim.faults import FaultPlan, parse_fault
from s1mpled_sim.venue import Venue
from s1mpled_sim.wire import fmt
from tests.live_harness import Simulator

BTC = "BTC/USDT"
PAUSED = SimConfig(feed_paused=True)
QUOTE_FEES = SimConfig(feed_paused=True, fee_model="quote")  # arithmetic below with every fee in quote
NOW = 1_700_000_000_000


def run(scenario: Callable[[ExchangeSimulator], Coroutine[Any, Any, None]], config: SimConfig = PAUSED) -> None:
    """Run one scenario against a fresh simulator; fail it if it takes more than 15 s."""

    async def main() -> None:
        async with asyncio.timeout(15), ExchangeSimulator(config) as sim:
            await scenario(sim)

    asyncio.run(main())


def binance(sim: ExchangeSimulator, secret: str | None = None, timeout_ms: int = 3000) -> Any:
    """A real ccxt.pro.binance pointed at the in-process simulator, markets loaded, closed afterwards."""
    return binance_at(sim.http_url, sim.ws_url, secret=secret or sim.config.api_secret, timeout_ms=timeout_ms)


@asynccontextmanager
async def binance_at(
    http: str, ws: str, *, secret: str = DEFAULT_API_SECRET, timeout_ms: int = 3000
) -> AsyncIterator[Any]:
    """A real ccxt.pro.binance pointed at a simulator's base URLs (another process's too)."""
    ex = ccxt.pro.binance(
        {
            "apiKey": DEFAULT_API_KEY,
            "secret": secret,
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
    ex.urls["api"] = {
        "public": http + "/api/v3",
        "private": http + "/api/v3",
        "v1": http + "/api/v1",
        "ws": {"spot": ws + "/stream/ws", "ws-api": {"spot": ws + "/ws-api/v3"}},
    }
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

    run(scenario, QUOTE_FEES)


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

    run(scenario, QUOTE_FEES)


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

    run(scenario, QUOTE_FEES)


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
    """``python -m s1mpled_sim --port 0 --seed 1`` prints its URLs as JSON, serves, and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "s1mpled_sim", "--port", "0", "--seed", "1"],
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
    plan.add(parse_fault("between_requests", {"after": 2, "times": 2, "method": "GET", "action": "fill"}), NOW)
    counted = [plan.answered(m, "/api/v3/account", NOW) for m in ("GET", "POST", "GET", "GET", "GET", "GET")]
    assert [[s.action for s in due] for due in counted] == [[], [], ["fill"], [], ["fill"], []]
    plan.add(parse_fault("ws_malformed", {"kind": "nan"}), NOW)
    trade = {"e": "executionReport", "x": "TRADE", "l": "1.0", "z": "1.0", "L": "5.0"}
    assert plan.ws_poison({**trade, "x": "NEW"}) is None
    assert plan.ws_poison(trade) == {**trade, "l": "NaN", "z": "NaN"} and plan.ws_poison(trade) is None
    plan.add(parse_fault("clock_skew", {"ms": -300}), NOW)
    plan.clear()
    assert plan.skew_ms == 0 and plan.describe(NOW) == []
    bad: list[tuple[str, dict[str, Any]]] = [
        ("nope", {}),
        ("http_error", {"status": 404}),
        ("delay", {}),
        ("ws_stall", {"x": 1}),
        ("ws_close", {"code": 1006}),
        ("ws_deafen", {"stream": "any", "seconds": 1}),
        ("ws_malformed", {"fields": ["z"]}),
        ("late_order", {"status": 429}),
        ("between_requests", {"after": 0, "action": "fill"}),
        ("between_requests", {"after": 1, "action": "withdraw", "asset": "BTC", "amount": "-1"}),
    ]
    for name, params in bad:
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


# --------------------------------------------------------------------- no kinder than Binance: user-stream faults


@asynccontextmanager
async def user_stream(sim: ExchangeSimulator) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A raw WS API connection with one user-data subscription (its answer already read)."""
    params: dict[str, Any] = {"apiKey": sim.config.api_key, "timestamp": sim.now_ms(), "recvWindow": 5000}
    signed = {**params, "signature": sign(ws_payload(params), sim.config.api_secret)}
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url + "/ws-api/v3") as ws:
        await ws.send_json({"id": 1, "method": "userDataStream.subscribe.signature", "params": signed})
        answer = await asyncio.wait_for(ws.receive_json(), 5)
        assert answer["status"] == 200, answer
        yield ws


async def next_event(ws: aiohttp.ClientWebSocketResponse, found: Callable[[dict[str, Any]], bool] = bool) -> Any:
    """The next pushed user event satisfying ``found`` (answers to requests are skipped); 5 s deadline."""
    async with asyncio.timeout(5):
        while True:
            message = await ws.receive_json()
            if "event" in message and found(message["event"]):
                return message["event"]


def test_ws_malformed_nan_poisons_the_fill_frame_of_a_real_fill() -> None:
    """kind=nan: the fill report is valid JSON with "NaN" quantities; REST shows the fill exactly; one frame only."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as ws:
            ccxt_trades = asyncio.create_task(ex.watch_my_trades())
            await until(lambda: sim.hub.counts()["user"] == 2)
            await sim.inject("ws_malformed", kind="nan")
            order = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "poisoned"})
            new = json.loads(await ws.receive_str())["event"]
            assert (new["x"], new["X"], new["z"]) == ("NEW", "NEW", "0.00000000")  # only fill reports are poisoned
            trade = json.loads(await ws.receive_str())["event"]  # parses: syntactically valid
            assert (trade["x"], trade["c"], trade["l"], trade["z"]) == ("TRADE", "poisoned", "NaN", "NaN")
            assert (trade["L"], trade["X"]) == ("30000.00000000", "FILLED")
            assert (await next_event(ws))["e"] == "outboundAccountPosition"
            assert math.isnan((await ccxt_trades)[0]["amount"])  # what ccxt makes of it
            (real,) = await ex.fetch_my_trades(BTC)
            assert (real["id"], real["order"], real["amount"]) == (str(trade["t"]), order["id"], 0.01)
            assert (await ex.fetch_order("", BTC, by_cid("poisoned")))["filled"] == 0.01
            await ex.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "clean"})
            clean = await next_event(ws, lambda e: e.get("x") == "TRADE")
            assert (clean["c"], clean["l"], clean["z"]) == ("clean", "0.01000000", "0.01000000")

    run(scenario)
    with pytest.raises(ValueError, match="stream must be 'user'"):
        parse_fault("ws_malformed", {"kind": "nan", "stream": "public"})
    assert parse_fault("ws_malformed", {"kind": "nan", "fields": ["L"]}).fields == ("L",)


def test_ws_close_sends_a_close_frame_per_stream_and_accepts_new_connections() -> None:
    """ws_close stream=user closes the WS API connections (code 1000: ccxt NetworkError), not the public ones."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with (
            binance(sim) as ex,
            aiohttp.ClientSession() as session,
            session.ws_connect(sim.ws_url + "/stream/ws/btcusdt@trade") as public,
        ):
            pending = asyncio.create_task(ex.watch_orders())
            await until(lambda: sim.hub.counts()["user"] == 1 and sim.hub.counts()["public"] == 1)
            await sim.inject("ws_close")
            with pytest.raises(NetworkError, match="closing code 1000"):
                await pending
            await until(lambda: sim.hub.counts()["ws_api"] == 0)
            sim.set_price(BTC, D("30000.01"))
            assert (await asyncio.wait_for(public.receive_json(), 5))["p"] == "30000.01000000"  # untouched
            resumed = asyncio.create_task(ex.watch_orders())
            await until(lambda: sim.hub.counts()["user"] == 1)
            await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "after-close"})
            assert [o["clientOrderId"] for o in await resumed] == ["after-close"]
            await sim.inject("ws_close", stream="public", code=1001)
            closing = await asyncio.wait_for(public.receive(), 5)
            assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            await until(lambda: sim.hub.counts()["public"] == 0)
            assert sim.hub.counts()["user"] == 1
            await sim.inject("ws_close", stream="any")
            await until(lambda: sim.hub.counts()["ws_api"] == 0)

    run(scenario)


def test_ws_deafen_loses_events_while_the_connection_still_answers() -> None:
    """ws_deafen: connections open at injection get no events for `seconds` (lost), yet answer requests;
    a connection opened afterwards hears everything; afterwards the deaf ones hear again."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as deaf:
            watch = asyncio.create_task(ex.watch_orders())
            await until(lambda: sim.hub.counts()["user"] == 2)
            await sim.inject("ws_deafen", stream="user", seconds=2)
            assert sim.hub.counts()["deaf"] == 2
            async with user_stream(sim) as fresh:
                await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "unheard"})
                assert (await next_event(fresh, lambda e: e.get("x") == "TRADE"))["c"] == "unheard"
                assert (await next_event(fresh))["e"] == "outboundAccountPosition"
            await deaf.send_json({"id": "p", "method": "ping", "params": {}})
            assert (await asyncio.wait_for(deaf.receive_json(), 5))["id"] == "p"  # no event was queued before it
            await deaf.send_json({"id": "s", "method": "session.subscriptions"})
            assert (await asyncio.wait_for(deaf.receive_json(), 5))["result"] == [{"subscriptionId": 0}]
            await until(lambda: sim.hub.counts()["deaf"] == 0)
            await ex.create_order(BTC, "market", "sell", 0.01, None, {"clientOrderId": "heard"})
            assert [o["clientOrderId"] for o in await watch] == ["heard"]  # "unheard" never reached ccxt
            assert (await next_event(deaf))["c"] == "heard"

    run(scenario)


# --------------------------------------------------------------------- funding exactly as configured


def test_admin_balance_deposits_and_withdraws_with_stream_events() -> None:
    """POST /__admin/balance moves free balance (balanceUpdate + outboundAccountPosition); never below zero."""

    async def scenario(sim: ExchangeSimulator) -> None:
        admin = sim.http_url + "/__admin/balance"
        async with binance(sim) as ex, user_stream(sim) as ws, aiohttp.ClientSession() as http:
            async with http.post(admin, json={"asset": "USDT", "delta": "-12.5"}) as r:
                assert r.status == 200 and (await r.json())["result"] == {
                    "asset": "USDT",
                    "free": "99987.5",
                    "used": "0",
                }
            assert await next_event(ws) == {"e": "balanceUpdate", "E": ANY, "a": "USDT", "d": "-12.50000000", "T": ANY}
            position = await next_event(ws)
            assert (position["e"], position["B"]) == (
                "outboundAccountPosition",
                [{"a": "USDT", "f": "99987.50000000", "l": "0.00000000"}],
            )
            await ex.create_order(BTC, "limit", "buy", 1, 29000, {"clientOrderId": "holds"})
            for body in ({"asset": "USDT", "delta": "-70988"}, {"asset": "USDT", "delta": "x"}, {"delta": "1"}):
                async with http.post(admin, json=body) as r:
                    assert r.status == 400, body
            async with http.post(admin, json={"asset": "EUR", "delta": 5}) as r:
                assert r.status == 200
            balance = await ex.fetch_balance()
            assert balance["USDT"] == {"free": 70987.5, "used": 29000.0, "total": 99987.5}
            assert balance["EUR"]["free"] == 5.0

    run(scenario, replace(PAUSED, fee_model="binance"))


def test_cli_balances_replace_the_defaults_and_the_harness_passes_fee_flags(tmp_path: Path) -> None:
    """--balance replaces the opening account (unnamed assets at 0); --bnb-fees pays the fee in BNB at bnb_price."""
    sim = Simulator(
        tmp_path / "sim.log", balances={"USDT": D("1000"), "BNB": D("0.5")}, fee_model="binance", bnb_fees=True
    )
    try:
        sim.pause_feed()
        assert sim.deposit("USDT", D("-12.5")) == {"asset": "USDT", "free": "987.5", "used": "0"}
        with pytest.raises(urllib.error.HTTPError) as refused:
            sim.deposit("USDT", D("-1000"))
        assert refused.value.code == 400

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            async with binance_at(sim.urls["http"], sim.urls["ws"]) as ex:
                before = await ex.fetch_balance()
                order = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "bnb-paid"})
                return before, order

        before, order = asyncio.run(scenario())
        assert {a: before[a]["total"] for a in ("USDT", "BNB", "BTC", "ETH")} == {
            "USDT": 987.5,
            "BNB": 0.5,
            "BTC": 0.0,
            "ETH": 0.0,
        }
        price = D(order["info"]["fills"][0]["price"])
        assert order["fee"] == {"currency": "BNB", "cost": float(price * D("0.01") * D("0.001") / 600)}
        balances = sim.state()["balances"]
        assert D(balances["BTC"]["free"]) == D("0.01")
        assert D(balances["BNB"]["free"]) == D("0.5") - price * D("0.01") * D("0.001") / 600
    finally:
        sim.stop()


# --------------------------------------------------------------------- commission per Binance's rules

BINANCE_FEES = SimConfig(feed_paused=True, fee_model="binance")


def test_binance_fee_model_on_every_wire() -> None:
    """A buy's fee is in BTC (reserving only price*amount USDT), a sell's in USDT: executionReport n/N,
    myTrades commission/commissionAsset and the FULL answer's fills all say so."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as ws:
            await ex.create_order(BTC, "limit", "buy", 0.5, 29000, {"clientOrderId": "base-fee"})
            assert (await ex.fetch_balance())["USDT"]["used"] == 14500.0
            sim.set_price(BTC, D("28999.00"))
            report = await next_event(ws, lambda e: e.get("x") == "TRADE")
            assert (report["n"], report["N"], report["l"]) == ("0.00050000", "BTC", "0.50000000")
            sell = await ex.create_order(BTC, "market", "sell", 0.1, None, {"clientOrderId": "quote-fee"})
            assert [(f["commission"], f["commissionAsset"]) for f in sell["info"]["fills"]] == [("2.89990000", "USDT")]
            trades = await ex.fetch_my_trades(BTC)
            assert [(t["info"]["commission"], t["info"]["commissionAsset"]) for t in trades] == [
                ("0.00050000", "BTC"),
                ("2.89990000", "USDT"),
            ]
            assert [t["fee"] for t in trades] == [
                {"cost": 0.0005, "currency": "BTC"},
                {"cost": 2.8999, "currency": "USDT"},
            ]
            balances = sim.state()["balances"]
            assert D(balances["BTC"]["free"]) == D(1) + D("0.5") - D("0.0005") - D("0.1")
            assert D(balances["USDT"]["free"]) == D(100000) - D(14500) + D("2899.9") - D("2.8999")

    run(scenario, BINANCE_FEES)


def test_bnb_fees_at_the_bnb_market_price_fall_back_when_bnb_runs_out() -> None:
    """bnb_fees: the fee's USDT value at BNB/USDT's last price, in BNB, while free BNB covers it; then base."""
    markets = (*SimConfig().markets, SimMarket("BNB/USDT", D("300.00"), D("0.0005"), D("100"), D("0.01"), D("0.001")))
    config = replace(BINANCE_FEES, markets=markets, bnb_fees=True, balances={"USDT": D(10000), "BNB": D("0.001")})

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as ws:
            first = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "in-bnb"})
            assert [(f["commission"], f["commissionAsset"]) for f in first["info"]["fills"]] == [("0.00100000", "BNB")]
            report = await next_event(ws, lambda e: e.get("x") == "TRADE")
            assert (report["n"], report["N"]) == ("0.00100000", "BNB")
            position = await next_event(ws)
            assert {b["a"]: b["f"] for b in position["B"]}["BNB"] == "0.00000000"
            second = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "in-base"})
            assert second["fee"] == {"currency": "BTC", "cost": 0.00001}
            assert [t["fee"]["currency"] for t in await ex.fetch_my_trades(BTC)] == ["BNB", "BTC"]
            assert (await ex.fetch_balance())["BTC"]["total"] == 0.01999

    run(scenario, config)


def test_quote_fee_model_is_the_paper_rule() -> None:
    """fee_model=quote: a limit buy reserves its fee in USDT and every fee is charged in USDT."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "q"})
            assert (await ex.fetch_balance())["USDT"]["used"] == pytest.approx(200.2)
            order = await ex.create_order(BTC, "market", "buy", 0.01, None, {"clientOrderId": "m"})
            assert order["fee"] == {"currency": "USDT", "cost": 0.3}

    run(scenario, replace(PAUSED, fee_model="quote"))


# --------------------------------------------------------------------- statuses ccxt does not all map


def test_pending_new_foreign_order_is_listed_but_never_matched() -> None:
    """A hand-placed PENDING_NEW order is listed (openOrders, GET order) as PENDING_NEW, reserves and fills nothing."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as ws, aiohttp.ClientSession() as http:
            leg = {"symbol": BTC, "side": "buy", "type": "limit", "amount": "0.5", "price": "29000.00"}
            async with http.post(
                sim.http_url + "/__admin/foreign_order",
                json={**leg, "client_order_id": "oto-leg", "status": "PENDING_NEW"},
            ) as r:
                assert r.status == 200 and (await r.json())["result"]["status"] == "PENDING_NEW"
            report = await next_event(ws)
            assert (report["x"], report["X"], report["c"]) == ("NEW", "PENDING_NEW", "oto-leg")
            listed = await ex.fetch_open_orders()
            assert [(o["clientOrderId"], o["status"], o["amount"]) for o in listed] == [("oto-leg", "PENDING_NEW", 0.5)]
            assert (await ex.fetch_order("", BTC, by_cid("oto-leg")))["status"] == "PENDING_NEW"
            assert (await ex.fetch_balance())["USDT"]["used"] == 0.0
            sim.set_price(BTC, D("28000.00"))
            assert sim.state()["trades"] == [] and sim.state()["open_orders"][0]["wire_status"] == "PENDING_NEW"
            with pytest.raises(ValueError, match="not matched"):
                sim.fill_in_pieces("oto-leg", 1)
            assert (await ex.cancel_order("", BTC, by_cid("oto-leg")))["status"] == "canceled"
            assert (await ex.fetch_order("", BTC, by_cid("oto-leg")))["status"] == "canceled"
            sim.foreign_order(**leg, client_order_id="web-new")  # status NEW (default): trades like any order
            sim.set_price(BTC, D("28000.00"))
            assert (await ex.fetch_order("", BTC, by_cid("web-new")))["status"] == "closed"
            async with http.post(sim.http_url + "/__admin/foreign_order", json={**leg, "status": "WEIRD"}) as r:
                assert r.status == 400

    run(scenario)


def test_ioc_and_fok_limit_orders_expire() -> None:
    """IOC fills what it can now and expires the rest; FOK fills completely or expires with nothing (EXPIRED)."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as ws:
            ioc = await ex.create_order(BTC, "limit", "buy", 2.5, 30000, {"clientOrderId": "ioc", "timeInForce": "IOC"})
            assert (ioc["status"], ioc["filled"], ioc["info"]["status"]) == ("expired", 1.0, "EXPIRED")
            reports = [await next_event(ws, lambda e: e.get("e") == "executionReport") for _ in range(3)]
            assert [(r["x"], r["X"], r["z"]) for r in reports] == [
                ("NEW", "NEW", "0.00000000"),
                ("TRADE", "PARTIALLY_FILLED", "1.00000000"),
                ("EXPIRED", "EXPIRED", "1.00000000"),
            ]
            fok = await ex.create_order(BTC, "limit", "buy", 2, 30000, {"clientOrderId": "fok", "timeInForce": "FOK"})
            assert (fok["status"], fok["filled"], fok["info"]["fills"]) == ("expired", 0.0, [])
            whole = await ex.create_order(
                BTC, "limit", "sell", 0.5, 30000, {"clientOrderId": "fok-ok", "timeInForce": "FOK"}
            )
            assert (whole["status"], whole["filled"]) == ("closed", 0.5)
            assert (await ex.fetch_order("", BTC, by_cid("ioc")))["status"] == "expired"
            assert await ex.fetch_open_orders() == [] and (await ex.fetch_balance())["USDT"]["used"] == 0.0
            assert [t["order"] for t in await ex.fetch_my_trades(BTC)] == [ioc["id"], whole["id"]]

    run(scenario)


def test_expired_in_match_and_partially_filled_then_canceled() -> None:
    """EXPIRED_IN_MATCH (ccxt: expired) and CANCELED after PARTIALLY_FILLED both keep what filled."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, user_stream(sim) as ws:
            for cid in ("stp", "part"):
                await ex.create_order(BTC, "limit", "buy", 1.5, 29000, {"clientOrderId": cid})
            sim.set_price(BTC, D("29000.00"))  # liquidity 1: each fills 1 of 1.5
            for cid in ("stp", "part"):
                half = await ex.fetch_order("", BTC, by_cid(cid))
                assert (half["status"], half["filled"], half["info"]["status"]) == ("open", 1.0, "PARTIALLY_FILLED")
            assert sim.expire_in_match("stp")["status"] == "EXPIRED_IN_MATCH"
            report = await next_event(ws, lambda e: e.get("x") == "TRADE_PREVENTION")
            assert (report["X"], report["z"], report["c"]) == ("EXPIRED_IN_MATCH", "1.00000000", "stp")
            stp = await ex.fetch_order("", BTC, by_cid("stp"))
            assert (stp["status"], stp["filled"], stp["info"]["status"]) == ("expired", 1.0, "EXPIRED_IN_MATCH")
            canceled = await ex.cancel_order("", BTC, by_cid("part"))
            assert (canceled["status"], canceled["filled"], canceled["info"]["status"]) == ("canceled", 1.0, "CANCELED")
            part = await ex.fetch_order("", BTC, by_cid("part"))
            assert (part["status"], part["filled"]) == ("canceled", 1.0)
            assert await ex.fetch_open_orders() == [] and (await ex.fetch_balance())["USDT"]["used"] == 0.0
            with pytest.raises(ValueError, match="no open order"):
                sim.expire_in_match("stp")

    run(scenario)


def test_order_status_override_reaches_rest_and_the_stream() -> None:
    """POST /__admin/order_status: REST and WS report the raw word (ccxt passes it through); null restores."""

    async def scenario(sim: ExchangeSimulator) -> None:
        admin = sim.http_url + "/__admin/order_status"
        async with binance(sim) as ex, user_stream(sim) as ws, aiohttp.ClientSession() as http:
            await ex.create_order(BTC, "limit", "buy", 0.5, 29000, {"clientOrderId": "future"})
            async with http.post(admin, json={"client_order_id": "future", "status": "AWAITING_MARS"}) as r:
                assert r.status == 200 and (await r.json())["result"]["wire_status"] == "AWAITING_MARS"
            assert (await ex.fetch_order("", BTC, by_cid("future")))["status"] == "AWAITING_MARS"
            assert [o["status"] for o in await ex.fetch_open_orders()] == ["AWAITING_MARS"]
            watch = asyncio.create_task(watch_until(ex.watch_orders, lambda o: o["clientOrderId"] == "future"))
            await until(lambda: sim.hub.counts()["user"] == 2)
            sim.set_price(BTC, D("29000.00"))
            assert (await watch)["status"] == "AWAITING_MARS"
            assert (await next_event(ws, lambda e: e.get("x") == "TRADE"))["X"] == "AWAITING_MARS"
            async with http.post(admin, json={"client_order_id": "future", "status": None}) as r:
                assert r.status == 200
            assert (await ex.fetch_order("", BTC, by_cid("future")))["status"] == "closed"
            for body in ({"client_order_id": "nope", "status": "X"}, {"client_order_id": "future"}):
                async with http.post(admin, json=body) as r:
                    assert r.status == 400

    run(scenario)


# --------------------------------------------------------------------- the account moving between requests


def test_between_requests_fills_the_oldest_s1_order_after_each_request() -> None:
    """after=1, times=2: openOrders is answered with every order open, then the oldest s1 order fills
    (events pushed), the balance shows it, then the next one fills; the foreign order is left alone."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            ids = {}
            for cid, amount, price in (("web-x", 0.01, 29500), ("s1-a", 0.01, 29000), ("s1-b", 0.02, 28000)):
                ids[cid] = (await ex.create_order(BTC, "limit", "buy", amount, price, {"clientOrderId": cid}))["id"]
            watch = asyncio.create_task(watch_until(ex.watch_my_trades, lambda t: True))
            await until(lambda: sim.hub.counts()["user"] == 1)
            await sim.inject("between_requests", after=1, times=2, action="fill")
            listed = await ex.fetch_open_orders()
            assert {o["clientOrderId"] for o in listed} == {"web-x", "s1-a", "s1-b"}
            assert (await ex.fetch_balance())["BTC"]["total"] == 1.00999  # s1-a filled (fee in BTC)
            trades = await ex.fetch_my_trades(BTC)  # s1-b filled right after the balance was answered
            assert [(t["order"], t["price"], t["amount"]) for t in trades] == [
                (ids["s1-a"], 29000.0, 0.01),
                (ids["s1-b"], 28000.0, 0.02),
            ]
            assert (await watch)["order"] == ids["s1-a"]
            assert [(f["action"], f["target"], f["done"]) for f in sim.faults.fired] == [
                ("fill", "s1-a", True),
                ("fill", "s1-b", True),
            ]
            assert [o["clientOrderId"] for o in await ex.fetch_open_orders()] == ["web-x"]  # times used up

    run(scenario, BINANCE_FEES)


def test_between_requests_filters_and_actions() -> None:
    """path/method decide what counts; cancel, sell_by_hand, deposit and withdraw act between two requests."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "s1-open"})
            await sim.inject("between_requests", after=1, path="/openOrders$", action="cancel")
            await sim.inject(
                "between_requests",
                after=1,
                path="/account$",
                method="GET",
                action="deposit",
                asset="USDT",
                amount="100",
            )
            await sim.inject(
                "between_requests", after=2, path="/myTrades$", action="sell_by_hand", symbol=BTC, amount="0.5"
            )
            await sim.inject("between_requests", after=1, path="/time$", action="withdraw", asset="BTC", amount="1000")
            assert await ex.fetch_my_trades(BTC) == []  # 1st myTrades: not yet
            assert [o["clientOrderId"] for o in await ex.fetch_open_orders()] == ["s1-open"]  # then canceled
            assert (await ex.fetch_balance())["USDT"]["free"] == 100000.0  # then +100
            assert await ex.fetch_my_trades(BTC) == []  # 2nd myTrades: then the hand sale
            await ex.fetch_time()  # then a withdrawal that cannot be made: nothing happens
            balance = await ex.fetch_balance()
            assert (balance["USDT"]["free"], balance["BTC"]["total"]) == (100100.0 + 15000 - 15, 0.5)
            assert (await ex.fetch_order("", BTC, by_cid("s1-open")))["status"] == "canceled"
            (sale,) = await ex.fetch_my_trades(BTC)
            assert (sale["side"], sale["amount"]) == ("sell", 0.5)
            assert sim.state()["trades"][0]["client_order_id"] == "web_manual_1"
            assert [(f["action"], f["target"], f["done"]) for f in sim.faults.fired] == [
                ("cancel", "s1-open", True),
                ("deposit", "USDT", True),
                ("sell_by_hand", "web_manual_1", True),
                ("withdraw", "BTC", False),
            ]

    run(scenario)
    for params in ({"action": "fill"}, {"after": 1, "action": "sell_by_hand"}, {"after": 1, "action": "deposit"}):
        with pytest.raises(ValueError):
            parse_fault("between_requests", params)


# --------------------------------------------------------------------- late execution


def test_late_order_is_refused_now_and_placed_later() -> None:
    """late_order: 503 now and no order; delay_ms later the order exists under the same client id, with its events."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            watch = asyncio.create_task(watch_until(ex.watch_orders, lambda o: o["clientOrderId"] == "late-1"))
            await until(lambda: sim.hub.counts()["user"] == 1)
            await sim.inject("late_order", delay_ms=1500)
            with pytest.raises(ExchangeNotAvailable):
                await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "late-1"})
            with pytest.raises(OrderNotFound):
                await ex.fetch_order("", BTC, by_cid("late-1"))
            assert (await watch)["status"] == "open"
            assert (await ex.fetch_order("", BTC, by_cid("late-1")))["price"] == 20000.0
            await sim.inject("late_order", method="DELETE", delay_ms=1000)
            with pytest.raises(ExchangeNotAvailable):
                await ex.cancel_order("", BTC, by_cid("late-1"))
            assert sim.state()["orders"]["late-1"]["status"] == "open"
            await until(lambda: sim.state()["orders"]["late-1"]["status"] == "canceled")

    run(scenario)


def test_late_order_timeout_mode_holds_the_answer() -> None:
    """mode=timeout: the client times out (RequestTimeout); the order is placed delay_ms later all the same."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim, timeout_ms=300) as ex:
            await sim.inject("late_order", mode="timeout", delay_ms=1500, hold_ms=2500)
            with pytest.raises(RequestTimeout):
                await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "late-2"})
            assert "late-2" not in sim.state()["orders"]
            await until(lambda: "late-2" in sim.state()["orders"])
            assert (await ex.fetch_order("", BTC, by_cid("late-2")))["status"] == "open"

    run(scenario)


def test_late_order_narrowed_to_a_symbol_and_side_spares_the_others() -> None:
    """symbol/side narrow late_order: an ETH buy and a BTC sell go through; the BTC buy is the late one, and the
    simulator's record says what became of it."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex:
            await sim.inject("late_order", symbol="BTC/USDT", side="buy", delay_ms=500)
            await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 1000, {"clientOrderId": "eth-buy"})
            await ex.create_order(BTC, "limit", "sell", 0.001, 90000, {"clientOrderId": "btc-sell"})
            with pytest.raises(ExchangeNotAvailable):
                await ex.create_order(BTC, "limit", "buy", 0.01, 20000, {"clientOrderId": "btc-buy"})
            assert {"eth-buy", "btc-sell"} <= set(sim.state()["orders"]) and "btc-buy" not in sim.state()["orders"]
            await until(lambda: "btc-buy" in sim.state()["orders"])
            assert sim.state()["late"] == [
                {"path": "/api/v3/order", "client_order_id": "btc-buy", "outcome": "executed"}
            ]

    run(scenario)


# --------------------------------------------------------------------- trade histories longer than a page


def test_fill_in_pieces_and_my_trades_paging_like_binance() -> None:
    """2,500 trades of one order: pages of 1,000 by fromId (oldest first), the latest 1,000 without it,
    startTime windows oldest first, and Binance's refusals of bad combinations."""

    async def scenario(sim: ExchangeSimulator) -> None:
        async with binance(sim) as ex, aiohttp.ClientSession() as http:
            start = sim.now_ms()
            sim.foreign_order(symbol="BTCUSDT", side="BUY", amount="0.25", price="29000.00", client_order_id="web-big")
            for pieces, status in ((30000, 400), (2500, 200)):
                body = {"client_order_id": "web-big", "pieces": pieces}
                async with http.post(sim.http_url + "/__admin/fill_in_pieces", json=body) as r:
                    assert r.status == status
            assert len(sim.state()["trades"]) == 2500
            latest = await ex.fetch_my_trades(BTC, None, 1000)
            assert sorted(int(t["id"]) for t in latest) == list(range(1501, 2501))
            pages: list[list[Any]] = []
            from_id = 1
            while page := await ex.fetch_my_trades(BTC, None, 1000, {"fromId": from_id}):
                pages.append(page)
                from_id = max(int(t["id"]) for t in page) + 1  # ccxt sorts equal times by id as TEXT: "1000" < "999"
            assert [len(p) for p in pages] == [1000, 1000, 500]
            assert sorted(int(t["id"]) for p in pages for t in p) == list(range(1, 2501))
            assert sum(D(t["info"]["qty"]) for p in pages for t in p) == D("0.25")
            since = await ex.fetch_my_trades(BTC, start, 1000)
            assert sorted(int(t["id"]) for t in since) == list(range(1, 1001))
            assert len(await ex.fetch_my_trades(BTC, start + 86_400_001, 1000)) == 0
            assert (await ex.fetch_order("", BTC, by_cid("web-big")))["status"] == "closed"
            with pytest.raises(BadRequest, match="-1128"):
                await ex.fetch_my_trades(BTC, start, 10, {"fromId": 5})
            with pytest.raises(BadRequest, match="-1127"):
                await ex.fetch_my_trades(BTC, start, 10, {"until": start + 86_400_001})

    run(scenario)
