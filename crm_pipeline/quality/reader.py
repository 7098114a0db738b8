"""What the validate stage reads to judge a table: its pending batches, their versions in
chunks, the foreign-key values that do not resolve, and the table's one-row profile.

Why a module of its own: reading is where memory and time go on a first full load, and it
depends on the engine, so how the versions are read sits apart from what is concluded of
them. Nothing here writes: raw is committed by extract and read on a connection of its own.

Grain:

* `pending_batches`: a table's extract batches not validated yet (`ops.extract_batches`
  minus `ops.validated_batches`, by status), so a rerun after a table-level failure sees the
  same batches again and a rerun after a success re-does nothing;
* `raw_chunks`: the versions of those batches in chunks of about `chunk_rows`, every version
  of a key in a batch in one chunk (the uniqueness check stays exact), memory bounded by the
  chunk: PostgreSQL streams one key-sorted query through a server-side cursor, DuckDB reads
  key ranges. `key_chunks` re-cuts key-sorted blocks so that no key straddles two chunks;
* `orphan_values`: foreign-key values with no version of the parent in raw that is not held;
* `table_profile`: one row per table and run (rows read, rows of the day, freshness, volume
  against the real nights before, the share of bad versions), what the table suite judges.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
import sqlalchemy as sa

from crm_pipeline import source_schema as ss
from crm_pipeline.dates import end_of_day
from crm_pipeline.quality.outcome import (
    ACCEPTED,
    PASSED,
    QUARANTINED,
    count_text,
)
from crm_pipeline.quality.quarantine import held_hashes_sql, key_text
from crm_pipeline.quality.rules import parse_values

TS_TEXT = "%Y-%m-%d %H:%M:%S.%f"


def pending_batches(conn: sa.Connection, table: str, run_id: str) -> list[dict[str, Any]]:
    """This table's batches still to validate: never validated, failed, or validated by this run."""
    rows = (
        conn.execute(
            sa.text(
                """select e.batch_id, e.run_id, e.watermark_from, e.rows_read, e.new_versions,
                   e.source_columns, e.missing_columns
            from ops.extract_batches e
            where e.table_name = :t
              and not exists (
                select 1 from ops.validated_batches v
                where v.batch_id = e.batch_id
                  and (v.status = :accepted
                       or (v.status in (:passed, :quarantined) and v.run_id <> :run_id)))
            order by e.batch_id"""
            ),
            {
                "t": table,
                "accepted": ACCEPTED,
                "passed": PASSED,
                "quarantined": QUARANTINED,
                "run_id": run_id,
            },
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


def orphan_values(conn: sa.Connection, parent: str, values_sql: str) -> set[str]:
    """Values from `values_sql` (column v) with no version of the parent in raw that is not held."""
    pk = ss.SOURCE_TABLES[parent].key[0]
    rows = conn.execute(
        sa.text(
            f"""select v from ({values_sql}) x
            where v is not null and not exists (
                select 1 from raw.{parent} p
                where p.{pk} = x.v and p._row_hash not in {held_hashes_sql()})"""
        ),
        {"held_table": parent},
    ).fetchall()
    return {r[0] for r in rows}


def _read_sorted(reader: sa.Connection, sql: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Stream a query in blocks of about `chunk_rows` rows without holding the whole result
    in memory, on a connection that only reads (raw is committed by extract)."""
    dbapi = reader.connection.driver_connection
    if reader.dialect.name == "duckdb":
        cur = dbapi.cursor()
        cur.execute(sql)
        vectors = max(1, -(-chunk_rows // 2048))  # DuckDB streams vectors of 2,048 rows
        while True:
            frame = cur.fetch_df_chunk(vectors)
            if frame.empty:
                break
            yield frame.astype(object).where(frame.notna(), None)
    else:
        cur = dbapi.cursor(name=f"dq_stream_{time.monotonic_ns()}")  # a server-side cursor
        cur.itersize = chunk_rows
        try:
            cur.execute(sql)
            columns = None
            while rows := cur.fetchmany(chunk_rows):
                columns = columns or [d[0] for d in cur.description]
                frame = pd.DataFrame(rows, columns=columns, dtype=object)
                yield frame.where(frame.notna(), None)
        finally:
            cur.close()


def _after(cols: tuple[str, ...], values: tuple[str, ...], params: dict[str, Any]) -> str:
    """SQL for (cols) > (values), lexicographically, spelled out (works on every engine).

    The values are bound: each is added to `params` as the next numbered parameter ($k0,
    $k1, ...: DuckDB's own syntax, as the statement goes to the DuckDB connection as is)."""
    names = []
    for v in values:
        names.append(f"$k{len(params)}")
        params[names[-1][1:]] = v
    terms = []
    for i, col in enumerate(cols):
        eq = [f"{cols[j]} = {names[j]}" for j in range(i)]
        terms.append("(" + " and ".join([*eq, f"{col} > {names[i]}"]) + ")")
    return "(" + " or ".join(terms) + ")"


def raw_chunks(
    reader: sa.Connection,
    table: str,
    batch_list: str,
    chunk_rows: int,
    suspect: str = "true",
    suspect_params: dict[str, Any] | None = None,
) -> Iterator[pd.DataFrame]:
    """The versions of the given batches, in chunks of about `chunk_rows`, every version of a
    key in one chunk, memory bounded by the chunk.

    PostgreSQL: one query sorted by key through a server-side cursor (the server sorts on
    disk past work_mem), re-cut at key changes. DuckDB would sort the whole batch in memory,
    so it reads key ranges instead: boundaries every `chunk_rows` keys (a sort of the key
    columns only), then one small sorted query per range. `suspect` (DuckDB only) is a
    condition on the versions (`quality.prescreen`), with its bound `suspect_params`."""
    spec = ss.SOURCE_TABLES[table]
    cols = f"{', '.join(spec.columns)}, _row_hash, _batch_id"
    order = f"{', '.join(spec.key)}, _batch_id, _row_hash"
    where = f"_batch_id in ({batch_list}) and ({suspect})"
    if reader.dialect.name != "duckdb":
        sql = f"select {cols} from raw.{table} r where {where} order by {order}"
        yield from key_chunks(_read_sorted(reader, sql, chunk_rows), spec.key)
        return
    duck = reader.connection.driver_connection  # temporary tables live on this connection
    source = f"raw.{table}"
    if suspect != "true":  # the screen once, then the few versions it let through
        duck.execute(
            f"create or replace temporary table _dq_suspects as "
            f"select {cols} from raw.{table} r where {where}",
            suspect_params or None,
        )
        source, where = "_dq_suspects", "true"
    keys = ", ".join(spec.key)
    not_null = " and ".join(f"{k} is not null" for k in spec.key)
    bounds = [
        tuple(r)
        for r in reader.exec_driver_sql(
            f"""select {keys} from (
                select {keys}, row_number() over (order by {keys}) as _n
                from {source} r where {where} and {not_null}) ranked
            where _n % {int(chunk_rows)} = 0 order by _n"""
        ).fetchall()
    ]
    ranges: list[tuple[str, dict[str, Any]]] = []
    if not bounds:
        ranges.append(("", {}))
    else:
        for lo, hi in [(None, bounds[0]), *zip(bounds, bounds[1:], strict=False)]:
            params: dict[str, Any] = {}
            above = "" if lo is None else f" and {_after(spec.key, lo, params)}"
            ranges.append((f"{above} and not {_after(spec.key, hi, params)}", params))
        params = {}
        ranges.append((f" and {_after(spec.key, bounds[-1], params)}", params))
        ranges.append((" and not (" + not_null + ")", {}))
    for extra, params in ranges:
        duck.execute(
            f"select {cols} from {source} r where {where}{extra} order by {order}", params or None
        )
        frame = duck.fetch_df()
        if len(frame):
            yield frame.astype(object).where(frame.notna(), None)


def key_chunks(blocks: Iterable[pd.DataFrame], key: tuple[str, ...]) -> Iterator[pd.DataFrame]:
    """Re-cut blocks sorted by key so that no key straddles two chunks: the rows of the last
    key of a block wait for the next block (if there is one)."""
    pending: pd.DataFrame | None = None
    for block in blocks:
        if pending is None:
            pending = block
            continue
        keys = key_text(pending, key)
        tail = keys == keys.iloc[-1]
        if (~tail).any():
            yield pending[~tail].reset_index(drop=True)
        pending = pd.concat([pending[tail], block], ignore_index=True)
    if pending is not None and len(pending):
        yield pending.reset_index(drop=True)


def _real_nights(before_batch: int | None) -> str:
    """The incremental batches of a table that are real nights, as a select of their rows.

    What a feed's usual volume and rhythm are judged on. Not counted: a rerun or backfill
    of a day (an earlier batch of the table already covered that day or a later one), and
    a pull of a day the watermark had already passed (a backfill on a new warehouse re-pulls
    nothing that day's changes could be in). Otherwise three reruns of a day would make 0
    the usual, and the next real night a "volume anomaly". Bound: the table `:t`, and the
    batch `:before` when `before_batch` is given."""
    before = " and e.batch_id < :before" if before_batch is not None else ""
    return f"""select e.* from ops.extract_batches e
        where e.table_name = :t and e.watermark_from is not null{before}
          and e.watermark_from < cast(e.as_of_date + 1 as varchar)
          and not exists (
              select 1 from ops.extract_batches p
              where p.table_name = e.table_name and p.batch_id < e.batch_id
                and p.as_of_date >= e.as_of_date)"""


def _volume(
    conn: sa.Connection, table: str, batches: list[dict[str, Any]], rule: dict[str, Any]
) -> tuple[float | None, str]:
    """Highest ratio of a batch's new versions to the median of the real nights before it."""
    worst: tuple[float | None, str] = (None, "")
    for b in batches:
        if b["watermark_from"] is None:  # the first, full pull of a table has no "usual"
            continue
        history = [
            r[0]
            for r in conn.execute(
                sa.text(
                    f"""select new_versions from ({_real_nights(int(b["batch_id"]))}) n
                order by batch_id desc limit {int(rule["history_batches"])}"""
                ),
                {"t": table, "before": int(b["batch_id"])},
            ).fetchall()
        ]
        if len(history) < int(rule["min_history"]):
            continue
        median = statistics.median(history)
        ratio = b["new_versions"] / max(median, float(rule["min_baseline"]))
        if worst[0] is None or ratio > worst[0]:
            worst = (
                ratio,
                (
                    f"{count_text(b['new_versions'])} new versions in batch {b['batch_id']}, "
                    f"{ratio:.1f}x the usual (median {median:g} of the last "
                    f"{len(history)} nightly batches)"
                ),
            )
    return worst


def table_profile(
    conn: sa.Connection,
    table: str,
    batches: list[dict[str, Any]],
    now: dt.datetime,
    as_of_date: dt.date,
    rules: dict[str, Any],
    rows: int,
    bad: int,
) -> dict[str, Any]:
    """The one-row profile the table suite judges (`values`), with what its failures are
    worded from (the newest update, the volume's detail, the bad versions, the day)."""
    newest_text = conn.execute(
        sa.text(
            f"""select max(updated_at) from raw.{table}
            where updated_at <= :now_text and _row_hash not in {held_hashes_sql()}"""
        ),
        {"now_text": now.strftime(TS_TEXT), "held_table": table},
    ).scalar()
    newest = parse_values(pd.Series([newest_text], dtype=object), "timestamp").iloc[0]
    newest = None if pd.isna(newest) else newest.to_pydatetime()
    hours = None if newest is None else (end_of_day(as_of_date) - newest).total_seconds() / 3600
    raw_rows = conn.exec_driver_sql(f"select count(*) from raw.{table}").scalar_one()
    # versions that changed during the covered day: what a daily table must have. Counted in
    # raw rather than in this run's extract, so that a rerun or a backfill of a day whose rows
    # are already stored is not an "empty extract"
    day_from, day_to = as_of_date.isoformat(), (as_of_date + dt.timedelta(days=1)).isoformat()
    on_day = conn.execute(
        sa.text(
            f"select count(*) from raw.{table} where updated_at >= :day_from and updated_at < :day_to"
        ),
        {"day_from": day_from, "day_to": day_to},
    ).scalar_one()
    # "daily" and "freshness" describe a feed with a rhythm: they are judged once the table
    # has `settle_batches` real nights behind it, so a first load (or a new, hand-made
    # source, or a backfill) is not refused for being quiet
    first_batch = min((int(b["batch_id"]) for b in batches), default=None)
    behind = conn.execute(
        sa.text(f"select count(*) from ({_real_nights(first_batch)}) n"),
        {"t": table, "before": first_batch} if first_batch is not None else {"t": table},
    ).scalar_one()
    settled = behind >= int(rules.get("settle_batches", 3))
    ratio, volume_detail = (None, "")
    if rules["volume"]:
        ratio, volume_detail = _volume(conn, table, batches, rules["volume"])
    share = bad / rows if rows and rows >= int(rules["bad_share_min_rows"]) else None
    values = {
        "raw_rows": raw_rows,
        "rows_read": sum(int(b["rows_read"]) for b in batches) if batches else None,
        "new_versions": sum(int(b["new_versions"]) for b in batches) if batches else None,
        "versions_updated_on_day": on_day if settled else None,
        "hours_since_newest_update": (
            None if not settled else float("inf") if newest is None and raw_rows else hours
        ),
        "volume_ratio": ratio,
        "bad_row_share": share,
    }
    return {
        "values": values,
        "newest": newest,
        "volume_detail": volume_detail,
        "bad": bad,
        "day": as_of_date,
    }
