"""``python -m s1mpled_sim --port 0 --seed 1``: serve until SIGTERM / SIGINT.

Prints one JSON line on stdout once listening -- the base URLs (``http``, ``ws``, ``rest``,
``ws_api``, ``stream``, ``admin``), ``api_key``, ``api_secret`` and ``pid`` -- so a test in another
process can read where to connect; then serves until SIGTERM or SIGINT and exits 0.

Account options: ``--balance ASSET=AMOUNT`` (repeatable; when given it REPLACES the default opening
balances entirely -- assets not named start at 0), ``--fee-model binance|quote`` (binance: buy fees
in base, sell fees in quote, the default, as Binance charges; quote: every fee in quote, as paper mode),
``--bnb-fees`` (pay every fee in BNB while free BNB covers it), ``--bnb-price`` (BNB's price in quote without a BNB
market, default 600), ``--fee-rate`` (default 0.001), ``--trades-kept`` (history the engine keeps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation

from s1mpled_sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, DEFAULT_FEE_MODEL, SimConfig
from s1mpled_sim.server import ExchangeSimulator


def _balance(text: str) -> tuple[str, Decimal]:
    asset, sep, amount = text.partition("=")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        value = Decimal("NaN")
    if not sep or not asset.isalnum() or asset != asset.upper() or not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"expected ASSET=AMOUNT (e.g. USDT=1000), got {text!r}")
    return asset, value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number: {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> SimConfig:
    parser = argparse.ArgumentParser(prog="python -m s1mpled_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic price feed")
    parser.add_argument("--tick-interval", type=float, default=0.2, help="seconds between price moves")
    parser.add_argument("--paused", action="store_true", help="start with the price feed stopped")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--api-secret", default=DEFAULT_API_SECRET)
    parser.add_argument(
        "--balance",
        type=_balance,
        action="append",
        metavar="ASSET=AMOUNT",
        help="opening balance (repeatable); replaces the default balances, unnamed assets start at 0",
    )
    parser.add_argument("--fee-model", choices=("binance", "quote"), default=DEFAULT_FEE_MODEL)
    parser.add_argument("--bnb-fees", action="store_true", help="pay every fee in BNB while free BNB covers it")
    parser.add_argument("--bnb-price", type=_decimal, default=Decimal("600"), help="BNB in quote without a BNB market")
    parser.add_argument("--fee-rate", type=_decimal, default=Decimal("0.001"))
    parser.add_argument("--trades-kept", type=int, default=1_000_000, help="trades the matching engine remembers")
    args = parser.parse_args(argv)
    config = SimConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        tick_interval_s=args.tick_interval,
        feed_paused=args.paused,
        api_key=args.api_key,
        api_secret=args.api_secret,
        fee_rate=args.fee_rate,
        fee_model=args.fee_model,
        bnb_fees=args.bnb_fees,
        bnb_price=args.bnb_price,
        trades_kept=args.trades_kept,
    )
    return config if args.balance is None else replace(config, balances=dict(args.balance))


async def serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ExchangeSimulator(config) as sim:
        line = {**sim.urls(), "api_key": config.api_key, "api_secret": config.api_secret, "pid": os.getpid()}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    # INFO to stderr: what the simulator did on its own (a late execution, a refusal) is the evidence a
    # failed test needs; without a handler Python would print only warnings.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # not a line per request
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
