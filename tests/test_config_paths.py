"""Tests for s1mpled.config.paths: the control commands find the socket reading nothing else of the config."""

from __future__ import annotations

import string
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from s1mpled.cli import main as cli_main
from s1mpled.config import load_config, resolve_control_socket
from s1mpled.errors import EX_CONFIG, ConfigError, ControlError
from tests.daemon_harness import Daemon, write_config
from tests.test_config import BASE, line_of, write

ENV = {"HOME": "/h"}

# Each breaks the config somewhere the socket does not live: load_config refuses it, the resolver does not.
BREAKAGES = {
    "a strategy's params": BASE.replace('quote_per_buy: "25"', 'quote_per_buy: "lots", quote_per_buy: "1"'),
    "a strategy's capital": BASE.replace('capital: "1000"', "capital: plenty"),
    "strategies not a list": BASE.split("strategies:")[0] + "strategies: {}\n",
    "live credentials missing": BASE.replace("mode: paper", "mode: live") + "live: {exchange: binance}\n",
    "an unknown section": BASE + "no_such_section: {x: 1}\n",
    "a duplicated unrelated key": BASE + "log_level: debug\nlog_level: info\n",
    "a non-string key": BASE + "7: seven\n",
    "the operation's name": BASE.replace("operation: test-op", "operation: Not A Name"),
}


def socket_of(tmp_path: Path, text: str, env: Mapping[str, str] = ENV, schedule: str | None = None) -> Path:
    path = write(tmp_path, text) if schedule is None else write(tmp_path, text, schedule)
    return resolve_control_socket(path, env)


def refusal(tmp_path: Path, text: str, env: Mapping[str, str] = ENV) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve_control_socket(write(tmp_path, text), env)
    return info.value


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_socket_is_found_in_a_config_broken_elsewhere(tmp_path: Path, breakage: str) -> None:
    """A config the loader refuses for a part unrelated to the socket still gives the socket's path."""
    text = BREAKAGES[breakage] + "control_socket: run/ctl.sock\n"
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), ENV)
    assert socket_of(tmp_path, text) == tmp_path / "run" / "ctl.sock"


def test_the_schedule_is_not_read(tmp_path: Path) -> None:
    """A missing or broken schedule.yaml does not stop the socket from being found."""
    assert socket_of(tmp_path, BASE + "control_socket: /run/x.sock\n", schedule="events: [\n") == Path("/run/x.sock")


def test_defaults_agree_with_the_loader(tmp_path: Path) -> None:
    """Without control_socket the default is the loader's: $RUNTIME_DIRECTORY, else the state directory."""
    path = write(tmp_path, BASE)
    envs: list[dict[str, str]] = [
        {"HOME": "/h"},
        {"HOME": "/h", "XDG_STATE_HOME": "/xdg"},
        {"HOME": "/h", "XDG_STATE_HOME": "relative"},
        {"STATE_DIRECTORY": "/var/lib/s1mpled:/var/lib/other", "HOME": "/h"},
        {"RUNTIME_DIRECTORY": "/run/s1mpled", "STATE_DIRECTORY": "/var/lib/s1mpled"},
    ]
    for env in envs:
        assert resolve_control_socket(path, env) == load_config(path, env).control_socket, env
    text = BASE + "state_dir: state\n"
    assert socket_of(tmp_path, text) == load_config(write(tmp_path, text), ENV).control_socket
    assert socket_of(tmp_path, text) == tmp_path / "state" / "control.sock"


def test_state_dir_is_not_read_when_the_socket_is_placed(tmp_path: Path) -> None:
    """An explicit control_socket (or $RUNTIME_DIRECTORY) makes state_dir irrelevant, even a broken one."""
    text = BASE + "state_dir: [not, a, path]\n"
    assert socket_of(tmp_path, text + "control_socket: /run/a.sock\n") == Path("/run/a.sock")
    assert socket_of(tmp_path, text, {"RUNTIME_DIRECTORY": "/run/b"}) == Path("/run/b/control.sock")
    err = refusal(tmp_path, text)
    assert (err.key, err.line, err.exit_code) == ("state_dir", line_of(text, "state_dir"), EX_CONFIG)


@pytest.mark.parametrize(
    ("tail", "key", "why"),
    [
        ("control_socket: 42\n", "control_socket", "expected a string"),
        ("control_socket: {a: b}\n", "control_socket", "expected a string"),
        ('control_socket: ""\n', "control_socket", "non-empty"),
        ('control_socket: "a\\0b"\n', "control_socket", "NUL"),
        ('control_socket: "\\ud800"\n', "control_socket", "not encodable"),
        ("control_socket: ~nosuchuser-h3/x\n", "control_socket", "cannot expand"),
        (f"control_socket: /{'x' * 120}\n", "control_socket", "107 bytes"),
        ("control_socket: /a\ncontrol_socket: /b\n", "control_socket", "duplicate key"),
    ],
)
def test_a_bad_socket_setting_is_refused_at_its_line(tmp_path: Path, tail: str, key: str, why: str) -> None:
    """What locating the socket reads is refused like the loader refuses it: file, line, key, why, exit 78."""
    text = BASE + tail
    err = refusal(tmp_path, text)
    last = len(text.splitlines())
    assert (err.file, err.key, err.line, err.exit_code) == (str(tmp_path / "s1mpled.yaml"), key, last, EX_CONFIG)
    assert why in err.why, err


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("operation: x\nstrategies: [\n", "(syntax)"),
        ("- a\n- b\n", "(top level)"),
        ("", "(document)"),
        ("a: &x [*x]\n", "(document)"),
    ],
)
def test_a_file_that_is_no_mapping_is_refused(tmp_path: Path, text: str, key: str) -> None:
    """Without a readable top-level mapping there is no socket to find: a ConfigError, never a guess."""
    assert refusal(tmp_path, text).key == key


