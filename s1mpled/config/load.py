"""s1mpled.yaml and schedule.yaml -> one validated, frozen :class:`Config`, or one precise ConfigError.

A daemon started by systemd cannot ask what its operator meant, and a restart loop cannot fix a typo, so
every problem in the configuration is reported once, up front, as ``file:line: key.path: expected ..., got
...`` (``ConfigError``, exit 78: systemd does not restart). The values are read from line-marked YAML nodes
(``nodes``) into the frozen model (``model``); this module is the schema in between: which sections and
keys exist, their defaults, and the checks that span several of them (every schedule event a strategy or
the reconciliation names exists in schedule.yaml, paper balances cover the strategies' capital). A strategy
param whose key ends in ``_event`` (``_events`` for a list) names a schedule event and must exist.

This module only reads files; it creates nothing and imports no strategy class.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, localcontext
from pathlib import Path

import yaml

from s1mpled.config.model import (
    NAME_RE,
    AlertsConfig,
    BreakerConfig,
    Config,
    LiveConfig,
    MetricsConfig,
    PaperConfig,
    PaperMarketConfig,
    ReconciliationConfig,
    ScheduleEntry,
    StartupConfig,
    StrategyConfig,
    abbreviate,
    is_event_param,
    is_events_param,
    parse_listen,
)
from s1mpled.config.nodes import (
    ASSET_RE,
    SEQ_TAG,
    Doc,
    YamlMap,
    compose,
    duration_at,
    is_null,
    kind_of,
    line_of,
    read_boolean,
    read_choice,
    read_decimal,
    read_duration,
    read_file,
    read_integer,
    read_name,
    read_param,
    read_path,
    read_str_list,
    read_string,
    read_symbol,
)
from s1mpled.config.paths import control_socket_of, first_env_path, resolve_config_path, state_dir_of

__all__ = ["LOG_LEVELS", "MODES", "load_config"]

MODES = ("paper", "live")
LOG_LEVELS = ("debug", "info", "warning", "error")

# ------------------------------------------------------------------------------------------ the schema
# A new section: its keys here (_TOP_KEYS and _SECTION_KEYS), its frozen dataclass in ``model`` (and a field
# of Config), a reader below that builds it from ``_section(doc, root, NAME)``, one line in load_config.

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
    "metrics",
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
    "metrics": ("listen", "allow_remote"),
    "paper": ("seed", "tick_interval", "stream_latency", "fee_rate", "balances", "replay_csv", "markets"),
    "live": ("exchange", "credentials", "urls", "rate_limit", "request_timeout", "heartbeat"),
    "balances": None,
    "markets": None,
    "urls": ("http", "ws", "rest", "streams", "ws_api"),
    "params": None,
    "events": None,
}

_EVENT_RE = re.compile(r"^[a-z0-9_]{1,64}$")
_CLASS_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", re.ASCII)


def _section(doc: Doc, parent: YamlMap, key: str, optional: bool = False) -> YamlMap:
    """The section ``parent[key]`` with the keys the schema allows it (an absent optional one is empty)."""
    return YamlMap.section(doc, parent, key, _SECTION_KEYS[key], optional)


# --------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and build the configuration (and its schedule); the first problem is a ConfigError."""
    env = os.environ if env is None else env
    path = resolve_config_path(None, env) if path is None else Path(path)
    doc = Doc(str(path), path.absolute().parent)
    root = YamlMap(doc, compose(doc, read_file(doc.file)), "", _TOP_KEYS)
    operation = read_name(doc, root.require("operation"), "operation", NAME_RE)
    mode = read_choice(doc, root, "mode", MODES, "paper")
    state_dir = state_dir_of(doc, root, env)
    control_socket = control_socket_of(doc, root, env, lambda: state_dir)
    schedule_path, schedule = _load_schedule(doc, root)
    log_level = read_choice(doc, root, "log_level", LOG_LEVELS, "info", fold=True)
    shutdown_timeout_s = duration_at(doc, root, "shutdown_timeout", "10s")
    reconciliation = _reconciliation(doc, root, schedule)
    breaker = _breaker(doc, _section(doc, root, "circuit_breaker", optional=True))
    alerts = AlertsConfig(read_str_list(doc, _section(doc, root, "alerts", optional=True), "apprise_urls"))
    startup = StartupConfig(duration_at(doc, _section(doc, root, "startup", optional=True), "alert_after", "5m"))
    metrics = _metrics(doc, _section(doc, root, "metrics", optional=True))
    if not root.has(mode):
        raise doc.error(mode, f"required when mode is {mode}", root.get("mode") or root.node)
    paper_map = _section(doc, root, "paper") if root.has("paper") else None
    paper = None if paper_map is None else _paper(doc, paper_map)
    live = _live(doc, _section(doc, root, "live")) if root.has("live") else None
    strategies = _strategies(doc, root, paper if mode == "paper" else None, schedule)
    if mode == "paper" and paper is not None and paper_map is not None:
        _check_coverage(doc, _section(doc, paper_map, "balances"), paper.balances, strategies)
    return Config(
        path=path.absolute(),
        operation=operation,
        mode=mode,
        state_dir=state_dir,
        state_dir_is_default=not root.has("state_dir") and first_env_path(env, "STATE_DIRECTORY") is None,
        control_socket=control_socket,
        schedule_path=schedule_path,
        schedule=schedule,
        log_level=log_level,
        shutdown_timeout_s=shutdown_timeout_s,
        reconciliation=reconciliation,
        circuit_breaker=breaker,
        alerts=alerts,
        startup=startup,
        metrics=metrics,
        paper=paper,
        live=live,
        strategies=strategies,
    )


