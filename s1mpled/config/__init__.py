"""The configuration of one operation: s1mpled.yaml and schedule.yaml -> a validated, frozen ``Config``.

``model`` holds the values (frozen dataclasses and the pure rules they obey: no YAML, no file), ``nodes``
reads YAML as line-marked nodes (every refusal is ``file:line: key: why``), ``paths`` says where things are
(the config file, the state directory, the control socket -- the control commands' light resolver), and
``load`` is the schema that turns the files into a ``Config`` or one ``ConfigError`` (exit 78).

The names below are loaded on first use (PEP 562), so that importing the model (as the strategies do)
does not load PyYAML or the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s1mpled import lazy

if TYPE_CHECKING:
    from s1mpled.config.load import load_config
    from s1mpled.config.model import (
        MAX_DECIMAL_PLACES,
        MAX_MAGNITUDE,
        MAX_PARAM_INT,
        AlertsConfig,
        BreakerConfig,
        Config,
        LiveConfig,
        PaperConfig,
        PaperMarketConfig,
        ReconciliationConfig,
        ScheduleEntry,
        StartupConfig,
        StrategyConfig,
        decimal_bound_error,
        is_event_param,
        parse_duration,
    )
    from s1mpled.config.nodes import MAX_DEPTH, MAX_NODES
    from s1mpled.config.paths import DEFAULT_CONFIG_PATH, resolve_config_path, resolve_control_socket

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
    "resolve_control_socket",
]

_MODEL = (
    "MAX_DECIMAL_PLACES",
    "MAX_MAGNITUDE",
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
    "parse_duration",
)
_HOME = dict.fromkeys(_MODEL, "model") | {
    "MAX_DEPTH": "nodes",
    "MAX_NODES": "nodes",
    "DEFAULT_CONFIG_PATH": "paths",
    "resolve_config_path": "paths",
    "resolve_control_socket": "paths",
    "load_config": "load",
}

__getattr__, __dir__ = lazy.exports(globals(), _HOME)
