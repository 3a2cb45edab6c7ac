"""Benchmark of the durable state store (s1mpled/state/) against the floors it cannot beat.

Why: the store promises "p50 within 1.2x of the bare floor" -- its header, checksum, Decimal
tagging, executor hop and group-commit bookkeeping must cost next to nothing compared with the
fsyncs that make a save durable. This script measures that claim on the real disk, side by side:

* ``save_sync()`` and ``await save()`` (one at a time) of the store;
* floor A: the same five protocol steps inline on pre-encoded bytes (pure I/O);
* floor B: floor A plus ``json.dumps(state, default=str)`` each time (a careful hand-written save);
* SQLite (WAL, synchronous=FULL) storing the same bytes as one BLOB row, one transaction per save;
* group commit: 1,000 ``save()`` calls issued in one event-loop tick -> fsyncs, writes, time.

Methods run round-robin (rotating order) inside one loop, so disk drift hits them alike. The run
happens in a fresh temp dir under /var/tmp (not /tmp, which may be tmpfs where fsync is free); the
file system it ran on is printed with the results.

Usage: ``python bench/state_save.py [--repeat N] [--dir PARENT] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from s1mpled.state import codec
from s1mpled.state.store import StateDirectory, StateFile

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "state_save.json"
TARGET_RATIO = 1.2
BURST = 1_000
BURST_FSYNC_TARGET = 2
_MEMORY_FS = frozenset({"tmpfs", "ramfs", "devtmpfs"})

SyncFn = Callable[[], None]
AsyncFn = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Size:
    """One state size under test: its label, target payload size and default repeat count."""

    label: str
    target_bytes: int
    repeat: int
    warmup: int


SIZES = (Size("1 KB", 1_000, 200, 10), Size("10 KB", 10_000, 200, 10), Size("1 MB", 1_000_000, 30, 3))


@dataclass(frozen=True, slots=True)
class Method:
    """One way of saving; exactly one of ``run_sync`` / ``run_async`` is set."""

    key: str
    label: str
    run_sync: SyncFn | None = None
    run_async: AsyncFn | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency percentiles of one method at one size, in milliseconds."""

    p50_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    samples: int


@dataclass(frozen=True, slots=True)
class FsInfo:
    """The file system the benchmark directory lives on (from /proc/mounts and statvfs)."""

    path: str
    fstype: str
    device: str
    mountpoint: str
    options: str
    block_size: int
    free_gib: float


# -- realistic state: a strategy ledger ----------------------------------------------------------------


def _dec(rng: random.Random, low: int, high: int, places: int) -> Decimal:
    return Decimal(rng.randint(low, high)).scaleb(-places)


def _fill(rng: random.Random, ts_ms: int) -> dict[str, Any]:
    return {
        "trade_id": str(rng.randrange(10**9, 10**10)),
        "price": _dec(rng, 2_000_000, 7_000_000, 2),
        "amount": _dec(rng, 1_000, 500_000, 8),
        "fee": _dec(rng, 1, 99_999, 8),
        "fee_currency": "USDT",
        "ts_ms": ts_ms,
    }


def _order(rng: random.Random, n: int) -> dict[str, Any]:
    created = 1_735_689_600_000 + n * 60_000
    status = rng.choice(("open", "partially_filled", "closed", "closed", "canceled"))
    fills = [_fill(rng, created + k * 1_000) for k in range({"open": 0, "partially_filled": 1}.get(status, 2))]
    return {
        "client_order_id": f"s1-dca-btc-{n:08d}",
        "exchange_order_id": str(rng.randrange(10**11, 10**12)),
        "symbol": "BTC/USDT",
        "side": rng.choice(("buy", "sell")),
        "type": "limit",
        "status": status,
        "price": _dec(rng, 2_000_000, 7_000_000, 2),
        "amount": _dec(rng, 1_000, 500_000, 8),
        "filled": sum((f["amount"] for f in fills), Decimal("0E-8")),
        "created_ms": created,
        "fills": fills,
    }


def make_state(target_bytes: int, seed: int = 6) -> dict[str, Any]:
    """A StrategyLedger-shaped state whose stored payload is about ``target_bytes`` long."""
    rng = random.Random(seed)
    orders: dict[str, Any] = {}
    state: dict[str, Any] = {
        "strategy": "dca-btc",
        "symbol": "BTC/USDT",
        "seq": 0,
        "capital": {"allocated": Decimal("10000.00"), "reserved": Decimal("250.00")},
        "holdings": {"BTC": Decimal("0.12345678"), "USDT": Decimal("7421.37")},
        "pnl": {"realized": Decimal("-12.34"), "fees": Decimal("3.21000000")},
        "orders": orders,
    }
    size = len(codec.encode_payload(state))
    n = 0
    while size < target_bytes:
        order = _order(rng, n)
        orders[order["client_order_id"]] = order
        size += len(codec.encode_payload({order["client_order_id"]: order})) - 1  # minus "{}" plus ","
        n += 1
    return state


