"""Every KPI defined in docs/kpis.md, RFM and value tiers, on a hand-made business.

The day is d = 2025-06-30; the period is 2025-06-01 .. 2025-06-30; "active" looks at
2025-04-02 (d-89) .. d; "active at d-30" at 2025-03-03 (d-119) .. 2025-05-31 (d-30); the
repeat window is 2024-07-01 (d-364) .. d. Every expected number below is worked out by
hand in the comments from the rows in `business()` (tests/business.py), and checked on DuckDB and PostgreSQL.
"""

import datetime as dt

import pytest
from business import D

from crm_pipeline.transform.snapshots import build_snapshots


def kpis(wh, day=D, dimension="all", value="all"):
    with wh.begin() as conn:
        rows = conn.exec_driver_sql(
            "select kpi, value, numerator, denominator from marts.kpi_daily "
            f"where as_of_date = date '{day}' and dimension = '{dimension}' "
            f"and dimension_value = '{value}'"
        ).fetchall()
    return {kpi: (v, n, d) for kpi, v, n, d in rows}


def test_every_kpi_for_the_whole_base(built):
    k = kpis(built)
    assert set(k) == {
        "active_customers",
        "churn_rate",
        "retention_rate",
        "new_customers",
        "repeat_purchase_rate",
        "purchase_frequency",
        "aov",
        "csat",
        "nps",
        "cac",
        "complaints_per_1000_orders",
        "complaint_first_response_hours",
        "complaint_resolution_hours",
        "complaint_sla_rate",
        "campaign_response_rate",
        "loyalty_member_share",
        "points_redemption_rate",
        "reactivated_customers",
        "completed_orders",
        "net_revenue",
        "overdue_regulars",
    }
    # active at d (04-02..06-30): C01 (04-02), C05, C06, C07, C11; not C08 (06-12 refunded)
    assert k["active_customers"] == (5, 5, None)
    # active at d-30 (03-03..05-31), the cohort S: C01, C02 (04-01), C03 (03-03), C07 (05-31),
    # C08, C11 = 6; not active at d: C02, C03, C08
    assert k["churn_rate"] == (0.5, 3, 6)
    # new: first completed order ever in the period: C05 (06-10), C06 (06-15; 06-05 refunded)
    assert k["new_customers"] == (2, 2, None)
    # still active at d: C01, C07, C11 = |S and E| = 3 of 6; churn + retention = 1
    assert k["retention_rate"] == (0.5, 3, 6)
    # E \ S = C05, C06, both new: nobody came back after a lapse (E = 3 + 2 + 0)
    assert k["reactivated_customers"] == (0, 0, None)
    # the period's completed orders and their net amount: O05a 30, O05b 40, O06b 25, O07c 20,
    # O11b 50 (O06a refunded, O09b cancelled, O13 the next day)
    assert k["completed_orders"] == (5, 5, None)
    assert k["net_revenue"] == (165.0, 165.0, None)
    # buyers 07-01..06-30: C01..C11 = 11 (C10 by its 2024-07-01 order only);
    # 2+ orders: C01, C05 (refund after d not known yet), C07 (05-31, 06-01), C11 = 4
    assert k["repeat_purchase_rate"] == (pytest.approx(4 / 11), 4, 11)
    # period orders: O05a 30, O05b 40, O06b 25, O07c 20, O11b 50 by C05, C06, C07, C11
    assert k["purchase_frequency"] == (1.25, 5, 4)
    assert k["aov"] == (33.0, 165.0, 5)
    # csat in period: 5, 4, 3 (S4 is 05-31, S5 is after d)
    assert k["csat"] == (pytest.approx(200 / 3), 2, 3)
    # nps: 10, 9 promoters; 6 detractor; 8, 7 passive: (2 - 1) / 5
    assert k["nps"] == (20.0, 1, 5)
    # acquisition spend 06-01 100 + 06-30 50 (retention and 05-31 out) / 2 new customers
    assert k["cac"] == (75.0, 150.0, 2)
    # opened in period: K1, K2, K4, K5, K6 = 5 per 5 completed orders
    assert k["complaints_per_1000_orders"] == (1000.0, 5, 5)
    # first responses known by d: 4, 24, 1.5, 2 (K5 answered after d) -> median (2 + 4) / 2
    assert k["complaint_first_response_hours"] == (3.0, None, 4)
    # closed in period: K1 24, K2 48, K3 264, K6 48.0167 -> median (48 + 48 + 1/60) / 2
    assert k["complaint_resolution_hours"][0] == pytest.approx(48 + 1 / 120)
    assert k["complaint_resolution_hours"][2] == 4
    # within 48 hours: K1, K2 (exactly 48 h counts) of 4
    assert k["complaint_sla_rate"] == (0.5, 2, 4)
    # contacts in period: C01, C02, C03, C05; responded within 14 days by d: C01
    assert k["campaign_response_rate"] == (0.25, 1, 4)
    # members among the 5 active: C11 (C04 is a member but not active)
    assert k["loyalty_member_share"] == (0.2, 1, 5)
    # redeemed 30 / earned 100 + 50 (E4 before the period, tier change not points)
    assert k["points_redemption_rate"] == (0.2, 30, 150)


