"""The systemd units, the Debian packaging and the apt repository script, checked without a build.

What a user gets from ``apt install ./s1mpled_*.deb`` is decided by these files, so they are tested
like code: the units' supervision and sandbox settings (and systemd 252's own verdict on them:
``systemd-analyze verify`` and ``security --offline``), the packaged configuration, the maintainer
scripts' behaviour on remove/purge, the man page and shell completion against the real CLI, and
the flat apt repository as apt itself reads it. The package build and the boot-a-container test
live elsewhere (packaging/build-deb.sh); everything here runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from s1mpled import __version__
from s1mpled.cli import main
from s1mpled.config import load_config
from tests.container import build_deb

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
DEBIAN = ROOT / "debian"
PACKAGING = ROOT / "packaging"
DAEMON_UNITS = ("s1mpled.service", "s1mpled@.service")
ALL_UNITS = (
    *DAEMON_UNITS,
    "s1mpled-reconcile.service",
    "s1mpled-reconcile.timer",
    "s1mpled-metrics.service",
    "s1mpled-metrics.timer",
    "s1mpled-alert@.service",
    "s1mpled-dashboard.service",
)
DASHBOARD = "s1mpled-dashboard.service"
VENV_BIN = "/opt/venvs/s1mpled/bin/s1mpled"
MAX_EXPOSURE = 1.5

Unit = dict[str, dict[str, list[str]]]

# The sandbox every unit that runs s1mpled code must have (systemd 252 spellings).
SANDBOX = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "DevicePolicy": "closed",
    "ProtectHostname": "yes",
    "ProtectClock": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


def parse_unit(path: Path) -> Unit:
    """A unit file as section -> key -> every value in order (systemd allows repeated keys)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: keep settings on one line: {line}"
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        assert section is not None, f"{path.name}: setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    """The single value of ``key``; fails if it is missing or set more than once."""
    values = unit.get(section, {}).get(key)
    assert values is not None, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def units() -> dict[str, Unit]:
    return {name: parse_unit(SYSTEMD / name) for name in ALL_UNITS}


def _fake_root(tmp_path: Path) -> Path:
    """A minimal file system with our units, systemd's own units and stand-ins for the executables."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for exe in (root / VENV_BIN.lstrip("/"), root / "usr/bin/kill"):
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in ALL_UNITS:
        shutil.copy(SYSTEMD / name, root / "etc/systemd/system" / name)
    return root


def exposure(unit_path: Path) -> float:
    """``systemd-analyze security --offline=yes`` overall exposure (0 = locked down, 10 = unconfined)."""
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert found, out.stdout[-500:]
    return float(found.group(1))


# ----------------------------------------------------------------------------------------- units


def test_main_unit_supervises_the_daemon() -> None:
    """The main unit starts the venv's daemon as a notify service with watchdog and a bounded restart policy."""
    u = parse_unit(SYSTEMD / "s1mpled.service")
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{VENV_BIN} run --config /etc/s1mpled/s1mpled.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "10s",
        "Restart": "on-failure",
        "RestartSec": "2s",
        "RestartPreventExitStatus": "78",
        "TimeoutStopSec": "30",
        "User": "s1mpled",
        "Group": "s1mpled",
    }
    assert {key: one(u, "Service", key) for key in expected} == expected
    assert one(u, "Unit", "StartLimitIntervalSec") == "300"  # a crash loop; manual restarts count too
    assert one(u, "Unit", "StartLimitBurst") == "10"
    assert one(u, "Install", "WantedBy") == "multi-user.target"


def test_main_unit_directories_and_credentials() -> None:
    """State 0700, runtime 0750 kept across stops (instances live below it), keys from the credentials dir."""
    u = parse_unit(SYSTEMD / "s1mpled.service")
    assert one(u, "Service", "StateDirectory") == "s1mpled"
    assert one(u, "Service", "StateDirectoryMode") == "0700"
    assert one(u, "Service", "RuntimeDirectory") == "s1mpled"
    assert one(u, "Service", "RuntimeDirectoryMode") == "0750"
    assert one(u, "Service", "RuntimeDirectoryPreserve") == "yes"
    assert one(u, "Service", "LoadCredential") == "s1mpled:/etc/s1mpled/credentials"


