"""The REST side: ``/api/v3/...`` handlers and the middleware that applies the HTTP faults.

Handlers are thin: read the raw query string and form body, check the signature (private
endpoints), call the :class:`Venue`, send the user events it returns to the streams, and answer
JSON -- or a Binance error ``{"code", "msg"}`` with its HTTP status. The middleware asks the
:class:`FaultPlan` what to do with each request before and after the handler runs, executes a
``late_order`` request later on its own, and hands every ``between_requests`` action that falls due
to the server right after the request was handled (before its answer is sent).

Endpoints: GET ping, time, exchangeInfo, ticker/price, ticker/24hr, ticker/bookTicker (public);
GET account, POST order, GET order, DELETE order, GET openOrders, DELETE openOrders, GET myTrades
(signed, ``X-MBX-APIKEY``).

Every ``/api`` answer carries ``X-MBX-USED-WEIGHT-1M`` as Binance's does: the request weight used in
the current minute of the server's clock (a fixed window), each request counted on arrival with
Binance's weight for it (:func:`request_weight`), refused and faulted ones too. ``GET
/__admin/weight`` says what the last delivered answer carried (``last_sent``) and the count now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from s1mpled.clock import ClockMs
from s1mpled_sim.auth import BinanceError, Credentials, parse_params, verify_rest
from s1mpled_sim.faults import FaultPlan, FaultSpec, HttpDecision
from s1mpled_sim.venue import Venue

__all__ = ["RestApi", "abort_connection"]

log = logging.getLogger("s1mpled_sim.rest")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Command = Callable[[Mapping[str, str], int], tuple[Any, list[dict[str, Any]]]]
_HTML_ERROR = "<html><head><title>{status}</title></head><body><h1>{status} Service Error</h1></body></html>"
_MALFORMED = {
    "html": ("<!DOCTYPE html><html><body><h1>Checking your browser...</h1></body></html>", "text/html"),
    "json": ('{"symbol": "BTCUSDT", "orderId": 12, "status": "NE', "application/json"),
    "empty": ("", "application/json"),
}


def abort_connection(request: web.Request, rst: bool) -> None:
    """Kill the request's TCP connection without an answer (``rst``: send a reset, not a FIN)."""
    transport = request.transport
    if transport is None:
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# Binance spot's documented request weights (the default, for what is not listed, is 1).
_WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/order"): 4,
    ("GET", "/api/v3/myTrades"): 20,
}
_ALL_SYMBOLS: dict[tuple[str, str], int] = {  # without ``symbol`` (with one: the second table)
    ("GET", "/api/v3/openOrders"): 80,
    ("GET", "/api/v3/ticker/price"): 4,
    ("GET", "/api/v3/ticker/24hr"): 80,
    ("GET", "/api/v3/ticker/bookTicker"): 4,
}
_ONE_SYMBOL: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/openOrders"): 6,
    ("GET", "/api/v3/ticker/price"): 2,
    ("GET", "/api/v3/ticker/24hr"): 2,
    ("GET", "/api/v3/ticker/bookTicker"): 2,
}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


def request_weight(method: str, path: str, query: Mapping[str, str]) -> int:
    """What Binance charges for one request (``symbols`` counts as all symbols here: an upper bound)."""
    key = (method, path)
    if key in _ALL_SYMBOLS:
        return _ONE_SYMBOL[key] if "symbol" in query else _ALL_SYMBOLS[key]
    return _WEIGHTS.get(key, 1)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


