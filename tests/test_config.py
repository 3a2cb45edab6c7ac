"""Tests for s1mpled.config: the shipped example, one precise error per mistake, defaults, properties."""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from s1mpled.assembly import build_strategy
from s1mpled.cli import main as cli_main
from s1mpled.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ScheduleEntry,
    StrategyConfig,
    load_config,
    parse_duration,
    resolve_config_path,
)
from s1mpled.environments.live import ccxt_urls
from s1mpled.errors import EX_CONFIG, ConfigError

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "etc" / "s1mpled"

SCHEDULE = """\
events:
  five_minute_reconciliation_tick: {every: 5m}
  strategy_tick: {every: 5s}
"""

BASE = """\
operation: test-op
mode: paper
paper:
  seed: 7
  balances: {USDT: "5000"}
  markets:
    BTC/USDT:
      start_price: "50000"
      volatility: "0.002"
      liquidity: "0.05"
      price_step: "0.01"
      amount_step: "0.00001"
strategies:
  - name: dca-btc
    class: s1mpled.strategies.dca:DCA
    symbol: BTC/USDT
    capital: "1000"
    params: {quote_per_buy: "25", every_event: strategy_tick}
"""


def write(directory: Path, text: str, schedule: str | None = SCHEDULE) -> Path:
    """Write s1mpled.yaml (and schedule.yaml next to it) into ``directory``; return the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    if schedule is not None:
        (directory / "schedule.yaml").write_text(schedule)
    path = directory / "s1mpled.yaml"
    path.write_text(text)
    return path


def home_env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home")}


def load(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), home_env(tmp_path) if env is None else env)


def error(tmp_path: Path, text: str, schedule: str | None = SCHEDULE) -> ConfigError:
    path = write(tmp_path, text, schedule)
    with pytest.raises(ConfigError) as info:
        load_config(path, home_env(tmp_path))
    return info.value


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line containing ``needle``."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


# ------------------------------------------------------------------------------------ the example


def test_shipped_example_validates() -> None:
    """The shipped s1mpled.yaml and schedule.yaml load into the documented values."""
    config = load_config(EXAMPLE_DIR / "s1mpled.yaml", {"HOME": "/home/op"})
    assert (config.operation, config.mode, config.log_level) == ("paper-demo", "paper", "info")
    assert config.schedule == (
        ScheduleEntry("five_minute_reconciliation_tick", 300.0),
        ScheduleEntry("strategy_tick", 5.0),
    )
    assert config.reconciliation.event == "five_minute_reconciliation_tick"
    assert config.paper is not None and config.live is None
    assert config.paper.balances == {"USDT": Decimal("10000")}
    assert config.paper.tick_interval_s == 1.0
    assert config.paper.markets["ETH/USDT"].amount_step == Decimal("0.0001")
    assert [(s.name, s.class_path, s.symbol, s.capital) for s in config.strategies] == [
        ("dca-btc", "s1mpled.strategies.dca:DCA", "BTC/USDT", Decimal("1000")),
        ("grid-eth", "s1mpled.strategies.grid:Grid", "ETH/USDT", Decimal("2000")),
    ]
    assert config.strategies[0].params == {"quote_per_buy": "50", "every_event": "strategy_tick"}
    assert config.strategies[1].params == {"levels": 4, "spacing": "0.004", "order_quote": "100"}
    assert config.schedule_path == EXAMPLE_DIR / "schedule.yaml"


def test_example_live_block_validates_when_uncommented(tmp_path: Path) -> None:
    """Uncommenting the example's live block and switching to live mode gives a valid live config."""
    text = (EXAMPLE_DIR / "s1mpled.yaml").read_text().replace("mode: paper", "mode: live")
    lines = text.splitlines()
    start = lines.index("# live:")
    for index in range(start, start + 10):
        if lines[index].startswith("# live:") or lines[index].startswith("#   "):
            lines[index] = lines[index][2:]
    config = load(tmp_path, "\n".join(lines), {"HOME": "/h", "CREDENTIALS_DIRECTORY": "/run/credentials/x"})
    assert config.mode == "live" and config.live is not None
    assert (config.live.exchange, config.live.credentials, config.live.urls) == ("binance", "binance.key", {})


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    """Optional settings take their documented defaults."""
    config = load(tmp_path, BASE)
    assert config.shutdown_timeout_s == 10.0 and config.log_level == "info"
    assert config.circuit_breaker.emergency_exit is False
    assert config.circuit_breaker.auto_close_after_s == 300.0
    assert config.circuit_breaker.max_reconnect_attempts == 5
    assert config.alerts.apprise_urls == ()
    assert config.paper is not None and config.paper.fee_rate == Decimal("0.001")
    assert config.paper.replay_csv is None and config.path == tmp_path / "s1mpled.yaml"


def test_breaker_auto_close_null_means_manual_resume(tmp_path: Path) -> None:
    """`auto_close_after: null` disables the automatic close; other breaker keys are read as written."""
    text = BASE + "circuit_breaker: {auto_close_after: null, emergency_exit: yes, max_reconnect_attempts: 3}\n"
    breaker = load(tmp_path, text).circuit_breaker
    assert (breaker.auto_close_after_s, breaker.emergency_exit, breaker.max_reconnect_attempts) == (None, True, 3)


