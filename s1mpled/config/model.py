"""The validated configuration as values: frozen dataclasses, and the pure rules every value obeys.

This is what the rest of the daemon sees of its configuration -- no YAML, no file, no environment: the
loader (``s1mpled.config.load``) builds these from the files, tests and benches build them directly.
The bounds live here because a value's validity is the model's business, whoever builds it: every amount
is a finite decimal with at most 30 decimal places below 1e30 (so sums of a few of them are exact), a
duration lies between 1 ms and 365 days with at most 15 significant digits, and a strategy param is
checked by :meth:`StrategyConfig.decimal_param` with the same bounds as the file's own amounts.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from s1mpled.errors import ConfigError
from s1mpled.model import split_symbol

__all__ = [
    "MAX_DECIMAL_PLACES",
    "MAX_MAGNITUDE",
    "MAX_PARAM_INT",
    "NAME_RE",
    "AlertsConfig",
    "BreakerConfig",
    "Config",
    "LiveConfig",
    "MetricsConfig",
    "PaperConfig",
    "PaperMarketConfig",
    "ReconciliationConfig",
    "ScheduleEntry",
    "StartupConfig",
    "StrategyConfig",
    "abbreviate",
    "decimal_bound_error",
    "is_event_param",
    "is_events_param",
    "parse_decimal",
    "parse_duration",
    "parse_listen",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")  # an operation's or a strategy's name
MAX_DECIMAL_PLACES = 30  # with MAX_MAGNITUDE this bounds every amount to 60 digits: sums below are exact
MAX_MAGNITUDE = 30  # every amount is below 1e30
MIN_DURATION_S, MAX_DURATION_S = 0.001, 365 * 86400.0  # 1 ms .. 365 days
MAX_DURATION_DIGITS = 15  # significant digits of a duration's number (what a float holds exactly)
MAX_PARAM_INT = 10**18  # |int| of a strategy param
_EVENT_SUFFIX, _EVENTS_SUFFIX = "_event", "_events"
_DECIMAL_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One named periodic event of schedule.yaml, published by the scheduler every ``every_s`` seconds."""

    name: str
    every_s: float


