"""``s1mpled status --all``: every instance on the host in one table (s1mpled.service and s1mpled@NAME).

Instances are found through systemd (every loaded s1mpled unit: running, failed, or stopped but enabled;
systemd forgets a stopped instance that was only started by hand, so it is not listed); each running one is
asked over its own control socket, found in its configuration the way its unit finds it
(``/etc/s1mpled/s1mpled.yaml``, ``/etc/s1mpled/NAME.yaml``). An instance that does not answer is a row
saying why, never a missing row: the operator asked about every instance.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["Instance", "config_of", "discover", "format_fleet", "gather", "row_of"]

_UNIT_RE = re.compile(r"^s1mpled(@[A-Za-z0-9_.:-]+)?\.service$")


@dataclass(frozen=True, slots=True)
class Instance:
    """One unit as systemd shows it, and what its daemon answered (``status``) or why it did not."""

    unit: str
    active: str
    sub: str
    status: Mapping[str, Any] | None = None
    error: str = ""


def config_of(unit: str, etc: Path = Path("/etc/s1mpled")) -> Path:
    """The configuration the unit's ExecStart= names: s1mpled.yaml, or NAME.yaml for s1mpled@NAME."""
    name = unit.removesuffix(".service")
    return etc / ("s1mpled.yaml" if name == "s1mpled" else f"{name.partition('@')[2]}.yaml")


def row_of(inst: Instance, now_ms: int) -> dict[str, str]:
    """The table's columns for one instance (pure: from what systemd and the daemon said, and the time)."""
    doc = inst.status or {}
    breaker = doc.get("breaker") or {}
    rec = doc.get("last_reconciliation") or {}
    strategies = doc.get("strategies") or []
    pnl = sum((Decimal(str(s.get("realized_pnl") or 0)) for s in strategies), Decimal(0))
    return {
        "unit": inst.unit,
        "systemd": f"{inst.active}/{inst.sub}",
        "phase": str(doc.get("phase", "-")) if inst.status is not None else f"({inst.error or 'not running'})",
        "breaker": str(breaker.get("state", "-")),
        "last reconciliation": f"{(now_ms - at) // 1000} s ago" if isinstance(at := rec.get("at_ms"), int) else "-",
        "strategies": str(len(strategies)) if inst.status is not None else "-",
        "pnl": format(pnl.normalize(), "f") if inst.status is not None else "-",
    }


def format_fleet(instances: Sequence[Instance], now_ms: int) -> str:
    if not instances:
        return "no s1mpled instance is loaded on this host (systemctl list-units 's1mpled*')"
    rows = [row_of(i, now_ms) for i in instances]
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ gathering (I/O)


def discover() -> list[tuple[str, str, str]]:
    """(unit, ActiveState, SubState) of every loaded s1mpled unit; [] without systemd."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return []
    out = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--type=service", "s1mpled*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and _UNIT_RE.match(fields[0]) and fields[1] != "not-found":
            found.append((fields[0], fields[2], fields[3]))
    return sorted(found)


async def _ask(unit: str, active: str, sub: str, timeout_s: float) -> Instance:
    from s1mpled.config import resolve_control_socket  # noqa: PLC0415
    from s1mpled.control import request  # noqa: PLC0415
    from s1mpled.errors import S1mpledError  # noqa: PLC0415

    if active not in ("active", "activating", "reloading"):
        return Instance(unit, active, sub, error="not running")
    try:
        socket = await asyncio.to_thread(resolve_control_socket, config_of(unit))  # the socket only
        doc = await request(socket, "status", {}, timeout_s=timeout_s)
    except S1mpledError as exc:
        return Instance(unit, active, sub, error=str(exc))
    return Instance(unit, active, sub, status=doc)


def gather(timeout_s: float) -> list[Instance]:
    """Every instance, each asked at the same time (one slow daemon does not hold up the table)."""

    async def everyone() -> list[Instance]:
        return list(await asyncio.gather(*(_ask(u, a, s, timeout_s) for u, a, s in discover())))

    return asyncio.run(everyone())
