"""The one ownership table (s1mpled.ownership) and the one road a fill takes to its owner: the environment's
publish, the bus addressing it by the table, the owning worker's queue and no other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s1mpled.bus import EventBus
from s1mpled.environments.base import ExecutionEnvironment
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.errors import LocalStateError
from s1mpled.events import ConnectionRestored, Event, OrderUpdated, TradeExecuted
from s1mpled.model import ExchangeOrder, ExchangeOrderStatus, Fill, OrderRequest, OrderType, Side
from s1mpled.orders import order_prefix
from s1mpled.ownership import Claim, OwnershipTable
from s1mpled.state.store import StateDirectory
from s1mpled.strategies.base import Strategy
from s1mpled.strategy_worker import StrategyWorker
from s1mpled.workers import MonitorWorker, OwnerRouting, Subscription, wire
from tests.test_in_flight import paper_config

HEX = "0123456789abcdef"
hexes = st.text(HEX, min_size=8, max_size=8)
epochs = st.sampled_from([""]) | st.text(HEX, min_size=6, max_size=6)
SYMBOL = "BTC/USDT"


class Idle(Strategy):
    """A strategy that never decides: only its worker's prefixes are under test."""

    kind = "idle"

    def state_snapshot(self) -> dict[str, Any]:
        return {}

    def restore_state(self, state: Any) -> None:
        pass


def _worker(d: StateDirectory, name: str, digest: str, books: Sequence[str]) -> StrategyWorker:
    """A real StrategyWorker over books whose epochs are ``books`` (oldest first, current last)."""
    w = StrategyWorker(
        strategy=Idle(name, SYMBOL, {}), capital=Decimal(1000), env=cast("ExecutionEnvironment", None),
        state_file=d.file(f"{name}.state.json"), prefix=f"s1{digest}-", publish=_nowhere, clock_ms=lambda: 0,
        new_epoch=lambda: books[0],
    )  # fmt: skip
    for epoch in books[1:]:
        w.ledger.begin_epoch(epoch)
    return w


async def _nowhere(event: Event) -> None:
    return None


