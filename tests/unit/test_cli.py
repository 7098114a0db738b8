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
    from crm_pipeline.kpi.evaluate import evaluate_day

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


def held(wh):
    with wh.begin() as conn:
        return sorted(
            conn.exec_driver_sql(
                "select table_name, row_key, rule from quarantine.rows where released_at is null"
            ).fetchall()
        )


def test_release_quarantine_reports_what_it_released(env, capsys):
    import datetime as dt

    from crm_pipeline.quality.stage import validate_run

    # the night of d validated at 01:00 the next morning: what the second extract brought
    # with a later timestamp was in that night's future and is held (not_in_future): O05b's
    # refund (07-02 09:00), K5's first response and C05's campaign response (07-01 12:00 and
    # 09:00, each also after its row's updated_at, which a release does not let through).
    # The factory complaints have no customer_informed_at: held for their step order
    validate_run(env, D, "night", dt.datetime(2025, 7, 1, 1, 0))
    not_in_future = [
        ("campaign_contacts", "X1|C05", "not_in_future"),
        ("complaints", "K5", "not_in_future"),
        ("orders", "O05b", "not_in_future"),
    ]
    stay = [
        ("campaign_contacts", "X1|C05", "not_after_updated_at"),
        *[("complaints", k, "complaint_step_order") for k in ("K1", "K2", "K3", "K6")],
        ("complaints", "K5", "not_after_updated_at"),
    ]
    assert held(env) == sorted(not_in_future + stay)
    # nothing of customers is held; the refund is no longer in the future (the wall clock)
    cli.main(["release-quarantine", "--day", D.isoformat(), "--table", "customers"])
    assert "released 0 quarantined row version(s)" in capsys.readouterr().out
    cli.main(["release-quarantine", "--day", D.isoformat(), "--table", "orders"])
    assert "released 1 quarantined row version(s)" in capsys.readouterr().out
    with env.begin() as conn:
        [(released_by,)] = conn.exec_driver_sql(
            "select release_run_id from quarantine.rows where row_key = 'O05b'"
        ).fetchall()
    assert released_by.startswith("manual_release__")
    cli.main(["release-quarantine", "--day", D.isoformat(), "--rule", "not_in_future"])
    assert "released 2 quarantined row version(s)" in capsys.readouterr().out
    # the rest fails its rule still: a release of everything releases nothing more
    cli.main(["release-quarantine", "--day", D.isoformat()])
    assert "released 0 quarantined row version(s)" in capsys.readouterr().out
    assert held(env) == sorted(stay)
