"""Structured logging: one stdlib ``logging`` tree whose records carry journal fields.

Why: an operator asks journald "what did strategy dca-btc do during operation X", so every record
may carry the UPPERCASE fields in :data:`FIELDS` (passed as ``extra=``). Under systemd the records
go to ``systemd.journal.JournalHandler``, which turns UPPERCASE record attributes into journal
fields (``journalctl STRATEGY=dca-btc``). Anywhere else -- or when python-systemd is missing -- a
stderr handler shows them inline (``TIME LEVEL logger: message [EVENT=.. STRATEGY=..]``); when that
stderr is the journal's stream, each line starts with the ``<N>`` syslog priority instead of the
time, so journald files it at the right level and stamps it itself.

"Under systemd" means: stderr is the journal's stream (``$JOURNAL_STREAM`` names its device and
inode, systemd.exec(5) -- the variable alone is not enough, a terminal started by a systemd user
service passes it on to every shell), or ``$INVOCATION_ID`` is set and stderr is not a terminal. A
terminal (``make run``, ``s1mpled run`` by hand) gets plain stderr lines with their time.

Secrets (API keys) must never reach a log line: :func:`register_secret` makes the
:class:`SecretFilter` on every handler installed here replace them with ``***`` in messages,
arguments, fields and exception text, before any formatter or the journal sees the record.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

__all__ = [
    "FIELDS",
    "OperationFilter",
    "SecretFilter",
    "StructuredFormatter",
    "bind",
    "clear_secrets",
    "is_journal_stream",
    "register_secret",
    "setup_logging",
    "syslog_priority",
]

FIELDS = ("OPERATION", "STRATEGY", "EVENT", "ORDER_ID", "SYMBOL")
_DISPLAY_ORDER = ("EVENT", "STRATEGY", "SYMBOL", "ORDER_ID", "OPERATION")  # most telling first on a stderr line
_IDENTIFIER = "s1mpled"
_REDACTED = "***"
_OURS = "_s1mpled_handler"  # attribute marking the handlers setup_logging installed (idempotency)
_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is redacted whole
_secrets_lock = threading.Lock()


def syslog_priority(levelno: int) -> int:
    """The syslog priority journald files a record of ``levelno`` under (same mapping as JournalHandler)."""
    for ceiling, priority in ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3)):
        if levelno <= ceiling:
            return priority
    return 2 if levelno <= logging.CRITICAL else 1


def _render_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=[]' for c in text):
        return json.dumps(text)
    return text


class StructuredFormatter(logging.Formatter):
    """``LEVEL logger: message [EVENT=.. STRATEGY=..]`` for stderr, showing only the fields a record has.

    With ``syslog_prefix`` every line (tracebacks included) starts with ``<N>``, because journald
    reads the priority prefix per line of a stream and would file continuation lines as INFO.
    With ``timestamps`` every line starts with the record's local time to the millisecond
    (``2026-05-04 13:02:11.042``), for a terminal or a file; journald stamps lines itself.
    """

    default_msec_format = "%s.%03d"

    def __init__(self, *, syslog_prefix: bool = False, timestamps: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        """Render the record on one line (plus traceback lines), fields in brackets at the end."""
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        fields = [
            f"{name}={_render_value(v)}" for name in _DISPLAY_ORDER if (v := getattr(record, name, None)) is not None
        ]
        if fields:
            text += " [" + " ".join(fields) + "]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        prefix = f"{self.formatTime(record)} " if self.timestamps else ""
        if self.syslog_prefix:
            prefix = f"<{syslog_priority(record.levelno)}>{prefix}"
        if not prefix:
            return text
        return "\n".join(prefix + line for line in text.split("\n"))


class OperationFilter(logging.Filter):
    """Stamps OPERATION on every record that lacks it, so one journal query finds a whole operation."""

    def __init__(self, operation: str) -> None:
        super().__init__()
        self.operation = operation

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the OPERATION field unless the caller set one; never drops a record."""
        if getattr(record, "OPERATION", None) is None:
            record.OPERATION = self.operation
        return True