# -- the floors and the SQLite comparison -------------------------------------------------------------


class ProtocolFloor:
    """The store's five protocol steps written inline, nothing else: the I/O cost of one save."""

    def __init__(self, path: Path, name: str = "state.json") -> None:
        path.mkdir(mode=0o700)
        self._dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._name, self._journal, self._prev = name, f"{name}.journal", f"{name}.prev"
        self._main_exists = False

    def save_bytes(self, data: bytes) -> None:
        """Journal, fsync, rotate to .prev, switch, fsync the directory."""
        d = self._dirfd
        fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600, dir_fd=d)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._main_exists:
            os.rename(self._name, self._prev, src_dir_fd=d, dst_dir_fd=d)
        os.rename(self._journal, self._name, src_dir_fd=d, dst_dir_fd=d)
        os.fsync(d)
        self._main_exists = True

    def close(self) -> None:
        os.close(self._dirfd)


def sqlite_full(path: Path, schema: str) -> sqlite3.Connection:
    """A SQLite database in WAL mode with synchronous=FULL (a transaction is durable on COMMIT), ``schema`` made:
    the storage the peers use, which the store is measured against."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(schema)
    return db


def commit_one(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
    """One statement in a transaction of its own: BEGIN, it, COMMIT (durable when this returns)."""
    db.execute("BEGIN")
    db.execute(sql, params)
    db.execute("COMMIT")


class SqliteStore:
    """One BLOB row in a WAL-mode SQLite database with synchronous=FULL (durable on COMMIT)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite_full(path, "CREATE TABLE state (name TEXT PRIMARY KEY, data BLOB NOT NULL)")

    def save_bytes(self, data: bytes) -> None:
        """One transaction: INSERT OR REPLACE the row, COMMIT."""
        commit_one(self._db, "INSERT OR REPLACE INTO state (name, data) VALUES (?, ?)", ("state.json", data))

    def close(self) -> None:
        self._db.close()


# -- measurement --------------------------------------------------------------------------------------


