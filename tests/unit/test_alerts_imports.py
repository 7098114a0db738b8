"""The alerts package has no import cycle: its modules import each other one way only.

Read from the source with ast (every import, at module level or inside a function), so the
test needs no warehouse and fails on a cycle even where a lazy import would hide it at run
time. The package's `__init__` re-exports the public names; no module of the package
imports it back (importing a submodule runs the parent's __init__ first, which is fine as
long as the parent is not imported again from below)."""

import ast
from pathlib import Path

import crm_pipeline.alerts

PACKAGE = "crm_pipeline.alerts"
ROOT = Path(crm_pipeline.alerts.__file__).parent


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


def test_the_alerts_modules_import_each_other_one_way_only():
    edges = graph()
    assert {"crm_pipeline.alerts.stage", "crm_pipeline.alerts.email.mime"} <= set(edges)
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    # the package's __init__ is the public face: nothing inside imports it back
    back = sorted(name for name, targets in edges.items() if PACKAGE in targets)
    assert back == [], back
    # the email renders from data: it imports neither the stage nor the at-risk read
    for name, targets in edges.items():
        if name.startswith(f"{PACKAGE}.email"):
            assert not targets & {f"{PACKAGE}.stage", f"{PACKAGE}.at_risk"}, (name, targets)


def test_the_cycle_check_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
