"""The analyst queries in examples/queries run on both engines and answer what the
hand-made business says they should (tests/business.py; every number below is worked out
in test_kpis.py, or here, from its rows)."""

import datetime as dt

import pytest
from business import D
from factories import ROOT

from crm_pipeline.transform.snapshots import build_snapshots

QUERIES = sorted((ROOT / "examples" / "queries").glob("*.sql"))
MONTH_LATER = D + dt.timedelta(days=30)  # 2025-07-30, whose "30 days before" is d


def run(wh, name):
    with wh.begin() as conn:
        result = conn.exec_driver_sql(wh.render((ROOT / "examples" / "queries" / name).read_text()))
        return list(result.keys()), [tuple(r) for r in result.fetchall()]


def numbers(row):
    """A row with its numbers as floats (numeric columns come back as Decimal)."""
    return tuple(v if v is None or isinstance(v, str | dt.date) else float(v) for v in row)


@pytest.fixture
def month_later(built_copy):
    """The business with the snapshots of 2025-07-30 too: the queries that compare a day
    with 30 days before have d to compare with. What changed by then: no order after O13
    (07-01), and O05b refunded on 07-02, so C05's purchases are O05a alone."""
    build_snapshots(built_copy, MONTH_LATER, MONTH_LATER)
    return built_copy


@pytest.mark.parametrize("path", QUERIES, ids=[p.stem for p in QUERIES])
def test_example_query_runs(built, path):
    columns, rows = run(built, path.name)
    assert columns and all(len(r) == len(columns) for r in rows)


def test_segment_sizes_add_up_to_the_base(built):
    _, rows = run(built, "segment_sizes.sql")
    assert sum(r[1] for r in rows) == 11
    assert dict((r[0], r[1]) for r in rows)["Champions"] == 2
    # the segments of test_rfm_scores_and_segments_at_ties, with their recency and orders
    # averaged and their 12-month revenue summed: C05, C11 70 each; C01, C07 40 each; C06
    # 25; C10, C09, C04, C03, C08, C02 20 each. Largest revenue first
    assert [numbers(r) for r in rows] == [
        ("Champions", 2, 5.0, 2.0, 140.0),
        ("Loyal", 2, 59.0, 2.0, 80.0),
        ("Lost", 3, 272.3, 1.0, 60.0),
        ("Hibernating", 2, 110.5, 1.0, 40.0),
        ("New", 1, 15.0, 1.0, 25.0),
        ("About to sleep", 1, 90.0, 1.0, 20.0),
    ]


def test_top_customers_are_the_vip_then_key(built):
    _, rows = run(built, "top_customers.sql")
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "vip", "C05")]
    # C05: south (the default region), a Champion, 70 of revenue at 40% margin; its last
    # order is O05b on 06-20, refunded only after d
    assert [numbers(r) for r in rows] == [
        (1, "vip", "C05", "south", "Champions", 28.0, 70.0, dt.date(2025, 6, 20))
    ]


def test_headline_kpis_are_the_latest_days_beside_30_days_before(month_later):
    _, rows = run(month_later, "headline_kpis.sql")
    kpis = {r[0]: numbers(r[1:]) for r in rows}
    assert len(kpis) == 21  # every KPI of test_every_kpi_for_the_whole_base
    # 07-30: active (05-02..07-30) C05, C06, C07, C11, C13; the period's one order is O13
    # (20), by C13, new; the cohort (active at d: C01, C05, C06, C07, C11) lost C01.
    # 30 days before: d, as worked out in test_every_kpi_for_the_whole_base
    assert kpis["active_customers"] == (5.0, 5.0)
    assert kpis["completed_orders"] == (1.0, 5.0)
    assert kpis["net_revenue"] == (20.0, 165.0)
    assert kpis["new_customers"] == (1.0, 2.0)
    assert kpis["churn_rate"] == (0.2, 0.5)
    assert kpis["retention_rate"] == (0.8, 0.5)
    assert kpis["aov"] == (20.0, 33.0)


def test_churn_trend_by_tier_follows_each_days_cohort(month_later):
    _, rows = run(month_later, "churn_trend_by_tier.sql")
    # d: the cohort by its tier at d-30 (test_dimensions): vip C01 stays; small C02, C03,
    # C07, C08, C11 (C02, C03, C08 churn); regular C10 is not in it.
    # 07-30: the cohort active at d by its tier at d (test_value_tiers_rank_by_margin...):
    # vip C05 stays; regular C11 stays, C01 churns; small C06, C07 stay.
    # 'unassigned' is the cohort members with no tier: none on either day
    assert [numbers(r) for r in rows] == [
        (D, "all", 0.5, 6.0),
        (D, "regular", None, 0.0),
        (D, "small", 0.6, 5.0),
        (D, "unassigned", None, 0.0),
        (D, "vip", 0.0, 1.0),
        (MONTH_LATER, "all", 0.2, 5.0),
        (MONTH_LATER, "regular", 0.5, 2.0),
        (MONTH_LATER, "small", 0.0, 2.0),
        (MONTH_LATER, "unassigned", None, 0.0),
        (MONTH_LATER, "vip", 0.0, 1.0),
    ]


def test_slipping_customers_are_the_champions_and_loyal_who_left_them(built, month_later):
    # at d: the only Champion or Loyal customer of d-30 is C01, Loyal then and at d
    assert run(built, "slipping_customers.sql")[1] == []
    # at 07-30 (11 buyers: C10's orders are over a year old, C13 is new): C05's only purchase
    # is 50 days old (R 4) and alone (F 1), its first 50 days back: Champions -> Promising.
    # C11 (R 5, F 4) stays a Champion, C01 and C07 (R 3, F 4) stay Loyal
    assert run(month_later, "slipping_customers.sql")[1] == [("Champions", "Promising", 1)]


def test_tier_vs_clv_names_rising_stars_and_fading_vips(built_copy):
    # a known prediction on top of the fitted one: C10 (small, 20 of revenue) is predicted
    # the most valuable, and C05 (the vip) probably gone
    with built_copy.begin() as conn:
        conn.exec_driver_sql(
            f"update marts.customer_clv set clv = 1000000 where customer_id = 'C10' "
            f"and as_of_date = date '{D}'"
        )
        conn.exec_driver_sql(
            f"update marts.customer_clv set p_alive = 0.3 where customer_id = 'C05' "
            f"and as_of_date = date '{D}'"
        )
    columns, rows = run(built_copy, "tier_vs_clv.sql")
    found = [dict(zip(columns, numbers(r), strict=True)) for r in rows]
    # 11 customers with a tier: the top 5% by CLV is rank 1 alone; C05 is the only vip or key
    assert [(r["disagreement"], r["customer_id"], r["tier"]) for r in found] == [
        ("rising star", "C10", "small"),
        ("fading VIP", "C05", "vip"),
    ]
    assert found[0]["clv_rank"] == 1 and found[0]["clv"] == 1000000
    assert found[0]["tier_rank"] == 11  # last of the six at 8 of margin, by customer_id
    assert found[1]["p_alive"] == pytest.approx(0.3)
    assert found[1]["churn_probability"] is None  # churn was skipped: no risk to show
