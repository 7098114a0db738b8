"""What `make run` and `make backfill` call a good night, and what they refuse to run."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from factories import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import task_report  # noqa: E402 - the script, imported as a module


def task(task_id, state, map_index=-1):
    return {
        "task_id": task_id,
        "state": state,
        "map_index": map_index,
        "start_date": "2026-11-30T02:00:00+00:00",
        "end_date": "2026-11-30T02:00:05+00:00",
    }


def test_a_good_night_is_every_task_succeeded_and_the_watcher_skipped():
    good = [
        task("check_run", "success"),
        task("extract.extract_table", "success", 0),
        task("score_customers", "success"),
        task("watcher", "skipped"),
    ]
    assert task_report.verdict(good) == []


def test_a_failed_task_with_green_leaves_or_a_run_without_tasks_is_not_a_good_night():
    gate = [
        task("score_customers", "failed"),
        task("build_dim_customer", "success"),
        task("alerts.send_alert_email", "success"),
        task("watcher", "failed"),
    ]
    assert task_report.verdict(gate) == ["score_customers failed", "watcher failed"]
    # Airflow creates no task for a day before a DAG's start_date, and calls the run a success
    assert task_report.verdict([]) == ["no task ran for this run"]
    assert task_report.verdict([task("watcher", "success")]) == ["watcher success"]


def test_the_report_exits_1_and_says_why(tmp_path):
    from crm_pipeline.source_schema import TABLE_ORDER

    tasks = [
        task("extract.extract_table", "failed", 3),
        task("watcher", "failed"),
        {**task("extract.extract_table", "success", 0), "rendered_map_index": "customers"},
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "task_report.py"), "r1"],
        input=json.dumps(tasks),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    # a mapped extract is named by its table, not by its index
    assert f"extract.extract_table[{TABLE_ORDER[3]}] failed" in done.stderr
    assert f"extract.extract_table[{TABLE_ORDER[3]}]" in done.stdout  # the table of tasks too
    assert "extract.extract_table[customers]" in done.stdout


def test_a_day_that_has_not_ended_is_refused_before_any_work():
    today = dt.datetime.now(dt.UTC).date().isoformat()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "dag_run.sh"), today, "/dev/null"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2 and f"{today} has not ended yet" in done.stderr


def test_the_demo_is_not_advanced_into_a_day_that_has_not_ended(tmp_path, monkeypatch):
    from crm_devtools import cli

    monkeypatch.setenv("AIRFLOW_CONN_CRM_SOURCE", f"sqlite:///{tmp_path}/source.db")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    with pytest.raises(SystemExit, match="has not ended yet"):
        cli.main(["prepare-demo", "--day", today])
    assert not os.path.exists(tmp_path / "source.db")
