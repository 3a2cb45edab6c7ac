"""Benchmark: latency from a fill on the exchange to the ledger being durable, on the live path over loopback.

Why: §6.2.1 of the spec makes the private user stream the push path of the daemon -- the exchange fills
an order, ``TradeExecuted`` reaches the StrategyWorker, the fill is applied to the StrategyLedger and made
durable (journal, fsync, rename, directory fsync) and only then ``LedgerStateChanged`` is published. Until
that save is durable a crash loses the fill (reconciliation recovers it later). Target: p99 <= 5 ms from
the fill to the durable ledger on loopback.

Set-up, all real: the project's Binance simulator on 127.0.0.1 (feed paused), a :class:`LiveEnvironment`
(the real ``ccxt.pro.binance``, WebSocket API user data stream), an :class:`EventBus`, and one
StrategyWorker (a DCA strategy that is not trading, so it only applies fills) with its state file in a
real StateDirectory under /var/tmp. The user stream is pumped onto the bus as the Operation does
(``TradeExecuted`` for fills, ``OrderUpdated`` for order updates). The daemon's INFO logging goes to a
file, as it would to the journal.

Each of ``--fills`` (+ ``--warmup``) rounds places one resting limit buy the way the daemon does (intent
durable, ``create_order``, acknowledgement durable), waits until the stream has reported it, then calls
``sim.set_price`` one tick below it: the simulator fills it and pushes the ``executionReport``. Measured
from that call (t0) to the worker publishing ``LedgerStateChanged(reason="fill")``, right after the save
is durable. Breakdown per fill:

* **sim push -> ccxt**: the simulator's writer task, the WebSocket frame over loopback, aiohttp, JSON
  decoding, up to ccxt's ``handle_message`` (hooked on the ccxt instance);
* **ccxt parse**: ``handle_message`` itself (parsing the executionReport, resolving the watch futures);
* **ccxt -> env**: ``watch_my_trades`` returning, ``parse_fill``, the environment's merge queue;
* **bus**: ``TradeExecuted`` through the EventBus to the worker's handler;
* **worker apply + encode**: the lock, ``apply_fill``, the log line, the state snapshot and its encoding
  (up to the hand-off of the save to the store's next batch, ``StateDirectory._enqueue``);
* **-> writer thread**: the hop to the store's writer thread;
* **fsync I/O**: the store's five protocol steps on the writer thread (``StateDirectory.apply``);
* **-> published**: back from the writer thread to the event loop, ``LedgerStateChanged`` published.

Floor: a bare ``save_sync()`` of the same ledger state (``worker.state_snapshot()``) into another state
directory on the same disk, right after each measured fill, so the floor sees the same state size and
the same moment of a noisy disk. The ledger grows by one terminal order per round (its history keeps
500), so later rounds save more; ``--warmup 500`` measures a ledger whose history is full. The simulator
runs in the same process and event loop as the daemon side, as in the project's tests; its own work is
inside "sim push -> ccxt".

Usage: ``python bench/fill_latency.py [--fills 200] [--warmup 10] [--dir /var/tmp] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from common import run_benchmark, wall_ms
from state_save import summarize  # bench/ is sys.path[0] when run as a script

from s1mpled.assembly import strategy_state_name
from s1mpled.bus import EventBus
from s1mpled.config import LiveConfig
from s1mpled.credentials import Credentials
from s1mpled.environments.live import LiveEnvironment
from s1mpled.errors import StateError
from s1mpled.events import Event, LedgerStateChanged, OrderUpdated, Publish, TradeExecuted
from s1mpled.model import ExchangeOrderStatus, Fill, OrderRequest, OrderType, Side
from s1mpled.orders import OrderEvent, client_order_id, order_prefix
from s1mpled.state import protocol
from s1mpled.state.store import StateDirectory, StateFile
from s1mpled.strategies.dca import DCA
from s1mpled.strategy_worker import StrategyWorker
from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSimulator, SimConfig, SimMarket

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "fill_latency.json"
OPERATION = "bench-fill-latency"
TARGET_P99_MS = 5.0
SYMBOL = "BTC/USDT"
START_PRICE = Decimal("30000.00")
PRICE_STEP = Decimal("0.01")
ORDER_AMOUNT = Decimal("0.00100")
STEP_DEADLINE_S = 5.0
SEGMENTS = (
    ("push_to_ccxt", "sim push -> ccxt"),
    ("ccxt_parse", "ccxt parse"),
    ("ccxt_to_env", "ccxt -> env"),
    ("bus", "bus"),
    ("apply", "worker apply + encode"),
    ("to_writer", "-> writer thread"),
    ("fsync_io", "fsync I/O"),
    ("to_published", "-> published"),
)


class TimedStateDirectory(StateDirectory):
    """The real store; remembers when each batch of protocol steps ran on the writer thread."""

    def __init__(self, path: Path, dirfd: int, lockfd: int) -> None:
        super().__init__(path, dirfd, lockfd)
        self.io_ns: list[tuple[int, int]] = []
        self.handoff_ns: list[int] = []

    def _enqueue(self, file: StateFile, write: Any) -> asyncio.Future[StateError | None]:
        self.handoff_ns.append(time.perf_counter_ns())  # the state is encoded: the save joins the next batch
        return super()._enqueue(file, write)

    def apply(self, ops: list[protocol.Op]) -> None:
        t0 = time.perf_counter_ns()
        try:
            super().apply(ops)
        finally:
            self.io_ns.append((t0, time.perf_counter_ns()))


@dataclass
class Probe:
    """Timestamps (perf_counter_ns) of the fill in flight, set by the hooks along the path."""

    set_ns: int = 0
    ccxt: dict[str, tuple[int, int]] = field(default_factory=dict)  # trade id -> handle_message in/out
    env_ns: dict[str, int] = field(default_factory=dict)
    worker_ns: dict[str, int] = field(default_factory=dict)
    durable_ns: int = 0
    durable: asyncio.Event = field(default_factory=asyncio.Event)
    seen_orders: dict[str, set[ExchangeOrderStatus]] = field(default_factory=dict)
    order_seen: asyncio.Event = field(default_factory=asyncio.Event)


def hook_ccxt(exchange: Any, probe: Probe) -> None:
    """Time ccxt's ``handle_message`` for executionReports of trades (must run before the WS client exists)."""
    original: Callable[[Any, Any], Any] = exchange.handle_message

    def timed(client: Any, message: Any) -> Any:
        t_in = time.perf_counter_ns()
        try:
            return original(client, message)
        finally:
            event = message.get("event") if isinstance(message, dict) else None
            if isinstance(event, dict) and event.get("e") == "executionReport" and event.get("x") == "TRADE":
                probe.ccxt[str(event.get("t"))] = (t_in, time.perf_counter_ns())

    exchange.handle_message = timed


