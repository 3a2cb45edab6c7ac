"""``s1mpled doctor``: what breaks deployments, checked in one command, each problem with its fix.

Split like the daemon: the verdicts are pure functions of facts (``judge_*``: no I/O, testable with
any numbers), and the gatherers at the bottom read those facts from the file system, systemd and the
exchange. A check that cannot be made (no systemd, an exchange that does not offer the endpoint) is a
warning that says so, never a silent pass: "unknown" is a state.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s1mpled.clock import exchange_offset_s
from s1mpled.config import Config
from s1mpled.credentials import Credentials, load_credentials
from s1mpled.errors import S1mpledError

__all__ = [
    "MAX_CLOCK_OFFSET_MS",
    "MIN_FREE_BYTES",
    "Finding",
    "exit_code",
    "format_findings",
    "judge_api_key",
    "judge_clock",
    "judge_exchange_status",
    "judge_state_dir",
    "judge_units",
    "run_doctor",
]

OK, WARN, FAIL = "ok", "warn", "fail"
# Binance refuses a request whose timestamp is 1000 ms ahead of its clock or older than recvWindow
# (-1021). Half the ahead-limit leaves room for the request's own travel time.
MAX_CLOCK_OFFSET_MS = 500
MIN_FREE_BYTES = 100 * 1024 * 1024  # a save needs room for the journal next to NAME and NAME.prev


@dataclass(frozen=True, slots=True)
class Finding:
    """One check: ``level`` ok / warn / fail, what was found, and how to fix it (if not ok)."""

    check: str
    level: str
    detail: str
    fix: str = ""


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when nothing failed (warnings are shown but do not fail), 1 otherwise."""
    return 1 if any(f.level == FAIL for f in findings) else 0


