"""A real systemd 252 booted as PID 1 of a systemd-nspawn container, with the real s1mpled .deb in reach.

Why: PID 1 of the test machines is not systemd, so ``systemctl`` cannot work on the host, yet what a
user does with the package -- ``apt-get install``, ``systemctl``, ``journalctl``, timers, the watchdog,
the sandbox -- only means something against a real service manager. systemd-nspawn boots one in a few
hundred milliseconds. The expensive parts are cached under /var/cache/s1mpled-test, so a rerun without
changes only boots:

- the .deb, built by ``packaging/build-deb.sh`` from a copy of the source files, keyed by their content;
- the mmdebstrap root file system (a .tar.zst), keyed by its package list, which includes every
  dependency of the .deb so ``apt-get install ./s1mpled_*.deb`` needs no network inside the container.

How the container is run (what worked on these hosts): nspawn is started from a process first moved
into cgroups of its own (else it leaves stray cgroups at the top of the host's tree), with
``--keep-unit --register=no`` (there is no systemd/machined on the host), no private network (the
container shares 127.0.0.1 with the host, where the exchange simulator listens), and every command is
run with ``nsenter`` into the namespaces of the container's PID 1. Each container gets a fresh
unpacked root under /var/tmp; :meth:`Container.close` stops it and removes the root and the cgroups,
and :func:`reap_stale` removes what an interrupted earlier run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "CACHE_DIR",
    "HOST_PACKAGES",
    "ROOTFS_PACKAGES",
    "Container",
    "Phases",
    "build_deb",
    "deb_depends",
    "ensure_host_packages",
    "reap_stale",
    "rootfs_tarball",
    "source_digest",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("S1MPLED_TEST_CACHE", "/var/cache/s1mpled-test"))
# What this module runs on the host; packaging/dev-setup.sh installs the same (its APT_PACKAGES).
HOST_PACKAGES = ("mmdebstrap", "systemd-container", "zstd")
# A bootable minimal Debian; deb_depends() adds the package's own dependencies.
ROOTFS_PACKAGES = ("dbus", "libnss-systemd", "procps", "python3", "systemd", "systemd-sysv")
SUITE = "bookworm"
NAME_PREFIX = "s1e2e-"
CONTAINER_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
    "DEBIAN_FRONTEND": "noninteractive",
}
# Units that may fail in a container without saying anything about s1mpled (a degraded boot is fine then).
CONTAINER_UNFIT_UNITS = frozenset(
    {
        "systemd-remount-fs.service",
        "systemd-sysctl.service",
        "systemd-modules-load.service",
        "systemd-binfmt.service",
        "proc-sys-fs-binfmt_misc.mount",
        "sys-kernel-config.mount",
        "sys-kernel-debug.mount",
        "sys-kernel-tracing.mount",
        "systemd-journald-audit.socket",
    }
)
_KEEP_CACHED = 3  # builds / root file systems kept per kind; older ones are pruned
_SKIP_DIRS = frozenset({"tests", "bench"})  # not in the package: editing them needs no rebuild
_BUILD_JUNK = frozenset({"__pycache__", "build", "dist", "var"})
# sh -c: move this shell into the cgroups named by the first N arguments, then exec the rest.
_INTO_CGROUPS = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs"; shift; n=$((n - 1)); done; exec "$@"'
)

T = TypeVar("T")


# ------------------------------------------------------------------------------------------ helpers


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Phases:
    """Wall time of the named phases of a set-up, for the log of a slow test."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = time.monotonic() - start

    def report(self) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds.items())


