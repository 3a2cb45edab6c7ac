"""The simulated Binance account: request parameters in, Binance answers and user events out.

It wraps the one matching engine of the project, :class:`SimulatedExchange` (orders, balances,
fills), and the :class:`SyntheticFeed` (prices); it adds only what Binance says about orders and
the engine does not keep (market ids, timeInForce, cumulative quote, maker flags, cancel ids) and
validates parameters so that each rejection carries the Binance code ccxt maps to the right
exception. Pure: no I/O, no clock (``now_ms`` is passed in); every command returns the answer and
the user-stream events it caused, and the server decides whom to send them to.

Beyond the engine it keeps what only Binance has: hand-placed PENDING_NEW orders (listed and
cancelable, never matched, reserving nothing), the EXPIRED_IN_MATCH status of an order expired
by self-trade prevention, and per-order status overrides (any word, reported as is by REST and
the stream). The commands behind the admin endpoints (deposits, hand-placed orders, fills in
pieces, ...) raise ValueError for a request that cannot be carried out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, InvalidOperation
from decimal import Decimal as D
from typing import Any

from s1mpled.environments.feeds import SyntheticFeed
from s1mpled.environments.paper_exchange import MarketSpec, SimulatedExchange
from s1mpled.errors import ExchangeRejected
from s1mpled.model import MONEY, ExchangeOrder, ExchangeOrderStatus, Fill, OrderRequest, OrderType, Side, trade_order
from s1mpled_sim.auth import BinanceError, mandatory
from s1mpled_sim.config import SimConfig, SimMarket
from s1mpled_sim.marketdata import MarketStats, exchange_info
from s1mpled_sim.wire import (
    OrderExtra,
    account_json,
    account_position,
    balance_update,
    binance_status,
    execution_report,
    fmt,
    order_json,
    order_state,
    trade_json,
    trade_state,
)

__all__ = ["PriceUpdate", "Venue"]

Json = dict[str, Any]
_NUMBER = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_INSUFFICIENT = "Account has insufficient balance for requested action."
_DAY_MS = 86_400_000
# myTrades: the optional parameters Binance accepts together (anything else is -1128)
_TRADE_QUERIES = {
    frozenset(),
    frozenset({"orderId"}),
    frozenset({"startTime"}),
    frozenset({"endTime"}),
    frozenset({"fromId"}),
    frozenset({"startTime", "endTime"}),
    frozenset({"orderId", "fromId"}),
}
_SIDES = {"buy": "BUY", "sell": "SELL", "BUY": "BUY", "SELL": "SELL"}
_TYPES = {"limit": "LIMIT", "market": "MARKET", "LIMIT": "LIMIT", "MARKET": "MARKET"}


@dataclass(frozen=True)
class PriceUpdate:
    """What one price move caused: user events (fills) and public stream events by stream name."""

    user_events: list[Json] = field(default_factory=list)
    public_events: list[tuple[str, Json]] = field(default_factory=list)


def _decimal(params: Mapping[str, str], name: str) -> D | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not _NUMBER.fullmatch(text):
        raise BinanceError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
        )
    try:
        return D(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _integer(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(text)


def _text(value: object) -> str:
    """A number from an admin request (JSON number or string) as Binance's parameter text."""
    if value is None or isinstance(value, bool):
        return ""
    try:
        return format(D(str(value)), "f")
    except InvalidOperation:
        return str(value)


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise mandatory(name)
    return value


