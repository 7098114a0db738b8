"""Incremental extraction of one source table into the raw layer.

Grain of `raw.<table>`: one row per *version* of a source row, every column kept as text
exactly as the source gave it (so a value that does not parse is kept, and validation can
name it), plus `_row_hash` (identity of the version) and `_batch_id`. A version loaded
twice is stored once. `ops.extract_batches` records each pull (rows read, new versions,
the columns the source had, the watermark range) and `ops.watermarks` the highest
`updated_at` seen per table.

Each table is pulled in one warehouse transaction: rows, batch record and the new
watermark commit together or not at all, so a run killed half-way leaves the previous
watermark and the next run pulls the same rows again. The pull is `updated_at >=
watermark` (not `>`): rows committed late with the same timestamp are still seen, and
the hash drops the versions already stored.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from crm_pipeline import source_arrow
from crm_pipeline.config import normalise_url
from crm_pipeline.dates import naive_utc
from crm_pipeline.errors import SourceSchemaError
from crm_pipeline.source_schema import OPTIONAL_TABLES, SOURCE_TABLES
from crm_pipeline.warehouse import Warehouse, tables

log = logging.getLogger(__name__)

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
NULL_TOKEN = "\\N"


def extract_table(
    source_url: str,
    wh: Warehouse,
    table: str,
    as_of_date: dt.date,
    run_id: str,
    chunk_rows: int = 50_000,
    before_commit: Callable[[], None] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Pull the new and changed rows of one table; returns what was pulled.

    The watermark never moves past `now` (the run's start): a row stamped in the future
    is stored (and quarantined by validation) but does not hide the rows that arrive
    before its time. It does not move at all while a contract column is missing, so the
    rows are pulled again, complete, once the source is fixed. `before_commit` is called
    after the rows are written and before the watermark is (tests kill the pull there).
    """
    spec = SOURCE_TABLES[table]
    source = sa.create_engine(normalise_url(source_url), poolclass=NullPool)
    try:
        if table in OPTIONAL_TABLES and not sa.inspect(source).has_table(table):
            return _absent(wh, table, source)
        src_table = _reflect(source, table)
        present = [c.name for c in src_table.columns]
        missing = [c for c in spec.columns if c not in present]
        if "updated_at" in missing or any(k in missing for k in spec.key):
            raise SourceSchemaError(
                f"source table {table}: column(s) {', '.join(missing)} missing; the key "
                f"({', '.join(spec.key)}) and updated_at are needed to extract incrementally"
            )
        pulled = [c for c in spec.columns if c in present]
        with wh.begin() as conn:
            wh.ensure(conn)
            watermark = conn.execute(
                sa.text("select watermark from ops.watermarks where table_name = :t"), {"t": table}
            ).scalar()
            batch_id = conn.exec_driver_sql("select nextval('ops.batch_id_seq')").scalar_one()
            _create_incoming(conn, wh, spec.columns)
            started = time.perf_counter()
            if source_arrow.supported(source_url):
                rows_read = _load_arrow(
                    conn, wh, source_url, src_table, pulled, spec.columns, watermark
                )
            else:  # other dialects: rows through SQLAlchemy, canonicalised in Python
                rows_read = 0
                for frame in _read_chunks(source, src_table, pulled, watermark, chunk_rows):
                    frame = frame.reindex(columns=list(spec.columns))
                    rows_read += wh.bulk_load(conn, "_incoming", frame)
                if wh.dialect == "duckdb":
                    conn.exec_driver_sql(
                        f"update _incoming set _row_hash = {_hash_sql(spec.columns)}"
                    )
            read_seconds = time.perf_counter() - started
            ceiling = naive_utc(now).strftime(TS_FORMAT) if now is not None else None
            new_versions, high = _store_new_versions(conn, table, spec.columns, batch_id, ceiling)
            store_seconds = time.perf_counter() - started - read_seconds
            if before_commit is not None:
                before_commit()
            new_watermark = (
                watermark if missing else max(filter(None, [watermark, high]), default=None)
            )
            if new_watermark is not None:
                conn.execute(
                    sa.text("delete from ops.watermarks where table_name = :t"), {"t": table}
                )
                conn.execute(
                    sa.text("insert into ops.watermarks values (:t, :w, :b)"),
                    {"t": table, "w": new_watermark, "b": batch_id},
                )
            stats = {
                "batch_id": batch_id,
                "table_name": table,
                "run_id": run_id,
                "as_of_date": as_of_date,
                "watermark_from": watermark,
                "watermark_to": new_watermark,
                "rows_read": rows_read,
                "new_versions": new_versions,
                "source_columns": ",".join(present),
                "missing_columns": ",".join(missing),
            }
            conn.execute(
                sa.text(
                    "insert into ops.extract_batches values (:batch_id, :table_name, :run_id, "
                    ":as_of_date, :watermark_from, :watermark_to, :rows_read, :new_versions, "
                    ":source_columns, :missing_columns)"
                ),
                stats,
            )
            conn.exec_driver_sql("drop table _incoming")
    finally:
        source.dispose()
    log.info(
        "extracted %s: %d rows read since %s (%.1f s), %d new versions (%.1f s), watermark now "
        "%s%s",
        table,
        rows_read,
        watermark or "the beginning",
        read_seconds,
        new_versions,
        store_seconds,
        stats["watermark_to"],
        f"; MISSING columns {stats['missing_columns']}" if missing else "",
    )
    return stats