def _metrics(doc: Doc, section: YamlMap) -> MetricsConfig:
    """metrics.listen: HOST:PORT of the optional HTTP endpoint, loopback unless metrics.allow_remote."""
    remote = section.get("allow_remote")
    allow_remote = remote is not None and read_boolean(doc, remote, section.at("allow_remote"))
    listen = section.get("listen")
    if listen is None or is_null(listen):
        return MetricsConfig()
    try:
        return MetricsConfig(parse_listen(read_string(doc, listen, section.at("listen")), allow_remote=allow_remote))
    except ValueError as exc:
        raise doc.error(section.at("listen"), str(exc), listen) from None


def _load_schedule(doc: Doc, root: YamlMap) -> tuple[Path, tuple[ScheduleEntry, ...]]:
    node = root.get("schedule")
    path = doc.directory / "schedule.yaml" if node is None else read_path(doc, node, "schedule")
    if not path.is_file():
        raise doc.error("schedule", f"cannot read the schedule {path}: no such file", node)
    sched_doc = Doc(str(path), path.parent)
    top = YamlMap(sched_doc, compose(sched_doc, read_file(str(path))), "", ("events",))
    events = YamlMap(sched_doc, top.require("events"), "events", key_node=top.keys["events"])
    entries = [_schedule_entry(sched_doc, events, name, value) for name, value in events.items()]
    return path, tuple(sorted(entries, key=lambda entry: entry.name))


def _schedule_entry(doc: Doc, events: YamlMap, name: str, node: yaml.Node) -> ScheduleEntry:
    if not _EVENT_RE.match(name):
        raise doc.error(events.at(name), f"expected an event name matching {_EVENT_RE.pattern}", events.keys[name])
    entry = YamlMap(doc, node, events.at(name), ("every",), events.keys[name])
    return ScheduleEntry(name, read_duration(doc, entry.require("every"), entry.at("every")))


def _reconciliation(doc: Doc, root: YamlMap, schedule: tuple[ScheduleEntry, ...]) -> ReconciliationConfig:
    section = _section(doc, root, "reconciliation", optional=True)
    node = section.get("event")
    event = "five_minute_reconciliation_tick" if node is None else read_string(doc, node, section.at("event"))
    names = [entry.name for entry in schedule]
    if event not in names:
        why = f"no schedule event named {event!r}; the schedule has: {', '.join(names) or '(none)'}"
        raise doc.error(section.at("event"), why, node if node is not None else root.keys.get("reconciliation"))
    return ReconciliationConfig(event)


def _breaker(doc: Doc, section: YamlMap) -> BreakerConfig:
    emergency, attempts = section.get("emergency_exit"), section.get("max_reconnect_attempts")
    auto_close_s = (
        None if is_null(section.get("auto_close_after")) else duration_at(doc, section, "auto_close_after", "5m")
    )
    return BreakerConfig(
        emergency_exit=emergency is not None and read_boolean(doc, emergency, section.at("emergency_exit")),
        auto_close_after_s=auto_close_s,
        max_reconnect_attempts=5 if attempts is None else read_integer(doc, attempts, section.at(_ATTEMPTS), 1, 1000),
    )


