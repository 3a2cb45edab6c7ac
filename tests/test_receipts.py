"""Reconciliation receipts: counts, corrections and a view hash independent of listing order; persisted
across restarts, and a damaged receipts file never stops trading."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s1mpled.assembly import RECEIPTS_STATE_NAME
from s1mpled.model import Balance, ExchangeOrder, ExchangeOrderStatus, Fill, OrderType, Side
from s1mpled.receipts import Compared, Receipt, receipt_of, venue_hash
from s1mpled.reconciliation import Report, SetHoldings, VenueSnapshot
from s1mpled.state import codec
from s1mpled.state.inspect import inspect
from tests.daemon_harness import Daemon, write_config


def _order(i: int) -> ExchangeOrder:
    return ExchangeOrder(
        f"s1abc-{i}", str(100 + i), "BTC/USDT", Side.BUY, OrderType.LIMIT, Decimal("0.01"), Decimal(50000 - i),
        Decimal(0), ExchangeOrderStatus.OPEN, 1_000 + i,
    )  # fmt: skip


def _trade(i: int) -> Fill:
    return Fill(
        str(i), f"s1abc-{i}", str(100 + i), "BTC/USDT", Side.BUY, Decimal("50000"), Decimal("0.01"),
        Decimal("0.00001"), "BTC", 2_000 + i,
    )  # fmt: skip


ORDERS = [_order(i) for i in range(5)]
TRADES = [_trade(i) for i in range(5)]
BALANCES = {"BTC": Balance("BTC", Decimal("0.05"), Decimal(0)), "USDT": Balance("USDT", Decimal(100), Decimal(5))}


@given(st.permutations(ORDERS), st.permutations(TRADES), st.permutations(list(BALANCES)))
def test_the_same_account_listed_in_any_order_has_the_same_hash(orders: list, trades: list, assets: list) -> None:  # type: ignore[type-arg]
    canonical = venue_hash(VenueSnapshot(tuple(ORDERS), {}, tuple(TRADES), BALANCES))
    shuffled = VenueSnapshot(tuple(orders), {}, tuple(trades), {a: BALANCES[a] for a in assets})
    assert venue_hash(shuffled) == canonical


def test_any_change_in_the_view_changes_the_hash() -> None:
    base = VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES), BALANCES)
    moved = {**BALANCES, "USDT": Balance("USDT", Decimal("100.00000001"), Decimal(5))}
    variants = [
        VenueSnapshot(tuple(ORDERS[:-1]), {"s1abc-9": None}, tuple(TRADES), BALANCES),
        VenueSnapshot(tuple(ORDERS), {}, tuple(TRADES), BALANCES),
        VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES[1:]), BALANCES),
        VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES), moved),
    ]
    hashes = {venue_hash(v) for v in [base, *variants]}
    assert len(hashes) == 5


def test_a_receipt_counts_what_was_compared_and_lists_the_corrections() -> None:
    venue = VenueSnapshot(tuple(ORDERS), {"s1abc-9": None}, tuple(TRADES), BALANCES, consistent=False)
    cut = SetHoldings("dca-btc", "BTC", Decimal("0.1"), Decimal("0.05"))
    report = Report((cut,), unsettled=("s1abc-9",), balances_checked=False)
    r = receipt_of("schedule", 1_800_000_000_000, 2, venue, report).to_doc()
    assert r["compared"] == {
        "strategies": 2,
        "open_orders": 5,
        "probed": 1,
        "trades": 5,
        "balances": 2,
        "unreadable": 0,
    }
    assert r["consistent"] is False and r["unsettled"] == 1 and r["trigger"] == "schedule"
    assert r["corrections"] == [f"dca-btc: {cut.describe()}"]
    assert r["venue_sha256"] == venue_hash(venue) and len(r["venue_sha256"]) == 64


def test_the_running_daemon_keeps_a_receipt_per_pass_newest_first(tmp_path: Path) -> None:
    """status --json: the startup pass's receipt, then one per later pass in front of it."""
    daemon = Daemon(write_config(tmp_path, reconcile="300ms"), tmp_path / "daemon.log")
    try:
        first = daemon.wait_trading()["receipts"]
        assert first[-1]["trigger"].startswith("startup") and first[-1]["compared"]["strategies"] == 2
        later = daemon.wait_for(lambda d: len(d["receipts"]) > len(first))["receipts"]
        assert later[-len(first) :] == first  # older receipts unchanged, new ones in front
        assert later[0]["at_ms"] >= first[0]["at_ms"]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


_COUNT = st.integers(min_value=0, max_value=10**9)
RECEIPTS = st.builds(
    Receipt,
    trigger=st.sampled_from(["startup", "schedule", "reconnect:market", "control", "follow-up"]),
    at_ms=st.integers(min_value=0, max_value=2**53),
    compared=st.builds(
        Compared,
        strategies=_COUNT, open_orders=_COUNT, probed=_COUNT, trades=_COUNT, balances=_COUNT, unreadable=_COUNT,
    ),
    consistent=st.booleans(),
    corrections=st.lists(st.text(max_size=40), max_size=3).map(tuple),
    deferred_cuts=_COUNT, external_orders=_COUNT, unsettled=_COUNT,
    venue_sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
)  # fmt: skip


@given(RECEIPTS)
def test_a_receipt_reads_back_exactly_from_its_document(receipt: Receipt) -> None:
    """What is persisted (``to_doc``, the status --json shape) restores the same receipt."""
    assert Receipt.from_doc(receipt.to_doc()) == receipt


