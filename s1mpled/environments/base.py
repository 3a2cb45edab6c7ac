"""ExecutionEnvironment: the spec's IAPIConnector surface, the same for paper and live trading.

The Operation, the strategy runners and the ReconciliationMonitor talk only to this interface, so
paper mode exercises exactly the code paths live mode uses: fills arrive through
``start_user_data_stream()`` (push) and reconciliation pulls through the query methods (pull).

One road out. Every fact an environment produces -- fills and order updates (:meth:`run_user_stream`),
prices (:meth:`run_market_data`), a stream lost or restored -- leaves through the one ``publish`` it was
built with (the bus's: fills and order updates are addressed there to the strategy that owns the order,
s1mpled.ownership). ``publish`` waits while a subscriber's queue is full, and so does the stream that
produced the fact: backpressure reaches the exchange client, nothing is dropped. The operation owns the
two ``run_*`` tasks (in its TaskGroup); any task an environment starts lives in a TaskGroup inside them.

Contract every implementation keeps:
- A query that fails raises (ExchangeUnavailable / ExchangeRejected); it never returns an empty
  result in place of an unknown one -- reconciliation would read that as "flat".
- ``create_order`` with a client order id the exchange has seen before is rejected by the exchange,
  so a retried submit can never become a second order.
- ``fetch_order`` returns None only when the exchange says the order does not exist.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Literal, NoReturn

from s1mpled.errors import LocalStateError
from s1mpled.events import Event, MarketData, OrderUpdated, Publish, TradeExecuted
from s1mpled.model import Balance, ExchangeOrder, Fill, MarketTick, OrderRequest, UnparsedOrder
from s1mpled.strategies.base import MarketRules

__all__ = ["ExecutionEnvironment", "MarketRules", "Stream", "UserStreamEvent"]


UserStreamEvent = Fill | ExchangeOrder
Stream = Literal["user", "market"]


class ExecutionEnvironment(ABC):
    """Where orders go and where the truth about them comes from."""

    name: str = "environment"
    #: How long after an order request was sent (or timed out) the exchange may still act on it; a
    #: probe that finds no such order is conclusive only after this (Binance: recvWindow + margin).
    in_flight_ms: int = 15_000

    def __init__(self, publish: Publish | None = None) -> None:
        """``publish``: the one road out (None: an environment only queried, never run -- tests, tools)."""
        self._publish: Publish = publish or _no_road

    async def run_user_stream(self) -> NoReturn:
        """The private stream's fills and order updates onto the road, in the order the stream delivers them,
        until cancelled (a stream that ends is a bug: LocalStateError, crash and recover)."""
        async for item in self.start_user_data_stream():
            await self._publish(TradeExecuted(item) if isinstance(item, Fill) else OrderUpdated(item))
        raise LocalStateError("the user data stream ended")

    async def run_market_data(self, symbols: tuple[str, ...]) -> NoReturn:
        """The DataSource's prices for ``symbols`` onto the road until cancelled."""
        async for tick in self.market_data(symbols):
            await self._publish(MarketData(tick))
        raise LocalStateError("the market data stream ended")  # it never should: crash and recover

    @abstractmethod
    async def start(self) -> None:
        """Connect (or restore the simulated exchange); after this the query methods work."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and persist what must be persisted."""

    @abstractmethod
    def market_rules(self, symbol: str) -> MarketRules:
        """Price and amount steps of a symbol (loaded once at start)."""

    @abstractmethod
    def market_data(self, symbols: tuple[str, ...]) -> AsyncIterator[MarketTick]:
        """The DataSource: public price updates for ``symbols`` until cancelled."""

    @abstractmethod
    def start_user_data_stream(self) -> AsyncIterator[UserStreamEvent]:
        """The private stream (push): our fills and order status changes until cancelled."""

    async def stream_confirmed(self, stream: Stream) -> None:
        """Return once ``stream`` (being iterated) has had its subscription confirmed by the exchange.

        Until then an event the exchange sends for it goes nowhere, so nothing may trade (and the
        startup reconciliation must come after it, to catch up what was sent before). The default
        suits in-process streams, which cannot miss anything.
        """
        return

    def stream_problem(self, stream: Stream) -> str:
        """What a stream that has not confirmed yet is waiting for (for the log)."""
        return "nothing"

    def streams_healthy_for(self) -> float | None:
        """How long every stream has been healthy (connected, no failure since), in seconds: the shortest
        of them; None while any one is not. The default suits in-process streams, which cannot fail."""
        return math.inf

    @abstractmethod
    async def get_open_orders(self) -> list[ExchangeOrder | UnparsedOrder]:
        """All open orders of the account, every symbol, in one request; one that cannot be read is
        returned as an UnparsedOrder (it must not make the whole listing fail)."""

    @abstractmethod
    async def get_balances(self) -> dict[str, Balance]:
        """The account's balances (spot holdings are balances)."""

    @abstractmethod
    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        """Place an order; ExchangeUnavailable means the outcome is unknown (the order may exist)."""

    @abstractmethod
    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        """Cancel an open order by its client order id."""

    @abstractmethod
    async def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        """One order by client order id; None only if the exchange says it never existed."""

    @abstractmethod
    async def fetch_trades(self, symbol: str, after_trade_id: str | None, since_ms: int = 0) -> list[Fill]:
        """Every trade of the account on ``symbol`` after the trade ``after_trade_id`` -- or, without one,
        since ``since_ms`` -- oldest first and complete (all pages), ids compared as integers."""


async def _no_road(event: Event) -> None:
    raise LocalStateError(f"{event.TOPIC}: this environment was built without a publish (no road out)")
