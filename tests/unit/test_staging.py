"""Staging restages only the keys that changed, and gives the rows a rebuild from all of raw
would: new versions, new keys, a hold that begins, a hold that ends, a rerun, a lost table."""

from __future__ import annotations

import datetime as dt
import logging

from factories import build_source, customer, order, ts, upsert

from crm_pipeline.extract import extract_table
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.transform.staging import build_staging

D = dt.date(2025, 3, 1)


def extract_all(src, wh, day):
    for table in TABLE_ORDER:
        extract_table(src, wh, table, day, f"run-{day}")


def staged(wh) -> dict[str, list[tuple]]:
    with wh.begin() as conn:
        return {
            t: sorted(
                (tuple(r) for r in conn.exec_driver_sql(f"select * from staging.stg_{t}")), key=str
            )
            for t in TABLE_ORDER
        }


def as_rebuilt(wh) -> dict[str, list[tuple]]:
    """The rows a rebuild from all of raw gives (and the state it leaves is a rebuild's)."""
    build_staging(wh, full=True)
    return staged(wh)


def restaged(caplog, table: str) -> str:
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"staging.stg_{table}:")
    ]
    return lines[-1].split(": ", 1)[1].split(",")[0]


def hold(wh, table: str, key: str, release: bool = False) -> None:
    with wh.begin() as conn:
        if release:
            conn.exec_driver_sql(
                f"update quarantine.rows set released_at = timestamp '2025-03-04 02:00:00', "
                f"release_run_id = 'manual' where row_key = '{key}'"
            )
            return
        conn.exec_driver_sql(
            f"insert into quarantine.rows select '{table}', order_id, _row_hash, 'test', null, "
            f"null, date '2025-03-03', 'run', null, null from raw.{table} where order_id = '{key}'"
        )


def test_a_night_restages_the_changed_keys_only_and_equals_a_rebuild(tmp_path, warehouse, caplog):
    caplog.set_level(logging.INFO, logger="crm_pipeline.transform.staging")
    src = f"sqlite:///{tmp_path}/source.db"
    build_source(
        src,
        {
            "customers": [customer("C1"), customer("C2")],
            "orders": [
                order("O1", "C1", "2025-02-20 10:00"),
                order("O2", "C2", "2025-02-21 10:00"),
                order("O3", "C2", "2025-02-22 10:00"),
            ],
        },
    )
    extract_all(src, warehouse, D)
    build_staging(warehouse)
    assert restaged(caplog, "orders") == "rebuilt"
    first = staged(warehouse)
    assert len(first["orders"]) == 3

    # a new version of O1 (refunded), a new order and a new customer
    upsert(
        src,
        "orders",
        [order("O1", "C1", "2025-02-20 10:00", status="refunded", updated_at="2025-03-02 09:00")],
    )
    upsert(src, "orders", [order("O4", "C1", "2025-03-02 11:00")])
    upsert(src, "customers", [customer("C3", created_at="2025-03-02")])
    extract_all(src, warehouse, D + dt.timedelta(days=1))
    build_staging(warehouse)
    assert restaged(caplog, "orders") == "2 key(s) restaged"
    assert restaged(caplog, "customers") == "1 key(s) restaged"
    assert restaged(caplog, "surveys") == "0 key(s) restaged"
    night = staged(warehouse)
    assert len(night["orders"]) == 5  # O1 has two versions now
    assert night == as_rebuilt(warehouse)

    # a hold begins on O2: its version leaves staging; then it ends: it comes back
    hold(warehouse, "orders", "O2")
    build_staging(warehouse)
    assert restaged(caplog, "orders") == "1 key(s) restaged"
    held = staged(warehouse)
    assert len(held["orders"]) == 4
    assert held == as_rebuilt(warehouse)
    hold(warehouse, "orders", "O2", release=True)
    build_staging(warehouse)
    assert restaged(caplog, "orders") == "1 key(s) restaged"
    assert staged(warehouse) == night == as_rebuilt(warehouse)

    # a rerun changes nothing; a lost staging table is rebuilt whole
    build_staging(warehouse)
    assert restaged(caplog, "orders") == "0 key(s) restaged"
    with warehouse.begin() as conn:
        conn.exec_driver_sql("drop table staging.stg_orders")
    build_staging(warehouse)
    assert restaged(caplog, "orders") == "rebuilt"
    assert staged(warehouse) == night


def test_a_whole_rebuild_in_key_parts_gives_the_same_rows(tmp_path, warehouse, caplog):
    """Large tables are rebuilt in parts by a hash of the key on DuckDB (bounded memory);
    each key's versions fall in one part, so the validity intervals are the same."""
    caplog.set_level(logging.INFO, logger="crm_pipeline.transform.staging")
    src = f"sqlite:///{tmp_path}/source.db"
    orders = [order(f"O{i}", f"C{i % 3}", f"2025-02-{10 + i} 10:00") for i in range(1, 9)]
    build_source(src, {"customers": [customer(f"C{i}") for i in range(3)], "orders": orders})
    extract_all(src, warehouse, D)
    for i in (1, 4, 7):  # later versions of some orders
        upsert(
            src,
            "orders",
            [
                order(
                    f"O{i}",
                    f"C{i % 3}",
                    f"2025-02-{10 + i} 10:00",
                    99.0,
                    updated_at="2025-03-01 09:00",
                )
            ],
        )
    extract_all(src, warehouse, D + dt.timedelta(days=1))
    one_part = as_rebuilt(warehouse)
    build_staging(warehouse, full=True, part_rows=3)
    parts = staged(warehouse)
    if warehouse.dialect == "duckdb":
        assert restaged(caplog, "orders") == "rebuilt in 4 parts"
    assert parts == one_part
    assert len(parts["orders"]) == 11


def test_order_lines_restage_every_line_of_a_changed_order(tmp_path, warehouse, caplog):
    """order_lines' key has a typed column (line_no): the changed keys are matched on the
    order alone, and every line of a changed order is restaged."""
    caplog.set_level(logging.INFO, logger="crm_pipeline.transform.staging")
    src = f"sqlite:///{tmp_path}/source.db"

    def line(order_id, line_no, quantity, updated_at="2025-02-20 10:00"):
        return {
            "order_id": order_id,
            "line_no": line_no,
            "product_id": "P1",
            "quantity": quantity,
            "unit_price": 10.0,
            "net_amount": 10.0 * quantity,
            "updated_at": ts(updated_at),
        }

    build_source(
        src,
        {
            "customers": [customer("C1")],
            "products": [
                {
                    "product_id": "P1",
                    "name": "Tea",
                    "category": "drinks",
                    "launched_at": ts("2024-01-01"),
                    "discontinued_at": None,
                    "updated_at": ts("2024-01-01"),
                }
            ],
            "orders": [
                order("O1", "C1", "2025-02-20 10:00"),
                order("O2", "C1", "2025-02-21 10:00"),
            ],
            "order_lines": [line("O1", 1, 1), line("O1", 2, 2), line("O2", 1, 3)],
        },
    )
    extract_all(src, warehouse, D)
    build_staging(warehouse)
    upsert(src, "order_lines", [line("O1", 2, 5, "2025-03-02 09:00")])  # a corrected line
    extract_all(src, warehouse, D + dt.timedelta(days=1))
    build_staging(warehouse)
    assert restaged(caplog, "order_lines") == "1 key(s) restaged"  # O1: both its lines
    night = staged(warehouse)
    assert len(night["order_lines"]) == 4
    assert night == as_rebuilt(warehouse)
