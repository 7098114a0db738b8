"""The leading churn signal on the demo business: quiet on normal nights, an alert within a
week when regular buyers stop, and an email whose subject leads with it.

One source serves both: the demo (3,000 customers) is normal up to the stop day S, after
which 30% of its regular buyers (4+ completed orders in the year, one in the last 90 days)
never order again. The marts are built for 150 days and evaluated for the last 70 as a
first build does (the same rows the nights would give), with the shipped settings.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from crm_devtools import demo
from crm_pipeline.alerts import process_alerts
from crm_pipeline.extract import extract_table
from crm_pipeline.kpi.evaluate import evaluate_range
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.snapshots import build_snapshots
from crm_pipeline.transform.staging import build_staging
from crm_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow

D = dt.date(2026, 6, 30)
S = D - dt.timedelta(days=7)  # the last day the stopping buyers may order


def stop_regular_buyers(path: str, share_in_ten: int = 3) -> int:
    """Delete every order after S of `share_in_ten` in ten regular buyers at S."""
    con = sqlite3.connect(path)
    regulars = [
        r[0]
        for r in con.execute(
            "select customer_id from orders where status = 'completed' "
            "and date(ordered_at) > date(?, '-365 days') and date(ordered_at) <= ? "
            "group by customer_id having count(*) >= 4 "
            "and max(date(ordered_at)) > date(?, '-90 days') order by customer_id",
            (str(S), str(S), str(S)),
        )
    ]
    gone = [(c, str(S)) for i, c in enumerate(regulars) if i % 10 < share_in_ten]
    con.executemany(
        "delete from order_lines where order_id in "
        "(select order_id from orders where customer_id = ? and date(ordered_at) > ?)",
        gone,
    )
    con.executemany("delete from orders where customer_id = ? and date(ordered_at) > ?", gone)
    con.commit()
    con.close()
    return len(gone)


@pytest.mark.parametrize("share_in_ten", [3, 8], ids=["30% stop", "most stop"])
def test_overdue_regulars_is_quiet_on_normal_nights_and_alerts_within_a_week_of_a_stop(
    tmp_path, share_in_ten
):
    source = tmp_path / "source.db"
    demo.generate(f"sqlite:///{source}", customers=3000, days=500, seed=5, end_date=D)
    assert stop_regular_buyers(str(source), share_in_ten) > 100 * share_in_ten
    wh = Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    for table in TABLE_ORDER:
        extract_table(f"sqlite:///{source}", wh, table, D, "first")
    build_staging(wh)
    build_snapshots(wh, D - dt.timedelta(days=150), D)
    evaluate_range(wh, D - dt.timedelta(days=70), D, "first")

    with wh.begin() as conn:
        flagged = conn.exec_driver_sql(
            "select as_of_date, dimension, dimension_value from marts.kpi_evaluation "
            "where kpi = 'overdue_regulars' and (unusual_move or target_breached) "
            "and dimension in ('all', 'tier') order by as_of_date"
        ).fetchall()
        level = conn.exec_driver_sql(
            "select min(value), max(value), min(n) from marts.kpi_evaluation "
            "where kpi = 'overdue_regulars' and dimension = 'all' "
            f"and as_of_date between date '{S - dt.timedelta(days=59)}' and date '{S}'"
        ).fetchone()
    # 60 normal nights: a steady level, no alert on the whole base or any tier
    assert [f for f in flagged if f[0] <= S] == []
    assert 0.04 < level[0] < level[1] < 0.12 and level[2] > 1000
    # after the stop: the whole base within a week
    first = min(day for day, dimension, _ in flagged if dimension == "all")
    assert S < first <= S + dt.timedelta(days=7)

    # the nights' alerts in order (the standing ones told before S): the first email that
    # carries the signal leads with it
    subjects: dict[dt.date, str | None] = {}
    for back in range(21, -1, -1):
        day = D - dt.timedelta(days=back)
        summary = process_alerts(wh, day, f"night-{day}")
        subjects[day] = summary["subject"]
    with wh.begin() as conn:
        alerted = conn.exec_driver_sql(
            "select min(first_seen) from marts.alerts where kpi = 'overdue_regulars' "
            "and dimension = 'all'"
        ).scalar_one()
    assert alerted == first
    assert subjects[first].startswith("[CRM] Regular buyers overdue "), subjects[first]
    assert ": all customers " in subjects[first]
