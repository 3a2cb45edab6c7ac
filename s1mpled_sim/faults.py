"""Fault injection: what can go wrong between a client and Binance, on demand.

Tests switch faults on in-process (``await sim.inject(name, **params)``) or from another process
(``POST /__admin/faults`` with ``{"fault": name, ...params}``); both go through
:func:`parse_fault`, so the names and parameters below are the whole contract. The plan is pure
bookkeeping: the server asks it, per request or per WebSocket message, what to do at ``now_ms``.

HTTP faults apply to ``/api/...`` requests only (never to ``/__admin``). Each takes ``times``
(how many matching requests it hits, default 1), ``seconds`` (active for that long; alone it
means "every matching request during that time"), ``path`` (a regex searched in the URL path)
and ``method`` (GET, POST, DELETE):

=================  ====================================================================================
``http_error``     answer ``status`` (default 503, any 5xx) with an HTML body; the request is NOT
                   executed. ccxt: ExchangeNotAvailable (504: RequestTimeout).
``rate_limit``     answer ``status`` 429 (or 418) with ``{"code": -1003, ...}`` and ``Retry-After:
                   retry_after``; not executed. ccxt: DDoSProtection.
``delay``          hold the request ``ms`` milliseconds, then execute and answer it normally (a
                   client with a shorter timeout gives up -- ccxt RequestTimeout -- while a POST
                   order is still executed: an unknown outcome).
``reset``          close the TCP connection with RST, nothing executed, no answer (aiohttp retries a
                   GET once by itself; ccxt: ExchangeNotAvailable).
``lost_response``  execute the request, then close the connection instead of answering; defaults
                   ``path="^/api/v3/order$"``, ``method="POST"``: the order exists, the client
                   never learns it (ccxt: ExchangeNotAvailable / NetworkError).
``malformed``      execute the request, then answer HTTP 200 with ``kind`` = ``html`` (an HTML
                   error page), ``json`` (truncated JSON) or ``empty`` instead of the real body.
``late_order``     Binance's "execution status unknown": the request is NOT executed now but
                   ``delay_ms`` (default 3000) milliseconds later, exactly as sent (same parameters,
                   same client order id; signature and timestamp are checked on arrival, a request
                   failing them is answered normally and never executed), with the usual
                   user-stream events. The client is answered at once with ``status`` (default
                   503, any 5xx) and an HTML body (ccxt: ExchangeNotAvailable), or, with ``mode`` =
                   ``timeout``, the answer (the same HTML error) is held ``hold_ms`` (default
                   30000) -- longer than a client waits (ccxt: RequestTimeout). Defaults
                   ``path="^/api/v3/order$"``, ``method="POST"``. Executable late: POST and DELETE
                   ``/api/v3/order`` and DELETE ``/api/v3/openOrders``; any other matching request
                   is only answered with the error. If the late execution is refused (the order
                   was by then a duplicate, or unaffordable) nothing happens, as on Binance.
                   ``symbol`` (``BTC/USDT`` or ``BTCUSDT``) and ``side`` (``buy``/``sell``) narrow
                   it to the orders of one market or side.
=================  ====================================================================================

WebSocket faults (``stream`` = ``user`` means the WebSocket API connections ``/ws-api/v3``,
``public`` the market-stream connections):

=================  ====================================================================================
``ws_drop``        close every WebSocket connection now (public and user); ``mode`` = ``abort``
                   (default: the TCP connection just dies) or ``close`` (close frame 1001). The
                   pending ``watch_*`` of ccxt raises NetworkError; the next call reconnects.
``ws_close``       the server closes the connections of ``stream`` = ``user`` (default),
                   ``public`` or ``any`` with a proper close frame, ``code`` 1000 (default, normal
                   closure) or 1001 (going away). New connections are accepted at once.
``ws_stall``       for ``seconds``, WebSocket connections stay open (and new ones are accepted) but
                   nothing is sent: no events, no replies, no pongs. Held messages go out when the
                   stall ends (unless the connection was dropped meanwhile).
``ws_deafen``      the connections of ``stream`` = ``user`` (default) or ``public`` open right now
                   stay open and keep answering pings and requests (``session.subscriptions``
                   still lists the subscription), but for ``seconds`` no event is pushed to them:
                   the events of that time are LOST, like a subscription Binance silently dropped.
                   Connections opened after the injection are not deafened.
``ws_refuse``      for ``seconds``, WebSocket upgrades are refused with HTTP 503 (ccxt: NetworkError).
``ws_malformed``   ``kind`` = ``truncated`` (default): the next ``times`` pushed WebSocket messages
                   (``stream`` = ``user`` (default), ``public`` or ``any``; counted per connection)
                   are cut in half -- invalid JSON, the event is lost. ``kind`` = ``nan`` (user
                   stream only): the next ``times`` fill reports (``executionReport`` with x =
                   TRADE) are valid JSON but carry ``"NaN"`` in the numeric ``fields`` (default
                   ``["l", "z"]``: last and cumulative filled quantity). The fill itself really
                   happened: REST (myTrades, GET order, account) shows it exactly.
=================  ====================================================================================

State moving under a reconciliation pass:

=====================  ================================================================================
``between_requests``   right after the ``after``-th (>= 1, required) matching ``/api`` request counted
                       from the injection has been handled -- its answer already computed, before it is
                       sent and before any later request is executed -- the simulator performs
                       ``action``; with ``times`` (default 1) it does so again after each further
                       ``after`` matching requests. ``path`` (regex) and ``method`` filter what counts
                       (every request counts, faulted ones too). Actions:
                       ``fill`` -- fill ``client_order_id`` or, without it, the oldest open order whose
                       client id starts with ``prefix`` (default ``"s1"``) completely at its limit
                       price, in one trade (user-stream events as for any fill); ``cancel`` -- cancel
                       the order chosen the same way (events as for a REST cancel); ``sell_by_hand``
                       -- market-sell ``amount`` (default: all free base, rounded down to the lot
                       step) of ``symbol`` (required) under a foreign client id ``web_manual_<n>``;
                       ``deposit`` / ``withdraw`` -- ``asset`` and ``amount`` (required, > 0), like
                       ``POST /__admin/balance``. An action that finds nothing to do (no such open
                       order, nothing to sell, not enough to withdraw) does nothing; every run is
                       listed under ``fired`` in ``GET /__admin/faults``.
=====================  ================================================================================

Other faults:

=================  ====================================================================================
``clock_skew``     ``ms`` (+ or -): the server clock (recvWindow checks, serverTime, event and order
                   times) runs that far from the wall clock until changed or cleared. A client
                   whose timestamps are 1000 ms ahead or ``recvWindow`` behind gets -1021
                   (ccxt: InvalidNonce).
``clear``          remove every fault, including the clock skew and deafened connections (a late
                   order already accepted is still executed).
=================  ====================================================================================

Not a fault, but the default behaviour: orders keep matching while no user stream is connected,
and the events of those fills are lost (as on Binance); only REST shows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "BETWEEN_ACTIONS",
    "FAULT_NAMES",
    "HTTP_FAULTS",
    "FaultPlan",
    "FaultSpec",
    "HttpDecision",
    "parse_fault",
]

HTTP_FAULTS = ("http_error", "rate_limit", "delay", "reset", "lost_response", "malformed", "late_order")
WS_ACTIONS = ("ws_drop", "ws_close", "ws_deafen")  # performed by the server at once, not kept in the plan
FAULT_NAMES = (
    *HTTP_FAULTS,
    "clock_skew",
    *WS_ACTIONS,
    "ws_stall",
    "ws_refuse",
    "ws_malformed",
    "between_requests",
    "clear",
)
BETWEEN_ACTIONS = ("fill", "cancel", "sell_by_hand", "deposit", "withdraw")
_HTTP_COMMON = {"times", "seconds", "path", "method"}
_PARAMS: dict[str, set[str]] = {
    "http_error": _HTTP_COMMON | {"status"},
    "rate_limit": _HTTP_COMMON | {"status", "retry_after"},
    "delay": _HTTP_COMMON | {"ms"},
    "reset": _HTTP_COMMON,
    "lost_response": _HTTP_COMMON,
    "malformed": _HTTP_COMMON | {"kind"},
    "late_order": _HTTP_COMMON | {"status", "mode", "delay_ms", "hold_ms", "symbol", "side"},
    "clock_skew": {"ms"},
    "ws_drop": {"mode"},
    "ws_close": {"stream", "code"},
    "ws_deafen": {"stream", "seconds"},
    "ws_stall": {"seconds"},
    "ws_refuse": {"seconds"},
    "ws_malformed": {"times", "stream", "kind", "fields"},
    "between_requests": {
        "after",
        "times",
        "path",
        "method",
        "action",
        "client_order_id",
        "prefix",
        "symbol",
        "amount",
        "asset",
    },
    "clear": set(),
}
_ORDER_PATH = "^/api/v3/order$"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One validated fault request (see the module docstring for the meaning of each field)."""

    name: str
    times: int | None = None
    seconds: float | None = None
    path: str | None = None
    method: str | None = None
    status: int = 0
    ms: int = 0
    retry_after: int = 1
    kind: str = "html"
    mode: str = "abort"
    stream: str = "user"
    code: int = 1000  # ws_close
    fields: tuple[str, ...] = ()  # ws_malformed kind=nan
    delay_ms: int = 0  # late_order
    hold_ms: int = 0  # late_order mode=timeout
    after: int = 0  # between_requests
    action: str = ""
    client_order_id: str | None = None
    prefix: str = "s1"
    symbol: str | None = None
    amount: Decimal | None = None
    asset: str | None = None
    side: str | None = None  # late_order: BUY or SELL


