"""What every live-path benchmark does around its measurement: a work folder on a real disk, logging
to a file, the report as JSON and as a markdown table.

Benchmarks run as scripts (``python bench/X.py``), so ``bench/`` is ``sys.path[0]`` and this module is
imported as ``common``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from state_save import FsInfo, filesystem_of, machine_facts

from s1mpled.logs import setup_logging

__all__ = ["MEMORY_FS", "make_workdir", "run_benchmark", "wall_ms", "write_report"]

MEMORY_FS = frozenset({"tmpfs", "ramfs", "devtmpfs"})


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def make_workdir(name: str, parent: Path) -> tuple[Path, FsInfo]:
    """A fresh folder under ``parent`` (a real disk by default), and which file system it is on."""
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"s1mpled-{name}-", dir=parent))
    fs = filesystem_of(work)
    print(f"benchmarking in {work} ({fs.fstype} on {fs.device}, mounted at {fs.mountpoint})", file=sys.stderr)
    if fs.fstype in MEMORY_FS:
        print(f"WARNING: {fs.fstype} is memory-backed; fsync is free there", file=sys.stderr)
    return work, fs


def write_report(path: Path, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> None:
    """The report as JSON at ``path``, and its markdown table on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown(report))
    print(f"\n(wall time {report['duration_s']} s; JSON written to {path})", file=sys.stderr)


def run_benchmark(
    name: str,
    args: argparse.Namespace,
    measure: Callable[[Path, argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    markdown: Callable[[dict[str, Any]], str],
    *,
    operation: str,
) -> int:
    """Run ``measure`` in a fresh folder under ``args.dir``, then write ``args.json`` and print the table."""
    work, fs = make_workdir(name, args.dir)
    started, t0, load = int(time.time()), time.perf_counter(), os.getloadavg()
    try:
        with (work / "bench.log").open("w") as log_stream:
            setup_logging("info", operation=operation, stream=log_stream, journald=False)
            try:
                results = asyncio.run(measure(work, args))
            finally:
                setup_logging("warning", stream=sys.stderr, journald=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import ccxt

    report = {
        "benchmark": name,
        "started_unix": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "machine": machine_facts(fs),
        "loadavg": " ".join(f"{x:.2f}" for x in load),
        "ccxt": ccxt.__version__,
        **results,
    }
    write_report(args.json, report, markdown)
    return 0
