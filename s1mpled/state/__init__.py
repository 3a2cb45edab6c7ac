"""The durable state store (spec §6.1): journaled, checksummed, generational state files.

See ``store`` for the guarantee, ``protocol`` for the save steps, ``recovery`` for what load()
does with leftovers, ``codec`` for the file format and ``plugin`` for the stateful-plugin API.
"""

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
