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
        if task.task_id != "watcher":  # check_run too: a refused night is told
            # by name: Airflow's plugin manager imports plugins/ files as modules of its own
            names = [(f.__module__, f.__qualname__) for f in task.on_failure_callback]
            assert ("crm_airflow", "notify_data_engineers") in names, task.task_id
    watcher = dag.get_task("watcher")
    assert not watcher.on_failure_callback  # what it reports was told by the failed task
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
            "validate_sources",
            "build_staging",
            "build_fct_orders",
            "build_snapshots",
        ]
        + order[6:]
    )
    assert order[-1] == "watcher"
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream["score_customers"] == {"build_snapshots"}
    assert upstream["evaluate_kpis"] == {"build_snapshots"}
    # the customer dimension is published even when the model gate kept yesterday's scores
    assert upstream["build_dim_customer"] == {
        "build_snapshots",
        "score_customers",
    }
    assert dag.get_task("build_dim_customer").trigger_rule == "all_done_min_one_success"
    assert upstream["alerts.prepare_alert_email"] == {
        "evaluate_kpis",
        "build_dim_customer",
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

    code = (
        "import sys; sys.path[:0] = ['plugins', 'dags']; import crm_nightly; "
        "print(sorted(m for m in ('pandas', 'great_expectations', 'sklearn', 'matplotlib', "
        "'scipy', 'duckdb') if m in sys.modules))"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert out == "[]"


WRITERS = {
    "marts.fct_orders": "build_fct_orders",
    "marts.customer_rfm": "build_snapshots",
    "marts.customer_value_tier": "build_snapshots",
    "marts.kpi_daily": "build_snapshots",
    "marts.segment_migration": "build_snapshots",
    "marts.customer_clv": "score_customers",
    "marts.customer_churn_risk": "score_customers",
    "marts.dim_customer": "build_dim_customer",
    "marts.kpi_evaluation": "evaluate_kpis",
    "marts.alerts": "alerts.prepare_alert_email",
}


def test_each_public_mart_is_an_asset_and_an_outlet_of_exactly_the_task_that_writes_it(dagbag):
    """Other DAGs and BI refreshes schedule on these assets: one writer each, one naming."""
    from airflow.sdk import Asset
    from crm_airflow import MART_ASSETS

    from crm_pipeline.warehouse.tables import PUBLIC_MARTS

    assert set(PUBLIC_MARTS) == set(WRITERS)
    outlets: dict[str, list[str]] = {}
    for task in dagbag.dags["crm_nightly"].tasks:
        for asset in task.outlets:
            assert isinstance(asset, Asset), (task.task_id, asset)
            outlets.setdefault(asset.name, []).append(task.task_id)
    assert outlets == {f"crm_warehouse.{table}": [task] for table, task in WRITERS.items()}
    for table, asset in MART_ASSETS.items():
        schema, name = table.split(".")
        assert (asset.name, asset.uri, asset.group) == (
            f"crm_warehouse.{table}",
            f"x-crm-warehouse://{schema}/{name}",
            "crm_warehouse",
        )
        assert Asset(name=asset.name, uri=asset.uri) == Asset(asset.name, asset.uri)


def test_every_task_puts_the_day_and_what_it_published_on_its_asset_events(dagbag):
    for task in dagbag.dags["crm_nightly"].tasks:  # by name: plugins may be loaded twice
        hook = getattr(task, "_post_execute_hook", None) or task.partial_kwargs["post_execute"]
        assert (hook.__module__, hook.__name__) == ("crm_airflow", "announce_marts"), task.task_id


def test_the_deadline_is_off_by_default_and_on_it_is_an_async_callback_after_queued(
    dagbag, monkeypatch
):
    from crm_airflow import nightly_deadline, notify_deadline_missed

    from crm_pipeline import config

    assert config.deadline() == config.Deadline(enabled=False, after_queued_minutes=120)
    assert not dagbag.dags["crm_nightly"].deadline
    monkeypatch.setattr(config, "deadline", lambda: config.Deadline(True, 90.0))
    alert = nightly_deadline()
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
    assert alert.interval.total_seconds() == 90 * 60
    assert type(alert.callback).__name__ == "AsyncCallback"
    assert alert.callback.path == "crm_airflow.notify_deadline_missed"
    assert notify_deadline_missed.__code__.co_flags & 0x80  # a coroutine function
    # parsed with it, the DAG serializes (the scheduler and the triggerer read it from there)
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["crm_nightly"]
    assert dag.deadline == [alert]
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert restored.deadline
    # `airflow dags test` never fires it and, in Airflow 3.3, crashes at the end of a run of
    # a DAG with one: the DAG that command parses has none
    monkeypatch.setattr("sys.argv", ["airflow", "dags", "test", "crm_nightly", "2026-06-30"])
    assert nightly_deadline() is None


@pytest.mark.parametrize(
    "bad",
    [
        {"enabled": "yes"},
        {"after_queued_minutes": 0},
        {"after_queued_minutes": "2h"},
        {"enabled": True, "minutes": 5},
        [1, 2],
    ],
)
def test_a_broken_deadline_setting_is_refused_by_name(bad):
    from crm_pipeline.config import deadline
    from crm_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"deadline"):
        deadline(bad)


def test_the_consumer_example_in_docs_schedules_on_the_nightlys_assets(tmp_path):
    """docs/assets.md's example DAG parses, and the assets it waits for are the nightly's."""
    import re

    from crm_airflow import MART_ASSETS

    doc = (ROOT / "docs" / "assets.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", doc, re.S)
    (tmp_path / "crm_bi_refresh.py").write_text(example)
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    condition = bag.dags["crm_bi_refresh"].timetable.asset_condition
    waited = {asset.name: asset.uri for asset in condition.objects}
    marts = ("marts.customer_clv", "marts.customer_value_tier")
    assert waited == {MART_ASSETS[m].name: MART_ASSETS[m].uri for m in marts}
