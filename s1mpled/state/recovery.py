"""Journal recovery as a pure decision: what ``load()`` does with the files it finds.

The spec (§6.1) says "if a .journal exists, finish the rename". That is right only for a
*complete* journal: a crash while writing leaves a torn one, and promoting it would replace good
state with garbage. So the decision takes what was observed of each file -- missing, verified at
some generation, invalid for a stated reason, or written by a newer format -- and returns a plan:
which file's state to load and which renames make the directory consistent again. Nothing is
ever deleted; damaged files are set aside under a ``.corrupt-<time>`` name for forensics.

Rules (``NAME`` is the state file, e.g. ``dca.state.json``). The newest *verified* generation among
``NAME``, ``NAME.journal`` and ``NAME.prev`` is what loads, whatever file holds it -- a verified but
older file never wins over a newer one, because the next save rotates ``NAME`` into ``NAME.prev`` and
would destroy the newer generation for good:

1. ``NAME.journal`` verified and newer than every other verified file: the interrupted save is
   finished -- ``NAME`` becomes ``NAME.prev`` (if it verified and is newer than ``NAME.prev``; else it
   is set aside) and the journal becomes ``NAME``. If ``NAME`` was damaged this is loud
   (``fallback``): its generation cannot be known, so it may have been newer than the journal.
2. ``NAME.journal`` verified but not the newest: a stale leftover, set aside as ``.stale-<time>``.
3. ``NAME.journal`` torn or damaged: it was never acknowledged; set aside as ``.corrupt-<time>``.
4. ``NAME`` verified and the newest (ties with ``NAME.prev`` go to ``NAME``): load it.
5. ``NAME.prev`` is the newest verified (``NAME`` damaged, missing or older): load the previous
   generation, loudly (``fallback`` is set); ``NAME`` is set aside (``.corrupt-<time>`` if damaged,
   ``.stale-<time>`` if it verified) so the next save cannot rotate it over ``NAME.prev``.
6. Nothing verifies but something exists: refuse (``error``), touch nothing.
7. No file at all: a first start (``fresh``), distinguishable from a lost state.

After the plan's renames ``NAME`` (or, on a fallback, ``NAME.prev``) holds the newest verified
generation, no journal is left, and a crash in the middle of the renames leads the next plan to the
same generation.

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
    fresh start or an error. ``fallback``: a newer generation may have been lost (``NAME`` was damaged
    or older than ``NAME.prev``); the caller says so loudly and, e.g., starts a new client-id epoch.
    ``messages`` explain every non-routine step, for the log.
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

    main_gen, journal_gen, prev_gen = (o.generation if isinstance(o, Verified) else 0 for o in (main, journal, prev))
    renames: list[Rename] = []
    messages: list[str] = []

    def set_aside(src: str, obs: Observation, *, say: bool = True) -> None:
        """A damaged file goes to .corrupt-<time>, a verified but older one to .stale-<time>."""
        if isinstance(obs, Invalid):
            renames.append(Rename(src, f"{src}.corrupt-{stamp}"))
            note = f"{src}: damaged ({obs.why}); set aside"
        elif isinstance(obs, Verified):
            renames.append(Rename(src, f"{src}.stale-{stamp}"))
            note = f"{src}: generation {obs.generation} is not the newest verified one; set aside"
        else:
            return
        if say:
            messages.append(note)

    if journal_gen > max(main_gen, prev_gen):  # rule 1: the interrupted save
        if isinstance(main, Verified) and main_gen > prev_gen:
            if isinstance(prev, Invalid):  # kept for forensics; an older verified .prev is replaced, as saves do
                set_aside(prev_name, prev)
            renames.append(Rename(name, prev_name))
        else:
            set_aside(name, main)
        renames.append(Rename(journal_name, name))
        messages.append(f"{journal_name}: completed interrupted save of generation {journal_gen}")
        damaged = isinstance(main, Invalid)  # its generation is unknown: it may have been newer
        return Plan(tuple(renames), name, "journal", journal_gen, fallback=damaged, messages=tuple(messages))

    if isinstance(journal, Invalid):  # rule 3
        renames.append(Rename(journal_name, f"{journal_name}.corrupt-{stamp}"))
        messages.append(f"{journal_name}: incomplete save set aside ({journal.why}); it was never acknowledged")
    else:  # rule 2
        set_aside(journal_name, journal)

    if isinstance(main, Verified) and main_gen >= prev_gen:  # rule 4
        return Plan(tuple(renames), name, "main", main_gen, messages=tuple(messages))
    if isinstance(prev, Verified):  # rule 5
        why = f"generation {main_gen} is older than {prev_name}" if isinstance(main, Verified) else _unreadable(main)
        set_aside(name, main, say=False)
        messages.append(f"{name}: {why}; FELL BACK to the previous generation {prev_gen} from {prev_name}")
        return Plan(tuple(renames), prev_name, "prev", prev_gen, fallback=True, messages=tuple(messages))
    if isinstance(main, Missing) and isinstance(prev, Missing):  # rule 7
        return Plan(tuple(renames), fresh=True, messages=tuple(messages))
    return Plan(  # rule 6
        error=f"{name}: {_unreadable(main)}, and {prev_name}: {_unreadable(prev)}; no verified generation to load",
        messages=tuple(messages),
    )