def _int(params: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _seconds(params: Mapping[str, Any]) -> float | None:
    value = params.get("seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"seconds must be a positive number, got {value!r}")
    return float(value)


def _choice(params: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = params.get(name, default)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return str(value)


def _opt_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _times(params: Mapping[str, Any], default: int | None) -> int | None:
    times = _int(params, "times", default)
    if times is not None and times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    return times


def _filters(params: Mapping[str, Any], path: str | None, method: str | None) -> tuple[str | None, str | None]:
    path = params.get("path", path)
    method = params.get("method", method)
    if path is not None:
        re.compile(str(path))
    return (None if path is None else str(path)), (None if method is None else str(method).upper())


def _http_spec(name: str, params: Mapping[str, Any]) -> FaultSpec:
    seconds = _seconds(params)
    times = _times(params, None if seconds is not None else 1)
    on_orders = name in ("lost_response", "late_order")
    path, method = _filters(params, _ORDER_PATH if on_orders else None, "POST" if on_orders else None)
    status = _int(params, "status", {"http_error": 503, "rate_limit": 429, "late_order": 503}.get(name, 0)) or 0
    if name in ("http_error", "late_order") and not 500 <= status <= 599:
        raise ValueError(f"{name} status must be 5xx, got {status}")
    if name == "rate_limit" and status not in (418, 429):
        raise ValueError(f"rate_limit status must be 429 or 418, got {status}")
    ms = _int(params, "ms", None if name == "delay" else 0)
    if ms is None or ms < 0:
        raise ValueError(f"{name} needs ms >= 0")
    delay_ms = _int(params, "delay_ms", 3000) or 0
    hold_ms = _int(params, "hold_ms", 30000) or 0
    if delay_ms < 0 or hold_ms < 0:
        raise ValueError("delay_ms and hold_ms must be >= 0")
    return FaultSpec(
        name,
        times=times,
        seconds=seconds,
        path=path,
        method=method,
        status=status,
        ms=ms,
        retry_after=_int(params, "retry_after", 1) or 1,
        kind=_choice(params, "kind", "html", ("html", "json", "empty")),
        mode=_choice(params, "mode", "error", ("error", "timeout")),
        delay_ms=delay_ms,
        hold_ms=hold_ms,
        symbol=_wire_symbol(_opt_str(params, "symbol")),
        side=None if params.get("side") is None else _choice(params, "side", "", ("buy", "sell")).upper(),
    )


def _wire_symbol(symbol: str | None) -> str | None:
    """``BTC/USDT`` or ``btcusdt`` as the REST parameter spells it: ``BTCUSDT``."""
    return None if symbol is None else symbol.replace("/", "").upper()


def _ws_malformed(params: Mapping[str, Any]) -> FaultSpec:
    times = _times(params, 1) or 1
    kind = _choice(params, "kind", "truncated", ("truncated", "nan"))
    stream = _choice(params, "stream", "user", ("user", "public", "any"))
    raw_fields = params.get("fields", ["l", "z"])
    if kind == "nan":
        if stream != "user":
            raise ValueError("ws_malformed kind=nan poisons fill reports: stream must be 'user'")
        if not isinstance(raw_fields, list) or not raw_fields or not all(isinstance(f, str) for f in raw_fields):
            raise ValueError(f"fields must be a non-empty list of executionReport keys, got {raw_fields!r}")
    elif "fields" in params:
        raise ValueError("fields applies to kind=nan only")
    fields = tuple(raw_fields) if kind == "nan" else ()
    return FaultSpec("ws_malformed", times=times, stream=stream, kind=kind, fields=fields)


def _amount(params: Mapping[str, Any]) -> Decimal | None:
    value = params.get("amount")
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"amount must be a decimal number, got {value!r}") from None
    if isinstance(value, bool) or not amount.is_finite() or amount <= 0:
        raise ValueError(f"amount must be a positive number, got {value!r}")
    return amount


def _between(params: Mapping[str, Any]) -> FaultSpec:
    after = _int(params, "after", None)
    if after is None or after < 1:
        raise ValueError(f"between_requests needs after >= 1, got {after!r}")
    action = _choice(params, "action", "", BETWEEN_ACTIONS)
    path, method = _filters(params, None, None)
    symbol, asset, amount = _opt_str(params, "symbol"), _opt_str(params, "asset"), _amount(params)
    prefix = params.get("prefix", "s1")
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string, got {prefix!r}")
    if action == "sell_by_hand" and symbol is None:
        raise ValueError("between_requests sell_by_hand needs symbol")
    if action in ("deposit", "withdraw") and (asset is None or amount is None):
        raise ValueError(f"between_requests {action} needs asset and amount")
    return FaultSpec(
        "between_requests",
        times=_times(params, 1),
        path=path,
        method=method,
        after=after,
        action=action,
        client_order_id=_opt_str(params, "client_order_id"),
        prefix=prefix,
        symbol=symbol,
        amount=amount,
        asset=asset,
    )


def _clock_skew(name: str, params: Mapping[str, Any]) -> FaultSpec:
    ms = _int(params, "ms", None)
    if ms is None:
        raise ValueError("clock_skew needs ms")
    return FaultSpec(name, ms=ms)


def _timed(name: str, params: Mapping[str, Any]) -> FaultSpec:
    seconds = _seconds(params)
    if seconds is None:
        raise ValueError(f"{name} needs seconds")
    stream = _choice(params, "stream", "user", ("user", "public")) if name == "ws_deafen" else "user"
    return FaultSpec(name, seconds=seconds, stream=stream)


def _ws_drop(name: str, params: Mapping[str, Any]) -> FaultSpec:
    return FaultSpec(name, mode=_choice(params, "mode", "abort", ("abort", "close")))


def _ws_close(name: str, params: Mapping[str, Any]) -> FaultSpec:
    code = _int(params, "code", 1000)
    if code not in (1000, 1001):
        raise ValueError(f"ws_close code must be 1000 or 1001, got {code!r}")
    return FaultSpec(name, stream=_choice(params, "stream", "user", ("user", "public", "any")), code=code)


_PARSERS: dict[str, Callable[[str, Mapping[str, Any]], FaultSpec]] = {
    **dict.fromkeys(HTTP_FAULTS, _http_spec),
    "clock_skew": _clock_skew,
    "ws_stall": _timed,
    "ws_refuse": _timed,
    "ws_deafen": _timed,
    "ws_drop": _ws_drop,
    "ws_close": _ws_close,
    "ws_malformed": lambda name, params: _ws_malformed(params),
    "between_requests": lambda name, params: _between(params),
    "clear": lambda name, params: FaultSpec(name),
}


def parse_fault(name: str, params: Mapping[str, Any]) -> FaultSpec:
    """Validate a fault request; ValueError names what is wrong (the admin endpoint answers 400)."""
    if name not in _PARAMS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
    unknown = set(params) - _PARAMS[name]
    if unknown:
        raise ValueError(f"{name}: unknown parameters {sorted(unknown)}; allowed: {sorted(_PARAMS[name])}")
    return _PARSERS[name](name, params)


@dataclass(frozen=True, slots=True)
class HttpDecision:
    """What to do with one HTTP request: wait ``delay_ms``, then either fail it ``before`` executing
    (``reset``, ``error`` with ``status``, or ``late``: ``late`` spec's error now and the request
    executed later) or execute it and spoil the answer ``after`` (``lost`` or ``malformed`` with
    ``kind``)."""

    delay_ms: int = 0
    before: str | None = None  # "reset" | "error" | "late"
    status: int = 0
    retry_after: int = 1
    after: str | None = None  # "lost" | "malformed"
    kind: str = "html"
    late: FaultSpec | None = None


class _Rule:
    """An active fault with its remaining count; mutable bookkeeping of the plan."""

    __slots__ = ("count", "path", "remaining", "spec", "until_ms")

    def __init__(self, spec: FaultSpec, now_ms: int) -> None:
        self.spec = spec
        self.remaining = spec.times
        self.until_ms = None if spec.seconds is None else now_ms + int(spec.seconds * 1000)
        self.path = None if spec.path is None else re.compile(spec.path)
        self.count = 0  # between_requests: matching requests since the last run

    def live(self, now_ms: int) -> bool:
        return (self.remaining is None or self.remaining > 0) and (self.until_ms is None or now_ms < self.until_ms)

    def matches(self, method: str, path: str, now_ms: int, params: Mapping[str, str] | None = None) -> bool:
        return (
            self.live(now_ms)
            and (self.spec.method is None or self.spec.method == method)
            and (self.path is None or self.path.search(path) is not None)
            and self._matches_params(params or {})
        )

    def _matches_params(self, params: Mapping[str, str]) -> bool:
        """The ``symbol`` / ``side`` narrowing of a ``late_order`` (other faults carry none here)."""
        if self.spec.name != "late_order":
            return True
        return (self.spec.symbol is None or params.get("symbol") == self.spec.symbol) and (
            self.spec.side is None or params.get("side") == self.spec.side
        )

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


class FaultPlan:
    """The active faults; every question takes ``now_ms`` -- the WALL clock, so that a clock skew
    does not move the windows of the other faults (no clock inside)."""

    def __init__(self) -> None:
        self.skew_ms = 0
        self.stall_until_ms = 0
        self.refuse_until_ms = 0
        self._rules: list[_Rule] = []
        self._ws_garble: list[_Rule] = []
        self._ws_nan: list[_Rule] = []
        self._between: list[_Rule] = []
        self.fired: list[dict[str, Any]] = []  # between_requests runs, for GET /__admin/faults

    def add(self, spec: FaultSpec, now_ms: int) -> None:
        """Switch a fault on (the WebSocket actions are performed by the server, not kept: ignored here)."""
        if spec.name in HTTP_FAULTS:
            self._rules.append(_Rule(spec, now_ms))
        elif spec.name == "clock_skew":
            self.skew_ms = spec.ms
        elif spec.name == "ws_stall":
            self.stall_until_ms = max(self.stall_until_ms, now_ms + int((spec.seconds or 0) * 1000))
        elif spec.name == "ws_refuse":
            self.refuse_until_ms = max(self.refuse_until_ms, now_ms + int((spec.seconds or 0) * 1000))
        elif spec.name == "ws_malformed":
            (self._ws_nan if spec.kind == "nan" else self._ws_garble).append(_Rule(spec, now_ms))
        elif spec.name == "between_requests":
            self._between.append(_Rule(spec, now_ms))
        elif spec.name == "clear":
            self.clear()

    def clear(self) -> None:
        """Remove every fault, including the clock skew."""
        self.skew_ms = self.stall_until_ms = self.refuse_until_ms = 0
        for rules in (self._rules, self._ws_garble, self._ws_nan, self._between):
            rules.clear()

    def _take(
        self, names: tuple[str, ...], method: str, path: str, now_ms: int, params: Mapping[str, str] | None = None
    ) -> FaultSpec | None:
        for rule in self._rules:
            if rule.spec.name in names and rule.matches(method, path, now_ms, params):
                rule.consume()
                return rule.spec
        return None

    def http(self, method: str, path: str, now_ms: int, params: Mapping[str, str] | None = None) -> HttpDecision:
        """Decide (and count) the faults that hit this request (``params``: its query and form fields)."""
        delay = self._take(("delay",), method, path, now_ms)
        delay_ms = delay.ms if delay else 0
        before = self._take(("reset", "http_error", "rate_limit", "late_order"), method, path, now_ms, params)
        if before is not None:
            kind = {"reset": "reset", "late_order": "late"}.get(before.name, "error")
            late = before if before.name == "late_order" else None
            return HttpDecision(delay_ms, kind, before.status, before.retry_after, late=late)
        after = self._take(("lost_response", "malformed"), method, path, now_ms)
        if after is not None:
            return HttpDecision(
                delay_ms, after="lost" if after.name == "lost_response" else "malformed", kind=after.kind
            )
        return HttpDecision(delay_ms)

    def answered(self, method: str, path: str, now_ms: int) -> list[FaultSpec]:
        """Count one handled ``/api`` request; the ``between_requests`` actions due now (in injection order)."""
        due: list[FaultSpec] = []
        for rule in self._between:
            if rule.matches(method, path, now_ms):
                rule.count += 1
                if rule.count == rule.spec.after:
                    rule.count = 0
                    rule.consume()
                    due.append(rule.spec)
        return due

    def ws_refused(self, now_ms: int) -> bool:
        return now_ms < self.refuse_until_ms

    def ws_stalled(self, now_ms: int) -> bool:
        return now_ms < self.stall_until_ms

    def ws_garble(self, stream: str) -> bool:
        """Whether the next pushed message on a ``stream`` ("user" / "public") connection is cut in half."""
        for rule in self._ws_garble:
            if rule.remaining and rule.spec.stream in (stream, "any"):
                rule.consume()
                return True
        return False

    def ws_poison(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The user event with ``"NaN"`` in the poisoned fields if a ``kind=nan`` fault takes it, else None."""
        if event.get("e") != "executionReport" or event.get("x") != "TRADE":
            return None
        for rule in self._ws_nan:
            if rule.remaining:
                rule.consume()
                return {**event, **dict.fromkeys(rule.spec.fields, "NaN")}
        return None

    def describe(self, now_ms: int) -> list[dict[str, Any]]:
        """The faults still active, for ``GET /__admin/faults``."""
        active: list[dict[str, Any]] = [
            {"fault": r.spec.name, "remaining": r.remaining, "until_ms": r.until_ms, "path": r.spec.path}
            for r in self._rules
            if r.live(now_ms)
        ]
        if self.skew_ms:
            active.append({"fault": "clock_skew", "ms": self.skew_ms})
        if self.ws_stalled(now_ms):
            active.append({"fault": "ws_stall", "until_ms": self.stall_until_ms})
        if self.ws_refused(now_ms):
            active.append({"fault": "ws_refuse", "until_ms": self.refuse_until_ms})
        for rule in (*self._ws_garble, *self._ws_nan):
            if rule.remaining:
                active.append(
                    {
                        "fault": "ws_malformed",
                        "kind": rule.spec.kind,
                        "remaining": rule.remaining,
                        "stream": rule.spec.stream,
                    }
                )
        for rule in self._between:
            if rule.live(now_ms):
                active.append(
                    {
                        "fault": "between_requests",
                        "action": rule.spec.action,
                        "remaining": rule.remaining,
                        "after": rule.spec.after,
                        "counted": rule.count,
                        "path": rule.spec.path,
                    }
                )
        return active
