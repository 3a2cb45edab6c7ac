"""Benchmark: how long ``s1mpled run`` (paper mode) takes to reach trading, and what it costs when idle.

Why: s1mpled is crash-only -- every start is a recovery (A: load state, B: reconcile with the exchange,
C: only then trade) and systemd restarts it after a crash, so the time from spawn to "trading" is the
outage one crash costs, and the idle RSS and CPU are what the daemon costs a small box around the clock.
One run of this script measures, on this machine:

* floors, as whole processes: ``python -c pass``, ``python -c "import asyncio, yaml"`` and
  ``python -c "import s1mpled.operation"`` (interpreter plus the daemon's imports), one round right
  before each fresh start, so the split of a start into its parts pairs samples taken under the same load;
* ``--runs`` fresh daemons (a new state directory each) and ``--runs`` restarts on a state that has
  traded, each timed from spawn to the daemon's log lines "phase loading-state" (interpreter, imports,
  config), "phase reconciling" (recovery A done) and "READY" (recovery B done), to the first ``status``
  over the control socket that says "trading" (what a client sees), and from SIGTERM to exit 0;
* one daemon left alone for ``--idle-seconds``: RSS (VmRSS), CPU time (utime+stime) as % of one core,
  bytes written to storage and durable saves of the paper exchange during the window;
* that paper mode never imports ccxt: ``-X importtime`` of a whole start up to trading, and
  /proc/PID/maps of the idle daemon.

The daemons run the shipped etc/s1mpled/s1mpled.yaml (1 s ticks, a DCA every 5 s, a 4-level grid) with
only ``state_dir`` and ``control_socket`` pointed into a temp dir under /var/tmp (not /tmp, which may be
tmpfs where fsync is free); the repository is never written except the result file.

Usage: ``python bench/startup.py [--runs N] [--idle-seconds S] [--dir PARENT] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from common import make_workdir, write_report
from state_save import machine_facts, summarize  # bench/ is sys.path[0] when run as a script

from s1mpled.config import load_config
from s1mpled.control import request
from s1mpled.errors import ControlError
from s1mpled.state.inspect import inspect

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "startup.json"
EXAMPLE_CONFIG = REPO / "etc" / "s1mpled" / "s1mpled.yaml"
EXAMPLE_SCHEDULE = REPO / "etc" / "s1mpled" / "schedule.yaml"
PAPER_STATE = "paper-exchange.state.json"
POLL_S = 0.002  # status polling interval while waiting for "trading"
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
SEED_TICK = "10ms"  # the run that makes the restart state trade a bit
SEED_SECONDS = 3.0
SETTLE_S = 1.0  # after "trading", before the idle window: the first decisions are not idle work
MIB = 2**20
# The daemon's log lines (stderr, "LEVEL logger: message [FIELDS]") that mark its phases.
MARKERS = (
    ("loading_state", "phase loading-state"),
    ("reconciling", "phase reconciling"),
    ("ready", "READY:"),
)
# Variables that would make the child behave as if systemd ran it, or point it elsewhere.
_FOREIGN_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "S1MPLED_CONFIG",
    "PYTHONPROFILEIMPORTTIME",
)
# Optional heavy libraries a paper daemon has no business importing (ccxt above all).
HEAVY_IMPORTS = ("ccxt", "aiohttp", "apprise", "requests", "cryptography", "coincurve")
_IMPORTTIME_RE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


class BenchError(Exception):
    """The daemon did not behave (did not start, did not stop cleanly); the benchmark cannot go on."""


# -- configuration --------------------------------------------------------------------------------------


def _set_line(text: str, pattern: str, line: str) -> str:
    new, count = re.subn(pattern, lambda _: line, text, flags=re.MULTILINE)
    if count != 1:
        raise BenchError(f"{EXAMPLE_CONFIG}: expected one line matching {pattern!r}, found {count}")
    return new


def write_config(run_dir: Path, name: str, state_dir: Path, *, tick_interval: str | None = None) -> Path:
    """A copy of the shipped config (and its schedule) in ``run_dir``, state and socket pointed there too."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE_SCHEDULE, run_dir / "schedule.yaml")
    text = EXAMPLE_CONFIG.read_text()
    text = _set_line(text, r"^# state_dir: .*$", f"state_dir: {state_dir}")
    text = _set_line(text, r"^# control_socket: .*$", f"control_socket: {run_dir / 'control.sock'}")
    if tick_interval is not None:
        text = _set_line(text, r"^  tick_interval: .*$", f"  tick_interval: {tick_interval}")
    path = run_dir / name
    path.write_text(text)
    load_config(path, env={})  # fail here, with the config error, rather than in a child
    return path


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}


