"""crm_nightly end to end through Airflow (`dag.test()`), on a small generated business.

A real DAG run: mapped extract tasks, staging, marts, with the connections given as
AIRFLOW_CONN_* URIs exactly as a user would. Then the same date again (same rows), then
the demo business advances a day and the next date picks up only what changed.
"""

import datetime as dt

import pytest
from airflow.dag_processing.dagbag import DagBag
from factories import ROOT

from crm_pipeline import demo
from crm_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 6, 30)


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, airflow_db):
    tmp = tmp_path_factory.mktemp("e2e")
    source = f"sqlite:///{tmp}/source.db"
    demo.generate(source, customers=400, days=200, seed=7, end_date=DAY)
    env = {
        "AIRFLOW_CONN_CRM_SOURCE": source,
        "AIRFLOW_CONN_CRM_WAREHOUSE": f"duckdb:///{tmp}/warehouse.duckdb",
    }
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["crm_nightly"]
    return dag, env, source, Warehouse(env["AIRFLOW_CONN_CRM_WAREHOUSE"])


def run(dag, env, day, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dag_run = dag.test(logical_date=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    assert dag_run.state == "success"


def snapshot(wh, table):
    with wh.begin() as conn:
        return conn.exec_driver_sql(f"select * from {table} order by 1").fetchall()


def test_a_night_builds_the_core_tables_and_a_rerun_gives_the_same_rows(nightly, monkeypatch):
    dag, env, source, wh = nightly
    run(dag, env, DAY, monkeypatch)
    counts = wh.row_counts(("marts",))
    assert counts["marts.fct_orders"] > 1000 and counts["marts.dim_customer"] > 300
    with wh.begin() as conn:
        latest, as_of = conn.exec_driver_sql(
            "select max(order_date), min(as_of_date) from marts.fct_orders").one()
    assert latest == DAY and as_of == DAY
    first = {t: snapshot(wh, t) for t in ("marts.fct_orders", "marts.dim_customer")}
    batches = snapshot(wh, "ops.extract_batches")

    run(dag, env, DAY, monkeypatch)
    assert {t: snapshot(wh, t) for t in first} == first
    with wh.begin() as conn:
        rerun = conn.exec_driver_sql(
            "select sum(new_versions) from ops.extract_batches where batch_id > "
            f"{max(b[0] for b in batches)}").scalar_one()
    assert rerun == 0


def test_the_next_night_pulls_only_what_changed(nightly, monkeypatch):
    dag, env, source, wh = nightly
    next_day = DAY + dt.timedelta(days=1)
    changes = demo.advance(source, next_day)
    run(dag, env, next_day, monkeypatch)
    with wh.begin() as conn:
        pulled = dict(conn.exec_driver_sql(
            "select table_name, new_versions from ops.extract_batches "
            f"where as_of_date = date '{next_day}'").fetchall())
        newest = conn.exec_driver_sql("select max(order_date) from marts.fct_orders").scalar_one()
    assert pulled["orders"] > 0 and newest == next_day
    assert sum(pulled.values()) <= sum(changes.values()) + 50  # the day's changes, not the history