async def pump(env: LiveEnvironment, bus: EventBus, probe: Probe) -> None:
    """The Operation's user-stream pump, with a timestamp for each fill and a note of each order update."""
    async for item in env.start_user_data_stream():
        if isinstance(item, Fill):
            probe.env_ns[item.trade_id] = time.perf_counter_ns()
            await bus.publish(TradeExecuted(item))
        else:
            probe.seen_orders.setdefault(item.client_order_id, set()).add(item.status)
            probe.order_seen.set()
            await bus.publish(OrderUpdated(item))


async def wait_until(cond: Callable[[], bool], event: asyncio.Event, what: str) -> None:
    deadline = time.monotonic() + STEP_DEADLINE_S
    while not cond():
        event.clear()
        if cond():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} within {STEP_DEADLINE_S} s")
        try:
            await asyncio.wait_for(event.wait(), left)
        except TimeoutError:
            continue


async def place(worker: StrategyWorker, env: LiveEnvironment, price: Decimal, n: int) -> str:
    """One resting buy, exactly as the daemon places it: intent durable, send, acknowledgement durable."""
    ledger = worker.ledger
    cid = client_order_id(worker.prefix, ledger.next_sequence())
    req = OrderRequest(cid, SYMBOL, Side.BUY, OrderType.LIMIT, ORDER_AMOUNT, price)
    ledger.record_intent(req, wall_ms(), f"bench:{n}")
    await worker.persist("order intent")
    placed = await env.create_order(req)
    ledger.on_order_event(cid, OrderEvent.SUBMIT_ACK, wall_ms(), placed.exchange_order_id)
    await worker.persist("order sent")
    return cid


def breakdown(probe: Probe, trade_id: str, state_dir: TimedStateDirectory) -> dict[str, int]:
    """The fill's segments in ns (its save is the last writer batch that began after the worker got the fill)."""
    c_in, c_out = probe.ccxt[trade_id]
    env_t, work_t = probe.env_ns[trade_id], probe.worker_ns[trade_id]
    io_start, io_end = next((a, b) for a, b in reversed(state_dir.io_ns) if a >= work_t and b <= probe.durable_ns)
    handoff = next(h for h in reversed(state_dir.handoff_ns) if work_t <= h <= io_start)
    return {
        "total": probe.durable_ns - probe.set_ns,
        "push_to_ccxt": c_in - probe.set_ns,
        "ccxt_parse": c_out - c_in,
        "ccxt_to_env": env_t - c_out,
        "bus": work_t - env_t,
        "apply": handoff - work_t,
        "to_writer": io_start - handoff,
        "fsync_io": io_end - io_start,
        "to_published": probe.durable_ns - io_end,
        "not_io": probe.durable_ns - probe.set_ns - (io_end - io_start),
    }