def _run(argv: Sequence[str], *, timeout: float, cwd: Path | None = None, log: Path | None = None) -> str:
    """Run a host command; its stdout, or an AssertionError with the tail of its output."""
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(log.open("wb")) if log is not None else subprocess.PIPE
        out = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False)
    if out.returncode != 0:
        tail = log.read_bytes()[-4000:] if log is not None else out.stderr[-4000:]
        raise AssertionError(f"{' '.join(argv)} exited {out.returncode}:\n{tail.decode(errors='replace')}")
    return out.stdout.decode()


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One builder at a time per cache (two test sessions at once wait rather than build twice).

    Whatever a builder left half-done (it was killed) is removed first: nobody else is building now.
    """
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for partial in cache.glob(".partial-*"):
            shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
        yield


def _prune(pattern: str, cache: Path, keep: int = _KEEP_CACHED) -> None:
    entries = sorted(cache.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


# --------------------------------------------------------------------------------------- host side


def ensure_host_packages(packages: Sequence[str] = HOST_PACKAGES) -> None:
    """apt-get install what is missing (waiting for a dpkg lock another installer holds)."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"],
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        subprocess.run(argv, check=True, env=env, timeout=900, stdout=subprocess.DEVNULL)


def _installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return out.stdout.strip() == "install ok installed"


def _source_files(repo: Path) -> list[str]:
    """The files a package build reads: git's tracked and new unignored files, minus tests/ and bench/."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout: every plain file
        names = []
        for d, dirs, files in os.walk(repo):
            dirs[:] = [
                x for x in dirs if not x.startswith(".") and x not in _BUILD_JUNK and not x.endswith(".egg-info")
            ]
            names += [str(Path(d, f).relative_to(repo)) for f in files]
    return sorted(n for n in names if n.split("/", 1)[0] not in _SKIP_DIRS and (repo / n).is_file())


def source_digest(repo: Path = REPO) -> str:
    """A hash of the names and contents of every file the package is built from."""
    h = hashlib.sha256()
    for name in _source_files(repo):
        h.update(name.encode() + b"\0" + hashlib.sha256((repo / name).read_bytes()).digest())
    return h.hexdigest()[:20]


def build_deb(repo: Path = REPO, cache: Path = CACHE_DIR) -> Path:
    """The .deb of the current sources: from the cache, or built by packaging/build-deb.sh in a copy."""
    digest = source_digest(repo)
    done = cache / f"deb-{digest}"
    with _locked(cache):
        debs = sorted(done.glob("s1mpled_*.deb"))
        if debs:
            done.touch()
            return debs[0]
        work = Path(tempfile.mkdtemp(prefix=f".partial-build-{digest}-", dir=cache))
        try:
            src = work / "src"
            src.mkdir()
            for name in _source_files(repo):  # a copy: the build never touches the work tree
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / name, src / name)
            out = _run(["bash", "packaging/build-deb.sh"], cwd=src, timeout=1800, log=work / "build.log")
            built = Path(out.strip().splitlines()[-1])
            staged = work / "out"
            staged.mkdir()
            shutil.move(built, staged / built.name)
            staged.rename(done)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _prune("deb-*", cache)
        return next(done.glob("s1mpled_*.deb"))


def deb_depends(deb: Path) -> tuple[str, ...]:
    """The package names of a .deb's Pre-Depends and Depends (the first of each set of alternatives)."""
    out = _run(["dpkg-deb", "--field", str(deb), "Pre-Depends", "Depends"], timeout=60)
    text = " ".join(line.split(":", 1)[1] if re.match(r"^[\w-]+:", line) else line for line in out.splitlines())
    names = set()
    for group in text.split(","):
        first = group.split("|")[0].strip()
        if first:
            names.add(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return tuple(sorted(names))


def rootfs_tarball(packages: Sequence[str], cache: Path = CACHE_DIR, suite: str = SUITE) -> Path:
    """A minbase root file system with ``packages`` (mmdebstrap, the host's apt sources), cached by that list."""
    wanted = sorted(set(packages))
    key = hashlib.sha256(f"{suite}\n{','.join(wanted)}".encode()).hexdigest()[:16]
    tarball = cache / f"rootfs-{key}.tar.zst"
    with _locked(cache):
        if tarball.exists():
            tarball.touch()
            return tarball
        partial = cache / f".partial-rootfs-{key}.tar.zst"
        argv = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(wanted)}", suite, str(partial)]
        _run(argv, timeout=1200, log=cache / f".partial-rootfs-{key}.log")  # the log stays until the next try
        partial.rename(tarball)
        _prune("rootfs-*.tar.zst", cache)
        return tarball