def test_durations_may_be_plain_numbers(tmp_path: Path) -> None:
    """A plain number of seconds, integer or not, is a duration."""
    assert load(tmp_path, BASE + "shutdown_timeout: 30\n").shutdown_timeout_s == 30.0
    assert load(tmp_path, BASE + "shutdown_timeout: 1.5\n").shutdown_timeout_s == 1.5


# ---------------------------------------------------------------------------------------- errors


def test_unknown_top_level_key_names_it_and_the_allowed_ones(tmp_path: Path) -> None:
    """A typo like `strategys` is an error at its line that lists the allowed keys."""
    text = BASE + "strategys: []\n"
    err = error(tmp_path, text)
    assert (err.file, err.key, err.line) == (str(tmp_path / "s1mpled.yaml"), "strategys", line_of(text, "strategys"))
    assert "unknown key" in err.why and "strategies" in err.why
    assert str(err).startswith(f"{tmp_path / 's1mpled.yaml'}:{err.line}: strategys: ")
    assert err.exit_code == EX_CONFIG


def test_unknown_nested_key_has_full_key_path(tmp_path: Path) -> None:
    """An unknown key inside a market names the whole path to it."""
    text = BASE.replace('      liquidity: "0.05"\n', '      liquidity: "0.05"\n      liquidty: "1"\n')
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.markets.BTC/USDT.liquidty", line_of(text, "liquidty"))


