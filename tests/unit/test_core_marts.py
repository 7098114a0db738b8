"""fct_orders and dim_customer from hand-made sources, as of a date, on both engines."""

import datetime as dt
from decimal import Decimal

from factories import build_source, customer, order, upsert

from crm_pipeline.extract import extract_table
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.marts import build_marts
from crm_pipeline.transform.snapshots import build_snapshots
from crm_pipeline.transform.staging import build_staging


def build_day(wh, day):
    """The marts stage of crm_nightly for one day, in the DAG's order."""
    build_marts(wh, ("fct_orders",), day)
    build_snapshots(wh, day, day)
    build_marts(wh, ("dim_customer",), day)


def run_day(src, wh, day):
    for t in TABLE_ORDER:
        extract_table(src, wh, t, day, f"run-{day}")
    build_staging(wh)
    build_day(wh, day)


def rows(wh, sql):
    with wh.begin() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql).fetchall()]


def test_core_marts_as_of_a_date(tmp_path, warehouse):
    src = build_source(
        f"sqlite:///{tmp_path}/s.db",
        {
            "customers": [
                customer("C1", "2025-01-05", region="north"),
                customer("C2", "2025-02-01"),
                customer("C3", "2025-03-11"),
            ],  # C3 signs up after the day
            "orders": [
                order("O1", "C1", "2025-03-01 09:30", 20.0, cost=12.5),
                order("O2", "C1", "2025-03-05", 10.0, cost=4.0),
                order("O3", "C2", "2025-03-10 23:59:59", 8.0, status="cancelled"),
                order("O4", "C2", "2025-03-11 00:00", 50.0),  # the next day: not in
            ],
        },
    )
    day = dt.date(2025, 3, 10)
    run_day(src, warehouse, day)
    assert rows(
        warehouse,
        "select order_id, order_date, status, net_amount, margin_amount, "
        "is_purchase from marts.fct_orders order by order_id",
    ) == [
        ("O1", dt.date(2025, 3, 1), "completed", Decimal("20.00"), Decimal("7.50"), True),
        ("O2", dt.date(2025, 3, 5), "completed", Decimal("10.00"), Decimal("6.00"), True),
        ("O3", dt.date(2025, 3, 10), "cancelled", Decimal("8.00"), Decimal("3.20"), False),
    ]
    assert rows(
        warehouse,
        "select customer_id, first_order_date, last_order_date, completed_orders, "
        "net_revenue, margin_amount, region, segment, tier, as_of_date "
        "from marts.dim_customer order by 1",
    ) == [
        # the only buyer: rank 1 of 1 is the top 1% (vip); in a base of one every RFM score
        # is 1 (score = 1 + floor(5 * (rank - 1) / n)), which the segment map calls Lost
        (
            "C1",
            dt.date(2025, 3, 1),
            dt.date(2025, 3, 5),
            2,
            Decimal("30.00"),
            Decimal("13.50"),
            "north",
            "Lost",
            "vip",
            day,
        ),
        ("C2", None, None, 0, Decimal("0.00"), Decimal("0.00"), "south", None, None, day),
    ]


def test_a_late_change_is_seen_from_its_day_on_and_not_before(tmp_path, warehouse):
    src = build_source(
        f"sqlite:///{tmp_path}/s.db",
        {
            "customers": [customer("C1", "2025-01-05")],
            "orders": [order("O1", "C1", "2025-03-01"), order("O2", "C1", "2025-03-02")],
        },
    )
    run_day(src, warehouse, dt.date(2025, 3, 10))
    upsert(
        src,
        "orders",
        [order("O1", "C1", "2025-03-01", status="refunded", updated_at="2025-03-12 08:00")],
    )
    run_day(src, warehouse, dt.date(2025, 3, 12))
    assert rows(warehouse, "select order_id, status from marts.fct_orders order by 1") == [
        ("O1", "refunded"),
        ("O2", "completed"),
    ]
    # a backfill of the 10th keeps the newer state of these one-state tables ...
    build_day(warehouse, dt.date(2025, 3, 10))
    assert rows(warehouse, "select order_id, status from marts.fct_orders order by 1") == [
        ("O1", "refunded"),
        ("O2", "completed"),
    ]
    # ... and, asked to rebuild the 10th itself, still sees O1 as it was then
    build_marts(warehouse, ("fct_orders",), dt.date(2025, 3, 10), allow_rollback=True)
    build_marts(warehouse, ("dim_customer",), dt.date(2025, 3, 10), allow_rollback=True)
    assert rows(warehouse, "select order_id, status from marts.fct_orders order by 1") == [
        ("O1", "completed"),
        ("O2", "completed"),
    ]
    assert rows(warehouse, "select completed_orders from marts.dim_customer") == [(2,)]


def test_rebuild_is_idempotent(tmp_path, warehouse):
    src = build_source(
        f"sqlite:///{tmp_path}/s.db",
        {"customers": [customer("C1", "2025-01-05")], "orders": [order("O1", "C1", "2025-03-01")]},
    )
    run_day(src, warehouse, dt.date(2025, 3, 10))
    first = rows(warehouse, "select * from marts.dim_customer order by 1")
    run_day(src, warehouse, dt.date(2025, 3, 10))
    assert rows(warehouse, "select * from marts.dim_customer order by 1") == first
    assert rows(warehouse, "select count(*) from raw.orders") == [(1,)]