class RestApi:
    """The ``/api/v3`` routes of one simulator."""

    def __init__(
        self,
        venue: Venue,
        faults: FaultPlan,
        creds: Credentials,
        *,
        push_user: Callable[[list[dict[str, Any]]], None],
        now_ms: ClockMs,
        wall_ms: ClockMs,
        between: Callable[[FaultSpec], None] = lambda spec: None,
    ) -> None:
        self._venue, self._faults, self._creds = venue, faults, creds
        self._push_user, self._now_ms, self._wall_ms = push_user, now_ms, wall_ms
        self._between = between
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, path) of every /api request seen
        self._late_commands: dict[tuple[str, str], Command] = {
            ("POST", "/api/v3/order"): venue.place,
            ("DELETE", "/api/v3/order"): venue.cancel,
            ("DELETE", "/api/v3/openOrders"): venue.cancel_all,
        }
        self._late_tasks: set[asyncio.Task[None]] = set()
        self._weight_minute, self._weight_used = -1, 0  # the current minute (server clock) and its weight
        self.last_sent_weight: int | None = None  # X-MBX-USED-WEIGHT-1M of the last answer delivered
        # What became of each late execution, in order (GET /__admin/state ``late``): a test asserts on
        # the exchange's own record instead of guessing from the daemon's side.
        self.late: list[dict[str, Any]] = []
        # What Binance says about the system and the key (POST /__admin/account changes them): normal,
        # and a key as it should be for a trading daemon -- trading on, withdrawals off.
        self.system_status: dict[str, Any] = {"status": 0, "msg": "normal"}
        self.api_restrictions: dict[str, Any] = {
            "ipRestrict": False,
            "createTime": 1_700_000_000_000,
            "enableReading": True,
            "enableSpotAndMarginTrading": True,
            "enableWithdrawals": False,
            "enableInternalTransfer": False,
            "enableMargin": False,
            "enableFutures": False,
            "permitsUniversalTransfer": False,
            "enableVanillaOptions": False,
        }

    def cancel_late(self) -> None:
        """Forget the late executions still waiting (the simulator stops)."""
        for task in self._late_tasks:
            task.cancel()

    def routes(self) -> list[web.RouteDef]:
        public = self._public
        signed = self._signed
        venue = self._venue
        return [
            web.get("/api/v3/ping", public(lambda p, now: {})),
            web.get("/api/v3/time", public(lambda p, now: {"serverTime": now})),
            web.get("/api/v3/exchangeInfo", public(venue.exchange_info)),
            web.get("/api/v3/ticker/price", public(lambda p, now: venue.tickers("price", p, now))),
            web.get("/api/v3/ticker/24hr", public(lambda p, now: venue.tickers("24hr", p, now))),
            web.get("/api/v3/ticker/bookTicker", public(lambda p, now: venue.tickers("book", p, now))),
            web.get("/api/v3/account", signed(venue.account)),
            web.get("/sapi/v1/system/status", public(lambda p, now: self.system_status)),
            web.get("/sapi/v1/account/apiRestrictions", signed(lambda p, now: self.api_restrictions)),
            web.post("/api/v3/order", signed(self._with_events(venue.place))),
            web.get("/api/v3/order", signed(lambda p, now: venue.get_order(p))),
            web.delete("/api/v3/order", signed(self._with_events(venue.cancel))),
            web.get("/api/v3/openOrders", signed(lambda p, now: venue.open_orders(p))),
            web.delete("/api/v3/openOrders", signed(self._with_events(venue.cancel_all))),
            web.get("/api/v3/myTrades", signed(lambda p, now: venue.my_trades(p))),
            web.get("/__admin/weight", self._admin_weight),
        ]

    async def _admin_weight(self, request: web.Request) -> web.Response:
        return _json({"last_sent": self.last_sent_weight, "used_1m": self._used_weight(self._now_ms())})

    def _used_weight(self, now_ms: int, add: int = 0) -> int:
        """The weight used in the minute of ``now_ms`` (after adding ``add``): a window per clock minute."""
        minute = now_ms // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += add
        return self._weight_used

    def _stamp(self, response: web.StreamResponse, decision: HttpDecision) -> None:
        """Put the minute's used weight on an answer that reaches the client (as Binance does)."""
        if decision.before == "reset" or decision.after == "lost" or response.prepared:
            return
        used = self._used_weight(self._now_ms())
        response.headers[WEIGHT_HEADER] = str(used)
        self.last_sent_weight = used

    def _with_events(
        self, command: Callable[[Mapping[str, str], int], tuple[Any, list[dict[str, Any]]]]
    ) -> Callable[[Mapping[str, str], int], Any]:
        """Run a command and push the user events it caused before answering."""

        def run(params: Mapping[str, str], now_ms: int) -> Any:
            answer, events = command(params, now_ms)
            self._push_user(events)
            return answer

        return run

    def _public(self, call: Callable[[Mapping[str, str], int], object]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                params = parse_params(request.rel_url.raw_query_string, "")
                return _json(call(params, self._now_ms()))
            except BinanceError as exc:
                return _json(exc.body(), exc.status)

        return handle

    def _signed(self, call: Callable[[Mapping[str, str], int], object]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.text()  # cached if the middleware read it already
            now = self._now_ms()
            try:
                params = verify_rest(
                    request.rel_url.raw_query_string, body, request.headers.get("X-MBX-APIKEY"), self._creds, now
                )
                return _json(call(params, now))
            except BinanceError as exc:
                return _json(exc.body(), exc.status)

        return handle

    @web.middleware
    async def fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Apply the HTTP faults to ``/api/`` requests (see :mod:`.faults`)."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        self.requests[request.method, request.path] += 1
        self._used_weight(self._now_ms(), request_weight(request.method, request.path, request.rel_url.query))
        body = await request.read() if request.can_read_body else b""  # read now: a delayed request runs anyway
        decision = self._faults.http(request.method, request.path, self._wall_ms(), _fields(request, body))
        if decision.delay_ms:
            await asyncio.sleep(decision.delay_ms / 1000)
        response = await self._respond(request, handler, decision)
        for spec in self._faults.answered(request.method, request.path, self._wall_ms()):
            self._between(spec)
        self._stamp(response, decision)
        return response

    async def _respond(self, request: web.Request, handler: Handler, decision: HttpDecision) -> web.StreamResponse:
        if decision.before == "late":
            return await self._late(request, decision)
        if decision.before is not None:
            return self._fail_before(request, decision)
        response = await handler(request)
        if decision.after == "lost":
            log.info("dropping the answer to %s %s", request.method, request.path, extra={"EVENT": "SIM_LOST_RESPONSE"})
            abort_connection(request, rst=False)
            return response
        if decision.after == "malformed":
            text, content_type = _MALFORMED[decision.kind]
            return web.Response(text=text, status=200, content_type=content_type)
        return response

    async def _late(self, request: web.Request, decision: HttpDecision) -> web.StreamResponse:
        """``late_order``: check the request now, execute it ``delay_ms`` later, answer an error now or after a hold."""
        spec = decision.late
        assert spec is not None
        command = self._late_commands.get((request.method, request.path))
        if command is not None:
            body = await request.text()
            try:
                params = verify_rest(
                    request.rel_url.raw_query_string,
                    body,
                    request.headers.get("X-MBX-APIKEY"),
                    self._creds,
                    self._now_ms(),
                )
            except BinanceError as exc:
                return _json(exc.body(), exc.status)
            task = asyncio.get_running_loop().create_task(self._run_late(command, params, spec.delay_ms, request.path))
            self._late_tasks.add(task)
            task.add_done_callback(self._late_tasks.discard)
        if spec.mode == "timeout":
            await asyncio.sleep(spec.hold_ms / 1000)
        return self._fail_before(request, replace(decision, before="error"))

    async def _run_late(self, command: Command, params: Mapping[str, str], delay_ms: int, path: str) -> None:
        await asyncio.sleep(delay_ms / 1000)
        cid = params.get("newClientOrderId") or params.get("origClientOrderId")
        try:
            _, events = command(params, self._now_ms())
        except BinanceError as exc:
            log.info("late %s %s refused: %s", path, cid, exc, extra={"EVENT": "SIM_LATE_REFUSED"})
            self.late.append({"path": path, "client_order_id": cid, "outcome": "refused", "reason": str(exc)})
            return
        log.info("late %s %s executed", path, cid, extra={"EVENT": "SIM_LATE_EXECUTED"})
        self.late.append({"path": path, "client_order_id": cid, "outcome": "executed"})
        self._push_user(events)

    def _fail_before(self, request: web.Request, decision: HttpDecision) -> web.StreamResponse:
        if decision.before == "reset":
            abort_connection(request, rst=True)
            return web.Response(status=500)  # never reaches the client
        if decision.status in (418, 429):
            body = {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 requests per minute."}
            response = _json(body, decision.status)
            response.headers["Retry-After"] = str(decision.retry_after)
            return response
        return web.Response(
            text=_HTML_ERROR.format(status=decision.status), status=decision.status, content_type="text/html"
        )


def _fields(request: web.Request, body: bytes) -> dict[str, str]:
    """The request's parameters, for the faults narrowed by symbol/side (none if Binance would refuse them)."""
    try:
        return parse_params(request.rel_url.raw_query_string, body.decode("utf-8", "replace"))
    except BinanceError:
        return {}
