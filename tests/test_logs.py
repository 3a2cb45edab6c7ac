"""Tests of structured logging: fields, systemd priorities, the journal handler choice, secret redaction."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from s1mpled import logs
from s1mpled.logs import FIELDS, bind, clear_secrets, register_secret, setup_logging, syslog_priority
from tests.daemon_harness import write_config

log = logging.getLogger("s1mpled.testing")


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_s1mpled_handler", False)]


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test outside systemd, with no secrets, and restore the root and s1mpled loggers afterwards."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    root, own = logging.getLogger(), logging.getLogger("s1mpled")
    saved = (root.level, own.level)
    clear_secrets()
    yield
    clear_secrets()
    for handler in _ours():
        root.removeHandler(handler)
        handler.close()
    root.setLevel(saved[0])
    own.setLevel(saved[1])


_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", re.MULTILINE)


def _plain(buf: io.StringIO) -> str:
    """What was written, every line's timestamp (there outside systemd) checked and removed."""
    text = buf.getvalue()
    lines = text.splitlines()
    assert all(_STAMP.match(line) for line in lines), text
    return _STAMP.sub("", text)


def _as_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make stderr (pytest's capture file, if it has one) the journal's stream, as systemd would."""
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    else:
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def _journal_handler_class() -> Any:
    from systemd.journal import JournalHandler

    return JournalHandler


def test_fields_appear_in_stderr_output() -> None:
    """The stderr format is 'LEVEL logger: message [fields]' and shows only the fields a record has."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    log.warning("order %s placed", "c-1", extra={"EVENT": "ORDER_PLACED", "STRATEGY": "dca-btc", "ORDER_ID": "c-1"})
    log.info("plain")
    lines = _plain(buf).splitlines()
    assert lines == [
        "WARNING s1mpled.testing: order c-1 placed [EVENT=ORDER_PLACED STRATEGY=dca-btc ORDER_ID=c-1]",
        "INFO s1mpled.testing: plain",
    ]


def test_field_values_with_spaces_are_quoted() -> None:
    """A field value containing spaces or brackets is quoted so the bracket list stays parseable."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    log.error("x", extra={"SYMBOL": "BTC/EUR", "STRATEGY": "my grid]"})
    assert _plain(buf) == 'ERROR s1mpled.testing: x [STRATEGY="my grid]" SYMBOL=BTC/EUR]\n'


def test_operation_is_added_to_every_record() -> None:
    """With operation given, every record carries OPERATION, third-party loggers included."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False, operation="op-7")
    log.info("one")
    logging.getLogger("websockets.client").warning("two")
    log.info("three", extra={"OPERATION": "explicit"})
    assert _plain(buf).splitlines() == [
        "INFO s1mpled.testing: one [OPERATION=op-7]",
        "WARNING websockets.client: two [OPERATION=op-7]",
        "INFO s1mpled.testing: three [OPERATION=explicit]",
    ]


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<2>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
    ],
)
@pytest.mark.parametrize("env", ["JOURNAL_STREAM", "INVOCATION_ID"])
def test_syslog_prefix_under_systemd_without_journal_module(
    monkeypatch: pytest.MonkeyPatch, level: int, prefix: str, env: str
) -> None:
    """Under systemd without python-systemd, stderr lines carry the syslog priority prefix of their level."""
    monkeypatch.setenv(env, "8:12345")
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # makes the import fail
    buf = io.StringIO()
    setup_logging("debug", stream=buf)
    assert [type(h) for h in _ours()] == [logging.StreamHandler]
    log.log(level, "hello", extra={"EVENT": "E"})
    assert buf.getvalue() == f"{prefix}{logging.getLevelName(level)} s1mpled.testing: hello [EVENT=E]\n"


def test_syslog_prefix_on_every_traceback_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each line of a logged traceback carries the prefix, so journald files it all at the record's level."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)


def test_syslog_priority_matches_journal_handler() -> None:
    """Our priority mapping agrees with python-systemd's for every level, including in-between ones."""
    journal_handler = _journal_handler_class()
    for levelno in range(61):
        assert syslog_priority(levelno) == journal_handler.map_priority(levelno)


