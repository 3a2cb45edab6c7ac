"""The pure load plan, exhaustively over what can be observed of the three files."""

from __future__ import annotations

import itertools

from s1mpled.state import protocol, recovery
from s1mpled.state.recovery import Invalid, Missing, Observation, Unsupported, Verified

OBS: list[Observation] = [Missing(), Invalid("torn"), Unsupported(9), Verified(1), Verified(2), Verified(3)]
N = "x.state.json"


def _gen(o: Observation) -> int:
    return o.generation if isinstance(o, Verified) else 0


def _expected_source(main: Observation, journal: Observation, prev: Observation) -> str | None:
    """The rule: the newest verified file; a journal only when strictly newest, main over prev on a tie."""
    newest = max(_gen(main), _gen(journal), _gen(prev))
    if newest == 0:
        return None
    if _gen(journal) == newest and newest > max(_gen(main), _gen(prev)):
        return "journal"
    return "main" if _gen(main) == newest else "prev"


def test_every_combination_follows_the_rules() -> None:
    """All 216 combinations: refuse newer formats, load the newest verified generation, move no good file."""
    for main, journal, prev in itertools.product(OBS, repeat=3):
        plan = recovery.plan_load(N, main, journal, prev, "T")
        trio = (main, journal, prev)
        if any(isinstance(o, Unsupported) for o in trio):
            assert plan.error and "format version 9" in plan.error and not plan.renames
            continue
        for r in plan.renames:  # only damaged/stale files are set aside; good ones only move forward
            assert r.dst in (N, f"{N}.prev") or ".corrupt-" in r.dst or ".stale-" in r.dst
        source = _expected_source(main, journal, prev)
        if source is not None:
            assert (plan.source, plan.generation) == (source, max(_gen(o) for o in trio)), trio
            assert plan.fallback == (source == "prev" or isinstance(main, Invalid)), trio
        elif isinstance(main, Missing) and isinstance(prev, Missing):
            assert plan.fresh and plan.error is None and plan.load_from is None
        else:
            assert plan.error is not None and plan.renames == () and N in plan.error


def _after(files: dict[str, str], renames: tuple[recovery.Rename, ...]) -> dict[str, str]:
    out = dict(files)
    for r in renames:
        out[r.dst] = out.pop(r.src)
    return out


def _files(main: Observation, journal: Observation, prev: Observation) -> dict[str, str]:
    named = {N: main, f"{N}.journal": journal, f"{N}.prev": prev}
    return {name: f"{name}={o}" for name, o in named.items() if not isinstance(o, Missing)}


def test_recovery_and_the_next_save_never_destroy_a_newer_generation() -> None:
    """Whatever the three files hold, recovery then one save keeps the loaded (newest) generation as .prev.

    Before the newest-verified rule, an older verified journal beat a newer .prev when NAME was damaged;
    the next save then rotated the older generation over .prev and the newer one was gone for good.
    """
    for main, journal, prev in itertools.product(OBS, repeat=3):
        plan = recovery.plan_load(N, main, journal, prev, "T")
        if plan.error is not None or plan.fresh:
            continue
        files = _files(main, journal, prev)
        loaded = files[{"main": N, "journal": f"{N}.journal", "prev": f"{N}.prev"}[plan.source or "main"]]
        disk = _after(files, plan.renames)
        assert f"{N}.journal" not in disk  # the next save creates it with O_EXCL
        assert disk[plan.load_from or ""] == loaded
        replaced = set(files.values()) - set(disk.values())  # only what finishing the save replaces:
        assert replaced <= {f"{N}.prev={prev}"} and (not replaced or isinstance(prev, Verified)), replaced
        assert all(_gen(prev) < plan.generation for _ in replaced)  # an older verified .prev, never damage
        for op in protocol.save_ops(N, b"new", main_exists=plan.source in ("main", "journal")):
            if isinstance(op, protocol.WriteFile):
                disk[op.name] = "new"
            elif isinstance(op, protocol.RenameFile):
                disk[op.dst] = disk.pop(op.src)
        assert (disk[N], disk[f"{N}.prev"]) == ("new", loaded), (main, journal, prev)


def test_a_crash_during_recovery_leads_to_the_same_plan() -> None:
    """After any prefix of a plan's renames (a crash mid-recovery), planning again loads the same generation."""
    for trio in itertools.product(OBS, repeat=3):
        plan = recovery.plan_load(N, trio[0], trio[1], trio[2], "T")
        if plan.error is not None:
            continue
        obs = dict(zip((N, f"{N}.journal", f"{N}.prev"), trio, strict=True))
        for k in range(len(plan.renames)):
            now = dict(obs)
            for r in plan.renames[:k]:
                now[r.dst] = now.pop(r.src)
            main, journal, prev = (now.get(n, Missing()) for n in (N, f"{N}.journal", f"{N}.prev"))
            again = recovery.plan_load(N, main, journal, prev, "T2")
            assert (again.generation, again.fresh, again.error) == (plan.generation, plan.fresh, None), (trio, k)
            damaged_set_aside = isinstance(trio[0], Invalid) and not isinstance(now.get(N), Invalid)
            assert again.fallback == plan.fallback or damaged_set_aside, (trio, k)  # .corrupt-T still tells


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


def test_newer_prev_beats_an_older_journal_when_main_is_damaged() -> None:
    """Damaged NAME, journal generation 1, .prev generation 2: .prev loads (loudly), the journal is set aside."""
    plan = recovery.plan_load(N, Invalid("bad"), Verified(1), Verified(2), "T")
    assert (plan.source, plan.generation, plan.fallback) == ("prev", 2, True)
    assert plan.renames == (
        recovery.Rename(f"{N}.journal", f"{N}.journal.stale-T"),
        recovery.Rename(N, f"{N}.corrupt-T"),
    )


def test_newer_prev_beats_an_older_main() -> None:
    """A verified NAME older than .prev (a restored backup of one file) is set aside; .prev loads, loudly."""
    plan = recovery.plan_load(N, Verified(2), Missing(), Verified(3), "T")
    assert (plan.source, plan.generation, plan.fallback) == ("prev", 3, True)
    assert plan.renames == (recovery.Rename(N, f"{N}.stale-T"),)


def test_promotion_keeps_a_newer_prev_rather_than_an_older_main() -> None:
    """Journal 4 over main 2 and prev 3: main is set aside and .prev keeps generation 3, the one before 4."""
    plan = recovery.plan_load(N, Verified(2), Verified(4), Verified(3), "T")
    assert plan.renames == (recovery.Rename(N, f"{N}.stale-T"), recovery.Rename(f"{N}.journal", N))
    assert (plan.source, plan.generation, plan.fallback) == ("journal", 4, False)