@pytest.mark.parametrize(
    ("key", "value"),
    [("at_ms", -1), ("at_ms", True), ("trigger", 3), ("consistent", "yes"), ("corrections", [1]), ("compared", [])],
)
def test_a_receipt_document_of_the_wrong_shape_is_refused_naming_the_key(key: str, value: Any) -> None:
    """A persisted receipt that is not exactly the shape ``to_doc`` writes is a ValueError naming the key."""
    doc = receipt_of("schedule", 1, 2, VenueSnapshot(tuple(ORDERS), {}, tuple(TRADES), BALANCES), Report(())).to_doc()
    with pytest.raises(ValueError, match=key):
        Receipt.from_doc({**doc, key: value})


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("compared", {"trades": 1}, "compared.strategies: a required key is missing"),
        ("compared", {**dataclasses.asdict(Compared(1, 2, 3, 4, 5, 6)), "probed": -1}, "compared.probed: expected a"),
        ("unsettled", -2, "unsettled: expected a count (an integer >= 0), got -2"),
        ("colour", "red", "colour: unknown key 'colour'"),
    ],
)
def test_a_nested_or_negative_count_or_an_unknown_key_is_refused_naming_its_path(
    key: str, value: Any, why: str
) -> None:
    """The counts inside ``compared`` are checked like the top-level ones, and the message names the whole path."""
    doc = receipt_of("schedule", 1, 2, VenueSnapshot(tuple(ORDERS), {}, tuple(TRADES), BALANCES), Report(())).to_doc()
    with pytest.raises(ValueError) as info:
        Receipt.from_doc({**doc, key: value})
    assert str(info.value).startswith(why), str(info.value)
    with pytest.raises(ValueError, match=r"^\(top level\): expected a mapping, got 7"):  # a ValueError, not a crash
        Receipt.from_doc(7)  # type: ignore[arg-type]


PINNED = Path(__file__).parent / "data" / "pinned_receipts.json"  # written by the hand-written to_doc (e47a46f)


def test_the_receipts_file_is_read_and_written_again_byte_for_byte() -> None:
    """A receipts state payload of the writer before the codec (what status --json shows, key for key) reads back
    and encodes to exactly the bytes it was read from."""
    state = codec.decode(codec.frame(PINNED.read_bytes(), 1)).state
    receipts = [Receipt.from_doc(d) for d in state["receipts"]]
    assert receipts[1].compared == Compared(2, 0, 0, 0, 0, 3) and receipts[1].corrections[1].endswith("line\nbreak")
    assert codec.encode_payload({"receipts": [r.to_doc() for r in receipts]}) == PINNED.read_bytes()


def _stamps(doc: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(r["trigger"], r["at_ms"], r["venue_sha256"]) for r in doc["receipts"]]


def test_receipts_survive_a_restart_of_the_paper_daemon(tmp_path: Path) -> None:
    """The receipts of one run are in status --json after a restart, behind the new run's own (newest first),
    and in their own state file."""
    config = write_config(tmp_path, reconcile="300ms")
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        before = _stamps(daemon.wait_for(lambda d: d["phase"] == "trading" and len(d["receipts"]) >= 3))
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    persisted = inspect(tmp_path / "state" / RECEIPTS_STATE_NAME).record.state["receipts"]
    assert [(r["trigger"], r["at_ms"], r["venue_sha256"]) for r in reversed(persisted)][-len(before) :] == before
    daemon = Daemon(config, tmp_path / "daemon2.log")
    try:
        after = _stamps(daemon.wait_for(lambda d: d["phase"] == "trading" and len(d["receipts"]) > len(before)))
        assert after[-len(before) :] == before  # the first run's receipts, unchanged, behind the new ones
        assert after[0][0].startswith("startup") or after[0][1] >= before[0][1]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_a_damaged_receipts_file_is_reported_set_aside_and_the_daemon_still_trades(tmp_path: Path) -> None:
    """Receipts are an audit view: a garbled file is one ERROR line, kept as ``.corrupt-*``, and the daemon
    reconciles, trades and persists new receipts as if it had none."""
    config = write_config(tmp_path, reconcile="300ms")
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_trading()
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    state = tmp_path / "state"
    (state / RECEIPTS_STATE_NAME).write_bytes(b"S1MPLED-STATE 1 7 99 deadbeef\n{not json")
    (state / f"{RECEIPTS_STATE_NAME}.prev").unlink(missing_ok=True)
    generations = {s["name"]: s["state_generation"] for s in _last_status(tmp_path)}
    daemon = Daemon(config, tmp_path / "daemon2.log")
    try:
        doc = daemon.wait_for(
            lambda d: (
                d["phase"] == "trading"
                and len(d["receipts"]) >= 2
                and any(s["state_generation"] > generations.get(s["name"], 0) + 2 for s in d["strategies"])
            )
        )
        assert all(r["at_ms"] > 0 for r in doc["receipts"]) and doc["receipts"][-1]["trigger"].startswith("startup")
        log = (tmp_path / "daemon2.log").read_text()
        assert log.count("reconciliation receipts not restored") == 1, log
        assert sorted(p.name.split(".corrupt-")[0] for p in state.glob(f"{RECEIPTS_STATE_NAME}*.corrupt-*")) == [
            RECEIPTS_STATE_NAME
        ]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert inspect(state / RECEIPTS_STATE_NAME).record.state["receipts"]  # new receipts persisted again


def _last_status(directory: Path) -> list[dict[str, Any]]:
    """The strategies' state generations as their files say (the daemon is stopped)."""
    out = []
    for path in (directory / "state").glob("strategy-*.state.json"):
        name = path.name.removeprefix("strategy-").removesuffix(".state.json")
        out.append({"name": name, "state_generation": inspect(path).record.generation})
    return out
