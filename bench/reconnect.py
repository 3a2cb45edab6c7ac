"""Benchmark: how fast the live path is whole again after the exchange's WebSockets come back.

Why: §6.2.3 of the spec -- a dropped stream is retried with exponential backoff and full jitter; the
first success publishes ``CONNECTION_RESTORED``, which triggers a reconciliation because ccxt does not
replay what was pushed while we were away. Until that reconciliation is done the ledgers may miss fills,
so the time from "the exchange is reachable again" to "reconciled" is the window of doubt.

Set-up, all real: the project's Binance simulator on 127.0.0.1 (feed paused), a fresh
:class:`LiveEnvironment` per trial (real ``ccxt.pro.binance``; Backoff(base_s=0.2, cap_s=2.0), i.e. attempt
n waits uniform(0, min(2, 0.2 * 2**n)) s; heartbeat 5 s; max_failures 5) with its three supervised links
(``market``: watch_tickers; ``user-trades`` / ``user-orders``: the WebSocket-API user data stream), an
EventBus with the real ReconciliationMonitor wired to it, and one StrategyWorker (DCA, not trading) with
three resting orders. A "pulse" calls ``sim.set_price`` every ``--pulse-ms`` on ETH/USDT, crossing a large
external resting buy a little at a time, so both the public and the user stream carry an event every
pulse (a link counts as connected only when data arrives; on a quiet account the user stream never does).

Per trial, once all three links are connected: for K = 0 only ``ws_drop`` (every WebSocket killed; the
simulator is "back up" at once), for K > 0 ``ws_refuse`` for K seconds and then ``ws_drop`` (back up K s
later). Measured from the moment it is back up:

* (a) the user stream resubscribed -- the simulator logs ``userDataStream.subscribe.signature``;
* (b) ``ConnectionRestored`` published, per link (published on the first data after reconnecting);
* (c) ``ReconciliationCompleted`` published by the passes those events triggered (first and last);

plus, per link, every failed attempt (the environment's STREAM_FAILED log) with ccxt's own per-URL dial
backoff at that moment, so the measured gaps can be set next to the Backoff ceilings, and whether a
link's supervisor died (its pump task ended) instead of reconnecting.

Usage: ``python bench/reconnect.py [--k 0,1,2,4] [--repeat 2] [--pulse-ms 20] [--dir /var/tmp] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import run_benchmark, wall_ms  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


from s1mpled.assembly import strategy_state_name
from s1mpled.bus import EventBus
from s1mpled.config import LiveConfig
from s1mpled.connection import Backoff
from s1mpled.credentials import Credentials
from s1mpled.environments.live import LiveEnvironment
from s1mpled.events import ConnectionLost, ConnectionRestored, Event, ReconciliationCompleted
from s1mpled.model import OrderRequest, OrderType, Side
from s1mpled.orders import OrderEvent, client_order_id, order_prefix
from s1mpled.reconciliation_monitor import ReconciliationMonitor
from s1mpled.state.store import StateDirectory
from s1mpled.strategies.dca import DCA
from s1mpled.strategy_worker import StrategyWorker
from s1mpled.workers import wire
from s1mpled_sim import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSimulator, SimConfig, SimMarket

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "reconnect.json"
OPERATION = "bench-reconnect"
BACKOFF = Backoff(base_s=0.2, cap_s=2.0)
HEARTBEAT_S = 5.0
MAX_FAILURES = 5
LINKS = ("market", "user-trades", "user-orders")
PULSE_SYMBOL, PULSE_BID, PULSE_PRICE = "ETH/USDT", Decimal("1999.00"), Decimal("1998.99")
HEALTHY_DEADLINE_S = 10.0
RECOVERY_DEADLINE_S = 20.0  # after the simulator is back up
_PUMP = "LiveEnvironment.start_user_data_stream.<locals>.pump"


def ccxt_dial_backoff_s(attempts: int) -> float:
    """ccxt 4.5's own wait before re-dialling a URL after ``attempts`` failed dials (``Exchange.on_error``)."""
    return min(30.0, 0.1 * float(2 ** min(attempts, 10)))


