"""The models package has no import cycle, and every module imports on its own.

Two checks: the import graph read from the source with ast (every import, at module level
or inside a function, so a lazy import cannot hide a cycle), and each module imported
first thing in a fresh interpreter (an import-time cycle fails there whatever was imported
before). Neither needs a warehouse."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import crm_pipeline.models

PACKAGE = "crm_pipeline.models"
ROOT = Path(crm_pipeline.models.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that a file imports (`from a.b import c` counts as a.b.c
    when that is a module, else as a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_models_modules_import_each_other_one_way_only():
    edges = graph()
    assert {f"{PACKAGE}.stage", f"{PACKAGE}.churn.reasons", f"{PACKAGE}.clv.score"} <= set(edges)
    # a package's __init__ that re-exports (clv) imports its own modules; leave those
    # edges out, as importing a submodule runs the parent's __init__ first anyway
    edges = {
        name: {t for t in targets if not (name.endswith("__init__") or t.startswith(name + "."))}
        for name, targets in edges.items()
    }
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    # the statistics know nothing of the stage that runs them
    stage_side = {f"{PACKAGE}.{m}" for m in ("stage", "gate", "publish", "training", "store")}
    for name, targets in edges.items():
        if name.startswith((f"{PACKAGE}.clv", f"{PACKAGE}.churn")):
            assert not targets & stage_side, (name, targets)


def test_every_models_module_imports_first_in_a_fresh_interpreter():
    names = sorted(graph())
    code = "import importlib, sys; importlib.import_module(sys.argv[1])"
    # the same crm_pipeline as this process, installed or not
    tree = str(ROOT.parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, os.environ.get("PYTHONPATH", "")])}
    for name in names:
        done = subprocess.run(
            [sys.executable, "-c", code, name],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