# ---------------------------------------------------------------------------------------- cgroups


def _cgroup_roots() -> list[Path]:
    """cgroup v1 hybrid (name=systemd + unified), else the v2 root."""
    base = Path("/sys/fs/cgroup")
    hybrid = [base / "systemd", base / "unified"]
    return [p for p in hybrid if (p / "cgroup.procs").exists()] or [base]


def _cgroup_tree(top: Path) -> list[Path]:
    """``top`` and every cgroup below it, deepest first (the order rmdir needs)."""
    dirs = [Path(d) for d, _, _ in os.walk(top)]
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _remove_cgroup(top: Path) -> None:
    """Kill whatever still lives in ``top`` (it is ours), then remove it and its children."""
    if not top.exists():
        return
    for attempt in range(100):
        pids = [int(p) for d in _cgroup_tree(top) for p in _read(d / "cgroup.procs").split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05 if attempt else 0)  # dying processes leave cgroup.procs asynchronously
    for d in _cgroup_tree(top):
        with contextlib.suppress(FileNotFoundError):
            d.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def reap_stale(prefix: str = NAME_PREFIX, tmp: Path = Path("/var/tmp")) -> None:
    """Remove the containers, cgroups and roots of earlier runs whose owning process is gone."""

    def stale(name: str) -> bool:
        owner = name.removeprefix(prefix).split("-", 1)[0]
        return owner.isdigit() and int(owner) != os.getpid() and not Path(f"/proc/{owner}").exists()

    for root in _cgroup_roots():
        for top in root.glob(f"{prefix}*"):
            if stale(top.name):
                _remove_cgroup(top)
    for old in tmp.glob(f"{prefix}*"):
        if stale(old.name):
            _unmount_below(old)
            shutil.rmtree(old, ignore_errors=True)