def test_status_and_halt_reach_past_a_broken_strategy_without_a_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`s1mpled status`/`halt` with a broken strategy fail on the missing daemon, not on the config (78)."""
    config = write(tmp_path, BREAKAGES["a strategy's params"] + f"control_socket: {tmp_path / 'ctl.sock'}\n")
    for command in (["status"], ["halt", "--reason", "r"], ["resume"], ["reconcile"]):
        assert cli_main([*command, "--config", str(config), "--timeout", "2"]) == ControlError.exit_code != EX_CONFIG
        assert "does not seem to run" in capsys.readouterr().err
    bad = write(tmp_path / "bad", BASE + "control_socket: 42\n")
    assert cli_main(["halt", "--config", str(bad)]) == EX_CONFIG
    assert f"{bad}:{len((BASE + 'x').splitlines())}: control_socket: expected a string" in capsys.readouterr().err


def test_halt_reaches_a_running_daemon_whose_config_an_edit_broke(tmp_path: Path) -> None:
    """A paper daemon runs; its strategy section is then broken: check-config says 78, yet status, halt and
    resume reach the daemon (the breaker opens and closes)."""
    config = write_config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_trading()
    doc = yaml.safe_load(config.read_text())
    doc["strategies"][0]["params"] = {"quote_per_buy": "not money", "every_event": "no_such_event"}
    doc["strategies"][1]["capital"] = "lots"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    cli = [sys.executable, "-m", "s1mpled"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, "--config", str(config)], capture_output=True, text=True, check=False)

    assert run("check-config").returncode == EX_CONFIG
    status = run("status")
    assert status.returncode == 0 and "trading" in status.stdout, status.stderr
    halt = run("halt", "--reason", "config broken by an edit")
    assert halt.returncode == 0, halt.stderr
    assert daemon.status()["breaker"]["state"] == "open"
    assert run("resume").returncode == 0
    assert daemon.status()["breaker"]["state"] == "closed"
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------------------- properties

_KEYS = st.sampled_from(["control_socket", "state_dir", "operation", "strategies", "paper", "x", "<<", "7"])
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_DOCS = st.dictionaries(_KEYS, _VALUES, max_size=6).map(lambda d: yaml.safe_dump(d, allow_unicode=True))
_YAMLISH = st.text(alphabet=string.printable + "\u00e9\ud7ff\ufeff", max_size=200)
_PIECES = st.lists(
    st.sampled_from(
        ["control_socket: ", "state_dir: ", "\n", "  ", "- ", "{", "}", "[", "]", ": ", "&a ", "*a", '"', "'",
         "~", "/run/x.sock", "!!str ", "!!binary ", "? ", "#", "\\0", "\\ud800", "%YAML 1.1\n", "---\n", "...\n"]
    ),
    max_size=25,
).map("".join)  # fmt: skip
_ENVS = st.fixed_dictionaries(
    {},
    optional={
        "HOME": st.sampled_from(["/h", ""]),
        "RUNTIME_DIRECTORY": st.sampled_from(["/run/s1mpled", "", ":/x"]),
        "STATE_DIRECTORY": st.sampled_from(["/var/lib/s1mpled", "rel"]),
        "XDG_STATE_HOME": st.sampled_from(["/xdg", "rel", ""]),
    },
)


@pytest.fixture(scope="module")
def prop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resolver")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS | _YAMLISH | _PIECES, _ENVS)
@example("control_socket: !!binary aGVsbG8=\n", {})
@example("control_socket: [*a]\nx: &a 1\n", {})
@example('state_dir: "\\ud800"\n', {"HOME": "/h"})
def test_the_resolver_gives_a_path_or_a_config_error(prop_dir: Path, text: str, env: dict[str, str]) -> None:
    """On any YAML-ish input the resolver returns a path or raises a ConfigError naming the file (exit 78),
    never anything else -- and, whenever the full loader accepts the file, the loader's very socket."""
    path = prop_dir / "s1mpled.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        socket = resolve_control_socket(path, env)
    except ConfigError as exc:
        assert (exc.file, exc.exit_code) == (str(path), EX_CONFIG)
        return
    assert isinstance(socket, Path)


_PLACES: dict[str, Any] = {"absent": None, "absolute": "/run/s/ctl.sock", "relative": "run/ctl.sock", "home": "~/c"}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(_PLACES)), st.sampled_from([None, "/var/lib/x", "state", 7]), _ENVS)
def test_the_resolver_agrees_with_the_loader(tmp_path: Path, socket: str, state_dir: Any, env: dict[str, str]) -> None:
    """For valid configs with every placement of the socket and the state directory, and every systemd/XDG
    environment, the resolver finds exactly ``load_config(...).control_socket`` -- or both refuse."""
    doc = yaml.safe_load(BASE)
    for key, value in (("control_socket", _PLACES[socket]), ("state_dir", state_dir)):
        if value is not None:
            doc[key] = value
    path = write(tmp_path, yaml.safe_dump(doc))
    try:
        expected: Path | None = load_config(path, env).control_socket
    except ConfigError:
        expected = None
    try:
        found: Path | None = resolve_control_socket(path, env)
    except ConfigError:
        found = None
    assert found == expected or (expected is None and state_dir == 7 and found is not None)
