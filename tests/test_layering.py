"""The pure cores stay pure: importing one loads no asyncio, fcntl, socket, selectors, subprocess or signal,
and its source reads no clock."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from s1mpled.errors import EX_CONFIG, EX_SOFTWARE

# The decision logic of the daemon: no I/O, no event loop, no clock (times are passed in).
PURE = [
    "s1mpled.reconciliation",
    "s1mpled.circuit_breaker",
    "s1mpled.connection",
    "s1mpled.state.codec",
    "s1mpled.state.recovery",
    "s1mpled.state.protocol",
    "s1mpled.state.wal",
    "s1mpled.state.dirlog",
    "s1mpled.lazy",
    "s1mpled.orders",
    "s1mpled.ownership",
    "s1mpled.ledger",
    "s1mpled.environments.paper_exchange",
    "s1mpled.in_flight",
    "s1mpled.receipts",
    "s1mpled.startup",
    "s1mpled.errors",
    "s1mpled.events",
    "s1mpled.model",
    "s1mpled.record",
    "s1mpled.config.model",
    "s1mpled.dashboard.view",
]
# Top-level modules a pure core must not load (``os`` and ``time`` are loaded by every interpreter anyway;
# a clock read is caught in the source below). ``threading`` is allowed: ``logging`` imports it.
FORBIDDEN = frozenset({"asyncio", "fcntl", "socket", "selectors", "subprocess", "signal"})
CLOCK_MODULES = frozenset({"time"})
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})  # on datetime / date

# Imports the module named in argv[1] and prints which modules it loaded and who imported each first.
_PROBE = """
import builtins, importlib, sys
target = sys.argv[1]
first = {target: "<import>"}
original = builtins.__import__

def recording(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "?")
    before = set(sys.modules)
    try:
        return original(name, globals, locals, fromlist, level)
    finally:
        for new in set(sys.modules) - before:
            first.setdefault(new, importer)

builtins.__import__ = recording
importlib.import_module(target)
builtins.__import__ = original
loaded = sorted(sys.modules)
import json
print(json.dumps({"loaded": loaded, "first": first}))
"""


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bare() -> frozenset[str]:
    """What a bare interpreter (``python -c pass``) has loaded."""
    return frozenset(json.loads(_run("-c", "import sys, json; print(json.dumps(sorted(sys.modules)))")))


def _chain(module: str, target: str, first: dict[str, str]) -> str:
    """``asyncio <- s1mpled.bus <- s1mpled.workers <- s1mpled.connection``: who imported the offender first,
    back to the module imported (a parent package is imported by the import system itself)."""
    links = [module]
    while links[-1] in first and first[links[-1]] != "<import>" and len(links) < 50:
        links.append(first[links[-1]])
    if links[-1] != target and target.startswith(links[-1] + "."):
        links.append(f"{target} (its package)")
    return " <- ".join(links)


@pytest.mark.parametrize("module", PURE)
def test_a_pure_core_loads_no_io_module(module: str, bare: frozenset[str]) -> None:
    """A fresh interpreter that imports the module has loaded none of FORBIDDEN beyond a bare interpreter."""
    probe = json.loads(_run("-c", _PROBE, module))
    new = [m for m in probe["loaded"] if m not in bare]
    offenders = sorted({m.partition(".")[0] for m in new} & FORBIDDEN)
    chains = [_chain(m, module, probe["first"]) for m in offenders]
    assert not offenders, f"import {module} loads {', '.join(offenders)}:\n  " + "\n  ".join(chains)


def _clock_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in CLOCK_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in CLOCK_MODULES:
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in CLOCK_CALLS
            and isinstance(node.value, ast.Name)
            and node.value.id in ("datetime", "date")
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("module", PURE)
def test_a_pure_core_reads_no_clock(module: str) -> None:
    """The module's source imports no ``time`` and calls no ``datetime.now`` (time is passed in)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    uses = _clock_uses(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
    assert not uses, f"{module} reads a clock: {'; '.join(uses)}"


