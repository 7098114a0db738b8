"""The run summary an analyst reads after `make run`, and the data engineer's release command."""

import pytest
from business import D

from crm_pipeline import cli

# the CLI reads the warehouse through the same URL either way: one engine is enough
pytestmark = pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)


@pytest.fixture
def env(built, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CRM_WAREHOUSE", built.url)
    return built


def test_summary_shows_tables_segments_tiers_and_headline_kpis(env, capsys):
    cli.main(["summary", "--day", D.isoformat()])
    out = capsys.readouterr().out
    assert "marts.kpi_daily" in out and "marts.customer_rfm" in out
    assert "Champions 2" in out                      # segment sizes (tests/business.py)
    assert "vip 1" in out                            # tier sizes
    assert "churn_rate               50.0%" in out   # worked out in test_kpis.py
    assert "csat                     66.7" in out


def test_release_quarantine_reports_what_it_released(env, capsys):
    cli.main(["release-quarantine", "--day", D.isoformat()])
    assert "released 0 quarantined row version(s)" in capsys.readouterr().out
