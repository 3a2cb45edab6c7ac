"""A paper exchange that moves between requests: the real paper environment with the test's hands in it.

Reconciliation assembles its view from separate requests, and a real exchange moves between them; this
harness lets a test (or a hypothesis state machine) put a move, a failure or a lagging history between any
two. Every query of a pass -- ``openOrders``, ``account``, ``myTrades`` (per symbol), an ``order`` probe --
is one request, numbered from 1 in ``requests`` (a test resets it to 0 before a pass):

* ``calls`` counts the requests by endpoint (``"myTrades BTC/USDT"`` per symbol), ``probes`` the probes
  by client order id;
* ``moves[n]`` run right after request ``n`` was answered (or failed);
* request number ``fail_at`` fails with a 503 instead of answering (once); an endpoint in ``failing``
  fails every time;
* the trade history lags ``lag_ms`` behind the balances (a trade shows only that long after it happened);
* ``create_fates`` / ``cancel_fates`` decide what the next order request suffers: answered (``ack``), timed
  out after (``timeout_placed`` / ``timeout_done``) or before (``timeout_unsent``) it reached the exchange, or
  delayed in the network (``delayed``: kept in ``delayed`` / ``delayed_cancels`` until the test lands it).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from s1mpled.clock import ClockMs, wall_ms
from s1mpled.config import PaperConfig
from s1mpled.environments.paper import PaperEnvironment
from s1mpled.errors import ExchangeUnavailable
from s1mpled.model import Balance, ExchangeOrder, Fill, OrderRequest, UnparsedOrder
from s1mpled.state.store import StateFile

T = TypeVar("T")


class MovingPaper(PaperEnvironment):
    """The paper environment with moves, failures, a lagging trade history and network fates (module docstring)."""

    def __init__(
        self, config: PaperConfig, state_file: StateFile, clock_ms: ClockMs = wall_ms, *, in_flight_ms: int = 0
    ) -> None:
        super().__init__(config, state_file, clock_ms)
        self.in_flight_ms = in_flight_ms
        self.requests = 0
        self.calls: Counter[str] = Counter()
        self.probes: Counter[str] = Counter()
        self.moves: dict[int, list[Callable[[], object]]] = defaultdict(list)
        self.fail_at: int | None = None
        self.failing: set[str] = set()
        self.lag_ms = 0
        self.create_fates: list[str] = []
        self.cancel_fates: list[str] = []
        self.delayed: list[OrderRequest] = []
        self.delayed_cancels: list[tuple[str, str]] = []
        self.sent: list[str] = []  # every client id a create request carried

    # -- the queries of a pass --

    async def _request(self, endpoint: str, answer: Callable[[], Awaitable[T]], symbol: str = "") -> T:
        """One numbered request: it fails if due to, else is answered; then the moves due after it run."""
        self.requests += 1
        self.calls[f"{endpoint} {symbol}" if symbol else endpoint] += 1
        try:
            due = self.requests == self.fail_at
            if due:
                self.fail_at = None
            if due or endpoint in self.failing:
                raise ExchangeUnavailable(f"GET /api/v3/{endpoint}: 503 Service Unavailable")
            return await answer()
        finally:
            for move in self.moves.pop(self.requests, []):
                move()

    async def get_open_orders(self) -> list[ExchangeOrder | UnparsedOrder]:
        return await self._request("openOrders", super().get_open_orders)

    async def get_balances(self) -> dict[str, Balance]:
        return await self._request("account", super().get_balances)

    async def fetch_trades(self, symbol: str, after_trade_id: str | None, since_ms: int = 0) -> list[Fill]:
        async def shown() -> list[Fill]:
            trades = await PaperEnvironment.fetch_trades(self, symbol, after_trade_id, since_ms)
            if not self.lag_ms:
                return trades
            return [t for t in trades if t.timestamp_ms <= self._clock_ms() - self.lag_ms]

        return await self._request("myTrades", shown, symbol)

    async def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        self.probes[client_order_id] += 1

        async def probe() -> ExchangeOrder | None:
            return await PaperEnvironment.fetch_order(self, symbol, client_order_id)

        return await self._request("order", probe)

    # -- order requests, with their network fates --

    async def create_order(self, request: OrderRequest) -> ExchangeOrder:
        fate = self.create_fates.pop(0) if self.create_fates else "ack"
        self.sent.append(request.client_order_id)
        if fate == "delayed":
            self.delayed.append(request)
            raise ExchangeUnavailable(f"POST /order {request.client_order_id}: timeout (still in the network)")
        if fate == "timeout_unsent":
            raise ExchangeUnavailable(f"POST /order {request.client_order_id}: connection reset before sending")
        placed = await super().create_order(request)
        if fate == "timeout_placed":
            raise ExchangeUnavailable(f"POST /order {request.client_order_id}: timeout (the exchange got it)")
        return placed

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder:
        fate = self.cancel_fates.pop(0) if self.cancel_fates else "ack"
        if fate == "timeout_unsent":
            raise ExchangeUnavailable(f"DELETE /order {client_order_id}: connection reset before sending")
        if fate == "delayed":
            self.delayed_cancels.append((symbol, client_order_id))
            raise ExchangeUnavailable(f"DELETE /order {client_order_id}: timeout (still in the network)")
        canceled = await super().cancel_order(symbol, client_order_id)
        if fate == "timeout_done":
            raise ExchangeUnavailable(f"DELETE /order {client_order_id}: timeout (the exchange canceled it)")
        return canceled
