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
- a stream is healthy when it is proven alive, not when it is quiet: the user stream counts as
  connected once the exchange *answered* its subscription (:meth:`stream_confirmed` lets startup wait
  for that), and while quiet it must pass :class:`~s1mpled.connection.Hearing`'s checks (our
  acknowledged orders reported; a cheap account look agreeing with it) or it is reconnected. A frame
  ccxt cannot digest, which would silently kill its receive loop, is logged once and reconnects too;
- REST trades carry no client order id on Binance: the environment remembers exchange id -> client id
  from every order it sees and asks for an unknown one once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from s1mpled.clock import exchange_offset_s, wall_ms
from s1mpled.config import LiveConfig
from s1mpled.connection import Backoff, Hearing, Holdings, Link
from s1mpled.credentials import Credentials
from s1mpled.environments.base import ExecutionEnvironment, Stream, UserStreamEvent
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
from s1mpled.events import Publish
from s1mpled.instruments import Instruments, StreamFacts, endpoint_of
from s1mpled.model import (
    Balance,
    ExchangeOrder,
    Fill,
    MarketTick,
    OrderRequest,
    OrderType,
    UnparsedOrder,
    trade_number,
    trade_order,
)
from s1mpled.orders import parse_client_order_id
from s1mpled.strategies.base import MarketRules

__all__ = ["LiveEnvironment", "ccxt_urls", "classify"]

log = logging.getLogger("s1mpled.environments.live")
CLIENT_IDS_KEPT = 100_000  # older ones are asked for again (one request) if a REST trade names them
_DAY_MS = 86_400_000  # Binance's widest myTrades time window
DEAF_GRACE_S = 10.0  # an acknowledged order must be on the user stream within this (or a heartbeat, if shorter)
# Fills and order updates between the two user watchers and the bus: never dropped. When it is full a watcher
# waits (the bus pushes back the same way) and ccxt keeps what arrives meanwhile in its own bounded caches;
# anything that falls out of those is caught up by reconciliation (a deaf stream is reconnected).
USER_QUEUE_SIZE = 1000
_WS_API, _PUBLIC = "/ws-api", "/stream"  # the two WebSocket families: the user stream, public market data
_USER_LINKS = ("user-trades", "user-orders")
_GUARDED = "_s1mpled_guarded"  # set on a ccxt WebSocket client once _guard wrapped it
_SUBSCRIBED = "_s1mpled_subscribed"  # set on the WS API client once the exchange answered the subscribe
_BALANCE_KEYS = frozenset({"info", "timestamp", "datetime", "free", "used", "total", "debt"})
Confirm = Callable[[], Awaitable[None]]


def _trade_number(raw: Any) -> int:
    """A REST trade's id as the integer Binance pages by; garbage is an unavailable answer."""
    value = raw.get("id") if isinstance(raw, dict) else None
    number = trade_number(str(value))
    if number is None:
        raise ExchangeUnavailable(f"fetch trades: a trade without an integer id ({value!r})")
    return number