def _unmount_below(path: Path) -> None:
    real = os.path.realpath(path)
    mounts = [line.split()[1] for line in _read(Path("/proc/self/mounts")).splitlines()]
    for point in sorted((m for m in mounts if m == real or m.startswith(real + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, timeout=30)


# -------------------------------------------------------------------------------------- container


class Container:
    """One booted container; run commands in it, read its journal, manage its units. Close it always."""

    def __init__(self, tarball: Path, *, tmp: Path = Path("/var/tmp")) -> None:
        reap_stale(tmp=tmp)
        self.name = f"{NAME_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
        self.workdir = tmp / self.name
        self.root = self.workdir / "root"
        self.log = self.workdir / "nspawn.log"
        self._cgroups = [root / self.name for root in _cgroup_roots()]
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.root.mkdir(parents=True)
        try:
            _run(["tar", "--zstd", "-xpf", str(tarball), "-C", str(self.root), "--numeric-owner"], timeout=300)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lifecycle --

    def boot(self, timeout: float = 60) -> list[str]:
        """Start systemd in the container; wait until the boot is done; the failed units (all fit-to-fail)."""
        for cg in self._cgroups:
            cg.mkdir()
        nspawn = ["systemd-nspawn", "-q", "-D", str(self.root), "-M", self.name, "-b", "--register=no"]
        nspawn += ["--keep-unit", "--console=passive", "--link-journal=no"]
        with self.log.open("wb") as log:
            self._nspawn = subprocess.Popen(
                ["sh", "-c", _INTO_CGROUPS, "sh", str(len(self._cgroups)), *map(str, self._cgroups), *nspawn],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest reaches the fixture's cleanup, not nspawn
            )
        self.pid1 = wait_until(self._find_pid1, timeout, f"systemd in container {self.name} ({self.log})")
        # Until PID 1 has created its private socket systemctl cannot connect and prints nothing.
        state = wait_until(self._system_state, timeout, f"the boot of {self.name} to finish")
        failed = self.run("systemctl", "list-units", "--failed", "--plain", "--no-legend", "--full").stdout
        units = [line.split()[0] for line in failed.splitlines() if line.strip()]
        unexpected = set(units) - CONTAINER_UNFIT_UNITS
        assert state in ("running", "degraded") and not unexpected, f"boot ended {state!r}, failed units: {units}"
        return units

    def _system_state(self) -> str:
        state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=60).stdout.strip()
        return "" if state in ("initializing", "starting") else state

    def _find_pid1(self) -> int:
        assert self._nspawn is not None
        if self._nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self._nspawn.returncode}: {_read(self.log)[-2000:]}")
        pid = self._nspawn.pid
        children = _read(Path(f"/proc/{pid}/task/{pid}/children")).split()
        return next((int(c) for c in children if _read(Path(f"/proc/{c}/comm")).strip() == "systemd"), 0)

    def close(self) -> None:
        """Stop the container (SIGTERM to nspawn: a clean poweroff), then remove its cgroups and root."""
        proc, self._nspawn = self._nspawn, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        for cg in self._cgroups:
            _remove_cgroup(cg)
        _unmount_below(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- commands --

    def run(
        self, *argv: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside the container (all its namespaces, a clean environment)."""
        env = [f"{k}={v}" for k, v in CONTAINER_ENV.items()]
        cmd = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", *env, *argv]
        out = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {out.returncode}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        return out

    def systemctl(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` as a dict (timestamps in microseconds, UTC)."""
        out = self.systemctl("show", unit, "--timestamp=us+utc", *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str, after: str | None = None) -> list[dict[str, Any]]:
        """Journal entries as dicts (``journalctl -o json``), optionally only those after a cursor."""
        argv = ["journalctl", "--no-pager", "-o", "json", *args]
        if after:
            # Not --after-cursor: with matches (-u, -p, FIELD=) systemd 252 skips one entry past the
            # cursor's position, which loses the first match whenever the cursor's entry does not match.
            argv.append(f"--cursor={after}")
        lines = self.run(*argv).stdout.splitlines()
        entries = [e for e in map(json.loads, filter(None, lines)) if e["__CURSOR"] != after]
        for e in entries:
            if isinstance(e.get("MESSAGE"), list):  # journald's JSON for a message that is not UTF-8
                e["MESSAGE"] = bytes(e["MESSAGE"]).decode(errors="replace")
        return entries

    def cursor(self) -> str:
        """The cursor of the journal's newest entry: pass it as ``after=`` to see only what follows."""
        entries = self.journal("-n", "1")
        return str(entries[-1]["__CURSOR"]) if entries else ""

    # -- files --

    def path(self, inside: str) -> Path:
        """The host's path of a file inside the container (readable and writable from the host as root)."""
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, *, mode: int = 0o644, owner: str = "root:root") -> None:
        """Create or replace a file inside the container, with its owner resolved by the container's users."""
        self.run(
            "sh",
            "-c",
            'set -e; umask 077; mkdir -p "$(dirname "$1")"; cat > "$1.new"; chown "$2" "$1.new"; '
            'chmod "$3" "$1.new"; mv -f "$1.new" "$1"',
            "sh",
            inside,
            owner,
            f"{mode:o}",
            input=text,
        )

    def install_deb(self, deb: Path, *args: str) -> str:
        """Copy the .deb into /var/tmp and ``apt-get install`` it in the container; apt's output."""
        target = self.path(f"/var/tmp/{deb.name}")
        if not target.exists():
            shutil.copy2(deb, target)
        opts = ["-o", "Dpkg::Options::=--force-confold", "-o", "DPkg::Lock::Timeout=120"]
        return self.run("apt-get", "install", "-y", *opts, *args, f"/var/tmp/{deb.name}", timeout=600).stdout
