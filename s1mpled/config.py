"""s1mpled.yaml and schedule.yaml -> one validated, frozen :class:`Config`, or one precise ConfigError.

A daemon started by systemd cannot ask what its operator meant, and a restart loop cannot fix a typo, so
every problem in the configuration is reported once, up front, as ``file:line: key.path: expected ..., got
...`` (``ConfigError``, exit 78: systemd does not restart). To have a line number for every key we do not
let PyYAML construct Python objects: ``yaml.compose()`` gives the node tree with marks, and the values are
built here from it. That also lets us refuse what PyYAML silently accepts (a duplicated key keeps the last
value) and build money from the scalar's text: ``capital: 1000.10`` is ``Decimal("1000.10")``, never a float.

Hostile or broken input gets a refusal, never a hang or a traceback: the file is at most 1 MiB, YAML aliases
may expand to at most ``MAX_NODES`` nodes (a "billion laughs" document is refused at its first alias past
that) and nest at most ``MAX_DEPTH`` levels; every number has bounds whatever its spelling -- amounts are
finite decimals with at most 30 decimal places below 1e30, integers have a stated range, durations lie
between 1 ms and 365 days with at most 15 significant digits. A strategy param whose key ends in ``_event``
(``_events`` for a list) names a schedule event and must exist in schedule.yaml.

Defaults follow systemd's conventions: ``$STATE_DIRECTORY`` and ``$RUNTIME_DIRECTORY`` when the unit sets
them, XDG directories otherwise. Relative paths in a file are relative to that file's directory.
This module only reads files; it creates nothing and imports no strategy class.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import yaml

from s1mpled.errors import ConfigError
from s1mpled.model import split_symbol

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MAX_DECIMAL_PLACES",
    "MAX_DEPTH",
    "MAX_MAGNITUDE",
    "MAX_NODES",
    "MAX_PARAM_INT",
    "AlertsConfig",
    "BreakerConfig",
    "Config",
    "LiveConfig",
    "PaperConfig",
    "PaperMarketConfig",
    "ReconciliationConfig",
    "ScheduleEntry",
    "StartupConfig",
    "StrategyConfig",
    "decimal_bound_error",
    "is_event_param",
    "load_config",
    "parse_duration",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = Path("/etc/s1mpled/s1mpled.yaml")
CONFIG_ENV = "S1MPLED_CONFIG"
MODES = ("paper", "live")
LOG_LEVELS = ("debug", "info", "warning", "error")
UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes including the terminating NUL

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
_EVENT_RE = re.compile(r"^[a-z0-9_]{1,64}$")
_CLASS_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", re.ASCII)
_ASSET_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_DECIMAL_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_EXPONENT_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][+-]?[0-9]+$")
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}
MAX_DECIMAL_PLACES = 30  # with MAX_MAGNITUDE this bounds every amount to 60 digits: sums below are exact
MAX_MAGNITUDE = 30  # every amount is below 1e30
MIN_DURATION_S, MAX_DURATION_S = 0.001, 365 * 86400.0  # 1 ms .. 365 days
MAX_DURATION_DIGITS = 15  # significant digits of a duration's number (what a float holds exactly)
_MAX_INT_TEXT = 100  # an integer scalar longer than this is refused before it is converted at all
MAX_PARAM_INT = 10**18  # |int| of a strategy param
MAX_NODES = 10_000  # YAML nodes once aliases are expanded (the example config has about 150)
MAX_DEPTH = 64  # nesting of YAML collections
MAX_FILE_BYTES = 1 << 20
_EVENT_SUFFIX, _EVENTS_SUFFIX = "_event", "_events"

_T = "tag:yaml.org,2002:"
_MAP_TAG, _SEQ_TAG, _STR_TAG, _INT_TAG = _T + "map", _T + "seq", _T + "str", _T + "int"
_FLOAT_TAG, _BOOL_TAG, _NULL_TAG, _TIMESTAMP_TAG = _T + "float", _T + "bool", _T + "null", _T + "timestamp"
_KIND = {_STR_TAG: "a string", _INT_TAG: "an integer", _FLOAT_TAG: "a number", _BOOL_TAG: "a boolean"}
_KIND |= {_NULL_TAG: "null", _TIMESTAMP_TAG: "a timestamp", _MAP_TAG: "a mapping", _SEQ_TAG: "a list"}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


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
            return _parse_decimal(text, plain_number=False)
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


# ------------------------------------------------------------------------------------ public functions


def parse_duration(value: str | int | float) -> float:
    """``"500ms" | "1.5s" | "5m" | "1h" | "1d" | 30`` -> seconds; plain numbers are seconds.

    A duration lies between 1 ms and 365 days and its number has at most 15 significant digits.
    Raises ValueError; the loader turns it into a ConfigError at the right line.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 500ms, 1.5s, 5m or 1h, got {_abbrev(value)}")
    if isinstance(value, int):
        amount = Decimal(max(min(value, 10**12), -1))  # anything beyond is out of range anyway
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration, got {_abbrev(value)}")
        amount = Decimal(repr(value))
    else:
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(f"expected a duration like 500ms, 1.5s, 5m or 1h, got {_abbrev(value)}")
        digits = match[1].replace(".", "").lstrip("0").rstrip("0")
        if len(digits) > MAX_DURATION_DIGITS:
            raise ValueError(f"expected at most {MAX_DURATION_DIGITS} significant digits, got {_abbrev(value)}")
        amount = Decimal(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    if amount <= 0:
        raise ValueError(f"expected a duration > 0, got {_abbrev(value)}")
    if not Decimal(str(MIN_DURATION_S)) <= amount <= Decimal(str(MAX_DURATION_S)):
        raise ValueError(f"expected a duration from 1ms to 365d, got {_abbrev(value)}")
    return float(amount)


def _abbrev(value: object, *, quote: bool = True, limit: int = 40) -> str:
    """``value`` for an error message, shortened if long (a 400-digit number is not worth 400 bytes)."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else f"{text[: limit - 10]}...{text[-6:]} ({len(text)} characters)"


def decimal_bound_error(value: Decimal) -> str | None:
    """Why ``value`` is not an amount the configuration accepts (finite, <= 30 places, below 1e30), or None."""
    if not value.is_finite():
        return f"expected a finite number, got {_abbrev(value, quote=False)}"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -MAX_DECIMAL_PLACES or (value and value.adjusted() >= MAX_MAGNITUDE):
        shown = _abbrev(value, quote=False)
        return f"at most {MAX_DECIMAL_PLACES} decimal places and below 1e{MAX_MAGNITUDE}, got {shown}"
    return None


def is_event_param(key: str) -> bool:
    """Whether a strategy param names schedule events: ``every_event`` (a name), ``stop_events`` (a list)."""
    return key.endswith((_EVENT_SUFFIX, _EVENTS_SUFFIX))


def resolve_config_path(cli_path: str | None, env: Mapping[str, str]) -> Path:
    """``--config``, else ``$S1MPLED_CONFIG``, else /etc/s1mpled/s1mpled.yaml; the file must be readable."""
    path = Path(cli_path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "no such file"
        raise ConfigError(str(path), "(file)", f"cannot read the configuration: {why}")
    if not os.access(path, os.R_OK):
        raise ConfigError(str(path), "(file)", "cannot read the configuration: permission denied")
    return path


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and build the configuration (and its schedule); the first problem is a ConfigError."""
    env = os.environ if env is None else env
    path = resolve_config_path(None, env) if path is None else Path(path)
    doc = _Doc(str(path), path.absolute().parent)
    root = _Map(doc, _compose(doc, _read(doc.file)), "", _TOP_KEYS)
    operation = _match(doc, root.require("operation"), "operation", _NAME_RE)
    mode = _choice(doc, root, "mode", MODES, "paper")
    state_dir = _state_dir(doc, root, env)
    control_socket = _control_socket(doc, root, env, state_dir)
    schedule_path, schedule = _load_schedule(doc, root)
    log_level = _choice(doc, root, "log_level", LOG_LEVELS, "info", fold=True)
    shutdown_timeout_s = _duration(doc, root, "shutdown_timeout", "10s")
    reconciliation = _reconciliation(doc, root, schedule)
    breaker = _breaker(doc, _Map.section(doc, root, "circuit_breaker", optional=True))
    alerts = AlertsConfig(_str_list(doc, _Map.section(doc, root, "alerts", optional=True), "apprise_urls"))
    startup = StartupConfig(_duration(doc, _Map.section(doc, root, "startup", optional=True), "alert_after", "5m"))
    if not root.has(mode):
        raise doc.error(mode, f"required when mode is {mode}", root.get("mode") or root.node)
    paper_map = _Map.section(doc, root, "paper") if root.has("paper") else None
    paper = None if paper_map is None else _paper(doc, paper_map)
    live = _live(doc, _Map.section(doc, root, "live")) if root.has("live") else None
    strategies = _strategies(doc, root, paper if mode == "paper" else None, schedule)
    if mode == "paper" and paper is not None and paper_map is not None:
        _check_coverage(doc, _Map.section(doc, paper_map, "balances"), paper.balances, strategies)
    return Config(
        path=path.absolute(),
        operation=operation,
        mode=mode,
        state_dir=state_dir,
        state_dir_is_default=not root.has("state_dir") and _first_env_path(env, "STATE_DIRECTORY") is None,
        control_socket=control_socket,
        schedule_path=schedule_path,
        schedule=schedule,
        log_level=log_level,
        shutdown_timeout_s=shutdown_timeout_s,
        reconciliation=reconciliation,
        circuit_breaker=breaker,
        alerts=alerts,
        startup=startup,
        paper=paper,
        live=live,
        strategies=strategies,
    )


# ------------------------------------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class _Doc:
    """The file being read: every error names it; relative paths start from its directory."""

    file: str
    directory: Path

    def error(self, key: str, why: str, node: yaml.Node | None) -> ConfigError:
        return ConfigError(self.file, key or "(top level)", why, _line(node))

    def path(self, text: str) -> Path:
        return self.directory / Path(text).expanduser()


def _line(node: yaml.Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode) and node.tag != _NULL_TAG:
        return f"{_KIND.get(node.tag, node.tag)} {_abbrev(node.value)}"
    return _KIND.get(node.tag, f"a node tagged {node.tag}")


def _read(file: str) -> str:
    try:
        with Path(file).open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(file, "(file)", f"larger than {MAX_FILE_BYTES} bytes; not a configuration file")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(file)", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror or exc}") from None


