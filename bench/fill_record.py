"""Benchmark of the durable write of one fill record: the record log against SQLite (issue 10, target (b)).

Why: issue 10 asks that "the durable write of one fill record [be] no slower at p50 than SQLite in WAL
mode with synchronous=FULL storing the same bytes". A strategy's state holds a bounded history of 500
orders and 10,000 seen trade ids; a fill changes one order, a few totals and the seen ids (one in, the
oldest out). With ``use_log()`` the store appends and fsyncs only that change. This script measures,
side by side in one loop:

* ``save_sync()`` and ``await save()`` of the store (``use_log()``, the whole state handed over each
  time, as StrategyWorker does), after one fill was applied to the state;
* SQLite (WAL, synchronous=FULL): one ``INSERT`` of the fill record per transaction, as many bytes as
  the store appends per fill (the JSON of the changed order and the trade id, padded to that size);
* floor L: the same bytes appended inline to a file (open O_APPEND, write, fsync, close): the I/O cost
  of one log append, nothing else.

The store's appended bytes are measured from the growth of its directory (no file name is assumed),
fsyncs and writes from ``StateDirectory.stats``. Every so often a save compacts (rewrites the snapshot
by the §6.1 protocol): those saves are counted and shown apart, and they are in the percentiles.
Methods run round-robin (rotating order) after a warm-up, in a fresh temp dir under /var/tmp (not /tmp,
which may be tmpfs where fsync is free); the file system is printed with the results.

Usage: ``python bench/fill_record.py [--repeat N] [--warmup N] [--dir PARENT] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import gc
import os
import random
import shutil
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from common import make_workdir, write_report  # bench/ is sys.path[0] when run as a script
from state_save import commit_one, machine_facts, sqlite_full, summarize

from s1mpled.state import codec
from s1mpled.state.store import StateDirectory, StateFile

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "fill_record.json"
HISTORY = 500  # ledger.HISTORY_LIMIT
SEEN = 10_000  # ledger.SEEN_TRADE_IDS_LIMIT
OPEN = 10
TARGET_RATIO = 1.0  # store p50 <= SQLite p50


# -- a strategy state shaped like StrategyWorker.state_snapshot() ---------------------------------------


def _dec(rng: random.Random, low: int, high: int, places: int) -> Decimal:
    return Decimal(rng.randint(low, high)).scaleb(-places)


def _order(rng: random.Random, n: int, state: str) -> dict[str, Any]:
    """One LedgerOrder as the ledger's record codec writes it."""
    created = 1_735_689_600_000 + n * 60_000
    amount = _dec(rng, 1_000, 500_000, 8)
    return {
        "client_order_id": f"s1-grid-btc-a1b2c3-{n:08d}",
        "symbol": "BTC/USDT",
        "side": rng.choice(("buy", "sell")),
        "type": "limit",
        "amount": amount,
        "price": _dec(rng, 2_000_000, 7_000_000, 2),
        "filled": amount if state == "closed" else Decimal("0E-8"),
        "state": state,
        "exchange_order_id": str(rng.randrange(10**11, 10**12)),
        "created_ms": created,
        "updated_ms": created + rng.randrange(1_000, 600_000),
        "tag": "grid",
    }


def make_strategy_state(seed: int = 10) -> dict[str, Any]:
    """{"format", "ledger", "strategy"}: 10 open orders, 500 history orders, 10,000 seen trade ids."""
    rng = random.Random(seed)
    history = [_order(rng, n, rng.choice(("closed", "closed", "canceled"))) for n in range(HISTORY)]
    open_orders = [_order(rng, HISTORY + n, "open") for n in range(OPEN)]
    ids, trade = [], 4_100_000_000
    for _ in range(SEEN):
        trade += rng.randint(1, 40)
        ids.append(str(trade))
    ledger = {
        "format": 1,
        "strategy": "grid-btc",
        "symbol": "BTC/USDT",
        "capital": Decimal("10000.00000000"),
        "holdings": Decimal("0.12345678"),
        "cost_basis": Decimal("7421.37000000"),
        "realized_pnl": Decimal("-12.34000000"),
        "fees_paid": Decimal("3.21000000"),
        "other_fees": {},
        "sequence": HISTORY + OPEN,
        "open_orders": open_orders,
        "history": history,
        "seen_trades": {"ids": ids, "floor": "4099999999", "last": ids[-1], "others": []},
        "reconciled_trade_id": ids[-100],
        "epochs": ["a1b2c3"],
        "created_ms": 1_735_689_600_000,
    }
    strategy = {"format": 1, "levels": [str(_dec(rng, 2_000_000, 7_000_000, 2)) for _ in range(20)], "anchor": None}
    return {"format": 1, "ledger": ledger, "strategy": strategy}