def sim_config() -> SimConfig:
    markets = (
        SimMarket(
            "BTC/USDT", Decimal("30000.00"), Decimal("0.0005"), Decimal("1"), Decimal("0.01"), Decimal("0.00001")
        ),
        # a tiny liquidity: each pulse fills 0.0001 of the external buy, which lasts a million pulses
        SimMarket(
            PULSE_SYMBOL, Decimal("2000.00"), Decimal("0.0005"), Decimal("0.0001"), Decimal("0.01"), Decimal("0.0001")
        ),
    )
    return SimConfig(feed_paused=True, markets=markets, balances={"USDT": Decimal("10000000")})


# -- what happened, with timestamps ---------------------------------------------------------------------


@dataclass
class Journal:
    """Everything a trial observes, stamped with perf_counter_ns."""

    events: list[tuple[int, Event]] = field(default_factory=list)
    failures: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (t, link, ccxt dial backoff)
    subscribed: list[int] = field(default_factory=list)  # the simulator accepted a user data subscription
    market_died: str | None = None

    def since(self, t0: int) -> Journal:
        return Journal(
            [e for e in self.events if e[0] >= t0],
            [f for f in self.failures if f[0] >= t0],
            [s for s in self.subscribed if s >= t0],
            self.market_died,
        )


class LogTap(logging.Handler):
    """Catches the environment's STREAM_FAILED and the simulator's SIM_USER_SUBSCRIBED log records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.journal = Journal()
        self.exchange: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        now, event = time.perf_counter_ns(), getattr(record, "EVENT", None)
        if event == "SIM_USER_SUBSCRIBED":
            self.journal.subscribed.append(now)
        elif event == "STREAM_FAILED" and isinstance(record.args, tuple) and record.args:
            dial = dict(getattr(self.exchange, "ws_dial_backoff", None) or {})
            self.journal.failures.append((now, str(record.args[0]), {k: dict(v) for k, v in dial.items()}))


@contextlib.contextmanager
def tapped(tap: LogTap) -> Iterator[None]:
    loggers = [logging.getLogger("s1mpled.environments.live"), logging.getLogger("s1mpled_sim.ws")]
    for lg in loggers:
        lg.addHandler(tap)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(tap)


# -- one trial ------------------------------------------------------------------------------------------


def make_env(sim: ExchangeSimulator, publish: Callable[[Event], Any]) -> LiveEnvironment:
    return LiveEnvironment(
        LiveConfig("binance", "bench", {"http": sim.http_url, "ws": sim.ws_url}, rate_limit=False),
        Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET),
        publish,
        max_failures=MAX_FAILURES,
        heartbeat_s=HEARTBEAT_S,
        backoff=BACKOFF,
        rate_limit=False,
    )


def make_worker(env: LiveEnvironment, state_dir: StateDirectory, publish: Callable[[Event], Any]) -> StrategyWorker:
    worker = StrategyWorker(
        strategy=DCA("dca", "BTC/USDT", {"quote_per_buy": "10"}),
        capital=Decimal("10000"),
        env=env,
        state_file=state_dir.file(strategy_state_name("dca")),
        prefix=order_prefix(OPERATION, "dca"),
        publish=publish,
        clock_ms=wall_ms,
    )
    worker.load_state()
    return worker


async def pulse(sim: ExchangeSimulator, period_s: float) -> None:
    while True:
        sim.set_price(PULSE_SYMBOL, PULSE_PRICE)
        await asyncio.sleep(period_s)


async def pump_market(env: LiveEnvironment, journal: Journal) -> None:
    """The Operation's market pump; notes a CancelledError nobody asked for (the supervisor died)."""
    try:
        async for _ in env.market_data(("BTC/USDT", PULSE_SYMBOL)):
            pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling() == 0:
            journal.market_died = "CancelledError out of market_data() (nobody cancelled the pump)"
        raise


async def pump_user(env: LiveEnvironment) -> None:
    async for _ in env.start_user_data_stream():
        pass