def format_findings(findings: Sequence[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.level.upper():4}  {f.check}: {f.detail}")
        if f.fix and f.level != OK:
            lines.append(f"      fix: {f.fix}")
    failed = sum(f.level == FAIL for f in findings)
    warned = sum(f.level == WARN for f in findings)
    lines.append(f"{len(findings)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines)


def as_json(findings: Sequence[Finding]) -> list[dict[str, str]]:
    return [asdict(f) for f in findings]


# ----------------------------------------------------------------------------- verdicts (pure)


def judge_clock(offset_ms: int) -> Finding:
    """``offset_ms``: the exchange's clock minus ours, measured at the middle of the request."""
    detail = f"our clock is {abs(offset_ms)} ms {'behind' if offset_ms > 0 else 'ahead of'} the exchange's"
    if abs(offset_ms) <= MAX_CLOCK_OFFSET_MS:
        return Finding("clock", OK, detail)
    fix = "enable time synchronisation (timedatectl set-ntp true; systemd-timesyncd or chrony)"
    return Finding("clock", FAIL, f"{detail} (more than {MAX_CLOCK_OFFSET_MS} ms: orders fail with -1021)", fix)


@dataclass(frozen=True, slots=True)
class PathFacts:
    """What ``stat`` says about one entry of the state directory (``lstat``: links are not followed)."""

    name: str
    kind: str  # "dir", "file", "link", "other"
    mode: int
    uid: int


def judge_state_dir(
    where: str, exists: bool, directory: PathFacts | None, entries: Sequence[PathFacts], free_bytes: int | None
) -> list[Finding]:
    """The state directory: present, a private directory, every entry a regular file of its owner, room."""
    if not exists or directory is None:
        fix = "start the daemon once (systemd creates it: StateDirectory=) or create it owned by the daemon's user"
        return [Finding("state directory", FAIL, f"{where} does not exist", fix)]
    if directory.kind != "dir":
        return [Finding("state directory", FAIL, f"{where} is not a directory ({directory.kind})", "move it away")]
    found = []
    if directory.mode & 0o077:
        fix = f"chmod 0700 {where} (the books are private to the daemon)"
        found.append(Finding("state directory", FAIL, f"{where} is mode {directory.mode:04o}", fix))
    # Sub-directories are allowed: the packaged layout keeps each s1mpled@NAME's books in one below
    # /var/lib/s1mpled. A link, a FIFO or a file of another owner is what the daemon refuses.
    strange = [e for e in entries if e.kind not in ("file", "dir") or (e.kind == "file" and e.uid != directory.uid)]
    for e in strange:
        what = e.kind if e.kind != "file" else f"owned by uid {e.uid}, not {directory.uid}"
        fix = f"remove or chown {where}/{e.name}: the daemon refuses to start next to it"
        found.append(Finding("state directory", FAIL, f"{where}/{e.name}: {what}", fix))
    if free_bytes is not None and free_bytes < MIN_FREE_BYTES:
        mib = free_bytes // (1024 * 1024)
        fix = f"free space on the file system of {where}: with a full disk the daemon stops placing orders"
        found.append(Finding("free space", FAIL, f"{mib} MiB free below {where}", fix))
    if not found:
        free = "" if free_bytes is None else f", {free_bytes // (1024 * 1024)} MiB free"
        files = sum(e.kind == "file" for e in entries)
        found.append(Finding("state directory", OK, f"{where}: private, {files} file(s){free}"))
    return found


def judge_api_key(restrictions: Mapping[str, Any] | None, why_unknown: str = "") -> list[Finding]:
    """Binance's apiRestrictions: the key must trade spot and must NOT withdraw (a leaked key then cannot
    empty the account); without an IP restriction that advice is only a warning."""
    if restrictions is None:
        return [Finding("API key permissions", WARN, f"not checked: {why_unknown}", "check them on the exchange")]
    found = []
    if restrictions.get("enableWithdrawals") is not False:
        fix = "edit the key on the exchange: disable withdrawals (a trading daemon never needs them)"
        found.append(Finding("API key permissions", FAIL, "withdrawals are ENABLED for this key", fix))
    if restrictions.get("enableSpotAndMarginTrading") is not True:
        fix = "edit the key on the exchange: enable spot trading"
        found.append(Finding("API key permissions", FAIL, "spot trading is not enabled for this key", fix))
    if restrictions.get("ipRestrict") is not True:
        fix = "restrict the key to this server's IP address on the exchange"
        found.append(Finding("API key permissions", WARN, "the key is usable from any IP address", fix))
    if not any(f.level == FAIL for f in found):
        found.insert(0, Finding("API key permissions", OK, "spot trading enabled, withdrawals disabled"))
    return found


def judge_exchange_status(reachable: bool, detail: str, status: Mapping[str, Any] | None) -> Finding:
    """Reachability (any answer) and Binance's system status (0 normal, 1 maintenance)."""
    if not reachable:
        return Finding("exchange", FAIL, f"unreachable: {detail}", "check DNS, the firewall and live.urls")
    if status is None:
        return Finding("exchange", WARN, f"reachable; system status not offered ({detail})")
    if status.get("status") == 0:
        return Finding("exchange", OK, f"reachable, system status {status.get('msg', 'normal')}")
    fix = "wait for the maintenance to end; the daemon keeps its books and reconciles when it is back"
    return Finding("exchange", FAIL, f"system status {status.get('status')}: {status.get('msg')}", fix)


def judge_units(under_systemd: bool, units: Mapping[str, Mapping[str, str]]) -> list[Finding]:
    """The daemon's unit active with a watchdog, the reconcile timer enabled and active."""
    if not under_systemd:
        return [Finding("systemd units", WARN, "not checked: this system does not run systemd")]
    found = []
    for unit, props in units.items():
        active, enabled = props.get("ActiveState", "?"), props.get("UnitFileState", "?")
        if unit.endswith(".timer"):
            ok = active == "active" and enabled == "enabled"
            fix = f"systemctl enable --now {unit}"
            detail = f"{unit}: {active}, {enabled}"
        else:
            watchdog = props.get("WatchdogUSec", "0")
            ok = active == "active" and watchdog not in ("0", "infinity", "")
            fix = f"systemctl start {unit}; journalctl -u {unit} -p err says why it stopped"
            detail = f"{unit}: {active}/{props.get('SubState', '?')}, {enabled}, watchdog {watchdog}"
        found.append(Finding("systemd units", OK if ok else FAIL, detail, fix))
    return found


# ------------------------------------------------------------------------------ gathering (I/O)


def _facts(path: Path) -> PathFacts:
    st = os.lstat(path)
    kind = (
        "dir"
        if stat.S_ISDIR(st.st_mode)
        else "file"
        if stat.S_ISREG(st.st_mode)
        else "link"
        if stat.S_ISLNK(st.st_mode)
        else "other"
    )
    return PathFacts(path.name, kind, stat.S_IMODE(st.st_mode), st.st_uid)


def check_state_dir(state_dir: Path) -> list[Finding]:
    try:
        directory = _facts(state_dir)
    except FileNotFoundError:
        return judge_state_dir(str(state_dir), False, None, [], None)
    except OSError as exc:
        return [Finding("state directory", FAIL, f"{state_dir}: {exc.strerror}", "run doctor as root")]
    try:
        entries = [_facts(p) for p in sorted(state_dir.iterdir())] if directory.kind == "dir" else []
        free = shutil.disk_usage(state_dir).free
    except PermissionError:
        return [Finding("state directory", WARN, f"{state_dir}: not readable by this user", "run doctor as root")]
    return judge_state_dir(str(state_dir), True, directory, entries, free)


def check_units(units: Sequence[str]) -> list[Finding]:
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return judge_units(False, {})
    props = "ActiveState,SubState,UnitFileState,WatchdogUSec"
    shown: dict[str, dict[str, str]] = {}
    for unit in units:
        out = subprocess.run(
            ["systemctl", "show", unit, f"--property={props}"], capture_output=True, text=True, check=False
        ).stdout
        shown[unit] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return judge_units(True, shown)


def check_credentials_file(config: Config) -> tuple[Finding, Path | None]:
    """The key file the daemon will read (its source under /etc/s1mpled/credentials outside systemd)."""
    from s1mpled.credentials import check_credentials  # noqa: PLC0415

    assert config.live is not None
    try:
        path = check_credentials(config.live.credentials, str(config.path), os.environ)
    except S1mpledError as exc:
        return Finding("credentials", FAIL, str(exc), "see README.Debian: Going live"), None
    return Finding("credentials", OK, f"{path}: private, api_key and secret present"), path


async def _exchange_checks(config: Config, creds: Credentials) -> list[Finding]:
    """Clock, reachability, system status and the key's permissions, with ccxt's REST client."""
    import ccxt.async_support as ccxt  # noqa: PLC0415 -- live mode only

    from s1mpled.environments.live import ccxt_urls  # noqa: PLC0415

    assert config.live is not None
    ex = getattr(ccxt, config.live.exchange)(
        {"apiKey": creds.api_key, "secret": creds.secret, "timeout": int(config.live.request_timeout_s * 1000)}
    )
    urls = ccxt_urls(config.live.urls)
    if urls is not None:
        ex.urls["api"] = urls
    found: list[Finding] = []
    try:
        try:
            offset = await exchange_offset_s(ex.fetch_time)
        except Exception as exc:  # any failure is the finding
            return [judge_exchange_status(False, f"{type(exc).__name__}: {exc}", None)]
        if offset is None:
            return [judge_exchange_status(False, "its time request answered no time", None)]
        found.append(judge_clock(int(offset * 1000)))
        try:
            status = await ex.sapi_get_system_status()
            found.append(judge_exchange_status(True, "", status))
        except Exception as exc:
            found.append(judge_exchange_status(True, f"{type(exc).__name__}", None))
        try:
            restrictions = await ex.sapi_get_account_apirestrictions()
            found.extend(judge_api_key(restrictions))
        except Exception as exc:
            found.extend(judge_api_key(None, f"{type(exc).__name__}: {exc}"))
    finally:
        await ex.close()
    return found


def run_doctor(config: Config, units: Sequence[str]) -> list[Finding]:
    """Every check for this configuration (already loaded: a bad config never gets here)."""
    findings = [Finding("configuration", OK, f"{config.path}: valid ({config.mode} mode)")]
    findings += check_state_dir(Path(config.state_dir))
    if config.mode == "live" and config.live is not None:
        credentials, key_file = check_credentials_file(config)
        findings.append(credentials)
        if key_file is not None:
            creds = load_credentials(str(key_file.absolute()), str(config.path), {})
            findings += asyncio.run(_exchange_checks(config, creds))
    else:
        findings.append(Finding("exchange", OK, "paper mode: the built-in simulated exchange"))
    findings += check_units(units)
    return findings