def test_dimensions(built):
    # region: north = C01, C02, C03 (S = 3, churned C02, C03); south S = C07, C08, C11
    assert kpis(built, dimension="region", value="north")["churn_rate"] == (
        pytest.approx(2 / 3),
        2,
        3,
    )
    assert kpis(built, dimension="region", value="south")["churn_rate"] == (
        pytest.approx(1 / 3),
        1,
        3,
    )
    # channel: the order's channel, for order KPIs only
    online = kpis(built, dimension="channel", value="online")
    assert online == {
        "purchase_frequency": (1.0, 1, 1),
        "aov": (50.0, 50, 1),
        "completed_orders": (1, 1, None),
        "net_revenue": (50.0, 50.0, None),
    }
    staff = kpis(built, dimension="channel", value="delivery_staff")
    assert staff["purchase_frequency"] == (pytest.approx(4 / 3), 4, 3)
    assert staff["aov"] == (28.75, 115.0, 4)
    assert staff["completed_orders"] == (4, 4, None)
    # churn and retention by the tier the cohort had at d-30 (2025-05-31). Tiers then, by
    # margin over 2024-06-01..05-31 (8 an order): C01 16 (03-10, 04-02) and C10 16 (06-30,
    # 07-01) lead, C01 first by revenue tie then id; n = 9: vip rank 1 (C01), regular rank 2
    # (C10, not in the cohort), small the other 7. S: vip C01 (stays); small C02, C03, C07,
    # C08, C11 (C02, C03, C08 churn)
    assert kpis(built, dimension="tier", value="vip")["churn_rate"] == (0.0, 0, 1)
    assert kpis(built, dimension="tier", value="regular")["churn_rate"] == (None, 0, 0)  # null
    assert kpis(built, dimension="tier", value="small")["churn_rate"] == (0.6, 3, 5)
    assert kpis(built, dimension="tier", value="small")["retention_rate"] == (0.4, 2, 5)
    assert "cac" not in kpis(built, dimension="tier", value="small")
    # segment: Champions = C05, C11 -> both active, one new
    champions = kpis(built, dimension="segment", value="Champions")
    assert champions["active_customers"][0] == 2 and champions["new_customers"][0] == 1


