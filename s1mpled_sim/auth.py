"""Binance request signing, checked the way Binance checks it, plus the Binance error value.

Pure functions of the raw request text and the server's ``now_ms``: the REST and WebSocket API
handlers call them, so a bad key, a bad signature or a stale timestamp produce exactly the error
codes ccxt maps to AuthenticationError / InvalidNonce. The server clock passed in is the skewed
one, which is how the ``clock_skew`` fault reaches these checks.

* REST: header ``X-MBX-APIKEY``; ``signature`` = hex HMAC-SHA256 of the query string (GET, DELETE)
  or of query string + body (POST), with the ``signature`` parameter itself removed.
* WebSocket API: ``params`` holds ``apiKey``, ``timestamp``, ``recvWindow`` and ``signature``; the
  signed payload is every other parameter sorted by key, ``k=v`` joined with ``&``.
* ``timestamp`` must not be 1000 ms or more ahead of the server and not older than ``recvWindow``
  (default 5000, at most 60000).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

__all__ = [
    "BinanceError",
    "Credentials",
    "check_timestamp",
    "parse_params",
    "sign",
    "verify_rest",
    "verify_ws",
    "ws_payload",
]

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
MAX_AHEAD_MS = 1000


class BinanceError(Exception):
    """A Binance error answer: ``{"code": code, "msg": msg}`` with HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.status = code, msg, status

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one API key pair the simulated account accepts."""

    api_key: str
    secret: str


def sign(payload: str, secret: str) -> str:
    """Hex HMAC-SHA256, what ccxt (and Binance) put in ``signature``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def parse_params(query: str, body: str) -> dict[str, str]:
    """All parameters of a request (query string, then form body); a repeated name is -1101."""
    params: dict[str, str] = {}
    for part in (query, body):
        for key, value in parse_qsl(part, keep_blank_values=True):
            if key in params:
                raise BinanceError(-1101, f"Duplicate values for parameter '{key}'.")
            params[key] = value
    return params


def _strip_signature(raw: str) -> tuple[str, str | None]:
    """The raw text without its ``signature=`` piece, and that signature."""
    kept: list[str] = []
    signature: str | None = None
    for piece in raw.split("&") if raw else []:
        if piece.startswith("signature="):
            signature = piece[len("signature=") :]
        else:
            kept.append(piece)
    return "&".join(kept), signature


def _check_key(api_key: str | None, creds: Credentials) -> None:
    if not api_key:
        raise BinanceError(-2014, "API-key format invalid.", 401)
    if not hmac.compare_digest(api_key.encode(), creds.api_key.encode()):
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def _check_signature(payload: str, signature: str | None, creds: Credentials) -> None:
    if not signature:
        raise mandatory("signature")
    if not hmac.compare_digest(signature.lower().encode(), sign(payload, creds.secret).encode()):
        raise BinanceError(-1022, "Signature for this request is not valid.")


def _int_param(params: Mapping[str, object], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    text = str(value)
    if not text.isascii() or not text.isdigit():
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(text)


def check_timestamp(params: Mapping[str, object], now_ms: int) -> None:
    """Binance's recvWindow rule against the server clock ``now_ms``."""
    timestamp = _int_param(params, "timestamp")
    if timestamp is None:
        raise mandatory("timestamp")
    recv_window = _int_param(params, "recvWindow")
    window = DEFAULT_RECV_WINDOW if recv_window is None else recv_window
    if window > MAX_RECV_WINDOW:
        raise BinanceError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW}.")
    if timestamp >= now_ms + MAX_AHEAD_MS:
        raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if now_ms - timestamp > window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def verify_rest(raw_query: str, body: str, api_key: str | None, creds: Credentials, now_ms: int) -> dict[str, str]:
    """Check a signed REST request; returns its parameters (without ``signature``) or raises BinanceError."""
    _check_key(api_key, creds)
    query_payload, query_sig = _strip_signature(raw_query)
    body_payload, body_sig = _strip_signature(body)
    _check_signature(query_payload + body_payload, query_sig or body_sig, creds)
    params = parse_params(raw_query, body)
    params.pop("signature", None)
    check_timestamp(params, now_ms)
    return params


def ws_payload(params: Mapping[str, object]) -> str:
    """The text a WebSocket API request signs: every parameter but ``signature``, sorted, ``k=v&...``."""
    return "&".join(f"{k}={_ws_value(params[k])}" for k in sorted(params) if k != "signature")


def _ws_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def verify_ws(params: Mapping[str, object], creds: Credentials, now_ms: int) -> None:
    """Check the signed ``params`` of a WebSocket API request or raise BinanceError."""
    api_key = params.get("apiKey")
    _check_key(api_key if isinstance(api_key, str) else None, creds)
    signature = params.get("signature")
    _check_signature(ws_payload(params), signature if isinstance(signature, str) else None, creds)
    check_timestamp(params, now_ms)