@pytest.mark.parametrize("name", [*DAEMON_UNITS, "s1mpled-reconcile.service", "s1mpled-alert@.service"])
def test_units_that_run_our_code_are_sandboxed(name: str) -> None:
    """Every service running s1mpled code has the full sandbox and a system call filter."""
    u = parse_unit(SYSTEMD / name)
    assert {key: one(u, "Service", key) for key in SANDBOX} == SANDBOX
    assert u["Service"]["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    families = set(one(u, "Service", "RestrictAddressFamilies").split())
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_the_metrics_unit_is_sandboxed_but_may_write_node_exporters_directory() -> None:
    """s1mpled-metrics.service runs as root with one capability (DAC_OVERRIDE: node_exporter's directory and the
    daemon's socket belong to other users), can write only that directory, files readable by the collector,
    and is skipped where node_exporter is not installed."""
    u = parse_unit(SYSTEMD / "s1mpled-metrics.service")
    differs = {"CapabilityBoundingSet": "CAP_DAC_OVERRIDE", "UMask": "0022"}
    assert {key: one(u, "Service", key) for key in SANDBOX} == {**SANDBOX, **differs}
    assert u["Service"]["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert one(u, "Service", "ReadWritePaths") == "/var/lib/prometheus/node-exporter"
    assert one(u, "Service", "RestrictAddressFamilies") == "AF_UNIX" and one(u, "Service", "PrivateNetwork") == "yes"
    assert one(u, "Unit", "ConditionPathIsDirectory") == "/var/lib/prometheus/node-exporter"
    assert "User" not in u["Service"]


def test_template_is_the_main_unit_per_instance() -> None:
    """s1mpled@.service differs from s1mpled.service only in the per-instance config, state and socket paths."""
    main_unit, template = (parse_unit(SYSTEMD / n)["Service"] for n in DAEMON_UNITS)
    per_instance = {"ExecStart", "StateDirectory", "RuntimeDirectory", "RuntimeDirectoryPreserve"}
    assert {k: v for k, v in main_unit.items() if k not in per_instance} == {
        k: v for k, v in template.items() if k not in per_instance
    }
    assert template["ExecStart"] == [f"{VENV_BIN} run --config /etc/s1mpled/%i.yaml"]
    assert template["StateDirectory"] == ["s1mpled/%i"]
    assert template["RuntimeDirectory"] == ["s1mpled/%i"]
    assert "RuntimeDirectoryPreserve" not in template


def test_reconcile_service_is_a_client_of_the_running_daemon() -> None:
    """The reconcile oneshot needs the daemon running, owns no directory and cannot reach the state."""
    u = parse_unit(SYSTEMD / "s1mpled-reconcile.service")
    assert one(u, "Unit", "Requisite") == "s1mpled.service"
    assert one(u, "Unit", "After") == "s1mpled.service"
    assert one(u, "Service", "Type") == "oneshot"
    assert one(u, "Service", "ExecStart").startswith(f"{VENV_BIN} reconcile --config /etc/s1mpled/s1mpled.yaml")
    assert one(u, "Service", "User") == "s1mpled"
    service = u["Service"]
    assert not {"StateDirectory", "RuntimeDirectory", "ReadWritePaths", "LoadCredential"} & service.keys()
    assert one(u, "Service", "InaccessiblePaths") == "-/var/lib/s1mpled"
    assert one(u, "Service", "RestrictAddressFamilies") == "AF_UNIX"
    assert "Install" not in u  # started by its timer only


def test_reconcile_timer_every_five_minutes() -> None:
    """The timer fires 5 minutes after boot and 5 minutes after each run, and is enabled via timers.target."""
    u = parse_unit(SYSTEMD / "s1mpled-reconcile.timer")
    assert {k: one(u, "Timer", k) for k in ("OnBootSec", "OnUnitActiveSec", "AccuracySec")} == {
        "OnBootSec": "5min",
        "OnUnitActiveSec": "5min",
        "AccuracySec": "30s",
    }
    assert one(u, "Install", "WantedBy") == "timers.target"


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    """systemd-analyze verify (systemd 252 as on Debian 12) loads all units without a single complaint."""
    root = _fake_root(tmp_path)
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *ALL_UNITS, "s1mpled@demo.service"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_systemd_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The verify check above is not blind: a misspelt key and a bad value are reported."""
    root = _fake_root(tmp_path)
    unit = root / "etc/systemd/system/s1mpled.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSex=").replace("=invisible", "=bogus"))
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", "s1mpled.service"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key 'WatchdogSex'" in out.stderr
    assert "bogus" in out.stderr


@pytest.mark.parametrize("name", ["s1mpled.service", "s1mpled@.service", "s1mpled-reconcile.service", DASHBOARD])
def test_security_exposure_is_low(name: str) -> None:
    """systemd-analyze security --offline rates every service at most 1.5 (an unhardened unit is 9.6)."""
    assert exposure(SYSTEMD / name) <= MAX_EXPOSURE


@pytest.mark.parametrize("name", ["s1mpled.service", DASHBOARD])
def test_documented_exposure_is_the_measured_one(name: str) -> None:
    """The exposure written in the unit's header comment is what systemd-analyze measures now."""
    text = (SYSTEMD / name).read_text()
    documented = re.search(r"^# exposure (\d+\.\d) ", text, re.MULTILINE)
    assert documented, f"{name} should say '# exposure N.N ...' in its header"
    assert float(documented.group(1)) == exposure(SYSTEMD / name)


def test_the_dashboard_unit_is_a_sandboxed_localhost_client_of_the_sockets() -> None:
    """s1mpled-dashboard.service: the full sandbox, TCP to and from localhost only, a user of its own in the
    daemons' group (their sockets are 0660, their configs 0640 root:s1mpled), blind to the state and the keys,
    its token an optional credential, and installable by the operator (WantedBy=)."""
    u = parse_unit(SYSTEMD / DASHBOARD)
    assert {key: one(u, "Service", key) for key in SANDBOX} == SANDBOX
    assert u["Service"]["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert one(u, "Service", "ExecStart") == f"{VENV_BIN} dashboard --listen 127.0.0.1:8787"
    assert (one(u, "Service", "IPAddressDeny"), one(u, "Service", "IPAddressAllow")) == ("any", "localhost")
    assert set(one(u, "Service", "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert (one(u, "Service", "DynamicUser"), one(u, "Service", "SupplementaryGroups")) == ("yes", "s1mpled")
    assert set(one(u, "Service", "InaccessiblePaths").split()) == {"-/var/lib/s1mpled", "-/etc/s1mpled/credentials"}
    assert one(u, "Service", "LoadCredential") == "dashboard:/etc/s1mpled/dashboard"
    assert not {"StateDirectory", "RuntimeDirectory", "ReadWritePaths", "User"} & u["Service"].keys()
    assert one(u, "Service", "RestartPreventExitStatus") == "78"
    assert one(u, "Install", "WantedBy") == "multi-user.target"


def test_sysusers_creates_the_unit_user() -> None:
    """The sysusers snippet creates the system user the units run as, with the state dir as home."""
    lines = [ln for ln in (DEBIAN / "s1mpled.sysusers").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1
    kind, name, uid, *rest = re.findall(r'"[^"]*"|\S+', lines[0])
    assert (kind, name, uid) == ("u", "s1mpled", "-")
    assert rest[1:] == ["/var/lib/s1mpled", "/usr/sbin/nologin"]


def test_packaged_config_fits_the_unit() -> None:
    """The example config's shutdown budget stays below TimeoutStopSec, so a clean stop is never SIGKILLed."""
    config = load_config(ROOT / "etc/s1mpled/s1mpled.yaml", env={"STATE_DIRECTORY": "/var/lib/s1mpled"})
    stop_timeout = float(one(parse_unit(SYSTEMD / "s1mpled.service"), "Service", "TimeoutStopSec"))
    assert config.shutdown_timeout_s < stop_timeout


# ---------------------------------------------------------------------------------------- debian/


def _rules_sed_expressions() -> list[tuple[str, str]]:
    rules = (DEBIAN / "rules").read_text()
    found = re.findall(r"-e 's\|\^(.+?)\$\$\|(.+?)\|'", rules)
    assert len(found) == 2, "debian/rules should rewrite the state_dir and control_socket lines"
    return found


def test_packaged_config_is_paper_mode_with_the_service_paths(tmp_path: Path) -> None:
    """debian/rules' rewrite of the example config yields a valid paper config naming the unit's paths."""
    text = (ROOT / "etc/s1mpled/s1mpled.yaml").read_text()
    for old, new in _rules_sed_expressions():
        assert text.count(f"\n{old}\n") == 1, f"the example config no longer has the line {old!r}"
        text = text.replace(f"\n{old}\n", f"\n{new}\n")
    (tmp_path / "s1mpled.yaml").write_text(text)
    shutil.copy(ROOT / "etc/s1mpled/schedule.yaml", tmp_path)
    config = load_config(tmp_path / "s1mpled.yaml", env={})  # as from a root shell: no systemd variables
    assert config.mode == "paper"
    assert config.state_dir == Path("/var/lib/s1mpled")
    assert config.control_socket == Path("/run/s1mpled/control.sock")


def test_versions_agree() -> None:
    """debian/changelog, pyproject.toml and s1mpled.__version__ name the same release."""
    changelog_version = re.match(r"s1mpled \(([^)]+)\)", (DEBIAN / "changelog").read_text())
    assert changelog_version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert changelog_version.group(1).split("-")[0] == pyproject["project"]["version"] == __version__


def test_requirements_pin_every_dependency_within_pyproject_ranges() -> None:
    """debian/requirements.txt pins each pyproject dependency to an exact version its range allows."""
    pins: dict[str, str] = {}
    for line in (DEBIAN / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for spec in pyproject["project"]["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} is not pinned in debian/requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {spec}"


def test_package_metadata() -> None:
    """Build-Depends bring in dh-virtualenv and sysusers; the units, man page and completion are installed."""
    control = (DEBIAN / "control").read_text()
    for build_dep in ("debhelper-compat (= 13)", "dh-sequence-installsysusers", "dh-virtualenv", "libsystemd-dev"):
        assert build_dep in control
    install = (DEBIAN / "s1mpled.install").read_text()
    for name in ALL_UNITS:
        assert f"systemd/{name} lib/systemd/system/" in install
    assert (DEBIAN / "s1mpled.manpages").read_text().split() == ["packaging/s1mpled.8"]
    assert (DEBIAN / "s1mpled.bash-completion").read_text().split() == ["packaging/bash-completion/s1mpled"]
    assert (DEBIAN / "s1mpled.links").read_text().split() == [VENV_BIN.lstrip("/"), "usr/bin/s1mpled"]
    rules = (DEBIAN / "rules").read_text()
    assert "dh_installsystemd --no-restart-after-upgrade s1mpled.service\n" in rules
    assert "dh_installsystemd --no-restart-after-upgrade s1mpled-reconcile.timer\n" in rules
    assert "--python $(PYTHON)" in rules and "PYTHON := /usr/bin/python3" in rules


def test_the_dashboard_ships_disabled_with_its_token_directory_root_only() -> None:
    """debian/rules installs the dashboard unit with --no-enable (an operator enables it), stopped for an
    upgrade's unpack like the daemon; its token directory ships empty and root-only, as the keys' does."""
    rules = (DEBIAN / "rules").read_text()
    assert f"\tdh_installsystemd --no-enable --no-restart-after-upgrade {DASHBOARD}\n" in rules
    assert rules.count(DASHBOARD) == 2  # that line and its comment: never in an enabling call
    assert "\tchmod 0700 debian/s1mpled/etc/s1mpled/dashboard\n" in rules
    assert "etc/s1mpled/dashboard" in (DEBIAN / "s1mpled.dirs").read_text().split()
    assert "[etc/s1mpled/dashboard/]" in (DEBIAN / "s1mpled.lintian-overrides").read_text()
    # the build fails if the page is not in the venv
    assert "for a in index.html app.js style.css; do test -s $(SITE)/s1mpled/dashboard/assets/$$a; done" in rules


def test_every_lintian_override_is_justified() -> None:
    """Each lintian override has a comment right above its group explaining why."""
    lines = (DEBIAN / "s1mpled.lintian-overrides").read_text().splitlines()
    previous = ""
    for line in lines:
        if line.startswith("s1mpled:"):
            assert previous.startswith(("#", "s1mpled:")), f"override without a reason: {line}"
        previous = line


def _run_maintainer_script(tmp_path: Path, script: str, *args: str) -> list[str]:
    """Run a maintainer script under DPKG_ROOT with logging stand-ins for the commands it changes things with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    for cmd in ("chown", "chmod", "deb-systemd-invoke"):
        (bin_dir / cmd).write_text(f'#!/bin/sh\necho "{cmd} $*" >> "{log}"\n')
        (bin_dir / cmd).chmod(0o755)
    (bin_dir / "dpkg-statoverride").write_text("#!/bin/sh\nexit 1\n")  # no override registered
    (bin_dir / "dpkg-statoverride").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DPKG_ROOT": str(tmp_path / "root")}
    subprocess.run(["sh", "-e", str(DEBIAN / script), *args], check=True, env=env, timeout=30)
    return log.read_text().splitlines() if log.exists() else []


def _installed_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("var/lib/s1mpled/demo", "run/s1mpled", "etc/s1mpled/credentials"):
        (root / d).mkdir(parents=True)
    for f in ("var/lib/s1mpled/strategy-dca.state.json", "etc/s1mpled/s1mpled.yaml", "etc/s1mpled/schedule.yaml"):
        (root / f).write_text("x")
    return root


@pytest.mark.parametrize("action", [("remove",), ("upgrade", "0.1.1"), ("disappear",)])
def test_postrm_keeps_state_unless_purged(tmp_path: Path, action: tuple[str, ...]) -> None:
    """remove and upgrade leave the trading state in /var/lib/s1mpled untouched."""
    root = _installed_root(tmp_path)
    _run_maintainer_script(tmp_path, "postrm", *action)
    assert (root / "var/lib/s1mpled/strategy-dca.state.json").read_text() == "x"


def test_postrm_purge_deletes_state_only(tmp_path: Path) -> None:
    """purge deletes the state (instances' too) and the runtime dir, but not the admin's credentials."""
    root = _installed_root(tmp_path)
    _run_maintainer_script(tmp_path, "postrm", "purge")
    assert not (root / "var/lib/s1mpled").exists()
    assert not (root / "run/s1mpled").exists()
    assert (root / "etc/s1mpled/credentials").is_dir()


def test_postinst_makes_config_readable_by_the_daemon_group_only(tmp_path: Path) -> None:
    """configure hands the config files to root:s1mpled 0640 and restarts nothing on a first install."""
    root = _installed_root(tmp_path)
    calls = _run_maintainer_script(tmp_path, "postinst", "configure", "")
    for name in ("s1mpled.yaml", "schedule.yaml"):
        path = root / "etc/s1mpled" / name
        assert f"chown root:s1mpled {path}" in calls
        assert f"chmod 0640 {path}" in calls
    assert not [c for c in calls if c.startswith("deb-systemd-invoke")]


def _run_on_systemd(
    tmp_path: Path, script: Path, *args: str, running: tuple[str, ...] = (), policy: int | None = None
) -> list[str]:
    """Run a maintainer script as dpkg does on a machine booted with systemd -- no DPKG_ROOT, and a
    /run/systemd/system -- in a private mount namespace whose /run is ``tmp_path/run``, with logging
    stand-ins for every command that changes something. ``running``: the units systemctl lists;
    ``policy``: the exit status of /usr/sbin/policy-rc.d (None: there is none, as on a normal machine)."""
    run = tmp_path / "run"
    (run / "systemd/system").mkdir(parents=True, exist_ok=True)
    sbin = tmp_path / "sbin"  # replaces /usr/sbin: a build host's policy-rc.d may forbid every start
    sbin.mkdir(exist_ok=True)
    if policy is not None:
        (sbin / "policy-rc.d").write_text(f"#!/bin/sh\nexit {policy}\n")
        (sbin / "policy-rc.d").chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    (tmp_path / "running").write_text("".join(f"{u} loaded active running s1mpled operation\n" for u in running))
    logged = ("deb-systemd-invoke", "deb-systemd-helper", "chown", "chmod")
    stubs = {
        "systemctl": f'echo "systemctl $*" >> "{log}"\ncase "$1" in list-units) cat "{tmp_path / "running"}";; esac',
        **{cmd: f'echo "{cmd} $*" >> "{log}"' for cmd in logged},
        "systemd-sysusers": "exit 0",
        "dpkg-statoverride": "exit 1",
    }
    for cmd, body in stubs.items():
        (bin_dir / cmd).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / cmd).chmod(0o755)
    inner = 'mount --bind "$1" /run && mount --bind "$2" /usr/sbin && shift 2 && exec sh -e "$@"'
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/bin"}  # as dpkg's: policy-rc.d is found in /usr/sbin
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "sh", str(run), str(sbin)]
    subprocess.run([*argv, str(script), *args], check=True, env=env, timeout=60)
    return log.read_text().splitlines() if log.exists() else []


INSTANCES = ("s1mpled@grid2.service", "s1mpled@dca3.service")


def test_preinst_stops_the_running_instances_before_an_upgrade_and_postinst_starts_those(tmp_path: Path) -> None:
    """Upgrade: the new preinst stops every running s1mpled@NAME before the unpack and writes them down; the
    postinst starts exactly those afterwards (an instance the admin had stopped stays stopped)."""
    calls = _run_on_systemd(tmp_path, DEBIAN / "preinst", "upgrade", "0.1.0", running=INSTANCES)
    assert calls[-1] == f"deb-systemd-invoke stop {' '.join(INSTANCES)}"
    listed = tmp_path / "run/s1mpled.dpkg-instances"
    assert listed.read_text().split() == list(INSTANCES)
    (tmp_path / "calls.log").unlink()
    calls = _run_on_systemd(tmp_path, DEBIAN / "postinst", "configure", "0.1.0")
    assert f"systemctl start {' '.join(INSTANCES)}" in calls
    assert not listed.exists()
    assert not [c for c in calls if "try-restart" in c or c.startswith("deb-systemd-invoke restart")]


@pytest.mark.parametrize("args", [("install",), ("upgrade", "0.1.0")])
def test_preinst_without_running_instances_stops_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A first install stops nothing; an upgrade with no instance running writes no list."""
    calls = _run_on_systemd(tmp_path, DEBIAN / "preinst", *args)
    assert not [c for c in calls if c.startswith("deb-systemd-invoke")]
    assert not (tmp_path / "run/s1mpled.dpkg-instances").exists()


def test_postinst_after_an_aborted_upgrade_starts_the_stopped_instances(tmp_path: Path) -> None:
    """If the unpack fails, dpkg runs the old postinst with abort-upgrade: the instances run again."""
    _run_on_systemd(tmp_path, DEBIAN / "preinst", "upgrade", "0.1.0", running=INSTANCES[:1])
    calls = _run_on_systemd(tmp_path, DEBIAN / "postinst", "abort-upgrade", "0.1.1")
    assert f"systemctl start {INSTANCES[0]}" in calls


def test_postinst_starts_no_instance_that_policy_rc_d_forbids(tmp_path: Path) -> None:
    """Where policy-rc.d says 101 (an image build, a container), the instances are not started again."""
    _run_on_systemd(tmp_path, DEBIAN / "preinst", "upgrade", "0.1.0", running=INSTANCES)
    calls = _run_on_systemd(tmp_path, DEBIAN / "postinst", "configure", "0.1.0", policy=101)
    assert not [c for c in calls if c.startswith("systemctl start")]
    assert not (tmp_path / "run/s1mpled.dpkg-instances").exists()


def test_prerm_stops_every_instance_on_remove_only(tmp_path: Path) -> None:
    """apt remove stops every running s1mpled@NAME (their code is about to go); an upgrade's prerm does not."""
    assert _run_on_systemd(tmp_path, DEBIAN / "prerm", "remove") == ["deb-systemd-invoke stop s1mpled@*.service"]
    (tmp_path / "calls.log").unlink()
    assert _run_on_systemd(tmp_path, DEBIAN / "prerm", "upgrade", "0.1.1") == []


def test_postrm_purge_removes_the_links_of_enabled_instances(tmp_path: Path) -> None:
    """purge removes the .wants/.requires links `systemctl enable s1mpled@NAME` made, and nothing else there."""
    root = _installed_root(tmp_path)
    etc = root / "etc/systemd/system"
    links = [etc / "multi-user.target.wants/s1mpled@grid2.service", etc / "default.target.requires/s1mpled@x.service"]
    kept = [etc / "multi-user.target.wants/ssh.service", etc / "multi-user.target.wants/s1mpled@notalink.service"]
    for path in (*links, *kept):
        path.parent.mkdir(parents=True, exist_ok=True)
    for path in links:
        path.symlink_to("/lib/systemd/system/s1mpled@.service")
    kept[0].symlink_to("/lib/systemd/system/ssh.service")
    kept[1].write_text("an admin's file, not a link\n")
    _run_maintainer_script(tmp_path, "postrm", "purge")
    assert [p for p in links if p.is_symlink()] == []
    assert all(p.is_symlink() or p.is_file() for p in kept)


def test_rules_stop_the_services_for_the_unpack_instead_of_restarting_after_it() -> None:
    """debhelper stops s1mpled.service and the timers before the unpack and starts them after it."""
    rules = (DEBIAN / "rules").read_text()
    assert rules.count("dh_installsystemd --no-restart-after-upgrade") == 3
    assert "dh_installsystemd --no-restart-after-upgrade s1mpled-metrics.timer\n" in rules
    assert "dh_installsystemd s1mpled" not in rules


@pytest.mark.parametrize("name", DAEMON_UNITS)
def test_daemon_units_raise_the_file_descriptor_limit(name: str) -> None:
    """LimitNOFILE= well above systemd's default soft limit of 1024 (an out-of-descriptors daemon cannot save)."""
    assert int(one(parse_unit(SYSTEMD / name), "Service", "LimitNOFILE")) >= 4096


def test_the_build_fails_on_lintian_warnings() -> None:
    """build-deb.sh fails on lintian errors and warnings, so every package built is lintian-clean."""
    assert 'lintian --fail-on error,warning --info "$changes"' in (PACKAGING / "build-deb.sh").read_text()


# --------------------------------------------------------------------------------- the built package


@pytest.fixture(scope="module")
def deb() -> Path:
    """The .deb of these sources (tests/container.py caches it by their content: built once, 2-3 min)."""
    return build_deb()


@pytest.fixture(scope="module")
def deb_files(deb: Path) -> list[str]:
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True, timeout=120)
    return [line.split(None, 5)[5].split(" -> ")[0].removeprefix("./") for line in out.stdout.splitlines()]


SITE = "opt/venvs/s1mpled/lib/python3.11/site-packages"


def test_the_shipped_venv_has_no_installer_and_no_activate_scripts(deb_files: list[str]) -> None:
    """No pip, setuptools or activate script in /opt/venvs/s1mpled: nothing to change it behind dpkg's back."""
    venv_bin = {f.removeprefix("opt/venvs/s1mpled/bin/") for f in deb_files if f.startswith("opt/venvs/s1mpled/bin/")}
    assert not {f for f in venv_bin if f.startswith(("pip", "activate", "Activate", "easy_install"))}
    assert {"s1mpled", "python3"} <= venv_bin
    top = {f.removeprefix(f"{SITE}/").split("/")[0] for f in deb_files if f.startswith(f"{SITE}/")}
    installers = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth"}
    assert not top & installers
    assert not [t for t in top if t.startswith(("pip-", "setuptools-"))]
    assert {"ccxt", "s1mpled", "systemd"} <= top


def test_the_shipped_venv_has_no_exchange_simulator(deb: Path, deb_files: list[str], tmp_path: Path) -> None:
    """The Binance-compatible simulator is test and demo tooling: debian/rules deletes it from the venv, so
    no file of it (s1mpled_sim, or the old s1mpled/exchange_sim) ships, nor a line of it in s1mpled's dist-info."""
    assert not [f for f in deb_files if "s1mpled_sim" in f or "exchange_sim" in f]
    meta = f"{SITE}/s1mpled-{__version__}.dist-info"
    wanted = [f"./{meta}/RECORD", f"./{meta}/top_level.txt"]
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True, timeout=300)
    subprocess.run(["tar", "-x", "-C", str(tmp_path), *wanted], input=tar.stdout, check=True, timeout=120)
    record = (tmp_path / meta / "RECORD").read_text()
    assert "s1mpled/cli.py," in record and "s1mpled_sim" not in record
    assert (tmp_path / meta / "top_level.txt").read_text().split() == ["s1mpled"]


def _deb_copyright(deb: Path, tmp_path: Path) -> str:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "x")], check=True, timeout=300)
    return (tmp_path / "x/usr/share/doc/s1mpled/copyright").read_text()


def _paragraphs(text: str) -> list[dict[str, str]]:
    """DEP-5 (deb822) paragraphs: field -> value (continuation lines joined with newlines)."""
    out = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith((" ", "\t")):
                fields[key] += "\n" + line[1:]
            else:
                key, sep, value = line.partition(":")
                assert sep, f"not a field: {line!r}"
                fields[key] = value.strip()
        out.append(fields)
    return out


def test_the_copyright_file_names_every_bundled_distribution_and_its_license(
    deb: Path, deb_files: list[str], tmp_path: Path
) -> None:
    """/usr/share/doc/s1mpled/copyright has a DEP-5 paragraph per distribution in the venv (every pin of
    debian/requirements.txt): its files, copyright, license and license text or a common-licenses reference."""
    header, *bundled = _paragraphs(_deb_copyright(deb, tmp_path))
    assert header["Format"].startswith("https://www.debian.org/doc/packaging-manuals/copyright-format/1.0")
    standalone = {p["License"].split("\n")[0] for p in bundled if "Files" not in p}
    files = [p for p in bundled if "Files" in p]
    meta_dirs = {
        f.split("/")[len(SITE.split("/"))]
        for f in deb_files
        if f.startswith(f"{SITE}/") and f.rstrip("/").endswith((".dist-info", ".egg-info"))
    }
    meta_dirs = {d for d in meta_dirs if not d.startswith("s1mpled-")}
    described = {}
    for p in files:
        for pattern in p["Files"].split():
            if pattern.endswith((".dist-info/*", ".egg-info/*")):
                described[pattern.split("/")[-2]] = p
    assert set(described) == meta_dirs
    for meta_dir, p in described.items():
        assert p["Copyright"].strip(), meta_dir
        license_name, _, text = p["License"].partition("\n")
        assert license_name, meta_dir
        assert text.strip() or license_name in standalone, f"{meta_dir}: no license text for {license_name}"
    lines = (DEBIAN / "requirements.txt").read_text().splitlines()
    pins = [ln.split("==")[0].lower().replace("_", "-") for ln in lines if ln and not ln.startswith("#")]
    named = {p["Comment"].split()[0].lower().replace("_", "-") for p in described.values()}
    assert set(pins) <= named


def test_the_built_maintainer_scripts_stop_everything_before_the_unpack(deb: Path, tmp_path: Path) -> None:
    """The package's own preinst (debhelper's snippets included) stops the instances, the daemon and the timer
    on upgrade; its postinst starts the daemon (no restart after the unpack); its prerm stops everything on remove."""
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True, timeout=120)
    calls = _run_on_systemd(tmp_path, control / "preinst", "upgrade", "0.1.0", running=INSTANCES)
    stops = [c for c in calls if c.startswith("deb-systemd-invoke stop")]
    assert stops[0] == f"deb-systemd-invoke stop {' '.join(INSTANCES)}"
    assert {"deb-systemd-invoke stop s1mpled.service", "deb-systemd-invoke stop s1mpled-reconcile.timer"} <= set(stops)
    postinst = (control / "postinst").read_text()
    assert "deb-systemd-invoke start 's1mpled.service'" in postinst
    assert "_dh_action=restart" not in postinst
    (tmp_path / "calls.log").unlink()
    calls = _run_on_systemd(tmp_path, control / "prerm", "remove")
    assert {
        "deb-systemd-invoke stop s1mpled@*.service",
        "deb-systemd-invoke stop s1mpled.service",
        "deb-systemd-invoke stop s1mpled-reconcile.timer",
    } <= set(calls)


# ------------------------------------------------------------------------ man page and completion


def _help(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*args, "--help"])
    return out.getvalue()


def cli_commands() -> list[str]:
    found = re.search(r"\{([a-z,-]+)\}", _help())
    assert found
    return found.group(1).split(",")


def cli_options(*command: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", _help(*command))) - {"--help"}


def test_man_page_documents_every_command_and_option() -> None:
    """s1mpled(8) names every command and every option `s1mpled --help` has."""
    man = (PACKAGING / "s1mpled.8").read_text().replace("\\-", "-")
    for command in cli_commands():
        assert re.search(rf"^\.B s1mpled {command}\b", man, re.MULTILINE), f"no synopsis for {command}"
        for option in cli_options(command) if command != "state" else set():
            assert option in man, f"{command} {option} is not in the man page"
    for sub in ("verify", "show"):
        assert f".B s1mpled state {sub}" in man


def _complete(*words: str) -> set[str]:
    """Ask the completion function what it offers after ``words`` (the last one being typed)."""
    stubs = (
        '_init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; cur=${words[cword]};'
        " prev=${words[cword-1]}; }\n"
        "_filedir() { COMPREPLY=(FILES); }\n"
    )
    script = (
        f"{stubs}source {PACKAGING / 'bash-completion/s1mpled'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_s1mpled; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "--norc", "-c", script], check=True, capture_output=True, text=True, timeout=30)
    return set(out.stdout.split())


def test_completion_offers_every_command() -> None:
    """Completing the first word offers exactly the CLI's commands."""
    assert _complete("s1mpled", "") == set(cli_commands())


@pytest.mark.parametrize("command", ["run", "check-config", "status", "reconcile", "halt", "resume"])
def test_completion_offers_every_option(command: str) -> None:
    """Completing '--' after a command offers exactly that command's options."""
    assert _complete("s1mpled", command, "--") - {"--help"} == cli_options(command)


def test_completion_of_state_and_files() -> None:
    """`state` completes to its subcommands, their argument and --config to files."""
    assert _complete("s1mpled", "state", "") >= {"verify", "show"}
    assert _complete("s1mpled", "state", "verify", "") == {"FILES"}
    assert _complete("s1mpled", "status", "--config", "") == {"FILES"}


# ------------------------------------------------------------------------------ the apt repository


def _fake_deb(tmp_path: Path, name: str, version: str) -> Path:
    pkg = tmp_path / f"{name}-src"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test package\n a second line\n"
    )
    deb = tmp_path / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    return deb


def _publish(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PACKAGING / "publish-apt-repo.sh"), "-o", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_unsigned_repository_has_consistent_indexes_and_warns(tmp_path: Path) -> None:
    """Without a key the script writes Packages/Release with matching checksums and warns loudly."""
    debs = [_fake_deb(tmp_path, "alpha", "1.0"), _fake_deb(tmp_path, "beta", "2.0")]
    repo = tmp_path / "repo"
    out = _publish(repo, *map(str, debs), env={"GPG_KEY_ID": ""})
    assert "UNSIGNED" in out.stderr
    assert not (repo / "InRelease").exists()
    packages = (repo / "Packages").read_text()
    stanzas = packages.strip().split("\n\n")
    assert [s.splitlines()[0] for s in stanzas] == ["Package: alpha", "Package: beta"]
    alpha = (repo / "alpha_1.0_all.deb").read_bytes()
    assert f"SHA256: {hashlib.sha256(alpha).hexdigest()}" in stanzas[0]
    assert "Filename: ./alpha_1.0_all.deb" in stanzas[0] and " a second line" in stanzas[0]
    assert gzip.decompress((repo / "Packages.gz").read_bytes()).decode() == packages
    release = (repo / "Release").read_text()
    for index in ("Packages", "Packages.gz"):
        data = (repo / index).read_bytes()
        assert f" {hashlib.sha256(data).hexdigest()} {len(data)} {index}\n" in release


@pytest.fixture
def gpg_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A throw-away GnuPG home with one passphrase-less signing key; yields the environment to use it."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Repo Test <repo@example.org>", "ed25519", "sign"],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    yield {"GNUPGHOME": str(home)}
    subprocess.run(["gpgconf", "--kill", "all"], check=False, capture_output=True, env=env, timeout=30)


def test_signed_repository_is_accepted_by_apt(tmp_path: Path, gpg_home: dict[str, str]) -> None:
    """A signed repository verifies with the exported key, and apt reads it through signed-by=."""
    repo = tmp_path / "repo"
    _publish(repo, "-k", "repo@example.org", str(_fake_deb(tmp_path, "alpha", "1.0")), env=gpg_home)
    keyring = repo / "s1mpled-archive-keyring.gpg"
    for check in (
        ["gpgv", "--keyring", str(keyring), str(repo / "InRelease")],
        ["gpgv", "--keyring", str(keyring), str(repo / "Release.gpg"), str(repo / "Release")],
    ):
        subprocess.run(check, check=True, capture_output=True, timeout=30)

    apt = tmp_path / "apt"
    for d in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial", "cache/archives/partial"):
        (apt / d).mkdir(parents=True)
    (apt / "etc/sources.list").write_text(f"deb [signed-by={keyring}] file://{repo} ./\n")
    opts = [
        f"-oDir::Etc={apt / 'etc'}",
        f"-oDir::State={apt / 'state'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oDir::State::status=/dev/null",
        "-oAPT::Sandbox::User=root",
        "-oDebug::NoLocking=1",
    ]
    update = subprocess.run(["apt-get", *opts, "update"], check=False, capture_output=True, text=True, timeout=60)
    assert update.returncode == 0, update.stdout + update.stderr
    assert not re.search(r"^(W|E):", update.stdout + update.stderr, re.MULTILINE), update.stdout + update.stderr
    show = subprocess.run(["apt-cache", *opts, "show", "alpha"], check=True, capture_output=True, text=True)
    assert "Version: 1.0" in show.stdout


@pytest.mark.parametrize("name", DAEMON_UNITS)
def test_a_daemon_that_fails_for_good_sends_the_alert(name: str) -> None:
    """After a restart storm (start-limit-hit) systemd starts the alert unit for the failed daemon unit."""
    u = parse_unit(SYSTEMD / name)
    assert one(u, "Unit", "OnFailure") == "s1mpled-alert@%n.service"
    alert = parse_unit(SYSTEMD / "s1mpled-alert@.service")
    assert one(alert, "Service", "Type") == "oneshot"
    assert one(alert, "Service", "ExecStart") == "/opt/venvs/s1mpled/bin/s1mpled alert --unit %i"


def test_the_built_package_ships_the_dashboard_and_never_enables_it(
    deb: Path, deb_files: list[str], tmp_path: Path
) -> None:
    """The .deb has the dashboard unit and its page (package data, no CDN); on a fresh install its postinst
    enables the daemon but not the dashboard (debhelper's dont-enable snippet: only an operator's enable
    survives upgrades), and the prerm stops the dashboard on remove."""
    assert f"lib/systemd/system/{DASHBOARD}" in deb_files
    assert {f"{SITE}/s1mpled/dashboard/assets/{a}" for a in ("index.html", "app.js", "style.css")} <= set(deb_files)
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True, timeout=120)
    postinst = (control / "postinst").read_text()
    assert f"deb-systemd-helper debian-installed '{DASHBOARD}'" in postinst  # a fresh install: never enabled
    assert "deb-systemd-helper debian-installed 's1mpled.service'" not in postinst  # the daemon: enabled
    assert f"deb-systemd-invoke start '{DASHBOARD}'" in postinst  # which starts only an enabled unit
    calls = _run_on_systemd(tmp_path, control / "prerm", "remove")
    assert f"deb-systemd-invoke stop {DASHBOARD}" in calls
