"""The package's modules import each other one way only: no cycle anywhere in crm_pipeline,
the plumbing (settings, errors, dates, the source contract, the warehouse) imports no stage,
nothing imports Airflow or the dev tools, and the alerts' email renders from data.

Read from the source with ast (every import, at module level or inside a function), so the
test needs no warehouse and fails on a cycle even where a lazy import would hide it at run
time. The package's `__init__` re-exports the public names; no module of the package
imports it back (importing a submodule runs the parent's __init__ first, which is fine as
long as the parent is not imported again from below)."""

import ast
from pathlib import Path

import crm_pipeline
import crm_pipeline.alerts

PACKAGE = "crm_pipeline.alerts"
ROOT = Path(crm_pipeline.alerts.__file__).parent
TOP = Path(crm_pipeline.__file__).parent
# the plumbing every stage stands on: it must not reach up into a stage
PLUMBING = (
    "crm_pipeline.config",
    "crm_pipeline.errors",
    "crm_pipeline.dates",
    "crm_pipeline.source_schema",
    "crm_pipeline.warehouse",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], everything: bool = False) -> set[str]:
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
        found.update(n for n in names if everything or n in modules)
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = {module_name(p): p for p in root.rglob("*.py")}
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


def test_the_package_has_no_import_cycle_and_its_plumbing_imports_no_stage():
    edges = graph(TOP)
    assert {"crm_pipeline.stages", "crm_pipeline.warehouse.engine"} <= set(edges)
    # a package's __init__ re-exports its modules; a module importing the __init__ of its own
    # package would be a cycle through it, and is found as one
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    for name, targets in edges.items():
        if name.startswith(PLUMBING):
            above = sorted(t for t in targets if not t.startswith(PLUMBING))
            assert above == [], (name, above)


def test_the_package_never_imports_airflow():
    # (nor the dev tools: test_devtools_boundary.py, which also imports every module)
    for path in TOP.rglob("*.py"):
        outside = {n.split(".")[0] for n in imports(path, set(), everything=True)}
        assert "airflow" not in outside, path


def test_the_quality_modules_import_each_other_one_way_only():
    """stage and commands -> reader -> quarantine -> outcome -> rules; the settings (read by
    the preflight check) need nothing of the package, so checking them loads no GX."""
    edges = graph(TOP / "quality")
    package = "crm_pipeline.quality"
    assert {f"{package}.stage", f"{package}.commands", f"{package}.outcome"} <= set(edges)
    assert sorted(name for name, targets in edges.items() if package in targets) == []
    assert edges[f"{package}.settings"] == set()
    assert f"{package}.stage" not in edges[f"{package}.reader"]


def test_the_kpi_stage_reads_the_registry():
    edges = graph(TOP / "kpi")
    assert "crm_pipeline.kpi.registry" in edges["crm_pipeline.kpi.evaluate"]
    assert sorted(name for name, targets in edges.items() if "crm_pipeline.kpi" in targets) == []


def test_the_models_statistics_know_nothing_of_the_stage_that_runs_them():
    edges = graph(TOP / "models")
    package = "crm_pipeline.models"
    assert {f"{package}.stage", f"{package}.churn.reasons", f"{package}.clv.score"} <= set(edges)
    stage_side = {f"{package}.{m}" for m in ("stage", "gate", "publish", "training", "store")}
    for name, targets in edges.items():
        if name.startswith((f"{package}.clv", f"{package}.churn")):
            assert not targets & stage_side, (name, targets)
