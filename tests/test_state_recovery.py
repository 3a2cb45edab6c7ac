"""The pure load plan, exhaustively over what can be observed of the three files."""

from __future__ import annotations

import itertools

from s1mpled.state import recovery
from s1mpled.state.recovery import Invalid, Missing, Observation, Unsupported, Verified

OBS: list[Observation] = [Missing(), Invalid("torn"), Unsupported(9), Verified(1), Verified(2), Verified(3)]
N = "x.state.json"


def _gen(o: Observation) -> int:
    return o.generation if isinstance(o, Verified) else 0


def test_every_combination_follows_the_rules() -> None:
    """All 216 combinations: refuse newer formats, load the newest trustworthy generation, move no good file."""
    for main, journal, prev in itertools.product(OBS, repeat=3):
        plan = recovery.plan_load(N, main, journal, prev, "T")
        trio = (main, journal, prev)
        if any(isinstance(o, Unsupported) for o in trio):
            assert plan.error and "format version 9" in plan.error and not plan.renames
            continue
        for r in plan.renames:  # only damaged/stale files are set aside; good ones only move forward
            assert r.dst in (N, f"{N}.prev") or ".corrupt-" in r.dst or ".stale-" in r.dst
        if isinstance(journal, Verified) and journal.generation > _gen(main):
            assert (plan.source, plan.generation) == ("journal", journal.generation)
        elif isinstance(main, Verified):
            assert (plan.source, plan.generation, plan.fallback) == ("main", main.generation, False)
        elif isinstance(prev, Verified):
            assert (plan.source, plan.generation, plan.fallback) == ("prev", prev.generation, True)
        elif isinstance(main, Missing) and isinstance(prev, Missing):
            assert plan.fresh and plan.error is None and plan.load_from is None
        else:
            assert plan.error is not None and plan.renames == () and N in plan.error


def test_invalid_journal_is_never_promoted() -> None:
    """A torn journal is set aside even when the main file is missing: its content is never loaded."""
    plan = recovery.plan_load(N, Missing(), Invalid("truncated"), Missing(), "T")
    assert plan.fresh and plan.renames == (recovery.Rename(f"{N}.journal", f"{N}.journal.corrupt-T"),)


def test_promotion_keeps_the_previous_generation() -> None:
    """Finishing an interrupted save rotates the verified main file to .prev before renaming the journal."""
    plan = recovery.plan_load(N, Verified(4), Verified(5), Verified(3), "T")
    assert plan.renames == (recovery.Rename(N, f"{N}.prev"), recovery.Rename(f"{N}.journal", N))
    assert plan.load_from == N


def test_damaged_main_is_not_rotated_into_prev() -> None:
    """When the journal is promoted over a damaged main file, the damage goes to .corrupt-*, not over .prev."""
    plan = recovery.plan_load(N, Invalid("bad"), Verified(5), Verified(3), "T")
    assert recovery.Rename(N, f"{N}.corrupt-T") in plan.renames
    assert all(r.dst != f"{N}.prev" for r in plan.renames)
