"""Benchmark: one reconciliation pass of the live path against an account with 1,000 open orders over 50 symbols.

Why: the ReconciliationMonitor runs at startup (phase B holds READY=1 back until it is done), every five
minutes and after every reconnect, holding every strategy's lock while it runs. Its cost must therefore
be O(1) in REST requests with respect to the number of open orders -- one ``openOrders`` (all symbols),
one ``account``, one ``myTrades`` per symbol that has strategies, and no per-order probe when every
order the ledgers believe open is listed -- and its pure diff must stay cheap (target <= 20 ms).

Set-up, all real: the project's Binance simulator on 127.0.0.1 with ``--symbols`` markets (feed paused:
nothing fills), a :class:`LiveEnvironment` (the real ``ccxt.pro.binance``), and ``--strategies``
StrategyWorkers (one per symbol, each with its own state file in a real StateDirectory). Orders are placed
the way the daemon places them: intent recorded in the ledger and made durable, ``create_order`` with
the ledger's client id, the acknowledgement recorded and made durable. Orders on symbols beyond
``--strategies`` carry a foreign client id (external orders: listed, never probed or touched).

Measured, in one run:

* ``--passes`` x ``ReconciliationMonitor.reconcile()``: wall time, split into lock + ledger facts, the
  REST pull (``_venue``: per endpoint, timed at the environment) and diff + apply; REST requests that
  reached the simulator (``sim.request_counts``) by endpoint;
* the pure diff ``reconcile(facts, venue)`` alone on the snapshot the last pass pulled, ``--diff-runs``
  times (p50/p99), and building the facts from the ledgers (``facts_of``) alone;
* floor: bare ``exchange.fetch_open_orders()`` of ccxt (no parsing into our model), and our
  ``get_open_orders()`` (ccxt + ``parse_order``), each ``--floor-runs`` times.

State lives in a temp dir under /var/tmp (not /tmp, which may be tmpfs where fsync is free).

Usage: ``python bench/reconcile.py [--orders 1000] [--symbols 50] [--strategies 50] [--passes 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from common import run_benchmark, wall_ms
from state_save import summarize  # bench/ is sys.path[0] when run as a script

from s1mpled.assembly import strategy_state_name
from s1mpled.config import LiveConfig
from s1mpled.connection import Backoff
from s1mpled.credentials import Credentials
from s1mpled.environments.live import LiveEnvironment
from s1mpled.events import Event, LedgerStateChanged
from s1mpled.model import Balance, ExchangeOrder, Fill, OrderRequest, OrderType, Side, UnparsedOrder
from s1mpled.orders import OrderEvent, client_order_id, order_prefix
from s1mpled.reconciliation import (
    LedgerFacts,
    SetCapital,
    SetHoldings,
    VenueSnapshot,
    facts_of,
    reconcile,
    total_claims,
    with_applied,
)
from s1mpled.reconciliation_monitor import SWEEP_EVERY, ReconciliationMonitor
from s1mpled.state.store import StateDirectory
from s1mpled.strategies.dca import DCA
from s1mpled.strategy_worker import StrategyWorker
from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSimulator, SimConfig, SimMarket

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "reconcile.json"
OPERATION = "bench-reconcile"
DIFF_TARGET_MS = 20.0
START_PRICE = Decimal("100.00")
PRICE_STEP = Decimal("0.01")
AMOUNT_STEP = Decimal("0.001")
ORDER_AMOUNT = Decimal("0.010")
CAPITAL = Decimal("10000")


def symbols(n: int) -> list[str]:
    return [f"X{i:02d}/USDT" for i in range(n)]


def sim_config(names: Sequence[str], funding: Decimal) -> SimConfig:
    """``names`` markets at 100.00 with the feed paused (prices move only if we say so: nothing fills).

    ``funding``: the account's USDT -- exactly the strategies' capital plus what external orders reserve, so
    no outside money hides a wrong cut.
    """
    markets = tuple(SimMarket(s, START_PRICE, Decimal("0.0005"), Decimal("1"), PRICE_STEP, AMOUNT_STEP) for s in names)
    return SimConfig(feed_paused=True, markets=markets, balances={"USDT": funding})


class TimedLiveEnvironment(LiveEnvironment):
    """The real LiveEnvironment; each REST method the monitor uses adds its wall time to ``spent_ns``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spent_ns: Counter[str] = Counter()

    def _add(self, what: str, t0: int) -> None:
        self.spent_ns[what] += time.perf_counter_ns() - t0

    async def get_open_orders(self) -> list[ExchangeOrder | UnparsedOrder]:
        t0 = time.perf_counter_ns()
        try:
            return await super().get_open_orders()
        finally:
            self._add("openOrders", t0)

    async def get_balances(self) -> dict[str, Balance]:
        t0 = time.perf_counter_ns()
        try:
            return await super().get_balances()
        finally:
            self._add("account", t0)

    async def fetch_trades(self, symbol: str, after_trade_id: str | None, since_ms: int = 0) -> list[Fill]:
        t0 = time.perf_counter_ns()
        try:
            return await super().fetch_trades(symbol, after_trade_id, since_ms)
        finally:
            self._add("myTrades", t0)

    async def fetch_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        t0 = time.perf_counter_ns()
        try:
            return await super().fetch_order(symbol, client_order_id)
        finally:
            self._add("order", t0)