@pytest.mark.parametrize("env", ["JOURNAL_STREAM", "INVOCATION_ID"])
def test_journal_handler_chosen_under_systemd(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    """Under systemd with python-systemd installed, records go to a JournalHandler named s1mpled."""
    monkeypatch.setenv(env, "8:12345")
    setup_logging(stream=io.StringIO())
    (handler,) = _ours()
    assert isinstance(handler, _journal_handler_class())
    assert handler._extra["SYSLOG_IDENTIFIER"] == "s1mpled"


def test_journald_flag_overrides_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    """journald=False keeps stderr under systemd; journald=True picks the journal outside systemd."""
    setup_logging(journald=True)
    assert isinstance(_ours()[0], _journal_handler_class())
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    assert [type(h) for h in _ours()] == [logging.StreamHandler]
    log.warning("w")
    assert buf.getvalue() == "<4>WARNING s1mpled.testing: w\n"


def test_outside_systemd_stderr_has_no_prefix() -> None:
    """Outside systemd the default handler writes to the given stream without priority prefixes (with the time)."""
    buf = io.StringIO()
    setup_logging(stream=buf)
    assert [type(h) for h in _ours()] == [logging.StreamHandler]
    log.critical("c")
    assert _plain(buf) == "CRITICAL s1mpled.testing: c\n"


def test_journal_handler_gets_fields_and_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal handler is handed the UPPERCASE fields and OPERATION, with secrets already redacted."""
    _as_journal_stream(monkeypatch)
    setup_logging(operation="op-1")
    (handler,) = _ours()
    sent: list[tuple[str, dict[str, Any]]] = []

    def fake_send(message: str, /, **fields: Any) -> None:
        sent.append((message, fields))

    handler.send = fake_send  # type: ignore[attr-defined]
    register_secret("s3cr3t-key")
    try:
        raise RuntimeError("bad key s3cr3t-key")
    except RuntimeError:
        log.exception("auth with %s failed", "s3cr3t-key", extra={"STRATEGY": "dca", "SYMBOL": "BTC/EUR"})
    ((message, fields),) = sent
    assert message.startswith("auth with *** failed")
    assert fields["STRATEGY"] == "dca"
    assert fields["SYMBOL"] == "BTC/EUR"
    assert fields["OPERATION"] == "op-1"
    assert fields["SYSLOG_IDENTIFIER"] == "s1mpled"
    assert fields["PRIORITY"] == "3"
    assert "s3cr3t-key" not in repr(sent)


def test_secrets_redacted_in_message_args_fields_and_exception() -> None:
    """A registered secret is replaced by *** wherever it appears: message, args, fields, traceback."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    register_secret("hunter2")
    log.warning("key hunter2 in message")
    log.warning("key %s in args, dict %s", "hunter2", {"secret": "xx-hunter2-xx"})
    log.warning("in a field", extra={"STRATEGY": "hunter2"})
    try:
        raise ValueError("rejected hunter2")
    except ValueError:
        log.exception("boom")
    out = buf.getvalue()
    assert "hunter2" not in out
    assert "key *** in message" in out
    assert "key *** in args, dict {'secret': 'xx-***-xx'}" in out
    assert "[STRATEGY=***]" in out
    assert "ValueError: rejected ***" in out


def test_unformattable_call_does_not_raise_and_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log call whose arguments do not fit its format string neither raises nor leaks a secret."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own capture handler would raise here
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    register_secret("hunter2")
    log.warning("two %s %s", "hunter2")  # noqa: PLE1206 - the bad call is the point
    assert "hunter2" not in buf.getvalue()
    assert "unformattable" in buf.getvalue()


def test_empty_secret_is_ignored() -> None:
    """Registering an empty string does not redact everything."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    register_secret("")
    log.warning("intact")
    assert _plain(buf) == "WARNING s1mpled.testing: intact\n"


def test_longer_secret_redacted_whole() -> None:
    """When one secret contains another, the longer one is replaced as a whole."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    register_secret("abc")
    register_secret("abcdef")
    log.warning("abcdef and abc")
    assert _plain(buf) == "WARNING s1mpled.testing: *** and ***\n"


@given(
    st.text(alphabet=st.characters(blacklist_characters="*%"), min_size=1, max_size=12),
    st.text(alphabet=st.characters(blacklist_characters="%"), max_size=30),
    st.text(alphabet=st.characters(blacklist_characters="%"), max_size=30),
)
def test_secret_never_survives_filtering(secret: str, before: str, after: str) -> None:
    """Whatever text surrounds a secret, the filtered message never contains it."""
    clear_secrets()
    register_secret(secret)
    try:
        record = logging.LogRecord("s1mpled.x", logging.INFO, __file__, 1, before + secret + after, None, None)
        record2 = logging.LogRecord("s1mpled.x", logging.INFO, __file__, 1, "%s|%s", (before, secret + after), None)
        for rec in (record, record2):
            assert logs.SecretFilter().filter(rec)
            assert secret not in rec.getMessage()
    finally:
        clear_secrets()


def test_setup_logging_is_idempotent() -> None:
    """Calling setup_logging twice leaves one handler, and a record is written once, to the newest stream."""
    first, second = io.StringIO(), io.StringIO()
    setup_logging(stream=first, journald=False)
    setup_logging(stream=second, journald=False)
    assert len(_ours()) == 1
    log.warning("once")
    assert _plain(first) == ""
    assert _plain(second) == "WARNING s1mpled.testing: once\n"


def test_setup_logging_keeps_foreign_handlers(caplog: pytest.LogCaptureFixture) -> None:
    """Handlers setup_logging did not install (pytest's caplog here) stay attached."""
    setup_logging(stream=io.StringIO(), journald=False)
    setup_logging(stream=io.StringIO(), journald=False)
    log.warning("seen", extra={"EVENT": "E"})
    assert [(r.getMessage(), getattr(r, "EVENT", None)) for r in caplog.records] == [("seen", "E")]


def test_level_applies_to_s1mpled_loggers_only() -> None:
    """debug enables s1mpled's debug records while third-party loggers stay at INFO."""
    buf = io.StringIO()
    setup_logging("DEBUG", stream=buf, journald=False)
    log.debug("ours")
    logging.getLogger("websockets").debug("theirs")
    assert _plain(buf) == "DEBUG s1mpled.testing: ours\n"
    setup_logging("warning", stream=buf, journald=False)
    log.info("hidden")
    assert _plain(buf) == "DEBUG s1mpled.testing: ours\n"


def test_unknown_level_is_refused() -> None:
    """An unknown level name raises ValueError naming the known ones."""
    with pytest.raises(ValueError, match=r"unknown log level 'loud'.*debug"):
        setup_logging("loud")


def test_bind_adds_fields_and_merges_per_call_extra() -> None:
    """A bound adapter adds its fields to every call; per-call extra adds to them and wins on conflicts."""
    buf = io.StringIO()
    setup_logging(stream=buf, journald=False)
    adapter = bind(log, STRATEGY="grid-eth", SYMBOL="ETH/EUR")
    adapter.info("tick")
    adapter.info("fill", extra={"ORDER_ID": "o-9", "SYMBOL": "ETH/USDT"})
    assert _plain(buf).splitlines() == [
        "INFO s1mpled.testing: tick [STRATEGY=grid-eth SYMBOL=ETH/EUR]",
        "INFO s1mpled.testing: fill [STRATEGY=grid-eth SYMBOL=ETH/USDT ORDER_ID=o-9]",
    ]


def test_bind_rejects_unknown_fields() -> None:
    """bind() refuses field names outside FIELDS, naming the bad one and the allowed ones."""
    with pytest.raises(ValueError, match=r"unknown log field\(s\) strategy; known: OPERATION"):
        bind(log, strategy="lowercase")
    assert set(FIELDS) == {"OPERATION", "STRATEGY", "EVENT", "ORDER_ID", "SYMBOL"}


# ------------------------------------------------------------------------- time stamps: terminal, not journal


def test_foreground_lines_carry_a_timestamp_on_every_line() -> None:
    """Outside systemd (`make run`, `s1mpled run` in a terminal) every line starts with the local time in ms,
    traceback lines included."""
    buf = io.StringIO()
    setup_logging(stream=buf)
    before = datetime.now().replace(microsecond=0)
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) > 2 and all(_STAMP.match(line) for line in lines), lines
    stamp = datetime.strptime(lines[0][:23], "%Y-%m-%d %H:%M:%S.%f")
    assert before <= stamp <= datetime.now()
    assert lines[0][24:] == "ERROR s1mpled.testing: failed"