def test_duplicate_key_is_an_error_at_the_second_occurrence(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently; we report the second one."""
    text = BASE.replace("  seed: 7\n", "  seed: 7\n  seed: 8\n")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.seed", line_of(text, "seed: 8"))
    assert f"first defined on line {line_of(text, 'seed: 7')}" in err.why


def test_duplicate_key_inside_params_is_an_error(tmp_path: Path) -> None:
    """Free-form strategy params are checked for duplicate keys too."""
    text = BASE.replace('{quote_per_buy: "25", every_event: strategy_tick}', "{levels: 1, levels: 2}")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[0].params.levels", line_of(text, "levels: 1"))


def test_wrong_type_says_expected_and_got(tmp_path: Path) -> None:
    """A string where an integer belongs names both."""
    text = BASE.replace("seed: 7", 'seed: "seven"')
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.seed", line_of(text, "seed:"))
    assert "expected an integer" in err.why and "'seven'" in err.why


def test_section_of_the_wrong_shape(tmp_path: Path) -> None:
    """A list where a mapping belongs is reported at that section."""
    err = error(tmp_path, BASE + "alerts: [one]\n")
    assert (err.key, err.why) == ("alerts", "expected a mapping, got a list")


def test_bad_duration(tmp_path: Path) -> None:
    """An unparseable or non-positive duration is an error at its line."""
    text = BASE + "shutdown_timeout: 10 parsecs\n"
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("shutdown_timeout", line_of(text, "shutdown_timeout"))
    assert "10 parsecs" in err.why
    assert error(tmp_path, BASE + "shutdown_timeout: 0s\n").why == "expected a duration > 0, got '0s'"


@pytest.mark.parametrize("bad", ["1O00", "NaN", ".inf", "-5", "0", "1e400", '"Infinity"', "0x10", "[1]"])
def test_bad_decimal_capital(tmp_path: Path, bad: str) -> None:
    """Capital must be a finite decimal > 0 of sane size, written as a decimal number."""
    text = BASE.replace('capital: "1000"', f"capital: {bad}")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[0].capital", line_of(text, "capital:"))
    assert err.why.startswith("expected a decimal number > 0")


def test_float_looking_amount_stays_exact(tmp_path: Path) -> None:
    """`1000.10` unquoted gives Decimal('1000.10'), exactly as written, never via float."""
    text = BASE.replace('capital: "1000"', "capital: 1000.10").replace('fee_rate: "0.001"', "")
    text = text.replace("  seed: 7\n", "  seed: 7\n  fee_rate: 0.00100000000000000000001\n")
    config = load(tmp_path, text)
    assert str(config.strategies[0].capital) == "1000.10"
    assert config.paper is not None and config.paper.fee_rate == Decimal("0.00100000000000000000001")


def test_fee_rate_out_of_range(tmp_path: Path) -> None:
    """fee_rate must be in [0, 0.1)."""
    err = error(tmp_path, BASE.replace("  seed: 7\n", "  seed: 7\n  fee_rate: 0.1\n"))
    assert err.key == "paper.fee_rate" and "< 0.1" in err.why


def test_liquidity_below_amount_step(tmp_path: Path) -> None:
    """A market whose liquidity is below one lot could never fill an order."""
    text = BASE.replace('liquidity: "0.05"', 'liquidity: "0.000001"')
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.markets.BTC/USDT.liquidity", line_of(text, "liquidity"))


def test_missing_required_key(tmp_path: Path) -> None:
    """A missing required key is named, at the line of the mapping that lacks it."""
    err = error(tmp_path, BASE.replace("operation: test-op\n", ""))
    assert (err.key, err.line, err.why) == ("operation", 1, "required key is missing")
    text = BASE.replace('      amount_step: "0.00001"\n', "")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.markets.BTC/USDT.amount_step", line_of(text, "BTC/USDT:"))


def test_mode_section_required(tmp_path: Path) -> None:
    """mode: live without a live section is an error naming `live`."""
    text = BASE.replace("mode: paper", "mode: live")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("live", line_of(text, "mode:"))


def test_bad_operation_name(tmp_path: Path) -> None:
    """The operation name must be short lower-case (it prefixes client order ids)."""
    err = error(tmp_path, BASE.replace("operation: test-op", "operation: Test_Op"))
    assert err.key == "operation" and "'Test_Op'" in err.why


def test_unknown_schedule_event_in_reconciliation(tmp_path: Path) -> None:
    """reconciliation.event must name an event of the schedule."""
    text = BASE + "reconciliation:\n  event: hourly_tick\n"
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("reconciliation.event", line_of(text, "hourly_tick"))
    assert "five_minute_reconciliation_tick, strategy_tick" in err.why


def test_default_reconciliation_event_must_exist(tmp_path: Path) -> None:
    """Without reconciliation.event the default event must be in the schedule."""
    err = error(tmp_path, BASE, schedule="events:\n  strategy_tick: {every: 5s}\n")
    assert (err.key, err.line) == ("reconciliation.event", None)


def test_balances_must_cover_capital(tmp_path: Path) -> None:
    """The quote balance must cover the summed capital of the strategies using that quote."""
    second = '  - {name: dca-two, class: "a.b:C", symbol: BTC/USDT, capital: "4000.5"}\n'
    text = BASE + second
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.balances.USDT", line_of(text, "balances:"))
    assert "5000.5" in err.why and "got 5000" in err.why


def test_quote_asset_must_be_in_balances(tmp_path: Path) -> None:
    """A strategy whose quote asset has no paper balance is reported at its symbol."""
    text = BASE.replace('{USDT: "5000"}', '{EUR: "5000"}')
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[0].symbol", line_of(text, "symbol: BTC/USDT"))
    assert "USDT" in err.why


def test_strategy_symbol_must_be_a_paper_market(tmp_path: Path) -> None:
    """In paper mode a strategy can only trade a simulated market."""
    text = BASE.replace("symbol: BTC/USDT", "symbol: ETH/USDT")
    err = error(tmp_path, text)
    assert err.key == "strategies[0].symbol" and "ETH/USDT is not a paper market" in err.why


def test_duplicate_strategy_name(tmp_path: Path) -> None:
    """Strategy names are unique (they name ledgers and state files)."""
    text = BASE + '  - {name: dca-btc, class: "a.b:C", symbol: BTC/USDT, capital: "1"}\n'
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[1].name", line_of(text, 'capital: "1"}'))


def test_bad_class_path(tmp_path: Path) -> None:
    """`class` must look like module:Class (it is not imported here)."""
    err = error(tmp_path, BASE.replace("s1mpled.strategies.dca:DCA", "s1mpled.strategies.dca.DCA"))
    assert err.key == "strategies[0].class"


def test_syntax_error_has_a_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported with the line of its mark."""
    text = BASE.replace("  seed: 7\n", "  seed: [7\n")
    err = error(tmp_path, text)
    assert err.key == "(syntax)" and err.line is not None and err.line >= line_of(text, "seed")
    assert error(tmp_path, "a: b\n c: d\n").line == 2


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    """An empty (or comments-only) file is an error, not an empty config."""
    assert error(tmp_path, "# nothing\n").key == "(document)"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    """A list at the top level is rejected."""
    assert error(tmp_path, "- a\n").why == "expected a mapping, got a list"


def test_merge_keys_are_rejected(tmp_path: Path) -> None:
    """YAML merge keys would hide where a value comes from; they are refused."""
    err = error(tmp_path, BASE + "alerts:\n  <<: {apprise_urls: []}\n")
    assert err.key == "alerts.<<"


def test_schedule_errors_name_the_schedule_file(tmp_path: Path) -> None:
    """Errors in schedule.yaml carry that file's name, line and key."""
    schedule = SCHEDULE.replace("every: 5s", "every: soon")
    err = error(tmp_path, BASE, schedule=schedule)
    assert (err.file, err.key, err.line) == (str(tmp_path / "schedule.yaml"), "events.strategy_tick.every", 3)
    err = error(tmp_path, BASE, schedule=SCHEDULE + "  Bad-Name: {every: 1s}\n")
    assert (err.key, err.line) == ("events.Bad-Name", 4)


def test_missing_schedule_file(tmp_path: Path) -> None:
    """A schedule that does not exist is reported at the `schedule` key."""
    text = BASE + "schedule: nowhere.yaml\n"
    err = error(tmp_path, text)
    assert (err.file, err.key, err.line) == (str(tmp_path / "s1mpled.yaml"), "schedule", line_of(text, "nowhere"))


# -------------------------------------------------------------------------------------- params


def test_params_types(tmp_path: Path) -> None:
    """Numbers with '.' or an exponent become Decimal from their text; the rest is as YAML says."""
    params = '{a: 0.004, b: 1e-3, c: 4, d: "0.5", e: true, f: [1, 2.50], g: {h: null}}'
    config = load(tmp_path, BASE.replace('{quote_per_buy: "25", every_event: strategy_tick}', params))
    values = config.strategies[0].params
    assert values == {
        "a": Decimal("0.004"),
        "b": Decimal("0.001"),
        "c": 4,
        "d": "0.5",
        "e": True,
        "f": [1, Decimal("2.50")],
        "g": {"h": None},
    }
    assert type(values["c"]) is int and str(values["f"][1]) == "2.50"


def test_param_error_points_at_the_param_line(tmp_path: Path) -> None:
    """param_error names the param's key path and line, or the params line if the key is absent."""
    text = BASE.replace(
        '    params: {quote_per_buy: "25", every_event: strategy_tick}\n',
        '    params:\n      quote_per_buy: "-1"\n',
    )
    strategy = load(tmp_path, text).strategies[0]
    err = strategy.param_error("quote_per_buy", "must be > 0")
    assert (err.file, err.key, err.line) == (str(tmp_path / "s1mpled.yaml"), "strategies[0].params.quote_per_buy", 19)
    assert strategy.param_error("every_event", "required").line == line_of(text, "params:")
    assert strategy.decimal_param("quote_per_buy") == Decimal("-1")


def test_param_error_without_params_points_at_strategy(tmp_path: Path) -> None:
    """Without a params mapping, param_error points at the strategy's line."""
    text = BASE.replace('    params: {quote_per_buy: "25", every_event: strategy_tick}\n', "")
    strategy = load(tmp_path, text).strategies[0]
    assert strategy.params == {}
    assert strategy.param_error("levels", "required").line == line_of(text, "- name: dca-btc")


def test_decimal_param_helper() -> None:
    """decimal_param reads numbers and their quoted text, with a default, and refuses the rest."""
    strategy = StrategyConfig("s", "a:B", "BTC/USDT", Decimal(1), {"q": "2.5", "n": 3, "bad": "x", "flag": True})
    assert strategy.decimal_param("q") == Decimal("2.5") and strategy.decimal_param("n") == Decimal(3)
    assert strategy.decimal_param("missing", Decimal("7")) == Decimal("7")
    for key in ("bad", "flag", "missing"):
        with pytest.raises(ConfigError, match=f"strategy.params.{key}"):
            strategy.decimal_param(key)
    assert (strategy.base, strategy.quote) == ("BTC", "USDT")


def test_bad_float_param(tmp_path: Path) -> None:
    """A non-finite number in params is an error at its line."""
    text = BASE.replace('{quote_per_buy: "25", every_event: strategy_tick}', "{spacing: .nan}")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[0].params.spacing", line_of(text, "spacing"))


# ------------------------------------------------------------------------------ paths and environment


def test_state_dir_defaults_from_environment(tmp_path: Path) -> None:
    """state_dir: $STATE_DIRECTORY (first of several), else $XDG_STATE_HOME/s1mpled, else ~/.local/state."""
    path = write(tmp_path, BASE)
    systemd = load_config(path, {"STATE_DIRECTORY": "/var/lib/s1mpled:/var/lib/other", "XDG_STATE_HOME": "/x"})
    assert systemd.state_dir == Path("/var/lib/s1mpled")
    assert systemd.control_socket == Path("/var/lib/s1mpled/control.sock")
    assert load_config(path, {"XDG_STATE_HOME": "/xdg", "HOME": "/h"}).state_dir == Path("/xdg/s1mpled")
    assert load_config(path, {"XDG_STATE_HOME": "relative", "HOME": "/h"}).state_dir == Path("/h/.local/state/s1mpled")


def test_control_socket_defaults_from_runtime_directory(tmp_path: Path) -> None:
    """control_socket: $RUNTIME_DIRECTORY/control.sock when systemd sets it."""
    config = load(tmp_path, BASE, {"HOME": "/h", "RUNTIME_DIRECTORY": "/run/s1mpled"})
    assert config.control_socket == Path("/run/s1mpled/control.sock")


def test_control_socket_too_long(tmp_path: Path) -> None:
    """A control socket path that cannot be bound (sun_path is 108 bytes) is a config error."""
    err = error(tmp_path, BASE + f"control_socket: /{'x' * 120}/control.sock\n")
    assert err.key == "control_socket" and "107 bytes" in err.why


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """state_dir, control_socket, schedule and replay_csv resolve against the config's directory."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "events.yaml").write_text(SCHEDULE)
    (tmp_path / "prices.csv").write_text("ts,price\n")
    text = BASE.replace("  seed: 7\n", "  seed: 7\n  replay_csv: prices.csv\n")
    text += "state_dir: state\ncontrol_socket: run/ctl.sock\nschedule: sub/events.yaml\n"
    config = load(tmp_path, text, {"STATE_DIRECTORY": "/ignored"})
    assert config.state_dir == tmp_path / "state"
    assert config.control_socket == tmp_path / "run" / "ctl.sock"
    assert config.schedule_path == tmp_path / "sub" / "events.yaml"
    assert config.paper is not None and config.paper.replay_csv == tmp_path / "prices.csv"


def test_replay_csv_must_exist(tmp_path: Path) -> None:
    """A replay_csv that does not exist is reported at its key."""
    text = BASE.replace("  seed: 7\n", "  seed: 7\n  replay_csv: missing.csv\n")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("paper.replay_csv", line_of(text, "missing.csv"))


def test_credentials_path_is_resolved_but_a_bare_name_is_kept(tmp_path: Path) -> None:
    """A credentials value with '/' is a path relative to the config; a bare name is left for systemd."""
    live = "live:\n  exchange: binance\n  credentials: keys/binance.key\n  urls: {http: 'http://x', ws: 'ws://x/'}\n"
    config = load(tmp_path, BASE + live)
    assert config.live is not None and config.live.credentials == str(tmp_path / "keys" / "binance.key")
    assert config.live.urls == {"http": "http://x", "ws": "ws://x"}


TESTNET = """\
live:
  exchange: binance
  credentials: binance.key
  urls:
    rest: https://testnet.binance.vision
    streams: wss://stream.testnet.binance.vision/ws
    ws_api: wss://ws-api.testnet.binance.vision/ws-api/v3
"""


def test_live_urls_express_binances_testnet_on_three_hosts(tmp_path: Path) -> None:
    """Binance's spot testnet serves REST, streams and the WebSocket API from three hosts: live.urls says so,
    and ccxt gets every endpoint family from it (nothing left pointing at the real exchange)."""
    config = load(tmp_path, BASE + TESTNET)
    assert config.live is not None
    api = ccxt_urls(config.live.urls)
    assert api == {
        "public": "https://testnet.binance.vision/api/v3",
        "private": "https://testnet.binance.vision/api/v3",
        "v1": "https://testnet.binance.vision/api/v1",
        "sapi": "https://testnet.binance.vision/sapi/v1",
        "ws": {
            "spot": "wss://stream.testnet.binance.vision/ws",
            "ws-api": {"spot": "wss://ws-api.testnet.binance.vision/ws-api/v3"},
        },
    }
    one_host = load(
        tmp_path,
        BASE
        + "live:\n  exchange: binance\n  credentials: k\n  urls: {http: 'http://127.0.0.1:8765', ws: 'ws://127.0.0.1:8765'}\n",
    )
    assert one_host.live is not None
    assert ccxt_urls(one_host.live.urls)["ws"]["spot"] == "ws://127.0.0.1:8765/stream/ws"  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "key", "needle", "why"),
    [
        ("    ws_api: wss://ws-api.testnet.binance.vision/ws-api/v3\n", "live.urls", "urls:", "expected either"),
        ("rest: https://", "live.urls.rest", "rest:", "expected a URL starting with"),
        ("streams: wss://", "live.urls.streams", "streams:", "expected a URL starting with"),
        ("    rest: https://testnet.binance.vision\n", "live.urls", "urls:", "got streams, ws_api"),
    ],
)
def test_live_urls_that_would_leave_a_family_on_the_real_exchange_are_refused(
    tmp_path: Path, change: str, key: str, needle: str, why: str
) -> None:
    """A missing family, a mixed set or a URL of the wrong kind: refused at its line, not sent to Binance."""
    if change.startswith("    "):
        text = BASE + TESTNET.replace(change, "")
    else:
        scheme = change.split(": ")[1]
        text = BASE + TESTNET.replace(change, change.replace(scheme, "ftp://" if "rest" in change else "https://"), 1)
    err = error(tmp_path, text)
    assert (err.key, err.line) == (key, line_of(text, needle)) and why in err.why, err


def test_resolve_config_path_precedence(tmp_path: Path) -> None:
    """--config wins over $S1MPLED_CONFIG, which wins over the default path."""
    cli, env = write(tmp_path / "a", BASE), write(tmp_path / "b", BASE)
    assert resolve_config_path(str(cli), {"S1MPLED_CONFIG": str(env)}) == cli
    assert resolve_config_path(None, {"S1MPLED_CONFIG": str(env)}) == env
    assert load_config(None, {"S1MPLED_CONFIG": str(env), "HOME": "/h"}).path == env
    if not DEFAULT_CONFIG_PATH.exists():
        with pytest.raises(ConfigError) as info:
            resolve_config_path(None, {})
        assert (info.value.file, info.value.key) == (str(DEFAULT_CONFIG_PATH), "(file)")


def test_missing_config_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError on key (file), from resolution and from loading."""
    with pytest.raises(ConfigError) as info:
        resolve_config_path(str(tmp_path / "nope.yaml"), {})
    assert (info.value.key, info.value.line) == ("(file)", None)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", {})
    assert info.value.key == "(file)"
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_config_path(str(tmp_path), {})


# ---------------------------------------------------------------------------------------- properties

UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "": Decimal(1)}
MIN_S, MAX_S = Decimal("0.001"), Decimal(365 * 86400)


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**6), places=3), st.sampled_from(sorted(UNITS)))
def test_parse_duration_property(amount: Decimal, unit: str) -> None:
    """`<number><unit>` is that number times the unit in seconds if within 1ms..365d; its negation is refused."""
    text = f"{amount:f}{unit}"
    seconds = amount * UNITS[unit]
    if MIN_S <= seconds <= MAX_S:
        assert parse_duration(text) == float(seconds)
    else:
        with pytest.raises(ValueError, match="from 1ms to 365d"):
            parse_duration(text)
    with pytest.raises(ValueError):
        parse_duration("-" + text)