class CapturingMonitor(ReconciliationMonitor):
    """The real monitor; remembers the last venue snapshot it pulled and how long pulling took."""

    venue: VenueSnapshot | None = None
    pull_ns: int = 0

    async def _venue(self, facts: Sequence[LedgerFacts], sweep: bool) -> VenueSnapshot:
        t0 = time.perf_counter_ns()
        self.venue = await super()._venue(facts, sweep)
        self.pull_ns = time.perf_counter_ns() - t0
        return self.venue


def order_price(j: int) -> Decimal:
    """The j-th resting buy of a symbol: below the price, 0.10 apart."""
    return START_PRICE - Decimal(1) - PRICE_STEP * 10 * j


async def place_all(worker: StrategyWorker | None, env: LiveEnvironment, symbol: str, count: int, tag: str) -> None:
    """``count`` resting buys below the price; with a worker exactly as the daemon does (intent durable first)."""
    for j in range(count):
        price = order_price(j)
        if worker is None:
            cid = f"ext-{tag}-{j}"
            await env.create_order(OrderRequest(cid, symbol, Side.BUY, OrderType.LIMIT, ORDER_AMOUNT, price))
            continue
        ledger = worker.ledger
        cid = client_order_id(worker.prefix, ledger.next_sequence())
        req = OrderRequest(cid, symbol, Side.BUY, OrderType.LIMIT, ORDER_AMOUNT, price)
        ledger.record_intent(req, wall_ms(), f"bench:{j}")
        await worker.persist("order intent")
        placed = await env.create_order(req)
        ledger.on_order_event(cid, OrderEvent.SUBMIT_ACK, wall_ms(), placed.exchange_order_id)
        await worker.persist("order sent")