@st.composite
def books_of_workers(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    """1-4 strategies, each (digest, epochs): every (digest, epoch) pair distinct, so no two strategies share a
    prefix (a digest may repeat with other epochs, and an epoch-less "" first epoch is old books)."""
    count = draw(st.integers(1, 4))
    taken: set[tuple[str, str]] = set()
    out = []
    for _ in range(count):
        digest = draw(hexes | st.sampled_from([d for d, _ in taken] or ["00000000"]))
        books = draw(st.lists(epochs, min_size=1, max_size=3, unique=True).filter(lambda es: "" not in es[1:]))
        if any((digest, e) in taken for e in books):
            continue
        taken |= {(digest, e) for e in books}
        out.append((digest, books))
    return out or [("00000000", [""])]


@st.composite
def client_ids(draw: st.DrawFn, prefixes: Sequence[str]) -> str:
    """Ids of every kind: ours (a prefix and a sequence), lookalikes (another digest or epoch, a prefix cut
    short or one character off), ids made by people and by other bots, and arbitrary text."""
    seq = str(draw(st.integers(0, 10**12)))
    known = draw(st.sampled_from(prefixes))
    kind = draw(st.sampled_from(["ours", "lookalike", "cut", "off-by-one", "text"]))
    if kind == "ours":
        return known + seq
    if kind == "lookalike":
        return f"s1{draw(hexes)}{draw(epochs)}-{seq}"
    if kind == "cut":
        return known[: draw(st.integers(0, len(known) - 1))] + draw(st.sampled_from(["", "-", seq]))
    if kind == "off-by-one":
        at = draw(st.integers(0, len(known) - 1))
        return known[:at] + draw(st.sampled_from("0a-xS")) + known[at + 1 :] + seq
    return draw(st.text(max_size=40))


def test_routing_by_the_table_is_what_every_workers_owns_decides(tmp_path: Path) -> None:
    """For arbitrary ids and prefix sets (current and earlier epochs, epoch-less old books, digests shared
    across epochs), the table routes an id to the one worker whose owns() is true, and to none when none is;
    its 'current' answer is whether the id carries that worker's current epoch."""
    with StateDirectory.open(tmp_path / "state") as d:

        @settings(max_examples=300, deadline=None)
        @given(data=st.data(), shape=books_of_workers())
        def check(data: st.DataObject, shape: list[tuple[str, list[str]]]) -> None:
            workers = [_worker(d, f"s{i}", digest, books) for i, (digest, books) in enumerate(shape)]
            routing = OwnerRouting(workers)
            table = OwnershipTable((w.name, w.prefix, w.old_prefixes) for w in workers)
            prefixes = [p for w in workers for p in (w.prefix, *w.old_prefixes)]
            for _ in range(20):
                cid = data.draw(client_ids(prefixes), "client order id")
                owners = [w for w in workers if w.owns(cid)]
                assert len(owners) <= 1, f"{cid} is owned twice"
                assert routing.owner(cid) == (owners[0].name if owners else None), cid
                claim = table.claim(cid)
                assert claim == (Claim(owners[0].name, cid.startswith(owners[0].prefix)) if owners else None)

        check()


@given(a=hexes, b=hexes, ea=epochs, eb=epochs)
def test_two_distinct_valid_prefixes_are_never_prefixes_of_one_another(a: str, b: str, ea: str, eb: str) -> None:
    """The id format (s1mpled.orders) makes nesting impossible: a "-" at one of two fixed lengths, where the longer
    prefix has a hex digit. So at most one strategy can own a valid id, whichever way the table probes."""
    p, q = f"s1{a}{ea}-", f"s1{b}{eb}-"
    if p != q:
        assert not p.startswith(q) and not q.startswith(p)


@given(
    claims=st.lists(st.tuples(st.text("ab-", min_size=1, max_size=4), st.booleans()), max_size=6), cid=st.text("ab-")
)
def test_for_arbitrary_strings_the_shortest_matching_prefix_wins(claims: list[tuple[str, bool]], cid: str) -> None:
    """Outside the id format (prefixes nested or equal), an id is foreign exactly when no prefix matches it, and
    otherwise belongs to the claimant of its shortest matching prefix -- the later one of two equal prefixes."""
    table = OwnershipTable(
        (f"s{i}", p, ()) if current else (f"s{i}", "\x00", (p,)) for i, (p, current) in enumerate(claims)
    )
    matching = [(len(p), -i, i, current) for i, (p, current) in enumerate(claims) if cid.startswith(p)]
    if not matching:
        assert table.claim(cid) is None
        return
    _, _, i, current = min(matching)
    assert table.claim(cid) == Claim(f"s{i}", current)


def test_an_old_epochs_id_is_ours_but_not_current_and_another_operations_is_foreign() -> None:
    """The three answers: current epoch, earlier epoch (adoptable), foreign (another operation's same name)."""
    now, before = order_prefix("op", "grid", "00aa00"), order_prefix("op", "grid")
    table = OwnershipTable([("grid", now, (before,))])
    assert table.claim(now + "7") == Claim("grid", current=True)
    assert table.claim(before + "7") == Claim("grid", current=False)
    assert table.claim(order_prefix("other-op", "grid", "00aa00") + "7") is None
    assert table.owner("web_123") is None


# -- the road: publish -> the bus, addressed by the table -> the owner's queue --


def _fill(cid: str, trade: str) -> Fill:
    return Fill(trade, cid, "x1", SYMBOL, Side.BUY, Decimal(1), Decimal(1), Decimal(0), "USDT", 1)


def _update(cid: str) -> ExchangeOrder:
    return ExchangeOrder(cid, "x1", SYMBOL, Side.BUY, OrderType.LIMIT, Decimal(1), Decimal(1), Decimal(0),
                         ExchangeOrderStatus.CANCELED, 1)  # fmt: skip


class Owned(MonitorWorker):
    """A stand-in strategy worker: owned fills and order updates, recorded (``stuck``: its handler waits)."""

    def __init__(self, name: str, prefix: str, old: tuple[str, ...] = ()) -> None:
        self.name, self.prefix, self.old_prefixes = name, prefix, old
        self.got: list[str] = []
        self.stuck = asyncio.Event()
        self.stuck.set()

    async def _on(self, event: TradeExecuted | OrderUpdated) -> None:
        await self.stuck.wait()
        self.got.append(event.fill.trade_id if isinstance(event, TradeExecuted) else f"order:{event.order.status}")

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(TradeExecuted, self._on, owned=True), Subscription(OrderUpdated, self._on, owned=True)]


class Observer(MonitorWorker):
    """Sees every fill (an unaddressed subscriber: the control socket's feed, a metrics tap)."""

    name = "observer"

    def __init__(self) -> None:
        self.fills: list[str] = []

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(TradeExecuted, lambda e: self.fills.append(e.fill.trade_id))]


A, B = order_prefix("op", "a", "0000a1"), order_prefix("op", "b", "0000b1")
A_OLD = order_prefix("op", "a")


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (bus counters, handler records), with a deadline."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - bus statistics and plain lists, no event to await
            await asyncio.sleep(0.001)


