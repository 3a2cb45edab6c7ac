"""The stateful-plugin API the spec names: ``save_state()`` / ``load_state()`` on the store.

A plugin author implements two small conversions -- ``state_snapshot()`` (the plugin's state as a
JSON-shaped dict, Decimals allowed) and ``restore_state()`` -- and never touches files. The
ComponentBuilder calls ``load_state()`` for every stateful plugin during recovery step A, before
anything can trade; ``save_state()`` returns once the state is durable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

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
            self.restore_state(result.state)
        return result

    async def save_state(self) -> int:
        """Durably persist the current state; returns the generation written."""
        return await self.state_file.save(self.state_snapshot())

    def save_state_sync(self) -> int:
        """Blocking variant for code that runs outside the event loop (CLI, shutdown paths)."""
        return self.state_file.save_sync(self.state_snapshot())
