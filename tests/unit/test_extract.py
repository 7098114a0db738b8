"""Incremental extraction into the raw layer, on DuckDB and PostgreSQL."""

import datetime as dt

import pytest
from factories import build_source, customer, order, upsert

from crm_pipeline.extract import SourceSchemaError, extract_table
from crm_pipeline.source_schema import TABLE_ORDER

DAY = dt.date(2025, 3, 10)


def pull_all(src, wh, day=DAY, run="run-1", **kw):
    return {t: extract_table(src, wh, t, day, run, **kw) for t in TABLE_ORDER}


def raw_rows(wh, table, cols="*"):
    with wh.begin() as conn:
        return conn.exec_driver_sql(
            f"select {cols} from raw.{table} order by 1, updated_at"
        ).fetchall()


@pytest.fixture
def source(tmp_path):
    return build_source(
        f"sqlite:///{tmp_path}/source.db",
        {
            "customers": [customer("C1", "2025-01-05"), customer("C2", "2025-02-01")],
            "orders": [
                order("O1", "C1", "2025-03-01 09:30"),
                order("O2", "C2", "2025-03-09 18:00", 35.5),
            ],
        },
    )


def test_first_run_pulls_everything_as_text(source, warehouse):
    stats = pull_all(source, warehouse)
    assert stats["orders"]["rows_read"] == 2 and stats["orders"]["new_versions"] == 2
    assert stats["customers"]["watermark_to"] == "2025-02-01 12:00:00.000000"
    rows = raw_rows(warehouse, "orders", "order_id, net_amount, ordered_at, status")
    assert rows == [
        ("O1", "20", "2025-03-01 09:30:00.000000", "completed"),
        ("O2", "35.5", "2025-03-09 18:00:00.000000", "completed"),
    ]


def test_incremental_run_picks_up_new_rows_and_late_changes_exactly_once(source, warehouse):
    pull_all(source, warehouse)
    # a day later: O1 is refunded (late change), O3 is new
    upsert(
        source,
        "orders",
        [
            order("O1", "C1", "2025-03-01 09:30", status="refunded", updated_at="2025-03-11 08:00"),
            order("O3", "C2", "2025-03-11 10:00", 12.0),
        ],
    )
    stats = pull_all(source, warehouse, dt.date(2025, 3, 11), "run-2")
    # the pull is `updated_at >= watermark`: O2 (at the watermark) is read again but not stored again
    assert stats["orders"]["new_versions"] == 2
    again = pull_all(source, warehouse, dt.date(2025, 3, 11), "run-3")
    assert again["orders"]["new_versions"] == 0
    versions = raw_rows(warehouse, "orders", "order_id, status")
    assert versions == [
        ("O1", "completed"),
        ("O1", "refunded"),
        ("O2", "completed"),
        ("O3", "completed"),
    ]


def test_a_pull_killed_before_the_watermark_commits_loses_nothing(source, warehouse):
    pull_all(source, warehouse)
    upsert(source, "orders", [order("O3", "C2", "2025-03-11 10:00", 12.0)])

    def crash():
        raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError, match="worker killed"):
        extract_table(source, warehouse, "orders", DAY, "run-2", before_commit=crash)
    assert [r[0] for r in raw_rows(warehouse, "orders", "order_id")] == ["O1", "O2"]
    stats = extract_table(source, warehouse, "orders", DAY, "run-3")
    assert stats["new_versions"] == 1
    assert [r[0] for r in raw_rows(warehouse, "orders", "order_id")] == ["O1", "O2", "O3"]


def test_a_backfill_run_for_an_earlier_date_neither_loses_nor_duplicates(source, warehouse):
    pull_all(source, warehouse)
    upsert(source, "orders", [order("O3", "C2", "2025-03-11 10:00", 12.0)])
    stats = extract_table(source, warehouse, "orders", dt.date(2025, 2, 1), "backfill-1")
    assert stats["new_versions"] == 1
    assert len(raw_rows(warehouse, "orders")) == 3


def test_watermarks_survive_a_new_process(source, warehouse):
    from crm_pipeline.warehouse import Warehouse

    pull_all(source, warehouse)
    reopened = Warehouse(warehouse.url)
    stats = extract_table(source, reopened, "orders", DAY, "run-2")
    assert stats["watermark_from"] == "2025-03-09 18:00:00.000000"
    assert stats["rows_read"] == 1  # only the row at the watermark itself


def test_a_source_without_updated_at_is_refused_with_the_table_named(tmp_path, warehouse):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path}/bad.db")
    with engine.begin() as conn:
        conn.exec_driver_sql("create table orders (order_id text, customer_id text)")
    with pytest.raises(SourceSchemaError, match=r"source table orders: column\(s\) .*updated_at"):
        extract_table(f"sqlite:///{tmp_path}/bad.db", warehouse, "orders", DAY, "r")


