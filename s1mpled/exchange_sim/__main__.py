"""``python -m s1mpled.exchange_sim --port 0 --seed 1``: serve until SIGTERM / SIGINT.

Prints one JSON line on stdout once listening -- the base URLs (``http``, ``ws``, ``rest``,
``ws_api``, ``stream``, ``admin``), ``api_key``, ``api_secret`` and ``pid`` -- so a test in another
process can read where to connect; then serves until SIGTERM or SIGINT and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence

from s1mpled.exchange_sim.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimConfig
from s1mpled.exchange_sim.server import ExchangeSimulator


def parse_args(argv: Sequence[str] | None) -> SimConfig:
    parser = argparse.ArgumentParser(prog="python -m s1mpled.exchange_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic price feed")
    parser.add_argument("--tick-interval", type=float, default=0.2, help="seconds between price moves")
    parser.add_argument("--paused", action="store_true", help="start with the price feed stopped")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--api-secret", default=DEFAULT_API_SECRET)
    args = parser.parse_args(argv)
    return SimConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        tick_interval_s=args.tick_interval,
        feed_paused=args.paused,
        api_key=args.api_key,
        api_secret=args.api_secret,
    )


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
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