def alive_links(journal: Journal) -> set[str]:
    """Links whose supervisor still runs (the user links' pumps are tasks inside the environment)."""
    alive = set() if journal.market_died else {"market"}
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        if getattr(coro, "__qualname__", "") == _PUMP and not task.done():
            name = coro.cr_frame.f_locals.get("name") if coro.cr_frame is not None else None
            alive.add(str(name))
    return alive


async def poll_until(cond: Callable[[], bool], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.005)
    return True


@dataclass
class Trial:
    """One fault and recovery: its parameters, the shared pieces, and what was seen at its edges."""

    k: float
    index: int
    sim: ExchangeSimulator
    state_dir: StateDirectory
    tap: LogTap
    pulse_s: float
    t_fault: int = 0
    t_up: int = 0
    healthy: bool = False
    recovered: bool = False
    alive_end: set[str] = field(default_factory=set)
    hub_end: dict[str, int] = field(default_factory=dict)
    hub_after_close: dict[str, int] = field(default_factory=dict)


def recovered(env: LiveEnvironment, trial: Trial, monitor_passes: Callable[[], int], start_passes: int) -> bool:
    """Every link whose supervisor still runs is connected again and every pass it triggered is done."""
    j = trial.tap.journal.since(trial.t_fault)
    alive = alive_links(trial.tap.journal)
    restored = [e for _, e in j.events if isinstance(e, ConnectionRestored)]
    links_back = all(env.links[n].connected for n in alive if n in env.links)
    return bool(alive) and links_back and monitor_passes() - start_passes >= len(restored) and len(restored) > 0


async def run_trial(trial: Trial) -> dict[str, Any]:
    bus = EventBus()
    journal = trial.tap.journal = Journal()

    async def publish(event: Event) -> None:
        journal.events.append((time.perf_counter_ns(), event))
        await bus.publish(event)

    env = make_env(trial.sim, publish)
    await env.start()
    trial.tap.exchange = env.exchange
    worker = make_worker(env, trial.state_dir, publish)
    monitor = ReconciliationMonitor(env, [worker], publish, wall_ms, "five_minute_reconciliation_tick")
    wire(bus, [monitor])
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(bus.run()),
                tg.create_task(pump_market(env, journal)),
                tg.create_task(pump_user(env)),
                tg.create_task(pulse(trial.sim, trial.pulse_s)),
            ]
            trial.healthy = await poll_until(
                lambda: len(env.links) == 3 and all(link.connected for link in env.links.values()), HEALTHY_DEADLINE_S
            )
            if trial.healthy:
                await fault_and_recover(trial, env, monitor)
            trial.hub_end = trial.sim.hub.counts()
            trial.alive_end = alive_links(journal)
            for task in tasks:
                task.cancel()
    finally:
        await env.close()
    await poll_until(lambda: trial.sim.hub.counts()["ws_api"] == 0, 1.0)
    trial.hub_after_close = trial.sim.hub.counts()
    trial.sim.clear_faults()
    return analyse(trial, journal)


async def fault_and_recover(trial: Trial, env: LiveEnvironment, monitor: ReconciliationMonitor) -> None:
    start_passes = monitor.passes
    trial.t_fault = time.perf_counter_ns()
    if trial.k > 0:
        await trial.sim.inject("ws_refuse", seconds=trial.k)
    await trial.sim.inject("ws_drop")
    trial.t_up = trial.t_fault + int(trial.k * 1e9)
    trial.recovered = await poll_until(
        lambda: recovered(env, trial, lambda: monitor.passes, start_passes), trial.k + RECOVERY_DEADLINE_S
    )
    await asyncio.sleep(0.2)  # let a straggling pass or event land in the journal


def _ms_after(t: int | None, t_up: int) -> float | None:
    return None if t is None else (t - t_up) / 1e6


