"""The package as the Docker image installs it: not editable, in a site-packages of its own,
with no include/ beside it, run from outside the checkout.

The Dockerfile's COPY lines are replayed into a scratch /opt/crm, which is installed as the
image installs it (`pip install --no-deps /opt/crm`) into a target directory; that directory
goes first on PYTHONPATH, the working directory is a scratch one, and CRM_INCLUDE_DIR is the
Dockerfile's, mapped to the scratch copy. The settings load from it, a whole night runs from
it (bench/night.py: the DAG's stage functions in the DAG's order, no Airflow), and without
CRM_INCLUDE_DIR the installed copy does not find its settings.
"""

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from factories import ROOT

from crm_devtools import demo
from crm_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 6, 30)
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE_ROOT = "/opt/crm"


def image_path(opt: Path, path: str) -> Path:
    assert path.startswith(IMAGE_ROOT), path
    return opt / path[len(IMAGE_ROOT) :].lstrip("/")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("installed")
    opt = tmp / "opt-crm"
    opt.mkdir()
    for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", DOCKERFILE, re.M):
        *sources, dest = line.split()
        for source in sources:
            src = ROOT / source
            target = image_path(opt, dest)
            if dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                target = target / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, target)
    install = re.search(r"pip install --no-cache-dir --no-deps (\S+)$", DOCKERFILE, re.M)
    assert install, "the Dockerfile no longer installs the package as this test does"
    site = tmp / "site-packages"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(site),
            str(image_path(opt, install.group(1))),
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (site / "crm_pipeline.pth").exists() and (site / "crm_pipeline/config.py").is_file()
    include = re.search(r"^ENV CRM_INCLUDE_DIR=(\S+)$", DOCKERFILE, re.M).group(1)
    work = tmp / "cwd"  # outside the checkout: nothing found by accident from the working dir
    work.mkdir()
    return {"site": site, "include": image_path(opt, include), "cwd": work, "tmp": tmp}


def run_python(installed, code: str, *, include: bool = True) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(installed["tmp"]),
        "PYTHONPATH": str(installed["site"]),
    }
    if include:
        env["CRM_INCLUDE_DIR"] = str(installed["include"])
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=installed["cwd"],
        timeout=300,
    )


def test_the_installed_package_loads_every_setting_through_crm_include_dir(installed):
    code = (
        "import crm_pipeline; from crm_pipeline import config, stages; "
        "print(crm_pipeline.__file__); print(config.CONFIG_DIR); print(stages.check_settings())"
    )
    done = run_python(installed, code)
    assert done.returncode == 0, done.stderr[-2000:]
    module, config_dir, _ = done.stdout.splitlines()
    assert Path(module).is_relative_to(installed["site"])
    assert config_dir == str(installed["include"] / "config")
    # without it, the copy looks beside itself and does not find the settings
    done = run_python(installed, code, include=False)
    assert done.returncode != 0 and "pipeline.yaml" in done.stderr


def test_a_night_runs_end_to_end_from_the_installed_package(installed):
    tmp = installed["tmp"]
    source, warehouse = tmp / "source.db", tmp / "warehouse.duckdb"
    demo.generate(f"sqlite:///{source}", customers=300, days=400, seed=5, end_date=DAY)
    code = f"""
import json, runpy, sys
sys.argv = ["night", "sqlite:///{source}", "duckdb:///{warehouse}", "{DAY}"]
runpy.run_path({str(ROOT / "bench/night.py")!r}, run_name="__main__")
from crm_pipeline import config
print("IMPORTED " + json.dumps({{
    "include": str(config.INCLUDE_DIR),
    "modules": {{n: m.__file__ for n, m in sys.modules.items()
                 if n.split(".")[0] == "crm_pipeline" and getattr(m, "__file__", None)}},
}}))
"""
    done = run_python(installed, code)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.split("IMPORTED ", 1)[1])
    assert imported["include"] == str(installed["include"])
    assert len(imported["modules"]) > 10  # the stages, the warehouse, the marts, the models
    outside = {
        n: f
        for n, f in imported["modules"].items()
        if not Path(f).is_relative_to(installed["site"])
    }
    assert not outside, f"imported from elsewhere than the installed copy: {outside}"

    wh = Warehouse(f"duckdb:///{warehouse}")
    with wh.begin() as conn:
        marts = set(wh.tables(conn, "marts"))
        assert {
            "fct_orders",
            "dim_customer",
            "customer_rfm",
            "kpi_daily",
            "kpi_evaluation",
        } <= marts
        for table in ("customer_rfm", "kpi_daily"):
            rows = conn.exec_driver_sql(
                f"select count(*) from marts.{table} where as_of_date = '{DAY}'"
            ).scalar_one()
            assert rows > 0, table
        assert conn.exec_driver_sql("select count(*) from marts.dim_customer").scalar_one() == 300
    wh.engine.dispose()
