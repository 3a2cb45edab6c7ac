"""The live user stream between ccxt and the bus: bounded, and it pushes back instead of dropping.

No exchange is needed: the two supervised watchers are replaced by producers as fast as a burst of
frames, so what is measured is only the merge queue of ``LiveEnvironment.start_user_data_stream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from s1mpled.config import LiveConfig
from s1mpled.credentials import Credentials
from s1mpled.environments import live
from s1mpled.environments.live import LiveEnvironment
from s1mpled.events import Event
from s1mpled.model import Fill, Side

BATCH = 50


def _fill(stream: str, i: int) -> Fill:
    return Fill(f"{stream}{i}", "s1abc-1", "1", "BTC/USDT", Side.BUY, Decimal(1), Decimal(1), Decimal(0), "USDT", i)


async def _nobody(event: Event) -> None:
    return None


def test_a_slow_consumer_makes_the_user_watchers_wait_and_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Watchers far faster than the consumer: the queue stays bounded (they wait), and every fill of each
    watcher comes out once, in its order."""
    produced = {"user-trades": 0, "user-orders": 0}

    async def supervised(
        self: LiveEnvironment, name: str, family: str, watch: Callable[[], Awaitable[list[Any]]], **kw: Any
    ) -> AsyncIterator[list[Any]]:
        while True:  # a burst: a batch whenever the pump asks for one, no waiting for the network
            batch = [_fill(name, produced[name] + i) for i in range(BATCH)]
            produced[name] += BATCH
            yield batch
            await asyncio.sleep(0)

    async def listen(self: LiveEnvironment) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(LiveEnvironment, "_supervised", supervised)
    monkeypatch.setattr(LiveEnvironment, "_listen", listen)
    monkeypatch.setattr(live, "USER_QUEUE_SIZE", 100, raising=False)
    env = LiveEnvironment(
        LiveConfig("binance", "key", {}), Credentials("k", "s"), _nobody, max_failures=3, heartbeat_s=30.0
    )
    got: list[Fill] = []
    backlog: list[int] = []
    enough = asyncio.Event()

    async def consume() -> None:
        async for item in env.start_user_data_stream():
            assert isinstance(item, Fill)
            got.append(item)
            backlog.append(sum(produced.values()) - len(got))
            if len(got) == 2000:
                enough.set()
            await asyncio.sleep(0.0005)  # the bus and the strategy take their time

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(enough.wait(), 30)
        task.cancel()  # as the operation stops its pumps
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # Bounded: what was produced and not yet consumed never exceeds the queue plus a batch per watcher.
    assert max(backlog) <= 100 + 2 * BATCH, max(backlog)
    for name in produced:
        mine = [f.timestamp_ms for f in got if f.trade_id.startswith(name)]
        assert mine == list(range(len(mine)))  # nothing dropped, nothing twice, in order