def test_churn_by_segment_follows_the_cohort_at_d_minus_30(built):
    # segments at 2025-05-31 (worked out in test_rfm_scores_at_d_minus_30): S = C01 Loyal,
    # C02 and C08 About to sleep, C03 Hibernating, C07 Occasional, C11 Promising
    def churn(segment):
        return kpis(built, dimension="segment", value=segment)["churn_rate"]

    assert churn("Loyal") == (0.0, 0, 1)
    assert churn("About to sleep") == (1.0, 2, 2)  # both really did not buy again
    assert churn("Hibernating") == (1.0, 1, 1)
    assert churn("Occasional") == (0.0, 0, 1) and churn("Promising") == (0.0, 0, 1)
    with built.begin() as conn:
        cohort = conn.exec_driver_sql(
            "select sum(denominator) from marts.kpi_daily where kpi = 'churn_rate' "
            f"and dimension = 'segment' and as_of_date = date '{D}'"
        ).scalar_one()
    assert cohort == 6  # every cohort member once, under their d-30 segment


def test_rfm_scores_at_d_minus_30(built):
    with built.begin() as conn:
        rows = {
            r[0]: tuple(r[1:])
            for r in conn.exec_driver_sql(
                "select customer_id, recency_days, r_score, f_score, segment from marts.customer_rfm "
                "where as_of_date = date '2025-05-31'"
            ).fetchall()
        }
    # 9 buyers in 2024-06-01..05-31; r = 1 + floor(5 (rank - 1) / 9) by recency, oldest first:
    # C10 334, C09 303 -> 1; C04 90, C03 89 -> 2; C08 72, C02 60 -> 3; C01 59, C11 30 -> 4;
    # C07 0 -> 5. F: C01 and C10 have 2 orders (rank 8 -> 4), the others 1 (-> 1).
    # C11 (first order 05-01, 30 days before) is not New (the 30 days are 05-02..05-31) but
    # Promising (within 90); C07 (first order 2024-01-15) is Occasional
    assert rows == {
        "C10": (334, 1, 4, "At risk"),
        "C09": (303, 1, 1, "Lost"),
        "C04": (90, 2, 1, "Hibernating"),
        "C03": (89, 2, 1, "Hibernating"),
        "C08": (72, 3, 1, "About to sleep"),
        "C02": (60, 3, 1, "About to sleep"),
        "C01": (59, 4, 4, "Loyal"),
        "C11": (30, 4, 1, "Promising"),
        "C07": (0, 5, 1, "Occasional"),
    }


def test_retention_is_the_cohort_still_active_and_a_return_after_a_lapse_is_reactivation(
    tmp_path, warehouse
):
    from factories import build_source, customer, order

    from crm_pipeline.extract import extract_table
    from crm_pipeline.source_schema import TABLE_ORDER
    from crm_pipeline.transform.staging import build_staging

    # A bought in November, lapsed, and is back on 06-15; N is new; K stays; L leaves
    src = build_source(
        f"sqlite:///{tmp_path}/lapse.db",
        {
            "customers": [customer(c) for c in ("A", "N", "K", "L")],
            "orders": [
                order("A1", "A", "2024-11-01"),
                order("A2", "A", "2025-06-15"),
                order("N1", "N", "2025-06-20"),
                order("K1", "K", "2025-05-10"),
                order("K2", "K", "2025-06-10"),
                order("L1", "L", "2025-03-20"),
            ],
        },
    )
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, D, "lapse")
    build_staging(warehouse)
    build_snapshots(warehouse, D, D)
    k = kpis(warehouse)
    # S (active 03-03..05-31) = K, L; E (active 04-02..06-30) = A, N, K
    assert k["active_customers"] == (3, 3, None)
    assert k["churn_rate"] == (0.5, 1, 2) and k["retention_rate"] == (0.5, 1, 2)
    assert k["new_customers"] == (1, 1, None)
    assert k["reactivated_customers"] == (1, 1, None)  # A; E = |S and E| + N + reactivated
    # (E - N) / S, the old definition, would have said 1.0: A counted as retained
    with warehouse.begin() as conn:
        segments = dict(
            conn.exec_driver_sql(
                f"select customer_id, segment from marts.customer_rfm where as_of_date = date '{D}'"
            ).fetchall()
        )
    assert segments["N"] == "New" and segments["A"] != "New"  # A's first order is 8 months old