def percentile(sorted_ns: list[int], pct: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


def summarize(samples_ns: list[int]) -> Summary:
    s = sorted(samples_ns)
    return Summary(
        p50_ms=percentile(s, 50),
        p99_ms=percentile(s, 99),
        mean_ms=sum(s) / len(s) / 1e6,
        min_ms=s[0] / 1e6,
        max_ms=s[-1] / 1e6,
        samples=len(s),
    )


async def time_once(method: Method) -> int:
    """Wall time of one save by ``method``, in nanoseconds."""
    if method.run_sync is not None:
        t0 = time.perf_counter_ns()
        method.run_sync()
        return time.perf_counter_ns() - t0
    assert method.run_async is not None
    t0 = time.perf_counter_ns()
    await method.run_async()
    return time.perf_counter_ns() - t0


def build_methods(root: Path, state: dict[str, Any]) -> tuple[list[Method], list[SyncFn]]:
    """The five methods for one state size, each writing to its own directory; plus their closers."""
    root.mkdir()
    sync_dir = StateDirectory.open(root / "store_sync")
    async_dir = StateDirectory.open(root / "store_async")
    sync_file, async_file = sync_dir.file("ledger.state.json"), async_dir.file("ledger.state.json")
    sync_file.load()
    async_file.load()
    floor_a, floor_b = ProtocolFloor(root / "floor_a"), ProtocolFloor(root / "floor_b")
    sqlite_store = SqliteStore(root / "sqlite.db")
    pre_encoded = codec.encode(state, 1)

    def run_sync() -> None:
        sync_file.save_sync(state)

    async def run_async() -> None:
        await async_file.save(state)

    def run_floor_a() -> None:
        floor_a.save_bytes(pre_encoded)

    def run_floor_b() -> None:
        floor_b.save_bytes(json.dumps(state, default=str).encode())

    def run_sqlite() -> None:
        sqlite_store.save_bytes(pre_encoded)

    methods = [
        Method("save_sync", "`save_sync()`", run_sync=run_sync),
        Method("save_async", "`await save()`", run_async=run_async),
        Method("floor_a", "floor A: protocol on pre-encoded bytes", run_sync=run_floor_a),
        Method("floor_b", "floor B: `json.dumps` + protocol", run_sync=run_floor_b),
        Method("sqlite", "SQLite WAL, synchronous=FULL, 1 BLOB row", run_sync=run_sqlite),
    ]
    return methods, [sync_dir.close, async_dir.close, floor_a.close, floor_b.close, sqlite_store.close]


async def measure_size(root: Path, size: Size, repeat: int) -> dict[str, Any]:
    """All methods at one state size, interleaved round-robin; returns the JSON-ready result."""
    state = make_state(size.target_bytes)
    methods, closers = build_methods(root, state)
    samples: dict[str, list[int]] = {m.key: [] for m in methods}
    try:
        for i in range(size.warmup + repeat):
            state["seq"] = i  # every save stores a (slightly) different state
            k = i % len(methods)
            for method in methods[k:] + methods[:k]:
                elapsed = await time_once(method)
                if i >= size.warmup:
                    samples[method.key].append(elapsed)
    finally:
        for close in closers:
            close()
    return {
        "label": size.label,
        "serialization": measure_serialization(state, size.warmup, repeat),
        "payload_bytes": len(codec.encode_payload(state)),
        "record_bytes": len(codec.encode(state, 1)),
        "json_default_str_bytes": len(json.dumps(state, default=str).encode()),
        "orders": len(state["orders"]),
        "repeat": repeat,
        "warmup": size.warmup,
        "labels": {m.key: m.label for m in methods},
        "results": {key: asdict(summarize(v)) for key, v in samples.items()},
    }


def measure_serialization(state: dict[str, Any], warmup: int, repeat: int) -> dict[str, Any]:
    """CPU cost alone (no I/O) of each way of turning the state into bytes: explains floor B vs the store."""
    fns: dict[str, Callable[[], object]] = {
        "json_dumps_default_str": lambda: json.dumps(state, default=str).encode(),
        "codec_encode_payload": lambda: codec.encode_payload(state),
        "codec_encode": lambda: codec.encode(state, 1),
    }
    samples: dict[str, list[int]] = {k: [] for k in fns}
    for i in range(warmup + repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn()
            if i >= warmup:
                samples[key].append(time.perf_counter_ns() - t0)
    return {key: asdict(summarize(v)) for key, v in samples.items()}


def add_ratios(result: dict[str, Any]) -> None:
    """save_sync p50 over floor A / floor B p50, and whether the 1.2x target is met."""
    r = result["results"]
    p50 = r["save_sync"]["p50_ms"]
    result["ratio_vs_floor_a"] = p50 / r["floor_a"]["p50_ms"]
    result["ratio_vs_floor_b"] = p50 / r["floor_b"]["p50_ms"]
    floor = "floor_b" if result["label"] == "1 MB" else "floor_a"  # serialization dominates at 1 MB
    ratio = result[f"ratio_vs_{floor}"]
    result["target"] = {"against": floor, "max_ratio": TARGET_RATIO, "ratio": ratio, "met": ratio <= TARGET_RATIO}


async def _burst(file: StateFile, states: list[dict[str, Any]]) -> tuple[int, list[int]]:
    t0 = time.perf_counter_ns()
    generations = await asyncio.gather(*(file.save(s) for s in states))
    return time.perf_counter_ns() - t0, list(generations)


async def measure_group_commit(root: Path) -> dict[str, Any]:
    """1,000 save() calls in one tick, each with a different state: fsyncs, writes, time to durable."""
    base = make_state(SIZES[0].target_bytes)
    states = [{**base, "seq": i} for i in range(BURST)]
    with StateDirectory.open(root) as directory:
        file = directory.file("ledger.state.json")
        file.load()
        await file.save({**base, "seq": -1})  # warm-up: the main file exists, the writer thread runs
        before = (directory.stats.fsyncs, directory.stats.writes, directory.stats.saves_requested)
        elapsed_ns, generations = await _burst(file, states)
        stats = directory.stats
        fsyncs, writes = stats.fsyncs - before[0], stats.writes - before[1]
        requested = stats.saves_requested - before[2]
    with StateDirectory.open(root) as directory:
        stored = directory.file("ledger.state.json").load().state
    return {
        "saves": BURST,
        "saves_requested": requested,
        "writes": writes,
        "fsyncs": fsyncs,
        "time_to_all_durable_ms": elapsed_ns / 1e6,
        "max_generation_returned": max(generations),
        "newest_state_durable": stored is not None and stored.get("seq") == BURST - 1,
        "target_max_fsyncs": BURST_FSYNC_TARGET,
        "met": fsyncs <= BURST_FSYNC_TARGET,
    }


# -- machine facts ------------------------------------------------------------------------------------


def _unescape_mount(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def filesystem_of(path: Path) -> FsInfo:
    """The mount holding ``path``: longest matching mount point in /proc/mounts, plus statvfs facts."""
    real = os.path.realpath(path)
    best = ("?", "?", "/", "")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        device, mountpoint, fstype, options = (_unescape_mount(f) for f in line.split()[:4])
        inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) >= len(best[2]):
            best = (device, fstype, mountpoint, options)
    vfs = os.statvfs(real)
    return FsInfo(
        path=real,
        fstype=best[1],
        device=best[0],
        mountpoint=best[2],
        options=best[3],
        block_size=vfs.f_bsize,
        free_gib=vfs.f_bavail * vfs.f_frsize / 2**30,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(fs: FsInfo) -> dict[str, Any]:
    return {
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "filesystem": asdict(fs),
    }


# -- report -------------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def markdown(report: dict[str, Any]) -> str:
    m, fs = report["machine"], report["machine"]["filesystem"]
    out = [
        f"State save latency on **{fs['fstype']}** ({fs['device']} at {fs['mountpoint']}, {fs['options']}); "
        f"kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"SQLite {m['sqlite']}.",
        "",
        "| state | method | p50 (ms) | p99 (ms) | p50 / floor A | p50 / floor B | n |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for size in report["sizes"]:
        res, first = size["results"], True
        a, b = res["floor_a"]["p50_ms"], res["floor_b"]["p50_ms"]
        for key, s in res.items():
            name = f"{size['label']} ({size['record_bytes']:,} B)" if first else ""
            first = False
            out.append(
                f"| {name} | {size['labels'][key]} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} "
                f"| {s['p50_ms'] / a:.2f}x | {s['p50_ms'] / b:.2f}x | {s['samples']} |"
            )
    out += ["", "| state | target | `save_sync()` p50 / floor p50 | result |", "|---|---|---:|---|"]
    for size in report["sizes"]:
        t = size["target"]
        floor = "floor A" if t["against"] == "floor_a" else "floor B"
        out.append(
            f"| {size['label']} | p50 <= {t['max_ratio']}x {floor} | {t['ratio']:.2f}x "
            f"| {'met' if t['met'] else 'not met'} |"
        )
    out += [
        "",
        "| state | CPU only: `json.dumps(default=str)` p50 (ms) | `codec.encode_payload` p50 (ms) "
        "| `codec.encode` (+ header, SHA-256) p50 (ms) |",
        "|---|---:|---:|---:|",
    ]
    for size in report["sizes"]:
        ser = size["serialization"]
        out.append(
            f"| {size['label']} | {_ms(ser['json_dumps_default_str']['p50_ms'])} "
            f"| {_ms(ser['codec_encode_payload']['p50_ms'])} | {_ms(ser['codec_encode']['p50_ms'])} |"
        )
    g = report["group_commit"]
    out += [
        "",
        "| group commit | saves | writes | fsyncs | until all durable (ms) | newest state durable | target |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| {g['saves']:,} x `save()` in one tick (1 KB states) | {g['saves_requested']:,} | {g['writes']} "
        f"| {g['fsyncs']} | {_ms(g['time_to_all_durable_ms'])} | {'yes' if g['newest_state_durable'] else 'NO'} "
        f"| <= {g['target_max_fsyncs']} fsyncs: {'met' if g['met'] else 'not met'} |",
    ]
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=None, help="saves per method and size (default 200; 30 for 1 MB)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


async def run_all(work: Path, repeat: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sizes = []
    for size in SIZES:
        gc.collect()
        result = await measure_size(work / size.label.replace(" ", ""), size, repeat or size.repeat)
        add_ratios(result)
        sizes.append(result)
        print(f"  {size.label}: done", file=sys.stderr)
    gc.collect()
    return sizes, await measure_group_commit(work / "group_commit")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="s1mpled-bench-", dir=args.dir))
    fs = filesystem_of(work)
    print(f"benchmarking in {work} ({fs.fstype} on {fs.device}, mounted at {fs.mountpoint})", file=sys.stderr)
    if fs.fstype in _MEMORY_FS:
        print(
            f"WARNING: {fs.fstype} is memory-backed; fsync is free there, these are not disk numbers", file=sys.stderr
        )
    started, t0 = int(time.time()), time.perf_counter()
    try:
        sizes, group = asyncio.run(run_all(work, args.repeat))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "state_save",
        "started_unix": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "machine": machine_facts(fs),
        "sizes": sizes,
        "group_commit": group,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\n(wall time {report['duration_s']} s; JSON written to {args.json})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