@dataclass(frozen=True, slots=True)
class Fill:
    """One partial fill of an open order (drawn once, applied to every copy of the state)."""

    order_index: int
    trade_id: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    ts_ms: int


def draw_fill(rng: random.Random, state: dict[str, Any], i: int) -> Fill:
    last = int(state["ledger"]["seen_trades"]["last"])
    return Fill(
        order_index=i % OPEN,
        trade_id=str(last + rng.randint(1, 40)),
        amount=_dec(rng, 1, 999, 8),
        price=_dec(rng, 2_000_000, 7_000_000, 2),
        fee=_dec(rng, 1, 999, 8),
        ts_ms=1_767_225_600_000 + i * 1_000,
    )


def apply_fill(state: dict[str, Any], fill: Fill) -> dict[str, Any]:
    """What the ledger does on a fill: the order's filled amount, the totals, the seen ids (one in, oldest out).

    Returns the changed order (a new dict, as the ledger's ``to_state`` builds one each time).
    """
    ledger = state["ledger"]
    old = ledger["open_orders"][fill.order_index]
    order = {**old, "filled": old["filled"] + fill.amount, "state": "partially_filled", "updated_ms": fill.ts_ms}
    ledger["open_orders"][fill.order_index] = order
    cost = (fill.amount * fill.price).quantize(Decimal("1E-8"))
    ledger["capital"] -= cost + fill.fee
    ledger["holdings"] += fill.amount
    ledger["cost_basis"] += cost
    ledger["fees_paid"] += fill.fee
    seen = ledger["seen_trades"]
    seen["floor"] = seen["ids"].pop(0)
    seen["ids"].append(fill.trade_id)
    seen["last"] = fill.trade_id
    return order


def fill_record(order: dict[str, Any], fill: Fill) -> bytes:
    """The bytes of one fill record as a peer would store it: the changed order and the trade id, in JSON."""
    return codec.encode_payload({"order": order, "trade_id": fill.trade_id})


# -- the comparisons ------------------------------------------------------------------------------------


