"""The durable state store (spec §6.1): journaled, checksummed, generational state files.

See ``store`` for the guarantee, ``protocol`` for the save steps, ``recovery`` for what load()
does with leftovers, ``codec`` for the file format and ``plugin`` for the stateful-plugin API.

The public names below are loaded on first use (PEP 562), so that importing a pure submodule
(``codec``, ``protocol``, ``recovery``) does not pull in ``store``'s I/O (asyncio, fcntl, threads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from s1mpled import lazy

if TYPE_CHECKING:
    from s1mpled.state.codec import FORMAT_VERSION, InvalidRecord, Record
    from s1mpled.state.plugin import StatefulPlugin
    from s1mpled.state.store import LoadResult, StateDirectory, StateFile, StoreStats

__all__ = [
    "FORMAT_VERSION",
    "InvalidRecord",
    "LoadResult",
    "Record",
    "StateDirectory",
    "StateFile",
    "StatefulPlugin",
    "StoreStats",
]

_HOME = {
    "FORMAT_VERSION": "codec",
    "InvalidRecord": "codec",
    "Record": "codec",
    "StatefulPlugin": "plugin",
    "LoadResult": "store",
    "StateDirectory": "store",
    "StateFile": "store",
    "StoreStats": "store",
}

__getattr__, __dir__ = lazy.exports(globals(), _HOME)
