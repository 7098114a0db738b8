"""DAG integrity: every DAG file imports cleanly, and crm_nightly keeps its promises."""

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
    from crm_timetable import CoveredDayTimetable

    dag = dagbag.dags["crm_nightly"]
    assert dag.timetable == CoveredDayTimetable(hour=2)
    assert dag.catchup is False and dag.max_active_runs == 1
    # no start_date: a run, a test or a backfill of any ended day runs its tasks (with one,
    # Airflow creates no task for an earlier day and calls the empty run a success)
    assert dag.start_date is None
    assert all(t.start_date is None for t in dag.tasks)
    assert {"crm", "nightly"} <= set(dag.tags)
    assert dag.doc_md and "Tables written" in dag.doc_md


def _utc(*args):
    import pendulum

    return pendulum.datetime(*args, tz="UTC")


def test_a_scheduled_run_covers_the_utc_day_and_starts_at_two_the_next_morning():
    from airflow.timetables.base import DataInterval, TimeRestriction
    from crm_timetable import CoveredDayTimetable

    tt = CoveredDayTimetable(hour=2)
    after = tt.next_dagrun_info(
        last_automated_data_interval=DataInterval(_utc(2026, 12, 5), _utc(2026, 12, 6)),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
    # the run for 2026-12-06: that day as interval, logical date its start
    assert after.data_interval == DataInterval(_utc(2026, 12, 6), _utc(2026, 12, 7))
    assert after.logical_date == _utc(2026, 12, 6)
    assert after.run_after == _utc(2026, 12, 7, 2)
    # a deployment moving from the old schedule (02:00 to 02:00 intervals, logical date
    # 02:00 of the covered day): the next night covers the next day, no gap, no repeat
    moved = tt.next_dagrun_info(
        last_automated_data_interval=DataInterval(_utc(2026, 12, 5, 2), _utc(2026, 12, 6, 2)),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
    assert moved.logical_date == _utc(2026, 12, 6)


@pytest.mark.parametrize("given", [(2026, 11, 22), (2026, 11, 22, 23, 59), (2026, 11, 22, 2)])
def test_a_manual_run_shows_the_day_of_its_logical_date_as_its_interval(given):
    """The UI and the REST API pass the logical date; the interval is that day (a cron
    interval timetable showed the period ending before it: two days off)."""
    from airflow.timetables.base import DataInterval
    from crm_timetable import CoveredDayTimetable

    interval = CoveredDayTimetable().infer_manual_data_interval(run_after=_utc(*given))
    assert interval == DataInterval(_utc(2026, 11, 22), _utc(2026, 11, 23))


def test_the_schedule_survives_serialization_for_the_scheduler():
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable
    from crm_timetable import CoveredDayTimetable

    back = decode_timetable(encode_timetable(CoveredDayTimetable(hour=3)))
    assert back == CoveredDayTimetable(hour=3) and back != CoveredDayTimetable(hour=2)
    assert back.summary == "daily 03:00 UTC, the UTC day before"


CONTROL = ("check_run", "watcher")  # never open the warehouse


def test_every_task_has_an_owner_retries_and_the_warehouse_pool(dagbag):
    dag = dagbag.dags["crm_nightly"]
    for task in dag.tasks:
        assert task.owner == "crm-data", task.task_id
        assert task.retry_policy is not None, task.task_id
        if task.task_id in CONTROL:
            assert task.pool == "default_pool" and task.retries == 0, task.task_id
        else:
            assert task.retries >= 1, task.task_id
            assert task.pool == "crm_warehouse", task.task_id


def test_every_failed_task_notifies_data_engineers_and_the_watcher_fails_the_run(dagbag):
    dag = dagbag.dags["crm_nightly"]
    for task in dag.tasks:
        if task.task_id not in CONTROL:
            # by name: Airflow's plugin manager imports plugins/ files as modules of its own
            names = [(f.__module__, f.__qualname__) for f in task.on_failure_callback]
            assert ("crm_airflow", "notify_data_engineers") in names, task.task_id
    watcher = dag.get_task("watcher")
    assert watcher.trigger_rule == "one_failed"
    # downstream of every task, so one failure anywhere (not only in a leaf) fails the run
    assert watcher.upstream_task_ids == {t.task_id for t in dag.tasks} - {"watcher"}
    assert not watcher.downstream_task_ids


def test_bad_data_and_failed_gates_fail_at_once_other_errors_retry():
    from crm_airflow import RETRY_POLICY

    from crm_pipeline.errors import PipelineStop

    class TableLevelFailure(PipelineStop):
        pass

    assert (
        RETRY_POLICY.evaluate(TableLevelFailure("orders.net_amount"), 1, 3).action.value == "fail"
    )
    assert RETRY_POLICY.evaluate(OSError("database is locked"), 1, 3).action.value != "fail"
    # a broken source, a broken setting and a day that has not ended are stops too
    from crm_pipeline.errors import ConfigError, RunDateError
    from crm_pipeline.extract import SourceSchemaError

    for stop in (SourceSchemaError("orders lost order_id"), ConfigError("x"), RunDateError("x")):
        assert RETRY_POLICY.evaluate(stop, 1, 3).action.value == "fail", stop


def test_stages_run_in_order_without_cycles(dagbag):
    dag = dagbag.dags["crm_nightly"]
    order = [t.task_id for t in dag.topological_sort()]
    assert (
        order
        == [
            "check_run",
            "extract.extract_table",
            "validate.validate_sources",
            "stage.build_staging",
            "marts.build_fct_orders",
            "marts.build_snapshots",
        ]
        + order[6:]
    )
    assert order[-1] == "watcher"
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream["models.score_customers"] == {"marts.build_snapshots"}
    assert upstream["kpis.evaluate_kpis"] == {"marts.build_snapshots"}
    # the customer dimension is published even when the model gate kept yesterday's scores
    assert upstream["publish.build_dim_customer"] == {
        "marts.build_snapshots",
        "models.score_customers",
    }
    assert dag.get_task("publish.build_dim_customer").trigger_rule == "all_done_min_one_success"
    assert upstream["alerts.prepare_alert_email"] == {
        "kpis.evaluate_kpis",
        "publish.build_dim_customer",
    }
    assert upstream["alerts.send_alert_email"] == {"alerts.prepare_alert_email"}


def test_dag_file_does_no_work_at_import():
    # no database, network or Variable access at import: the module level only defines
    source = (ROOT / "dags" / "crm_nightly.py").read_text()
    for forbidden in ("Variable.get", "create_engine", "Connection.get(", "Warehouse("):
        lines = [ln for ln in source.splitlines() if forbidden in ln and not ln.startswith("    ")]
        assert not lines, f"module-level {forbidden}: {lines}"
    assert len(source.splitlines()) <= 150


def test_parsing_the_dag_loads_no_heavy_library():
    """The scheduler parses the file often: GX, scikit-learn, matplotlib, pandas and DuckDB
    are imported inside the tasks that need them, never at parse time."""
    import subprocess
    import sys

    code = ("import sys; sys.path[:0] = ['plugins', 'dags']; import crm_nightly; "
            "print(sorted(m for m in ('pandas', 'great_expectations', 'sklearn', 'matplotlib', "
            "'scipy', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "[]"
