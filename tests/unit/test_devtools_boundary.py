"""The product does not depend on the development tools: crm_devtools may import crm_pipeline,
never the reverse (issue 14, item 5).

Two checks: no import of crm_devtools anywhere in the product's source (crm_pipeline, dags,
plugins), lazy imports inside functions included; and importing every crm_pipeline module in a
fresh interpreter leaves no crm_devtools module loaded (nor any of Airflow's).
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

from factories import ROOT

PRODUCT = ("crm_pipeline", "dags", "plugins")


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_product_source_imports_the_devtools():
    files = [path for top in PRODUCT for path in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 20  # the whole product is scanned
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in imported_modules(path) if n.split(".")[0] == "crm_devtools"
        )
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_crm_pipeline_module_loads_no_devtools():
    code = """
import importlib, json, pkgutil, sys
import crm_pipeline
names = [m.name for m in pkgutil.walk_packages(crm_pipeline.__path__, "crm_pipeline.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "imported": names,
    "file": crm_pipeline.__file__,
    "devtools": sorted(m for m in sys.modules if m.split(".")[0] == "crm_devtools"),
    "airflow": sorted(m for m in sys.modules if m.split(".")[0] == "airflow"),
}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["imported"]) > 20  # the whole package, subpackages included
    assert Path(result["file"]).is_relative_to(ROOT)  # this checkout's package
    assert result["devtools"] == []
    assert result["airflow"] == []  # the package never needs Airflow either