def test_under_journald_lines_have_no_timestamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr that is the journal's stream ($JOURNAL_STREAM = its device:inode): the <N> priority, no time
    (journald stamps each line itself)."""
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # the stream path, as without python-systemd
    with (tmp_path / "stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        setup_logging(stream=stream)
        log.warning("w")
    assert (tmp_path / "stream").read_text() == "<4>WARNING s1mpled.testing: w\n"


def test_a_journal_stream_variable_leaked_into_a_terminal_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$JOURNAL_STREAM naming another file (a terminal started by a systemd user service passes it on), or
    $INVOCATION_ID on a terminal: plain stderr lines with their time, not the journal."""
    with (tmp_path / "stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        setup_logging(stream=stream)
        assert [type(h) for h in _ours()] == [logging.StreamHandler]
        log.warning("w")
    assert _STAMP.sub("", (tmp_path / "stream").read_text()) == "WARNING s1mpled.testing: w\n"
    monkeypatch.delenv("JOURNAL_STREAM")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    controller, terminal = os.openpty()
    with os.fdopen(terminal, "w") as tty, os.fdopen(controller, "rb", buffering=0) as reader:
        setup_logging(stream=tty)
        assert [type(h) for h in _ours()] == [logging.StreamHandler]
        log.warning("t")
        tty.flush()
        line = reader.read(4096).decode()
    assert _STAMP.match(line) and line.rstrip().endswith("WARNING s1mpled.testing: t"), line


# -------------------------------------------- why the daemon stopped: one journal entry at PRIORITY crit


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What python-systemd's JournalHandler hands to ``systemd.journal.send`` (its own emit path up to there)."""
    from systemd import journal as module

    sent: list[tuple[str, dict[str, Any]]] = []

    def send(message: str, /, **fields: Any) -> None:
        sent.append((message, fields))

    # JournalHandler(level=NOTSET, sender_function=send): the default sender of every handler made meanwhile
    monkeypatch.setattr(module.JournalHandler.__init__, "__defaults__", (logging.NOTSET, send))
    return sent


def _bad_config(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "s1mpled.yaml"
    path.write_text("mode: paper\nmodee: paper\n")
    return path, f"{path}:2: modee: unknown key"


def _damaged_state(tmp_path: Path) -> tuple[Path, str]:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "operation.state.json").write_bytes(b"not a state record\n")
    return config, f"{tmp_path / 'state' / 'operation.state.json'}: "


def _missing_credentials(tmp_path: Path) -> tuple[Path, str]:
    config = write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc.pop("paper")
    doc.update(mode="live", live={"exchange": "binance", "credentials": str(tmp_path / "binance.key")})
    config.write_text(yaml.safe_dump(doc))
    return config, f"{tmp_path / 'binance.key'}: (file): cannot read credentials: No such file or directory"


@pytest.mark.parametrize(
    "case", [(_bad_config, 78), (_damaged_state, 70), (_missing_credentials, 78)], ids=["config", "state", "key"]
)
def test_run_says_why_it_stopped_in_one_journal_entry_at_priority_crit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    journal: list[tuple[str, dict[str, Any]]],
    case: tuple[Any, int],
) -> None:
    """Under journald, `s1mpled run` that cannot go on (config 78, damaged state 70, credentials 78) sends
    exactly one entry at PRIORITY 2 or 3 -- the one `journalctl -u s1mpled -p err` shows -- naming the cause
    and the exit code, with EVENT=STOPPED; nothing goes to stderr, where journald would file it as info."""
    from s1mpled import cli

    make, code = case
    config, why = make(tmp_path)
    monkeypatch.chdir(tmp_path)
    _as_journal_stream(monkeypatch)
    assert cli.main(["run", "--config", str(config)]) == code
    urgent = [(m, f) for m, f in journal if int(f["PRIORITY"]) <= 3]
    assert len(urgent) == 1, journal
    message, fields = urgent[0]
    assert fields["PRIORITY"] == "2" and fields["EVENT"] == "STOPPED" and fields["SYSLOG_IDENTIFIER"] == "s1mpled"
    assert message.startswith(f"s1mpled stopped: {why}") and f"(exit {code}," in message, message
    assert "Traceback" not in message
    assert capsys.readouterr().err == ""