class _TooLarge(yaml.composer.ComposerError):
    """The document expands (through aliases) or nests beyond the limits."""


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts nodes as if every alias were expanded, and limits nesting.

    PyYAML shares an aliased node instead of copying it, so composing is cheap; it is every walk over the
    tree afterwards that a "billion laughs" document (each alias doubling or decupling the size) turns
    into an hour of work. Counting the expanded size while composing refuses such a document at the
    first alias that crosses MAX_NODES, in microseconds. An alias to a node still being composed (a
    recursive structure) is refused too.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def _count(self, size: int, mark: yaml.Mark | None) -> None:
        self._expanded += size
        if self._expanded > MAX_NODES:
            why = f"the document expands to more than {MAX_NODES} YAML nodes (through aliases); refused"
            raise _TooLarge(None, None, why, mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            alias = super().compose_node(parent, index)
            size = None if alias is None else self._sizes.get(id(alias))
            if size is None:
                raise _TooLarge(None, None, "recursive YAML alias (a node that contains itself); refused", mark)
            self._count(size, mark)
            assert alias is not None
            return alias
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooLarge(None, None, f"nested deeper than {MAX_DEPTH} levels; refused", mark)
        start = self._expanded
        node = super().compose_node(parent, index)
        assert node is not None  # None only for an empty document, which never reaches here
        self._depth -= 1
        self._count(1, mark)
        self._sizes[id(node)] = self._expanded - start
        return node


def _syntax_line(text: str, mark: yaml.Mark | None) -> tuple[int | None, bool]:
    """The 1-based line of ``mark``, clamped to the file's last line; and whether only blanks follow it."""
    if mark is None:
        return None, False
    last = max(1, len(text.splitlines()))
    return min(mark.line + 1, last), not text[mark.index :].strip()


def _compose(doc: _Doc, text: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except _TooLarge as exc:
        line, _ = _syntax_line(text, exc.problem_mark)
        raise ConfigError(doc.file, "(document)", str(exc.problem), line) from None
    except yaml.MarkedYAMLError as exc:
        line, at_end = _syntax_line(text, exc.problem_mark or exc.context_mark)
        context_line, _ = _syntax_line(text, exc.context_mark)
        parts = [str(exc.context)] if exc.context else []
        if exc.context and exc.problem_mark is not None and context_line not in (None, line):
            parts.append(f"(from line {context_line})")
        parts += [str(exc.problem)] if exc.problem else []
        parts += ["at the end of the file"] if at_end else []
        raise ConfigError(doc.file, "(syntax)", f"invalid YAML: {' '.join(parts)}", line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(doc.file, "(syntax)", f"invalid YAML: {exc}") from None
    except RecursionError:  # not reached with MAX_DEPTH, kept as the last line of defence
        raise ConfigError(doc.file, "(document)", "nested too deeply; refused") from None
    if node is None:
        raise ConfigError(doc.file, "(document)", "the file is empty, expected a mapping of settings")
    return node


class _Map:
    """A YAML mapping with string keys, no duplicates and (if ``allowed`` is given) no unknown keys."""

    def __init__(
        self,
        doc: _Doc,
        node: yaml.Node,
        path: str,
        allowed: tuple[str, ...] | None = None,
        key_node: yaml.Node | None = None,
    ) -> None:
        if not isinstance(node, yaml.MappingNode) or node.tag != _MAP_TAG:
            raise doc.error(path, f"expected a mapping, got {_kind(node)}", node)
        self.doc, self.node, self.path = doc, node, path
        self.anchor = node if key_node is None else key_node  # where "missing key" errors point
        self.keys: dict[str, yaml.Node] = {}
        self.values: dict[str, yaml.Node] = {}
        for name_node, value_node in node.value:
            self._add(name_node, value_node, allowed)

    def _add(self, key_node: yaml.Node, value_node: yaml.Node, allowed: tuple[str, ...] | None) -> None:
        if key_node.tag == _T + "merge":
            raise self.doc.error(_join(self.path, "<<"), "YAML merge keys are not supported", key_node)
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            raise self.doc.error(self.path, f"keys must be strings, got {_kind(key_node)}", key_node)
        key = str(key_node.value)
        if key in self.keys:
            first = _line(self.keys[key])
            raise self.doc.error(self.at(key), f"duplicate key (first defined on line {first})", key_node)
        if allowed is not None and key not in allowed:
            raise self.doc.error(self.at(key), f"unknown key, expected one of: {', '.join(allowed)}", key_node)
        self.keys[key], self.values[key] = key_node, value_node

    @classmethod
    def section(cls, doc: _Doc, parent: _Map, key: str, optional: bool = False) -> _Map:
        """The mapping under ``parent[key]``; an absent optional section reads as an empty mapping."""
        node = parent.get(key)
        if optional and (node is None or _is_null(node)):  # `alerts:` with all of it commented out
            node = yaml.MappingNode(_MAP_TAG, [], parent.node.start_mark, parent.node.end_mark)
        node = parent.require(key) if node is None else node
        return cls(doc, node, parent.at(key), _SECTION_KEYS[key], parent.keys.get(key, parent.anchor))

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str) -> yaml.Node | None:
        return self.values.get(key)

    def require(self, key: str) -> yaml.Node:
        if key not in self.values:
            raise self.doc.error(self.at(key), "required key is missing", self.anchor)
        return self.values[key]

    def items(self) -> Iterator[tuple[str, yaml.Node]]:
        return iter(self.values.items())


# ---------------------------------------------------------------------------------------- scalars


def _scalar_node(doc: _Doc, node: yaml.Node, key: str, tags: tuple[str, ...], expected: str) -> yaml.ScalarNode:
    """``node`` if it is a scalar whose resolved tag is one of ``tags``; else 'expected ..., got ...'."""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
        raise doc.error(key, f"expected {expected}, got {_kind(node)}", node)
    return node


def _scalar(doc: _Doc, node: yaml.Node, key: str, tags: tuple[str, ...], expected: str) -> str:
    return str(_scalar_node(doc, node, key, tags, expected).value)


def _is_null(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _string(doc: _Doc, node: yaml.Node, key: str) -> str:
    text = _scalar(doc, node, key, (_STR_TAG,), "a string")
    if not text.strip():
        raise doc.error(key, "expected a non-empty string", node)
    return text


def _match(doc: _Doc, node: yaml.Node, key: str, pattern: re.Pattern[str]) -> str:
    text = _scalar(doc, node, key, (_STR_TAG, _INT_TAG), "a string")
    if not pattern.match(text):
        raise doc.error(key, f"expected a name matching {pattern.pattern}, got {text!r}", node)
    return text


def _int_value(doc: _Doc, node: yaml.ScalarNode, key: str, low: int, high: int) -> int:
    """The integer of an int-tagged scalar, in ``low..high`` (the text is checked before it is converted)."""
    expected = f"expected an integer from {low} to {high}"
    text = str(node.value)
    if len(text) > _MAX_INT_TEXT:
        raise doc.error(key, f"{expected}, got {len(text)} characters", node)
    value: int = _CONSTRUCTOR.construct_yaml_int(node)
    if not low <= value <= high:
        raise doc.error(key, f"{expected}, got {value}", node)
    return value


def _integer(doc: _Doc, node: yaml.Node, key: str, low: int, high: int) -> int:
    return _int_value(doc, _scalar_node(doc, node, key, (_INT_TAG,), "an integer"), key, low, high)


def _boolean(doc: _Doc, node: yaml.Node, key: str) -> bool:
    text = _scalar(doc, node, key, (_BOOL_TAG,), "true or false")
    return bool(_CONSTRUCTOR.bool_values[text.lower()])


def _parse_decimal(text: str, plain_number: bool) -> Decimal:
    """A finite Decimal of sane size from a scalar's text (never via float); ValueError says why not."""
    digits = text.replace("_", "") if plain_number else text  # YAML allows 10_000 in plain numbers
    if not _DECIMAL_RE.match(digits):
        raise ValueError(f"got {_abbrev(text)}")
    value = Decimal(digits)  # finite: the regex admits no NaN or Infinity
    if decimal_bound_error(value) is not None:
        bounds = f"at most {MAX_DECIMAL_PLACES} decimal places and below 1e{MAX_MAGNITUDE}"
        raise ValueError(f"{bounds}, got {_abbrev(text)}")
    return value


def _decimal(
    doc: _Doc, node: yaml.Node, key: str, low: Decimal, high: Decimal | None = None, *, strict: bool
) -> Decimal:
    """An amount from the scalar's text (quoted or not) in [low, high) -- or (low, high) when ``strict``."""
    bound = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and < {high}")
    expected = f"a decimal number {bound}"
    text = _scalar(doc, node, key, (_STR_TAG, _INT_TAG, _FLOAT_TAG), expected)
    try:
        value = _parse_decimal(text, plain_number=node.tag != _STR_TAG)
    except ValueError as exc:
        raise doc.error(key, f"expected {expected}, {exc}", node) from None
    if value < low or (strict and value == low) or (high is not None and value >= high):
        raise doc.error(key, f"expected {expected}, got {_abbrev(text, quote=False)}", node)
    return value


def _duration_node(doc: _Doc, node: yaml.Node, key: str) -> float:
    text = _scalar(doc, node, key, (_STR_TAG, _INT_TAG, _FLOAT_TAG), "a duration like 500ms, 1.5s, 5m or 1h")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise doc.error(key, str(exc), node) from None


def _duration(doc: _Doc, parent: _Map, key: str, default: str) -> float:
    node = parent.get(key)
    return parse_duration(default) if node is None else _duration_node(doc, node, parent.at(key))


def _choice(doc: _Doc, parent: _Map, key: str, choices: tuple[str, ...], default: str, *, fold: bool = False) -> str:
    node = parent.get(key)
    if node is None:
        return default
    text = _scalar(doc, node, parent.at(key), (_STR_TAG,), f"one of {', '.join(choices)}")
    if (text.lower() if fold else text) not in choices:
        raise doc.error(parent.at(key), f"expected one of {', '.join(choices)}, got {text!r}", node)
    return text.lower() if fold else text


def _symbol(doc: _Doc, node: yaml.Node, key: str) -> str:
    text = _string(doc, node, key)
    try:
        base, quote = split_symbol(text)
    except ValueError:
        raise doc.error(key, f"expected a symbol like BTC/USDT, got {text!r}", node) from None
    if not (_ASSET_RE.match(base) and _ASSET_RE.match(quote)):
        raise doc.error(key, f"expected a symbol like BTC/USDT, got {text!r}", node)
    return text


def _str_list(doc: _Doc, parent: _Map, key: str) -> tuple[str, ...]:
    node = parent.get(key)
    if node is None or _is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ_TAG:
        raise doc.error(parent.at(key), f"expected a list of strings, got {_kind(node)}", node)
    return tuple(_string(doc, item, f"{parent.at(key)}[{i}]") for i, item in enumerate(node.value))


def _file_path(doc: _Doc, node: yaml.Node, key: str, must_exist: bool = False) -> Path:
    path = doc.path(_string(doc, node, key))
    if must_exist and not path.is_file():
        raise doc.error(key, f"no such file: {path}", node)
    return path


# --------------------------------------------------------------------------------------- sections

_TOP_KEYS = (
    "operation",
    "mode",
    "state_dir",
    "control_socket",
    "schedule",
    "log_level",
    "shutdown_timeout",
    "reconciliation",
    "circuit_breaker",
    "alerts",
    "startup",
    "paper",
    "live",
    "strategies",
)
_ATTEMPTS = "max_reconnect_attempts"
_EXCHANGE_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_HTTP, _WS = ("https://", "http://"), ("wss://", "ws://")
_MARKET_KEYS = ("start_price", "volatility", "liquidity", "price_step", "amount_step")
_STRATEGY_KEYS = ("name", "class", "symbol", "capital", "params")
_SECTION_KEYS: dict[str, tuple[str, ...] | None] = {
    "reconciliation": ("event",),
    "circuit_breaker": ("emergency_exit", "auto_close_after", "max_reconnect_attempts"),
    "alerts": ("apprise_urls",),
    "startup": ("alert_after",),
    "paper": ("seed", "tick_interval", "stream_latency", "fee_rate", "balances", "replay_csv", "markets"),
    "live": ("exchange", "credentials", "urls", "rate_limit", "request_timeout", "heartbeat"),
    "balances": None,
    "markets": None,
    "urls": ("http", "ws", "rest", "streams", "ws_api"),
    "params": None,
    "events": None,
}


def _first_env_path(env: Mapping[str, str], name: str) -> Path | None:
    """systemd's ``$STATE_DIRECTORY``-style variables: ':'-separated, the first one is ours."""
    first = env.get(name, "").split(":")[0]
    return Path(first) if first else None


def _state_dir(doc: _Doc, root: _Map, env: Mapping[str, str]) -> Path:
    node = root.get("state_dir")
    if node is not None:
        return _file_path(doc, node, "state_dir")
    systemd = _first_env_path(env, "STATE_DIRECTORY")
    if systemd is not None:
        return systemd
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: relative values are ignored
        return Path(xdg) / "s1mpled"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "s1mpled"


def _control_socket(doc: _Doc, root: _Map, env: Mapping[str, str], state_dir: Path) -> Path:
    node = root.get("control_socket")
    runtime = _first_env_path(env, "RUNTIME_DIRECTORY")
    if node is not None:
        path = _file_path(doc, node, "control_socket")
    else:
        path = (runtime if runtime is not None else state_dir) / "control.sock"
    if len(os.fsencode(path)) > UNIX_SOCKET_MAX:
        why = f"a unix socket path is at most {UNIX_SOCKET_MAX} bytes, got {len(os.fsencode(path))}: {path}"
        raise doc.error("control_socket", why, node)
    return path


def _load_schedule(doc: _Doc, root: _Map) -> tuple[Path, tuple[ScheduleEntry, ...]]:
    node = root.get("schedule")
    path = doc.directory / "schedule.yaml" if node is None else _file_path(doc, node, "schedule")
    if not path.is_file():
        raise doc.error("schedule", f"cannot read the schedule {path}: no such file", node)
    sched_doc = _Doc(str(path), path.parent)
    top = _Map(sched_doc, _compose(sched_doc, _read(str(path))), "", ("events",))
    events = _Map(sched_doc, top.require("events"), "events", key_node=top.keys["events"])
    entries = [_schedule_entry(sched_doc, events, name, value) for name, value in events.items()]
    return path, tuple(sorted(entries, key=lambda entry: entry.name))


def _schedule_entry(doc: _Doc, events: _Map, name: str, node: yaml.Node) -> ScheduleEntry:
    if not _EVENT_RE.match(name):
        raise doc.error(events.at(name), f"expected an event name matching {_EVENT_RE.pattern}", events.keys[name])
    entry = _Map(doc, node, events.at(name), ("every",), events.keys[name])
    return ScheduleEntry(name, _duration_node(doc, entry.require("every"), entry.at("every")))


def _reconciliation(doc: _Doc, root: _Map, schedule: tuple[ScheduleEntry, ...]) -> ReconciliationConfig:
    section = _Map.section(doc, root, "reconciliation", optional=True)
    node = section.get("event")
    event = "five_minute_reconciliation_tick" if node is None else _string(doc, node, section.at("event"))
    names = [entry.name for entry in schedule]
    if event not in names:
        why = f"no schedule event named {event!r}; the schedule has: {', '.join(names) or '(none)'}"
        raise doc.error(section.at("event"), why, node if node is not None else root.keys.get("reconciliation"))
    return ReconciliationConfig(event)


def _breaker(doc: _Doc, section: _Map) -> BreakerConfig:
    emergency, attempts = section.get("emergency_exit"), section.get("max_reconnect_attempts")
    auto_close_s = (
        None if _is_null(section.get("auto_close_after")) else _duration(doc, section, "auto_close_after", "5m")
    )
    return BreakerConfig(
        emergency_exit=emergency is not None and _boolean(doc, emergency, section.at("emergency_exit")),
        auto_close_after_s=auto_close_s,
        max_reconnect_attempts=5 if attempts is None else _integer(doc, attempts, section.at(_ATTEMPTS), 1, 1000),
    )


def _paper(doc: _Doc, section: _Map) -> PaperConfig:
    seed, fee, csv = section.get("seed"), section.get("fee_rate"), section.get("replay_csv")
    fee_rate = Decimal("0.001")
    if fee is not None:
        fee_rate = _decimal(doc, fee, section.at("fee_rate"), Decimal(0), Decimal("0.1"), strict=False)
    return PaperConfig(
        seed=0 if seed is None else _integer(doc, seed, section.at("seed"), -(2**63), 2**63 - 1),
        tick_interval_s=_duration(doc, section, "tick_interval", "1s"),
        stream_latency_s=0.0
        if section.get("stream_latency") is None
        else _duration(doc, section, "stream_latency", "1s"),
        fee_rate=fee_rate,
        balances=_balances(doc, _Map.section(doc, section, "balances")),
        markets=_markets(doc, _Map.section(doc, section, "markets")),
        replay_csv=None if csv is None or _is_null(csv) else _file_path(doc, csv, section.at("replay_csv"), True),
    )


def _balances(doc: _Doc, section: _Map) -> dict[str, Decimal]:
    balances: dict[str, Decimal] = {}
    for asset, node in section.items():
        if not _ASSET_RE.match(asset):
            raise doc.error(section.at(asset), f"expected an asset name like USDT, got {asset!r}", section.keys[asset])
        balances[asset] = _decimal(doc, node, section.at(asset), Decimal(0), strict=False)
    return balances


def _markets(doc: _Doc, section: _Map) -> dict[str, PaperMarketConfig]:
    if not section.values:
        raise doc.error(section.path, "expected at least one market", section.node)
    markets: dict[str, PaperMarketConfig] = {}
    for symbol, node in section.items():
        _symbol(doc, section.keys[symbol], section.at(symbol))
        markets[symbol] = _market(doc, _Map(doc, node, section.at(symbol), _MARKET_KEYS, section.keys[symbol]), symbol)
    return markets


def _market(doc: _Doc, market: _Map, symbol: str) -> PaperMarketConfig:
    def amount(key: str, low: Decimal = Decimal(0), high: Decimal | None = None, strict: bool = True) -> Decimal:
        return _decimal(doc, market.require(key), market.at(key), low, high, strict=strict)

    config = PaperMarketConfig(
        symbol=symbol,
        start_price=amount("start_price"),
        volatility=amount("volatility", high=Decimal(1), strict=False),
        liquidity=amount("liquidity"),
        price_step=amount("price_step"),
        amount_step=amount("amount_step"),
    )
    if config.liquidity < config.amount_step:  # nothing could ever fill
        why = f"expected at least amount_step {config.amount_step}, got {config.liquidity}"
        raise doc.error(market.at("liquidity"), why, market.get("liquidity"))
    return config


def _live(doc: _Doc, section: _Map) -> LiveConfig:
    credentials = _string(doc, section.require("credentials"), section.at("credentials"))
    if "/" in credentials:
        credentials = str(doc.path(credentials))
    urls = _Map.section(doc, section, "urls", optional=True) if not _is_null(section.get("urls")) else None
    return LiveConfig(
        exchange=_match(doc, section.require("exchange"), section.at("exchange"), _EXCHANGE_RE),
        credentials=credentials,
        urls={} if urls is None else _urls(doc, section, urls),
        rate_limit=section.get("rate_limit") is None
        or _boolean(doc, section.require("rate_limit"), section.at("rate_limit")),
        request_timeout_s=_duration(doc, section, "request_timeout", "10s"),
        heartbeat_s=_duration(doc, section, "heartbeat", "30s"),
    )


# One host serving every family (the loopback simulator) or one URL per family (Binance's own testnet:
# REST on testnet.binance.vision, streams on stream.testnet..., the WebSocket API on ws-api.testnet...).
_URL_SETS = {("http", "ws"): "one host", ("rest", "streams", "ws_api"): "one URL per endpoint family"}
_URL_SCHEMES = {"http": _HTTP, "rest": _HTTP, "ws": _WS, "streams": _WS, "ws_api": _WS}


def _urls(doc: _Doc, section: _Map, urls: _Map) -> dict[str, str]:
    """live.urls: every endpoint family redirected, or none, so nothing reaches the real exchange by accident."""
    values = {key: _string(doc, node, urls.at(key)) for key, node in urls.items()}
    for key, value in values.items():
        scheme = next((s for s in _URL_SCHEMES[key] if value.startswith(s)), None)
        if scheme is None or value == scheme or any(c.isspace() for c in value):
            why = f"expected a URL starting with {' or '.join(_URL_SCHEMES[key])}, got {value!r}"
            raise doc.error(urls.at(key), why, urls.get(key))
    if values and tuple(k for k in _URL_SCHEMES if k in values) not in _URL_SETS:
        sets = "; or ".join(f"{', '.join(keys)} ({what})" for keys, what in _URL_SETS.items())
        why = f"expected either {sets}; got {', '.join(sorted(values))}"
        raise doc.error(section.at("urls"), why, section.keys.get("urls"))
    return {key: value.rstrip("/") for key, value in values.items()}


# ------------------------------------------------------------------------------------- strategies


def _strategies(
    doc: _Doc, root: _Map, paper: PaperConfig | None, schedule: tuple[ScheduleEntry, ...]
) -> tuple[StrategyConfig, ...]:
    node = root.require("strategies")
    if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ_TAG or not node.value:
        raise doc.error("strategies", f"expected a list of at least one strategy, got {_kind(node)}", node)
    strategies: list[StrategyConfig] = []
    for index, item_node in enumerate(node.value):
        item = _Map(doc, item_node, f"strategies[{index}]", _STRATEGY_KEYS)
        strategy = _strategy(doc, item)
        _check_event_params(doc, item, strategy, schedule)
        if any(other.name == strategy.name for other in strategies):
            raise doc.error(item.at("name"), f"duplicate strategy name {strategy.name!r}", item.get("name"))
        if paper is not None:
            _check_paper_symbol(doc, item, strategy, paper)
        strategies.append(strategy)
    return tuple(strategies)


def _check_event_params(doc: _Doc, item: _Map, strategy: StrategyConfig, schedule: tuple[ScheduleEntry, ...]) -> None:
    """A param named ``*_event`` (``*_events``: a list) names schedule events: each must exist in schedule.yaml.

    Otherwise a typo (``every_event: stratgy_tick``) would be accepted and the strategy would wait forever
    for an event nobody publishes. (A default a strategy falls back to when the key is absent is the
    strategy's business; the built-in DCA's ``strategy_tick`` is in the shipped schedule.)
    """
    names = [entry.name for entry in schedule]
    params = _Map(doc, item.values["params"], item.at("params")) if strategy.params else None
    for key, value in strategy.params.items():
        if not is_event_param(key):
            continue
        assert params is not None
        node, where = params.values[key], params.at(key)
        if not key.endswith(_EVENTS_SUFFIX):
            named = [(where, value, node)]
        elif isinstance(value, list) and isinstance(node, yaml.SequenceNode):
            named = [(f"{where}[{i}]", v, n) for i, (v, n) in enumerate(zip(value, node.value, strict=True))]
        else:
            raise doc.error(where, f"expected a list of schedule event names, got {_abbrev(value)}", node)
        for at, event, event_node in named:
            if not isinstance(event, str):
                raise doc.error(at, f"expected the name of a schedule event, got {_abbrev(event)}", event_node)
            if event not in names:
                why = f"no schedule event named {event!r}; the schedule has: {', '.join(names) or '(none)'}"
                raise doc.error(at, why, event_node)


def _check_paper_symbol(doc: _Doc, item: _Map, strategy: StrategyConfig, paper: PaperConfig) -> None:
    """In paper mode a strategy trades a simulated market whose quote asset has a balance."""
    if strategy.symbol not in paper.markets:
        why = f"{strategy.symbol} is not a paper market; paper.markets has: {', '.join(paper.markets)}"
        raise doc.error(item.at("symbol"), why, item.get("symbol"))
    if strategy.quote not in paper.balances:
        why = f"quote asset {strategy.quote} is not in paper.balances ({', '.join(paper.balances) or 'empty'})"
        raise doc.error(item.at("symbol"), why, item.get("symbol"))


def _strategy(doc: _Doc, item: _Map) -> StrategyConfig:
    name = _match(doc, item.require("name"), item.at("name"), _NAME_RE)
    class_path = _string(doc, item.require("class"), item.at("class"))
    if not _CLASS_RE.match(class_path):
        raise doc.error(item.at("class"), f"expected 'package.module:Class', got {class_path!r}", item.get("class"))
    params_node = item.get("params")
    params = None
    if params_node is not None and not _is_null(params_node):
        params = _Map(doc, params_node, item.at("params"), key_node=item.keys["params"])
    return StrategyConfig(
        name=name,
        class_path=class_path,
        symbol=_symbol(doc, item.require("symbol"), item.at("symbol")),
        capital=_decimal(doc, item.require("capital"), item.at("capital"), Decimal(0), strict=True),
        params={} if params is None else {key: _free(doc, node, params.at(key), set()) for key, node in params.items()},
        file=doc.file,
        key_path=item.path,
        line=_line(item.node),
        params_line=_line(item.keys.get("params")),
        param_lines={} if params is None else {key: node.start_mark.line + 1 for key, node in params.keys.items()},
    )


def _free(doc: _Doc, node: yaml.Node, key: str, active: set[int]) -> Any:
    """A strategy param: Decimal for numbers with '.' or an exponent, else what YAML means (dup-checked)."""
    if id(node) in active:
        raise doc.error(key, "recursive YAML alias", node)
    if isinstance(node, yaml.ScalarNode):
        return _free_scalar(doc, node, key)
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
        return [_free(doc, item, f"{key}[{i}]", active) for i, item in enumerate(node.value)]
    mapping = _Map(doc, node, key)
    return {name: _free(doc, value, mapping.at(name), active) for name, value in mapping.items()}


def _free_scalar(doc: _Doc, node: yaml.ScalarNode, key: str) -> Any:
    text = str(node.value)
    if node.tag == _FLOAT_TAG or (node.tag == _STR_TAG and node.style is None and _EXPONENT_RE.match(text)):
        try:
            return _parse_decimal(text, plain_number=True)
        except ValueError as exc:
            raise doc.error(key, f"expected a finite decimal number, {exc}", node) from None
    if node.tag == _INT_TAG:
        return _int_value(doc, node, key, -MAX_PARAM_INT + 1, MAX_PARAM_INT - 1)
    if node.tag == _BOOL_TAG:
        return _boolean(doc, node, key)
    if node.tag == _NULL_TAG:
        return None
    if node.tag in (_STR_TAG, _TIMESTAMP_TAG):
        return text
    raise doc.error(key, f"unsupported YAML tag {node.tag}", node)


def _check_coverage(
    doc: _Doc, balances_map: _Map, balances: dict[str, Decimal], strategies: tuple[StrategyConfig, ...]
) -> None:
    """Paper balances must cover the capital of the strategies sharing each quote asset."""
    by_quote: dict[str, list[StrategyConfig]] = {}
    for strategy in strategies:
        by_quote.setdefault(strategy.quote, []).append(strategy)
    for quote, users in by_quote.items():
        with localcontext(prec=200):  # amounts have at most 60 digits: the sum is exact
            total = sum((s.capital for s in users), Decimal(0))
        if total > balances[quote]:
            parts = " + ".join(f"{s.name} {s.capital}" for s in users)
            why = f"expected at least the strategies' capital {total} ({parts}), got {balances[quote]}"
            raise doc.error(balances_map.at(quote), why, balances_map.get(quote))