@dataclass(frozen=True)
class Rig:
    """The pieces of one run."""

    sim: ExchangeSimulator
    env: LiveEnvironment
    worker: StrategyWorker
    bus: EventBus
    probe: Probe
    state_dir: TimedStateDirectory


async def one_fill(rig: Rig, n: int) -> dict[str, int]:
    """Place one resting buy, let the stream report it, cross it, wait until the fill is durable."""
    sim, env, worker, bus, probe = rig.sim, rig.env, rig.worker, rig.bus, rig.probe
    price = START_PRICE - PRICE_STEP * (2 * n + 2)
    cid = await place(worker, env, price, n)
    await wait_until(lambda: ExchangeOrderStatus.OPEN in probe.seen_orders.get(cid, set()), probe.order_seen, "NEW")
    await bus.drain()
    probe.durable.clear()
    probe.durable_ns = 0
    fills_before = len(probe.env_ns)
    probe.set_ns = time.perf_counter_ns()
    sim.set_price(SYMBOL, price - PRICE_STEP)  # one public trade below the buy: it fills, the event is pushed
    await asyncio.wait_for(probe.durable.wait(), STEP_DEADLINE_S)
    trade_ids = list(probe.env_ns)[fills_before:]
    if len(trade_ids) != 1:
        raise RuntimeError(f"expected one fill for {cid}, the stream delivered {trade_ids}")
    closed = ExchangeOrderStatus.CLOSED
    await wait_until(lambda: closed in probe.seen_orders.get(cid, set()), probe.order_seen, "fill report")
    await bus.drain()
    return breakdown(probe, trade_ids[0], rig.state_dir)


class Floor:
    """Bare ``save_sync()`` of the worker's state, one after each measured fill: same state, same disk moment."""

    def __init__(self, root: Path) -> None:
        self._dir = StateDirectory.open(root)
        self._file = self._dir.file("floor.state.json")
        self._file.load()
        self.samples: list[int] = []

    def sample(self, state: Any) -> None:
        t0 = time.perf_counter_ns()
        self._file.save_sync(state)
        self.samples.append(time.perf_counter_ns() - t0)

    def close(self) -> None:
        self._dir.close()


def make_worker(env: LiveEnvironment, state_dir: StateDirectory, publish: Publish) -> StrategyWorker:
    worker = StrategyWorker(
        strategy=DCA("dca", SYMBOL, {"quote_per_buy": "10"}),
        capital=Decimal("1000000"),
        env=env,
        state_file=state_dir.file(strategy_state_name("dca")),
        prefix=order_prefix(OPERATION, "dca"),
        publish=publish,
        clock_ms=wall_ms,
    )
    worker.load_state()
    return worker


async def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    probe = Probe()

    async def publish(event: Event) -> None:
        if isinstance(event, LedgerStateChanged) and event.reason == "fill":
            probe.durable_ns = time.perf_counter_ns()
            probe.durable.set()

    market = SimMarket(SYMBOL, START_PRICE, Decimal("0.0005"), Decimal("1"), PRICE_STEP, Decimal("0.00001"))
    config = SimConfig(feed_paused=True, markets=(market,), balances={"USDT": Decimal("10000000")})
    async with ExchangeSimulator(config) as sim:
        env = LiveEnvironment(
            LiveConfig("binance", "bench", {"http": sim.http_url, "ws": sim.ws_url}, rate_limit=False),
            Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET),
            publish,
            max_failures=5,
            heartbeat_s=60.0,
            rate_limit=False,
        )
        await env.start()
        hook_ccxt(env.exchange, probe)
        state_dir = TimedStateDirectory.open(work / "state")
        assert isinstance(state_dir, TimedStateDirectory)
        floor = Floor(work / "floor")
        try:
            worker = make_worker(env, state_dir, publish)
            bus = EventBus()

            async def on_trade(event: TradeExecuted) -> None:
                probe.worker_ns[event.fill.trade_id] = time.perf_counter_ns()
                await worker.on_trade(event)

            bus.subscribe(TradeExecuted, on_trade, name="dca.TRADE_EXECUTED")
            bus.subscribe(OrderUpdated, worker.on_order, name="dca.ORDER_UPDATED")
            samples: list[dict[str, int]] = []
            sizes: list[int] = []
            state_path = state_dir.path / strategy_state_name("dca")
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(bus.run()), tg.create_task(pump(env, bus, probe))]
                await wait_subscribed(sim)
                gc.collect()
                rig = Rig(sim, env, worker, bus, probe, state_dir)
                for n in range(args.warmup + args.fills):
                    sample = await one_fill(rig, n)
                    state = worker.state_snapshot()
                    floor.sample(state)  # blocks the loop on purpose: nothing else may run meanwhile
                    if n >= args.warmup:
                        samples.append(sample)
                        sizes.append(state_path.stat().st_size)
                    else:
                        floor.samples.clear()
                for task in tasks:
                    task.cancel()
        finally:
            floor.close()
            state_dir.close()
            await env.close()
    return summarize_run(samples, sizes, {"latency": asdict(summarize(floor.samples))}, args)


