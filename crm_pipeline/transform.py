"""Building the staging and mart layers from the SQL files under include/sql.

Staging (`staging.stg_<table>`) holds every stored version of every source row, typed,
with its validity interval: `valid_from` (the version's `updated_at`, or 1900-01-01 for
the first version we ever saw, since the row existed before we first saw it) and
`valid_to` (the next version's `updated_at`, or 9999-12-31). A mart for day d reads the
version valid at the end of d (`valid_from < end and valid_to >= end`), which is how a
rerun or a backfill of a past day sees the data as it was known then, as far as the raw
layer kept its versions.

The versioning is the same for every table, so it is written once here and wraps each
staging file, which only types and renames.
"""

from __future__ import annotations

import datetime as dt
import logging

from crm_pipeline.extract import ensure_raw_tables
from crm_pipeline.source_schema import SOURCE_TABLES, TABLE_ORDER
from crm_pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)

SCD_START = "timestamp '1900-01-01 00:00:00'"
SCD_END = "timestamp '9999-12-31 00:00:00'"


def versioned_sql(staging_sql: str, key: tuple[str, ...]) -> str:
    """Wrap a typed staging select with each version's validity interval."""
    partition = ", ".join(key)
    return f"""
with typed as (
{staging_sql}
),

versioned as (
    select
        typed.*,
        row_number() over w as version_no,
        lead(updated_at) over w as next_updated_at
    from typed
    window w as (partition by {partition} order by updated_at, _batch_id, _row_hash)
)

select
    versioned.*,
    case when version_no = 1 then {SCD_START} else updated_at end as valid_from,
    coalesce(next_updated_at, {SCD_END}) as valid_to
from versioned
"""


def build_staging(wh: Warehouse) -> dict[str, int]:
    """Rebuild every staging table in one transaction (all or none are replaced)."""
    counts = {}
    with wh.begin() as conn:
        ensure_raw_tables(wh, conn)
        for table in TABLE_ORDER:
            sql = versioned_sql(wh.sql_file("staging", f"stg_{table}"), SOURCE_TABLES[table].key)
            counts[f"staging.stg_{table}"] = wh.replace_table(conn, f"staging.stg_{table}", sql)
    log.info("staging rebuilt: %s", counts)
    return counts


def build_marts(
    wh: Warehouse, names: tuple[str, ...], as_of_date: dt.date, allow_rollback: bool = False
) -> dict[str, int]:
    """Rebuild state-as-of-the-run marts (build and swap), in order, in one transaction.

    These tables hold one state, the latest: a backfill of an earlier day leaves a newer
    state in place (its snapshot marts are what it rebuilds), unless `allow_rollback`.
    """
    if "dim_customer" in names:
        _ensure_model_tables(wh)
    counts = {}
    with wh.begin() as conn:
        ensure_raw_tables(wh, conn)
        for name in names:
            table = f"marts.{name}"
            newer = _built_for(wh, conn, table)
            if newer is not None and newer > as_of_date and not allow_rollback:
                log.info("kept %s as of %s: a run for %s does not roll it back", table, newer,
                         as_of_date)
                continue
            counts[table] = wh.replace_table(
                conn, table, wh.sql_file("marts", name), {"as_of_date": as_of_date}
            )
    log.info("marts rebuilt for %s: %s", as_of_date, counts)
    return counts


def _built_for(wh: Warehouse, conn, table: str) -> dt.date | None:
    if not wh.table_exists(conn, table):
        return None
    return conn.exec_driver_sql(f"select max(as_of_date) from {table}").scalar()


def _ensure_model_tables(wh: Warehouse) -> None:
    """dim_customer reads the latest published CLV; before any models run that is none."""
    with wh.begin() as conn:
        missing = not wh.table_exists(conn, "marts.customer_clv")
    if missing:
        from crm_pipeline.models.nightly import ensure_tables

        ensure_tables(wh)
