"""The DAG's steps called directly, as a task would, where they decide something themselves."""

import datetime as dt

import pytest
from business import D

from crm_pipeline import stages
from crm_pipeline.alerts import process_alerts

pytestmark = pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)


def test_without_an_smtp_connection_the_email_waits_in_the_outbox(built):
    run = stages.Run(day=D, run_id="r", started=dt.datetime(2025, 7, 1, 2), warehouse_url=built.url)
    process_alerts(built, D, "r", recipients="manager@example.com")
    result = stages.send_alerts(run, None)
    assert result["sent"] == [] and result["reason"] == "no smtp_default connection"
    with built.begin() as conn:
        states = conn.exec_driver_sql("select state from ops.alert_outbox").fetchall()
    assert all(s == ("pending",) for s in states)


def test_a_first_run_builds_the_configured_history_and_later_runs_their_day(built):
    run = stages.Run(day=D, run_id="r", started=dt.datetime(2025, 7, 1, 2), warehouse_url=built.url)
    # nothing before D yet: the run builds the configured 90 days ending at D, in one pass
    assert stages.snapshots(run) == (D - dt.timedelta(days=89)).isoformat()
    # from then on a run builds its own day; history_days asks for a range explicitly
    assert stages.snapshots(run) == D.isoformat()
    assert stages.snapshots(run, history_days=3) == (D - dt.timedelta(days=2)).isoformat()