@given(st.integers(min_value=-(10**9), max_value=10**9) | st.integers())
def test_parse_duration_numbers_are_seconds(seconds: int) -> None:
    """A plain number is seconds, and only those from 1 s to 365 days are durations (never an OverflowError)."""
    if 0 < seconds <= MAX_S:
        assert parse_duration(seconds) == parse_duration(str(seconds)) == float(seconds)
    else:
        with pytest.raises(ValueError):
            parse_duration(seconds)


@pytest.fixture(scope="module")
def prop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decimal-property")


AMOUNTS = st.builds(lambda digits, exp: Decimal(f"{digits}E{exp}"), st.integers(1, 10**20), st.integers(-20, 8))


@given(AMOUNTS, st.booleans())
def test_decimal_amount_round_trips_its_text(prop_dir: Path, amount: Decimal, quoted: bool) -> None:
    """Any decimal written as text, quoted or not, loads as exactly that Decimal (same digits and exponent)."""
    text = str(amount)
    scalar = f'"{text}"' if quoted else text
    config = load_config(
        write(prop_dir, BASE.replace('capital: "1000"', f"capital: {scalar}").replace('"5000"', '"1E+29"')),
        {"HOME": "/h"},
    )
    capital = config.strategies[0].capital
    assert capital == amount and str(capital) == text


