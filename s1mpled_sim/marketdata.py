"""Public market data in Binance's shapes: exchangeInfo, tickers, and the public stream events.

Each price update of the synthetic feed is treated as one public market trade; :class:`MarketStats`
folds them into the rolling figures a 24h ticker reports (open, high, low, volume, count), so
``watch_ticker`` / ``watch_trades`` / ``fetch_ticker`` of ccxt see a consistent market. Pure:
times come in as ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

from s1mpled.model import MONEY
from s1mpled_sim.config import SimMarket
from s1mpled_sim.wire import fmt

__all__ = ["STREAM_KINDS", "MarketStats", "exchange_info", "symbol_info"]

STREAM_KINDS = ("trade", "aggTrade", "ticker", "miniTicker", "bookTicker")
_PERCENT = D("0.001")


def symbol_info(market: SimMarket) -> dict[str, Any]:
    """One entry of ``exchangeInfo.symbols`` (only LIMIT and MARKET orders are offered)."""
    base, quote = market.symbol.split("/")
    return {
        "symbol": market.market_id,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(market.price_step),
                "maxPrice": "1000000000.00000000",
                "tickSize": fmt(market.price_step),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(market.amount_step),
                "maxQty": "9000000000.00000000",
                "stepSize": fmt(market.amount_step),
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }


def exchange_info(markets: list[SimMarket], now_ms: int) -> dict[str, Any]:
    """``GET /api/v3/exchangeInfo``."""
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(m) for m in markets],
    }


@dataclass
class MarketStats:
    """Rolling figures of one market since the simulator started (its "24 hours"); mutable on purpose."""

    market: SimMarket
    open_price: D
    open_ms: int
    last: D
    high: D
    low: D
    last_qty: D = D(0)
    volume: D = D(0)
    quote_volume: D = D(0)
    count: int = 0
    first_trade_id: int = 0
    last_trade_id: int = 0
    update_id: int = 0

    @classmethod
    def start(cls, market: SimMarket, now_ms: int) -> MarketStats:
        p = market.start_price
        return cls(market, p, now_ms, p, p, p)

    def record(self, price: D) -> None:
        """One public trade of ``liquidity`` at ``price``."""
        qty = self.market.liquidity
        self.last, self.last_qty = price, qty
        self.high, self.low = max(self.high, price), min(self.low, price)
        self.volume = MONEY.add(self.volume, qty)
        self.quote_volume = MONEY.add(self.quote_volume, MONEY.multiply(price, qty))
        self.count += 1
        self.last_trade_id += 1
        self.first_trade_id = self.first_trade_id or self.last_trade_id
        self.update_id += 1

    def bid_ask(self) -> tuple[D, D]:
        step = self.market.price_step
        return max(self.last - step, step), self.last + step

    def events(self, now_ms: int, buyer_maker: bool) -> list[tuple[str, dict[str, Any]]]:
        """The public stream events of the latest trade, keyed by stream name (``btcusdt@trade``, ...)."""
        sid = self.market.market_id
        key = sid.lower()
        bid, ask = self.bid_ask()
        price, qty, tid = fmt(self.last), fmt(self.last_qty), self.last_trade_id
        trade = {"e": "trade", "E": now_ms, "s": sid, "t": tid, "p": price, "q": qty, "T": now_ms, "m": buyer_maker}
        trade["M"] = True
        agg = {"e": "aggTrade", "E": now_ms, "s": sid, "a": tid, "p": price, "q": qty, "f": tid, "l": tid}
        agg.update({"T": now_ms, "m": buyer_maker, "M": True})
        book = {"u": self.update_id, "s": sid, "b": fmt(bid), "B": qty, "a": fmt(ask), "A": qty}
        return [
            (f"{key}@trade", trade),
            (f"{key}@aggTrade", agg),
            (f"{key}@ticker", self.ticker_event(now_ms)),
            (f"{key}@miniTicker", self.mini_ticker_event(now_ms)),
            (f"{key}@bookTicker", book),
        ]

    def _change(self) -> tuple[D, D]:
        change = MONEY.subtract(self.last, self.open_price)
        percent = MONEY.multiply(MONEY.divide(change, self.open_price), 100).quantize(_PERCENT, context=MONEY)
        return change, percent

    def _average(self) -> D:
        if not self.volume:
            return self.last
        return MONEY.divide(self.quote_volume, self.volume).quantize(self.market.price_step, context=MONEY)

    def ticker_event(self, now_ms: int) -> dict[str, Any]:
        """A ``24hrTicker`` stream event."""
        change, percent = self._change()
        bid, ask = self.bid_ask()
        return {
            "e": "24hrTicker",
            "E": now_ms,
            "s": self.market.market_id,
            "p": fmt(change),
            "P": fmt(percent),
            "w": fmt(self._average()),
            "x": fmt(self.open_price),
            "c": fmt(self.last),
            "Q": fmt(self.last_qty),
            "b": fmt(bid),
            "B": fmt(self.last_qty),
            "a": fmt(ask),
            "A": fmt(self.last_qty),
            "o": fmt(self.open_price),
            "h": fmt(self.high),
            "l": fmt(self.low),
            "v": fmt(self.volume),
            "q": fmt(self.quote_volume),
            "O": self.open_ms,
            "C": now_ms,
            "F": self.first_trade_id if self.count else -1,
            "L": self.last_trade_id if self.count else -1,
            "n": self.count,
        }

    def mini_ticker_event(self, now_ms: int) -> dict[str, Any]:
        """A ``24hrMiniTicker`` stream event."""
        return {
            "e": "24hrMiniTicker",
            "E": now_ms,
            "s": self.market.market_id,
            "c": fmt(self.last),
            "o": fmt(self.open_price),
            "h": fmt(self.high),
            "l": fmt(self.low),
            "v": fmt(self.volume),
            "q": fmt(self.quote_volume),
        }

    def ticker_24hr(self, now_ms: int) -> dict[str, Any]:
        """``GET /api/v3/ticker/24hr`` for one symbol."""
        change, percent = self._change()
        bid, ask = self.bid_ask()
        return {
            "symbol": self.market.market_id,
            "priceChange": fmt(change),
            "priceChangePercent": fmt(percent),
            "weightedAvgPrice": fmt(self._average()),
            "prevClosePrice": fmt(self.open_price),
            "lastPrice": fmt(self.last),
            "lastQty": fmt(self.last_qty),
            "bidPrice": fmt(bid),
            "bidQty": fmt(self.last_qty),
            "askPrice": fmt(ask),
            "askQty": fmt(self.last_qty),
            "openPrice": fmt(self.open_price),
            "highPrice": fmt(self.high),
            "lowPrice": fmt(self.low),
            "volume": fmt(self.volume),
            "quoteVolume": fmt(self.quote_volume),
            "openTime": self.open_ms,
            "closeTime": now_ms,
            "firstId": self.first_trade_id if self.count else -1,
            "lastId": self.last_trade_id if self.count else -1,
            "count": self.count,
        }

    def book_ticker(self) -> dict[str, Any]:
        """``GET /api/v3/ticker/bookTicker`` for one symbol."""
        bid, ask = self.bid_ask()
        qty = fmt(self.last_qty)
        return {
            "symbol": self.market.market_id,
            "bidPrice": fmt(bid),
            "bidQty": qty,
            "askPrice": fmt(ask),
            "askQty": qty,
        }