async def wait_subscribed(sim: ExchangeSimulator) -> None:
    deadline = time.monotonic() + STEP_DEADLINE_S
    while sim.hub.counts()["user"] < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the user data stream did not subscribe")
        await asyncio.sleep(0.01)


def summarize_run(
    samples: list[dict[str, int]], sizes: list[int], floor: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    total = asdict(summarize([s["total"] for s in samples]))
    segments = {key: asdict(summarize([s[key] for s in samples])) for key, _ in (*SEGMENTS, ("not_io", ""))}
    slow = sorted(samples, key=lambda s: s["total"])[-max(1, len(samples) // 100) :]
    return {
        "params": {"fills": args.fills, "warmup": args.warmup},
        "fill_to_durable": total,
        "target_p99_ms": TARGET_P99_MS,
        "met": total["p99_ms"] <= TARGET_P99_MS,
        "segments": segments,
        "slowest_1pct": [{k: v / 1e6 for k, v in s.items()} for s in slow],
        "state_bytes": {"first": sizes[0], "last": sizes[-1]},
        "samples_ms": [
            {"state_bytes": b, **{k: v / 1e6 for k, v in s.items()}} for s, b in zip(samples, sizes, strict=True)
        ],
        "floor_save_sync": floor,
    }


# -- report ---------------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def markdown(report: dict[str, Any]) -> str:
    m, fs = report["machine"], report["machine"]["filesystem"]
    t, fl = report["fill_to_durable"], report["floor_save_sync"]
    lat = fl["latency"]
    out = [
        f"Fill -> durable ledger, live path (real ccxt {report['ccxt']} user stream from the simulator on "
        f"127.0.0.1), {t['samples']} fills one at a time after {report['params']['warmup']} warm-up; state "
        f"{report['state_bytes']['first']:,}-{report['state_bytes']['last']:,} B on {fs['fstype']} ({fs['device']}, "
        f"{fs['options']}). Kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"load average {report['loadavg']}.",
        "",
        "| segment | p50 (ms) | p99 (ms) | mean (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in SEGMENTS:
        s = report["segments"][key]
        out.append(f"| {label} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | {_ms(s['mean_ms'])} | {_ms(s['max_ms'])} |")
    out += [
        f"| **fill -> ledger durable (total)** | **{_ms(t['p50_ms'])}** | **{_ms(t['p99_ms'])}** "
        f"| {_ms(t['mean_ms'])} | {_ms(t['max_ms'])} |",
        f"| everything but the fsync I/O (total - fsync I/O) | {_ms(report['segments']['not_io']['p50_ms'])} "
        f"| {_ms(report['segments']['not_io']['p99_ms'])} | {_ms(report['segments']['not_io']['mean_ms'])} "
        f"| {_ms(report['segments']['not_io']['max_ms'])} |",
        f"| floor: bare `save_sync()` of the same ledger state, after each fill | {_ms(lat['p50_ms'])} "
        f"| {_ms(lat['p99_ms'])} | {_ms(lat['mean_ms'])} | {_ms(lat['max_ms'])} |",
        "",
        f"Target p99 <= {report['target_p99_ms']:.0f} ms: **{'met' if report['met'] else 'NOT met'}** "
        f"(p99 {_ms(t['p99_ms'])} ms; the floor alone is p99 {_ms(lat['p99_ms'])} ms). "
        "Segment percentiles are per segment, so they do not add up to the total's.",
    ]
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--fills", type=int, default=200, help="measured fills (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="fills before measuring (default 10)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.fills < 1 or args.warmup < 0:
        p.error("--fills must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("fill_latency", parse_args(argv), measure, markdown, operation=OPERATION)


if __name__ == "__main__":
    sys.exit(main())
