"""A Binance-spot-compatible exchange simulator on 127.0.0.1, for tests and demos of the live path.

The daemon talks to it through the real ``ccxt.pro.binance`` (REST ``/api/v3``, the WebSocket API
``/ws-api/v3`` for the user data stream, public streams under ``/stream``), so the live connector is
exercised end to end without a real exchange. Orders, balances and fills come from the project's
one matching engine (:class:`s1mpled.environments.paper_exchange.SimulatedExchange`), prices from
:class:`s1mpled.environments.feeds.SyntheticFeed`. It is meant to be no kinder than Binance: fees
as Binance charges them (buys in base, sells in quote, optionally BNB), IOC/FOK expiry, PENDING_NEW
and EXPIRED_IN_MATCH orders, raw statuses from the future, myTrades paging with Binance's rules.
Faults (5xx, 429, slow, lost and late responses, resets, garbage bodies, dropped / closed /
stalled / deafened / refused WebSockets, NaN frames, clock skew, the account moving between two
requests) are injected in-process or over ``/__admin`` -- see :mod:`s1mpled_sim.faults`;
deposits, hand-placed orders and fills in pieces are admin endpoints (:mod:`.server`).

Modules: ``config`` (SimConfig), ``auth`` (signatures, Binance errors), ``wire`` / ``marketdata``
(JSON shapes), ``venue`` (the account), ``faults``, ``rest``, ``ws``, ``server`` (ExchangeSimulator),
``__main__`` (``python -m s1mpled_sim``). Never imported by paper mode or by the daemon.
"""

from s1mpled_sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig, SimMarket
from s1mpled_sim.faults import FAULT_NAMES
from s1mpled_sim.server import ExchangeSimulator

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "FAULT_NAMES", "ExchangeSimulator", "SimConfig", "SimMarket"]
