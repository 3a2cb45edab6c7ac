"""The simulator process: one aiohttp server on 127.0.0.1 with REST, WebSocket and admin routes,
plus the ticker that moves prices every ``tick_interval_s``.

In-process use (tests)::

    async with ExchangeSimulator(SimConfig(port=0)) as sim:
        ex.urls["api"] = sim.ccxt_urls()          # a ccxt.pro.binance pointed at the simulator
        await sim.inject("http_error", times=2)   # or POST /__admin/faults from another process
        sim.set_price("BTC/USDT", Decimal("29000.00"))
        state = sim.state()                        # == GET /__admin/state

Admin routes (never subject to faults, no authentication -- loopback only):

* ``GET /__admin/state`` -- balances, open orders, all orders by client id, all trades, last prices
* ``GET /__admin/faults`` -- the active faults; ``DELETE /__admin/faults`` -- clear them
* ``POST /__admin/faults`` -- ``{"fault": name, ...params}`` (names and params: :mod:`.faults`)
* ``POST /__admin/price`` -- ``{"symbol": "BTC/USDT", "price": "29000.00"}``: one trade at that price now
* ``POST /__admin/feed`` -- ``{"paused": true|false}``: stop or restart the synthetic feed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

from aiohttp import web

from s1mpled.exchange_sim.auth import Credentials
from s1mpled.exchange_sim.config import SimConfig
from s1mpled.exchange_sim.faults import FaultPlan, parse_fault
from s1mpled.exchange_sim.rest import RestApi
from s1mpled.exchange_sim.venue import PriceUpdate, Venue
from s1mpled.exchange_sim.ws import StreamHub

__all__ = ["ExchangeSimulator"]

log = logging.getLogger("s1mpled.exchange_sim")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


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
            self.venue, self.faults, creds, push_user=self.hub.push_user, now_ms=self.now_ms, wall_ms=wall_ms
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
        """Switch a fault on (see :mod:`s1mpled.exchange_sim.faults`); ValueError for a bad request."""
        spec = parse_fault(fault, params)
        log.info("fault %s %s", fault, params, extra={"EVENT": "SIM_FAULT"})
        if spec.name == "ws_drop":
            await self.hub.drop_all(spec.mode)
            return
        self.faults.add(spec, wall_ms())

    @property
    def request_counts(self) -> Counter[tuple[str, str]]:
        """How many ``/api`` requests arrived per (method, path), faulted ones included."""
        return self._rest.requests

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_price(self, symbol: str, price: Decimal) -> None:
        """One public trade at ``price`` now: resting orders it crosses fill and their events are pushed."""
        self._publish(self.venue.set_price(symbol, price, self.now_ms()))

    def state(self) -> dict[str, Any]:
        """Balances, orders and trades as the exchange knows them (``GET /__admin/state``)."""
        return {**self.venue.snapshot(self.now_ms()), "connections": self.hub.counts(), "feed_paused": self.feed_paused}

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
        ]

    async def _admin_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _admin_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults.describe(wall_ms()), "skew_ms": self.faults.skew_ms})

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


async def _json_body(request: web.Request) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        body = await request.json()
        if isinstance(body, dict):
            return body
    raise web.HTTPBadRequest(text="expected a JSON object")
