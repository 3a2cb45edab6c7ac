"""The live environment (the real ccxt) against the simulator where it is as hard as Binance: trade histories
longer than one page, statuses ccxt does not map, orders that do not parse, fees in BNB. In-process: one
simulator, one LiveEnvironment, no daemon (the daemon's end-to-end runs are in test_live_daemon.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal as D
from typing import TypeVar

from s1mpled.config import LiveConfig
from s1mpled.connection import Backoff
from s1mpled.credentials import Credentials
from s1mpled.environments.live import LiveEnvironment
from s1mpled.events import Event
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, OrderRequest, OrderType, Side, UnparsedOrder
from s1mpled.orders import client_order_id, order_prefix
from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSimulator, SimConfig

T = TypeVar("T")
BTC = "BTC/USDT"
OURS = order_prefix("live-truths", "s", "00aa00")


def run(main: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(bounded())


async def _ignore(event: Event) -> None:
    """Connection events are not under test here."""


@asynccontextmanager
async def live(config: SimConfig | None = None) -> AsyncIterator[tuple[ExchangeSimulator, LiveEnvironment]]:
    """A simulator with its feed paused (nothing moves unless the test moves it) and a started environment."""
    async with ExchangeSimulator(config or SimConfig(feed_paused=True)) as sim:
        env = LiveEnvironment(
            LiveConfig("binance", "test", {"http": sim.http_url, "ws": sim.ws_url}, rate_limit=False),
            Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET),
            _ignore,
            max_failures=3,
            backoff=Backoff(0.05, 0.2),
            rate_limit=False,
        )
        await env.start()
        try:
            yield sim, env
        finally:
            await env.close()


def test_catch_up_without_a_cursor_pages_through_every_trade() -> None:
    """Bug: without a trade cursor (fresh books, a strategy added on a traded symbol, a fallback) catch-up
    fetched only the newest 1,000 trades and skipped the older ones. Now it starts from the books' start
    time and pages forward by id until the history is exhausted: all 2,500 trades, oldest first."""

    async def main() -> None:
        async with live() as (sim, env):
            since = sim.now_ms() - 60_000
            cid = client_order_id(OURS, 1)
            await env.create_order(OrderRequest(cid, BTC, Side.BUY, OrderType.LIMIT, D("0.025"), D("29000")))
            sim.fill_in_pieces(cid, 2500)
            trades = await env.fetch_trades(BTC, None, since)
            assert len(trades) == 2500 and {t.client_order_id for t in trades} == {cid}
            ids = [int(t.trade_id) for t in trades]
            assert ids == sorted(ids) and len(set(ids)) == 2500
            assert sum((t.amount for t in trades), D(0)) == D("0.025")
            after = await env.fetch_trades(BTC, trades[1999].trade_id, since)
            assert [t.trade_id for t in after] == [t.trade_id for t in trades[2000:]]

    run(main)


def test_a_cursor_older_than_a_day_walks_the_windows_forward() -> None:
    """Binance allows myTrades windows of 24 h at most: books started days ago are caught up window by window."""

    async def main() -> None:
        async with live() as (sim, env):
            cid = client_order_id(OURS, 2)
            await env.create_order(OrderRequest(cid, BTC, Side.BUY, OrderType.LIMIT, D("0.001"), D("29000")))
            sim.fill(cid)
            trades = await env.fetch_trades(BTC, None, sim.now_ms() - 3 * 86_400_000)
            assert [t.client_order_id for t in trades] == [cid]

    run(main)


def test_foreign_orders_in_odd_statuses_never_fail_the_listing() -> None:
    """Bug: one foreign order in a status ccxt does not map (PENDING_NEW of an OTO leg placed by hand) made
    every open-orders listing fail -- every start exited 75. Now it is listed as UNKNOWN, with its word."""

    async def main() -> None:
        async with live() as (sim, env):
            sim.foreign_order(symbol=BTC, side="buy", amount="0.001", price="20000", status="PENDING_NEW")
            listing = await env.get_open_orders()
            odd = [o for o in listing if isinstance(o, ExchangeOrder) and o.status is ExchangeOrderStatus.UNKNOWN]
            assert [o.raw_status for o in odd] == ["PENDING_NEW"]
            assert not [o for o in listing if isinstance(o, UnparsedOrder)]

    run(main)


def test_our_order_in_a_status_from_the_future_is_unknown_not_an_error() -> None:
    """A status no one has heard of yet on our own order: the query answers UNKNOWN with the raw word."""

    async def main() -> None:
        async with live() as (sim, env):
            cid = client_order_id(OURS, 3)
            await env.create_order(OrderRequest(cid, BTC, Side.BUY, OrderType.LIMIT, D("0.001"), D("20000")))
            sim.set_order_status(cid, "AWAITING_SOMETHING_NEW")
            seen = await env.fetch_order(BTC, cid)
            assert seen is not None and (seen.status, seen.raw_status) == (
                ExchangeOrderStatus.UNKNOWN,
                "AWAITING_SOMETHING_NEW",
            )
            sim.set_order_status(cid, None)
            again = await env.fetch_order(BTC, cid)
            assert again is not None and again.status is ExchangeOrderStatus.OPEN

    run(main)
