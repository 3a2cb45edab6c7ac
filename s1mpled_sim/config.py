"""What a simulator instance trades: markets, starting balances, fees, credentials, feed settings.

One frozen value, so a test (or the CLI) states everything that shapes a run in one place and
the same ``seed`` gives the same price path.

Fees: ``fee_model="binance"`` follows Binance (a buy pays its fee in the base asset, a sell in
quote; ``bnb_fees`` charges every fee in BNB while the account has enough, valued at ``bnb_price``
quote when there is no ``BNB/<quote>`` market) and is the default, :data:`DEFAULT_FEE_MODEL` (the
CLI's too), because the test exchange is never kinder than the real one; ``fee_model="quote"`` is paper
mode's simpler rule (every fee in quote). History is kept far longer than paper mode keeps it
(``trades_kept``, ``closed_orders_kept``), so long tests page through complete trade lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal as D

from s1mpled.environments.paper_exchange import FEE_MODELS
from s1mpled.model import split_symbol

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "DEFAULT_FEE_MODEL", "SimConfig", "SimMarket", "default_markets"]

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_API_SECRET = "sim-api-secret"
DEFAULT_FEE_MODEL = "binance"  # of SimConfig and of the CLI: as Binance charges


@dataclass(frozen=True, slots=True)
class SimMarket:
    """One spot market; the field names match ``s1mpled.config.PaperMarketConfig``."""

    symbol: str  # "BTC/USDT"
    start_price: D
    volatility: D  # relative standard deviation of one price move
    liquidity: D  # the most base amount one resting order fills per price update
    price_step: D  # Binance PRICE_FILTER tickSize
    amount_step: D  # Binance LOT_SIZE stepSize (also minQty)

    def __post_init__(self) -> None:
        split_symbol(self.symbol)

    @property
    def market_id(self) -> str:
        """The Binance id: ``"BTC/USDT"`` -> ``"BTCUSDT"``."""
        base, quote = split_symbol(self.symbol)
        return base + quote


def default_markets() -> tuple[SimMarket, ...]:
    """BTC/USDT and ETH/USDT with Binance-like filters and a calm random walk."""
    return (
        SimMarket("BTC/USDT", D("30000.00"), D("0.0005"), D("1"), D("0.01"), D("0.00001")),
        SimMarket("ETH/USDT", D("2000.00"), D("0.0005"), D("10"), D("0.01"), D("0.0001")),
    )


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything that shapes one simulator run (the defaults suit tests and demos)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port
    seed: int = 1
    tick_interval_s: float = 0.2  # how often prices move and resting orders match
    feed_paused: bool = False  # start with the price feed stopped (prices move only via set_price)
    fee_rate: D = D("0.001")
    fee_model: str = DEFAULT_FEE_MODEL  # "binance": buy fees in base, sell fees in quote; "quote": all in quote
    bnb_fees: bool = False  # "pay fees with BNB": every fee in BNB while free BNB covers it
    bnb_price: D = D("600")  # BNB's price in quote, used when there is no BNB/<quote> market
    trades_kept: int = 1_000_000  # the matching engine forgets older trades (paper mode keeps 10,000)
    closed_orders_kept: int = 1_000_000
    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    markets: tuple[SimMarket, ...] = field(default_factory=default_markets)
    balances: dict[str, D] = field(default_factory=lambda: {"USDT": D("100000"), "BTC": D("1"), "ETH": D("10")})

    def __post_init__(self) -> None:
        if self.tick_interval_s <= 0:
            raise ValueError(f"tick_interval_s must be positive, got {self.tick_interval_s}")
        ids = [m.market_id for m in self.markets]
        if len(set(ids)) != len(ids) or not ids:
            raise ValueError(f"markets must be non-empty with distinct ids, got {ids}")
        if self.fee_model not in FEE_MODELS:
            raise ValueError(f"fee_model must be one of {FEE_MODELS}, got {self.fee_model!r}")
        if self.trades_kept < 1 or self.closed_orders_kept < 1:
            raise ValueError("trades_kept and closed_orders_kept must be positive")
