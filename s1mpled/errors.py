"""The one exception tree of s1mpled.

Every error the daemon raises on purpose derives from :class:`S1mpledError`, so the CLI can map
it to an exit code and a one-line message in one place (``s1mpled.cli``). Third-party exceptions
(ccxt, OSError) are translated at the adapter that calls the library, never further in.

    S1mpledError
    ├── ConfigError              bad configuration: exit 78 (EX_CONFIG), systemd does not restart
    ├── StateError               the durable state store
    │   ├── StateCorruptError    no verified generation of a state file exists
    │   ├── StateLockedError     another process owns the state directory
    │   ├── StateEncodeError     a value cannot be persisted exactly (e.g. NaN, an unknown type)
    │   ├── StateDiskFullError   ENOSPC/EDQUOT writing a state: nothing written, retried until space returns
    │   └── StateFsyncError      fsync failed: fail-stop (exit 70), recovery reloads from disk
    ├── LocalStateError          our own invariant broke (an illegal state transition): a bug
    │   └── RecordError          a record does not read back (s1mpled.record): also a ValueError
    ├── RemoteStateError         the exchange contradicted itself or sent garbage
    ├── ExchangeError            talking to the exchange failed
    │   ├── ExchangeUnavailable  transient: network, 5xx, timeouts; retry with backoff
    │   └── ExchangeRejected     permanent for this request: auth, insufficient funds, bad order
    └── ControlError             the control socket could not serve a request
"""

from __future__ import annotations

__all__ = [
    "EX_CONFIG",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "ConfigError",
    "ControlError",
    "ExchangeError",
    "ExchangeRejected",
    "ExchangeUnavailable",
    "LocalStateError",
    "RecordError",
    "RemoteStateError",
    "S1mpledError",
    "StateCorruptError",
    "StateDiskFullError",
    "StateEncodeError",
    "StateError",
    "StateFsyncError",
    "StateLockedError",
]

EX_UNAVAILABLE = 69  # the daemon (control socket) is not there
EX_SOFTWARE = 70  # internal error / broken invariant: let the supervisor restart us
EX_TEMPFAIL = 75  # a dependency (the exchange) is unavailable at startup: retry later
EX_CONFIG = 78  # configuration error: restarting cannot help


class S1mpledError(Exception):
    """Base of every error s1mpled raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code: int = EX_SOFTWARE


class ConfigError(S1mpledError):
    """The configuration is invalid; the message names the file, the key and what is wrong."""

    exit_code = EX_CONFIG

    def __init__(self, file: str, key: str, why: str, line: int | None = None) -> None:
        self.file, self.key, self.why, self.line = file, key, why, line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key}: {why}")


class StateError(S1mpledError):
    """The durable state store could not do what was asked; ``path`` names the file or directory."""

    def __init__(self, path: str, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(f"{path}: {why}")


class StateCorruptError(StateError):
    """No generation of a state file verifies; nothing was loaded, nothing was deleted."""


class StateLockedError(StateError):
    """Another live process holds the state directory's lock (``holder_pid`` if it is known)."""

    def __init__(self, path: str, why: str, holder_pid: int | None) -> None:
        self.holder_pid = holder_pid
        super().__init__(path, why)


class StateEncodeError(StateError):
    """A state value cannot be stored exactly (NaN, infinity, an unsupported type, a reserved key)."""


class StateDiskFullError(StateError):
    """No space (ENOSPC) or quota (EDQUOT) to write a state; the journal was removed, nothing else changed.

    Retryable: the previous generation is intact, and the store writes the newest state once space
    returns (``StateFile.save`` waits and retries; ``wait_for_space=False`` raises this instead).
    """

    exit_code = EX_TEMPFAIL


class StateFsyncError(StateError):
    """fsync of a state file or the state directory failed (EIO, or any other errno).

    Fail-stop: after a failed fsync the kernel may have dropped the dirty pages and marked them clean,
    so the page cache no longer tells what is on disk and retrying fsync can "succeed" with the data
    lost (Rebello et al., "Can Applications Recover from fsync Failures?", USENIX ATC'20). The
    directory refuses every later write, the daemon exits 70, systemd restarts it and recovery
    reloads the state from disk.
    """


class LocalStateError(S1mpledError):
    """Our own invariant broke (e.g. an illegal order-state transition): a bug, crash and recover."""


class RecordError(LocalStateError, ValueError):
    """A record does not read back as its dataclass (:mod:`s1mpled.record`); the message names the path.

    A LocalStateError because the records read are ours (a state file our writer wrote, the simulator's
    answer in a test); a ValueError too, because a plugin's ``restore_state()`` promises one for a
    snapshot it cannot use.
    """


class RemoteStateError(S1mpledError):
    """The exchange sent something impossible or malformed; logged and survived, never trusted."""

    exit_code = EX_TEMPFAIL


class ExchangeError(S1mpledError):
    """Talking to the exchange failed."""

    exit_code = EX_TEMPFAIL


class ExchangeUnavailable(ExchangeError):
    """Transient failure (network, HTTP 5xx, 429, timeout): retry with backoff, never assume an outcome."""


class ExchangeRejected(ExchangeError):
    """The exchange refused the request for good (authentication, funds, invalid order)."""


class ControlError(S1mpledError):
    """The control socket could not be reached or answered with an error."""

    exit_code = EX_UNAVAILABLE