# ----------------------------------------------------------------- cross-references: schedule events


DCA_PARAMS = '{quote_per_buy: "25", every_event: strategy_tick}'


def test_a_strategy_event_that_is_not_in_the_schedule_is_refused_at_its_line(tmp_path: Path) -> None:
    """`every_event: stratgy_tick` (a typo) would make the DCA wait forever: refused at the param's line."""
    text = BASE.replace(DCA_PARAMS, "\n      quote_per_buy: '25'\n      every_event: stratgy_tick\n")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[0].params.every_event", line_of(text, "stratgy_tick"))
    assert err.why == (
        "no schedule event named 'stratgy_tick'; the schedule has: five_minute_reconciliation_tick, strategy_tick"
    )
    assert err.exit_code == EX_CONFIG


def test_every_event_param_is_checked_whatever_the_strategy(tmp_path: Path) -> None:
    """Any param ending in `_event` names one event, `_events` a list of them; each must be in the schedule."""
    text = BASE.replace(DCA_PARAMS, "{rebalance_events: [strategy_tick, hourly], quote_per_buy: '1'}")
    err = error(tmp_path, text)
    assert (err.key, err.line) == ("strategies[0].params.rebalance_events[1]", line_of(text, "hourly"))
    err = error(tmp_path, BASE.replace(DCA_PARAMS, "{stop_event: 5}"))
    assert err.key == "strategies[0].params.stop_event" and "expected the name of a schedule event" in err.why
    err = error(tmp_path, BASE.replace(DCA_PARAMS, "{stop_events: strategy_tick}"))
    assert err.key == "strategies[0].params.stop_events" and "expected a list of schedule event names" in err.why
    ok = load(tmp_path, BASE.replace(DCA_PARAMS, "{stop_events: [strategy_tick], every_event: strategy_tick}"))
    assert ok.strategies[0].params == {"stop_events": ["strategy_tick"], "every_event": "strategy_tick"}


