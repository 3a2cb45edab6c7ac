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
=================  ====================================================================================

Other faults:

=================  ====================================================================================
``clock_skew``     ``ms`` (+ or -): the server clock (recvWindow checks, serverTime, event and order
                   times) runs that far from the wall clock until changed or cleared. A client
                   whose timestamps are 1000 ms ahead or ``recvWindow`` behind gets -1021
                   (ccxt: InvalidNonce).
``ws_drop``        close every WebSocket connection now (public and user); ``mode`` = ``abort``
                   (default: the TCP connection just dies) or ``close`` (close frame 1001). The
                   pending ``watch_*`` of ccxt raises NetworkError; the next call reconnects.
``ws_stall``       for ``seconds``, WebSocket connections stay open (and new ones are accepted) but
                   nothing is sent: no events, no replies, no pongs. Held messages go out when the
                   stall ends (unless the connection was dropped meanwhile).
``ws_refuse``      for ``seconds``, WebSocket upgrades are refused with HTTP 503 (ccxt: NetworkError).
``ws_malformed``   the next ``times`` pushed WebSocket events (``stream`` = ``user`` (default),
                   ``public`` or ``any``) are replaced by truncated JSON; the event is lost.
``clear``          remove every fault, including the clock skew.
=================  ====================================================================================

Not a fault, but the default behaviour: orders keep matching while no user stream is connected,
and the events of those fills are lost (as on Binance); only REST shows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FAULT_NAMES", "HTTP_FAULTS", "FaultPlan", "FaultSpec", "HttpDecision", "parse_fault"]

HTTP_FAULTS = ("http_error", "rate_limit", "delay", "reset", "lost_response", "malformed")
FAULT_NAMES = (*HTTP_FAULTS, "clock_skew", "ws_drop", "ws_stall", "ws_refuse", "ws_malformed", "clear")
_HTTP_COMMON = {"times", "seconds", "path", "method"}
_PARAMS: dict[str, set[str]] = {
    "http_error": _HTTP_COMMON | {"status"},
    "rate_limit": _HTTP_COMMON | {"status", "retry_after"},
    "delay": _HTTP_COMMON | {"ms"},
    "reset": _HTTP_COMMON,
    "lost_response": _HTTP_COMMON,
    "malformed": _HTTP_COMMON | {"kind"},
    "clock_skew": {"ms"},
    "ws_drop": {"mode"},
    "ws_stall": {"seconds"},
    "ws_refuse": {"seconds"},
    "ws_malformed": {"times", "stream"},
    "clear": set(),
}


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


def _http_spec(name: str, params: Mapping[str, Any]) -> FaultSpec:
    seconds = _seconds(params)
    times = _int(params, "times", None if seconds is not None else 1)
    if times is not None and times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    path = params.get("path", "^/api/v3/order$" if name == "lost_response" else None)
    method = params.get("method", "POST" if name == "lost_response" else None)
    if path is not None:
        re.compile(str(path))
    status = _int(params, "status", {"http_error": 503, "rate_limit": 429}.get(name, 0)) or 0
    if name == "http_error" and not 500 <= status <= 599:
        raise ValueError(f"http_error status must be 5xx, got {status}")
    if name == "rate_limit" and status not in (418, 429):
        raise ValueError(f"rate_limit status must be 429 or 418, got {status}")
    ms = _int(params, "ms", None if name == "delay" else 0)
    if ms is None or ms < 0:
        raise ValueError(f"{name} needs ms >= 0")
    return FaultSpec(
        name,
        times=times,
        seconds=seconds,
        path=None if path is None else str(path),
        method=None if method is None else str(method).upper(),
        status=status,
        ms=ms,
        retry_after=_int(params, "retry_after", 1) or 1,
        kind=_choice(params, "kind", "html", ("html", "json", "empty")),
    )


def parse_fault(name: str, params: Mapping[str, Any]) -> FaultSpec:
    """Validate a fault request; ValueError names what is wrong (the admin endpoint answers 400)."""
    if name not in _PARAMS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
    unknown = set(params) - _PARAMS[name]
    if unknown:
        raise ValueError(f"{name}: unknown parameters {sorted(unknown)}; allowed: {sorted(_PARAMS[name])}")
    if name in HTTP_FAULTS:
        return _http_spec(name, params)
    if name == "clock_skew":
        ms = _int(params, "ms", None)
        if ms is None:
            raise ValueError("clock_skew needs ms")
        return FaultSpec(name, ms=ms)
    if name in ("ws_stall", "ws_refuse"):
        seconds = _seconds(params)
        if seconds is None:
            raise ValueError(f"{name} needs seconds")
        return FaultSpec(name, seconds=seconds)
    if name == "ws_malformed":
        times = _int(params, "times", 1) or 1
        return FaultSpec(name, times=times, stream=_choice(params, "stream", "user", ("user", "public", "any")))
    if name == "ws_drop":
        return FaultSpec(name, mode=_choice(params, "mode", "abort", ("abort", "close")))
    return FaultSpec(name)