def spread(total: int, parts: int) -> list[int]:
    """``total`` split over ``parts`` as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def endpoint(key: tuple[str, str]) -> str:
    method, path = key
    name = path.removeprefix("/api/v3/")
    return name if method == "GET" else f"{method} {name}"


async def one_pass(
    monitor: CapturingMonitor, env: TimedLiveEnvironment, sim: ExchangeSimulator, trigger: str
) -> dict[str, Any]:
    """One pass; ``trigger`` "startup" reads every symbol, "schedule" only those with something to catch up."""
    before, spent_before = Counter(sim.request_counts), Counter(env.spent_ns)
    t0 = time.perf_counter_ns()
    report = await monitor.reconcile(trigger)
    wall = time.perf_counter_ns() - t0
    requests = Counter({endpoint(k): v for k, v in (sim.request_counts - before).items()})
    spent = {k: v / 1e6 for k, v in (env.spent_ns - spent_before).items()}
    return {
        "trigger": trigger,
        "wall_ms": wall / 1e6,
        "pull_ms": monitor.pull_ns / 1e6,
        "rest_ms_by_call": spent,
        "requests": dict(requests),
        "requests_total": sum(requests.values()),
        "corrections": len(report.corrections),
        "external_orders": len(report.external_orders),
        "listed_open": len(monitor.venue.open_orders) if monitor.venue else 0,
        "probed": len(monitor.venue.probed) if monitor.venue else 0,
    }


def outside_money(sim: ExchangeSimulator, workers: Sequence[StrategyWorker]) -> dict[str, Decimal]:
    """Per asset, what the account holds beyond the strategies' claims (external orders' reservations)."""
    claims = total_claims(w.ledger.snapshot() for w in workers)
    return {a: b.total - claims.get(a, Decimal(0)) for a, b in sim.venue.exchange.balances().items()}


async def concurrent_fills(
    monitor: CapturingMonitor, sim: ExchangeSimulator, workers: Sequence[StrategyWorker], seconds: float, rate: float
) -> dict[str, Any]:
    """Passes back to back while orders of ours fill on the exchange at ``rate`` per second (no user stream
    runs here: every fill is found by reconciliation). Wrong corrections: any holdings/capital cut (the
    account holds no outside money and nothing was sold by hand). Then the exchange goes quiet, two passes
    run, and every ledger must equal the exchange to the last unit."""
    stop = asyncio.Event()
    filled = 0
    outside = outside_money(sim, workers)

    async def filler() -> None:
        nonlocal filled
        start = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - start) * rate)  # keep the rate even when passes hog the loop
            ours = [o for o in sim.venue.exchange.open_orders() if not o.client_order_id.startswith("ext-")]
            while filled < due and ours:
                sim.fill(ours.pop(filled * 7919 % len(ours)).client_order_id)
                filled += 1
            await asyncio.sleep(0.005)

    wrong, corrections, passes = 0, 0, 0
    async with asyncio.TaskGroup() as tg:
        tg.create_task(filler())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            report = await monitor.reconcile("schedule")
            passes += 1
            corrections += len(report.corrections)
            wrong += sum(1 for c in report.corrections if isinstance(c, SetHoldings | SetCapital))
        stop.set()
    for _ in range(2):
        report = await monitor.reconcile("startup")
        wrong += sum(1 for c in report.corrections if isinstance(c, SetHoldings | SetCapital))
    unequal = {
        a: (outside.get(a, Decimal(0)), o) for a, o in outside_money(sim, workers).items() if o != outside.get(a, 0)
    }
    return {
        "seconds": seconds,
        "fills": filled,
        "fills_per_s": filled / seconds,
        "passes": passes,
        "corrections": corrections,
        "wrong_corrections": wrong,
        "outside_money": {a: str(v) for a, v in outside.items() if v},
        "books_equal_exchange": not unequal,
        "unequal": {a: [str(x), str(y)] for a, (x, y) in unequal.items()},
    }


def time_diff(workers: Sequence[StrategyWorker], venue: VenueSnapshot, runs: int) -> dict[str, Any]:
    """The pure diff alone on the pulled snapshot (facts built exactly as the monitor builds them)."""
    facts_ns, diff_ns = [], []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        facts = with_applied([facts_of(w) for w in workers], workers, venue)
        t1 = time.perf_counter_ns()
        report = reconcile(facts, venue)
        t2 = time.perf_counter_ns()
        facts_ns.append(t1 - t0)
        diff_ns.append(t2 - t1)
        assert not report.corrections, "the benchmark account should be in agreement"
    diff = asdict(summarize(diff_ns))
    return {
        "diff": diff,
        "facts_of": asdict(summarize(facts_ns)),
        "target_ms": DIFF_TARGET_MS,
        "met": diff["p99_ms"] <= DIFF_TARGET_MS,
    }


async def floor(env: LiveEnvironment, runs: int) -> dict[str, Any]:
    raw_ns, parsed_ns, count = [], [], 0
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        raw = await env.exchange.fetch_open_orders()
        t1 = time.perf_counter_ns()
        count = len(await env.get_open_orders())
        t2 = time.perf_counter_ns()
        raw_ns.append(t1 - t0)
        parsed_ns.append(t2 - t1)
        assert len(raw) == count
    return {
        "orders": count,
        "ccxt_fetch_open_orders": {"first_ms": raw_ns[0] / 1e6, **asdict(summarize(raw_ns))},
        "env_get_open_orders": {"first_ms": parsed_ns[0] / 1e6, **asdict(summarize(parsed_ns))},
    }


async def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    names = symbols(args.symbols)
    changed = Counter[str]()

    async def publish(event: Event) -> None:
        if isinstance(event, LedgerStateChanged):
            changed[event.reason] += 1

    external = spread(args.orders, len(names))[args.strategies :]
    reserved = sum((ORDER_AMOUNT * order_price(j) for count in external for j in range(count)), Decimal(0))
    funding = CAPITAL * min(args.strategies, len(names)) + reserved  # exactly: no outside money
    async with ExchangeSimulator(sim_config(names, funding)) as sim:
        env = TimedLiveEnvironment(
            LiveConfig("binance", "bench", {"http": sim.http_url, "ws": sim.ws_url}, rate_limit=False),
            Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET),
            publish,
            max_failures=5,
            backoff=Backoff(0.2, 2.0),
            rate_limit=False,  # LiveConfig.rate_limit is not read by the environment itself: the Operation passes it
        )
        await env.start()
        with StateDirectory.open(work / "state") as state_dir:
            try:
                workers = []
                for i, symbol in enumerate(names[: args.strategies]):
                    name = f"s{i:02d}"
                    worker = StrategyWorker(
                        strategy=DCA(name, symbol, {"quote_per_buy": "10"}),
                        capital=CAPITAL,
                        env=env,
                        state_file=state_dir.file(strategy_state_name(name)),
                        prefix=order_prefix(OPERATION, name),
                        publish=publish,
                        clock_ms=wall_ms,
                    )
                    worker.load_state()
                    workers.append(worker)
                t0 = time.perf_counter()
                async with asyncio.TaskGroup() as tg:
                    for i, (symbol, count) in enumerate(zip(names, spread(args.orders, len(names)), strict=True)):
                        owner = workers[i] if i < len(workers) else None
                        tg.create_task(place_all(owner, env, symbol, count, str(i)))
                place_s = time.perf_counter() - t0
                print(f"  placed {args.orders} orders in {place_s:.1f} s", file=sys.stderr)
                monitor = CapturingMonitor(env, workers, publish, wall_ms, "five_minute_reconciliation_tick")
                gc.collect()
                triggers = ["startup"] + ["schedule"] * (args.passes - 1)  # the first pass sweeps every symbol
                passes = [await one_pass(monitor, env, sim, trigger) for trigger in triggers]
                print(f"  {args.passes} reconciliation passes: done", file=sys.stderr)
                limited = None
                if args.limited_pass:
                    env.exchange.enableRateLimit = True  # ccxt's own throttle at Binance's request weights
                    limited = {
                        "sweep": await one_pass(monitor, env, sim, "startup"),
                        "quiet": await one_pass(monitor, env, sim, "schedule"),
                    }
                    env.exchange.enableRateLimit = False
                    print("  pass with ccxt's rate limiter: done", file=sys.stderr)
                assert monitor.venue is not None
                diff = time_diff(workers, monitor.venue, args.diff_runs)
                floors = await floor(env, args.floor_runs)
                open_on_exchange = len(sim.state()["open_orders"])
                believed_open = sum(len(w.ledger.snapshot().open_orders) for w in workers)
                concurrent = await concurrent_fills(monitor, sim, workers, args.concurrent_s, args.fill_rate)
                print(
                    f"  {concurrent['passes']} passes under {concurrent['fills']} concurrent fills: done",
                    file=sys.stderr,
                )
            finally:
                await env.close()
    return {
        "params": {
            "orders": args.orders,
            "symbols": args.symbols,
            "strategies": args.strategies,
            "symbols_with_strategies": len({w.symbol for w in workers}),
            "passes": args.passes,
            "diff_runs": args.diff_runs,
        },
        "setup": {
            "placement_s": place_s,
            "open_on_exchange": open_on_exchange,
            "open_in_ledgers": believed_open,
            "ledger_saves": dict(changed),
        },
        "passes": passes,
        "pass_with_ccxt_rate_limiter": limited,
        "concurrent_fills": concurrent,
        "pure_diff": diff,
        "floor": floors,
    }


# -- report ---------------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _passes_table(report: dict[str, Any]) -> list[str]:
    rows = [(str(i), p) for i, p in enumerate(report["passes"], 1)]
    limited = report["pass_with_ccxt_rate_limiter"]
    if limited is not None:
        rows += [("ccxt limiter on, sweep", limited["sweep"]), ("ccxt limiter on, quiet", limited["quiet"])]
    keys = sorted({k for _, p in rows for k in p["requests"]})
    out = [
        "| pass | wall (ms) | REST pull (ms) | of which openOrders / account / myTrades (ms) | lock + facts + diff + "
        "apply (ms) | " + " | ".join(f"`{k}`" for k in keys) + " | requests | probes | corrections |",
        "|---|---:|---:|---|---:|" + "---:|" * len(keys) + "---:|---:|---:|",
    ]
    for name, p in rows:
        label = f"{name} ({p['trigger']})"
        by = p["rest_ms_by_call"]
        calls = " / ".join(_ms(by.get(k, 0.0)) for k in ("openOrders", "account", "myTrades"))
        counts = " | ".join(str(p["requests"].get(k, 0)) for k in keys)
        out.append(
            f"| {label} | {_ms(p['wall_ms'])} | {_ms(p['pull_ms'])} | {calls} | {_ms(p['wall_ms'] - p['pull_ms'])} "
            f"| {counts} | {p['requests_total']} | {p['probed']} | {p['corrections']} |"
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m, fs, prm, st = report["machine"], report["machine"]["filesystem"], report["params"], report["setup"]
    d, fl, cf = report["pure_diff"], report["floor"], report["concurrent_fills"]
    last = report["passes"][-1]
    expected = {"openOrders": 1, "account": 2, "myTrades": prm["symbols_with_strategies"]}
    quiet = {"openOrders": 1, "account": 2}
    o1 = all(p["requests"] == (expected if p["trigger"] == "startup" else quiet) for p in report["passes"])
    out = [
        f"Reconciliation, live path (real ccxt {report['ccxt']} -> simulator on 127.0.0.1): "
        f"{st['open_on_exchange']:,} open orders over {prm['symbols']} symbols, {prm['strategies']} StrategyWorkers "
        f"(one per symbol; {st['open_in_ledgers']:,} orders in their ledgers, "
        f"{last['external_orders']:,} external). Kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), "
        f"Python {m['python']}, load average {report['loadavg']}; state on {fs['fstype']} ({fs['device']}).",
        "",
        *_passes_table(report),
        "",
        "| measurement | p50 (ms) | p99 (ms) | max (ms) | n | target | result |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| pure diff `reconcile(facts, venue)` | {_ms(d['diff']['p50_ms'])} | {_ms(d['diff']['p99_ms'])} "
        f"| {_ms(d['diff']['max_ms'])} | {d['diff']['samples']} | p99 <= {d['target_ms']:.0f} ms "
        f"| {'met' if d['met'] else 'NOT met'} |",
        f"| building the facts (`facts_of` x {prm['strategies']}) | {_ms(d['facts_of']['p50_ms'])} "
        f"| {_ms(d['facts_of']['p99_ms'])} | {_ms(d['facts_of']['max_ms'])} | {d['facts_of']['samples']} | | |",
        f"| floor: bare ccxt `fetch_open_orders()` ({fl['orders']:,} orders) "
        f"| {_ms(fl['ccxt_fetch_open_orders']['p50_ms'])} | {_ms(fl['ccxt_fetch_open_orders']['p99_ms'])} "
        f"| {_ms(fl['ccxt_fetch_open_orders']['max_ms'])} | {fl['ccxt_fetch_open_orders']['samples']} "
        f"| first call {_ms(fl['ccxt_fetch_open_orders']['first_ms'])} ms | |",
        f"| `env.get_open_orders()` (ccxt + parse_order) | {_ms(fl['env_get_open_orders']['p50_ms'])} "
        f"| {_ms(fl['env_get_open_orders']['p99_ms'])} | {_ms(fl['env_get_open_orders']['max_ms'])} "
        f"| {fl['env_get_open_orders']['samples']} | | |",
        "",
        f"REST requests per pass: a sweep (startup, reconnect, every {SWEEP_EVERY}th scheduled pass) makes 1 "
        f"`openOrders` + 2 `account` (before and after the trades: the consistency bracket) + "
        f"{expected['myTrades']} `myTrades` = {sum(expected.values())}; a scheduled pass on a quiet account 3; zero "
        f"per-order probes -> {'O(1) in the number of orders: met' if o1 else 'NOT as expected'}.",
        "",
        f"Under concurrent fills (account funded with exactly the strategies' capital, no user stream: every fill "
        f"found by reconciliation): {cf['passes']} passes in {cf['seconds']:.0f} s while {cf['fills']} orders filled "
        f"({cf['fills_per_s']:.0f}/s): {cf['corrections']} corrections, **{cf['wrong_corrections']} wrong** "
        f"(holdings/capital cuts); afterwards books == exchange: {'yes' if cf['books_equal_exchange'] else 'NO'}.",
    ]
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--orders", type=int, default=1000, help="open orders on the account (default 1000)")
    p.add_argument("--symbols", type=int, default=50, help="markets the orders spread over (default 50)")
    p.add_argument("--strategies", type=int, default=50, help="symbols with a StrategyWorker (default 50)")
    p.add_argument("--passes", type=int, default=5, help="reconciliation passes (default 5)")
    p.add_argument("--diff-runs", type=int, default=50, help="runs of the pure diff (default 50)")
    p.add_argument(
        "--no-limited-pass",
        dest="limited_pass",
        action="store_false",
        help="skip the extra pass with ccxt's rate limiter on (~11 s at the defaults)",
    )
    p.add_argument("--floor-runs", type=int, default=5, help="runs of each floor call (default 5)")
    p.add_argument("--concurrent-s", type=float, default=5.0, help="seconds of passes under fills (default 5)")
    p.add_argument("--fill-rate", type=float, default=50.0, help="concurrent fills per second (default 50)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if not 1 <= args.symbols <= 100 or not 0 <= args.strategies <= args.symbols:
        p.error("need 1 <= --symbols <= 100 and 0 <= --strategies <= --symbols")
    if min(args.orders, args.passes, args.diff_runs, args.floor_runs) < 1:
        p.error("--orders, --passes, --diff-runs and --floor-runs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("reconcile", parse_args(argv), measure, markdown, operation=OPERATION)


if __name__ == "__main__":
    sys.exit(main())