def _absent(wh: Warehouse, table: str, source: sa.Engine) -> dict[str, Any]:
    """An optional table the source does not have: read as empty, nothing recorded.

    Only while the warehouse has never stored a row of it: a table that had rows and is
    gone is a broken source, not a company without that data."""
    with wh.begin() as conn:
        wh.ensure(conn)
        stored = conn.exec_driver_sql(f"select count(*) from raw.{table}").scalar_one()
    if stored:
        raise SourceSchemaError(
            f"source table {table} does not exist at {source.url!r}, but raw.{table} holds "
            f"{stored:,} rows pulled from it before: was it dropped or renamed?"
        )
    log.info("source has no table %s (optional): read as empty, its KPIs stay null", table)
    return {"table_name": table, "absent": True, "rows_read": 0, "new_versions": 0}


def _reflect(engine: sa.Engine, table: str) -> sa.Table:
    try:
        return sa.Table(table, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError as exc:
        raise SourceSchemaError(f"source table {table} does not exist at {engine.url!r}") from exc


def _create_incoming(conn: sa.Connection, wh: Warehouse, columns: Iterable[str]) -> None:
    """On DuckDB `_incoming` carries each row's `_row_hash`, computed as the rows stream in."""
    wh.create_temp(conn, tables.incoming(list(columns), hashed=wh.dialect == "duckdb"))


def _hash_sql(columns: Iterable[str]) -> str:
    """A version's identity: the md5 of all its columns, NULL spelled apart from any text."""
    return (
        "md5(concat_ws('|', " + ", ".join(f"coalesce({c}, '{NULL_TOKEN}')" for c in columns) + "))"
    )


def _load_arrow(
    conn: sa.Connection,
    wh: Warehouse,
    url: str,
    src_table: sa.Table,
    pulled: list[str],
    columns: Iterable[str],
    watermark: str | None,
) -> int:
    """Stream the changed rows into `_incoming` as Arrow batches (crm_pipeline.source_arrow):
    into DuckDB directly, into PostgreSQL through a CSV file and COPY, in bounded memory."""
    select = ", ".join(
        f"nullif({_q(c)}, '{NULL_TOKEN}') as {_q(c)}"
        if c in pulled
        else f"cast(null as varchar) as {_q(c)}"
        for c in columns
    )
    with source_arrow.stream(url, src_table, pulled, watermark) as batches:
        if wh.dialect == "duckdb":
            duck = conn.connection.driver_connection
            duck.from_arrow(batches).select(select).select(
                f"*, {_hash_sql(columns)} as _row_hash"
            ).insert_into("_incoming")
        else:
            import tempfile

            import duckdb

            with tempfile.TemporaryDirectory(prefix="crm-extract-") as tmp:
                path = f"{tmp}/{src_table.name}.csv"
                mem = duckdb.connect()
                try:
                    mem.execute("set memory_limit = '512MB'")
                    mem.from_arrow(batches).select(select).write_csv(
                        path, header=False, na_rep=NULL_TOKEN
                    )
                finally:
                    mem.close()
                cur = conn.connection.driver_connection.cursor()
                with open(path, encoding="utf-8") as fh:
                    cur.copy_expert(
                        f"copy _incoming ({', '.join(columns)}) from stdin "
                        f"with (format csv, null '{NULL_TOKEN}')",
                        fh,
                    )
    return conn.exec_driver_sql("select count(*) from _incoming").scalar_one()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_chunks(
    source: sa.Engine,
    src_table: sa.Table,
    columns: list[str],
    watermark: str | None,
    chunk_rows: int,
) -> Iterable[pd.DataFrame]:
    """Stream the source rows changed since the watermark, as canonical text.

    The columns are selected as raw DBAPI values (no SQLAlchemy type processing), so a
    source value that does not parse as its declared type still arrives, as text.
    """
    select_cols = ", ".join(_quote(source, c) for c in columns)
    sql = f"select {select_cols} from {_quote(source, src_table.name)}"
    params = {}
    if watermark is not None:
        sql += " where updated_at >= :watermark"
        params["watermark"] = dt.datetime.strptime(watermark, TS_FORMAT)
    stmt = sa.text(sql).bindparams(
        *([sa.bindparam("watermark", type_=src_table.c.updated_at.type)] if params else [])
    )
    with source.connect().execution_options(stream_results=True) as conn:
        result = conn.execute(stmt, params)
        while rows := result.fetchmany(chunk_rows):
            by_column = zip(*rows, strict=True)
            yield pd.DataFrame(
                {
                    name: canonical_text(pd.Series(values, dtype=object))
                    for name, values in zip(columns, by_column, strict=True)
                }
            )


def canonical_text(column: pd.Series) -> pd.Series:
    """One text spelling per value, whatever the source driver returned.

    Text columns (most of them, and all of SQLite's timestamps) pass through untouched;
    only numbers, dates and booleans are spelled out, value by value.
    """
    if pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        return column.where(column.notna(), None)
    return column.map(_canon, na_action="ignore").astype(object).where(column.notna(), None)


def _canon(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime(TS_FORMAT)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _store_new_versions(
    conn: sa.Connection,
    table: str,
    columns: tuple[str, ...],
    batch_id: int,
    ceiling: str | None = None,
) -> tuple[int, str | None]:
    """Append the versions not stored yet; return their count and the highest updated_at.

    A version is identified by the md5 of all its columns (NULL spelled apart from any
    text), computed in the warehouse: set-based, no Python loop over rows.
    """
    hashed = _hash_sql(columns)
    cols = ", ".join(columns)
    # the ceiling is text, compared as text with the raw text column (as it always was)
    below = " and updated_at <= :ceiling" if ceiling else ""
    high = conn.execute(
        sa.text(f"select max(updated_at) from _incoming where updated_at is not null{below}"),
        {"ceiling": ceiling} if ceiling else {},
    ).scalar()
    stored = f"not exists (select 1 from raw.{table} s where s._row_hash = v._row_hash)"
    if conn.dialect.name != "duckdb":
        # versions with the same hash are the same row to the letter: keep any one of them
        conn.exec_driver_sql(
            f"""insert into raw.{table} ({cols}, _row_hash, _batch_id)
            select distinct on (_row_hash) {cols}, _row_hash, {int(batch_id)} from (
                select {cols}, {hashed} as _row_hash from _incoming
            ) v
            where {stored}"""
        )
    else:
        # DuckDB keeps a `distinct on` over every pulled row in memory (a first load of
        # 19 M orders does not fit in 2 GB): the rows came hashed, the few hashes seen
        # twice are found by a 64-bit digest of the hash, and only those deduplicated
        conn.exec_driver_sql("drop table if exists _twice")
        conn.exec_driver_sql(
            "create temporary table _twice as select hash(_row_hash) as h from _incoming "
            "group by 1 having count(*) > 1"
        )
        conn.exec_driver_sql(
            f"""insert into raw.{table} ({cols}, _row_hash, _batch_id)
            select {cols}, _row_hash, {int(batch_id)} from _incoming v
            where hash(_row_hash) not in (select h from _twice) and {stored}"""
        )
        conn.exec_driver_sql(
            f"""insert into raw.{table} ({cols}, _row_hash, _batch_id)
            select distinct on (_row_hash) {cols}, _row_hash, {int(batch_id)} from _incoming v
            where hash(_row_hash) in (select h from _twice) and {stored}"""
        )
        conn.exec_driver_sql("drop table _twice")
    inserted = conn.execute(
        sa.text(f"select count(*) from raw.{table} where _batch_id = :b"), {"b": int(batch_id)}
    ).scalar_one()
    return inserted, _canonical_watermark(high)


def _canonical_watermark(value: str | None) -> str | None:
    """Watermarks are stored in one format whatever the source's text spelling was."""
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("T", " ")).strftime(TS_FORMAT)
    except ValueError:
        log.warning("updated_at %r does not parse; watermark not advanced past it", value)
        return None


def _quote(engine: sa.Engine, name: str) -> str:
    return engine.dialect.identifier_preparer.quote(name)