def test_rfm_scores_and_segments_at_ties(built):
    with built.begin() as conn:
        rows = {
            r[0]: tuple(r[1:])
            for r in conn.exec_driver_sql(
                "select customer_id, recency_days, frequency, r_score, f_score, m_score, segment "
                f"from marts.customer_rfm where as_of_date = date '{D}'"
            ).fetchall()
        }
    # 11 buyers; score = 1 + floor(5 * (rank - 1) / 11), ties share the lowest rank.
    # recency ranks (oldest first): C10 364, C09 333, C04 120 -> 1; C03 119, C08 102 -> 2;
    # C02 90, C01 89 -> 3; C07 29, C06 15 -> 4; C05 10, C11 0 -> 5.
    # frequency: seven customers with 1 order tie at rank 1 -> 1; four with 2 at rank 8 -> 4.
    # monetary: six at 20 -> 1; C06 25 rank 7 -> 3; C01, C07 40 rank 8 -> 4; C05, C11 70 rank 10 -> 5
    # C06 (R4 F1, first completed order 06-15, in the 30 days ending at d) is New
    assert rows == {
        "C10": (364, 1, 1, 1, 1, "Lost"),
        "C09": (333, 1, 1, 1, 1, "Lost"),
        "C04": (120, 1, 1, 1, 1, "Lost"),
        "C03": (119, 1, 2, 1, 1, "Hibernating"),
        "C08": (102, 1, 2, 1, 1, "Hibernating"),
        "C02": (90, 1, 3, 1, 1, "About to sleep"),
        "C01": (89, 2, 3, 4, 4, "Loyal"),
        "C07": (29, 2, 4, 4, 4, "Loyal"),
        "C06": (15, 1, 4, 1, 3, "New"),
        "C05": (10, 2, 5, 4, 5, "Champions"),
        "C11": (0, 2, 5, 4, 5, "Champions"),
    }


def test_value_tiers_rank_by_margin_with_deterministic_ties(built):
    with built.begin() as conn:
        rows = conn.exec_driver_sql(
            "select customer_id, revenue_12m, rank, tier from marts.customer_value_tier "
            f"where as_of_date = date '{D}' order by rank"
        ).fetchall()
    # C05 and C11 tie at 70 (margin 28): customer_id breaks it. n = 11: vip while
    # 100 (rank - 1) < 1 * 11 -> rank 1; key < 5 * 11 -> none more; regular < 20 * 11 -> ranks 2, 3
    assert [(r[0], float(r[1]), r[2], r[3]) for r in rows[:4]] == [
        ("C05", 70.0, 1, "vip"),
        ("C11", 70.0, 2, "regular"),
        ("C01", 40.0, 3, "regular"),
        ("C07", 40.0, 4, "small"),
    ]
    assert len(rows) == 11 and {r[3] for r in rows[4:]} == {"small"}


def test_a_period_with_no_surveys_gives_null_not_zero(built_copy):
    build_snapshots(built_copy, dt.date(2025, 9, 30), dt.date(2025, 9, 30))
    k = kpis(built_copy, dt.date(2025, 9, 30))
    assert k["csat"] == (None, 0, 0) and k["nps"] == (None, 0, 0)
    assert k["aov"][0] is None and k["cac"][0] is None
    assert k["active_customers"] == (0, 0, None)


def test_the_refund_is_seen_from_its_own_day_on(built_copy):
    build_snapshots(built_copy, dt.date(2025, 7, 2), dt.date(2025, 7, 2))
    # period 06-03..07-02: O05a 30, O06b 25, O11b 50, O13 20 (07-01); O05b refunded on 07-02
    assert kpis(built_copy, dt.date(2025, 7, 2))["aov"] == (31.25, 125.0, 4)
    assert kpis(built_copy)["aov"] == (33.0, 165.0, 5)  # d itself untouched