def test_the_runtime_never_imports_the_simulator() -> None:
    """No module of the daemon (``s1mpled/``) imports ``s1mpled_sim``: the .deb does not ship the simulator."""
    runtime = Path(__file__).resolve().parents[1] / "s1mpled"
    found = []
    for path in sorted(runtime.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            found += [f"{path.relative_to(runtime)}:{node.lineno}" for n in names if n.split(".")[0] == "s1mpled_sim"]
    assert not found, f"the daemon imports the simulator: {found}"
    assert not (runtime / "exchange_sim").exists()


def test_the_config_model_loads_no_yaml(bare: frozenset[str]) -> None:
    """``s1mpled.config.model`` (what the strategies import) loads neither PyYAML nor the loader's modules."""
    probe = json.loads(_run("-c", _PROBE, "s1mpled.config.model"))
    new = [m for m in probe["loaded"] if m not in bare]
    offenders = [m for m in new if m.partition(".")[0] == "yaml" or m.startswith("s1mpled.config.")]
    offenders.remove("s1mpled.config.model")
    chains = [_chain(m, "s1mpled.config.model", probe["first"]) for m in offenders]
    assert not offenders, "import s1mpled.config.model loads:\n  " + "\n  ".join(chains)


# Runs `s1mpled <argv[1:]>` in this interpreter and prints its exit code and the modules it loaded.
_CLI_PROBE = """
import json, sys
from s1mpled.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(sys.modules)}))
"""
# A control command needs the socket only: the daemon's assembly, a strategy, ccxt or the full loader
# would mean it reads (and can fail on) parts of the config it has no use for.
_NOT_FOR_CONTROL = ("s1mpled.assembly", "s1mpled.operation", "s1mpled.strategies", "s1mpled.config.load", "ccxt")
_BROKEN_STRATEGY = """\
operation: layering
strategies:
  - {name: dca, class: "s1mpled.strategies.dca:DCA", symbol: BTC/USDT, capital: lots, params: {a: 1, a: 2}}
control_socket: nobody.sock
"""


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["halt"], ["resume"], ["reconcile"]])
def test_a_control_command_loads_no_assembly_strategy_or_ccxt(command: list[str], tmp_path: Path) -> None:
    """`s1mpled status / halt / resume / reconcile` against a config with a broken strategy: the command
    fails only on the absent daemon, having loaded no assembly, strategy, ccxt or full config loader."""
    config = tmp_path / "s1mpled.yaml"
    config.write_text(_BROKEN_STRATEGY)
    probe = json.loads(_run("-c", _CLI_PROBE, *command, "--config", str(config), "--timeout", "5"))
    assert probe["code"] not in (0, EX_CONFIG, EX_SOFTWARE), probe["code"]  # no daemon; the config was not refused
    loaded = [m for m in probe["loaded"] if m.startswith(_NOT_FOR_CONTROL)]
    assert not loaded, f"s1mpled {' '.join(command)} loaded {loaded}"


def _dashboard_imports(path: Path) -> list[tuple[int, str]]:
    """(line, enclosing function or "") of every import of ``s1mpled.dashboard`` in the file at ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    owner = {id(n): f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        if any(n == "s1mpled.dashboard" or n.startswith("s1mpled.dashboard.") for n in names):
            found.append((node.lineno, owner.get(id(node), "")))
    return found


def test_the_daemon_never_imports_the_dashboard() -> None:
    """The dashboard is a process of its own: no module outside ``s1mpled/dashboard/`` imports it, except the
    CLI's ``dashboard`` command inside its function; and the daemon's modules, imported in a fresh interpreter,
    load neither the dashboard nor ``websockets`` (the trading process serves no HTTP)."""
    runtime = Path(__file__).resolve().parents[1] / "s1mpled"
    found = []
    for path in sorted(runtime.rglob("*.py")):
        rel = path.relative_to(runtime)
        if rel.parts[0] != "dashboard":
            found += [(str(rel), fn or f"module level, line {line}") for line, fn in _dashboard_imports(path)]
    assert found == [("cli.py", "_cmd_dashboard")], found
    loaded = json.loads(_run("-c", _PROBE, "s1mpled.operation"))["loaded"]
    assert not [m for m in loaded if m.startswith(("s1mpled.dashboard", "websockets"))]
