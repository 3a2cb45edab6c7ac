"""Journal recovery as a pure decision: what ``load()`` does with the files it finds.

The spec (§6.1) says "if a .journal exists, finish the rename". That is right only for a
*complete* journal: a crash while writing leaves a torn one, and promoting it would replace good
state with garbage. So the decision takes what was observed of each file -- missing, verified at
some generation, invalid for a stated reason, or written by a newer format -- and returns a plan:
which file's state to load and which renames make the directory consistent again. Nothing is
ever deleted; damaged files are set aside under a ``.corrupt-<time>`` name for forensics.

Rules (``NAME`` is the state file, e.g. ``dca.state.json``):

1. ``NAME.journal`` verified and newer than ``NAME`` (or ``NAME`` unusable): the interrupted save
   is finished -- ``NAME`` becomes ``NAME.prev`` (if it verified) and the journal becomes ``NAME``.
2. ``NAME.journal`` verified but not newer: a stale leftover, set aside as ``.stale-<time>``.
3. ``NAME.journal`` torn or damaged: it was never acknowledged; set aside as ``.corrupt-<time>``.
4. ``NAME`` verified: load it.
5. ``NAME`` damaged or missing while ``NAME.prev`` verifies: load the previous generation, loudly
   (``fallback`` is set); a damaged ``NAME`` is set aside so the next save cannot rotate it into
   ``NAME.prev``.
6. Nothing verifies but something exists: refuse (``error``), touch nothing.
7. No file at all: a first start (``fresh``), distinguishable from a lost state.

A file in a format newer than this program understands is never skipped over: refusing is the
only safe answer, since falling back would silently drop the newer state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Invalid", "Missing", "Observation", "Plan", "Rename", "Unsupported", "Verified", "plan_load"]


@dataclass(frozen=True, slots=True)
class Missing:
    """The file does not exist."""


@dataclass(frozen=True, slots=True)
class Verified:
    """The file is a complete record whose checksum matched."""

    generation: int


@dataclass(frozen=True, slots=True)
class Invalid:
    """The file exists but is not a verified record; ``why`` is the codec's reason."""

    why: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """The file claims a format version this program cannot read."""

    version: int


Observation = Missing | Verified | Invalid | Unsupported
Source = Literal["main", "journal", "prev"]


@dataclass(frozen=True, slots=True)
class Rename:
    """Rename ``src`` to ``dst`` within the state directory (names, not paths)."""

    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What load() must do: the renames (then one directory fsync), and which file to read.

    ``load_from`` names the file (after the renames) whose state is the result, or None for a
    fresh start or an error. ``messages`` explain every non-routine step, for the log.
    """

    renames: tuple[Rename, ...] = ()
    load_from: str | None = None
    source: Source | None = None
    generation: int = 0
    fresh: bool = False
    fallback: bool = False
    error: str | None = None
    messages: tuple[str, ...] = field(default_factory=tuple)


def _unreadable(obs: Observation) -> str:
    if isinstance(obs, Invalid):
        return obs.why
    if isinstance(obs, Unsupported):
        return f"written in format version {obs.version}, which this s1mpled cannot read"
    return "missing"


def plan_load(name: str, main: Observation, journal: Observation, prev: Observation, stamp: str) -> Plan:
    """Decide how to load state ``name`` from what was observed of its three files.

    ``stamp`` is a timestamp (e.g. ``20261121T235959.123456Z``) used for set-aside names, passed in
    so that this function has no clock.
    """
    journal_name, prev_name = f"{name}.journal", f"{name}.prev"
    for label, obs in (("", main), (".journal", journal), (".prev", prev)):
        if isinstance(obs, Unsupported):
            return Plan(error=f"{name}{label}: {_unreadable(obs)}; refusing to fall back past it")

    renames: list[Rename] = []
    messages: list[str] = []
    if isinstance(journal, Invalid):
        renames.append(Rename(journal_name, f"{journal_name}.corrupt-{stamp}"))
        messages.append(f"{journal_name}: incomplete save set aside ({journal.why}); it was never acknowledged")
    elif isinstance(journal, Verified):
        main_gen = main.generation if isinstance(main, Verified) else 0
        if journal.generation > main_gen:
            if isinstance(main, Verified):
                renames.append(Rename(name, prev_name))
            elif isinstance(main, Invalid):
                renames.append(Rename(name, f"{name}.corrupt-{stamp}"))
                messages.append(f"{name}: damaged ({main.why}); set aside")
            renames.append(Rename(journal_name, name))
            messages.append(f"{journal_name}: completed interrupted save of generation {journal.generation}")
            return Plan(tuple(renames), name, "journal", journal.generation, messages=tuple(messages))
        renames.append(Rename(journal_name, f"{journal_name}.stale-{stamp}"))
        messages.append(f"{journal_name}: generation {journal.generation} is not newer than {name}; set aside")

    if isinstance(main, Verified):
        return Plan(tuple(renames), name, "main", main.generation, messages=tuple(messages))
    if isinstance(prev, Verified):
        if isinstance(main, Invalid):
            renames.append(Rename(name, f"{name}.corrupt-{stamp}"))
        messages.append(
            f"{name}: {_unreadable(main)}; FELL BACK to the previous generation {prev.generation} from {prev_name}"
        )
        return Plan(tuple(renames), prev_name, "prev", prev.generation, fallback=True, messages=tuple(messages))
    if isinstance(main, Missing) and isinstance(prev, Missing):
        return Plan(tuple(renames), fresh=True, messages=tuple(messages))
    return Plan(
        error=f"{name}: {_unreadable(main)}, and {prev_name}: {_unreadable(prev)}; no verified generation to load",
        messages=tuple(messages),
    )
