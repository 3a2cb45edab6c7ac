"""Benchmark: how long systemd leaves s1mpled down after a crash -- ``kill -9`` of the main process to
READY=1 of its successor -- from systemd's own timestamps.

Why: s1mpled is crash-only (§6.3): systemd is the supervisor, and every restart is a full recovery (A: load
state, B: reconcile) before READY=1. The outage a crash costs is RestartSec plus that recovery start, as
systemd itself sees it. Target: median <= 1.5 s with RestartSec=500ms.

Set-up, all real (tests/container.py): the .deb built by packaging/build-deb.sh (cached), installed with
apt-get into a systemd 252 booted as PID 1 of a systemd-nspawn container, running the packaged paper-mode
configuration. One drop-in changes the unit: ``RestartSec=500ms``, and ``StartLimitIntervalSec=0`` because
``--kills`` crashes within two minutes would otherwise hit the packaged StartLimitBurst=5.

Each kill: ``kill -9 MainPID`` inside the container, then wait (polling ``systemctl show``) until the unit is
active with a new main PID, and read three CLOCK_MONOTONIC timestamps systemd recorded:

* ``ActiveExitTimestampMonotonic``  -- systemd saw the main process die (the unit left "active");
* ``ExecMainStartTimestampMonotonic`` -- it forked the new main process (after RestartSec);
* ``ActiveEnterTimestampMonotonic``  -- it received the new process's READY=1.

down = ActiveEnter - ActiveExit = restart delay (ExecMainStart - ActiveExit) + start to READY
(ActiveEnter - ExecMainStart). Between kills the daemon trades for ``--settle`` seconds.

Usage: ``python bench/recovery.py [--kills 10] [--restart-sec 500ms] [--settle 1] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from state_save import filesystem_of, machine_facts  # bench/ is sys.path[0] when run as a script

from tests.container import (
    ROOTFS_PACKAGES,
    Container,
    Phases,
    build_deb,
    deb_depends,
    ensure_host_packages,
    rootfs_tarball,
    wait_until,
)

UNIT = "s1mpled.service"
DROPIN = "/etc/systemd/system/s1mpled.service.d/bench.conf"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "recovery.json"
TARGET_S = 1.5
TIMESTAMPS = ("ActiveExitTimestampMonotonic", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
PARTS = (
    ("down_ms", "kill -9 -> READY=1 (down)"),
    ("restart_delay_ms", "restart delay"),
    ("start_ms", "start -> READY=1"),
)


def active(ct: Container, not_pid: str) -> dict[str, str] | None:
    """The unit's state once it is active (running) with a main PID other than ``not_pid``."""
    st = ct.show(UNIT, "ActiveState", "SubState", "MainPID", "NRestarts", *TIMESTAMPS)
    ready = (st["ActiveState"], st["SubState"]) == ("active", "running") and st["MainPID"] not in ("0", not_pid)
    return st if ready else None


def kill_once(ct: Container, settle_s: float) -> dict[str, Any]:
    """One kill -9 and the restart it causes, in milliseconds from systemd's timestamps."""
    before = wait_until(lambda: active(ct, ""), 120, f"{UNIT} active")
    time.sleep(settle_s)  # let it trade: a crash hits a working daemon, not one that just came up
    ct.run("kill", "-9", before["MainPID"])
    after = wait_until(lambda: active(ct, before["MainPID"]), 120, f"{UNIT} restarted")
    exit_us, start_us, ready_us = (int(after[k]) for k in TIMESTAMPS)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    assert exit_us > int(before["ActiveEnterTimestampMonotonic"]), "ActiveExit is not this kill's"
    return {
        "down_ms": (ready_us - exit_us) / 1000,
        "restart_delay_ms": (start_us - exit_us) / 1000,
        "start_ms": (ready_us - start_us) / 1000,
        "pid_killed": int(before["MainPID"]),
    }


def run(kills: int, restart_sec: str, settle_s: float) -> dict[str, Any]:
    phases = Phases()
    with phases("host packages"):
        ensure_host_packages()
    with phases("build"):
        deb = build_deb()
    with phases("rootfs"):
        tarball = rootfs_tarball([*ROOTFS_PACKAGES, *deb_depends(deb)])
    with phases("unpack"), Container(tarball) as ct:
        with phases("boot"):
            ct.boot()
        with phases("install"):
            ct.install_deb(deb)
        ct.write(DROPIN, f"[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestartSec={restart_sec}\n")
        ct.systemctl("daemon-reload")
        ct.systemctl("restart", UNIT)
        samples = []
        with phases("kills"):
            for i in range(kills):
                samples.append(kill_once(ct, settle_s))
                print(f"  kill {i + 1}/{kills}: down {samples[-1]['down_ms']:.0f} ms", file=sys.stderr)
        version = ct.run("dpkg-query", "-W", "-f=${Version}", "s1mpled").stdout
        systemd = ct.run("systemctl", "--version").stdout.split()[1]
    summary = {
        key: {
            "median_ms": statistics.median(s[key] for s in samples),
            "min_ms": min(s[key] for s in samples),
            "max_ms": max(s[key] for s in samples),
        }
        for key, _ in PARTS
    }
    return {
        "package_version": version,
        "systemd_version": systemd,
        "mode": "paper (packaged config)",
        "restart_sec": restart_sec,
        "settle_s": settle_s,
        "kills": samples,
        "summary": summary,
        "target_median_down_ms": TARGET_S * 1000,
        "meets_target": summary["down_ms"]["median_ms"] <= TARGET_S * 1000,
        "setup_phases_s": {k: round(v, 2) for k, v in phases.seconds.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    verdict = "meets" if report["meets_target"] else "**misses**"
    out = [
        f"Recovery after `kill -9` under systemd {report['systemd_version']} (PID 1 of a systemd-nspawn container), "
        f"s1mpled {report['package_version']} from its .deb, {report['mode']}, RestartSec={report['restart_sec']}; "
        f"kernel {m['kernel']}, {m['cpu_count']} CPUs ({m['cpu_model']}); {len(report['kills'])} kills.",
        "",
        "| systemd timestamps (ms) | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in PARTS:
        s = report["summary"][key]
        out.append(f"| {label} | {s['median_ms']:.0f} | {s['min_ms']:.0f} | {s['max_ms']:.0f} |")
    down = report["summary"]["down_ms"]["median_ms"]
    out += ["", f"Median down time {down:.0f} ms {verdict} the target of {report['target_median_down_ms']:.0f} ms."]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kills", type=int, default=10, help="kill -9 rounds (default 10)")
    p.add_argument("--restart-sec", default="500ms", help="RestartSec= of the drop-in (default 500ms)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds the daemon trades before each kill (default 1)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("recovery benchmark: needs root (systemd-nspawn, apt-get, cgroups)", file=sys.stderr)
        return 1
    started, t0, load_start = int(time.time()), time.perf_counter(), os.getloadavg()
    results = run(args.kills, args.restart_sec, args.settle)
    report = {
        "benchmark": "recovery",
        "started_unix": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "machine": machine_facts(filesystem_of(Path("/var/tmp"))),
        "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
        **results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\n(wall time {report['duration_s']} s; JSON written to {args.json})", file=sys.stderr)
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