def snapshot(wh, first, last):
    out = {}
    with wh.begin() as conn:
        for table in ("kpi_daily", "customer_rfm", "customer_value_tier", "segment_migration"):
            out[table] = sorted(
                map(
                    tuple,
                    conn.exec_driver_sql(
                        f"select * from marts.{table} where as_of_date between date '{first}' "
                        f"and date '{last}'"
                    ).fetchall(),
                ),
                key=repr,
            )
    return out


def test_a_range_build_equals_the_days_built_one_by_one_and_reruns_are_equal(built_copy):
    first = D - dt.timedelta(days=2)
    build_snapshots(built_copy, first, D)
    ranged = snapshot(built_copy, first, D)
    assert len({r[0] for r in ranged["kpi_daily"]}) == 3 and ranged["segment_migration"]
    for day in (first, first + dt.timedelta(days=1), D):
        build_snapshots(built_copy, day, day)
    assert snapshot(built_copy, first, D) == ranged
    build_snapshots(built_copy, first, D)
    assert snapshot(built_copy, first, D) == ranged


def test_a_large_customer_base_is_built_fewer_days_at_a_time_with_the_same_rows(built_copy, caplog):
    import logging

    from crm_pipeline.config import settings

    first = D - dt.timedelta(days=2)
    build_snapshots(built_copy, first, D)
    ranged = snapshot(built_copy, first, D)
    config = {**settings()}  # a copy: settings() is cached for the whole process
    config["kpis"] = {**config["kpis"], "history_chunk_customer_days": 1}  # 1 day at a time
    caplog.set_level(logging.INFO, logger="crm_pipeline.transform.snapshots")
    caplog.clear()  # only this build's chunks (the one above built the d-30 positions)
    build_snapshots(built_copy, first, D, config)
    chunks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("snapshots ")]
    assert len(chunks) == 3 and all(" of 3)" in c for c in chunks)
    assert snapshot(built_copy, first, D) == ranged


def test_a_history_that_fails_part_way_keeps_whole_days_and_none_of_the_failed_chunk(
    built_copy, monkeypatch
):
    """Each chunk commits on its own (DuckDB frees a transaction's dropped temporary tables
    only at commit): a failure leaves the chunks before it whole, in all four marts, and
    nothing of its own chunk, though its RFM rows were written before kpi_daily failed."""
    from crm_pipeline.warehouse import Warehouse

    first = D - dt.timedelta(days=2)
    build_snapshots(built_copy, first, D)
    before = snapshot(built_copy, first, D)
    with built_copy.begin() as conn:
        for table in ("kpi_daily", "customer_rfm", "customer_value_tier", "segment_migration"):
            conn.exec_driver_sql(f"delete from marts.{table} where as_of_date >= date '{first}'")
    real = Warehouse.replace_partition
    kpi_builds = []

    def failing(self, conn, qualified, select_sql, params, key="as_of_date"):
        if qualified == "marts.kpi_daily":
            kpi_builds.append(params["date_from"])
            if len(kpi_builds) == 3:
                raise RuntimeError("the server went away")
        return real(self, conn, qualified, select_sql, params, key)

    monkeypatch.setattr(Warehouse, "replace_partition", failing)
    with pytest.raises(RuntimeError, match="went away"):
        build_snapshots(built_copy, first, D, chunk_days=1)
    kept = snapshot(built_copy, first, D)
    for table, rows in before.items():
        days = {r[0] for r in rows}
        assert days == {first, first + dt.timedelta(days=1), D}, table
        assert [r for r in kept[table] if r[0] < D] == [r for r in rows if r[0] < D], table
        assert not [r for r in kept[table] if r[0] == D], table
    monkeypatch.undo()
    build_snapshots(built_copy, first, D)
    assert snapshot(built_copy, first, D) == before