def _paper(doc: Doc, section: YamlMap) -> PaperConfig:
    seed, fee, csv = section.get("seed"), section.get("fee_rate"), section.get("replay_csv")
    fee_rate = Decimal("0.001")
    if fee is not None:
        fee_rate = read_decimal(doc, fee, section.at("fee_rate"), Decimal(0), Decimal("0.1"), strict=False)
    return PaperConfig(
        seed=0 if seed is None else read_integer(doc, seed, section.at("seed"), -(2**63), 2**63 - 1),
        tick_interval_s=duration_at(doc, section, "tick_interval", "1s"),
        stream_latency_s=0.0
        if section.get("stream_latency") is None
        else duration_at(doc, section, "stream_latency", "1s"),
        fee_rate=fee_rate,
        balances=_balances(doc, _section(doc, section, "balances")),
        markets=_markets(doc, _section(doc, section, "markets")),
        replay_csv=None if csv is None or is_null(csv) else read_path(doc, csv, section.at("replay_csv"), True),
    )


def _balances(doc: Doc, section: YamlMap) -> dict[str, Decimal]:
    balances: dict[str, Decimal] = {}
    for asset, node in section.items():
        if not ASSET_RE.match(asset):
            raise doc.error(section.at(asset), f"expected an asset name like USDT, got {asset!r}", section.keys[asset])
        balances[asset] = read_decimal(doc, node, section.at(asset), Decimal(0), strict=False)
    return balances


def _markets(doc: Doc, section: YamlMap) -> dict[str, PaperMarketConfig]:
    if not section.values:
        raise doc.error(section.path, "expected at least one market", section.node)
    markets: dict[str, PaperMarketConfig] = {}
    for symbol, node in section.items():
        read_symbol(doc, section.keys[symbol], section.at(symbol))
        markets[symbol] = _market(
            doc, YamlMap(doc, node, section.at(symbol), _MARKET_KEYS, section.keys[symbol]), symbol
        )
    return markets


def _market(doc: Doc, market: YamlMap, symbol: str) -> PaperMarketConfig:
    def amount(key: str, low: Decimal = Decimal(0), high: Decimal | None = None, strict: bool = True) -> Decimal:
        return read_decimal(doc, market.require(key), market.at(key), low, high, strict=strict)

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


def _live(doc: Doc, section: YamlMap) -> LiveConfig:
    credentials_node, credentials_key = section.require("credentials"), section.at("credentials")
    credentials = read_string(doc, credentials_node, credentials_key)
    if "/" in credentials:
        credentials = str(read_path(doc, credentials_node, credentials_key))
    urls = _section(doc, section, "urls", optional=True) if not is_null(section.get("urls")) else None
    return LiveConfig(
        exchange=read_name(doc, section.require("exchange"), section.at("exchange"), _EXCHANGE_RE),
        credentials=credentials,
        urls={} if urls is None else _urls(doc, section, urls),
        rate_limit=section.get("rate_limit") is None
        or read_boolean(doc, section.require("rate_limit"), section.at("rate_limit")),
        request_timeout_s=duration_at(doc, section, "request_timeout", "10s"),
        heartbeat_s=duration_at(doc, section, "heartbeat", "30s"),
    )


# One host serving every family (the loopback simulator) or one URL per family (Binance's own testnet:
# REST on testnet.binance.vision, streams on stream.testnet..., the WebSocket API on ws-api.testnet...).
_URL_SETS = {("http", "ws"): "one host", ("rest", "streams", "ws_api"): "one URL per endpoint family"}
_URL_SCHEMES = {"http": _HTTP, "rest": _HTTP, "ws": _WS, "streams": _WS, "ws_api": _WS}


