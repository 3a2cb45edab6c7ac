"""Benchmark: ticks/s and fills/s through bus -> StrategyWorker -> ledger -> durable store, in paper mode.

Why: every fill the daemon applies is made durable (journal, fsync, rename, directory fsync) before the
next decision, and so is every order intent and, in paper mode, every move of the simulated exchange. So
the daemon's throughput is set by how many durable saves the disk allows and how well saves coalesce
(group commit), not by Python. This script runs a real :class:`~s1mpled.operation.Operation` in this
process -- the same A -> B -> C code path as ``s1mpled run`` -- with:

* a tiny tick interval (``--tick``, default 1ms) and a replayed zig-zag price (default) that sweeps two
  50-level grids with 0.02 % spacing up and down, so nearly every tick fills something;
* an :class:`EventBus` subclass that timestamps each ``TradeExecuted`` as it enters the bus and each
  ``LedgerStateChanged`` as the worker publishes it -- which happens right after the ledger's save is
  durable -- plus a subscriber that timestamps when a MonitorWorker would see it.

Over ``--seconds`` (default 20) after the phase becomes "trading" it reports ticks, fills, orders, state
saves requested vs writes vs fsyncs (``StateDirectory.stats``), fsyncs per second, CPU, and the p50/p99
latency from a fill entering the bus to its ledger being durable. Floor, in the same run: a bare
``save_sync()`` loop of the very states the run ended with (the fsyncs/s this disk allows).

Everything lives in a temp dir under /var/tmp (not /tmp, which may be tmpfs where fsync is free).

Usage: ``python bench/throughput.py [--seconds S] [--tick 1ms] [--feed replay|synthetic] [--dir PARENT]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from common import make_workdir, write_report
from state_save import machine_facts, summarize  # bench/ is sys.path[0] when run as a script

from s1mpled.bus import EventBus
from s1mpled.config import Config, load_config, parse_duration
from s1mpled.environments.feeds import ReplayRow, write_replay_csv
from s1mpled.environments.paper import STATE_NAME as PAPER_STATE
from s1mpled.events import Event, LedgerStateChanged, MarketData, TradeExecuted
from s1mpled.logs import setup_logging
from s1mpled.model import Fill
from s1mpled.operation import Operation
from s1mpled.state import codec, protocol
from s1mpled.state.store import LoadResult, StateDirectory
from s1mpled.strategy_worker import StrategyWorker

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "throughput.json"
EXAMPLE_SCHEDULE = REPO / "etc" / "s1mpled" / "schedule.yaml"
START_DEADLINE_S = 60.0
MAX_REPLAY_TICKS = 200_000


@dataclass(frozen=True, slots=True)
class Market:
    """One simulated market and the grid that trades it."""

    symbol: str
    start_price: Decimal
    amount_step: Decimal
    liquidity: Decimal


MARKETS = (
    Market("BTC/USDT", Decimal("50000"), Decimal("0.00001"), Decimal("1")),
    Market("ETH/USDT", Decimal("3000"), Decimal("0.0001"), Decimal("10")),
)
PRICE_STEP = Decimal("0.01")
LEVELS = 50
SPACING = Decimal("0.0002")
ORDER_QUOTE = Decimal("20")
CAPITAL = Decimal("2000")


# -- the operation under test ---------------------------------------------------------------------------


def zigzag(market: Market, ticks: int, start_ms: int) -> Iterator[ReplayRow]:
    """Down through every grid level and back up, half a spacing per tick, ``ticks`` times."""
    amplitude = LEVELS * SPACING * Decimal("1.05")
    half = int(amplitude / (SPACING / 2)) + 1
    for i in range(ticks):
        pos = i % (2 * half)
        depth = amplitude * min(pos, 2 * half - pos) / half
        yield ReplayRow(start_ms + i, market.symbol, (market.start_price * (1 - depth)).quantize(PRICE_STEP))


def write_replay(path: Path, ticks: int) -> None:
    rows = [row for m in MARKETS for row in zigzag(m, ticks, 1_700_000_000_000)]
    rows.sort(key=lambda r: r.timestamp_ms)  # stable: one batch per timestamp, one row per market
    path.write_text(write_replay_csv(rows))


def config_text(state_dir: Path, tick: str, replay: Path | None) -> str:
    markets = "".join(
        f"    {m.symbol}:\n"
        f'      start_price: "{m.start_price}"\n'
        '      volatility: "0.0005"\n'
        f'      liquidity: "{m.liquidity}"\n'
        f'      price_step: "{PRICE_STEP}"\n'
        f'      amount_step: "{m.amount_step}"\n'
        for m in MARKETS
    )
    strategies = "".join(
        f"  - name: grid-{m.symbol.split('/')[0].lower()}\n"
        "    class: s1mpled.strategies.grid:Grid\n"
        f"    symbol: {m.symbol}\n"
        f'    capital: "{CAPITAL}"\n'
        f'    params: {{levels: {LEVELS}, spacing: "{SPACING}", order_quote: "{ORDER_QUOTE}"}}\n'
        for m in MARKETS
    )
    return (
        "operation: bench-tput\nmode: paper\n"
        f"state_dir: {state_dir}\ncontrol_socket: {state_dir.parent / 'control.sock'}\n"
        "schedule: schedule.yaml\nlog_level: info\nshutdown_timeout: 60s\n"
        "paper:\n  seed: 7\n"
        f"  tick_interval: {tick}\n"
        '  fee_rate: "0.001"\n  balances:\n    USDT: "100000"\n'
        f"  replay_csv: {replay if replay is not None else 'null'}\n"
        f"  markets:\n{markets}strategies:\n{strategies}"
    )


def write_config(work: Path, tick: str, feed: str, seconds: float) -> tuple[Config, int | None]:
    """The config (and the replay file it names, with its number of ticks) in ``work``."""
    shutil.copyfile(EXAMPLE_SCHEDULE, work / "schedule.yaml")
    replay, ticks = None, None
    if feed == "replay":
        replay, ticks = work / "zigzag.csv", min(MAX_REPLAY_TICKS, int(seconds / parse_duration(tick) * 1.5) + 1_000)
        write_replay(replay, ticks)
    path = work / "s1mpled.yaml"
    path.write_text(config_text(work / "state", tick, replay))
    return load_config(path, env={}), ticks


# -- the probe ------------------------------------------------------------------------------------------


class Probe:
    """Counts events and times fills: entering the bus -> ledger durable -> seen by a subscriber.

    A worker applies one fill and saves it under its lock, then publishes LedgerStateChanged("fill"),
    so at that moment exactly one more of its pending fills has been applied: that is the one the event
    is about (matched with the ledger's public ``has_applied``).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.two_ticks = asyncio.Event()  # every market has had two price updates
        self.active = False
        self.durable_ns: list[int] = []
        self.observed_ns: list[int] = []
        self._workers: list[StrategyWorker] = []
        self._pending: dict[str, dict[str, int]] = {}  # strategy -> trade id -> ns it entered the bus
        self._tagged: dict[int, tuple[LedgerStateChanged, int]] = {}  # id(event) -> (event, entered ns)

    def start(self, workers: list[StrategyWorker]) -> None:
        self._workers = workers
        self._pending = {w.name: {} for w in workers}
        self.active = True

    def stop(self) -> None:
        self.active = False

    def on_publish(self, event: Event, now: int) -> None:
        self.counts[event.TOPIC] += 1
        if isinstance(event, MarketData):
            self.counts[f"{event.TOPIC}:{event.tick.symbol}"] += 1
            if self.counts[event.TOPIC] >= 2 * len(MARKETS):
                self.two_ticks.set()
        elif isinstance(event, TradeExecuted) and self.active:
            self._entered(event.fill, now)
        elif isinstance(event, LedgerStateChanged):
            self.counts[f"{event.TOPIC}:{event.reason}"] += 1
            self._durable(event, now)

    def _entered(self, fill: Fill, now: int) -> None:
        for w in self._workers:
            if fill.client_order_id.startswith(w.prefix):
                if not w.ledger.has_applied(fill.trade_id):
                    self._pending[w.name].setdefault(fill.trade_id, now)
                return

    def _durable(self, event: LedgerStateChanged, now: int) -> None:
        pending = self._pending.get(event.strategy)
        worker = next((w for w in self._workers if w.name == event.strategy), None)
        if not pending or worker is None:
            return
        applied = [tid for tid in pending if worker.ledger.has_applied(tid)]
        if event.reason != "fill":  # applied by someone else (reconciliation): not a stream fill
            for tid in applied:
                del pending[tid]
            return
        if applied:
            entered = pending.pop(applied[0])
            for tid in applied[1:]:
                del pending[tid]
            self.durable_ns.append(now - entered)
            self._tagged[id(event)] = (event, entered)

    def on_observed(self, event: LedgerStateChanged) -> None:
        tagged = self._tagged.pop(id(event), None)
        if tagged is not None and tagged[0] is event:
            self.observed_ns.append(time.perf_counter_ns() - tagged[1])


class TimedBus(EventBus):
    """The daemon's bus, with every publish shown to the probe first (timestamp before any queueing)."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self._probe = probe

    async def publish(self, event: Event) -> None:
        self._probe.on_publish(event, time.perf_counter_ns())
        await super().publish(event)


# -- measuring ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run: its tick interval, window length, and whether the window waits for the start-up burst."""

    key: str
    label: str
    tick: str
    seconds: float
    warm_up: bool  # start the window once the grids' initial placements are handled


class WriterMeter:
    """Times the state directory's ``apply`` -- the file-system work of every save, on its writer thread.

    Busy close to 100 % of the wall time means the daemon is bound by the disk's fsync rate.
    """

    def __init__(self, directory: StateDirectory) -> None:
        self.busy_s = 0.0
        inner = directory.apply

        def timed(ops: list[protocol.Op]) -> None:
            t0 = time.perf_counter()
            try:
                inner(ops)
            finally:
                self.busy_s += time.perf_counter() - t0

        directory.apply = timed  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Sample:
    """The counters at one instant of the run."""

    t_s: float
    cpu_s: float
    writer_busy_s: float
    saves_requested: int
    writes: int
    fsyncs: int
    counts: dict[str, int]
    state_bytes: dict[str, int]


def sample(op: Operation, probe: Probe, meter: WriterMeter) -> Sample:
    c = op.components
    assert c is not None
    directory = c.workers[0].state_file.directory
    s = directory.stats
    files = [w.state_file.name for w in c.workers] + [PAPER_STATE]
    return Sample(
        t_s=time.perf_counter(),
        cpu_s=time.process_time(),
        writer_busy_s=meter.busy_s,
        saves_requested=s.saves_requested,
        writes=s.writes,
        fsyncs=s.fsyncs,
        counts=dict(probe.counts),
        state_bytes={name: record_size(directory.path / name) for name in files},
    )


def record_size(path: Path) -> int:
    """Bytes of a state file's newest record; between a save's two renames only its journal exists."""
    for _ in range(100):
        for candidate in (path, path.with_name(path.name + ".journal")):
            with contextlib.suppress(FileNotFoundError):
                return candidate.stat().st_size
    raise FileNotFoundError(path)


def delta(a: Sample, b: Sample) -> dict[str, Any]:
    """What happened between two samples, as totals and rates."""
    wall = b.t_s - a.t_s
    counts = {k: b.counts.get(k, 0) - a.counts.get(k, 0) for k in b.counts}
    ticks = counts.get(MarketData.TOPIC, 0) // len(MARKETS)
    fills = counts.get(f"{LedgerStateChanged.TOPIC}:fill", 0)
    orders = counts.get(f"{LedgerStateChanged.TOPIC}:order intent", 0)
    saves, writes, fsyncs = b.saves_requested - a.saves_requested, b.writes - a.writes, b.fsyncs - a.fsyncs
    return {
        "seconds": wall,
        "ticks": ticks,
        "fills": fills,
        "orders_placed": orders,
        "saves_requested": saves,
        "writes": writes,
        "fsyncs": fsyncs,
        "per_s": {
            "ticks": ticks / wall,
            "fills": fills / wall,
            "orders_placed": orders / wall,
            "saves_requested": saves / wall,
            "writes": writes / wall,
            "fsyncs": fsyncs / wall,
        },
        "cpu_percent_of_one_core": 100 * (b.cpu_s - a.cpu_s) / wall,
        "writer_busy_percent": 100 * (b.writer_busy_s - a.writer_busy_s) / wall,
        "ms_per_write": 1000 * (b.writer_busy_s - a.writer_busy_s) / max(1, writes),
        "events": dict(sorted(counts.items())),
    }


async def wait_trading(op: Operation, run: asyncio.Task[None]) -> None:
    deadline = time.perf_counter() + START_DEADLINE_S
    while op.phase != "trading":
        if run.done():
            raise RuntimeError(f"the operation ended in phase {op.phase} before trading")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not trading after {START_DEADLINE_S} s (phase {op.phase})")
        await asyncio.sleep(0.005)


async def warm_up(op: Operation, probe: Probe) -> float:
    """Wait for two ticks and for the bus to handle them (the grids' initial placements); returns seconds."""
    t0 = time.perf_counter()
    async with asyncio.timeout(START_DEADLINE_S):
        await probe.two_ticks.wait()
        await op.bus.drain()
    return time.perf_counter() - t0


def queue_depths(bus: EventBus) -> dict[str, dict[str, int]]:
    """Per topic: the deepest any subscriber queue got during the run, and the deepest at the end."""
    out: dict[str, dict[str, int]] = {}
    for sub in bus.statistics().subscribers:
        row = out.setdefault(sub.topic, {"max_depth": 0, "depth_at_end": 0})
        row["max_depth"] = max(row["max_depth"], sub.max_depth)
        row["depth_at_end"] = max(row["depth_at_end"], sub.depth)
    return out


@dataclass(frozen=True, slots=True)
class RunResult:
    """The samples of one run, the probe's latencies and what the bus queues did."""

    start: Sample
    middle: Sample
    end: Sample
    warm_up_s: float
    durable_ns: list[int]
    observed_ns: list[int]
    queues: dict[str, dict[str, int]]
    stop_s: float
    generations: dict[str, int]
    start_state: dict[str, Any]  # the largest strategy state when the window opened (for the floor)
    market_data_total: int


async def run_operation(config: Config, spec: RunSpec) -> RunResult:
    """Start the operation, measure ``spec.seconds`` of trading, stop it the way SIGTERM does."""
    probe = Probe()
    op = Operation(config)
    op.bus = TimedBus(probe)  # before run(): every component publishes through op.bus.publish
    op.bus.subscribe(LedgerStateChanged, probe.on_observed, name="bench.latency")
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(op.run())
        await wait_trading(op, run)
        assert op.components is not None
        workers = op.components.workers
        meter = WriterMeter(workers[0].state_file.directory)
        warmed = await warm_up(op, probe) if spec.warm_up else 0.0
        probe.start(workers)
        start = sample(op, probe, meter)
        start_state = max((w.state_snapshot() for w in workers), key=lambda st: len(codec.encode_payload(st)))
        await asyncio.sleep(spec.seconds / 2)
        middle = sample(op, probe, meter)
        await asyncio.sleep(spec.seconds / 2)
        end = sample(op, probe, meter)
        probe.stop()
        durable, observed, queues = list(probe.durable_ns), list(probe.observed_ns), queue_depths(op.bus)
        t0 = time.perf_counter()
        op.request_stop()
    stop_s = time.perf_counter() - t0
    generations = {w.state_file.name: w.state_file.generation for w in workers}
    market_data = probe.counts.get(MarketData.TOPIC, 0)
    return RunResult(
        start, middle, end, warmed, durable, observed, queues, stop_s, generations, start_state, market_data
    )


def load_states(state_dir: Path, names: list[str]) -> dict[str, LoadResult]:
    """Open the state directory afresh and load every file: what a restart would recover."""
    with StateDirectory.open(state_dir, create=False) as d:
        return {name: d.file(name).load() for name in names}


def save_sync_floor(root: Path, state: Any, seconds: float) -> dict[str, Any]:
    """A bare ``save_sync()`` loop of ``state`` for ``seconds``: the durable saves/s this disk allows."""
    with StateDirectory.open(root) as d:
        f = d.file("floor.state.json")
        f.load()
        f.save_sync(state)  # the main file exists from now on: every save below rotates .prev
        fsyncs0, samples = d.stats.fsyncs, []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter_ns()
            f.save_sync(state)
            samples.append(time.perf_counter_ns() - t0)
        fsyncs = d.stats.fsyncs - fsyncs0
        record_bytes = (root / "floor.state.json").stat().st_size
    total_s = sum(samples) / 1e9
    return {
        "record_bytes": record_bytes,
        "saves": len(samples),
        "saves_per_s": len(samples) / total_s,
        "fsyncs": fsyncs,
        "fsyncs_per_s": fsyncs / total_s,
        "latency": asdict(summarize(samples)),
    }


def _lat(samples: list[int]) -> dict[str, Any] | None:
    return asdict(summarize(samples)) if samples else None


def measure_run(work: Path, spec: RunSpec, feed: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One operation run in ``work``: its JSON-ready result, and the states it ended with (for the floors)."""
    work.mkdir()
    config, replay_ticks = write_config(work, spec.tick, feed, spec.seconds)
    with (work / "daemon.log").open("w") as log_stream:
        setup_logging(config.log_level, operation=config.operation, stream=log_stream, journald=False)
        gc.collect()
        result = asyncio.run(run_operation(config, spec))
        setup_logging("warning", stream=sys.stderr, journald=False)  # detach from the file before closing it
    with (work / "daemon.log").open() as log_stream:
        log_lines = sum(1 for _ in log_stream)
    names = [*result.generations, PAPER_STATE]
    loaded = load_states(config.state_dir, names)
    largest = max(result.generations, key=lambda n: (config.state_dir / n).stat().st_size)
    states = {
        "strategy_start": result.start_state,
        "strategy_end": loaded[largest].state,
        "exchange_end": loaded[PAPER_STATE].state,
    }
    report = {
        "label": spec.label,
        "tick": spec.tick,
        "requested_ticks_per_s": 1 / parse_duration(spec.tick),
        "warm_up_s": result.warm_up_s,
        "window": delta(result.start, result.end),
        "first_half": delta(result.start, result.middle),
        "second_half": delta(result.middle, result.end),
        "latency": {"fill_to_durable": _lat(result.durable_ns), "fill_to_observed": _lat(result.observed_ns)},
        "queues": result.queues,
        "state_bytes_start": result.start.state_bytes,
        "state_bytes_end": result.end.state_bytes,
        "stop_s": result.stop_s,
        "generations_at_stop": result.generations,
        "reload_matches": all(loaded[n].generation == g for n, g in result.generations.items()),
        "market_data_events_total": result.market_data_total,
        "replay_ticks": replay_ticks,
        "replay_exhausted": replay_ticks is not None and result.market_data_total >= replay_ticks * len(MARKETS),
        "log_lines": log_lines,
    }
    return report, states


# -- report ---------------------------------------------------------------------------------------------


def _fmt_lat(lat: dict[str, Any] | None) -> str:
    if lat is None:
        return "no samples"
    return f"{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} / {lat['max_ms']:.1f} (n={lat['samples']:,})"


ROWS = (
    ("ticks", "ticks (price updates per market)"),
    ("fills", "fills applied (ledger durable)"),
    ("orders_placed", "orders placed"),
    ("saves_requested", "state saves requested"),
    ("writes", "state writes"),
    ("fsyncs", "fsyncs (file + directory)"),
)


def _rates_table(sat: dict[str, Any], paced: dict[str, Any]) -> list[str]:
    w, h1, h2, pw = sat["window"], sat["first_half"], sat["second_half"], paced["window"]
    out = [
        f"| | {sat['tick']} ticks: total | /s | 1st half /s | 2nd half /s | {paced['tick']} ticks, after warm-up: /s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        out.append(
            f"| {label} | {w[key]:,} | {w['per_s'][key]:,.1f} | {h1['per_s'][key]:,.1f} | {h2['per_s'][key]:,.1f} "
            f"| {pw['per_s'][key]:,.1f} |"
        )
    cpu = [r["cpu_percent_of_one_core"] for r in (w, h1, h2, pw)]
    out.append(f"| CPU of this process (% of one core) | | {cpu[0]:.0f} | {cpu[1]:.0f} | {cpu[2]:.0f} | {cpu[3]:.0f} |")
    busy = [r["writer_busy_percent"] for r in (w, h1, h2, pw)]
    out.append(f"| state writer thread busy (%) | | {busy[0]:.0f} | {busy[1]:.0f} | {busy[2]:.0f} | {busy[3]:.0f} |")
    per = [r["ms_per_write"] for r in (w, h1, h2, pw)]
    out.append(f"| ms per write (writer busy / writes) | | {per[0]:.2f} | {per[1]:.2f} | {per[2]:.2f} | {per[3]:.2f} |")
    coalesced = [max(0.0, 100 * (1 - r["writes"] / max(1, r["saves_requested"]))) for r in (w, h1, h2, pw)]
    out.append(
        f"| saves coalesced by group commit (%) | | {coalesced[0]:.1f} | {coalesced[1]:.1f} | {coalesced[2]:.1f} "
        f"| {coalesced[3]:.1f} |"
    )
    return out


def _load(report: dict[str, Any]) -> str:
    la = report["load_average_1_5_15"]
    return f"1-min load average {la['start'][0]:.2f} at start, {la['end'][0]:.2f} at end"


def markdown(report: dict[str, Any]) -> str:
    m, fs = report["machine"], report["machine"]["filesystem"]
    sat, paced = report["runs"]["saturated"], report["runs"]["paced"]
    out = [
        f"Throughput of an in-process paper Operation on **{fs['fstype']}** ({fs['device']} at {fs['mountpoint']}); "
        f"kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}; {_load(report)}.",
        f"{len(MARKETS)} grids x {LEVELS} levels, spacing {SPACING}, feed {report['params']['feed']}, "
        f"log level info to a file. Saturated run: {sat['window']['seconds']:.1f} s from phase trading, "
        f"tick_interval {sat['tick']} (asks for {sat['requested_ticks_per_s']:,.0f}/s). Paced run: "
        f"{paced['window']['seconds']:.1f} s after a {paced['warm_up_s']:.1f} s warm-up (initial placements), "
        f"tick_interval {paced['tick']}.",
        "",
        *_rates_table(sat, paced),
        "",
        "| latency, fill enters the bus -> (ms) | p50 / p99 / max |",
        "|---|---:|",
    ]
    for run in (sat, paced):
        lat = run["latency"]
        out.append(f"| {run['tick']}: ledger save durable (LedgerStateChanged published) | "
                   f"{_fmt_lat(lat['fill_to_durable'])} |")  # fmt: skip
        out.append(f"| {run['tick']}: a LedgerStateChanged subscriber sees it | {_fmt_lat(lat['fill_to_observed'])} |")
    out += ["", "| bus queue depth (deepest subscriber) | max during run | at end of window |", "|---|---:|---:|"]
    for run in (sat, paced):
        for topic, q in sorted(run["queues"].items()):
            if q["max_depth"]:
                out.append(f"| {run['tick']}: {topic} | {q['max_depth']:,} | {q['depth_at_end']:,} |")
    out.append("")
    for run in (sat, paced):
        sizes = ", ".join(f"{n} {a:,} -> {run['state_bytes_end'][n]:,} B" for n, a in run["state_bytes_start"].items())
        out.append(
            f"{run['tick']} run: state files over the window: {sizes}. SIGTERM path took {run['stop_s']:.2f} s; "
            f"generations reloaded from disk match: {'yes' if run['reload_matches'] else '**NO**'}."
            + (" WARNING: the replay ran out during the window." if run["replay_exhausted"] else "")
        )
    out += [
        "",
        "| floor: bare `save_sync()` loop of the same state | record bytes | saves/s | fsyncs/s | p50 / p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in report["floors"].values():
        lat = f["latency"]
        out.append(
            f"| {f['label']} | {f['record_bytes']:,} | {f['saves_per_s']:,.1f} | {f['fsyncs_per_s']:,.1f} "
            f"| {lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} |"
        )
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=20.0, help="saturated run: window after trading (default 20)")
    p.add_argument("--tick", default="1ms", help="saturated run: paper tick_interval (default 1ms)")
    p.add_argument("--paced-seconds", type=float, default=10.0, help="paced run: window after warm-up (default 10)")
    p.add_argument("--paced-tick", default="200ms", help="paced run: paper tick_interval (default 200ms)")
    p.add_argument("--feed", choices=("replay", "synthetic"), default="replay", help="zig-zag replay or random walk")
    p.add_argument("--floor-seconds", type=float, default=1.5, help="each save_sync floor loop (default 1.5)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    for name in ("tick", "paced_tick"):
        try:
            parse_duration(getattr(args, name))
        except ValueError as exc:
            p.error(f"--{name.replace('_', '-')}: {exc}")
    if min(args.seconds, args.paced_seconds, args.floor_seconds) <= 0:
        p.error("--seconds, --paced-seconds and --floor-seconds must be > 0")
    return args


def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    specs = (
        RunSpec("saturated", "as fast as the store allows", args.tick, args.seconds, warm_up=False),
        RunSpec("paced", "below saturation", args.paced_tick, args.paced_seconds, warm_up=True),
    )
    runs, states = {}, {}
    for spec in specs:
        runs[spec.key], states[spec.key] = measure_run(work / spec.key, spec, args.feed)
        print(f"  {spec.key} run ({spec.tick} ticks): done", file=sys.stderr)
    st = states["saturated"]
    floors = {
        key: {"label": label, **save_sync_floor(work / f"floor-{key}", st[key], args.floor_seconds)}
        for key, label in (
            ("strategy_start", "largest strategy state, start of the saturated window"),
            ("strategy_end", "largest strategy state, end of the saturated window"),
            ("exchange_end", "paper exchange state, end of the saturated window"),
        )
    }
    print("  floors: done", file=sys.stderr)
    return {"params": {"feed": args.feed, "levels": LEVELS, "spacing": SPACING}, "runs": runs, "floors": floors}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, fs = make_workdir("throughput", args.dir)
    started, t0, load_start = int(time.time()), time.perf_counter(), os.getloadavg()
    try:
        results = measure(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "throughput",
        "started_unix": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "machine": machine_facts(fs),
        "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},  # other work on the box skews all this
        **results,
    }
    write_report(args.json, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
