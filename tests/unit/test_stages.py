"""The DAG's steps called directly, as a task would, where they decide something themselves."""

import datetime as dt

import pytest
from business import D

from crm_pipeline import stages
from crm_pipeline.alerts import process_alerts
from crm_pipeline.kpi.evaluate import evaluate_day


@pytest.mark.parametrize("built", ["duckdb"], indirect=True)
def test_without_an_smtp_connection_the_email_waits_in_the_outbox(built_copy):
    run = stages.Run(
        day=D, run_id="r", started=dt.datetime(2025, 7, 1, 2), warehouse_url=built_copy.url
    )
    # a target no business meets, so that the day has something to tell
    targets = {
        "kpis": {
            "active_customers": {
                "direction": "higher_is_better",
                "unit": "count",
                "targets": [{"effective_from": "2020-01-01", "target": 1e9}],
            }
        }
    }
    rules = {
        "recipients": {"to": ["manager@example.com"]},
        "rules": [{"kpi": "active_customers", "dimensions": {"all": "*"}}],
    }
    evaluate_day(built_copy, D, "r", targets=targets)
    prepared = process_alerts(built_copy, D, "r", config=rules, targets=targets)
    assert prepared["message_id"], prepared  # the day has something to tell
    result = stages.send_alerts(run, None)
    assert result == {"sent": [], "pending": 1, "reason": "no smtp_default connection"}
    with built_copy.begin() as conn:
        waiting = conn.exec_driver_sql(
            "select message_id, state, attempts from ops.alert_outbox"
        ).fetchall()
    assert [tuple(r) for r in waiting] == [(prepared["message_id"], "pending", 0)]


@pytest.mark.parametrize("built", ["duckdb"], indirect=True)
def test_a_first_run_builds_the_configured_history_and_later_runs_their_day(built_copy):
    run = stages.Run(
        day=D, run_id="r", started=dt.datetime(2025, 7, 1, 2), warehouse_url=built_copy.url
    )
    # nothing evaluated before D yet: the run builds the configured 90 days ending at D
    first = stages.snapshots(run)
    assert first == (D - dt.timedelta(days=89)).isoformat()
    # killed before its evaluation: the rerun builds (and evaluates) the history again,
    # since the history is done only once it is evaluated
    assert stages.snapshots(run) == first
    stages.evaluate(run, first)
    # from then on a run builds its own day; history_days asks for a range explicitly
    assert stages.snapshots(run) == D.isoformat()
    assert stages.snapshots(run, history_days=3) == (D - dt.timedelta(days=2)).isoformat()


def run_started(started, day=D):
    return stages.Run(day=day, run_id="r", started=started, warehouse_url="duckdb:///unused")


def test_a_day_that_has_not_ended_is_refused_with_the_reason():
    from crm_pipeline.errors import RunDateError

    with pytest.raises(RunDateError, match=r"cannot build 2025-06-30: the day has not ended"):
        stages.preflight(run_started(dt.datetime(2025, 6, 30, 23, 59)), False, "")
    with pytest.raises(RunDateError, match="latest one that has ended is 2025-06-29"):
        stages.preflight(run_started(dt.datetime(2025, 6, 30, 9, tzinfo=dt.UTC)), False, "")
    # the scheduled run, at 02:00 the next morning, and a day years back both pass
    assert stages.preflight(run_started(dt.datetime(2025, 7, 1, 2)), False, "")["day"] == str(D)
    old = run_started(dt.datetime(2026, 12, 1), day=dt.date(1997, 9, 30))
    assert stages.preflight(old, False, "")["day"] == "1997-09-30"


def test_a_run_that_can_mail_but_has_nobody_to_tell_of_a_failure_is_refused():
    from crm_pipeline.errors import ConfigError, PipelineStop

    run = run_started(dt.datetime(2025, 7, 1, 2))
    with pytest.raises(ConfigError, match="CRM_DATA_ENGINEERS is not set") as caught:
        stages.preflight(run, can_mail=True, engineers=" ")
    assert isinstance(caught.value, PipelineStop)  # fails at once, no retry
    assert stages.preflight(run, True, "de@example.com")["data_engineers"] == "de@example.com"
    assert stages.preflight(run, False, "")["data_engineers"] is None  # nothing can be sent


def test_a_broken_setting_is_a_config_error_naming_the_file(monkeypatch, tmp_path):
    from crm_pipeline import config
    from crm_pipeline.errors import ConfigError

    bad = tmp_path / "pipeline.yaml"
    text = (config.CONFIG_DIR / "pipeline.yaml").read_text()
    bad.write_text(text.replace("{tier: small, percent: 80}", "{tier: small, percent: 70}"))
    monkeypatch.setenv("CRM_PIPELINE_SETTINGS", str(bad))
    config.settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"pipeline.yaml: .*percents add up to 90"):
            stages.check_settings()
    finally:
        config.settings.cache_clear()


QUIET_GX = """
import datetime as dt, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from crm_pipeline import stages
run = stages.Run(day=dt.date.fromisoformat(sys.argv[2]), run_id="r",
                 started=dt.datetime(2025, 7, 1, 2), warehouse_url=sys.argv[1],
                 data_dir=Path(sys.argv[3]))
stages.validate(run)
"""


@pytest.mark.parametrize("built", ["duckdb"], indirect=True)
def test_the_validation_log_is_the_pipelines_not_great_expectations_chatter(built_copy, tmp_path):
    """A task's log in the Airflow UI: GX's own INFO (about 200 lines of "Skipping
    registering function ... closure" and temporary docs sites) buried the lines that say
    what was validated."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", QUIET_GX, built_copy.url, D.isoformat(), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert any(line.startswith("crm_pipeline.validate validation of") for line in lines), lines
    assert [line for line in lines if line.startswith("great_expectations")] == []
