"""LiveEnvironment: a real exchange through ccxt (async ``ccxt.pro``), Binance spot first.

This is the only module that imports ccxt, and it does so lazily, so paper mode never pays for it.
Its jobs are translation and supervision, nothing else:

- every ccxt call and every ``watch_*`` runs under a timeout; ccxt exceptions are classified here, once,
  into ExchangeUnavailable (transient: the outcome of a write is *unknown*) or ExchangeRejected (final);
  a garbled response is ExchangeUnavailable too, because an order request that got garbage back may
  still have been executed;
- the two streams (public market data: the spec's DataSource; private user stream: our fills) are each
  supervised by a :class:`~s1mpled.connection.Link`: heartbeat, full-jitter backoff, CONNECTION_LOST
  after N failed attempts, CONNECTION_RESTORED on recovery (which triggers a reconciliation, since ccxt
  does not replay what was sent while disconnected);
- REST trades carry no client order id on Binance: the environment remembers exchange id -> client id
  from every order it sees and asks for an unknown one once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from s1mpled.config import LiveConfig
from s1mpled.connection import Backoff, Link
from s1mpled.credentials import Credentials
from s1mpled.environments.base import ExecutionEnvironment, UserStreamEvent
from s1mpled.environments.ccxt_parse import (
    decimal_of,
    parse_balances,
    parse_fill,
    parse_order,
    parse_order_leniently,
)
from s1mpled.errors import (
    ConfigError,
    ExchangeError,
    ExchangeRejected,
    ExchangeUnavailable,
    LocalStateError,
    RemoteStateError,
)
from s1mpled.events import Event
from s1mpled.model import Balance, ExchangeOrder, Fill, MarketTick, OrderRequest, OrderType, UnparsedOrder
from s1mpled.orders import parse_client_order_id
from s1mpled.strategies.base import MarketRules

__all__ = ["LiveEnvironment", "ccxt_urls", "classify"]

log = logging.getLogger("s1mpled.environments.live")
Publish = Callable[[Event], Awaitable[None]]
CLIENT_IDS_KEPT = 100_000  # older ones are asked for again (one request) if a REST trade names them
_DAY_MS = 86_400_000  # Binance's widest myTrades time window


def _trade_number(raw: Any) -> int:
    """A REST trade's id as the integer Binance pages by; garbage is an unavailable answer."""
    value = raw.get("id") if isinstance(raw, dict) else None
    text = str(value)
    if not text.isascii() or not text.isdigit():
        raise ExchangeUnavailable(f"fetch trades: a trade without an integer id ({value!r})")
    return int(text)


def ccxt_urls(urls: Mapping[str, str]) -> dict[str, Any] | None:
    """Endpoint overrides (testnets, the loopback simulator) as ccxt's binance ``urls['api']``.

    Every endpoint family is pointed at the override, so none can silently reach the real exchange.
    """
    if not urls:
        return None
    http, ws = urls.get("http"), urls.get("ws")
    if not http or not ws:
        raise ConfigError("<config>", "live.urls", "needs both 'http' and 'ws' base URLs (or neither)")
    return {
        "public": f"{http}/api/v3",
        "private": f"{http}/api/v3",
        "v1": f"{http}/api/v1",
        "ws": {"spot": f"{ws}/stream/ws", "ws-api": {"spot": f"{ws}/ws-api/v3"}},
    }


def classify(exc: BaseException, what: str) -> ExchangeError:
    """One place that maps ccxt's exception tree onto ours (ccxt is imported: we only get here live)."""
    import ccxt  # noqa: PLC0415 -- live mode only

    message = f"{what}: {type(exc).__name__}: {exc}"
    final = (
        ccxt.AuthenticationError,
        ccxt.PermissionDenied,
        ccxt.AccountSuspended,
        ccxt.InsufficientFunds,
        ccxt.InvalidOrder,
        ccxt.OrderNotFound,
        ccxt.BadSymbol,
        ccxt.BadRequest,
    )
    if isinstance(exc, final):
        return ExchangeRejected(message)
    return ExchangeUnavailable(message)  # network, 5xx, 429, timeouts, garbage: outcome unknown