def ccxt_urls(urls: Mapping[str, str]) -> dict[str, Any] | None:
    """Endpoint overrides (testnets, the loopback simulator) as ccxt's binance ``urls['api']``.

    Either one host for everything (``http`` and ``ws``: the simulator's layout, paths as on Binance)
    or one URL per family (``rest``, ``streams``, ``ws_api``: Binance's spot testnet serves them from
    three hosts). Every family is pointed at the override, so none can silently reach the real exchange.
    """
    if not urls:
        return None
    if urls.keys() == {"http", "ws"}:
        rest, streams, ws_api = urls["http"], f"{urls['ws']}/stream/ws", f"{urls['ws']}/ws-api/v3"
    elif urls.keys() == {"rest", "streams", "ws_api"}:
        rest, streams, ws_api = urls["rest"], urls["streams"], urls["ws_api"]
    else:  # the configuration refuses this already; a caller building URLs by hand gets the same answer
        why = f"needs 'http' and 'ws', or 'rest', 'streams' and 'ws_api' (or none), got {', '.join(sorted(urls))}"
        raise ConfigError("<config>", "live.urls", why)
    return {
        "public": f"{rest}/api/v3",
        "private": f"{rest}/api/v3",
        "v1": f"{rest}/api/v1",
        "sapi": f"{rest}/sapi/v1",  # system status, the key's permissions (s1mpled doctor)
        "ws": {"spot": streams, "ws-api": {"spot": ws_api}},
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
        instruments: Instruments | None = None,
    ) -> None:
        super().__init__(publish)  # the one road out: link events here, fills and prices via the run_* pumps
        self._config, self._credentials = config, credentials
        self._timeout_s, self._heartbeat_s = request_timeout_s, heartbeat_s
        self._backoff = backoff or Backoff()
        self._max_failures = max_failures
        self._rate_limit = rate_limit
        self._ex: Any = None
        self._client_ids: dict[str, str] = {}  # exchange order id -> client order id (newest CLIENT_IDS_KEPT)
        self._rng = random.Random()
        self._closed = False
        self.links: dict[str, Link] = {}
        self._hearing = Hearing(heartbeat_s, min(heartbeat_s, DEAF_GRACE_S))
        self._heard = 0  # batches the user stream delivered (a look is "clean" if none came during it)
        self._balance_record: Any = None
        self._balance_epoch = 0
        self._poisoned: dict[str, str] = {}  # stream family -> why its connections must be replaced
        self._confirmed: dict[Stream, asyncio.Event] = {"user": asyncio.Event(), "market": asyncio.Event()}
        self._wake = asyncio.Event()  # a subscription was answered
        self._instruments = instruments or Instruments("")
        self._last_message: dict[str, float] = {}  # stream -> when it last delivered a batch (monotonic)
        self._instruments.watch_streams(self.stream_facts)
        self._instruments.watch_clock(self.clock_offset_s)

    # -- lifecycle --

    async def start(self) -> None:
        """Create the client, load markets once, and prove the API key works (else a config error: exit 78)."""
        import ccxt.pro  # noqa: PLC0415 -- ~0.6 s and ~100 MiB, paid only in live mode

        cls = getattr(ccxt.pro, self._config.exchange, None)
        if cls is None:
            raise ConfigError("<config>", "live.exchange", f"ccxt.pro has no exchange {self._config.exchange!r}")
        self._ex = _instrumented(cls, self)(
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

    async def _owed_report(self, client_order_id: str, request: Awaitable[ExchangeOrder]) -> ExchangeOrder:
        """Send a request whose acknowledgement the user stream must then report (a free proof of life)."""
        if self._user_armed():
            self._hearing.expect(client_order_id)
        try:
            answer = await request
        except BaseException:
            self._hearing.withdraw(client_order_id)
            raise
        self._hearing.acknowledged(client_order_id, time.monotonic())
        return answer

    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        return await self._owed_report(request.client_order_id, self._create_order(request))

    async def _create_order(self, request: OrderRequest) -> ExchangeOrder:
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
        return await self._owed_report(client_order_id, self._cancel_order(symbol, client_order_id))

    async def _cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
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
            # a cursor is an applied integer id (the ledger keeps no other); anything else reads from the start
            return await self._trades_from_id(symbol, (trade_number(after_trade_id) or 0) + 1)
        start, now = since_ms, wall_ms()
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
            if len(raw) < 1000:  # ccxt sorts by timestamp, and equal timestamps by id *as text*: re-sort
                return sorted(fills, key=lambda f: trade_order(f.trade_id))
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

    def _guard(self, client: Any) -> Any:
        """Make a ccxt WebSocket client survive a frame it cannot digest (installed once per client).

        ccxt parses and dispatches every frame inside a done-callback of its receive task. An exception
        there (truncated JSON; an executionReport with ``"z": "NaN"``) goes to asyncio's exception
        handler -- a traceback -- and the callback never schedules the next receive: the connection
        stays open and delivers nothing, and nothing notices. Caught here, the frame is logged once and
        the stream is poisoned, so it reconnects and the reconnect's reconciliation recovers the event.
        """
        if getattr(client, _GUARDED, False):
            return client
        inner, inner_future = client.handle_message, client.future

        def handle_message(message: Any) -> None:
            try:
                inner(message)
            except Exception as exc:  # whatever ccxt chokes on: the frame is lost, the stream is not
                self._bad_frame(client, message, exc)

        def future(message_hash: Any) -> Any:
            """ccxt keeps a future per message hash and rejects them all when the connection fails -- also
            ones nobody awaits (``userDataStream.subscribe.signature`` makes one that only a concurrent
            second subscriber waits on), which asyncio then reports as "Future exception was never
            retrieved". Whoever awaits one still gets its exception; the others are retrieved here."""
            made = inner_future(message_hash)
            made.remove_done_callback(_retrieve)  # ccxt hands out one future per hash many times
            made.add_done_callback(_retrieve)
            return made

        client.handle_message, client.future = handle_message, future
        setattr(client, _GUARDED, True)
        return client

    def _bad_frame(self, client: Any, message: Any, exc: Exception) -> None:
        family = _family(str(client.url))
        if family not in self._poisoned:  # once per connection, however many frames it spoils
            log.error(
                "%s stream: ignored a frame ccxt cannot read (%s: %s): %s; reconnecting to catch up",
                "user" if family == _WS_API else "market", type(exc).__name__, exc, _frame_text(message),
                extra={"EVENT": "BAD_STREAM_MESSAGE"},
            )  # fmt: skip
        self._poison(family, f"a frame it could not read ({type(exc).__name__})")

    def _poison(self, family: str, reason: str) -> None:
        """Condemn this family's connections: their pending watches wake up failed and reconnect.

        The futures are cancelled, not rejected: a rejected future nobody awaits is logged at exit.
        """
        self._poisoned.setdefault(family, reason)
        for url, client in list(getattr(self.exchange, "clients", {}).items()):
            if family in url:
                for future in list(client.futures.values()):
                    future.cancel()
        if family == _WS_API:
            self._hearing.on_lost()

    def _on_frame(self, client: Any, message: Any) -> None:
        """A public stream's SUBSCRIBE answer (``{"result": null, "id": n}``) confirms its subscription."""
        if _PUBLIC not in str(client.url) or not isinstance(message, dict) or message.get("id") is None:
            return
        if "result" in message and message["result"] is None and "error" not in message:
            self._confirmed["market"].set()

    def _on_user_subscribed(self, client: Any, message: Any) -> None:
        """The WebSocket API answered ``userDataStream.subscribe``: from now on our events reach us."""
        result = message.get("result") if isinstance(message, dict) else None
        if isinstance(result, dict) and isinstance(result.get("subscriptionId"), int):
            self._hearing.on_subscribed(time.monotonic())
            setattr(client, _SUBSCRIBED, True)
            self._wake.set()
            log.info(
                "user data stream subscribed (subscription %s)", result["subscriptionId"],
                extra={"EVENT": "STREAM_SUBSCRIBED"},
            )  # fmt: skip

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
        self._poisoned.pop(family, None)
        if family == _WS_API:
            self._hearing.on_lost()

    def _dead_client(self, family: str) -> str | None:
        """A client ccxt connected that is closed but still in use: its receive loop ended without a word."""
        for url, client in list(getattr(self.exchange, "clients", {}).items()):
            if family in url and getattr(client, "isConnected", False) and client.closed():
                return "its connection is closed and ccxt did not say so"
        return None

    async def _bounded(self, step: Callable[[], Awaitable[Any]], silence: str | None) -> tuple[Any, str | None]:
        """One step under the heartbeat deadline: (result, None) or (None, why it failed).

        ``silence``: what running out of time means (None: nothing -- a quiet stream is fine).
        """
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(self._heartbeat_s):  # not wait_for: it can swallow a cancel
                return await step(), None
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise
            return None, "its connection was closed under it"  # ccxt cancelled our watch, nobody cancelled us
        except TimeoutError:
            return None, silence
        except Exception as exc:  # ccxt / network errors
            return None, f"{exc!r}"

    async def _attempt(
        self, link: Link, family: str, watch: Callable[[], Awaitable[list[Any]]], confirm: Confirm | None
    ) -> tuple[list[Any], str | None]:
        """Confirm the subscription (once per connection), then one watch: (batch, None) or ([], why not)."""
        failure = self._poisoned.get(family) or self._dead_client(family)
        if failure is None and confirm is not None and not link.connected:
            _, failure = await self._bounded(confirm, "the exchange did not acknowledge the subscription")
            if failure is None:
                await self._connected(link)
        if failure is not None:
            return [], failure
        silence = None if confirm is not None else f"no data for {self._heartbeat_s:.0f} s"
        batch, failure = await self._bounded(watch, silence)
        if failure is not None:
            return [], self._poisoned.get(family) or failure
        return list(batch or []), None

    async def _connected(self, link: Link) -> None:
        for event in link.on_connected(time.monotonic()):
            await self._publish(event)
        if link.name == "market":
            self._confirmed["market"].set()
        elif self._user_armed():
            self._confirmed["user"].set()

    def _user_armed(self) -> bool:
        """Both user watchers are subscribed and about to wait (no await in between): nothing can slip by.

        ccxt keeps an event that arrives while no watch of its kind is pending in a cache, and hands it
        over only with the next one -- so one watcher still in its backoff would miss reports for a while.
        """
        return all(n in self.links and self.links[n].connected for n in _USER_LINKS)

    async def _supervised(
        self,
        name: str,
        family: str,
        watch: Callable[[], Awaitable[list[Any]]],
        *,
        confirm: Confirm | None = None,
    ) -> AsyncIterator[list[Any]]:
        """Yield batches from ``watch`` forever; reconnect with backoff, publish LOST/RESTORED.

        ``confirm`` (the private stream): waits for the exchange to acknowledge the subscription, which
        is what makes the link connected; silence is normal there (an idle account), so proof of life
        comes from :class:`~s1mpled.connection.Hearing` instead. Without it (market data) a stream that
        delivers nothing for a heartbeat is dead.
        """
        link = self._link(name)
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a library swallowed our cancellation: honour it anyway
            delay = link.next_delay(self._rng)
            if delay:
                await asyncio.sleep(delay)
            batch, failure = await self._attempt(link, family, watch, confirm)
            if failure is not None:
                log.warning("%s stream failed (%s); reconnecting", name, failure, extra={"EVENT": "STREAM_FAILED"})
                for event in link.on_failure(failure):
                    await self._publish(event)
                await self._drop_ws_clients(family)
                continue
            if not link.connected:
                await self._connected(link)
            link.on_data(time.monotonic())
            if batch:
                self._last_message[name] = time.monotonic()
                yield batch

    async def stream_confirmed(self, stream: Stream) -> None:
        """Market data: its subscription was answered or it delivered; user: ``userDataStream.subscribe``
        was answered (ccxt's own flag is raised before the answer, so the answer itself is watched) and
        both of its watchers wait for events."""
        await self._confirmed[stream].wait()

    def stream_problem(self, stream: Stream) -> str:
        names = ("market",) if stream == "market" else _USER_LINKS
        return "; ".join(_describe(n, self.links.get(n)) for n in names)

    def stream_facts(self) -> list[StreamFacts]:
        """Each supervised stream as the metrics read it: connected, failures in a row, age of its last batch
        (the links are copied first: a scrape may come from the metrics HTTP thread)."""
        now = time.monotonic()
        facts = []
        for name, link in list(self.links.items()):
            last = self._last_message.get(name)
            facts.append(StreamFacts(name, link.connected, link.failures, None if last is None else now - last))
        return facts

    async def clock_offset_s(self) -> float:
        """The exchange's clock minus ours (seconds), from one ``/api/v3/time`` (weight 1), taken at the middle
        of the request as ``s1mpled doctor`` does; the metrics ask once per reconciliation pass."""
        offset = await exchange_offset_s(lambda: self._call(self.exchange.fetch_time(), "fetch time"))
        if offset is None:
            raise ExchangeUnavailable("fetch time: no server time in the answer")
        return offset

    def streams_healthy_for(self) -> float | None:
        """The shortest time any supervised stream (market data, both user watchers) has been connected
        without a failure; None while one is not, has not started, or is condemned to reconnect."""
        links = [self.links.get(n) for n in ("market", *_USER_LINKS)]
        since = [link.connected_at if link is not None else None for link in links]
        if self._poisoned or None in since:
            return None
        return time.monotonic() - max(s for s in since if s is not None)

    async def market_data(self, symbols: tuple[str, ...]) -> AsyncIterator[MarketTick]:
        async for batch in self._supervised("market", _PUBLIC, lambda: self._watch_tickers(symbols)):
            for tick in batch:
                yield tick

    async def _watch_tickers(self, symbols: tuple[str, ...]) -> list[MarketTick]:
        raw = await self.exchange.watch_tickers(list(symbols))
        ticks = []
        for symbol, t in (raw or {}).items():
            last = t.get("last") if isinstance(t, dict) else None
            if symbol in symbols and last is not None:
                ts = t.get("timestamp") if isinstance(t.get("timestamp"), int) else wall_ms()
                ticks.append(MarketTick(symbol, decimal_of(last, f"{symbol} last price"), ts))
        return ticks

    async def start_user_data_stream(self) -> AsyncIterator[UserStreamEvent]:
        """Our fills (watch_my_trades) and order updates (watch_orders), merged, each stream supervised,
        and a listener that proves the (shared) subscription alive while it is quiet."""
        queue: asyncio.Queue[UserStreamEvent] = asyncio.Queue(USER_QUEUE_SIZE)

        async def pump(name: str, watch: Callable[[], Awaitable[list[Any]]]) -> None:
            async for batch in self._supervised(name, _WS_API, watch, confirm=self._subscribe_user):
                self._heard_from(batch)
                for item in batch:
                    await queue.put(item)  # backpressure, never a drop

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pump("user-trades", self._watch_trades))
            tg.create_task(pump("user-orders", self._watch_orders))
            tg.create_task(self._listen())
            while True:
                yield await queue.get()

    async def _subscribe_user(self) -> None:
        """Subscribe this connection to our user data (if it is not) and wait for the exchange's answer."""
        await self.exchange.authenticate({"type": "spot"})
        url = self.exchange.urls["api"]["ws"]["ws-api"]["spot"]
        while not getattr(self.exchange.clients.get(url), _SUBSCRIBED, False):
            self._wake.clear()
            await self._wake.wait()

    def _heard_from(self, batch: list[UserStreamEvent]) -> None:
        self._heard += 1
        self._hearing.on_heard(time.monotonic(), [item.client_order_id for item in batch])

    async def _listen(self) -> None:
        """Proof of life for the quiet private stream (see Hearing): look at the account when that is due,
        and condemn a deaf subscription so that it reconnects and a reconciliation catches up."""
        while True:
            await asyncio.sleep(min(1.0, self._heartbeat_s / 3))
            if self._hearing.look_due(time.monotonic()):
                await self._look()
            reason = self._hearing.deaf(time.monotonic())
            if reason is not None:
                log.warning("the user stream is deaf: %s; reconnecting", reason, extra={"EVENT": "STREAM_DEAF"})
                self._poison(_WS_API, f"deaf: {reason}")

    async def _look(self) -> None:
        """One cheap REST look at the account, compared with what the stream reported (clean: nothing
        arrived on the stream while the request was out)."""
        heard, (epoch, before) = self._heard, self._stream_balances()
        try:
            account: Holdings | None = _holdings(await self.get_balances())
        except ExchangeError as exc:
            log.debug("account look failed: %s", exc)
            account = None
        after_epoch, after = self._stream_balances()
        clean = heard == self._heard and (epoch, before) == (after_epoch, after)
        self._hearing.on_look(time.monotonic(), account, after, after_epoch, clean=clean)

    def _stream_balances(self) -> tuple[int, dict[str, tuple[Decimal, Decimal]]]:
        """The balances the user stream reported (ccxt keeps them from outboundAccountPosition) and an epoch
        that changes when ccxt starts that record afresh (a new connection)."""
        record = (getattr(self.exchange, "balance", None) or {}).get("spot")
        if not isinstance(record, dict):
            return 0, {}
        if record is not self._balance_record:
            self._balance_record, self._balance_epoch = record, self._balance_epoch + 1
        out = {}
        for asset, entry in record.items():
            if asset in _BALANCE_KEYS or not isinstance(entry, dict):
                continue
            try:
                out[asset] = (decimal_of(entry.get("free"), asset), decimal_of(entry.get("used"), asset))
            except RemoteStateError:
                continue  # a garbled entry compares as absent: the look decides
        return self._balance_epoch, out

    async def _watch_trades(self) -> list[UserStreamEvent]:
        out: list[UserStreamEvent] = []
        for t in await self.exchange.watch_my_trades() or []:
            try:
                out.append(parse_fill(t))
            except RemoteStateError as exc:  # garbage from the exchange: survived, and caught up if ours
                self._unreadable("trade", t, exc)
        return out

    async def _watch_orders(self) -> list[UserStreamEvent]:
        out: list[UserStreamEvent] = []
        for o in await self.exchange.watch_orders() or []:
            try:
                out.append(self._order(o))
            except RemoteStateError as exc:
                self._unreadable("order update", o, exc)
        return out

    def _unreadable(self, what: str, raw: Any, exc: RemoteStateError) -> None:
        """An event ccxt parsed and we cannot: if it is about one of our orders, it is lost -- reconnect,
        and the reconnect's reconciliation catches it up. Logged unless its frame already was."""
        if _WS_API not in self._poisoned:
            log.error("ignored a malformed %s: %s", what, exc, extra={"EVENT": "BAD_STREAM_MESSAGE"})
        cid = raw.get("clientOrderId") if isinstance(raw, dict) else None
        if isinstance(cid, str) and parse_client_order_id(cid) is not None:
            self._poison(_WS_API, f"a {what} of ours it could not read")


