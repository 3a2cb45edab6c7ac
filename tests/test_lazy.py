"""The packages that re-export on first use (s1mpled.lazy): importing one loads none of its submodules, each
public name is its home's object, and an unknown name is an AttributeError as for any module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PACKAGES = ["s1mpled.config", "s1mpled.state"]

# Imports the package named in argv[1] in a fresh interpreter, notes which of its submodules that loaded, then
# resolves every name of __all__ and checks it is the object its home (per _HOME) defines.
_PROBE = """
import importlib, json, sys
name = sys.argv[1]
package = importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.startswith(name + "."))
homes = {export: importlib.import_module(f"{name}.{home}") for export, home in package._HOME.items()}
wrong = [export for export in package.__all__ if getattr(package, export) is not getattr(homes[export], export)]
try:
    package.no_such_name
    missing = None
except AttributeError as exc:
    missing = str(exc)
undir = sorted(set(package.__all__) - set(dir(package)))
print(json.dumps({"loaded": loaded, "wrong": wrong, "missing": missing, "undir": undir}))
"""


@pytest.mark.parametrize("package", PACKAGES)
def test_a_lazy_package_loads_its_names_on_first_use_only(package: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, package], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["loaded"] == [], f"import {package} loaded {probe['loaded']}"
    assert probe["wrong"] == [] and probe["undir"] == []
    assert probe["missing"] == f"module {package!r} has no attribute 'no_such_name'"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_re_exported_name_has_a_home_and_every_home_name_is_exported(package: str) -> None:
    """``__all__`` and the map of homes list the same names (one forgotten in either is caught here)."""
    module = __import__(package, fromlist=["_HOME"])
    assert sorted(module._HOME) == sorted(module.__all__)