def test_a_customer_who_bought_counts_whatever_created_at_says(tmp_path, warehouse):
    from factories import build_source, customer, order

    from crm_pipeline.extract import extract_table
    from crm_pipeline.source_schema import TABLE_ORDER
    from crm_pipeline.transform.marts import build_marts
    from crm_pipeline.transform.staging import build_staging

    # a CRM that back-fills created_at later than the customer's first order
    src = build_source(
        f"sqlite:///{tmp_path}/late.db",
        {
            "customers": [customer("L1", "2025-12-01", updated_at="2025-06-01")],
            "orders": [order("LO1", "L1", "2025-06-20")],
        },
    )
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, D, "late")
    build_staging(warehouse)
    build_marts(warehouse, ("fct_orders",), D)
    build_snapshots(warehouse, D, D)
    k = kpis(warehouse)
    assert k["active_customers"] == (1, 1, None) and k["new_customers"] == (1, 1, None)
    build_marts(warehouse, ("dim_customer",), D)
    with warehouse.begin() as conn:
        assert conn.exec_driver_sql("select customer_id from marts.dim_customer").fetchall() == [
            ("L1",)
        ]


def test_the_segment_lookup_gives_each_cell_and_first_order_age_its_first_matching_rule():
    from crm_pipeline.config import settings
    from crm_pipeline.transform.settings import first_order_cap, segment_lookup

    config = settings()
    lookup = segment_lookup(config)
    assert first_order_cap(config) == 90 and len(lookup) == 25 * 91
    cell = lookup[(lookup.r_score == 5) & (lookup.f_score == 1)].set_index("first_order_days")
    # New within 30 days of the first order, Promising within 90, then Occasional
    assert cell.segment[0] == cell.segment[29] == "New"
    assert cell.segment[30] == cell.segment[89] == "Promising"
    assert cell.segment[90] == "Occasional"
    champions = lookup[(lookup.r_score == 5) & (lookup.f_score == 5)]
    assert set(champions.segment) == {"Champions"}
    plain = {
        **config,
        "rfm": {
            **config["rfm"],
            "segments": [
                {**rule, "first_order_within_days": None} for rule in config["rfm"]["segments"]
            ],
        },
    }
    assert first_order_cap(plain) == 0 and len(segment_lookup(plain)) == 25


def test_overdue_regulars_counts_regular_buyers_past_one_and_a_half_usual_gaps(tmp_path, warehouse):
    """The leading churn signal on hand-made buyers (d = 2025-06-30; usual gap = days known
    in the 365-day window, from the first purchase if later, per completed order)."""
    from factories import build_source, customer, order

    from crm_pipeline.extract import extract_table
    from crm_pipeline.source_schema import TABLE_ORDER
    from crm_pipeline.transform.staging import build_staging

    def every(cid, first, n, step):
        start = dt.date.fromisoformat(first)
        return [
            order(f"{cid}-{i}", cid, str(start + dt.timedelta(days=step * i))) for i in range(n)
        ]

    rows = {
        "customers": [customer(c, "2024-01-01") for c in ("W1", "W2", "T1", "F1", "L1")],
        "orders": (
            # weekly all year, last order 2025-06-27 (3 days; gap 365/52 = 7.0): on time
            every("W1", "2024-07-05", 52, 7)
            # weekly until 2025-06-06 (24 days > 1.5 x 365/49 = 11.2): overdue
            + every("W2", "2024-07-05", 49, 7)
            # three orders only: not a regular buyer
            + every("T1", "2025-05-01", 3, 10)
            # first purchase 2025-03-22 (101 days known), 7 orders every 10 days until
            # 2025-05-21: 40 days > 1.5 x 101 / 7 = 21.6: overdue
            + every("F1", "2025-03-22", 7, 10)
            # regular once, no order in the 90 days: churned already, not counted
            + every("L1", "2024-07-05", 20, 7)
        ),
    }
    src = build_source(f"sqlite:///{tmp_path}/regulars.db", rows)
    for table in TABLE_ORDER:
        extract_table(src, warehouse, table, D, "night-1")
    build_staging(warehouse)
    build_snapshots(warehouse, D, D)
    k = kpis(warehouse)
    assert k["overdue_regulars"] == (pytest.approx(2 / 3), 2, 3)
    assert k["active_customers"][0] == 4  # W1, W2, T1, F1
