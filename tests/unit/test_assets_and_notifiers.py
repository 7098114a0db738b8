"""The Airflow-free halves of the marts' asset events and of the notifiers: what a step's
result says of each public mart, and the one registry of public marts, which must be the
data dictionary's; then the plugin's Slack channel against a real local webhook."""

import datetime as dt
import re

import pytest
from factories import ROOT
from webhook import SlackWebhook

from crm_pipeline import stages
from crm_pipeline.warehouse.tables import PUBLIC_MARTS


def test_the_public_marts_are_the_data_dictionarys_and_each_is_built_by_sql_or_declared():
    text = (ROOT / "docs" / "data_dictionary.md").read_text()
    public = text.split("## marts (public)")[1].split("\n## ")[0]
    assert set(re.findall(r"^### (marts\.\w+)", public, re.M)) == set(PUBLIC_MARTS)
    from crm_pipeline.alerts import ALERTS_TABLE
    from crm_pipeline.warehouse import tables

    declared = {t.name for t in vars(tables).values() if isinstance(t, tables.Table)}
    for table in PUBLIC_MARTS:
        sql = ROOT / "include" / "sql" / "marts" / f"{table.split('.')[1]}.sql"
        assert sql.exists() or table in declared or table == ALERTS_TABLE, table


def test_each_step_says_whether_it_published_each_mart_for_the_day():
    ev = stages.mart_event
    assert ev("marts.fct_orders", {"marts.fct_orders": 907}) == {"published": True, "rows": 907}
    # a backfill of an earlier day keeps the newer state: not published for that day
    assert ev("marts.dim_customer", {}) == {"published": False, "rows": None}
    assert ev("marts.kpi_daily", "2026-04-02") == {"published": True, "from_date": "2026-04-02"}
    models = {"published": {"marts.customer_clv": 120}}  # churn skipped (too little data)
    assert ev("marts.customer_clv", models) == {"published": True, "rows": 120}
    assert ev("marts.customer_churn_risk", models) == {"published": False, "rows": None}
    assert ev("marts.kpi_evaluation", {"rows": 40, "date_from": "2026-06-30"}) == {
        "published": True,
        "rows": 40,
        "from_date": "2026-06-30",
    }
    assert ev("marts.alerts", {"as_of_date": "2026-06-29", "new": 1}) == {"published": True}
    assert ev("marts.alerts", {"skipped": "later day 2026-06-30 already alerted"}) == {
        "published": False
    }
    with pytest.raises(KeyError):
        ev("ops.model_runs", {})


def test_slack_gets_the_notice_only_when_crm_slack_conn_id_names_a_connection(monkeypatch):
    import airflow  # noqa: F401 - puts plugins/ on sys.path, as in Airflow's own processes
    from crm_airflow import post_to_slack, tell_deadline_missed

    context = {
        "dag_run": {
            "dag_id": "crm_nightly",
            "dag_run_id": "scheduled__2026-06-30",
            "logical_date": "2026-06-30T00:00:00Z",
            "run_after": "2026-07-01T02:00:00Z",
            "queued_at": "2026-07-01T02:00:01Z",
            "state": "running",
            "run_type": "scheduled",
        },
        "deadline": {"deadline_time": dt.datetime(2026, 7, 1, 4, 0, tzinfo=dt.UTC)},
    }
    monkeypatch.delenv("CRM_DATA_ENGINEERS", raising=False)  # no email: Slack alone
    with SlackWebhook() as slack:
        for key, value in slack.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("CRM_SLACK_CONN_ID")
        assert post_to_slack("off") is False
        tell_deadline_missed(context)
        assert slack.posts == []  # the option off: nothing posted
        monkeypatch.setenv("CRM_SLACK_CONN_ID", "crm_slack")
        tell_deadline_missed(context)
        tell_deadline_missed({**context, "dag_run": {**context["dag_run"], "run_type": "backfill"}})
    [post] = slack.posts
    assert post["path"] == "/services/T000/B000/XXXX"
    assert post["text"].startswith("crm_nightly for 2026-06-30 not done by 04:00 UTC.\n")
    assert "still running" in post["text"]