def test_check_config_refuses_the_unknown_event_with_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`s1mpled check-config` prints file:line: key: why for the typo and exits 78."""
    text = BASE.replace("every_event: strategy_tick", "every_event: stratgy_tick")
    path = write(tmp_path, text)
    assert cli_main(["check-config", "--config", str(path)]) == EX_CONFIG
    line = f"{path}:{line_of(text, 'stratgy_tick')}: strategies[0].params.every_event: no schedule event named"
    assert capsys.readouterr().err.startswith(f"s1mpled: {line}")


# ------------------------------------------------------------------------- numeric bounds, any spelling


@pytest.mark.parametrize("value", ['"1e400"', '"1e-400"', "'1' ", f'"{"9" * 400}"', '"-Infinity"', '"sNaN"'])
def test_a_quoted_out_of_range_param_amount_is_refused_at_its_line(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quoted text reaches the strategy as a string; its Decimal obeys the same bounds (checked by check-config)."""
    text = BASE.replace('quote_per_buy: "25"', f"quote_per_buy: {value}")
    path = write(tmp_path, text)
    if value == "'1' ":  # the control: an ordinary amount passes
        assert cli_main(["check-config", "--config", str(path)]) == 0
        return
    assert cli_main(["check-config", "--config", str(path)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"{path}:{line_of(text, 'quote_per_buy')}: strategies[0].params.quote_per_buy: " in err, err


@pytest.mark.parametrize(
    ("replace", "key"),
    [
        (("seed: 7", f"seed: {'1' * 400}"), "paper.seed"),
        (("seed: 7", f"seed: {'1' * 5000}"), "paper.seed"),  # beyond Python's int-from-text limit: no ValueError
        (("seed: 7", "seed: 9223372036854775808"), "paper.seed"),
        (("  seed: 7\n", "  seed: 7\n  tick_interval: " + "1" + "0" * 300 + "s\n"), "paper.tick_interval"),
        (("  seed: 7\n", "  seed: 7\n  tick_interval: 0.0001s\n"), "paper.tick_interval"),
        (("  seed: 7\n", "  seed: 7\n  tick_interval: '1.0000000000000001'\n"), "paper.tick_interval"),
        (('start_price: "50000"', 'start_price: "1e400"'), "paper.markets.BTC/USDT.start_price"),
        (('price_step: "0.01"', 'price_step: "1e-400"'), "paper.markets.BTC/USDT.price_step"),
        (('capital: "1000"', f'capital: "{"9" * 400}"'), "strategies[0].capital"),
        (('{quote_per_buy: "25"', f'{{levels: {"9" * 400}, quote_per_buy: "25"'), "strategies[0].params.levels"),
    ],
)
def test_numbers_out_of_bounds_are_refused_whatever_the_spelling(
    tmp_path: Path, replace: tuple[str, str], key: str
) -> None:
    """400-digit integers, 1e400 / 1e-400 (quoted or not) and absurd durations are ConfigErrors at their line."""
    text = BASE.replace(*replace)
    assert text != BASE
    err = error(tmp_path, text)
    assert err.key == key and err.line is not None, err
    assert len(str(err).splitlines()) == 1 and len(str(err)) < 400


def test_circuit_breaker_attempts_and_durations_have_bounds(tmp_path: Path) -> None:
    """max_reconnect_attempts is 1..1000; every duration 1ms..365d."""
    err = error(tmp_path, BASE + f"circuit_breaker: {{max_reconnect_attempts: {'9' * 400}}}\n")
    assert err.key == "circuit_breaker.max_reconnect_attempts" and "from 1 to 1000" in err.why
    err = error(tmp_path, BASE + "circuit_breaker: {auto_close_after: 400d}\n")
    assert err.key == "circuit_breaker.auto_close_after" and "from 1ms to 365d" in err.why
    assert load(tmp_path, BASE + "circuit_breaker: {auto_close_after: 365d, max_reconnect_attempts: 1000}\n")


_SPELLINGS = st.sampled_from(["{}", '"{}"', "'{}'"])
_DECIMAL_TEXT = st.builds(
    lambda sign, digits, exp: f"{sign}{digits}E{exp}",
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 10**70),
    st.integers(-80, 80),
)


@given(_DECIMAL_TEXT, _SPELLINGS)
def test_capital_bounds_property(prop_dir: Path, text: str, spelling: str) -> None:
    """Capital loads iff it is > 0, has at most 30 decimal places and is below 1e30 -- quoted or not."""
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    ok = value > 0 and exponent >= -30 and value.adjusted() < 30
    most = '"' + "9" * 30 + "." + "9" * 30 + '"'  # the largest balance there is: covers any valid capital
    config_text = BASE.replace('capital: "1000"', f"capital: {spelling.format(text)}").replace('"5000"', most)
    path = write(prop_dir, config_text)
    if ok:
        assert load_config(path, {"HOME": "/h"}).strategies[0].capital == value
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path, {"HOME": "/h"})
        assert info.value.key == "strategies[0].capital"


