"""DAG integrity: every DAG file imports cleanly, and crm_nightly keeps its promises."""

import datetime as dt

import pytest
from airflow.dag_processing.dagbag import DagBag
from factories import ROOT


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "crm_nightly" in dagbag.dag_ids


def test_crm_nightly_schedule_covers_the_day_that_just_ended(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["crm_nightly"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 2 * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.start_date <= dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # backfills reach back
    assert {"crm", "nightly"} <= set(dag.tags)
    assert dag.doc_md and "Tables written" in dag.doc_md


def test_every_task_has_an_owner_retries_and_the_warehouse_pool(dagbag):
    dag = dagbag.dags["crm_nightly"]
    for task in dag.tasks:
        assert task.owner == "crm-data", task.task_id
        assert task.retries >= 1, task.task_id
        assert task.pool == "crm_warehouse", task.task_id


def test_stages_run_in_order_without_cycles(dagbag):
    dag = dagbag.dags["crm_nightly"]
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index("extract.extract_table") < order.index("stage.build_staging")
    assert order.index("stage.build_staging") < order.index("marts.build_fct_orders")
    assert order.index("marts.build_snapshots") < order.index("marts.build_dim_customer")
    assert {g.split(".")[0] for g in order} >= {"extract", "stage", "marts"}


def test_dag_file_does_no_work_at_import():
    # no database, network or Variable access at import: the module level only defines
    source = (ROOT / "dags" / "crm_nightly.py").read_text()
    for forbidden in ("Variable.get", "create_engine", "Connection.get(", "Warehouse("):
        lines = [ln for ln in source.splitlines() if forbidden in ln and not ln.startswith("    ")]
        assert not lines, f"module-level {forbidden}: {lines}"
    assert len(source.splitlines()) <= 150