def analyse(trial: Trial, journal: Journal) -> dict[str, Any]:
    j = journal.since(trial.t_fault)
    up = trial.t_up
    restored = {e.stream: t for t, e in reversed(j.events) if isinstance(e, ConnectionRestored)}
    recon = [(t, e) for t, e in j.events if isinstance(e, ReconciliationCompleted)]
    lost = [e.stream for _, e in j.events if isinstance(e, ConnectionLost)]
    fails: dict[str, list[int]] = {n: [t for t, name, _ in j.failures if name == n] for n in LINKS}
    subs_after_up = [s for s in j.subscribed if s >= up - 50_000_000]
    return {
        "k_s": trial.k,
        "trial": trial.index,
        "healthy_before": trial.healthy,
        "recovered": trial.recovered,
        "a_user_resubscribed_ms": _ms_after(subs_after_up[0] if subs_after_up else None, up),
        "user_subscriptions_after_fault": len(j.subscribed),
        "b_restored_ms": {n: _ms_after(restored.get(n), up) for n in LINKS},
        "b_first_restored_ms": _ms_after(min(restored.values()) if restored else None, up),
        "c_first_reconciled_ms": _ms_after(recon[0][0] if recon else None, up),
        "c_last_reconciled_ms": _ms_after(recon[-1][0] if recon else None, up),
        "reconciliation_triggers": [e.trigger for _, e in recon],
        "failures": {n: len(v) for n, v in fails.items()},
        "failure_times_ms": {n: [_ms_after(t, up) for t in v] for n, v in fails.items()},
        "ccxt_dial_backoff_at_failures": [
            {"link": name, "t_ms": _ms_after(t, up), "dial_backoff": dial} for t, name, dial in j.failures
        ],
        "connection_lost": lost,
        "dead_links": sorted(set(LINKS) - trial.alive_end),
        "not_restored": sorted(set(LINKS) - set(restored)),
        "market_died": journal.market_died,
        "hub_before_close": trial.hub_end,
        "hub_after_close": trial.hub_after_close,
    }


# -- set-up ---------------------------------------------------------------------------------------------