# -- floors ---------------------------------------------------------------------------------------------

FLOORS = (
    ("pass", "python -c pass", "pass"),
    ("asyncio_yaml", 'python -c "import asyncio, yaml"', "import asyncio, yaml"),
    ("s1mpled_operation", 'python -c "import s1mpled.operation"', "import s1mpled.operation"),
)


async def floor_round(rotation: int) -> dict[str, int]:
    """Each floor command once, as a whole process (ns); the order rotates so drift hits them alike."""
    out = {}
    k = rotation % len(FLOORS)
    for key, _, code in FLOORS[k:] + FLOORS[:k]:
        t0 = time.perf_counter_ns()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL
        )  # fmt: skip
        if await proc.wait() != 0:
            raise BenchError(f"python -c {code!r} failed with {proc.returncode}")
        out[key] = time.perf_counter_ns() - t0
    return out


def floor_summaries(rounds: list[dict[str, int]]) -> dict[str, dict[str, Any]]:
    return {key: {"label": label, **asdict(summarize([r[key] for r in rounds]))} for key, label, _ in FLOORS}


def paired_split(rounds: list[dict[str, int]], fresh: list[dict[str, Any]]) -> dict[str, float]:
    """Medians (ms) of each fresh start's parts, each floor paired with the start that followed it."""
    pairs = list(zip(rounds, fresh, strict=True))
    return {
        "interpreter_ms": median(r["pass"] / 1e6 for r, _ in pairs),
        "s1mpled_imports_ms": median((r["s1mpled_operation"] - r["pass"]) / 1e6 for r, _ in pairs),
        "other_before_a_ms": median(f["to_loading_state_ms"] - r["s1mpled_operation"] / 1e6 for r, f in pairs),
        "recovery_a_ms": median(f["recovery_a_ms"] for f in fresh),
        "recovery_b_ms": median(f["recovery_b_ms"] for f in fresh),
        "ready_ms": median(f["to_ready_log_ms"] for f in fresh),
    }


# -- one daemon -----------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """A spawned ``s1mpled run``: its process, its log lines and when (after spawn) they arrived."""

    proc: asyncio.subprocess.Process
    spawned_ns: int
    socket: Path
    marks: dict[str, int] = field(default_factory=dict)  # marker -> ns after spawn
    lines: list[str] = field(default_factory=list)

    async def read_output(self) -> None:
        """Timestamp every line of the daemon's stderr as it arrives (until the process closes it)."""
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            now = time.perf_counter_ns() - self.spawned_ns
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            for key, needle in MARKERS:
                if key not in self.marks and needle in line:
                    self.marks[key] = now

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.lines[-n:])

    def mark(self, key: str) -> int:
        if key not in self.marks:
            needle = dict(MARKERS).get(key, key)
            raise BenchError(f"the daemon's log has no line with {needle!r}:\n{self.tail()}")
        return self.marks[key]

    async def wait_trading(self, deadline_s: float = START_DEADLINE_S) -> dict[str, Any]:
        """Poll ``status`` on the control socket until the phase is "trading"; returns that status."""
        deadline = time.perf_counter() + deadline_s
        while True:
            if self.proc.returncode is not None:
                raise BenchError(f"the daemon exited with {self.proc.returncode} before trading:\n{self.tail()}")
            try:
                doc = await request(self.socket, "status", timeout_s=max(0.1, deadline - time.perf_counter()))
            except ControlError:
                doc = None
            if isinstance(doc, dict) and doc.get("phase") == "trading":
                self.marks["trading_status"] = time.perf_counter_ns() - self.spawned_ns
                return doc
            if time.perf_counter() > deadline:
                raise BenchError(f"the daemon was not trading after {deadline_s} s:\n{self.tail()}")
            await asyncio.sleep(POLL_S)

    async def stop(self) -> float:
        """SIGTERM and wait for exit 0; returns the milliseconds it took."""
        t0 = time.perf_counter_ns()
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_DEADLINE_S):
                code = await self.proc.wait()
        except TimeoutError:
            raise BenchError(f"the daemon did not exit within {STOP_DEADLINE_S} s of SIGTERM:\n{self.tail()}") from None
        if code != 0:
            raise BenchError(f"the daemon exited with {code} after SIGTERM (expected 0):\n{self.tail()}")
        return (time.perf_counter_ns() - t0) / 1e6