class Venue:
    """One Binance spot account on top of the shared matching engine and price feed."""

    def __init__(self, config: SimConfig, now_ms: int) -> None:
        self._config = config
        self._markets = {m.symbol: m for m in config.markets}
        self._by_id = {m.market_id: m for m in config.markets}
        specs = {m.symbol: MarketSpec(m.symbol, m.price_step, m.amount_step, m.liquidity) for m in config.markets}
        self.exchange = SimulatedExchange(
            specs,
            config.balances,
            config.fee_rate,
            trades_kept=config.trades_kept,
            closed_orders_kept=config.closed_orders_kept,
            fee_model=config.fee_model,
            bnb_fees=config.bnb_fees,
            bnb_price=config.bnb_price,
        )
        self._feeds = {
            m.symbol: SyntheticFeed(config.seed, m.symbol, m.start_price, m.volatility, m.price_step)
            for m in config.markets
        }
        self._stats = {m.symbol: MarketStats.start(m, now_ms) for m in config.markets}
        self._extra: dict[str, OrderExtra] = {}  # by client order id
        self._cid_by_order_id: dict[int, str] = {}
        self._maker: dict[str, bool] = {}  # by trade id
        self._filled: dict[str, D] = {}  # by client order id: filled so far, as the fills were reported
        self._held: dict[str, ExchangeOrder] = {}  # hand-placed PENDING_NEW orders: listed, never matched
        self._fixed_status: dict[str, str] = {}  # by client id: PENDING_NEW, EXPIRED_IN_MATCH
        self._override: dict[str, str] = {}  # by client id: the raw status REST and WS report instead
        self._step = 0
        self._auto_ids = 0
        self._manual_ids = 0
        for m in config.markets:
            self.exchange.on_price(m.symbol, m.start_price, now_ms)

    # ----------------------------------------------------------------- lookups

    @property
    def markets(self) -> list[SimMarket]:
        return list(self._markets.values())

    def market(self, market_id: str) -> SimMarket:
        """The market of a Binance id, or -1121."""
        market = self._by_id.get(market_id)
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    def _symbol_param(self, params: Mapping[str, str]) -> SimMarket:
        return self.market(_required(params, "symbol"))

    def _find(self, params: Mapping[str, str], market: SimMarket, not_found: BinanceError) -> ExchangeOrder:
        order_id = _integer(params, "orderId")
        cid = params.get("origClientOrderId") or None
        if order_id is None and cid is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order_id is not None:
            found = self._cid_by_order_id.get(order_id)
            if found is None or (cid is not None and cid != found):
                raise not_found
            cid = found
        assert cid is not None
        order = self.order(cid)
        if order is None or order.symbol != market.symbol:
            raise not_found
        return order

    def order(self, cid: str) -> ExchangeOrder | None:
        """Any order by client id: the engine's or a hand-placed pending one."""
        return self._held.get(cid) or self.exchange.order(cid)

    def wire_status(self, order: ExchangeOrder) -> str:
        """The word REST and the stream use for the order's status: an override, a Binance-only status
        (PENDING_NEW, EXPIRED_IN_MATCH) or the one the engine's status maps to."""
        cid = order.client_order_id
        return self._override.get(cid) or self._fixed_status.get(cid) or binance_status(order)

    def _all_open(self) -> list[ExchangeOrder]:
        held = [o for o in self._held.values() if o.status is ExchangeOrderStatus.OPEN]
        return sorted([*self.exchange.open_orders(), *held], key=lambda o: int(o.exchange_order_id))

    def _report(self, order: ExchangeOrder, now_ms: int, **kwargs: Any) -> Json:
        return execution_report(
            order, self._extra[order.client_order_id], now_ms, status=self.wire_status(order), **kwargs
        )

    def _new_client_id(self, prefix: str) -> str:
        self._auto_ids += 1
        return f"{prefix}{self._auto_ids:016d}"

    # ----------------------------------------------------------------- private REST

    def account(self, params: Mapping[str, str], now_ms: int) -> Json:
        """``GET /api/v3/account``."""
        omit_zero = params.get("omitZeroBalances") == "true"
        balances = [b for b in self.exchange.balances().values() if not omit_zero or b.total != 0]
        return account_json(balances, self._config.fee_rate, now_ms)

    def place(self, params: Mapping[str, str], now_ms: int) -> tuple[Json, list[Json]]:
        """``POST /api/v3/order``: the answer (ACK, RESULT or FULL) and the user events."""
        market = self._symbol_param(params)
        req, tif, resp_type = self._order_request(params, market)
        if self.order(req.client_order_id) is not None:
            raise BinanceError(-2010, "Duplicate order sent.")
        try:
            order, fills = self.exchange.place_order(req, now_ms, time_in_force=tif or "GTC")
        except ExchangeRejected as exc:
            msg = _INSUFFICIENT if "insufficient funds" in str(exc) else str(exc)
            raise BinanceError(-2010, msg) from None
        self._cid_by_order_id[int(order.exchange_order_id)] = order.client_order_id
        extra = OrderExtra(market.market_id, tif, D(0), now_ms)
        self._extra[order.client_order_id] = extra
        opened = replace(order, filled=D(0), status=ExchangeOrderStatus.OPEN)
        events = [self._report(opened, now_ms)]
        events += self._fill_events(fills, maker=False, now_ms=now_ms)
        final = self.exchange.order(req.client_order_id) or order
        if final.status is ExchangeOrderStatus.EXPIRED:  # IOC remainder, FOK that could not fill
            events.append(self._report(final, now_ms, execution="EXPIRED"))
        events.append(self._position(market, now_ms))
        return self._place_answer(final, fills, resp_type, now_ms), events

    def _order_request(self, params: Mapping[str, str], market: SimMarket) -> tuple[OrderRequest, str | None, str]:
        side_text = _required(params, "side")
        if side_text not in ("BUY", "SELL"):
            raise BinanceError(-1117, "Invalid side.")
        type_text = _required(params, "type")
        if type_text not in ("LIMIT", "MARKET"):
            raise BinanceError(-1116, "Invalid orderType.")
        cid = params.get("newClientOrderId") or self._new_client_id("sim")
        if not _CLIENT_ID.fullmatch(cid):
            raise BinanceError(-1100, "Illegal characters found in parameter 'newClientOrderId'.")
        resp_type = params.get("newOrderRespType") or "FULL"
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise BinanceError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        side = Side.BUY if side_text == "BUY" else Side.SELL
        if type_text == "LIMIT":
            tif = _required(params, "timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise BinanceError(-1115, "Invalid timeInForce.")
            price = _decimal(params, "price")
            if price is None:
                raise mandatory("price")
            amount = self._quantity(params, market, None)
            self._check_filters(market, amount, price)
            return OrderRequest(cid, market.symbol, side, OrderType.LIMIT, amount, price), tif, resp_type
        if params.get("price"):
            raise BinanceError(-1106, "Parameter 'price' sent when not required.")
        amount = self._quantity(params, market, _decimal(params, "quoteOrderQty"))
        self._check_filters(market, amount, None)
        return OrderRequest(cid, market.symbol, side, OrderType.MARKET, amount), None, resp_type

    def _quantity(self, params: Mapping[str, str], market: SimMarket, quote_qty: D | None) -> D:
        quantity = _decimal(params, "quantity")
        if (quantity is None) == (quote_qty is None):
            if quantity is None:
                raise BinanceError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
            raise BinanceError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        if quantity is not None:
            return quantity
        assert quote_qty is not None
        last = self.exchange.last_price(market.symbol) or market.start_price
        units = MONEY.divide(quote_qty, MONEY.multiply(last, market.amount_step)).to_integral_value(ROUND_DOWN)
        return MONEY.multiply(units, market.amount_step)

    @staticmethod
    def _check_filters(market: SimMarket, amount: D, price: D | None) -> None:
        if price is not None and (price <= 0 or MONEY.remainder(price, market.price_step) != 0):
            raise BinanceError(-1013, "Filter failure: PRICE_FILTER")
        if amount < market.amount_step or MONEY.remainder(amount, market.amount_step) != 0:
            raise BinanceError(-1013, "Filter failure: LOT_SIZE")

    def _place_answer(self, order: ExchangeOrder, fills: list[Fill], resp_type: str, now_ms: int) -> Json:
        extra = self._extra[order.client_order_id]
        if resp_type == "ACK":
            return {
                "symbol": extra.market_id,
                "orderId": int(order.exchange_order_id),
                "orderListId": -1,
                "clientOrderId": order.client_order_id,
                "transactTime": now_ms,
            }
        answer = order_json(order, extra, self.wire_status(order))
        for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking"):
            answer.pop(key)
        answer["transactTime"] = now_ms
        if resp_type == "FULL":
            answer["fills"] = [
                {
                    "price": fmt(f.price),
                    "qty": fmt(f.amount),
                    "commission": fmt(f.fee),
                    "commissionAsset": f.fee_asset,
                    "tradeId": int(f.trade_id),
                }
                for f in fills
            ]
        return answer

    def get_order(self, params: Mapping[str, str]) -> Json:
        """``GET /api/v3/order`` by ``orderId`` or ``origClientOrderId``."""
        market = self._symbol_param(params)
        order = self._find(params, market, BinanceError(-2013, "Order does not exist."))
        return order_json(order, self._extra[order.client_order_id], self.wire_status(order))

    def cancel(self, params: Mapping[str, str], now_ms: int) -> tuple[Json, list[Json]]:
        """``DELETE /api/v3/order``: unknown or no longer open orders are -2011."""
        market = self._symbol_param(params)
        unknown = BinanceError(-2011, "Unknown order sent.")
        order = self._find(params, market, unknown)
        if order.status is not ExchangeOrderStatus.OPEN:
            raise unknown
        return self._cancel(order, market, params.get("newClientOrderId") or None, now_ms)

    def cancel_all(self, params: Mapping[str, str], now_ms: int) -> tuple[list[Json], list[Json]]:
        """``DELETE /api/v3/openOrders`` for one symbol."""
        market = self._symbol_param(params)
        answers: list[Json] = []
        events: list[Json] = []
        for order in self._all_open():
            if order.symbol == market.symbol:
                answer, more = self._cancel(order, market, None, now_ms)
                answers.append(answer)
                events += more
        return answers, events

    def _cancel(
        self, order: ExchangeOrder, market: SimMarket, cancel_id: str | None, now_ms: int
    ) -> tuple[Json, list[Json]]:
        cid = order.client_order_id
        if cid in self._held:
            canceled = self._held[cid] = replace(order, status=ExchangeOrderStatus.CANCELED)
            self._fixed_status.pop(cid, None)
        else:
            canceled = self.exchange.cancel_order(market.symbol, cid, now_ms)
        extra = replace(self._extra[cid], update_ms=now_ms)
        self._extra[cid] = extra
        cancel_cid = cancel_id or self._new_client_id("cancel")
        answer = order_json(canceled, extra, self.wire_status(canceled))
        for key in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking", "workingTime"):
            answer.pop(key)
        answer.update({"origClientOrderId": cid, "clientOrderId": cancel_cid, "transactTime": now_ms})
        report = self._report(canceled, now_ms, cancel_client_id=cancel_cid)
        return answer, [report, self._position(market, now_ms)]

    def open_orders(self, params: Mapping[str, str]) -> list[Json]:
        """``GET /api/v3/openOrders``, of one symbol or (without ``symbol``) of all."""
        symbol = self._symbol_param(params).symbol if params.get("symbol") else None
        return [
            order_json(o, self._extra[o.client_order_id], self.wire_status(o))
            for o in self._all_open()
            if symbol is None or o.symbol == symbol
        ]

    def my_trades(self, params: Mapping[str, str]) -> list[Json]:
        """``GET /api/v3/myTrades`` as Binance documents it, oldest first in every case.

        ``limit`` default 500, at most 1000. ``fromId``: trades with id >= fromId, the first ``limit``.
        ``startTime`` / ``endTime``: a window of at most 24 hours (one alone spans 24 hours from or up
        to it; wider is -1127), the first ``limit`` trades in it. Neither: the most recent ``limit``.
        ``orderId`` narrows to one order (with ``fromId``: from that id). Other combinations are -1128.
        """
        market = self._symbol_param(params)
        order_id, from_id = _integer(params, "orderId"), _integer(params, "fromId")
        start, end = _integer(params, "startTime"), _integer(params, "endTime")
        given = frozenset(n for n in ("orderId", "fromId", "startTime", "endTime") if params.get(n))
        if given not in _TRADE_QUERIES:
            raise BinanceError(-1128, "Combination of optional parameters invalid.")
        if start is not None and end is not None and end - start > _DAY_MS:
            raise BinanceError(-1127, "More than 24 hours between startTime and endTime.")
        if start is not None and end is None:
            end = start + _DAY_MS
        elif end is not None and start is None:
            start = end - _DAY_MS
        limit = min(_integer(params, "limit") or 500, 1000)
        trades = [
            f
            for f in self.exchange.trades(market.symbol)
            if (order_id is None or int(f.exchange_order_id) == order_id)
            and (from_id is None or trade_order(f.trade_id)[0] >= from_id)
            and (start is None or f.timestamp_ms >= start)
            and (end is None or f.timestamp_ms <= end)
        ]
        chosen = trades[:limit] if from_id is not None or start is not None else trades[-limit:]
        return [trade_json(f, market.market_id, self._maker[f.trade_id]) for f in chosen]

    # ----------------------------------------------------------------- public REST

    def exchange_info(self, params: Mapping[str, str], now_ms: int) -> Json:
        """``GET /api/v3/exchangeInfo`` (``symbol`` or ``symbols=["A","B"]`` narrow it)."""
        wanted: list[str] | None = None
        if params.get("symbol"):
            wanted = [params["symbol"]]
        elif params.get("symbols"):
            try:
                loaded = json.loads(params["symbols"])
            except ValueError:
                raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.") from None
            wanted = [str(s) for s in loaded] if isinstance(loaded, list) else None
        markets = self.markets if wanted is None else [self.market(s) for s in wanted]
        return exchange_info(markets, now_ms)

    def tickers(self, kind: str, params: Mapping[str, str], now_ms: int) -> Json | list[Json]:
        """``GET /api/v3/ticker/{price,24hr,bookTicker}``, of one symbol or of all."""
        markets = [self._symbol_param(params)] if params.get("symbol") else self.markets

        def one(market: SimMarket) -> Json:
            stats = self._stats[market.symbol]
            if kind == "price":
                return {"symbol": market.market_id, "price": fmt(stats.last)}
            if kind == "24hr":
                return stats.ticker_24hr(now_ms)
            return stats.book_ticker()

        answers = [one(m) for m in markets]
        return answers[0] if params.get("symbol") else answers

    # ----------------------------------------------------------------- prices

    def tick(self, now_ms: int) -> PriceUpdate:
        """Move every market one step along its synthetic feed and match the resting orders."""
        self._step += 1
        update = PriceUpdate()
        for symbol, feed in self._feeds.items():
            price = feed.price_at(self._step, self._stats[symbol].last)
            self._merge(update, self.set_price(symbol, price, now_ms))
        return update

    def set_price(self, symbol: str, price: D, now_ms: int) -> PriceUpdate:
        """One public trade at ``price``: resting orders it crosses fill (at their limit price)."""
        market = self._markets.get(symbol)
        if market is None:
            raise ValueError(f"unknown symbol {symbol!r}")
        if price <= 0 or MONEY.remainder(price, market.price_step) != 0:
            raise ValueError(f"{symbol}: price {price} is not a positive multiple of {market.price_step}")
        stats = self._stats[symbol]
        down = price < stats.last
        fills = self.exchange.on_price(symbol, price, now_ms)
        stats.record(price)
        user = self._fill_events(fills, maker=True, now_ms=now_ms)
        if fills:
            user.append(self._position(market, now_ms))
        return PriceUpdate(user, stats.events(now_ms, buyer_maker=down))

    @staticmethod
    def _merge(into: PriceUpdate, more: PriceUpdate) -> None:
        into.user_events.extend(more.user_events)
        into.public_events.extend(more.public_events)

    def _fill_events(self, fills: list[Fill], maker: bool, now_ms: int) -> list[Json]:
        """Record each fill's extras and describe it as an executionReport with x = TRADE."""
        events: list[Json] = []
        for fill in fills:
            self._maker[fill.trade_id] = maker
            extra = self._extra[fill.client_order_id]
            quote = MONEY.add(extra.quote_qty, MONEY.multiply(fill.price, fill.amount))
            extra = replace(extra, quote_qty=quote, update_ms=now_ms)
            self._extra[fill.client_order_id] = extra
            final = self.exchange.order(fill.client_order_id)
            assert final is not None
            # the order as it was right after this fill (one order may fill several times in one batch)
            filled = MONEY.add(self._filled.get(fill.client_order_id, D(0)), fill.amount)
            self._filled[fill.client_order_id] = filled
            status = ExchangeOrderStatus.OPEN if filled < final.amount else ExchangeOrderStatus.CLOSED
            at_fill = replace(final, filled=filled, status=status)
            events.append(self._report(at_fill, now_ms, fill=fill, maker=maker))
        return events

    def _position(self, market: SimMarket, now_ms: int) -> Json:
        """outboundAccountPosition of the market's assets (and BNB when fees may be paid in it)."""
        balances = self.exchange.balances()
        assets = market.symbol.split("/") + (["BNB"] if self.exchange.bnb_fees else [])
        return account_position([balances[a] for a in dict.fromkeys(assets)], now_ms)

    # ----------------------------------------------------------------- what happens outside the API

    def adjust_balance(self, asset: str, delta: D, now_ms: int) -> tuple[Json, list[Json]]:
        """A deposit (``delta`` > 0) or withdrawal (< 0): ``balanceUpdate`` and ``outboundAccountPosition``."""
        try:
            balance = self.exchange.adjust_balance(asset, delta)
        except ExchangeRejected as exc:
            raise ValueError(str(exc)) from None
        events = [balance_update(asset, delta, now_ms), account_position([balance], now_ms)]
        return {"asset": asset, "free": str(balance.free), "used": str(balance.used)}, events

    def foreign_order(self, body: Mapping[str, Any], now_ms: int) -> tuple[Json, list[Json]]:
        """An order placed by hand (the website, another program): ``status`` ``NEW`` (default) trades
        like any order; ``PENDING_NEW`` is listed and cancelable but never matched and reserves nothing
        (the pending leg of an order list). Unified (``"BTC/USDT"``, ``"buy"``) or Binance spellings."""
        symbol = str(body.get("symbol", ""))
        market = self._markets.get(symbol) or self._by_id.get(symbol)
        if market is None:
            raise ValueError(f"unknown symbol {symbol!r}")
        status = body.get("status") or "NEW"
        if status not in ("NEW", "PENDING_NEW"):
            raise ValueError(f"status must be NEW or PENDING_NEW, got {status!r}")
        side, kind = _SIDES.get(str(body.get("side"))), _TYPES.get(str(body.get("type", "limit")))
        if side is None or kind is None:
            raise ValueError("side must be buy or sell, type limit or market")
        params = {"symbol": market.market_id, "side": side, "type": kind, "quantity": _text(body.get("amount"))}
        if kind == "LIMIT":
            params |= {"price": _text(body.get("price")), "timeInForce": str(body.get("time_in_force") or "GTC")}
        cid = body.get("client_order_id")
        params["newClientOrderId"] = str(cid) if cid else self._new_client_id("web_")
        try:
            if status == "NEW":
                return self.place(params, now_ms)
            return self._hold(params, market, now_ms)
        except BinanceError as exc:
            raise ValueError(f"{exc.code}: {exc.msg}") from None

    def _hold(self, params: Mapping[str, str], market: SimMarket, now_ms: int) -> tuple[Json, list[Json]]:
        req, tif, _ = self._order_request(params, market)
        if self.order(req.client_order_id) is not None:
            raise BinanceError(-2010, "Duplicate order sent.")
        order = ExchangeOrder(
            client_order_id=req.client_order_id,
            exchange_order_id=self.exchange.reserve_order_id(),
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            amount=req.amount,
            price=req.price,
            filled=D(0),
            status=ExchangeOrderStatus.OPEN,
            timestamp_ms=now_ms,
        )
        self._held[order.client_order_id] = order
        self._fixed_status[order.client_order_id] = "PENDING_NEW"
        self._cid_by_order_id[int(order.exchange_order_id)] = order.client_order_id
        self._extra[order.client_order_id] = OrderExtra(market.market_id, tif, D(0), now_ms)
        answer = order_json(order, self._extra[order.client_order_id], "PENDING_NEW")
        return answer, [self._report(order, now_ms)]

    def _open_by_cid(self, cid: str) -> ExchangeOrder:
        order = self.order(cid)
        if order is None or order.status is not ExchangeOrderStatus.OPEN:
            raise ValueError(f"no open order {cid!r}")
        return order

    def expire_in_match(self, cid: str, now_ms: int) -> tuple[Json, list[Json]]:
        """Self-trade prevention ended an open order: EXPIRED_IN_MATCH, what filled is kept."""
        order = self._open_by_cid(cid)
        if cid in self._held:
            expired = self._held[cid] = replace(order, status=ExchangeOrderStatus.EXPIRED)
        else:
            expired = self.exchange.expire_order(order.symbol, cid, now_ms)
        self._fixed_status[cid] = "EXPIRED_IN_MATCH"
        self._extra[cid] = replace(self._extra[cid], update_ms=now_ms)
        market = self._markets[order.symbol]
        events = [self._report(expired, now_ms, execution="TRADE_PREVENTION"), self._position(market, now_ms)]
        return order_json(expired, self._extra[cid], self.wire_status(expired)), events

    def set_status_override(self, cid: str, status: str | None) -> Json:
        """From now on REST and the stream report ``status`` for the order (None: its real status again)."""
        order = self.order(cid)
        if order is None:
            raise ValueError(f"no order {cid!r}")
        if status is None:
            self._override.pop(cid, None)
        else:
            self._override[cid] = status
        return order_state(order, self.wire_status(order))

    def fill(self, cid: str, amount: D | None, now_ms: int) -> tuple[Json, list[Json]]:
        """Fill an open order at its limit price now, ``amount`` or all that remains, in one trade (maker)."""
        return self.fill_in_pieces(cid, 1, now_ms, amount)

    def fill_in_pieces(self, cid: str, pieces: int, now_ms: int, amount: D | None = None) -> tuple[Json, list[Json]]:
        """Fill an open order completely (or ``amount`` of it) in ``pieces`` separate trades at its limit price:
        equal pieces on the lot step, the last one takes the rest. ValueError if the amount cannot be split so."""
        order = self._open_by_cid(cid)
        if cid in self._held:
            raise ValueError(f"{cid!r} is {self.wire_status(order)}: it is not matched")
        market = self._markets[order.symbol]
        total = order.amount - order.filled if amount is None else amount
        step = market.amount_step
        piece = MONEY.multiply(MONEY.divide(total, MONEY.multiply(step, pieces)).to_integral_value(ROUND_DOWN), step)
        if pieces < 1 or piece < step:
            raise ValueError(f"{cid!r}: {total} cannot be filled in {pieces} pieces of at least {step}")
        fills: list[Fill] = []
        try:
            for i in range(pieces):
                size = piece if i < pieces - 1 else MONEY.subtract(total, MONEY.multiply(piece, pieces - 1))
                fills.append(self.exchange.fill_order(cid, now_ms, size))
        except ExchangeRejected as exc:
            if not fills:
                raise ValueError(str(exc)) from None
            raise  # pragma: no cover - the pieces were checked to fit
        events = self._fill_events(fills, maker=True, now_ms=now_ms)
        events.append(self._position(market, now_ms))
        final = self.exchange.order(cid)
        assert final is not None
        return {"order": order_state(final, self.wire_status(final)), "trades": len(fills)}, events

    def pick_open(self, cid: str | None, prefix: str, fillable: bool) -> ExchangeOrder | None:
        """``cid`` if it is open, else the oldest open order whose client id starts with ``prefix``."""
        candidates = [o for o in self._all_open() if not (fillable and o.client_order_id in self._held)]
        for order in candidates:
            if (order.client_order_id == cid) if cid is not None else order.client_order_id.startswith(prefix):
                return order
        return None

    def cancel_by_hand(self, order: ExchangeOrder, now_ms: int) -> tuple[Json, list[Json]]:
        return self._cancel(order, self._markets[order.symbol], None, now_ms)

    def sell_by_hand(self, symbol: str, amount: D | None, now_ms: int) -> tuple[Json, list[Json]] | None:
        """A market sell of ``amount`` (default all free base, on the lot step) under ``web_manual_<n>``;
        None when there is nothing to sell or the sale is refused."""
        market = self._markets.get(symbol) or self._by_id.get(symbol)
        if market is None:
            raise ValueError(f"unknown symbol {symbol!r}")
        if amount is None:
            free = self.exchange.balances()[market.symbol.split("/")[0]].free
            amount = MONEY.multiply(
                MONEY.divide(free, market.amount_step).to_integral_value(ROUND_DOWN), market.amount_step
            )
        if amount <= 0:
            return None
        self._manual_ids += 1
        while self.order(f"web_manual_{self._manual_ids}") is not None:
            self._manual_ids += 1
        params = {
            "symbol": market.market_id,
            "side": "SELL",
            "type": "MARKET",
            "quantity": format(amount, "f"),
            "newClientOrderId": f"web_manual_{self._manual_ids}",
        }
        try:
            return self.place(params, now_ms)
        except BinanceError:
            return None

    # ----------------------------------------------------------------- admin

    def snapshot(self, now_ms: int) -> Json:
        """Everything a test needs to compare a ledger with the exchange (``GET /__admin/state``)."""
        orders = [self.order(cid) for cid in self._extra]
        return {
            "server_time_ms": now_ms,
            "step": self._step,
            "last_prices": {s: str(st.last) for s, st in self._stats.items()},
            "balances": {a: {"free": str(b.free), "used": str(b.used)} for a, b in self.exchange.balances().items()},
            "open_orders": [order_state(o, self.wire_status(o)) for o in self._all_open()],
            "orders": {o.client_order_id: order_state(o, self.wire_status(o)) for o in orders if o is not None},
            "trades": [trade_state(f, self._maker[f.trade_id]) for f in self.exchange.trades()],
        }
