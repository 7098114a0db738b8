"""The staging layer: `staging.stg_<table>`, every stored version of every source row, typed.

Staging (`staging.stg_<table>`) holds every stored version of every source row, typed,
with its validity interval: `valid_from` (the version's `updated_at`, or 1900-01-01 for
the first version we ever saw, since the row existed before we first saw it) and
`valid_to` (the next version's `updated_at`, or 9999-12-31). A mart for day d reads the
version valid at the end of d (`valid_from < end and valid_to >= end`), which is how a
rerun or a backfill of a past day sees the data as it was known then, as far as the raw
layer kept its versions.

The versioning is the same for every table, so it is written once here and wraps each
staging file (include/sql/staging), which only types and renames. Grain: one row per
stored version of a source row.
"""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa

from crm_pipeline.source_schema import SOURCE_TABLES, TABLE_ORDER
from crm_pipeline.source_schema import metadata as source_metadata
from crm_pipeline.warehouse import Warehouse, tables

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


#: a whole rebuild on DuckDB reads at most about this many raw versions at a time: the
#: validity window over 19 M orders in one statement does not fit DuckDB's 2 GB
PART_ROWS = 4_000_000


def build_staging(wh: Warehouse, full: bool = False, part_rows: int = PART_ROWS) -> dict[str, int]:
    """Bring every staging table up to date with raw, in one transaction (all or none).

    A staging table is a function of its raw versions minus the held ones, key by key (the
    validity intervals never cross keys). So a night restages only the keys that changed:
    those with a version in a batch newer than the last one staged, or with a version whose
    quarantine hold began or ended since (the held set staged last is kept in
    ops.staging_held); keys are matched on their text columns (`_text_key`: every line of
    a changed order). The table is rebuilt whole when it is missing, on `full`, or when its
    SQL changed (ops.staging_state keeps a digest). Either way the rows are the same as a
    rebuild from all of raw (tests/unit/test_staging.py).
    """
    counts = {}
    with wh.begin() as conn:
        wh.ensure(conn, tables.STAGING_STATE, tables.STAGING_HELD)
        for table in TABLE_ORDER:
            qualified = f"staging.stg_{table}"
            sql = versioned_sql(wh.sql_file("staging", f"stg_{table}"), SOURCE_TABLES[table].key)
            digest = hashlib.md5(sql.encode(), usedforsecurity=False).hexdigest()
            state = conn.execute(
                sa.text(
                    "select sql_md5, last_batch_id from ops.staging_state where table_name = :t"
                ),
                {"t": table},
            ).first()
            newest = conn.exec_driver_sql(
                f"select coalesce(max(_batch_id), 0) from raw.{table}"
            ).scalar_one()
            whole = full or state is None or state[0] != digest or not _text_key(table)
            if whole or not wh.table_exists(conn, qualified):
                parts = _key_parts(wh, conn, table, sql, part_rows)
                counts[qualified] = wh.replace_table(conn, qualified, parts[0], more_sql=parts[1:])
                how = "rebuilt" if len(parts) == 1 else f"rebuilt in {len(parts)} parts"
            else:
                restaged = _restage_changed_keys(wh, conn, table, sql, int(state[1]))
                counts[qualified] = conn.exec_driver_sql(
                    f"select count(*) from {qualified}"
                ).scalar_one()
                how = f"{restaged:,} key(s) restaged"
            log.info("%s: %s, %d rows", qualified, how, counts[qualified])
            conn.execute(
                sa.text("delete from ops.staging_state where table_name = :t"), {"t": table}
            )
            conn.execute(
                sa.text("insert into ops.staging_state values (:t, :d, :b)"),
                {"t": table, "d": digest, "b": int(newest)},
            )
            conn.execute(
                sa.text("delete from ops.staging_held where table_name = :t"), {"t": table}
            )
            conn.execute(
                sa.text(
                    "insert into ops.staging_held select table_name, row_hash "
                    "from quarantine.held_rows where table_name = :t"
                ),
                {"t": table},
            )
    log.info("staging up to date: %s", counts)
    return counts


def _key_parts(
    wh: Warehouse, conn: sa.Connection, table: str, sql: str, part_rows: int
) -> list[str]:
    """The staging select split by a hash of the key into parts of about `part_rows` raw
    versions (one part below that, and always on PostgreSQL, which sorts on disk). A key's
    versions all fall in one part, so each part's validity intervals are whole."""
    versions = conn.exec_driver_sql(f"select count(*) from raw.{table}").scalar_one()
    n = -(-versions // part_rows) if wh.dialect == "duckdb" else 1
    if n <= 1:
        return [sql]
    source = f"raw.{table}"
    assert sql.count(source) == 1, f"staging SQL of {table} must read {source} once"
    keys = ", ".join(SOURCE_TABLES[table].key)
    return [
        sql.replace(source, f"(select * from {source} where hash({keys}) % {n} = {i}) as part")
        for i in range(n)
    ]


def _text_key(table: str) -> tuple[str, ...]:
    """The key columns that are text in the source, which staging passes through as they are.

    Changed keys are matched between raw (text) and staging on these only: a typed key
    column (order_lines.line_no, marketing_spend.spend_date) is text in raw and typed in
    staging, and two raw spellings of one value ('1', '01') would match apart. Restaging
    every key that shares the text part (every line of a changed order) restages a
    superset of the changed keys, which gives the same rows. A table without a text key
    column would be rebuilt whole."""
    columns = source_metadata.tables[table].c
    return tuple(k for k in SOURCE_TABLES[table].key if isinstance(columns[k].type, sa.String))


def _restage_changed_keys(
    wh: Warehouse, conn: sa.Connection, table: str, sql: str, last_batch_id: int
) -> int:
    """Replace the staged versions of the keys that changed since `last_batch_id` (by the
    text part of the key: `_text_key`)."""
    key = _text_key(table)
    keys = ", ".join(key)
    conn.exec_driver_sql("drop table if exists _stage_keys")
    conn.execute(
        sa.text(
            f"""create temporary table _stage_keys as
            select distinct {keys} from raw.{table}
            where _batch_id > :last or _row_hash in (
                (select row_hash from quarantine.held_rows where table_name = :t
                 except select row_hash from ops.staging_held where table_name = :t)
                union
                (select row_hash from ops.staging_held where table_name = :t
                 except select row_hash from quarantine.held_rows where table_name = :t))"""
        ),
        {"last": last_batch_id, "t": table},
    )
    changed = conn.exec_driver_sql("select count(*) from _stage_keys").scalar_one()
    if changed:
        same = " and ".join(f"k.{c} is not distinct from x.{c}" for c in key)
        conn.exec_driver_sql(
            f"delete from staging.stg_{table} x where exists (select 1 from _stage_keys k where {same})"
        )
        source = f"raw.{table}"
        assert sql.count(source) == 1, f"staging SQL of {table} must read {source} once"
        affected = (
            f"(select x.* from {source} x where exists "
            f"(select 1 from _stage_keys k where {same})) as changed_rows"
        )
        insert = f"insert into staging.stg_{table} {sql.replace(source, affected)}"
        conn.exec_driver_sql(wh.render(insert))
    conn.exec_driver_sql("drop table if exists _stage_keys")
    return changed