def test_a_row_stamped_in_the_future_does_not_push_the_watermark_past_the_run(source, warehouse):
    run_start = dt.datetime(2025, 3, 11, 2, 0)
    upsert(source, "orders", [order("OF", "C1", "2025-03-10", updated_at="2030-01-01 00:00")])
    stats = extract_table(source, warehouse, "orders", DAY, "run-1", now=run_start)
    assert stats["new_versions"] == 3  # stored (validation quarantines it) ...
    assert stats["watermark_to"] == "2025-03-09 18:00:00.000000"  # ... but the watermark stays
    upsert(source, "orders", [order("O3", "C2", "2025-03-10 20:00", updated_at="2025-03-10 20:00")])
    later = extract_table(source, warehouse, "orders", DAY, "run-2", now=run_start)
    assert later["new_versions"] == 1  # a row committed late is still seen


def test_a_missing_column_keeps_the_watermark_so_the_fixed_rows_come_again(tmp_path, warehouse):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/s.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table surveys (response_id text, customer_id text, "
            "responded_at text, survey_type text, comment text, order_id text, "
            "updated_at text)"
        )  # score is missing
        conn.exec_driver_sql(
            "insert into surveys values ('S1', 'C1', '2025-03-01 10:00:00', "
            "'csat', null, null, '2025-03-01 10:00:00.000000')"
        )
    stats = extract_table(url, warehouse, "surveys", DAY, "run-1")
    assert stats["missing_columns"] == "score" and stats["watermark_to"] is None
    with engine.begin() as conn:  # the source is fixed: the column comes back
        conn.exec_driver_sql("alter table surveys add column score integer")
        conn.exec_driver_sql("update surveys set score = 5")
    fixed = extract_table(url, warehouse, "surveys", DAY, "run-2")
    assert fixed["rows_read"] == 1 and fixed["new_versions"] == 1
    assert fixed["watermark_to"] == "2025-03-01 10:00:00.000000"


def test_an_optional_table_the_source_lacks_reads_as_empty_until_it_disappears(source, warehouse):
    import sqlalchemy as sa

    from crm_pipeline.errors import PipelineStop

    engine = sa.create_engine(source)
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table complaints")
    stats = extract_table(source, warehouse, "complaints", DAY, "run-1")
    assert stats["absent"] and stats["new_versions"] == 0  # a company without the data
    with warehouse.begin() as conn:
        assert (
            conn.exec_driver_sql(
                "select count(*) from ops.extract_batches where table_name = 'complaints'"
            ).scalar_one()
            == 0
        )
    # a required table may not be missing, and an optional one that had rows may not vanish
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table products")
    with pytest.raises(SourceSchemaError, match="source table products does not exist"):
        extract_table(source, warehouse, "products", DAY, "run-1")
    from factories import survey

    # surveys had a row, pulled into raw; then the table is dropped
    upsert(source, "surveys", [survey("S1", "C1", "2025-03-01", "csat", 5)])
    extract_table(source, warehouse, "surveys", DAY, "run-1")
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table surveys")
    with pytest.raises(SourceSchemaError, match=r"surveys does not exist.*holds 1 rows") as caught:
        extract_table(source, warehouse, "surveys", DAY, "run-2")
    assert isinstance(caught.value, PipelineStop)  # no retry mends a dropped table


def test_the_same_version_pulled_twice_is_stored_once(tmp_path, warehouse):
    """A source without a key constraint can hand over one row twice, within a pull and
    across pulls: raw keeps each version once, and a version seen twice in one pull goes
    through the deduplicating path (only those, on DuckDB)."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/s.db"
    engine = sa.create_engine(url)
    row = (
        "'{id}', 'C1', '2025-03-01 10:00:00', 'csat', {score}, null, null, "
        "'2025-03-0{day} 10:00:00.000000'"
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table surveys (response_id text, customer_id text, "
            "responded_at text, survey_type text, score integer, comment text, "
            "order_id text, updated_at text)"
        )
        for values in (("S1", 5, 1), ("S1", 5, 1), ("S2", 4, 1), ("S1", 3, 2)):
            conn.exec_driver_sql(
                "insert into surveys values ("
                + row.format(id=values[0], score=values[1], day=values[2])
                + ")"
            )
    first = extract_table(url, warehouse, "surveys", DAY, "run-1")
    assert (first["rows_read"], first["new_versions"]) == (4, 3)
    with engine.begin() as conn:  # the same rows again, plus a new one twice
        for values in (("S3", 2, 3), ("S3", 2, 3)):
            conn.exec_driver_sql(
                "insert into surveys values ("
                + row.format(id=values[0], score=values[1], day=values[2])
                + ")"
            )
    second = extract_table(url, warehouse, "surveys", DAY, "run-2")
    assert second["new_versions"] == 1
    rows = raw_rows(warehouse, "surveys", "response_id, score, _row_hash")
    assert [r[:2] for r in rows] == [("S1", "5"), ("S1", "3"), ("S2", "4"), ("S3", "2")]
    assert len({r[2] for r in rows}) == 4
