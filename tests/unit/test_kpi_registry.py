"""The KPI registry and the places that name a KPI agree.

A KPI is described once, in include/config/targets.yaml (read by crm_pipeline.kpi.registry);
it is computed in include/sql/marts/kpi_daily.sql, alerted on in include/config/alerts.yaml
and defined for people in docs/kpis.md. Those are separate on purpose (SQL computes, YAML
is what a manager edits, the doc is what an analyst reads): this test is what keeps them
naming the same KPIs. (The kpi package's imports are checked with the rest of the package's,
in test_package_imports.py.)"""

import re
from pathlib import Path

import crm_pipeline.kpi
from crm_pipeline.config import CONFIG_DIR, read_yaml
from crm_pipeline.kpi.targets import load_targets

REPO = Path(__file__).resolve().parents[2]
KPI_DIR = Path(crm_pipeline.kpi.__file__).parent
MODULES = sorted(f"crm_pipeline.kpi.{p.stem}" for p in KPI_DIR.glob("*.py") if p.stem != "__init__")


def registry() -> set[str]:
    return set(load_targets(CONFIG_DIR / "targets.yaml").kpis)


def test_kpi_daily_computes_exactly_the_registered_kpis():
    sql = (REPO / "include" / "sql" / "marts" / "kpi_daily.sql").read_text()
    computed = set(re.findall(r"'([a-z0-9_]+)'\s+as\s+kpi\b", sql))
    assert computed == registry()


def test_alert_rules_docs_and_summary_name_only_registered_kpis():
    kpis = registry()
    rules = {r["kpi"] for r in read_yaml("alerts", CONFIG_DIR / "alerts.yaml")["rules"]}
    assert rules <= kpis, rules - kpis
    doc = (REPO / "docs" / "kpis.md").read_text()
    defined = set(re.findall(r"^\| ([a-z0-9_]+) \|", doc, flags=re.MULTILINE))
    assert kpis <= defined, kpis - defined  # every KPI has its definition row
    from crm_pipeline.cli import HEADLINE_KPIS

    assert set(HEADLINE_KPIS) <= kpis, set(HEADLINE_KPIS) - kpis


def test_a_survey_kpi_counts_responses_without_being_named_in_code():
    import datetime as dt

    from crm_pipeline.kpi.judge import judge

    targets = load_targets(CONFIG_DIR / "targets.yaml")
    day = dt.date(2026, 11, 22)

    def reason(kpi, value):
        spec = targets.spec(kpi)
        target, margin = spec.target_for(day)
        return judge(spec, value, 1000, target, margin, {}, targets.settings, (), "all", day)[
            "reason"
        ]

    assert "on 1000 responses" in reason("csat", 40.0)
    assert "on 1000 responses" in reason("nps", -20.0)
    assert "on 1000 observations" in reason("churn_rate", 0.3)