async def seed(sim: ExchangeSimulator, state_dir: StateDirectory) -> None:
    """The worker's three resting orders (placed as the daemon does) and the external buy the pulse eats."""

    async def publish(event: Event) -> None:
        return None

    env = make_env(sim, publish)
    await env.start()
    try:
        worker = make_worker(env, state_dir, publish)
        for j in range(3):
            cid = client_order_id(worker.prefix, worker.ledger.next_sequence())
            price = Decimal("25000.00") - Decimal(100) * j
            req = OrderRequest(cid, "BTC/USDT", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
            worker.ledger.record_intent(req, wall_ms(), f"bench:{j}")
            await worker.persist("order intent")
            placed = await env.create_order(req)
            worker.ledger.on_order_event(cid, OrderEvent.SUBMIT_ACK, wall_ms(), placed.exchange_order_id)
            await worker.persist("order sent")
        ext = OrderRequest("ext-pulse", PULSE_SYMBOL, Side.BUY, OrderType.LIMIT, Decimal("100"), PULSE_BID)
        await env.create_order(ext)
    finally:
        await env.close()


async def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    tap = LogTap()
    trials = []
    with tapped(tap):
        async with ExchangeSimulator(sim_config()) as sim:
            with StateDirectory.open(work / "state") as state_dir:
                await seed(sim, state_dir)
                for k in args.k:
                    for i in range(args.repeat):
                        result = await run_trial(Trial(k, i + 1, sim, state_dir, tap, args.pulse_ms / 1000))
                        trials.append(result)
                        print(
                            f"  K={k:g} s trial {i + 1}: live links back={result['recovered']} "
                            f"not restored={result['not_restored'] or '-'} dead={result['dead_links'] or '-'}",
                            file=sys.stderr,
                        )
    return {
        "params": {
            "k_s": args.k,
            "repeat": args.repeat,
            "pulse_ms": args.pulse_ms,
            "backoff": {"base_s": BACKOFF.base_s, "cap_s": BACKOFF.cap_s},
            "heartbeat_s": HEARTBEAT_S,
            "max_failures": MAX_FAILURES,
        },
        "trials": trials,
        "schedule": schedule(trials),
    }


def schedule(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per failed attempt n: the ceilings in force and the measured gaps to the next attempt's failure or to
    the link's restoration (gap = backoff sleep + ccxt's dial backoff + the attempt itself)."""
    gaps: dict[int, list[float]] = {}
    for t in trials:
        for link in LINKS:
            times = [x for x in t["failure_times_ms"][link] if x is not None]
            end = t["b_restored_ms"][link]
            nxt = [*times[1:], end]
            for n, (a, b) in enumerate(zip(times, nxt, strict=True), 1):
                if b is not None:
                    gaps.setdefault(n, []).append((b - a) / 1000)
    rows = []
    for n in sorted(gaps):
        g = gaps[n]
        rows.append(
            {
                "failure": n,
                "link_ceiling_s": BACKOFF.ceiling(n - 1),
                "ccxt_dial_backoff_s": ccxt_dial_backoff_s(n - 1) if n >= 2 else 0.0,
                "gap_min_s": min(g),
                "gap_median_s": statistics.median(g),
                "gap_max_s": max(g),
                "count": len(g),
            }
        )
    return rows


# -- report ---------------------------------------------------------------------------------------------


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    m, prm = report["machine"], report["params"]
    out = [
        f"Reconnect after `ws_drop` / `ws_refuse` K s, live path (real ccxt {report['ccxt']} -> simulator on "
        f"127.0.0.1). Backoff(base_s={prm['backoff']['base_s']}, cap_s={prm['backoff']['cap_s']}), "
        f"heartbeat {prm['heartbeat_s']:g} s, max_failures {prm['max_failures']}, pulse every {prm['pulse_ms']} ms. "
        f"Kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"load average {report['loadavg']}.",
        "",
        "Times in ms after the simulator is back up (K = 0: the drop itself).",
        "",
        "| K (s) | trial | failed attempts market / trades / orders | (a) user resubscribed | (b) RESTORED "
        "market / trades / orders | (c) first / last reconciliation done | passes | CONNECTION_LOST | dead links "
        "| user subs open at end |",
        "|---:|---:|---|---:|---|---|---:|---|---|---:|",
    ]
    for t in report["trials"]:
        f, r = t["failures"], t["b_restored_ms"]
        out.append(
            f"| {t['k_s']:g} | {t['trial']} | {f['market']} / {f['user-trades']} / {f['user-orders']} "
            f"| {_f(t['a_user_resubscribed_ms'])} | {_f(r['market'])} / {_f(r['user-trades'])} / "
            f"{_f(r['user-orders'])} | {_f(t['c_first_reconciled_ms'])} / {_f(t['c_last_reconciled_ms'])} "
            f"| {len(t['reconciliation_triggers'])} | {', '.join(t['connection_lost']) or '—'} "
            f"| {', '.join(t['dead_links']) or '—'} | {t['hub_before_close']['user']} |"
        )
    out += [
        "",
        "| failed attempt n | Link backoff ceiling before attempt n+1 (s) | ccxt dial backoff after a refused dial "
        "(s) | measured gap to the next failure or to RESTORED: min / median / max (s) | n |",
        "|---:|---:|---:|---|---:|",
    ]
    for row in report["schedule"]:
        out.append(
            f"| {row['failure']} | {row['link_ceiling_s']:.1f} | {row['ccxt_dial_backoff_s']:.1f} "
            f"| {row['gap_min_s']:.2f} / {row['gap_median_s']:.2f} / {row['gap_max_s']:.2f} | {row['count']} |"
        )
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------------


def _k_list(text: str) -> list[float]:
    values = [float(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of seconds >= 0")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--k", type=_k_list, default=[0.0, 1.0, 2.0, 4.0], help="refuse windows in s (default 0,1,2,4)")
    p.add_argument("--repeat", type=int, default=2, help="trials per K (default 2)")
    p.add_argument("--pulse-ms", type=float, default=20.0, help="period of the market/user activity (default 20)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.pulse_ms <= 0:
        p.error("--repeat must be >= 1 and --pulse-ms > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("reconnect", parse_args(argv), measure, markdown, operation=OPERATION)


if __name__ == "__main__":
    sys.exit(main())
