"""A night killed anywhere, then rerun, leaves the marts a clean night leaves.

The night runs in a child process (bench/night.py: the DAG's stage functions in the
DAG's order) that SIGKILLs itself at its N-th SQL statement: inside a transaction,
between two, mid-extract, mid-history, during the models or the alert state. The rerun
then runs the whole night again, as Airflow's retry or a person's rerun would. Checked
for a first run on an empty warehouse (a kill late in it must not leave the rerun thinking
the 90-day history is done) and for a later night, on every table of `marts`.
"""

import datetime as dt
import os
import shutil
import subprocess
import sys

import pytest
from factories import ROOT

from crm_devtools import demo
from crm_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 6, 30)
NEXT = DAY + dt.timedelta(days=1)


def night(source, warehouse, day, kill_at=0):
    cmd = [
        sys.executable,
        "-m",
        "bench.night",
        f"sqlite:///{source}",
        f"duckdb:///{warehouse}",
        str(day),
    ]
    if kill_at:
        cmd += ["--kill-at", str(kill_at)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if kill_at:
        assert done.returncode == -9, f"not killed at statement {kill_at}: {done.stderr[-2000:]}"
        return 0
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1].split()[-1])


def marts(path):
    """Every table of marts, its rows without the column naming the run that wrote them."""
    wh = Warehouse(f"duckdb:///{path}")
    out = {}
    with wh.begin() as conn:
        for table in wh.tables(conn, "marts"):
            cols = [c for c in wh.columns(conn, f"marts.{table}") if c != "run_id"]
            rows = conn.exec_driver_sql(f"select {', '.join(cols)} from marts.{table}").fetchall()
            out[table] = sorted(map(tuple, rows), key=repr)
    wh.engine.dispose()
    return out


def copy_warehouse(src, dst):
    for suffix in ("", ".wal"):
        if os.path.exists(f"{src}{suffix}"):
            shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Two clean nights (DAY on an empty warehouse, then NEXT), and their sources."""
    tmp = tmp_path_factory.mktemp("killed")
    first, second = tmp / "source-day.db", tmp / "source-next.db"
    demo.generate(f"sqlite:///{first}", customers=600, days=400, seed=3, end_date=DAY)
    shutil.copy(first, second)
    demo.advance(f"sqlite:///{second}", NEXT)
    wh = tmp / "clean.duckdb"
    n_first = night(first, wh, DAY)
    copy_warehouse(wh, tmp / "after-day.duckdb")
    after_day = marts(wh)
    n_next = night(second, wh, NEXT)
    return {
        "tmp": tmp,
        "first": first,
        "second": second,
        "n_first": n_first,
        "n_next": n_next,
        "after_day": after_day,
        "after_next": marts(wh),
    }


def test_the_clean_nights_publish_every_mart(clean):
    for table in (
        "kpi_daily",
        "kpi_evaluation",
        "customer_clv",
        "customer_churn_risk",
        "dim_customer",
        "alerts",
    ):
        assert clean["after_day"][table], table
    days = {r[0] for r in clean["after_day"]["kpi_evaluation"]}
    assert len(days) == 90


@pytest.mark.parametrize("share", [0.15, 0.5, 0.8, 0.97])
def test_a_first_run_killed_then_rerun_equals_a_clean_one(clean, share, tmp_path):
    wh = tmp_path / "warehouse.duckdb"
    night(clean["first"], wh, DAY, kill_at=int(clean["n_first"] * share))
    night(clean["first"], wh, DAY)
    assert marts(wh) == clean["after_day"]


@pytest.mark.parametrize("share", [0.3, 0.9])
def test_a_later_night_killed_then_rerun_equals_a_clean_one(clean, share, tmp_path):
    wh = tmp_path / "warehouse.duckdb"
    copy_warehouse(clean["tmp"] / "after-day.duckdb", wh)
    night(clean["second"], wh, NEXT, kill_at=int(clean["n_next"] * share))
    night(clean["second"], wh, NEXT)
    assert marts(wh) == clean["after_next"]