@contextlib.asynccontextmanager
async def daemon(config: Path, python_flags: Sequence[str] = ()) -> AsyncIterator[Daemon]:
    """Spawn ``python -m s1mpled run --config config``; killed on the way out if still running."""
    socket = load_config(config, env={}).control_socket
    async with asyncio.TaskGroup() as tg:
        t0 = time.perf_counter_ns()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *python_flags, "-m", "s1mpled", "run", "--config", str(config),
            cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        d = Daemon(proc, t0, socket)
        tg.create_task(d.read_output())
        try:
            yield d
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def state_bytes(state_dir: Path) -> int:
    """Bytes of the state files (main generations only) a start has to load."""
    return sum(p.stat().st_size for p in state_dir.glob("*.state.json"))


def paper_generation(state_dir: Path) -> int:
    return inspect(state_dir / PAPER_STATE).record.generation


def generations(doc: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["state_generation"] for s in doc.get("strategies", [])}


async def timed_start(kind: str, index: int, config: Path, state_dir: Path) -> dict[str, Any]:
    """One daemon from spawn to trading to exit, with its phase times in milliseconds."""
    loaded = state_bytes(state_dir)  # 0 for a fresh start: the directory does not exist yet
    async with daemon(config) as d:
        doc = await d.wait_trading()
        stop_ms = await d.stop()
    a, b, r = d.mark("loading_state"), d.mark("reconciling"), d.mark("ready")
    return {
        "kind": kind,
        "index": index,
        "state_bytes_loaded": loaded,
        "to_loading_state_ms": a / 1e6,
        "recovery_a_ms": (b - a) / 1e6,
        "recovery_b_ms": (r - b) / 1e6,
        "to_ready_log_ms": r / 1e6,
        "to_trading_status_ms": d.mark("trading_status") / 1e6,
        "stop_ms": stop_ms,
        "generations_at_trading": generations(doc),
    }


async def seed_state(work: Path, state_dir: Path) -> dict[str, Any]:
    """Let a fast-ticking daemon trade for a few seconds, so restarts recover a state with orders and fills."""
    config = write_config(work / "seed", "s1mpled.yaml", state_dir, tick_interval=SEED_TICK)
    async with daemon(config) as d:
        await d.wait_trading()
        await asyncio.sleep(SEED_SECONDS)
        doc = await request(d.socket, "status")
        await d.stop()
    return {
        "tick_interval": SEED_TICK,
        "traded_s": SEED_SECONDS,
        "state_bytes": state_bytes(state_dir),
        "paper_exchange_generation": paper_generation(state_dir),
        "strategies": {
            s["name"]: {
                "state_generation": s["state_generation"],
                "open_orders": len(s["open_orders"]),
                "holdings": s["holdings"],
                "realized_pnl": s["realized_pnl"],
            }
            for s in doc["strategies"]
        },
    }


# -- /proc ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (bytes) and Threads of ``pid``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
        elif key == "Threads":
            out[key] = int(value)
    return out


