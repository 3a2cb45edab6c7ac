"""ComponentBuilder: builds the workers and strategy plugins from the config, and runs recovery step A.

Every stateful component is constructed and then loaded through ``load_state()`` here, before any of
them sees an event, so step A either completes for all of them or the daemon stops with the reason
(a damaged state file, a strategy class that does not import, a bad parameter at its config line).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable

from s1mpled.config import Config, ScheduleEntry, StrategyConfig
from s1mpled.environments.base import ExecutionEnvironment
from s1mpled.errors import ConfigError
from s1mpled.events import Event
from s1mpled.orders import order_prefix
from s1mpled.state.store import StateDirectory
from s1mpled.strategies.base import Strategy
from s1mpled.strategy_worker import StrategyWorker

__all__ = ["ComponentBuilder", "build_strategy", "strategy_state_name"]

log = logging.getLogger("s1mpled.builder")


def strategy_state_name(name: str) -> str:
    return f"strategy-{name}.state.json"


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


class ComponentBuilder:
    """Builds every strategy worker of the operation and loads its state (recovery step A)."""

    def __init__(
        self,
        config: Config,
        state_dir: StateDirectory,
        env: ExecutionEnvironment,
        publish: Callable[[Event], Awaitable[None]],
        clock_ms: Callable[[], int],
    ) -> None:
        self._config, self._dir, self._env = config, state_dir, env
        self._publish, self._clock_ms = publish, clock_ms

    def strategies(self) -> list[Strategy]:
        """Instantiate all strategies (validates classes and parameters; no state touched)."""
        return [build_strategy(cfg, self._config.schedule) for cfg in self._config.strategies]

    def workers(self) -> list[StrategyWorker]:
        """One loaded StrategyWorker per configured strategy."""
        workers = []
        for cfg, strategy in zip(self._config.strategies, self.strategies(), strict=True):
            worker = StrategyWorker(
                strategy=strategy,
                capital=cfg.capital,
                env=self._env,
                state_file=self._dir.file(strategy_state_name(cfg.name)),
                prefix=order_prefix(self._config.operation, cfg.name),
                publish=self._publish,
                clock_ms=self._clock_ms,
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
