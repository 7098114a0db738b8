"""Snapshot marts keyed by as_of_date: RFM segments, value tiers, KPIs, segment migration.

Every build takes a range of dates, and the nightly run is the range of one day: the SQL
joins a spine of dates (`as_of_dates`) to the versioned staging tables, so a 90-day
history is one set-based pass that yields exactly the rows 90 nightly runs would. Days are
replaced by delete-insert, each chunk of days in one transaction, so a rerun or a backfill
gives the same rows and a reader never sees half a day.

First, once, the completed order versions valid somewhere in the range and each customer's
first order among those valid all through it (`BUILD_INTERMEDIATE`); then per chunk of
days, in one transaction each, intermediate temporary tables (`INTERMEDIATE`: the chunk's
order versions, the period's purchases, each customer's purchase windows per day, customer
attributes per day), then customer_rfm and
customer_value_tier (the KPIs' tier and segment dimensions), then kpi_daily and
segment_migration (which compares each day with 30 days before, so a history build reaches
30 days further back for RFM and tiers). The purchase windows (`int_customer_days`) sum the
orders inside a window on every day of the chunk once per customer and count day by day
only those entering or leaving it, so a chunk's cost grows with the orders and the customer
days, not with orders times days; order versions that change inside the chunk are counted
day by day. The settings the SQL reads come checked from crm_pipeline.transform.settings.
Grain: per as_of_date, one row per customer (customer_rfm, customer_value_tier,
segment_migration) or per KPI and dimension value (kpi_daily).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline.config import settings
from crm_pipeline.dates import end_of_day
from crm_pipeline.transform.settings import SEGMENT_LOOKUP_TYPES, segment_lookup, sql_params
from crm_pipeline.transform.staging import SCD_END
from crm_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

MIGRATION_DAYS = 30  # segment_migration, and the cohort of churn_rate and retention_rate
# built once per build (the completed order versions of the whole range, and the first order
# of each customer among those valid all through it), then per chunk of days, in this order,
# as temporary tables the snapshot marts read
BUILD_INTERMEDIATE = ("int_completed_orders", "int_first_orders")
INTERMEDIATE = ("int_order_versions", "int_purchases", "int_customer_days", "int_customers")
SNAPSHOT_MARTS = ("customer_rfm", "customer_value_tier", "kpi_daily", "segment_migration")


def build_snapshots(
    wh: Warehouse,
    date_from: dt.date,
    date_to: dt.date,
    config: dict[str, Any] | None = None,
    chunk_days: int | None = None,
) -> dict[str, int]:
    """Rebuild the snapshot marts for every day in [date_from, date_to].

    Days are computed in chunks of `chunk_days`, oldest first: each day's rows depend only
    on the data and, for segment_migration, on positions 30 days earlier, so chunking
    changes nothing in the result and bounds the memory of a long history. Each chunk is
    one transaction (delete-insert of its days in all four marts), so a day appears whole
    or not at all; a night is one chunk. A history commits chunk by chunk because on
    DuckDB whatever a transaction writes and drops again (each chunk's temporary tables)
    is freed only at its commit: one transaction over a 90-day history at a million
    customers spilled tens of GB. A history killed part way leaves complete days, and the
    rerun builds the whole history again (`history_start`).
    """
    config = config or settings()
    params = sql_params(config)
    if date_from > date_to:
        raise ValueError(f"empty range {date_from} .. {date_to}")
    counts = dict.fromkeys((f"marts.{m}" for m in SNAPSHOT_MARTS), 0)
    with wh.connect() as conn:
        with conn.begin():
            wh.ensure(conn)
            chunk_days = chunk_days or _chunk_days(wh, conn, config)
            plan = [(lo, hi, SNAPSHOT_MARTS) for lo, hi in _chunks(date_from, date_to, chunk_days)]
            # the days 30 before the range that are not built yet get RFM and tiers first:
            # the positions segment_migration and the churn / retention cohorts start from
            plan[:0] = [
                (lo, hi, SNAPSHOT_MARTS[:2])
                for lo, hi in _runs(_missing_positions(wh, conn, date_from, date_to), chunk_days)
            ]
        with conn.begin():  # what every chunk reads, built once (temporary: this connection)
            started = time.perf_counter()
            _drop_temps(conn)
            wh.temp_table(conn, "rfm_segment_lookup", segment_lookup(config), SEGMENT_LOOKUP_TYPES)
            build = {"build_from": plan[0][0], "build_to": max(hi for _, hi, _ in plan)}
            for name in BUILD_INTERMEDIATE:
                conn.exec_driver_sql(
                    f"create temporary table {name} as "
                    + wh.render(wh.sql_file("intermediate", name), build)
                )
            log.info(
                "snapshots: completed order versions and first orders of %s .. %s in %.1f s",
                plan[0][0],
                date_to,
                time.perf_counter() - started,
            )
        for part, (lo, hi, marts) in enumerate(plan, 1):
            started = time.perf_counter()
            with conn.begin():
                _date_spine(wh, conn, lo, hi)
                span = {**params, "date_from": lo, "date_to": hi}
                for name in INTERMEDIATE:
                    kind = _kind(name)
                    conn.exec_driver_sql(f"drop {kind} if exists {name}")
                    conn.exec_driver_sql(
                        f"create temporary {kind} {name} as "
                        + wh.render(wh.sql_file("intermediate", name), span)
                    )
                for name in marts:
                    counts[f"marts.{name}"] += wh.replace_partition(
                        conn, f"marts.{name}", wh.sql_file("marts", name), span
                    )
                for name in reversed(INTERMEDIATE):
                    conn.exec_driver_sql(f"drop {_kind(name)} {name}")
            log.info(
                "snapshots %s .. %s (%d of %d): %s in %.1f s",
                lo,
                hi,
                part,
                len(plan),
                ", ".join(marts),
                time.perf_counter() - started,
            )
        with conn.begin():
            _drop_temps(conn)
    log.info("snapshot marts rebuilt for %s .. %s: %s", date_from, date_to, counts)
    return counts


def _kind(name: str) -> str:
    """The chunk's order versions are a view, a filter over the build's; the rest tables."""
    return "view" if name == "int_order_versions" else "table"


def _drop_temps(conn: sa.Connection) -> None:
    conn.exec_driver_sql("drop view if exists int_order_versions")
    for name in (*BUILD_INTERMEDIATE, "rfm_segment_lookup", "as_of_dates", *INTERMEDIATE[1:]):
        conn.exec_driver_sql(f"drop table if exists {name}")


def _missing_positions(
    wh: Warehouse, conn: sa.Connection, date_from: dt.date, date_to: dt.date
) -> list[dt.date]:
    """Days d-30 of the range's days, outside the range, without RFM or tier rows."""
    wanted = [
        d
        for d in pd.date_range(
            date_from - dt.timedelta(days=MIGRATION_DAYS),
            date_to - dt.timedelta(days=MIGRATION_DAYS),
        ).date
        if d < date_from
    ]
    if not wanted:
        return []
    built = None
    for table in ("marts.customer_rfm", "marts.customer_value_tier"):
        if not wh.table_exists(conn, table):
            return wanted
        days = {
            r[0]
            for r in conn.execute(
                sa.text(
                    f"select distinct as_of_date from {table} where as_of_date between :lo and :hi"
                ),
                {"lo": wanted[0], "hi": wanted[-1]},
            )
        }
        built = days if built is None else built & days
    return [d for d in wanted if d not in built]


def _runs(days: list[dt.date], size: int = 15):
    """Consecutive days as (first, last) ranges of at most `size` days."""
    start = prev = None
    for d in days:
        if start is not None and (d - prev).days == 1 and (d - start).days < size:
            prev = d
            continue
        if start is not None:
            yield start, prev
        start = prev = d
    if start is not None:
        yield start, prev


def _chunks(first: dt.date, last: dt.date, size: int):
    """Consecutive day ranges of at most `size` days covering first..last."""
    lo = first
    while lo <= last:
        hi = min(lo + dt.timedelta(days=size - 1), last)
        yield lo, hi
        lo = hi + dt.timedelta(days=1)


def history_start(wh: Warehouse, as_of_date: dt.date, history_days: int) -> dt.date:
    """Where a run's KPI build starts: the run's day, or further back on a new warehouse.

    A first run builds `history_days` days at once, so trends show from the first morning;
    later runs build their own day only. "First" is decided by what was completed, not by
    what exists: the history is done once its evaluation is (marts.kpi_evaluation, written
    in one transaction at the end), so a first run killed after the snapshots but before
    the evaluation builds and evaluates the whole history again when rerun.
    """
    if history_days <= 1:
        return as_of_date
    with wh.begin() as conn:
        if wh.table_exists(conn, "marts.kpi_evaluation"):
            evaluated = conn.execute(
                sa.text("select count(*) from marts.kpi_evaluation where as_of_date < :d"),
                {"d": as_of_date},
            ).scalar_one()
            if evaluated:
                return as_of_date
    return as_of_date - dt.timedelta(days=history_days - 1)


def _chunk_days(wh: Warehouse, conn: sa.Connection, config: dict[str, Any]) -> int:
    """Days per chunk: `history_chunk_days`, fewer for a large customer base, so that a
    chunk holds at most about `history_chunk_customer_days` customer days."""
    most = int(config["kpis"].get("history_chunk_days", 15))
    budget = int(config["kpis"].get("history_chunk_customer_days", 5_000_000))
    if not wh.table_exists(conn, "staging.stg_customers"):
        return most
    customers = conn.exec_driver_sql(
        "select count(*) from staging.stg_customers where valid_to = " + SCD_END
    ).scalar_one()
    return max(1, min(most, budget // max(customers, 1)))


def _date_spine(wh: Warehouse, conn: sa.Connection, date_from: dt.date, date_to: dt.date) -> None:
    days = pd.date_range(date_from, date_to, freq="D")
    frame = pd.DataFrame(
        {
            "as_of_date": [d.date() for d in days],
            "as_of_end": [end_of_day(d.date()) for d in days],
        }
    )
    wh.temp_table(conn, "as_of_dates", frame, {"as_of_date": "date", "as_of_end": "timestamp"})