class LiveEnvironment(ExecutionEnvironment):
    """Orders and truth from a real (or simulated, on loopback) exchange through ccxt."""

    name = "live"
    RECV_WINDOW_MS = 5000  # Binance refuses a signed request older than this: it bounds "in flight"
    in_flight_ms = RECV_WINDOW_MS + 2000  # plus clock-skew margin

    def __init__(
        self,
        config: LiveConfig,
        credentials: Credentials,
        publish: Publish,
        *,
        max_failures: int,
        request_timeout_s: float = 10.0,
        heartbeat_s: float = 30.0,
        backoff: Backoff | None = None,
        rate_limit: bool = True,
    ) -> None:
        self._config, self._credentials, self._publish = config, credentials, publish
        self._timeout_s, self._heartbeat_s = request_timeout_s, heartbeat_s
        self._backoff = backoff or Backoff()
        self._max_failures = max_failures
        self._rate_limit = rate_limit
        self._ex: Any = None
        self._client_ids: dict[str, str] = {}  # exchange order id -> client order id (newest CLIENT_IDS_KEPT)
        self._rng = random.Random()
        self._closed = False
        self.links: dict[str, Link] = {}

    # -- lifecycle --

    async def start(self) -> None:
        """Create the client, load markets once, and prove the API key works (else a config error: exit 78)."""
        import ccxt.pro  # noqa: PLC0415 -- ~0.6 s and ~100 MiB, paid only in live mode

        cls = getattr(ccxt.pro, self._config.exchange, None)
        if cls is None:
            raise ConfigError("<config>", "live.exchange", f"ccxt.pro has no exchange {self._config.exchange!r}")
        self._ex = cls(
            {
                "apiKey": self._credentials.api_key,
                "secret": self._credentials.secret,
                "enableRateLimit": self._rate_limit,
                "timeout": int(self._timeout_s * 1000),
                "options": {
                    "defaultType": "spot",
                    "fetchMarkets": {"types": ["spot"]},
                    "fetchCurrencies": False,
                    "fetchMargins": False,
                    "adjustForTimeDifference": False,
                    "recvWindow": self.RECV_WINDOW_MS,
                    "fetchOpenOrders": {"warnWithoutSymbol": False},
                    "warnOnFetchOpenOrdersWithoutSymbol": False,
                },
            }
        )
        urls = ccxt_urls(self._config.urls)
        if urls is not None:
            self._ex.urls["api"] = urls
        await self._call(self._ex.load_markets(), "load markets")
        try:
            await self.get_balances()
        except ExchangeRejected as exc:
            raise ConfigError(
                self._config.credentials, "api_key", f"the exchange refused the API key ({exc})"
            ) from None

    async def close(self) -> None:
        if self._ex is not None and not self._closed:
            self._closed = True
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._ex.close()
            except Exception as exc:  # closing is best effort; the process may be exiting
                log.warning("closing the exchange client: %s", exc)

    @property
    def exchange(self) -> Any:
        if self._ex is None:
            raise LocalStateError("live environment used before start()")
        return self._ex

    async def _call(self, awaitable: Awaitable[Any], what: str, timeout_s: float | None = None) -> Any:
        """Run one ccxt call under a deadline; classify whatever goes wrong.

        ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11 ``wait_for`` can swallow a
        cancellation that races with completion, which would keep a stopping daemon alive.
        """
        try:
            async with asyncio.timeout(timeout_s or self._timeout_s):
                return await awaitable
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise ExchangeUnavailable(f"{what}: no answer within {timeout_s or self._timeout_s:.0f} s") from None
        except Exception as exc:  # ccxt's tree, aiohttp, or ccxt choking on garbage (KeyError, AttributeError)
            raise classify(exc, what) from exc

    # -- rules and translation --

    def market_rules(self, symbol: str) -> MarketRules:
        market = self.exchange.markets.get(symbol)
        if market is None:
            raise ConfigError("<config>", "strategies.symbol", f"the exchange has no market {symbol}")
        precision, limits = market.get("precision", {}), market.get("limits", {}).get("amount", {})
        amount_step = decimal_of(precision.get("amount"), f"{symbol} amount precision")
        return MarketRules(
            decimal_of(precision.get("price"), f"{symbol} price precision"),
            amount_step,
            decimal_of(limits.get("min") or amount_step, f"{symbol} min amount"),
        )

    def _order(self, raw: object) -> ExchangeOrder:
        return self._remember(parse_order(raw))

    def _remember(self, order: ExchangeOrder) -> ExchangeOrder:
        self._client_ids[order.exchange_order_id] = order.client_order_id
        if len(self._client_ids) > CLIENT_IDS_KEPT:  # a day-long run must not grow without bound
            del self._client_ids[next(iter(self._client_ids))]
        return order

    # -- the REST surface (pull) --

    async def get_open_orders(self) -> list[ExchangeOrder | UnparsedOrder]:
        """One request for every symbol; an order that does not parse is kept as an UnparsedOrder."""
        raw = await self._call(self.exchange.fetch_open_orders(), "fetch open orders")
        if not isinstance(raw, list):
            raise ExchangeUnavailable("fetch open orders: the exchange did not send a list")
        out: list[ExchangeOrder | UnparsedOrder] = []
        for item in raw:
            parsed = parse_order_leniently(item)
            out.append(self._remember(parsed) if isinstance(parsed, ExchangeOrder) else parsed)
        return out

    async def get_balances(self) -> dict[str, Balance]:
        raw = await self._call(self.exchange.fetch_balance(), "fetch balance")
        try:
            return parse_balances(raw)
        except RemoteStateError as exc:
            raise ExchangeUnavailable(f"fetch balance: {exc}") from None

    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        price = None if request.type is OrderType.MARKET else request.price
        raw = await self._call(
            self.exchange.create_order(
                request.symbol,
                str(request.type),
                str(request.side),
                str(request.amount),
                None if price is None else str(price),
                {"newClientOrderId": request.client_order_id},
            ),
            f"create order {request.client_order_id}",
        )
        try:
            return self._order(raw)
        except RemoteStateError as exc:  # it was sent and answered: it exists, the answer is garbled
            raise ExchangeUnavailable(f"create order {request.client_order_id}: {exc}") from None

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        raw = await self._call(
            self.exchange.cancel_order("", symbol, {"origClientOrderId": client_order_id}),
            f"cancel order {client_order_id}",
        )
        if isinstance(raw, dict) and isinstance(raw.get("info"), dict):
            original = raw["info"].get("origClientOrderId")  # the cancel's own id is in clientOrderId
            if isinstance(original, str):
                raw = {**raw, "clientOrderId": original}
        return self._order(raw)

    async def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        import ccxt  # noqa: PLC0415 -- live mode only

        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self.exchange.fetch_order("", symbol, {"origClientOrderId": client_order_id})
        except ccxt.OrderNotFound:
            return None
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise ExchangeUnavailable(f"fetch order {client_order_id}: no answer") from None
        except Exception as exc:
            raise classify(exc, f"fetch order {client_order_id}") from exc
        return self._order(raw)

    async def _client_id_of(self, symbol: str, order_id: str) -> str:
        """REST trades name the exchange's order id only; ask for the order once to learn its client id.
        An order that does not parse keeps a made-up foreign id: someone else's odd order is not ours."""
        if order_id not in self._client_ids:
            raw = await self._call(self.exchange.fetch_order(order_id, symbol), f"fetch order id {order_id}")
            parsed = parse_order_leniently(raw)
            if isinstance(parsed, ExchangeOrder):
                self._remember(parsed)
            else:
                self._client_ids[order_id] = parsed.client_order_id or f"unreadable-order-{order_id}"
        return self._client_ids[order_id]

    async def fetch_trades(self, symbol: str, after_trade_id: str | None, since_ms: int = 0) -> list[Fill]:
        """Every trade on ``symbol`` after the cursor (or since ``since_ms``), through every page.

        Binance pages by ``fromId`` (ids >= it, oldest first, at most 1,000) and allows time windows of
        at most 24 h; without either it returns only the newest trades, which would skip older ones. So
        without a cursor we walk 24 h windows forward from ``since_ms`` until the first trade, then page
        by id until a page is short.
        """
        if after_trade_id is not None:
            return await self._trades_from_id(symbol, int(after_trade_id) + 1)
        start, now = since_ms, int(time.time() * 1000)
        while start <= now:
            window = {"endTime": start + _DAY_MS - 1}
            raw = await self._my_trades(symbol, start, window)
            if raw:
                return await self._trades_from_id(symbol, min(_trade_number(t) for t in raw))
            start += _DAY_MS
        return []

    async def _my_trades(self, symbol: str, since: int | None, params: dict[str, Any]) -> list[Any]:
        raw = await self._call(self.exchange.fetch_my_trades(symbol, since, 1000, params), f"fetch trades {symbol}")
        if not isinstance(raw, list):
            raise ExchangeUnavailable(f"fetch trades {symbol}: the exchange did not send a list")
        return raw

    async def _trades_from_id(self, symbol: str, from_id: int) -> list[Fill]:
        fills: list[Fill] = []
        while True:
            raw = await self._my_trades(symbol, None, {"fromId": from_id})
            for t in raw:
                fill = await self._fill_of(symbol, t)
                if fill is not None:
                    fills.append(fill)
            if len(raw) < 1000:
                return fills
            from_id = max(_trade_number(t) for t in raw) + 1

    async def _fill_of(self, symbol: str, raw: Any) -> Fill | None:
        """One REST trade; a foreign trade that does not parse is logged once and skipped (not ours to book),
        one of ours that does not parse fails the pass (a fill must never be guessed)."""
        order_id = str(raw.get("order")) if isinstance(raw, dict) else "?"
        cid = await self._client_id_of(symbol, order_id)
        try:
            return parse_fill(raw, cid)
        except RemoteStateError as exc:
            if parse_client_order_id(cid) is not None:
                raise ExchangeUnavailable(f"fetch trades {symbol}: {exc}") from None
            log.warning("ignored an unreadable foreign trade: %s", exc, extra={"EVENT": "BAD_EXCHANGE_MESSAGE"})
            return None

    # -- the streams (push), each supervised by a Link --

    def _link(self, name: str) -> Link:
        if name not in self.links:
            self.links[name] = Link(name, self._max_failures, self._heartbeat_s, self._backoff)
        return self.links[name]

    async def _drop_ws_clients(self, family: str) -> None:
        """Close and forget this stream family's WS connections (ccxt can keep a wedged one).

        Only the failing family's: closing a shared client cancels the other streams' pending watches.
        """
        for url, client in list(getattr(self.exchange, "clients", {}).items()):
            if family not in url:
                continue
            try:
                async with asyncio.timeout(2):
                    await client.close()
            except Exception as exc:  # best effort on a broken socket
                log.debug("closing ws client %s: %s", url, exc)
            self.exchange.clients.pop(url, None)

    async def _attempt(self, watch: Callable[[], Awaitable[list[Any]]], quiet_ok: bool) -> tuple[list[Any], str | None]:
        """One watch under the heartbeat deadline: (batch, None) or ([], why it failed)."""
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(self._heartbeat_s):  # not wait_for: it can swallow a cancel
                return list(await watch()), None
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise
            return [], "its connection was closed under it"  # ccxt cancelled our watch, nobody cancelled us
        except TimeoutError:
            return [], None if quiet_ok else f"no data for {self._heartbeat_s:.0f} s"
        except Exception as exc:  # ccxt / network errors
            return [], f"{exc!r}"

    async def _supervised(
        self, name: str, family: str, watch: Callable[[], Awaitable[list[Any]]], *, quiet_ok: bool
    ) -> AsyncIterator[list[Any]]:
        """Yield batches from ``watch`` forever; reconnect with backoff, publish LOST/RESTORED.

        ``quiet_ok``: silence is normal (a private stream of an idle account). ccxt's own pings detect a
        dead connection there, so a watch that merely times out proves the connection is up.
        """
        link = self._link(name)
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a library swallowed our cancellation: honour it anyway
            delay = link.next_delay(self._rng)
            if delay:
                await asyncio.sleep(delay)
            batch, failure = await self._attempt(watch, quiet_ok)
            if failure is not None:
                log.warning("%s stream failed (%s); reconnecting", name, failure, extra={"EVENT": "STREAM_FAILED"})
                for event in link.on_failure(failure):
                    await self._publish(event)
                await self._drop_ws_clients(family)
                continue
            now = time.monotonic()
            if not link.connected:
                for event in link.on_connected(now):
                    await self._publish(event)
            link.on_data(now)
            if batch:
                yield batch

    async def market_data(self, symbols: tuple[str, ...]) -> AsyncIterator[MarketTick]:
        async for batch in self._supervised("market", "/stream", lambda: self._watch_tickers(symbols), quiet_ok=False):
            for tick in batch:
                yield tick

    async def _watch_tickers(self, symbols: tuple[str, ...]) -> list[MarketTick]:
        raw = await self.exchange.watch_tickers(list(symbols))
        ticks = []
        for symbol, t in (raw or {}).items():
            last = t.get("last") if isinstance(t, dict) else None
            if symbol in symbols and last is not None:
                ts = t.get("timestamp") if isinstance(t.get("timestamp"), int) else int(time.time() * 1000)
                ticks.append(MarketTick(symbol, decimal_of(last, f"{symbol} last price"), ts))
        return ticks

    async def start_user_data_stream(self) -> AsyncIterator[UserStreamEvent]:
        """Our fills (watch_my_trades) and order updates (watch_orders), merged, each stream supervised."""
        queue: asyncio.Queue[UserStreamEvent] = asyncio.Queue()

        async def pump(name: str, watch: Callable[[], Awaitable[list[Any]]]) -> None:
            async for batch in self._supervised(name, "/ws-api", watch, quiet_ok=True):
                for item in batch:
                    queue.put_nowait(item)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pump("user-trades", self._watch_trades))
            tg.create_task(pump("user-orders", self._watch_orders))
            while True:
                yield await queue.get()

    async def _watch_trades(self) -> list[UserStreamEvent]:
        out: list[UserStreamEvent] = []
        for t in await self.exchange.watch_my_trades() or []:
            try:
                out.append(parse_fill(t))
            except RemoteStateError as exc:  # garbage from the exchange: logged and survived
                log.error("ignored a malformed trade: %s", exc, extra={"EVENT": "BAD_STREAM_MESSAGE"})
        return out

    async def _watch_orders(self) -> list[UserStreamEvent]:
        out: list[UserStreamEvent] = []
        for o in await self.exchange.watch_orders() or []:
            try:
                out.append(self._order(o))
            except RemoteStateError as exc:
                log.error("ignored a malformed order update: %s", exc, extra={"EVENT": "BAD_STREAM_MESSAGE"})
        return out