def _urls(doc: Doc, section: YamlMap, urls: YamlMap) -> dict[str, str]:
    """live.urls: every endpoint family redirected, or none, so nothing reaches the real exchange by accident."""
    values = {key: read_string(doc, node, urls.at(key)) for key, node in urls.items()}
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
    doc: Doc, root: YamlMap, paper: PaperConfig | None, schedule: tuple[ScheduleEntry, ...]
) -> tuple[StrategyConfig, ...]:
    node = root.require("strategies")
    if not isinstance(node, yaml.SequenceNode) or node.tag != SEQ_TAG or not node.value:
        raise doc.error("strategies", f"expected a list of at least one strategy, got {kind_of(node)}", node)
    strategies: list[StrategyConfig] = []
    for index, item_node in enumerate(node.value):
        item = YamlMap(doc, item_node, f"strategies[{index}]", _STRATEGY_KEYS)
        strategy = _strategy(doc, item)
        _check_event_params(doc, item, strategy, schedule)
        if any(other.name == strategy.name for other in strategies):
            raise doc.error(item.at("name"), f"duplicate strategy name {strategy.name!r}", item.get("name"))
        if paper is not None:
            _check_paper_symbol(doc, item, strategy, paper)
        strategies.append(strategy)
    return tuple(strategies)


def _check_event_params(doc: Doc, item: YamlMap, strategy: StrategyConfig, schedule: tuple[ScheduleEntry, ...]) -> None:
    """A param named ``*_event`` (``*_events``: a list) names schedule events: each must exist in schedule.yaml.

    Otherwise a typo (``every_event: stratgy_tick``) would be accepted and the strategy would wait forever
    for an event nobody publishes. (A default a strategy falls back to when the key is absent is the
    strategy's business; the built-in DCA's ``strategy_tick`` is in the shipped schedule.)
    """
    names = [entry.name for entry in schedule]
    params = YamlMap(doc, item.values["params"], item.at("params")) if strategy.params else None
    for key, value in strategy.params.items():
        if not is_event_param(key):
            continue
        assert params is not None
        node, where = params.values[key], params.at(key)
        if not is_events_param(key):
            named = [(where, value, node)]
        elif isinstance(value, list) and isinstance(node, yaml.SequenceNode):
            named = [(f"{where}[{i}]", v, n) for i, (v, n) in enumerate(zip(value, node.value, strict=True))]
        else:
            raise doc.error(where, f"expected a list of schedule event names, got {abbreviate(value)}", node)
        for at, event, event_node in named:
            if not isinstance(event, str):
                raise doc.error(at, f"expected the name of a schedule event, got {abbreviate(event)}", event_node)
            if event not in names:
                why = f"no schedule event named {event!r}; the schedule has: {', '.join(names) or '(none)'}"
                raise doc.error(at, why, event_node)


def _check_paper_symbol(doc: Doc, item: YamlMap, strategy: StrategyConfig, paper: PaperConfig) -> None:
    """In paper mode a strategy trades a simulated market whose quote asset has a balance."""
    if strategy.symbol not in paper.markets:
        why = f"{strategy.symbol} is not a paper market; paper.markets has: {', '.join(paper.markets)}"
        raise doc.error(item.at("symbol"), why, item.get("symbol"))
    if strategy.quote not in paper.balances:
        why = f"quote asset {strategy.quote} is not in paper.balances ({', '.join(paper.balances) or 'empty'})"
        raise doc.error(item.at("symbol"), why, item.get("symbol"))


def _strategy(doc: Doc, item: YamlMap) -> StrategyConfig:
    name = read_name(doc, item.require("name"), item.at("name"), NAME_RE)
    class_path = read_string(doc, item.require("class"), item.at("class"))
    if not _CLASS_RE.match(class_path):
        raise doc.error(item.at("class"), f"expected 'package.module:Class', got {class_path!r}", item.get("class"))
    params_node = item.get("params")
    params = None
    if params_node is not None and not is_null(params_node):
        params = YamlMap(doc, params_node, item.at("params"), key_node=item.keys["params"])
    return StrategyConfig(
        name=name,
        class_path=class_path,
        symbol=read_symbol(doc, item.require("symbol"), item.at("symbol")),
        capital=read_decimal(doc, item.require("capital"), item.at("capital"), Decimal(0), strict=True),
        params={}
        if params is None
        else {key: read_param(doc, node, params.at(key), set()) for key, node in params.items()},
        file=doc.file,
        key_path=item.path,
        line=line_of(item.node),
        params_line=line_of(item.keys.get("params")),
        param_lines={} if params is None else {key: node.start_mark.line + 1 for key, node in params.keys.items()},
    )


def _check_coverage(
    doc: Doc, balances_map: YamlMap, balances: dict[str, Decimal], strategies: tuple[StrategyConfig, ...]
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
