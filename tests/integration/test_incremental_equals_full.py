"""Nights on top of the previous nights' warehouse give the marts a first build from an
empty warehouse gives, on the same source.

The incremental path restages only the changed keys, builds the day's snapshots only and
fits the models on the day; a first build restages everything and builds 90 days. For the
day they share, every public mart must be the same row for row (the column naming the run
that wrote a row aside). The stages are called as the DAG calls them (bench.night).
"""

from __future__ import annotations

import datetime as dt

import pytest

from bench.night import night
from crm_devtools import demo
from crm_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 6, 30)
AS_OF_DAY = (
    "customer_rfm",
    "customer_value_tier",
    "kpi_daily",
    "segment_migration",
    "customer_clv",
    "customer_churn_risk",
)
# the evaluation's baseline is the KPI's own recent history, which a first build restates
# with what is known at its end (a row's first version pulled is valid from the start), so
# the day's figures and targets are compared, not the band around them
EVALUATED = (
    "as_of_date",
    "kpi",
    "dimension",
    "dimension_value",
    "value",
    "target",
    "direction",
    "n",
    "interval_low",
    "interval_high",
    "target_breached",
)
LATEST_STATE = ("fct_orders", "dim_customer")


def rows(wh: Warehouse, table: str, day: dt.date | None, only: tuple[str, ...] = ()) -> list:
    with wh.begin() as conn:
        cols = list(only) or [c for c in wh.columns(conn, f"marts.{table}") if c != "run_id"]
        where = f" where as_of_date = date '{day}'" if day else ""
        found = conn.exec_driver_sql(f"select {', '.join(cols)} from marts.{table}{where}")
        return sorted(map(tuple, found.fetchall()), key=repr)


def current_versions(wh: Warehouse, table: str) -> list[tuple]:
    """A staging table's versions valid now, without what depends on the versions pulled
    before them (the nights saw intermediate versions that one pull at the end cannot)."""
    skip = {"_batch_id", "version_no", "next_updated_at", "valid_from"}
    with wh.begin() as conn:
        cols = [c for c in wh.columns(conn, f"staging.{table}") if c not in skip]
        found = conn.exec_driver_sql(
            f"select {', '.join(cols)} from staging.{table} "
            "where valid_to = timestamp '9999-12-31 00:00:00'"
        )
        return sorted(map(tuple, found.fetchall()), key=repr)


def test_nights_on_top_of_each_other_equal_a_first_build(tmp_path):
    source = f"sqlite:///{tmp_path}/source.db"
    # 800 customers over 400 days: enough at d-180 and d-90 for every model to publish
    demo.generate(source, customers=800, days=400, seed=11, end_date=DAY - dt.timedelta(days=2))
    incremental = f"duckdb:///{tmp_path}/incremental.duckdb"
    night(source, incremental, DAY - dt.timedelta(days=2), "first", tmp_path / "a")
    for back in (1, 0):
        day = DAY - dt.timedelta(days=back)
        demo.advance(source, day)
        night(source, incremental, day, f"night-{day}", tmp_path / "a")
    full = f"duckdb:///{tmp_path}/full.duckdb"
    night(source, full, DAY, "full", tmp_path / "b")

    inc, ful = Warehouse(incremental), Warehouse(full)
    with inc.begin() as conn:
        staging = inc.tables(conn, "staging")
        restaged = conn.exec_driver_sql(
            "select count(*) from ops.extract_batches where as_of_date = date "
            f"'{DAY}' and new_versions > 0"
        ).scalar_one()
    assert restaged > 0  # the last night had changes to carry
    for table in AS_OF_DAY:
        got = rows(inc, table, DAY)
        assert got, f"marts.{table} has no rows for {DAY}"
        assert got == rows(ful, table, DAY), f"marts.{table} differs for {DAY}"
    evaluated = rows(inc, "kpi_evaluation", DAY, EVALUATED)
    assert evaluated and evaluated == rows(ful, "kpi_evaluation", DAY, EVALUATED)
    for table in LATEST_STATE:
        assert rows(inc, table, None) == rows(ful, table, None), f"marts.{table} differs"
    for table in staging:
        assert current_versions(inc, table) == current_versions(ful, table), table
