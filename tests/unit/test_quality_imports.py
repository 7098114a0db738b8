"""The quality package has no import cycle, and each of its modules imports on its own.

The graph is read from the source with ast (every import, at module level or inside a
function), as for the alerts package (test_alerts_imports.py), so a cycle fails even where
a lazy import would hide it at run time; then each module is imported first, in a fresh
interpreter, since a cycle between module-level imports shows only in the right order."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_alerts_imports import find_cycle, imports, module_name

import crm_pipeline.quality

PACKAGE = "crm_pipeline.quality"
ROOT = Path(crm_pipeline.quality.__file__).parent
MODULES = sorted(module_name(p) for p in ROOT.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def test_the_quality_modules_import_each_other_one_way_only():
    edges = graph()
    assert {f"{PACKAGE}.stage", f"{PACKAGE}.commands", f"{PACKAGE}.outcome"} <= set(edges)
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    # nothing inside imports the package's __init__ back, and the settings need no rules
    assert sorted(name for name, targets in edges.items() if PACKAGE in targets) == []
    assert edges[f"{PACKAGE}.settings"] == set()


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    path = [str(ROOT.parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
