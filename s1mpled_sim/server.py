"""The simulator process: one aiohttp server on 127.0.0.1 with REST, WebSocket and admin routes,
plus the ticker that moves prices every ``tick_interval_s``.

In-process use (tests)::

    async with ExchangeSimulator(SimConfig(port=0)) as sim:
        ex.urls["api"] = sim.ccxt_urls()          # a ccxt.pro.binance pointed at the simulator
        await sim.inject("http_error", times=2)   # or POST /__admin/faults from another process
        sim.set_price("BTC/USDT", Decimal("29000.00"))
        state = sim.state()                        # == GET /__admin/state

Admin routes (never subject to faults, no authentication -- loopback only). Bodies are JSON objects;
amounts and prices may be JSON strings (exact) or numbers; a request that cannot be carried out is
HTTP 400 with the reason as text. Every change pushes the user-stream events Binance would send.

* ``GET /__admin/state`` -- balances, open orders, all orders by client id (``status`` in ccxt's
  vocabulary, ``wire_status`` the word REST and the stream use), all trades, last prices, and
  ``late``: what became of each ``late_order`` execution (``executed`` or ``refused`` with the reason)
* ``GET /__admin/faults`` -- the active faults and ``fired`` (the ``between_requests`` runs so far);
  ``DELETE /__admin/faults`` -- clear them
* ``POST /__admin/faults`` -- ``{"fault": name, ...params}`` (names and params: :mod:`.faults`)
* ``POST /__admin/price`` -- ``{"symbol": "BTC/USDT", "price": "29000.00"}``: one trade at that price now
* ``POST /__admin/feed`` -- ``{"paused": true|false}``: stop or restart the synthetic feed
* ``POST /__admin/balance`` -- ``{"asset": "USDT", "delta": "-12.5"}``: a deposit (> 0) or withdrawal
  (< 0) of free balance, no trade (``balanceUpdate`` + ``outboundAccountPosition``); 400 if free would
  become negative. Answers ``{"asset", "free", "used"}``.
* ``POST /__admin/foreign_order`` -- ``{"symbol", "side", "type" (default limit), "amount", "price",
  "client_order_id" (default ``web_<n>``), "time_in_force" (GTC), "status"}``: an order placed by hand.
  ``status`` ``"NEW"`` (default) trades like any order; ``"PENDING_NEW"`` (the pending leg of an order
  list) shows in openOrders, GET order and the ``NEW`` executionReport with status PENDING_NEW, is
  never matched, reserves nothing and can be canceled. Symbol and side in either spelling
  (``BTC/USDT`` or ``BTCUSDT``, ``buy`` or ``BUY``). Answers the order as GET order would.
* ``POST /__admin/expire_in_match`` -- ``{"client_order_id"}``: self-trade prevention expires the open
  order: status EXPIRED_IN_MATCH (ccxt: expired), what filled is kept, the rest released
  (executionReport x = TRADE_PREVENTION).
* ``POST /__admin/order_status`` -- ``{"client_order_id", "status": "ANY_STRING" | null}``: from now on
  REST (GET order, openOrders, order answers) and the stream (X of every later executionReport) report
  that raw status word for the order; ``null`` removes the override. Matching is unaffected.
* ``POST /__admin/fill`` -- ``{"client_order_id", "amount" (default: all that remains)}``: the open
  order fills now at its limit price, whatever the market price and liquidity, in one maker trade.
* ``POST /__admin/fill_in_pieces`` -- ``{"client_order_id", "pieces": 2500}``: the open order (ours or
  foreign) fills completely in that many separate trades at its limit price (equal pieces on the lot
  step, the last takes the rest); 400 if the remaining amount is less than ``pieces`` lot steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

from aiohttp import web

from s1mpled.clock import wall_ms
from s1mpled_sim.auth import Credentials
from s1mpled_sim.config import SimConfig
from s1mpled_sim.faults import FaultPlan, FaultSpec, parse_fault
from s1mpled_sim.rest import RestApi
from s1mpled_sim.venue import PriceUpdate, Venue
from s1mpled_sim.ws import StreamHub

__all__ = ["ExchangeSimulator"]

log = logging.getLogger("s1mpled_sim")


class ExchangeSimulator:
    """A Binance-spot-compatible exchange on loopback; use as ``async with`` (it owns a TaskGroup)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = FaultPlan()
        self.venue = Venue(self.config, self.now_ms())
        self.feed_paused = self.config.feed_paused
        creds = Credentials(self.config.api_key, self.config.api_secret)
        ids = [m.market_id for m in self.config.markets]
        self.hub = StreamHub(ids, self.faults, creds, self.now_ms, wall_ms)
        self._rest = RestApi(
            self.venue,
            self.faults,
            creds,
            push_user=self.hub.push_user,
            now_ms=self.now_ms,
            wall_ms=wall_ms,
            between=self._run_between,
        )
        self._runner: web.AppRunner | None = None
        self._group: asyncio.TaskGroup | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    # ----------------------------------------------------------------- clock and URLs

    def now_ms(self) -> int:
        """The server clock: wall time plus the ``clock_skew`` fault."""
        return wall_ms() + self.faults.skew_ms

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    def urls(self) -> dict[str, str]:
        """Every base URL, as the CLI prints them."""
        return {
            "http": self.http_url,
            "ws": self.ws_url,
            "rest": self.http_url + "/api/v3",
            "ws_api": self.ws_url + "/ws-api/v3",
            "stream": self.ws_url + "/stream/ws",
            "admin": self.http_url + "/__admin",
        }

    def ccxt_urls(self) -> dict[str, Any]:
        """The dict to assign to ``ex.urls['api']`` of a ``ccxt.pro.binance`` AFTER construction."""
        return {
            "public": self.http_url + "/api/v3",
            "private": self.http_url + "/api/v3",
            "v1": self.http_url + "/api/v1",
            "ws": {"spot": self.ws_url + "/stream/ws", "ws-api": {"spot": self.ws_url + "/ws-api/v3"}},
        }

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> ExchangeSimulator:
        app = web.Application(middlewares=[self._rest.fault_middleware])
        app.add_routes(self._rest.routes())
        app.add_routes(self._ws_routes() + self._admin_routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._ticker = self._group.create_task(self._tick_forever())
        log.info("exchange simulator listening on %s", self.http_url, extra={"EVENT": "SIM_START"})
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        try:
            if self._group is not None:
                # the body's own exception propagates unwrapped; the group only reports the ticker's
                await self._group.__aexit__(None, None, None)
        finally:
            self._rest.cancel_late()
            await self.hub.drop_all("abort")
            if self._runner is not None:
                await self._runner.cleanup()
            log.info("exchange simulator stopped", extra={"EVENT": "SIM_STOP"})

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            if not self.feed_paused:
                self._publish(self.venue.tick(self.now_ms()))

    def _publish(self, update: PriceUpdate) -> None:
        self.hub.push_user(update.user_events)
        self.hub.push_public(update.public_events)

    # ----------------------------------------------------------------- the in-process test API

    async def inject(self, fault: str, **params: Any) -> None:
        """Switch a fault on (see :mod:`s1mpled_sim.faults`); ValueError for a bad request."""
        spec = parse_fault(fault, params)
        log.info("fault %s %s", fault, params, extra={"EVENT": "SIM_FAULT"})
        if spec.name == "ws_drop":
            await self.hub.drop_all(spec.mode)
        elif spec.name == "ws_close":
            await self.hub.close_streams(spec.stream, spec.code)
        elif spec.name == "ws_deafen":
            self.hub.deafen(spec.stream, spec.seconds or 0)
        else:
            if spec.name == "clear":
                self.hub.undeafen_all()
            self.faults.add(spec, wall_ms())

    @property
    def request_counts(self) -> Counter[tuple[str, str]]:
        """How many ``/api`` requests arrived per (method, path), faulted ones included."""
        return self._rest.requests

    def clear_faults(self) -> None:
        self.faults.clear()
        self.hub.undeafen_all()

    def set_price(self, symbol: str, price: Decimal) -> None:
        """One public trade at ``price`` now: resting orders it crosses fill and their events are pushed."""
        self._publish(self.venue.set_price(symbol, price, self.now_ms()))

    def _pushed(self, result: tuple[dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
        answer, events = result
        self.hub.push_user(events)
        return answer

    def adjust_balance(self, asset: str, delta: Decimal) -> dict[str, Any]:
        """A deposit (> 0) or withdrawal (< 0) of free ``asset``; ValueError if free would become negative."""
        return self._pushed(self.venue.adjust_balance(asset, delta, self.now_ms()))

    def foreign_order(self, **body: Any) -> dict[str, Any]:
        """An order placed by hand (``POST /__admin/foreign_order``); ValueError if it is refused."""
        return self._pushed(self.venue.foreign_order(body, self.now_ms()))

    def expire_in_match(self, client_order_id: str) -> dict[str, Any]:
        """Expire an open order by self-trade prevention (EXPIRED_IN_MATCH)."""
        return self._pushed(self.venue.expire_in_match(client_order_id, self.now_ms()))

    def set_order_status(self, client_order_id: str, status: str | None) -> dict[str, Any]:
        """Report ``status`` for the order from now on (None: its real status again)."""
        return self.venue.set_status_override(client_order_id, status)

    def fill(self, client_order_id: str, amount: Decimal | None = None) -> dict[str, Any]:
        """Fill an open order now at its limit price (``amount`` or all that remains)."""
        return self._pushed(self.venue.fill(client_order_id, amount, self.now_ms()))

    def fill_in_pieces(self, client_order_id: str, pieces: int) -> dict[str, Any]:
        """Fill an open order completely in ``pieces`` separate trades."""
        return self._pushed(self.venue.fill_in_pieces(client_order_id, pieces, self.now_ms()))

    def _run_between(self, spec: FaultSpec) -> None:
        """Perform one due ``between_requests`` action (see :mod:`.faults`); record it under ``fired``."""
        now = self.now_ms()
        target: str | None = None
        done = False
        try:
            if spec.action in ("fill", "cancel"):
                order = self.venue.pick_open(spec.client_order_id, spec.prefix, fillable=spec.action == "fill")
                if order is not None:
                    target = order.client_order_id
                    if spec.action == "fill":
                        self._pushed(self.venue.fill(target, None, now))
                    else:
                        self._pushed(self.venue.cancel_by_hand(order, now))
                    done = True
            elif spec.action == "sell_by_hand":
                assert spec.symbol is not None
                sold = self.venue.sell_by_hand(spec.symbol, spec.amount, now)
                if sold is not None:
                    target = str(self._pushed(sold)["clientOrderId"])
                    done = True
            else:
                assert spec.asset is not None and spec.amount is not None
                delta = spec.amount if spec.action == "deposit" else -spec.amount
                target = spec.asset
                self._pushed(self.venue.adjust_balance(spec.asset, delta, now))
                done = True
        except ValueError as exc:
            log.info("between_requests %s did nothing: %s", spec.action, exc, extra={"EVENT": "SIM_BETWEEN"})
        self.faults.fired.append({"action": spec.action, "target": target, "done": done, "at_ms": now})
        log.info("between_requests %s %s (done: %s)", spec.action, target, done, extra={"EVENT": "SIM_BETWEEN"})

    def state(self) -> dict[str, Any]:
        """Balances, orders and trades as the exchange knows them (``GET /__admin/state``)."""
        return {
            **self.venue.snapshot(self.now_ms()),
            "connections": self.hub.counts(),
            "feed_paused": self.feed_paused,
            "late": list(self._rest.late),
        }

    # ----------------------------------------------------------------- routes

    def _ws_routes(self) -> list[web.RouteDef]:
        public = self.hub.public
        return [
            web.get("/ws-api/v3", self.hub.ws_api),
            web.get("/stream", public),
            web.get("/stream/ws", public),
            web.get("/stream/ws/{tail:.*}", public),
            web.get("/ws", public),
            web.get("/ws/{tail:.*}", public),
        ]

    def _admin_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/__admin/state", self._admin_state),
            web.get("/__admin/faults", self._admin_faults),
            web.post("/__admin/faults", self._admin_inject),
            web.delete("/__admin/faults", self._admin_clear),
            web.post("/__admin/price", self._admin_price),
            web.post("/__admin/feed", self._admin_feed),
            web.post("/__admin/balance", self._admin_balance),
            web.post("/__admin/foreign_order", self._admin_foreign_order),
            web.post("/__admin/expire_in_match", self._admin_expire_in_match),
            web.post("/__admin/order_status", self._admin_order_status),
            web.post("/__admin/fill", self._admin_fill),
            web.post("/__admin/fill_in_pieces", self._admin_fill_in_pieces),
            web.post("/__admin/account", self._admin_account),
        ]

    async def _admin_account(self, request: web.Request) -> web.Response:
        """``{"maintenance": bool, "withdrawals": bool, "trading": bool, "ip_restrict": bool}`` (any of them):
        what /sapi/v1/system/status and /sapi/v1/account/apiRestrictions answer from now on."""
        body = await _json_body(request)
        fields = {
            "withdrawals": "enableWithdrawals",
            "trading": "enableSpotAndMarginTrading",
            "ip_restrict": "ipRestrict",
        }
        unknown = set(body) - {*fields, "maintenance"}
        if unknown or not all(isinstance(v, bool) for v in body.values()):
            raise web.HTTPBadRequest(text=f"expected booleans among maintenance, {', '.join(fields)}; got {body}")
        for key, field in fields.items():
            if key in body:
                self._rest.api_restrictions[field] = body[key]
        if "maintenance" in body:
            self._rest.system_status = (
                {"status": 1, "msg": "system_maintenance"} if body["maintenance"] else {"status": 0, "msg": "normal"}
            )
        return web.json_response(
            {"system_status": self._rest.system_status, "api_restrictions": self._rest.api_restrictions}
        )

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _admin_faults(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "faults": self.faults.describe(wall_ms()),
                "skew_ms": self.faults.skew_ms,
                "fired": self.faults.fired,
                "connections": self.hub.counts(),
            }
        )

    async def _admin_clear(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults": []})

    async def _admin_inject(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        params = dict(body)
        name = params.pop("fault", None)
        try:
            await self.inject(str(name), **params)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"ok": True, "faults": self.faults.describe(wall_ms())})

    async def _admin_price(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self.set_price(str(body.get("symbol")), Decimal(str(body.get("price"))))
        except (ValueError, InvalidOperation) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"ok": True, "last_prices": self.venue.snapshot(self.now_ms())["last_prices"]})

    async def _admin_feed(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        paused = body.get("paused")
        if not isinstance(paused, bool):
            raise web.HTTPBadRequest(text="paused must be true or false")
        self.feed_paused = paused
        return web.json_response({"ok": True, "feed_paused": paused})

    async def _admin_balance(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _admin_answer(lambda: self.adjust_balance(str(body.get("asset", "")), _decimal(body, "delta")))

    async def _admin_foreign_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _admin_answer(lambda: self.foreign_order(**body))

    async def _admin_expire_in_match(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _admin_answer(lambda: self.expire_in_match(_cid(body)))

    async def _admin_order_status(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        status = body.get("status")
        if "status" not in body or not (status is None or (isinstance(status, str) and status)):
            raise web.HTTPBadRequest(text="status must be a non-empty string or null")
        return _admin_answer(lambda: self.set_order_status(_cid(body), status))

    async def _admin_fill(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _admin_answer(lambda: self.fill(_cid(body), _decimal(body, "amount") if "amount" in body else None))

    async def _admin_fill_in_pieces(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        pieces = body.get("pieces")
        if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
            raise web.HTTPBadRequest(text="pieces must be a positive integer")
        return _admin_answer(lambda: self.fill_in_pieces(_cid(body), pieces))


def _admin_answer(call: Callable[[], Any]) -> web.Response:
    """Run an admin command: its result as JSON, or HTTP 400 with the reason."""
    try:
        return web.json_response({"ok": True, "result": call()})
    except (ValueError, InvalidOperation) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _cid(body: dict[str, Any]) -> str:
    cid = body.get("client_order_id")
    if not isinstance(cid, str) or not cid:
        raise web.HTTPBadRequest(text="client_order_id must be a non-empty string")
    return cid


def _decimal(body: dict[str, Any], name: str) -> Decimal:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        raise web.HTTPBadRequest(text=f"{name} must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise web.HTTPBadRequest(text=f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise web.HTTPBadRequest(text=f"{name} must be finite, got {value!r}")
    return number


async def _json_body(request: web.Request) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        body = await request.json()
        if isinstance(body, dict):
            return body
    raise web.HTTPBadRequest(text="expected a JSON object")
