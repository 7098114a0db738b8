"""The run summary an analyst reads after `make run`, and the data engineer's release command."""

import pytest
from business import D

from crm_pipeline import cli

# the CLI reads the warehouse through the same URL either way: one engine is enough
pytestmark = pytest.mark.parametrize("built", ["duckdb"], indirect=True)


@pytest.fixture
def env(built_copy, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CRM_WAREHOUSE", built_copy.url)
    return built_copy


def test_summary_shows_tables_segments_tiers_and_headline_kpis(env, capsys):
    cli.main(["summary", "--day", D.isoformat()])
    out = capsys.readouterr().out
    assert "marts.kpi_daily" in out and "marts.customer_rfm" in out
    assert "Champions 2" in out  # segment sizes (tests/business.py)
    assert "vip 1" in out  # tier sizes
    assert "churn_rate               50.0%" in out  # worked out in test_kpis.py
    assert "csat                     66.7" in out


def test_summary_counts_the_days_rows_and_says_why_there_is_no_alert_email(env, capsys):
    import datetime as dt

    from crm_pipeline.alerts import process_alerts
    from crm_pipeline.evaluate import evaluate_day

    cli.main(["summary", "--day", D.isoformat()])
    out = capsys.readouterr().out
    # a table kept by day: the day's rows, and all; the others: all
    rfm = next(line for line in out.splitlines() if "marts.customer_rfm" in line)
    assert f" on {D}" in rfm and rfm.rstrip().endswith("in all")
    assert f"Alert email for {D}: none (no alert run yet in this warehouse)." in out
    evaluate_day(env, D, "r")
    process_alerts(env, D, "r")
    cli.main(["summary", "--day", D.isoformat()])
    assert f"Alert email for {D}" in capsys.readouterr().out
    # a later day alerted: an earlier one says so instead of "nothing new"
    later = D + dt.timedelta(days=1)
    evaluate_day(env, later, "r")
    process_alerts(env, later, "r")
    earlier = D - dt.timedelta(days=1)
    process_alerts(env, earlier, "r")
    cli.main(["summary", "--day", earlier.isoformat()])
    assert (
        f"Alert email for {earlier}: none: {later} was already alerted, and alert state moves "
        "forward only" in capsys.readouterr().out
    )


def test_release_quarantine_reports_what_it_released(env, capsys):
    cli.main(["release-quarantine", "--day", D.isoformat()])
    assert "released 0 quarantined row version(s)" in capsys.readouterr().out
