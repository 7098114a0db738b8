"""The columnar source reader spells every value as the row path does, on both source
engines: the same versions, the same `_row_hash`, whichever way a row was read."""

import datetime as dt

import pytest
import sqlalchemy as sa
from factories import build_source, customer, order, spend, survey

from crm_pipeline import source_arrow
from crm_pipeline.extract import extract_table
from crm_pipeline.source_schema import TABLE_ORDER
from crm_pipeline.warehouse import Warehouse

DAY = dt.date(2025, 3, 10)
TRICKY = 'Ann "the, best"\nO\'Brien, Zoë'


def rows():
    return {
        "customers": [
            customer(
                "C1",
                "2025-01-05 08:00:00.123456",
                name=TRICKY,
                loyalty_member=True,
                birth_year=None,
            ),
            customer("C2", "2025-02-01", name="", city="Zürich", gender="f"),
        ],
        "orders": [
            order("O1", "C1", "2025-03-01 09:30", 20.0),  # integral money: spelled 20
            order("O2", "C2", "2025-03-09 18:00", 35.5, discount=0.25),
            order("O3", "C2", "2025-03-09 18:00", 0.1),
        ],
        "surveys": [survey("S1", "C1", "2025-03-02", "nps", 9, comment=None)],
        "marketing_spend": [spend("2025-03-01", "shop", "acquisition", 99.99)],
    }


def raw(wh):
    out = {}
    with wh.begin() as conn:
        for table in TABLE_ORDER:
            cols = [c for c in wh.columns(conn, f"raw.{table}") if c != "_batch_id"]
            out[table] = sorted(
                conn.exec_driver_sql(f"select {', '.join(cols)} from raw.{table}").fetchall()
            )
    return out


def both_paths(source_url, tmp_path, monkeypatch, watermark_day=DAY):
    """raw after a full and an incremental pull, read columnar and read by rows."""
    results = []
    for columnar in (True, False):
        monkeypatch.setattr(source_arrow, "supported", lambda url, c=columnar: c)
        wh = Warehouse(f"duckdb:///{tmp_path}/wh-{columnar}.duckdb")
        for table in TABLE_ORDER:
            extract_table(source_url, wh, table, watermark_day, "r1")
            extract_table(source_url, wh, table, watermark_day, "r2")  # at the watermark
        results.append(raw(wh))
    return results


def test_a_sqlite_source_reads_the_same_versions_both_ways(tmp_path, monkeypatch):
    src = build_source(f"sqlite:///{tmp_path}/source.db", rows())
    with sa.create_engine(src).begin() as conn:  # a value that does not parse stays text
        conn.exec_driver_sql("update orders set cost_amount = 'n/a' where order_id = 'O3'")
    columnar, by_rows = both_paths(src, tmp_path, monkeypatch)
    assert columnar == by_rows
    names = {r[0]: r for r in columnar["customers"]}
    assert TRICKY in names["C1"] and "" in names["C2"]
    assert (
        "O1",
        "C1",
        "2025-03-01 09:30:00.000000",
        "completed",
        "delivery_staff",
        "20",
        "0",
        "20",
        "12",
    ) == columnar["orders"][0][:9]


@pytest.mark.postgres
def test_a_postgresql_source_reads_the_same_versions_both_ways(pg_database, tmp_path, monkeypatch):
    src = build_source(pg_database, rows())
    with sa.create_engine(pg_database).begin() as conn:  # and a timestamp with time zone
        conn.exec_driver_sql("set time zone 'Europe/Paris'")
        conn.exec_driver_sql(
            "alter table surveys alter column updated_at type timestamptz "
            "using updated_at at time zone 'UTC'"
        )
    columnar, by_rows = both_paths(src, tmp_path, monkeypatch)
    assert columnar == by_rows
    orders = {r[0]: r for r in columnar["orders"]}
    assert orders["O1"][5:9] == ("20", "0", "20", "12")  # numeric(14,2) 20.00
    assert orders["O2"][5:9] == ("35.75", "0.25", "35.50", "21.30")
    customers = {r[0]: r for r in columnar["customers"]}
    assert customers["C1"][10] == "true" and customers["C1"][7] is None  # boolean, NULL
    assert customers["C1"][1] == "2025-01-05 08:00:00.123456"
    assert columnar["marketing_spend"][0][0] == "2025-03-01"
    assert columnar["surveys"][0][-2] == "2025-03-02 12:00:00.000000"  # UTC, whatever the zone


def test_an_incremental_columnar_pull_reads_from_the_watermark(tmp_path):
    from factories import upsert

    src = build_source(f"sqlite:///{tmp_path}/source.db", rows())
    wh = Warehouse(f"duckdb:///{tmp_path}/wh.duckdb")
    first = extract_table(src, wh, "orders", DAY, "r1")
    assert first["rows_read"] == 3 and first["watermark_to"] == "2025-03-09 18:00:00.000000"
    upsert(src, "orders", [order("O4", "C1", "2025-03-10 07:00", 5.0)])
    later = extract_table(src, wh, "orders", DAY, "r2")
    # the two rows at the watermark again (dropped by their hash) and the new one
    assert later["rows_read"] == 3 and later["new_versions"] == 1