def _family(url: str) -> str:
    return _WS_API if _WS_API in url else _PUBLIC


def _retrieve(future: Any) -> None:
    """Mark a finished ccxt future's exception as retrieved (see ``LiveEnvironment._guard``)."""
    if not future.cancelled():
        future.exception()


def _frame_text(message: Any) -> str:
    """The start of a frame, for the log."""
    data = getattr(message, "data", message)
    text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    return repr(text[:160] + ("..." if len(text) > 160 else ""))


def _holdings(balances: Mapping[str, Balance]) -> Holdings:
    return {asset: (b.free, b.used) for asset, b in balances.items()}


def _describe(name: str, link: Link | None) -> str:
    if link is None:
        return f"{name}: not started"
    if link.connected:
        return f"{name}: subscribed"
    if link.failures == 0:
        return f"{name}: connecting"
    return f"{name}: {link.failures} failed attempt(s), last: {link.last_error}"


def _instrumented(base: type[Any], env: LiveEnvironment) -> type[Any]:
    """``base`` (a ccxt.pro exchange class) with the hooks supervision needs and ccxt has no callbacks for:
    every WebSocket client guarded against frames it cannot read, subscription answers seen, a user
    stream that the exchange terminated (``eventStreamTerminated`` wakes no watch) reconnected, and every
    REST request measured where ccxt makes it (``fetch``: latency and errors by endpoint, used weight)."""

    class Instrumented(base):  # type: ignore[misc]  # ccxt is untyped: base is Any
        async def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            """ccxt's one HTTP request: its latency, error class and rate-limit weight to the instruments.
            The answer's headers are cleared first, so a request that got none never reports stale ones."""
            self.last_response_headers, started, error = None, time.monotonic(), None
            try:
                return await super().fetch(url, method, headers, body)
            except BaseException as exc:  # observed and re-raised: a cancellation or a timeout counts too
                error = type(exc).__name__
                raise
            finally:
                seconds = time.monotonic() - started
                env._instruments.rest(endpoint_of(method, url), seconds, error, self.last_response_headers)

        def client(self, url: str) -> Any:
            return env._guard(super().client(url))

        def handle_message(self, client: Any, message: Any) -> None:
            env._on_frame(client, message)
            super().handle_message(client, message)

        def handle_user_data_stream_subscribe(self, client: Any, message: Any) -> None:
            super().handle_user_data_stream_subscribe(client, message)
            env._on_user_subscribed(client, message)

        def handle_event_stream_terminated(self, client: Any, message: Any) -> None:
            super().handle_event_stream_terminated(client, message)
            env._poison(_WS_API, "the exchange terminated the user data stream")

    Instrumented.__name__ = Instrumented.__qualname__ = base.__name__
    return Instrumented