class SqliteFills:
    """A WAL-mode SQLite database with synchronous=FULL: one INSERT per transaction (durable on COMMIT)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite_full(path, "CREATE TABLE fills (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")

    def insert(self, data: bytes) -> None:
        commit_one(self._db, "INSERT INTO fills (data) VALUES (?)", (data,))

    def close(self) -> None:
        self._db.close()


class AppendFloor:
    """Floor L: the log's own I/O inline -- open O_APPEND, write, fsync, close -- on the same bytes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.write_bytes(b"")
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def append(self, data: bytes) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def directory_bytes(path: Path) -> int:
    """Sum of the sizes of the regular files under ``path``, subfolders included (no name or layout assumed)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


@dataclass(slots=True)
class StoreUnderTest:
    """One state directory with one log-enabled state file, its own copy of the state, and what each save did."""

    key: str
    directory: StateDirectory
    file: StateFile
    state: dict[str, Any]
    fsyncs: list[int]
    writes: list[int]
    grown: list[int]

    @classmethod
    def open(cls, key: str, path: Path, state: dict[str, Any]) -> StoreUnderTest:
        directory = StateDirectory.open(path)
        file = directory.file("strategy-grid-btc.state.json")
        file.use_log()
        file.load()
        return cls(key, directory, file, copy.deepcopy(state), [], [], [])

    def note(self, before: tuple[int, int, int]) -> None:
        """Record what the save just timed did (outside the timing)."""
        stats = self.directory.stats
        self.fsyncs.append(stats.fsyncs - before[0])
        self.writes.append(stats.writes - before[1])
        self.grown.append(directory_bytes(self.directory.path) - before[2])

    def mark(self) -> tuple[int, int, int]:
        stats = self.directory.stats
        return stats.fsyncs, stats.writes, directory_bytes(self.directory.path)


def _timed_sync(fn: Callable[[], object]) -> tuple[int, int]:
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0, time.thread_time_ns() - c0


async def _timed_async(fn: Callable[[], Awaitable[object]]) -> tuple[int, int]:
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    await fn()
    return time.perf_counter_ns() - t0, time.thread_time_ns() - c0


LABELS = {
    "save_sync": "`save_sync()` (`use_log()`)",
    "save_async": "`await save()` (`use_log()`)",
    "sqlite": "SQLite WAL, synchronous=FULL, 1 INSERT per transaction",
    "floor_l": "floor L: append + fsync inline, same bytes",
}


class Bench:
    """The four methods, each with its own files (and the stores with their own copy of the state)."""

    def __init__(self, work: Path, base: dict[str, Any]) -> None:
        self.stores = {
            "save_sync": StoreUnderTest.open("save_sync", work / "store_sync", base),
            "save_async": StoreUnderTest.open("save_async", work / "store_async", base),
        }
        self.sqlite, self.floor = SqliteFills(work / "fills.db"), AppendFloor(work / "floor_l.log")
        self.wall: dict[str, list[int]] = {k: [] for k in LABELS}
        self.cpu: dict[str, list[int]] = {k: [] for k in LABELS}

    async def run(self, key: str, data: bytes, *, keep: bool) -> None:
        """One durable write by ``key``: the store saves its state, the others store ``data``."""
        if key in self.stores:
            s = self.stores[key]
            before = s.mark()
            if key == "save_sync":
                elapsed = _timed_sync(functools.partial(s.file.save_sync, s.state))
            else:
                elapsed = await _timed_async(functools.partial(s.file.save, s.state))
            s.note(before)
        elif key == "sqlite":
            elapsed = _timed_sync(functools.partial(self.sqlite.insert, data))
        else:
            elapsed = _timed_sync(functools.partial(self.floor.append, data))
        if keep:
            self.wall[key].append(elapsed[0])
            self.cpu[key].append(elapsed[1])

    def calibrate(self) -> int:
        """The store's median appended bytes over the saves so far (the warm-up), which are then forgotten."""
        appended = sorted(g for s in self.stores.values() for g, f in zip(s.grown, s.fsyncs, strict=True) if f == 1)
        for s in self.stores.values():
            s.fsyncs.clear()
            s.writes.clear()
            s.grown.clear()
        return appended[len(appended) // 2] if appended else 0

    def reloaded_equal(self) -> dict[str, bool]:
        """Close each store, open it again: does load() return the state last saved?"""
        out = {}
        for key, s in self.stores.items():
            s.directory.close()
            with StateDirectory.open(s.directory.path) as again:
                out[key] = again.file(s.file.name).load().state == s.state
        return out

    def close(self) -> None:
        self.sqlite.close()
        for s in self.stores.values():
            s.directory.close()  # closing twice is harmless

    def store_facts(self, key: str) -> dict[str, Any]:
        s, wall = self.stores[key], self.wall[key]
        appends = [g for g, f in zip(s.grown, s.fsyncs, strict=True) if f == 1]
        compactions = [j for j, f in enumerate(s.fsyncs) if f != 1]
        append_walls = [w for w, f in zip(wall, s.fsyncs, strict=True) if f == 1]
        return {
            "fsyncs_per_save": sum(s.fsyncs) / len(s.fsyncs),
            "writes_per_save": sum(s.writes) / len(s.writes),
            "fsync_histogram": {str(n): s.fsyncs.count(n) for n in sorted(set(s.fsyncs))},
            "appended_bytes_p50": sorted(appends)[len(appends) // 2] if appends else None,
            "compactions": len(compactions),
            "compaction_mean_ms": sum(wall[j] for j in compactions) / len(compactions) / 1e6 if compactions else None,
            "append_only": asdict(summarize(append_walls)) if append_walls else None,
        }


async def measure(work: Path, repeat: int, warmup: int, seed: int) -> dict[str, Any]:
    base = make_strategy_state(seed)
    bench = Bench(work, base)
    driver = copy.deepcopy(base)  # draws the fills and builds the fill records
    rng = random.Random(seed + 1)
    record_sizes: list[int] = []
    data_sizes: list[int] = []
    padded = 0  # the SQLite/floor payload: the fill record, padded to the store's median appended bytes
    try:
        for s in bench.stores.values():  # the first saves write snapshots (the log appends once NAME.prev exists)
            for _ in range(3):
                s.file.save_sync(s.state)
        for i in range(warmup + repeat):
            fill = draw_fill(rng, driver, i)
            record = fill_record(apply_fill(driver, fill), fill)
            for s in bench.stores.values():
                apply_fill(s.state, fill)
            if i == warmup:
                padded = bench.calibrate()
            data = record.ljust(padded)  # as long as the store's append (or the bare record, if that is longer)
            record_sizes.append(len(record))
            data_sizes.append(len(data))
            order = list(LABELS)
            k = i % len(order)
            for key in order[k:] + order[:k]:
                await bench.run(key, data, keep=i >= warmup)
        reloaded = bench.reloaded_equal()
    finally:
        bench.close()
    results: dict[str, Any] = {
        key: {**asdict(summarize(bench.wall[key])), "cpu_p50_ms": summarize(bench.cpu[key]).p50_ms} for key in LABELS
    }
    for key in bench.stores:
        results[key].update(bench.store_facts(key), reloaded_equal=reloaded[key])
    ratio = results["save_sync"]["p50_ms"] / results["sqlite"]["p50_ms"]
    return {
        "state": {
            "snapshot_bytes": len(codec.encode(base, 1)),
            "history_orders": HISTORY,
            "open_orders": OPEN,
            "seen_trade_ids": SEEN,
        },
        "fill_record_json_bytes_p50": sorted(record_sizes)[len(record_sizes) // 2],
        "payload_bytes": sorted(data_sizes[warmup:])[(len(data_sizes) - warmup) // 2],
        "repeat": repeat,
        "warmup": warmup,
        "labels": LABELS,
        "results": results,
        "ratio_vs_sqlite": {k: results[k]["p50_ms"] / results["sqlite"]["p50_ms"] for k in LABELS},
        "ratio_vs_floor_l": {k: results[k]["p50_ms"] / results["floor_l"]["p50_ms"] for k in LABELS},
        "target": {"against": "sqlite", "max_ratio": TARGET_RATIO, "ratio": ratio, "met": ratio <= TARGET_RATIO},
    }


# -- report ---------------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def markdown(report: dict[str, Any]) -> str:
    m, fs, st = report["machine"], report["machine"]["filesystem"], report["state"]
    res = report["results"]
    out = [
        f"Fill record durable write on **{fs['fstype']}** ({fs['device']} at {fs['mountpoint']}, {fs['options']}); "
        f"kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}; load average at start {report['loadavg']}.",
        "",
        f"State: {st['open_orders']} open orders, {st['history_orders']} history orders, "
        f"{st['seen_trade_ids']:,} seen trade ids ({st['snapshot_bytes']:,} B as a snapshot). "
        f"A fill's record: {report['fill_record_json_bytes_p50']:,} B of JSON (changed order + trade id); "
        f"SQLite and floor L store it padded to the store's appended size, {report['payload_bytes']:,} B.",
        "",
        "| method | p50 (ms) | p99 (ms) | p50 / SQLite | p50 / floor L | CPU p50 (ms) | fsyncs per save "
        "| compactions | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in res.items():
        fsyncs = f"{s['fsyncs_per_save']:.2f}" if "fsyncs_per_save" in s else "1"
        compactions = (
            f"{s['compactions']} (mean {_ms(s['compaction_mean_ms'])} ms)"
            if s.get("compactions")
            else ("0" if "compactions" in s else "")
        )
        out.append(
            f"| {report['labels'][key]} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} "
            f"| {report['ratio_vs_sqlite'][key]:.2f}x | {report['ratio_vs_floor_l'][key]:.2f}x "
            f"| {_ms(s['cpu_p50_ms'])} | {fsyncs} | {compactions} | {s['samples']} |"
        )
    t = report["target"]
    out += [
        "",
        "| target | `save_sync()` p50 / SQLite p50 | result |",
        "|---|---:|---|",
        f"| fill record p50 <= {t['max_ratio']}x SQLite (WAL, synchronous=FULL) | {t['ratio']:.2f}x "
        f"| {'met' if t['met'] else 'not met'} |",
        "",
        "| store | appended per fill (B, p50) | append-only p50 / p99 (ms) | fsync histogram | reloaded == saved |",
        "|---|---:|---:|---|---|",
    ]
    for key in ("save_sync", "save_async"):
        s = res[key]
        a = s["append_only"]
        hist = ", ".join(f"{n} fsync(s): {c}" for n, c in s["fsync_histogram"].items())
        out.append(
            f"| {report['labels'][key]} | {s['appended_bytes_p50']} "
            f"| {_ms(a['p50_ms']) if a else '-'} / {_ms(a['p99_ms']) if a else '-'} | {hist} "
            f"| {'yes' if s['reloaded_equal'] else 'NO'} |"
        )
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=1_000, help="fills per method (default 1000)")
    p.add_argument("--warmup", type=int, default=30, help="fills before measuring (default 30)")
    p.add_argument("--seed", type=int, default=10, help="random seed of the state and the fills")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.warmup < 1:
        p.error("--repeat and --warmup must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, fs = make_workdir("fill-record", args.dir)
    started, t0, load = int(time.time()), time.perf_counter(), os.getloadavg()
    try:
        gc.collect()
        results = asyncio.run(measure(work, args.repeat, args.warmup, args.seed))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "fill_record",
        "started_unix": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "machine": machine_facts(fs),
        "loadavg": " ".join(f"{x:.2f}" for x in load),
        **results,
    }
    write_report(args.json, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