def register_secret(secret: str) -> None:
    """Make every :class:`SecretFilter` replace ``secret`` with ``***``; empty strings are ignored."""
    global _secrets  # noqa: PLW0603 - one process-wide registry is the point
    if not secret:
        return
    with _secrets_lock:
        _secrets = tuple(sorted({*_secrets, secret}, key=len, reverse=True))


def clear_secrets() -> None:
    """Forget every registered secret (for tests and for re-reading credentials)."""
    global _secrets  # noqa: PLW0603
    with _secrets_lock:
        _secrets = ()


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


class SecretFilter(logging.Filter):
    """Redacts registered secrets from a record in place: message, args, fields, exception and stack text.

    If a secret occurs in the formatted message, the record's ``msg`` becomes the redacted message
    and ``args`` is emptied (an argument may be any object whose ``str`` shows the secret). The
    exception is rendered once, redacted, into ``exc_text`` and ``exc_info`` is dropped, because
    JournalHandler would otherwise send ``str(exc_info)`` unredacted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact and keep the record; a cheap no-op while no secret is registered."""
        secrets = _secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format call must not crash the caller; keep what it tried to say
            message = f"{record.msg!s} (unformattable arguments: {record.args!r})"
            record.msg, record.args = message, ()
        if any(s in message for s in secrets):
            record.msg, record.args = _redact(message, secrets), ()
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None and any(s in str(value) for s in secrets):
                setattr(record, name, _redact(str(value), secrets))
        if record.exc_info:
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = _redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info, secrets)
        return True


class _FieldAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds bound fields to every call; a per-call ``extra`` wins over a bound field of the same name."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def bind(logger: logging.Logger, **fields: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger adapter that adds ``fields`` (names from :data:`FIELDS`) to every record it logs."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown log field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    return _FieldAdapter(logger, dict(fields))


def _fd_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO: io.UnsupportedOperation
        return None


def is_journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is journald's: ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of the very file it writes to.

    A stream with no file descriptor (a test's StringIO) is taken at the variable's word.
    """
    value = environ.get("JOURNAL_STREAM")
    if not value:
        return False
    fd = _fd_of(stream)
    if fd is None:
        return True
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


def _under_systemd(environ: Mapping[str, str], stream: TextIO) -> bool:
    """stderr is the journal, or this is a systemd service whose stderr is not a terminal (see the module doc)."""
    if is_journal_stream(stream, environ):
        return True
    if not environ.get("INVOCATION_ID"):
        return False
    fd = _fd_of(stream)
    return fd is None or not os.isatty(fd)


def _journal_handler() -> logging.Handler | None:
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=_IDENTIFIER)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; known: {', '.join(_LEVELS)}") from None


def _make_handler(stream: TextIO | None, journald: bool | None) -> logging.Handler:
    out = stream if stream is not None else sys.stderr
    systemd = _under_systemd(os.environ, out)
    if journald if journald is not None else systemd:
        handler = _journal_handler()
        if handler is not None:
            return handler
    stream_handler = logging.StreamHandler(out)
    stream_handler.setFormatter(StructuredFormatter(syslog_prefix=systemd, timestamps=not systemd))
    return stream_handler


def setup_logging(
    level: str = "info", *, operation: str | None = None, stream: TextIO | None = None, journald: bool | None = None
) -> None:
    """Install the one s1mpled handler on the root logger, replacing any an earlier call installed.

    ``journald``: None chooses the journal when running under systemd (stderr is the journal's
    stream, or INVOCATION_ID is set and stderr is no terminal), True asks for it anywhere, False never
    uses it; without python-systemd the stderr handler is used (with ``<N>`` prefixes under systemd,
    with timestamps elsewhere). ``level`` applies to s1mpled's own
    loggers; the root logger (third-party libraries) stays at INFO or above, so ``debug`` does not
    drown the journal in websocket frames.
    """
    levelno = _parse_level(level)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    handler = _make_handler(stream, journald)
    setattr(handler, _OURS, True)
    if operation is not None:
        handler.addFilter(OperationFilter(operation))
    handler.addFilter(SecretFilter())
    root.addHandler(handler)
    root.setLevel(max(levelno, logging.INFO))
    logging.getLogger(_IDENTIFIER).setLevel(levelno)