def proc_io(pid: int) -> dict[str, int] | None:
    """/proc/PID/io counters, or None where the kernel does not show them."""
    try:
        lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    except OSError:
        return None
    return {k: int(v) for k, _, v in (line.partition(": ") for line in lines)}


def mapped_matches(pid: int, needles: Sequence[str]) -> list[str]:
    """Files mapped into ``pid`` whose path mentions one of ``needles`` (only C extensions get mapped)."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and any(f"/{n}" in parts[5] for n in needles):
            found.add(parts[5])
    return sorted(found)


async def idle(work: Path, seconds: float) -> dict[str, Any]:
    """One daemon left alone after trading starts: RSS, CPU, storage writes and saves over the window."""
    state_dir = work / "idle" / "state"
    config = write_config(work / "idle", "s1mpled.yaml", state_dir)
    async with daemon(config) as d:
        await d.wait_trading()
        await asyncio.sleep(SETTLE_S)
        pid = d.proc.pid
        t0, cpu0, io0, gen0 = time.perf_counter(), cpu_seconds(pid), proc_io(pid), paper_generation(state_dir)
        first = proc_status(pid)
        rss = [first["VmRSS"]]
        while (elapsed := time.perf_counter() - t0) < seconds:
            await asyncio.sleep(min(1.0, seconds - elapsed))
            rss.append(proc_status(pid)["VmRSS"])
        wall, cpu1, io1, gen1 = time.perf_counter() - t0, cpu_seconds(pid), proc_io(pid), paper_generation(state_dir)
        last = proc_status(pid)
        maps = mapped_matches(pid, HEAVY_IMPORTS)
        await d.stop()
    cpu = cpu1 - cpu0
    io = None if io0 is None or io1 is None else {k: io1[k] - io0[k] for k in io1 if k in io0}
    return {
        "window_s": wall,
        "settle_s": SETTLE_S,
        "rss_start_bytes": first["VmRSS"],
        "rss_end_bytes": last["VmRSS"],
        "rss_max_bytes": max(rss),
        "vm_hwm_bytes": last["VmHWM"],
        "threads": last["Threads"],
        "cpu_s": cpu,
        "cpu_percent_of_one_core": 100 * cpu / wall,
        "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
        "io": io,
        "paper_exchange_saves": gen1 - gen0,
        "mapped_heavy_libraries": maps,
    }


# -- imports --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One line of ``-X importtime``: a module, its own and its cumulative import time."""

    module: str
    self_us: int
    cumulative_us: int
    top_level: bool


def parse_importtime(lines: Sequence[str]) -> list[ImportRow]:
    """The ``-X importtime`` lines among ``lines``; the least indented ones are top-level imports."""
    found = [(m[4], int(m[1]), int(m[2]), len(m[3])) for line in lines if (m := _IMPORTTIME_RE.match(line))]
    top = min((indent for *_, indent in found), default=0)
    return [ImportRow(name, own, cum, indent == top) for name, own, cum, indent in found]


async def import_check(work: Path) -> dict[str, Any]:
    """A whole daemon start under ``-X importtime``: which modules it imported, ccxt above all."""
    state_dir = work / "importtime" / "state"
    config = write_config(work / "importtime", "s1mpled.yaml", state_dir)
    async with daemon(config, ["-X", "importtime"]) as d:
        await d.wait_trading()
        await d.stop()
    rows = parse_importtime(d.lines)
    if not rows:
        raise BenchError("-X importtime printed nothing the benchmark could read")
    modules = [r.module for r in rows]
    top = sorted((r for r in rows if r.top_level), key=lambda r: -r.cumulative_us)
    heavy = {lib: sorted(m for m in modules if m == lib or m.startswith(lib + ".")) for lib in HEAVY_IMPORTS}
    return {
        "modules_imported": len(modules),
        "top_level_import_ms_total": sum(r.cumulative_us for r in top) / 1000,
        "heaviest_top_level": [{"module": r.module, "cumulative_ms": r.cumulative_us / 1000} for r in top[:8]],
        "heavy_libraries_imported": {lib: len(mods) for lib, mods in heavy.items()},
        "ccxt_imported": bool(heavy["ccxt"]),
    }