@dataclass(frozen=True, slots=True)
class ReconciliationConfig:
    """Which schedule event triggers a periodic reconciliation (§6.2 pull); it always runs at startup."""

    event: str


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The circuit breaker: ``auto_close_after_s`` None means only ``s1mpled resume`` closes it."""

    emergency_exit: bool
    auto_close_after_s: float | None
    max_reconnect_attempts: int


@dataclass(frozen=True, slots=True)
class StartupConfig:
    """A start that waits for the exchange (unreachable, a stream not subscribed) alerts after ``alert_after_s``."""

    alert_after_s: float = 300.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The optional metrics HTTP endpoint: the (IP address, port) to serve on, or None (the default: no port;
    the textfile through the control socket needs none)."""

    listen: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Where critical alerts go (Apprise URLs); empty means the journal only."""

    apprise_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PaperMarketConfig:
    """One simulated market of the paper exchange."""

    symbol: str
    start_price: Decimal
    volatility: Decimal
    liquidity: Decimal
    price_step: Decimal
    amount_step: Decimal


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """The paper exchange: a seeded simulator, so a paper run can be replayed exactly."""

    seed: int
    tick_interval_s: float
    stream_latency_s: float
    fee_rate: Decimal
    balances: dict[str, Decimal]
    markets: dict[str, PaperMarketConfig]
    replay_csv: Path | None


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """A real exchange. ``credentials`` is a bare file name (looked up in ``$CREDENTIALS_DIRECTORY`` when
    the daemon starts) or, when it contains a '/', an absolute path (relative ones resolved at load)."""

    exchange: str
    credentials: str
    urls: dict[str, str]
    rate_limit: bool = True  # ccxt's client-side rate limiter; only a loopback test turns it off
    request_timeout_s: float = 10.0  # every REST call
    heartbeat_s: float = 30.0  # a stream silent this long is dead


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """One strategy instance. ``params`` is the strategy's own business; it validates them and reports
    problems with :meth:`param_error`, which points at the offending line of the config file."""

    name: str
    class_path: str
    symbol: str
    capital: Decimal
    params: dict[str, Any] = field(default_factory=dict)
    file: str = field(default="<config>", repr=False, compare=False)
    key_path: str = field(default="strategy", repr=False, compare=False)
    line: int | None = field(default=None, repr=False, compare=False)
    params_line: int | None = field(default=None, repr=False, compare=False)
    param_lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def base(self) -> str:
        return split_symbol(self.symbol)[0]

    @property
    def quote(self) -> str:
        return split_symbol(self.symbol)[1]

    def param_error(self, key: str, why: str) -> ConfigError:
        """The error for bad param ``key``: at its line, else at ``params:``, else at the strategy."""
        line = self.param_lines.get(key, self.params_line if self.params_line is not None else self.line)
        return ConfigError(self.file, f"{self.key_path}.params.{key}", why, line)

    def decimal_param(self, key: str, default: Decimal | None = None) -> Decimal:
        """Param ``key`` as a finite Decimal (from a number or its quoted text); ConfigError otherwise."""
        value = self.params.get(key, default)
        if value is None:
            raise self.param_error(key, "required, expected a decimal number")
        if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
            raise self.param_error(key, f"expected a decimal number, got {value!r}")
        text = str(value)
        try:
            return parse_decimal(text, plain_number=False)
        except ValueError as exc:
            raise self.param_error(key, f"expected a decimal number, {exc}") from None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration of one operation."""

    path: Path
    operation: str
    mode: str
    state_dir: Path
    control_socket: Path
    schedule_path: Path
    schedule: tuple[ScheduleEntry, ...]
    log_level: str
    shutdown_timeout_s: float
    reconciliation: ReconciliationConfig
    circuit_breaker: BreakerConfig
    alerts: AlertsConfig
    paper: PaperConfig | None
    live: LiveConfig | None
    strategies: tuple[StrategyConfig, ...]
    # True when state_dir is the per-user XDG default: its parents (~/.local/state) may be created.
    state_dir_is_default: bool = False
    startup: StartupConfig = field(default_factory=StartupConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# ------------------------------------------------------------------------------------- value rules


def parse_listen(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` of the metrics HTTP endpoint -> (IP address, port); ValueError saying why.

    HOST is an IP address (IPv6 in brackets: ``[::1]:9464``) or ``localhost`` (127.0.0.1; no name is
    resolved while reading the config). Only a loopback address is accepted unless ``allow_remote``:
    the endpoint has no authentication. PORT is 0 to 65535 (0: one the kernel picks, logged).
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:9464, got {text!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9464, got {text!r}")
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        raise ValueError(f"the port must be a number from 0 to 65535, got {port!r}")
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise ValueError(f"the host must be an IP address or localhost, got {host!r}") from None
    if bracketed != (address.version == 6):
        raise ValueError(f"only an IPv6 address is written in brackets, got {text!r}")
    if not address.is_loopback and not allow_remote:
        raise ValueError(
            f"{address} is not a loopback address: the metrics endpoint has no authentication "
            "(set metrics.allow_remote: true to listen there anyway, behind a firewall)"
        )
    return str(address), int(port)


def parse_duration(value: str | int | float) -> float:
    """``"500ms" | "1.5s" | "5m" | "1h" | "1d" | 30`` -> seconds; plain numbers are seconds.

    A duration lies between 1 ms and 365 days and its number has at most 15 significant digits.
    Raises ValueError; the loader turns it into a ConfigError at the right line.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 500ms, 1.5s, 5m or 1h, got {abbreviate(value)}")
    if isinstance(value, int):
        amount = Decimal(max(min(value, 10**12), -1))  # anything beyond is out of range anyway
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration, got {abbreviate(value)}")
        amount = Decimal(repr(value))
    else:
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(f"expected a duration like 500ms, 1.5s, 5m or 1h, got {abbreviate(value)}")
        digits = match[1].replace(".", "").lstrip("0").rstrip("0")
        if len(digits) > MAX_DURATION_DIGITS:
            raise ValueError(f"expected at most {MAX_DURATION_DIGITS} significant digits, got {abbreviate(value)}")
        amount = Decimal(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    if amount <= 0:
        raise ValueError(f"expected a duration > 0, got {abbreviate(value)}")
    if not Decimal(str(MIN_DURATION_S)) <= amount <= Decimal(str(MAX_DURATION_S)):
        raise ValueError(f"expected a duration from 1ms to 365d, got {abbreviate(value)}")
    return float(amount)


def abbreviate(value: object, *, quote: bool = True, limit: int = 40) -> str:
    """``value`` for an error message, shortened if long (a 400-digit number is not worth 400 bytes)."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else f"{text[: limit - 10]}...{text[-6:]} ({len(text)} characters)"


def decimal_bound_error(value: Decimal) -> str | None:
    """Why ``value`` is not an amount the configuration accepts (finite, <= 30 places, below 1e30), or None."""
    if not value.is_finite():
        return f"expected a finite number, got {abbreviate(value, quote=False)}"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -MAX_DECIMAL_PLACES or (value and value.adjusted() >= MAX_MAGNITUDE):
        shown = abbreviate(value, quote=False)
        return f"at most {MAX_DECIMAL_PLACES} decimal places and below 1e{MAX_MAGNITUDE}, got {shown}"
    return None


def parse_decimal(text: str, plain_number: bool) -> Decimal:
    """A finite Decimal of sane size from a scalar's text (never via float); ValueError says why not."""
    digits = text.replace("_", "") if plain_number else text  # YAML allows 10_000 in plain numbers
    if not _DECIMAL_RE.match(digits):
        raise ValueError(f"got {abbreviate(text)}")
    value = Decimal(digits)  # finite: the regex admits no NaN or Infinity
    if decimal_bound_error(value) is not None:
        bounds = f"at most {MAX_DECIMAL_PLACES} decimal places and below 1e{MAX_MAGNITUDE}"
        raise ValueError(f"{bounds}, got {abbreviate(text)}")
    return value


def is_event_param(key: str) -> bool:
    """Whether a strategy param names schedule events: ``every_event`` (a name), ``stop_events`` (a list)."""
    return key.endswith((_EVENT_SUFFIX, _EVENTS_SUFFIX))


def is_events_param(key: str) -> bool:
    """Whether a strategy param names a *list* of schedule events (``stop_events``)."""
    return key.endswith(_EVENTS_SUFFIX)
