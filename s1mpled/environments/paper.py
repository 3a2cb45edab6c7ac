"""PaperEnvironment: the embedded default -- an in-process simulated exchange behind the same
ExecutionEnvironment interface live trading uses.

The simulator plays the exchange, the single source of truth, so it behaves like one: its state
(account, orders, trades, feed position) is durable *before* it answers -- an order it accepted
exists after any crash, a fill it executed is never forgotten. It lives in its own state file
(``paper-exchange.state.json``), separate from the ledgers, so a crash between "the exchange
filled" and "the ledger recorded it" is a real gap that reconciliation must close -- exactly as in
live trading. Fills reach the strategies only through ``start_user_data_stream()`` -- published by
``run_user_stream()`` onto the one road out (``publish``) -- the path the live private stream uses.

Paper mode never imports ccxt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from s1mpled import record
from s1mpled.clock import ClockMs, wall_ms
from s1mpled.config import PaperConfig
from s1mpled.environments.base import ExecutionEnvironment, UserStreamEvent
from s1mpled.environments.feeds import ReplayFeed, SyntheticFeed, read_replay_csv
from s1mpled.environments.paper_exchange import ExchangeRecord, MarketSpec, SimulatedExchange
from s1mpled.errors import ConfigError, LocalStateError, StateError
from s1mpled.events import Publish
from s1mpled.model import Balance, ExchangeOrder, Fill, MarketTick, OrderRequest, UnparsedOrder
from s1mpled.state.store import StateFile
from s1mpled.strategies.base import MarketRules

__all__ = ["STATE_NAME", "PaperEnvironment", "PaperState"]

log = logging.getLogger("s1mpled.environments.paper")
STATE_NAME = "paper-exchange.state.json"
PRICE_PERSIST_S = 10.0  # a price-only tick is persisted at most this often


@dataclass(frozen=True, slots=True)
class PaperState:
    """What ``paper-exchange.state.json`` holds: the exchange, and how far the feeds have gone."""

    exchange: ExchangeRecord
    step: int  # of the synthetic feeds
    replay_index: int  # the next row of the replay


class PaperEnvironment(ExecutionEnvironment):
    """The simulated exchange, persisted through the state store and driven by a price feed."""

    name = "paper"
    in_flight_ms = 0  # in-process: a request either happened or it did not, nothing is in transit

    def __init__(
        self, config: PaperConfig, state_file: StateFile, clock_ms: ClockMs = wall_ms, *, publish: Publish | None = None
    ) -> None:
        super().__init__(publish)
        self._config, self._file, self._clock_ms = config, state_file, clock_ms
        state_file.use_log()  # a move of the exchange appends what changed, not its whole order/trade history
        self._exchange: SimulatedExchange | None = None
        self._step = 0
        self._replay_index = 0
        self._replay: ReplayFeed | None = None
        self._feeds = {
            s: SyntheticFeed(config.seed, s, m.start_price, m.volatility, m.price_step)
            for s, m in config.markets.items()
        }
        self._persisted_at = float("-inf")
        # No maxsize, and bounded all the same: every entry is news about one order this exchange holds
        # (its acknowledgement, a fill, its end), so the queue never holds more than a few entries per
        # order the strategies placed, and strategies that stop reading stop placing. Fills and order
        # updates are never dropped (the live stream's policy too); a put that could wait would have to
        # wait inside the matching engine.
        self._stream: asyncio.Queue[tuple[float, UserStreamEvent]] = asyncio.Queue()

    # -- lifecycle --

    async def start(self) -> None:
        """Restore the exchange from its state file, or open a new one from the config."""
        if self._config.replay_csv is not None:
            self._replay = ReplayFeed(read_replay_csv(self._config.replay_csv.read_text()))
        result = self._file.load()
        if result.state is None:
            self._exchange = self._new_exchange()
            for symbol, market in self._config.markets.items():
                self._exchange.on_price(symbol, market.start_price, self._clock_ms())
            await self._persist()
            log.info("paper exchange opened with balances %s", self._config.balances, extra={"EVENT": "PAPER_OPEN"})
            return
        self._exchange, self._step, self._replay_index = self._restore(result.state)
        missing = set(self._config.markets) - set(self._exchange.markets)
        if missing:
            raise ConfigError(
                str(self._file.path),
                "paper.markets",
                f"the persisted paper exchange has no market {sorted(missing)}; "
                f"move {self._file.path} away to start a new paper account",
            )
        log.info("paper exchange restored (generation %d, step %d)", result.generation, self._step)

    def _restore(self, state: Any) -> tuple[SimulatedExchange, int, int]:
        """The exchange and feed positions of a loaded state; StateError naming the file and the key if unusable."""
        where = str(self._file.path)
        try:
            saved = record.decode(PaperState, state)
            exchange = SimulatedExchange.from_record(saved.exchange)
        except LocalStateError as exc:
            raise StateError(where, f"the saved state cannot be used: {exc}") from None
        for key, value in (("step", saved.step), ("replay_index", saved.replay_index)):
            if value < 0:
                raise StateError(where, f"the saved state cannot be used: {key}: expected an integer >= 0, got {value}")
        return exchange, saved.step, saved.replay_index

    async def close(self) -> None:
        if self._exchange is not None:
            await self._persist()

    def _new_exchange(self) -> SimulatedExchange:
        specs = {s: MarketSpec(s, m.price_step, m.amount_step, m.liquidity) for s, m in self._config.markets.items()}
        return SimulatedExchange(specs, self._config.balances, self._config.fee_rate)

    @property
    def exchange(self) -> SimulatedExchange:
        """The simulator itself (tests and `status` compare the ledgers with it)."""
        if self._exchange is None:
            raise LocalStateError("paper environment used before start()")
        return self._exchange

    async def _persist(self) -> None:
        state = PaperState(self.exchange.to_record(), self._step, self._replay_index)
        await self._file.save(record.encode(state))

    async def _announce(self, fills: list[Fill], *, account_changed: bool = True) -> None:
        """Make the exchange's new state durable, then push its fills and order updates.

        A tick that only moved prices changes no account, so it is persisted at most every
        ``PRICE_PERSIST_S`` (a restart then replays a few seconds of the price path, nothing else).
        """
        now = asyncio.get_running_loop().time()
        if account_changed or fills or now - self._persisted_at >= PRICE_PERSIST_S:
            await self._persist()
            self._persisted_at = now
        for fill in fills:
            self._push(fill)
        for cid in dict.fromkeys(f.client_order_id for f in fills):
            order = self.exchange.order(cid)
            if order is not None:
                self._push(order)

    # -- the DataSource --

    def market_rules(self, symbol: str) -> MarketRules:
        spec = self.exchange.markets[symbol]
        return MarketRules(spec.price_step, spec.amount_step, spec.amount_step)

    def _next_prices(self) -> list[tuple[str, Decimal, int]]:
        if self._replay is not None:
            batch, self._replay_index = self._replay.next_batch(self._replay_index)
            return [(r.symbol, r.price, r.timestamp_ms) for r in batch if r.symbol in self._config.markets]
        self._step += 1
        now = self._clock_ms()
        return [(s, f.price_at(self._step, self.exchange.last_price(s)), now) for s, f in self._feeds.items()]

    async def market_data(self, symbols: tuple[str, ...]) -> AsyncIterator[MarketTick]:
        """One price per market per tick; matching runs first, so fills precede the tick that caused them."""
        while True:
            await asyncio.sleep(self._config.tick_interval_s)
            prices = self._next_prices()
            fills = [f for s, p, ts in prices for f in self.exchange.on_price(s, p, ts)]
            await self._announce(fills, account_changed=False)
            for symbol, price, ts in prices:
                if symbol in symbols:
                    yield MarketTick(symbol, price, ts)

    def _push(self, item: UserStreamEvent) -> None:
        self._stream.put_nowait((asyncio.get_running_loop().time() + self._config.stream_latency_s, item))

    async def start_user_data_stream(self) -> AsyncIterator[UserStreamEvent]:
        """Fills and order updates, each delivered ``stream_latency`` after the exchange produced it."""
        loop = asyncio.get_running_loop()
        while True:
            due, item = await self._stream.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            yield item

    # -- the REST-like surface --

    async def get_open_orders(self) -> list[ExchangeOrder | UnparsedOrder]:
        return list(self.exchange.open_orders())

    async def get_balances(self) -> dict[str, Balance]:
        return self.exchange.balances()

    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        order, fills = self.exchange.place_order(request, self._clock_ms())
        await self._announce(fills)
        if not fills:
            self._push(order)
        return self.exchange.order(order.client_order_id) or order

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        order = self.exchange.cancel_order(symbol, client_order_id, self._clock_ms())
        await self._persist()
        self._push(order)
        return order

    async def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        return self.exchange.order(client_order_id)

    async def fetch_trades(self, symbol: str, after_trade_id: str | None, since_ms: int = 0) -> list[Fill]:
        trades = self.exchange.trades(symbol, after_trade_id)
        return trades if after_trade_id is not None else [t for t in trades if t.timestamp_ms >= since_ms]