@dataclass(frozen=True, slots=True)
class HttpDecision:
    """What to do with one HTTP request: wait ``delay_ms``, then either fail it ``before`` executing
    (``reset`` or ``error`` with ``status``) or execute it and spoil the answer ``after`` (``lost`` or
    ``malformed`` with ``kind``)."""

    delay_ms: int = 0
    before: str | None = None  # "reset" | "error"
    status: int = 0
    retry_after: int = 1
    after: str | None = None  # "lost" | "malformed"
    kind: str = "html"


class _Rule:
    """An active HTTP fault with its remaining count; mutable bookkeeping of the plan."""

    __slots__ = ("path", "remaining", "spec", "until_ms")

    def __init__(self, spec: FaultSpec, now_ms: int) -> None:
        self.spec = spec
        self.remaining = spec.times
        self.until_ms = None if spec.seconds is None else now_ms + int(spec.seconds * 1000)
        self.path = None if spec.path is None else re.compile(spec.path)

    def live(self, now_ms: int) -> bool:
        return (self.remaining is None or self.remaining > 0) and (self.until_ms is None or now_ms < self.until_ms)

    def matches(self, method: str, path: str, now_ms: int) -> bool:
        return (
            self.live(now_ms)
            and (self.spec.method is None or self.spec.method == method)
            and (self.path is None or self.path.search(path) is not None)
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

    def add(self, spec: FaultSpec, now_ms: int) -> None:
        """Switch a fault on (``ws_drop`` is an action the server performs, not state: ignored here)."""
        if spec.name in HTTP_FAULTS:
            self._rules.append(_Rule(spec, now_ms))
        elif spec.name == "clock_skew":
            self.skew_ms = spec.ms
        elif spec.name == "ws_stall":
            self.stall_until_ms = max(self.stall_until_ms, now_ms + int((spec.seconds or 0) * 1000))
        elif spec.name == "ws_refuse":
            self.refuse_until_ms = max(self.refuse_until_ms, now_ms + int((spec.seconds or 0) * 1000))
        elif spec.name == "ws_malformed":
            self._ws_garble.append(_Rule(spec, now_ms))
        elif spec.name == "clear":
            self.clear()

    def clear(self) -> None:
        """Remove every fault, including the clock skew."""
        self.skew_ms = self.stall_until_ms = self.refuse_until_ms = 0
        self._rules.clear()
        self._ws_garble.clear()

    def _take(self, names: tuple[str, ...], method: str, path: str, now_ms: int) -> FaultSpec | None:
        for rule in self._rules:
            if rule.spec.name in names and rule.matches(method, path, now_ms):
                rule.consume()
                return rule.spec
        return None

    def http(self, method: str, path: str, now_ms: int) -> HttpDecision:
        """Decide (and count) the faults that hit this request."""
        delay = self._take(("delay",), method, path, now_ms)
        delay_ms = delay.ms if delay else 0
        before = self._take(("reset", "http_error", "rate_limit"), method, path, now_ms)
        if before is not None:
            kind = "reset" if before.name == "reset" else "error"
            return HttpDecision(delay_ms, kind, before.status, before.retry_after)
        after = self._take(("lost_response", "malformed"), method, path, now_ms)
        if after is not None:
            return HttpDecision(
                delay_ms, after="lost" if after.name == "lost_response" else "malformed", kind=after.kind
            )
        return HttpDecision(delay_ms)

    def ws_refused(self, now_ms: int) -> bool:
        return now_ms < self.refuse_until_ms

    def ws_stalled(self, now_ms: int) -> bool:
        return now_ms < self.stall_until_ms

    def ws_garble(self, stream: str) -> bool:
        """Whether the next pushed event on a ``stream`` ("user" / "public") connection is spoiled."""
        for rule in self._ws_garble:
            if rule.remaining and rule.spec.stream in (stream, "any"):
                rule.consume()
                return True
        return False

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
        for rule in self._ws_garble:
            if rule.remaining:
                active.append({"fault": "ws_malformed", "remaining": rule.remaining, "stream": rule.spec.stream})
        return active