@given(st.integers() | st.integers(-(2**66), 2**66), _SPELLINGS)
@example(2**63, "{}")
@example(-(2**63) - 1, "{}")
@example(10**400, "{}")
def test_integer_bounds_property(prop_dir: Path, seed: int, spelling: str) -> None:
    """An int-valued setting loads iff it is in its range; a quoted one is not an integer at all."""
    path = write(prop_dir, BASE.replace("seed: 7", f"seed: {spelling.format(seed)}"))
    if spelling == "{}" and -(2**63) <= seed < 2**63:
        config = load_config(path, {"HOME": "/h"})
        assert config.paper is not None and config.paper.seed == seed
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path, {"HOME": "/h"})
        assert info.value.key == "paper.seed"


@given(
    st.decimals(min_value=0, max_value=Decimal(10**12), places=6, allow_nan=False, allow_infinity=False),
    st.sampled_from(["ms", "s", "m", "h", "d"]),
    _SPELLINGS,
)
def test_duration_bounds_property(prop_dir: Path, amount: Decimal, unit: str, spelling: str) -> None:
    """A duration loads iff it lies in 1ms..365d and its number has at most 15 significant digits."""
    number = f"{amount:f}"
    seconds = (
        amount
        * {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}[unit]
    )
    digits = number.replace(".", "").lstrip("0").rstrip("0")
    ok = MIN_S <= seconds <= MAX_S and len(digits) <= 15
    path = write(prop_dir, BASE + f"shutdown_timeout: {spelling.format(number + unit)}\n")
    if ok:
        assert load_config(path, {"HOME": "/h"}).shutdown_timeout_s == float(seconds)
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path, {"HOME": "/h"})
        assert info.value.key == "shutdown_timeout"


@given(st.text(alphabet="0123456789.eE+-", min_size=1, max_size=40), _SPELLINGS)
def test_param_decimal_never_escapes_as_anything_but_a_config_error(prop_dir: Path, text: str, spelling: str) -> None:
    """Whatever number-like text a Decimal param holds, loading and building give a bounded DCA or a ConfigError."""
    path = write(prop_dir, BASE.replace('quote_per_buy: "25"', f"quote_per_buy: {spelling.format(text)}"))
    try:
        config = load_config(path, {"HOME": "/h"})
        strategy = build_strategy(config.strategies[0], config.schedule)
    except ConfigError as exc:
        assert exc.key == "strategies[0].params.quote_per_buy"
    else:
        quote = strategy.quote_per_buy  # type: ignore[attr-defined]
        assert quote.is_finite() and quote.adjusted() < 30 and quote.as_tuple().exponent >= -30


# ------------------------------------------------------------------------ aliases, nesting, file size


