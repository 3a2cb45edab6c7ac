"""The WebSocket side: the WS API (user data stream) and the public market streams.

* ``/ws-api/v3`` -- Binance's WebSocket API. ``userDataStream.subscribe.signature`` (signed like
  REST, see :mod:`.auth`) answers ``{"subscriptionId": n}`` (0 for the first on a connection);
  afterwards every user event (``executionReport``, ``outboundAccountPosition``) is pushed as
  ``{"subscriptionId": n, "event": {...}}``. Also ``userDataStream.unsubscribe``,
  ``session.subscriptions``, ``ping`` and ``time``. Errors: ``{"id", "status", "error": {code, msg}}``.
* ``/stream/ws[/...]`` and ``/ws[/...]`` -- raw public streams, ``/stream?streams=a/b`` -- combined
  ones (``{"stream", "data"}``). ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}``
  answers ``{"result": null, "id": 1}``; streams: ``<id>@trade``, ``@aggTrade``, ``@ticker``,
  ``@miniTicker``, ``@bookTicker``. Also UNSUBSCRIBE, LIST_SUBSCRIPTIONS.

Each connection has one outbound queue drained by its own writer task, so pushes from the price
ticker and replies to requests never interleave, and a stall (fault ``ws_stall``) simply holds the
writer. Events go to the connections open at that moment: a client that is not connected misses
them, as on Binance; a deafened connection (fault ``ws_deafen``) misses them too while it stays
open and answers requests. ``close_streams`` (fault ``ws_close``) ends connections with a close
frame, ``drop_all`` (``ws_drop``) kills or closes all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from s1mpled.clock import ClockMs
from s1mpled_sim.auth import BinanceError, Credentials, verify_ws
from s1mpled_sim.faults import FaultPlan
from s1mpled_sim.marketdata import STREAM_KINDS
from s1mpled_sim.rest import abort_connection

__all__ = ["StreamHub"]

log = logging.getLogger("s1mpled_sim.ws")
Json = dict[str, Any]
_WS_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 2}
]


class _Conn:
    """One WebSocket connection: its kind, subscriptions and outbound queue."""

    __slots__ = ("combined", "deaf_until_ms", "kind", "next_sub_id", "out", "request", "streams", "user_subs", "ws")

    def __init__(self, kind: str, ws: web.WebSocketResponse, request: web.Request, combined: bool = False) -> None:
        self.kind, self.ws, self.request, self.combined = kind, ws, request, combined
        self.out: asyncio.Queue[str | None] = asyncio.Queue()
        self.streams: set[str] = set()
        self.user_subs: list[int] = []
        self.next_sub_id = 0
        self.deaf_until_ms = 0  # wall ms: no events are pushed before then (fault ws_deafen)

    def send(self, message: object) -> None:
        self.out.put_nowait(json.dumps(message))


def _garbage(text: str) -> str:
    """A message cut in half: starts like JSON, never parses."""
    return text[: max(1, len(text) // 2)]


class StreamHub:
    """All open WebSocket connections; pushes events to the ones that want them."""

    def __init__(
        self,
        market_ids: list[str],
        faults: FaultPlan,
        creds: Credentials,
        now_ms: ClockMs,
        wall_ms: ClockMs,
    ) -> None:
        self._ids = {m.lower() for m in market_ids}
        self._faults, self._creds, self._now_ms, self._wall_ms = faults, creds, now_ms, wall_ms
        self._conns: set[_Conn] = set()

    # ----------------------------------------------------------------- bookkeeping

    def counts(self) -> dict[str, int]:
        """Open connections: ``user`` (WS API connections with a user-data subscription), ``ws_api``, ``public``."""
        ws_api = [c for c in self._conns if c.kind == "user"]
        now = self._wall_ms()
        return {
            "user": sum(1 for c in ws_api if c.user_subs),
            "ws_api": len(ws_api),
            "public": sum(1 for c in self._conns if c.kind == "public"),
            "deaf": sum(1 for c in self._conns if c.deaf_until_ms > now),
        }

    def push_user(self, events: list[Json]) -> None:
        """Send user events to every user-data subscription (lost if none is open)."""
        conns = [c for c in self._conns if c.user_subs]
        if not conns:
            return
        for event in events:
            sent = self._faults.ws_poison(event) or event  # the same poisoned frame to every subscriber
            for conn in conns:
                for sub in conn.user_subs:
                    self._push(conn, {"subscriptionId": sub, "event": sent}, "user")

    def push_public(self, events: list[tuple[str, Json]]) -> None:
        """Send public stream events to the connections subscribed to their stream."""
        for conn in [c for c in self._conns if c.kind == "public" and c.streams]:
            for name, payload in events:
                if name in conn.streams:
                    self._push(conn, {"stream": name, "data": payload} if conn.combined else payload, "public")

    def _push(self, conn: _Conn, message: Json, stream: str) -> None:
        if conn.deaf_until_ms > self._wall_ms():
            return  # lost, as if the exchange had dropped the subscription
        text = json.dumps(message)
        conn.out.put_nowait(_garbage(text) if self._faults.ws_garble(stream) else text)

    def _of_stream(self, stream: str) -> list[_Conn]:
        return [c for c in self._conns if stream in (c.kind, "any")]

    async def close_streams(self, stream: str, code: int) -> int:
        """Close the connections of ``stream`` ("user", "public", "any") with a close frame ``code``."""
        conns = self._of_stream(stream)
        for conn in conns:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close(code=code, message=b"closed by the server")
        log.info("closed %d %s websocket connections (%d)", len(conns), stream, code, extra={"EVENT": "SIM_WS_CLOSE"})
        return len(conns)

    def deafen(self, stream: str, seconds: float) -> int:
        """Push nothing for ``seconds`` to the connections of ``stream`` open now; returns how many."""
        until = self._wall_ms() + int(seconds * 1000)
        conns = self._of_stream(stream)
        for conn in conns:
            conn.deaf_until_ms = max(conn.deaf_until_ms, until)
        log.info("deafened %d %s websocket connections", len(conns), stream, extra={"EVENT": "SIM_WS_DEAFEN"})
        return len(conns)

    def undeafen_all(self) -> None:
        for conn in self._conns:
            conn.deaf_until_ms = 0

    async def drop_all(self, mode: str = "abort") -> int:
        """Close every connection now (``abort``: kill the TCP connection; ``close``: close frame 1001)."""
        conns = list(self._conns)
        for conn in conns:
            if mode == "abort":
                abort_connection(conn.request, rst=False)
            else:
                await conn.ws.close(code=1001, message=b"server going away")
        log.info("dropped %d websocket connections (%s)", len(conns), mode, extra={"EVENT": "SIM_WS_DROP"})
        return len(conns)

    # ----------------------------------------------------------------- handlers

    async def ws_api(self, request: web.Request) -> web.StreamResponse:
        """``/ws-api/v3``."""
        return await self._serve(request, "user", False, self._ws_api_message)

    async def public(self, request: web.Request) -> web.StreamResponse:
        """``/stream``, ``/stream/ws[/...]``, ``/ws[/...]``."""
        combined = request.path.rstrip("/") == "/stream"
        names = request.query.get("streams", "") if combined else request.match_info.get("tail", "")
        return await self._serve(request, "public", combined, self._public_message, names)

    async def _serve(
        self,
        request: web.Request,
        kind: str,
        combined: bool,
        on_text: Callable[[_Conn, str], None],
        initial_streams: str = "",
    ) -> web.StreamResponse:
        if self._faults.ws_refused(self._wall_ms()):
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=False, timeout=2.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Conn(kind, ws, request, combined)
        conn.streams.update(n for n in initial_streams.split("/") if self._valid_stream(n))
        self._conns.add(conn)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._writer(conn))
                await self._reader(conn, on_text)
                conn.out.put_nowait(None)
        finally:
            self._conns.discard(conn)
        return ws

    async def _reader(self, conn: _Conn, on_text: Callable[[_Conn, str], None]) -> None:
        async for msg in conn.ws:
            if msg.type is WSMsgType.TEXT:
                on_text(conn, msg.data)
            elif msg.type is WSMsgType.PING:
                if not self._faults.ws_stalled(self._wall_ms()):
                    with contextlib.suppress(ConnectionError, RuntimeError):  # the peer is gone: the loop ends
                        await conn.ws.pong(msg.data)
            elif msg.type is WSMsgType.ERROR:
                break

    async def _writer(self, conn: _Conn) -> None:
        while (text := await conn.out.get()) is not None:
            # a time-boxed stall that a later ws_stall may extend: re-check the deadline after each wait
            while (left := self._faults.stall_until_ms - self._wall_ms()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(left / 1000)
            if conn.ws.closed:
                return
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                abort_connection(conn.request, rst=False)
                return

    # ----------------------------------------------------------------- WS API

    def _ws_api_message(self, conn: _Conn, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            conn.send({"id": None, "status": 400, "error": {"code": -1102, "msg": "Malformed request."}})
            return
        rid = request.get("id")
        params = request.get("params") or {}
        try:
            if not isinstance(params, dict):
                raise BinanceError(-1102, "Param 'params' must be an object.")
            result = self._ws_api_call(conn, str(request.get("method")), params)
        except BinanceError as exc:
            conn.send({"id": rid, "status": exc.status, "error": exc.body(), "rateLimits": _WS_RATE_LIMITS})
            return
        conn.send({"id": rid, "status": 200, "result": result, "rateLimits": _WS_RATE_LIMITS})

    def _ws_api_call(self, conn: _Conn, method: str, params: dict[str, Any]) -> object:
        if method == "userDataStream.subscribe.signature":
            verify_ws(params, self._creds, self._now_ms())
            sub = conn.next_sub_id
            conn.next_sub_id += 1
            conn.user_subs.append(sub)
            log.info("user data stream subscribed (%d)", sub, extra={"EVENT": "SIM_USER_SUBSCRIBED"})
            return {"subscriptionId": sub}
        if method == "userDataStream.unsubscribe":
            gone = params.get("subscriptionId")
            conn.user_subs = [s for s in conn.user_subs if gone is not None and s != gone]
            return {}
        if method == "session.subscriptions":
            return [{"subscriptionId": s} for s in conn.user_subs]
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self._now_ms()}
        raise BinanceError(-1102, f"Unknown method '{method}'.")

    # ----------------------------------------------------------------- public streams

    def _valid_stream(self, name: str) -> bool:
        market, _, kind = name.partition("@")
        return market in self._ids and kind in STREAM_KINDS

    def _public_message(self, conn: _Conn, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            conn.send({"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None})
            return
        rid, method, params = request.get("id"), request.get("method"), request.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            conn.send({"result": sorted(conn.streams), "id": rid})
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            conn.send({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid})
            return
        bad = [p for p in params if not isinstance(p, str) or not self._valid_stream(p)]
        if bad:
            conn.send({"error": {"code": 2, "msg": f"Invalid request: unknown stream {bad[0]!r}"}, "id": rid})
            return
        if method == "SUBSCRIBE":
            conn.streams.update(params)
        else:
            conn.streams.difference_update(params)
        conn.send({"result": None, "id": rid})
