"""The stateful-plugin API the spec names: ``save_state()`` / ``load_state()`` on the store.

A plugin author implements two small conversions -- ``state_snapshot()`` (the plugin's state as a
JSON-shaped dict, Decimals allowed) and ``restore_state()`` -- and never touches files. The
ComponentBuilder calls ``load_state()`` for every stateful plugin during recovery step A, before
anything can trade; ``save_state()`` returns once the state is durable.

A file can verify (its checksum matches) and still hold a state ``restore_state()`` cannot use -- a
wrong type, a missing key, a value out of range. ``restore_state()`` says so with ValueError("key:
why") (or LocalStateError); ``load_state()`` turns it into a StateError naming the file and the key,
so the daemon stops with one clear line instead of a traceback, and nothing half-restored runs.

On a full disk ``save_state()`` waits until the state is written (the store retries with backoff);
a caller that must not wait -- an order is sent only once its intent is durable -- passes
``wait_for_space=False`` and gets StateDiskFullError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from s1mpled.errors import LocalStateError, StateError
from s1mpled.state.store import LoadResult, StateFile

__all__ = ["StatefulPlugin"]


class StatefulPlugin(ABC):
    """Base for every component whose state must survive a crash (strategies, ledgers, breaker)."""

    def __init__(self, state_file: StateFile) -> None:
        self.state_file = state_file

    @abstractmethod
    def state_snapshot(self) -> dict[str, Any]:
        """The complete state to persist (str keys; Decimal for every amount, never float)."""

    @abstractmethod
    def restore_state(self, state: dict[str, Any]) -> None:
        """Adopt a previously saved snapshot (called at most once, from load_state)."""

    def load_state(self) -> LoadResult:
        """Recover the newest verified state; a fresh start leaves the plugin's initial state."""
        result = self.state_file.load()
        if result.state is not None:
            try:
                self.restore_state(result.state)
            except (ValueError, LookupError, TypeError, ArithmeticError, LocalStateError) as exc:
                raise StateError(str(self.state_file.path), f"the saved state cannot be used: {_why(exc)}") from exc
        return result

    async def save_state(self, *, wait_for_space: bool = True) -> int:
        """Durably persist the current state; returns the generation written.

        On a full disk it waits until the state is written (retried with backoff); with
        ``wait_for_space=False`` it raises StateDiskFullError instead (see ``StateFile.save``).
        """
        return await self.state_file.save(self.state_snapshot(), wait_for_space=wait_for_space)

    def save_state_sync(self) -> int:
        """Blocking variant for code that runs outside the event loop (CLI, shutdown paths)."""
        return self.state_file.save_sync(self.state_snapshot())


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    if isinstance(exc, ValueError | LocalStateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # a type or arithmetic error on the snapshot's values