BILLION_LAUGHS = """\
    params:
      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_billion_laughs_is_refused_in_well_under_a_second(tmp_path: Path) -> None:
    """Aliases expanding to a billion nodes are refused at the alias that crosses the limit, fast."""
    text = BASE.replace(f"    params: {DCA_PARAMS}\n", BILLION_LAUGHS)
    started = time.monotonic()
    err = error(tmp_path, text)
    assert time.monotonic() - started < 1.0
    assert err.key == "(document)" and "more than 10000 YAML nodes" in err.why
    assert err.line == line_of(text, "e: &e")  # up to d, about 8,400 nodes fit; the e level crosses 10,000


def test_modest_aliases_still_work(tmp_path: Path) -> None:
    """Reusing a params block with an alias is fine (it counts once per use)."""
    text = (
        BASE.replace("params: {", "params: &p {")
        + '  - {name: dca-two, class: "a.b:C", symbol: BTC/USDT, capital: "1", params: *p}\n'
    )
    config = load(tmp_path, text)
    assert config.strategies[0].params == config.strategies[1].params


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path: Path) -> None:
    """A node containing itself, or 1,000 nested lists, is a ConfigError -- not a RecursionError."""
    err = error(tmp_path, BASE.replace(DCA_PARAMS, "&r {loop: *r}"))
    assert err.key == "(document)" and "recursive YAML alias" in err.why
    err = error(tmp_path, BASE.replace(DCA_PARAMS, "{deep: " + "[" * 1000 + "]" * 1000 + "}"))
    assert err.key == "(document)" and "nested deeper than 64 levels" in err.why


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    """A configuration larger than 1 MiB is refused before it is parsed."""
    err = error(tmp_path, BASE + "#" * (1 << 20) + "\n")
    assert err.key == "(file)" and "larger than" in err.why


# -------------------------------------------------------------------------------------- end of file


@pytest.mark.parametrize(
    "tail", ["mode: [paper\n", "mode: 'paper\n", "mode: {a: b\n", "mode: [paper", "mode: [paper\n\n"]
)
def test_a_yaml_error_at_the_end_of_the_file_names_an_existing_line(tmp_path: Path, tail: str) -> None:
    """An unclosed bracket or quote is reported at a line the file has (its last), saying it hit the end."""
    text = "operation: x\n" + tail
    err = error(tmp_path, text)
    assert err.key == "(syntax)" and err.line is not None
    assert 1 <= err.line <= len(text.splitlines()), (err.line, text)
    assert "end of the file" in err.why or "end of stream" in err.why


def test_a_default_event_the_schedule_lacks_is_refused_when_the_strategy_is_built(tmp_path: Path) -> None:
    """A DCA left on its default ``strategy_tick`` under a schedule without one would never buy: check-config
    (which builds every strategy) refuses it, naming the strategy's line and the events the schedule has."""
    schedule = "events:\n  five_minute_reconciliation_tick: {every: 5m}\n  hourly: {every: 1h}\n"
    text = BASE.replace('{quote_per_buy: "25", every_event: strategy_tick}', '{quote_per_buy: "25"}')
    config = load_config(write(tmp_path, text, schedule), home_env(tmp_path))
    with pytest.raises(ConfigError) as info:
        build_strategy(config.strategies[0], config.schedule)
    err = info.value
    assert (err.key, err.line) == ("strategies[0]", line_of(text, "- name: dca-btc"))
    assert "'strategy_tick'" in err.why and "hourly" in err.why
    ok = load_config(write(tmp_path, text, schedule.replace("hourly", "strategy_tick")), home_env(tmp_path))
    assert build_strategy(ok.strategies[0], ok.schedule).waits_for() == ("strategy_tick",)


def test_testnet_books_are_never_the_real_exchanges(tmp_path: Path) -> None:
    """The identity of the books names the venue: Binance's testnet (its REST URL) is not binance, so books
    kept for the testnet are refused when the same configuration is pointed at the real exchange."""
    from s1mpled.assembly import _identity

    testnet = load(tmp_path, BASE.replace("mode: paper", "mode: live") + TESTNET)
    real = load(tmp_path, BASE.replace("mode: paper", "mode: live") + "live:\n  exchange: binance\n  credentials: k\n")
    assert _identity(testnet)["venue"] == "https://testnet.binance.vision"
    assert _identity(real)["venue"] == "binance"


@pytest.mark.parametrize(
    ("value", "why"),
    [('"a\\0b"', "NUL"), ('"\\ud800x"', "not encodable"), ("~nosuchuser-h3/x", "cannot expand '~nosuchuser-h3'")],
)
@pytest.mark.parametrize("key", ["state_dir", "control_socket", "schedule"])
def test_a_path_the_system_cannot_take_is_a_config_error(tmp_path: Path, key: str, value: str, why: str) -> None:
    """A NUL, an unpaired surrogate or an unknown ``~user`` in a path is refused at its line (once a traceback)."""
    text = BASE + f"{key}: {value}\n"
    err = error(tmp_path, text)
    assert (err.key, err.line) == (key, len(text.splitlines())) and why in err.why, err


def test_every_public_name_is_importable_from_the_package() -> None:
    """``from s1mpled.config import X`` works for every name of ``__all__`` (they load on first use)."""
    import s1mpled.config as package

    assert all(getattr(package, name) is not None for name in package.__all__)
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError):
        _ = package.no_such_name
