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

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
DEBIAN = ROOT / "debian"
PACKAGING = ROOT / "packaging"
DAEMON_UNITS = ("s1mpled.service", "s1mpled@.service")
ALL_UNITS = (*DAEMON_UNITS, "s1mpled-reconcile.service", "s1mpled-reconcile.timer", "s1mpled-alert@.service")
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
    assert one(u, "Unit", "StartLimitIntervalSec") == "120"
    assert one(u, "Unit", "StartLimitBurst") == "5"
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


@pytest.mark.parametrize("name", ["s1mpled.service", "s1mpled@.service", "s1mpled-reconcile.service"])
def test_security_exposure_is_low(name: str) -> None:
    """systemd-analyze security --offline rates every service at most 1.5 (an unhardened unit is 9.6)."""
    assert exposure(SYSTEMD / name) <= MAX_EXPOSURE


def test_documented_exposure_is_the_measured_one() -> None:
    """The exposure written in s1mpled.service's header comment is what systemd-analyze measures now."""
    text = (SYSTEMD / "s1mpled.service").read_text()
    documented = re.search(r"^# exposure (\d+\.\d) ", text, re.MULTILINE)
    assert documented, "s1mpled.service should say '# exposure N.N ...' in its header"
    assert float(documented.group(1)) == exposure(SYSTEMD / "s1mpled.service")


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
    assert "dh_installsystemd s1mpled.service\n" in rules
    assert "dh_installsystemd s1mpled-reconcile.timer\n" in rules
    assert "--python $(PYTHON)" in rules and "PYTHON := /usr/bin/python3" in rules


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


def test_postinst_restarts_template_instances_on_upgrade() -> None:
    """On upgrade the postinst try-restarts every running s1mpled@ instance (debhelper does only the main unit)."""
    postinst = (DEBIAN / "postinst").read_text()
    upgrade_branch = postinst.split('if [ -n "$2" ]', 1)[1]
    assert "deb-systemd-invoke try-restart 's1mpled@*.service'" in upgrade_branch


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