def test_each_fill_reaches_only_its_owner_and_a_foreign_one_no_worker(caplog: pytest.LogCaptureFixture) -> None:
    """Fills and order updates go to the owner's queue alone (an old epoch's too); a fill of an order no strategy
    owns reaches no worker, is logged once per order, and observers still see every fill."""
    a, b, seen = Owned("a", A, (A_OLD,)), Owned("b", B), Observer()

    async def main() -> None:
        bus = EventBus()
        wire(bus, [seen, a, b])
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(bus.run())
            for event in (
                TradeExecuted(_fill(A + "1", "t1")), TradeExecuted(_fill(B + "1", "t2")),
                TradeExecuted(_fill(A_OLD + "9", "t3")), TradeExecuted(_fill("web_1", "t4")),
                TradeExecuted(_fill("web_1", "t5")), OrderUpdated(_update(B + "1")), OrderUpdated(_update("web_1")),
            ):  # fmt: skip
                await bus.publish(event)
            await bus.drain()
            task.cancel()

    with caplog.at_level(logging.INFO, "s1mpled.workers"):
        asyncio.run(main())
    assert a.got == ["t1", "t3"]
    assert b.got == ["t2", "order:canceled"]
    assert seen.fills == ["t1", "t2", "t3", "t4", "t5"]
    said = [r.getMessage() for r in caplog.records if getattr(r, "EVENT", "") == "EXTERNAL_FILL"]
    assert said == ["fill t4 of order web_1: no strategy owns it (external), not booked"]


def test_a_stuck_owner_makes_publish_wait_and_loses_nothing_while_others_queue_nothing_of_it() -> None:
    """Backpressure on the addressed road: with the owner stuck and its queue full, publish waits (never a
    drop); the other worker's queue never holds the owner's fills; once it moves, every fill comes, in order."""
    a, b = Owned("a", A), Owned("b", B)
    a.stuck.clear()

    async def main() -> None:
        bus = EventBus(queue_size=2)
        wire(bus, [a, b])
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(bus.run())
            await bus.publish(TradeExecuted(_fill(A + "1", "t0")))  # taken: its handler is stuck on it
            await _until(lambda: _depth(bus, "a") == 0)  # the owner took its first fill
            for i in (1, 2):
                await bus.publish(TradeExecuted(_fill(A + "1", f"t{i}")))  # the queue is full now
            blocked = tg.create_task(bus.publish(TradeExecuted(_fill(A + "1", "t3"))))
            await asyncio.sleep(0.05)
            assert not blocked.done(), "publish did not wait for the full queue"
            assert _depth(bus, "b") == 0
            a.stuck.set()
            await blocked
            await bus.drain()
            task.cancel()

    asyncio.run(main())
    assert a.got == ["t0", "t1", "t2", "t3"] and b.got == []


def _depth(bus: EventBus, worker: str) -> int:
    return next(s.depth for s in bus.statistics().subscribers if s.name == f"{worker}.{TradeExecuted.TOPIC}")


def test_an_address_needs_an_addressed_class() -> None:
    """Subscribing at an address to a class nobody addresses, or addressing a class twice, is a wiring bug."""
    bus = EventBus()
    with pytest.raises(LocalStateError, match="not addressed"):
        bus.subscribe(TradeExecuted, _nowhere, address="a")
    bus.address(TradeExecuted, lambda e: None)
    with pytest.raises(LocalStateError, match="once"):
        bus.address(TradeExecuted, lambda e: None)


def test_the_environment_has_one_road_out(tmp_path: Path) -> None:
    """Paper mode's fills and order updates leave through the publish the environment was built with, as a live
    one's link events do; an environment built without one refuses to run a stream instead of dropping it."""
    road: list[Event] = []

    async def publish(event: Event) -> None:
        road.append(event)

    async def main() -> None:
        with StateDirectory.open(tmp_path / "state") as d:
            env = PaperEnvironment(paper_config(), d.file("paper.state.json"), lambda: 1_000, publish=publish)
            await env.start()
            await env.create_order(OrderRequest(A + "1", SYMBOL, Side.BUY, OrderType.MARKET, Decimal("0.01"), None))
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(env.run_user_stream())
                await _until(lambda: len(road) >= 2)  # the fill and its order update
                task.cancel()
            silent = PaperEnvironment(paper_config(), d.file("silent.state.json"), lambda: 1_000)
            with pytest.raises(LocalStateError, match="no road out"):
                await silent._publish(ConnectionRestored("user"))

    asyncio.run(main())
    assert isinstance(road[0], TradeExecuted) and road[0].fill.client_order_id == A + "1"
    assert isinstance(road[1], OrderUpdated) and road[1].order.client_order_id == A + "1"
