"""Assembly: the one place that builds the daemon from its config (recovery step A's construction).

The environment (paper or live), every strategy plugin from ``module:Class`` + params, its worker and its
loaded state, the CircuitBreakerWorker, the in-flight checks and the ReconciliationMonitor are made here,
and :func:`wire` subscribes them to the bus. Every stateful component is constructed and then loaded
through ``load_state()`` before any of them sees an event, so step A either completes for all of them or
the daemon stops with the reason (a damaged state file, a strategy class that does not import, a bad
parameter at its config line). The Operation (s1mpled.operation) only runs the lifecycle.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from s1mpled.bus import EventBus
from s1mpled.circuit_breaker_worker import CircuitBreakerWorker
from s1mpled.clock import ClockMs
from s1mpled.config import Config, ScheduleEntry, StrategyConfig
from s1mpled.connection_monitor import ConnectionMonitor
from s1mpled.credentials import load_credentials
from s1mpled.environments.base import ExecutionEnvironment
from s1mpled.environments.paper import STATE_NAME as PAPER_STATE_NAME
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.errors import ConfigError
from s1mpled.events import Publish
from s1mpled.in_flight import InFlightChecks, QueryBudget
from s1mpled.instruments import ClockWatch, EventTally, Instruments
from s1mpled.orders import order_prefix
from s1mpled.reconciliation_monitor import ReceiptLog, ReconciliationMonitor
from s1mpled.state.store import StateDirectory
from s1mpled.strategies.base import Strategy
from s1mpled.strategy_worker import StrategyWorker
from s1mpled.workers import Worker
from s1mpled.workers import wire as wire_workers

__all__ = [
    "BREAKER_STATE_NAME",
    "IDENTITY_STATE_NAME",
    "RECEIPTS_STATE_NAME",
    "Components",
    "build",
    "build_strategy",
    "check_identity",
    "environment",
    "strategy_state_name",
    "wire",
]

log = logging.getLogger("s1mpled.builder")  # the name the journal and log filters know it by
BREAKER_STATE_NAME = "circuit-breaker.state.json"
IDENTITY_STATE_NAME = "operation.state.json"  # which operation, mode and venue these books belong to
RECEIPTS_STATE_NAME = "reconciliation-receipts.state.json"  # the newest passes' receipts (an audit view)


def strategy_state_name(name: str) -> str:
    return f"strategy-{name}.state.json"


@dataclass
class Components:
    """Everything step A built."""

    env: ExecutionEnvironment
    workers: list[StrategyWorker]
    breaker: CircuitBreakerWorker
    reconciler: ReconciliationMonitor


# -- the environment --


def environment(
    config: Config,
    state_dir: StateDirectory,
    publish: Publish,
    clock_ms: ClockMs,
    instruments: Instruments | None = None,
) -> ExecutionEnvironment:
    """The configured environment, not started yet (live: ccxt is imported only here; it reports its REST
    requests, streams and the exchange's clock to ``instruments``). Its facts leave through ``publish`` only."""
    if config.mode == "paper" and config.paper is not None:
        return PaperEnvironment(config.paper, state_dir.file(PAPER_STATE_NAME), clock_ms, publish=publish)
    live = config.live
    if live is None:
        raise ConfigError(str(config.path), "live", "mode is live but there is no live section")
    from s1mpled.environments.live import LiveEnvironment  # noqa: PLC0415 -- keeps ccxt out of paper mode

    return LiveEnvironment(
        live,
        load_credentials(live.credentials, str(config.path)),
        publish,
        max_failures=config.circuit_breaker.max_reconnect_attempts,
        request_timeout_s=live.request_timeout_s,
        heartbeat_s=live.heartbeat_s,
        rate_limit=live.rate_limit,
        instruments=instruments,
    )


def _identity(config: Config) -> dict[str, str]:
    """Which books these are: a testnet's (its REST URL) are never the real exchange's (its name)."""
    live = config.live
    if config.mode == "paper" or live is None:
        venue = "paper"
    else:
        venue = live.urls.get("http") or live.urls.get("rest") or live.exchange
    return {"operation": config.operation, "mode": config.mode, "venue": venue}


async def check_identity(config: Config, state_dir: StateDirectory) -> None:
    """Refuse books that belong to another operation, mode or exchange (paper profits are no live capital)."""
    f = state_dir.file(IDENTITY_STATE_NAME)
    mine, stored = _identity(config), f.load().state
    if stored is None:
        await f.save(mine)  # the writer thread fsyncs: never the event loop
        return
    if stored != mine:
        raise ConfigError(
            str(config.path),
            "mode",
            f"the state in {state_dir.path} belongs to {stored}, this configuration is {mine}; "
            f"its ledgers would be wrong here. Stop the daemon and move {state_dir.path} away "
            "to start with fresh books (or restore the configuration that made them)",
        )


# -- the strategies --


def _load_class(cfg: StrategyConfig) -> type[Strategy]:
    module_name, _, qualname = cfg.class_path.partition(":")
    where = f"{cfg.key_path}.class"
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(cfg.file, where, f"cannot import module {module_name!r}: {exc}", cfg.line) from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(cfg.file, where, f"{module_name} has no {qualname!r}", cfg.line)
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ConfigError(cfg.file, where, f"{cfg.class_path} is not a s1mpled Strategy subclass", cfg.line)
    return obj


def build_strategy(cfg: StrategyConfig, schedule: tuple[ScheduleEntry, ...]) -> Strategy:
    """Instantiate a strategy; a ValueError("key: why") from its parameter checks names the config line.

    The events it waits for (its defaults included) must be in the schedule: a DCA left on its default
    ``strategy_tick`` under a schedule without one would never buy, and nothing would say why.
    """
    cls = _load_class(cfg)
    try:
        strategy = cls(cfg.name, cfg.symbol, cfg.params)
    except ValueError as exc:
        key, sep, why = str(exc).partition(": ")
        raise (cfg.param_error(key, why) if sep else cfg.param_error("(params)", str(exc))) from None
    names = [entry.name for entry in schedule]
    for event in strategy.waits_for():
        if event not in names:
            has = ", ".join(names) or "(none)"
            why = f"{cfg.class_path} waits for the schedule event {event!r}, which the schedule lacks (it has: {has})"
            raise ConfigError(cfg.file, cfg.key_path, why, cfg.line)
    return strategy


def _workers(
    config: Config,
    state_dir: StateDirectory,
    env: ExecutionEnvironment,
    publish: Publish,
    clock_ms: ClockMs,
) -> list[StrategyWorker]:
    """One loaded StrategyWorker per configured strategy (all strategies are validated before any state is read)."""
    strategies = [build_strategy(cfg, config.schedule) for cfg in config.strategies]
    workers = []
    for cfg, strategy in zip(config.strategies, strategies, strict=True):
        worker = StrategyWorker(
            strategy=strategy,
            capital=cfg.capital,
            env=env,
            state_file=state_dir.file(strategy_state_name(cfg.name)),
            prefix=order_prefix(config.operation, cfg.name),
            publish=publish,
            clock_ms=clock_ms,
        )
        result = worker.load_state()
        log.info(
            "strategy %s: %s",
            cfg.name,
            "fresh start" if result.fresh else f"state generation {result.generation} loaded from {result.source}",
            extra={"STRATEGY": cfg.name, "EVENT": "STATE_LOADED"},
        )
        workers.append(worker)
    return workers


# -- everything --


def build(
    config: Config,
    state_dir: StateDirectory,
    env: ExecutionEnvironment,
    *,
    publish: Publish,
    clock_ms: ClockMs,
    alert: Callable[[str], Awaitable[object]],
) -> Components:
    """Every worker of the operation over a started ``env``, each with its state loaded (recovery step A)."""
    workers = _workers(config, state_dir, env, publish, clock_ms)
    cb = config.circuit_breaker
    breaker = CircuitBreakerWorker(
        state_dir.file(BREAKER_STATE_NAME),
        publish,
        clock_ms,
        emergency_exit=cb.emergency_exit,
        auto_close_after_s=cb.auto_close_after_s,
        alert=alert,
    )
    breaker.load_state()
    budget = QueryBudget()  # in-flight checks: one rate for all strategies
    for w in workers:
        w.halted, w.exiting = breaker.breaker.halted, breaker.breaker.exiting
        w.in_flight_checks = InFlightChecks(budget=budget)
    receipts = ReceiptLog(state_dir.file(RECEIPTS_STATE_NAME), clock_ms)
    receipts.recover()  # an audit view: a damaged file is logged and set aside, never a reason to stop
    reconciler = ReconciliationMonitor(
        env,
        workers,
        publish,
        clock_ms,
        config.reconciliation.event,
        fence=lambda reason: breaker.halt(reason, manual=True),  # split brain: only an operator resumes
        receipts=receipts,
    )
    return Components(env, workers, breaker, reconciler)


def wire(bus: EventBus, c: Components, instruments: Instruments | None = None) -> None:
    """Subscribe every worker to the bus (before it runs), fills and order updates addressed to the strategy
    that owns them (s1mpled.workers.OwnerRouting); with ``instruments``, the clock watch too."""
    extra: list[Worker] = []
    if instruments is not None:
        extra += [ClockWatch(instruments), EventTally(instruments)]
    wire_workers(bus, [*c.workers, c.reconciler, ConnectionMonitor(bus.publish, instruments), c.breaker, *extra])
