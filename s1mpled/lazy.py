"""Re-exports of a package loaded on first use (PEP 562), for a package whose submodules are not all pure.

Importing a submodule imports its package first, so a package that re-exported its names with plain imports
would load every one of its submodules whenever any one is imported: ``s1mpled.state.codec`` (pure) would load
``store``'s asyncio and fcntl, ``s1mpled.config.model`` PyYAML. Such a package says instead where each name
lives and installs the pair of functions :func:`exports` returns as its ``__getattr__`` and ``__dir__``; it
keeps ``if TYPE_CHECKING:`` imports of the same names for the type checker. Pure: imports nothing but
``importlib``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    namespace: dict[str, Any], homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``: ``homes`` maps each
    re-exported name to the submodule (relative to the package) that defines it.

    A name is imported from its home on first lookup and then stored in the package, so later lookups are
    plain attribute reads that never reach ``__getattr__``.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