# -- report ---------------------------------------------------------------------------------------------

STEPS = (
    ("to_loading_state_ms", 'spawn -> "phase loading-state" (interpreter, imports, config)'),
    ("recovery_a_ms", 'recovery A: load state (-> "phase reconciling")'),
    ("recovery_b_ms", 'recovery B: reconcile (-> "READY")'),
    ("to_ready_log_ms", "spawn -> READY (daemon log line)"),
    ("to_trading_status_ms", 'spawn -> `status` says "trading" (client, socket polled every 2 ms)'),
    ("stop_ms", "SIGTERM -> exit 0"),
)


def step_summaries(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 / min / max of every step over the runs, in milliseconds."""
    out = {}
    for key, _ in STEPS:
        s = summarize([round(r[key] * 1e6) for r in runs])
        out[key] = {"p50_ms": s.p50_ms, "min_ms": s.min_ms, "max_ms": s.max_ms, "mean_ms": s.mean_ms}
    return out


def _ms(x: float) -> str:
    return f"{x:.1f}"


def _load(report: dict[str, Any]) -> str:
    la = report["load_average_1_5_15"]
    return f"1-min load average {la['start'][0]:.2f} at start, {la['end'][0]:.2f} at end"


def markdown(report: dict[str, Any]) -> str:
    m, fs = report["machine"], report["machine"]["filesystem"]
    fresh, restart, floors = report["fresh"]["summary"], report["restart"]["summary"], report["floors"]
    n = report["runs"]
    out = [
        f"`s1mpled run` startup, paper mode, shipped config; state on **{fs['fstype']}** ({fs['device']} at "
        f"{fs['mountpoint']}); kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}; "
        f"{_load(report)}.",
        "",
        "| step (ms) | fresh p50 | fresh min-max | restart p50 | restart min-max |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in STEPS:
        f, r = fresh[key], restart[key]
        out.append(
            f"| {label} | {_ms(f['p50_ms'])} | {_ms(f['min_ms'])}-{_ms(f['max_ms'])} "
            f"| {_ms(r['p50_ms'])} | {_ms(r['min_ms'])}-{_ms(r['max_ms'])} |"
        )
    seed = report["restart"]["seed"]
    out += [
        "",
        f"{n} fresh runs (new state dir each); {n} restarts on one state seeded by {seed['traded_s']:.0f} s of "
        f"{seed['tick_interval']} ticks (paper exchange generation {seed['paper_exchange_generation']}, "
        f"{report['restart']['runs'][-1]['state_bytes_loaded']:,} B of state at the last restart).",
        "",
        "| floor: whole process (ms) | p50 | min | max |",
        "|---|---:|---:|---:|",
    ]
    for f in floors.values():
        out.append(f"| `{f['label']}` | {_ms(f['p50_ms'])} | {_ms(f['min_ms'])} | {_ms(f['max_ms'])} |")
    sp = report["fresh"]["split"]
    out += [
        "",
        f"Split of a fresh start (medians; each floor round paired with the start right after it): interpreter "
        f"{_ms(sp['interpreter_ms'])} ms + s1mpled imports {_ms(sp['s1mpled_imports_ms'])} ms + other work "
        f"before step A (cli, config, logging, event loop, state dir lock) {_ms(sp['other_before_a_ms'])} ms "
        f"+ recovery A {_ms(sp['recovery_a_ms'])} ms + recovery B {_ms(sp['recovery_b_ms'])} ms; "
        f"READY at {_ms(sp['ready_ms'])} ms.",
    ]
    i, imports = report["idle"], report["imports"]
    io, saves = i["io"], i["paper_exchange_saves"]
    written = "n/a" if io is None else f"{io.get('write_bytes', 0) / 1024:.0f} KiB ({io.get('syscw', 0)} write calls)"
    ccxt = "**yes**" if imports["ccxt_imported"] or any("ccxt" in p for p in i["mapped_heavy_libraries"]) else "no"
    others = ", ".join(f"{lib} {k}" for lib, k in imports["heavy_libraries_imported"].items() if k) or "none"
    out += [
        "",
        f"| idle daemon, {i['window_s']:.0f} s after trading + {i['settle_s']:.0f} s | value |",
        "|---|---:|",
        f"| RSS at start / end / max (MiB) | {i['rss_start_bytes'] / MIB:.1f} / {i['rss_end_bytes'] / MIB:.1f} "
        f"/ {i['rss_max_bytes'] / MIB:.1f} |",
        f"| peak RSS since spawn (VmHWM, MiB) | {i['vm_hwm_bytes'] / MIB:.1f} |",
        f"| CPU utime+stime | {i['cpu_s']:.2f} s = {i['cpu_percent_of_one_core']:.2f} % of one core |",
        f"| threads | {i['threads']} |",
        f"| written to storage (/proc/PID/io) | {written} |",
        f"| paper exchange durable saves | {saves} ({saves / i['window_s']:.2f}/s) |",
        f"| ccxt imported | {ccxt} (-X importtime: {imports['modules_imported']} modules; /proc/PID/maps: "
        f"{len(i['mapped_heavy_libraries'])} heavy-library files) |",
        f"| other heavy libraries imported (modules) | {others} |",
        "",
        "| heaviest top-level imports of a daemon start (-X importtime) | cumulative ms |",
        "|---|---:|",
    ]
    out += [f"| `{r['module']}` | {r['cumulative_ms']:.1f} |" for r in imports["heaviest_top_level"]]
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=10, help="fresh starts and restarts each (default 10)")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="idle measurement window (default 60)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.idle_seconds <= 0:
        p.error("--idle-seconds must be > 0")
    return args


async def run_daemons(work: Path, runs: int, idle_seconds: float) -> dict[str, Any]:
    await floor_round(0)  # warm-up: page cache and .pyc files, discarded
    rounds, fresh = [], []
    for i in range(runs):  # each fresh start right after one round of floors: both see the same machine load
        rounds.append(await floor_round(i))
        run_dir = work / f"fresh-{i:02d}"
        config = write_config(run_dir, "s1mpled.yaml", run_dir / "state")
        fresh.append(await timed_start("fresh", i, config, run_dir / "state"))
    print(f"  {runs} floor rounds and fresh starts: done", file=sys.stderr)
    restart_state = work / "restart" / "state"
    config = write_config(work / "restart", "s1mpled.yaml", restart_state)
    seed = await seed_state(work, restart_state)
    restart = [await timed_start("restart", i, config, restart_state) for i in range(runs)]
    print(f"  {runs} restarts: done", file=sys.stderr)
    imports = await import_check(work)
    print(f"  -X importtime run: done; idling {idle_seconds:.0f} s", file=sys.stderr)
    return {
        "floors": floor_summaries(rounds),
        "floor_rounds_ns": rounds,
        "fresh": {"runs": fresh, "summary": step_summaries(fresh), "split": paired_split(rounds, fresh)},
        "restart": {"seed": seed, "runs": restart, "summary": step_summaries(restart)},
        "imports": imports,
        "idle": await idle(work, idle_seconds),
    }


def _bench_error(exc: BaseException) -> BenchError | None:
    """The BenchError in ``exc`` (task groups wrap it), if there is one."""
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _bench_error(inner)) is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work, fs = make_workdir("startup", args.dir)
    started, t0, load_start = int(time.time()), time.perf_counter(), os.getloadavg()
    try:
        results = asyncio.run(run_daemons(work, args.runs, args.idle_seconds))
    except (BenchError, BaseExceptionGroup) as exc:
        failure = _bench_error(exc)
        if failure is None:
            raise
        print(f"startup benchmark failed: {failure}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "startup",
        "started_unix": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "python": sys.executable,
        "runs": args.runs,
        "machine": machine_facts(fs),
        "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},  # other work on the box skews all this
        **results,
    }
    write_report(args.json, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
