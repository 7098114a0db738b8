"""The validate stage: Great Expectations suites over the raw layer, between extract and stage.

What is validated: the versions of the extract batches not validated yet (`ops.extract_batches`
minus `ops.validated_batches`), so a rerun after a table-level failure sees the same batches
again and a rerun after a success re-does nothing twice. Big batches (a first full load) are
read in chunks of `chunk_rows` versions, every version of a key in a batch in the same chunk
(the uniqueness check stays exact), so memory is bounded by the chunk: PostgreSQL streams one
key-sorted query through a server-side cursor, DuckDB reads key ranges.

On DuckDB a SQL screen (`quality.prescreen`) first keeps only the versions some rule could
flag; the others pass every expectation by construction and are counted in. Each chunk of
what is left goes through the table's row suite (`<table>.rows`; GX 1.x: an ephemeral context,
a pandas datasource, a dataframe asset, a whole-dataframe batch definition, a
ValidationDefinition; a cheap BOOLEAN_ONLY pass, then result_format COMPLETE keyed by
`_row_hash` for the expectations that failed). The frame holds every contract column typed
as staging will cast it, the text as extracted in `<column>__text` for typed columns, and
derived columns: `<fk>__in_<parent>` (does the value resolve to a key of the parent in raw,
in a version that is not held) and, for orders, `net_amount__minus_gross_less_discount`.
After the chunks, a one-row profile of the table (rows read, rows of the day, freshness,
volume against recent batches, the share of bad versions) goes through `<table>.table`.

Every expectation carries `meta = {"rule", "level", "column"}`:

* level `row`: the offending versions go to `quarantine.rows` (staging leaves held versions
  out) and the night goes on with the others;
* level `table`: `DataQualityError` after everything is recorded, naming table, column, rule
  and row count, for every table that failed. Versions whose value does not parse as its
  type are held as well, so that staging can never meet them.

Everything a run writes (quarantine, `ops.dq_results`, `ops.table_status`,
`ops.validated_batches`, orphan releases) is one transaction: a killed run leaves nothing
half-written. Data Docs (HTML) are built into `docs_dir` from a file-backed results store in
`docs_dir/_results`, so the site keeps every run. docs/data_quality.md lists the rules.

The rules (the suites per table, parsing) live in `quality.rules`, the config in
`quality.settings`, the GX context, results summed over chunks and Data Docs in `quality.gx`;
this module is the stage: which batches,
read how, and what the results lead to (quarantine, `ops.dq_results`, `ops.table_status`,
`DataQualityError`), plus the operator's release and accept.

No wall clock is read here: `now` (the DAG run's run_after) bounds "future" timestamps, and
`released_at` is given by the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from great_expectations.core import ExpectationValidationResult

from crm_pipeline import source_schema as ss
from crm_pipeline.dates import end_of_day
from crm_pipeline.errors import DataQualityError
from crm_pipeline.quality.gx import Agg, DataDocs, gx_engine, suite_result
from crm_pipeline.quality.prescreen import suspect_condition
from crm_pipeline.quality.rules import (
    FOREIGN_KEYS,
    KIND_WORDS,
    ROW,
    TABLE,
    check_frame,
    parse_values,
    row_expectations,
    suite_parameters,
    table_expectations,
)
from crm_pipeline.quality.settings import load_config
from crm_pipeline.warehouse import Warehouse
from crm_pipeline.warehouse import tables as declared

log = logging.getLogger(__name__)

__all__ = [
    "DataQualityError",
    "validate_frame",
    "accept_failed_batches",
    "failed_tables",
    "load_config",
    "release_quarantine",
    "validate_run",
]

PASSED, QUARANTINED, FAILED, STALE, ACCEPTED = (
    "passed",
    "quarantined",
    "failed",
    "stale",
    "accepted",
)
TS_TEXT = "%Y-%m-%d %H:%M:%S.%f"


# -- errors and results ---------------------------------------------------------------------------


@dataclass
class Failure:
    table: str
    column: str
    rule: str
    rows: int
    detail: str

    def message(self) -> str:
        return (
            f"{self.table}.{self.column}: {self.detail} (rule: {self.rule}) - table-level failure"
        )


def _n(x: int | float) -> str:
    return f"{int(x):,}"


# -- warehouse bookkeeping ------------------------------------------------------------------------


def ensure_dq_tables(wh: Warehouse, conn: sa.Connection) -> None:
    wh.ensure(conn, declared.VALIDATED_BATCHES, declared.DQ_RESULTS, declared.TABLE_STATUS)


def _q(value: str) -> str:
    """A text literal for values this module builds itself (table names, rule ids, run ids)."""
    return "'" + str(value).replace("'", "''") + "'"


def _ts_literal(value: dt.datetime) -> str:
    return f"timestamp '{value:%Y-%m-%d %H:%M:%S.%f}'"


def _pending_batches(conn: sa.Connection, table: str, run_id: str) -> list[dict[str, Any]]:
    """This table's batches still to validate: never validated, failed, or validated by this run."""
    rows = (
        conn.exec_driver_sql(
            f"""select e.batch_id, e.run_id, e.watermark_from, e.rows_read, e.new_versions,
                   e.source_columns, e.missing_columns
            from ops.extract_batches e
            where e.table_name = {_q(table)}
              and not exists (
                select 1 from ops.validated_batches v
                where v.batch_id = e.batch_id
                  and (v.status = '{ACCEPTED}'
                       or (v.status in ('{PASSED}', '{QUARANTINED}') and v.run_id <> {_q(run_id)})))
            order by e.batch_id"""
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


def _held(table: str) -> str:
    return f"(select row_hash from quarantine.held_rows where table_name = {_q(table)})"


def _orphans(conn: sa.Connection, parent: str, values_sql: str) -> set[str]:
    """Values from `values_sql` (column v) with no version of the parent in raw that is not held."""
    pk = ss.SOURCE_TABLES[parent].key[0]
    rows = conn.exec_driver_sql(
        f"""select v from ({values_sql}) x
            where v is not null and not exists (
                select 1 from raw.{parent} p
                where p.{pk} = x.v and p._row_hash not in {_held(parent)})"""
    ).fetchall()
    return {r[0] for r in rows}


def _held_count(conn: sa.Connection, table: str) -> int:
    return conn.exec_driver_sql(
        f"select count(*) from quarantine.rows where table_name = {_q(table)} and released_at is null"
    ).scalar_one()


def _auto_release_orphans(conn: sa.Connection, table: str, run_id: str, now: dt.datetime) -> int:
    """Release held orphan-FK versions of `table` whose parent has arrived since."""
    before = _held_count(conn, table)
    held_orphans = conn.exec_driver_sql(
        f"select count(*) from quarantine.rows where table_name = {_q(table)} "
        "and substr(rule, 1, 3) = 'fk_' and released_at is null"
    ).scalar_one()
    if not held_orphans:  # nothing to release: no scan of the child and parent tables
        return 0
    for col, parent in FOREIGN_KEYS.get(table, ()):
        pk = ss.SOURCE_TABLES[parent].key[0]
        conn.exec_driver_sql(
            f"""update quarantine.rows set released_at = {_ts_literal(now)},
                    release_run_id = {_q(run_id)}
                where table_name = {_q(table)} and rule = {_q("fk_" + parent)}
                  and released_at is null
                  and exists (
                    select 1 from raw.{table} c
                    where c._row_hash = quarantine.rows.row_hash
                      and exists (select 1 from raw.{parent} p
                                  where p.{pk} = c.{col} and p._row_hash not in {_held(parent)}))"""
        )
    return before - _held_count(conn, table)


def _auto_release_due(conn: sa.Connection, table: str, run_id: str, now: dt.datetime) -> int:
    """Release held versions whose only fault was a timestamp after an earlier run's start.

    A run's "future" is its run_after, and extraction reads the live source a little later
    (seconds under a scheduler, hours when runs queue): a row changed in between is stored
    and held as `not_in_future`, and the watermark, which never passes the run's start,
    brings the same version back unchanged the next night, when it is no longer in the
    future. Re-judged here against this run's start, it is released (and staged) then; a
    timestamp still ahead of it (a wrong clock, the year 2099) stays held.
    """
    held = conn.exec_driver_sql(
        f"select row_hash, column_name, value from quarantine.rows "
        f"where table_name = {_q(table)} and rule = 'not_in_future' and released_at is null"
    ).fetchall()
    if not held:
        return 0
    stamps = parse_values(pd.Series([v for _, _, v in held], dtype=object), "timestamp")
    due = [
        (h, c)
        for (h, c, _), ts in zip(held, stamps, strict=True)
        if not pd.isna(ts) and ts.to_pydatetime() <= now
    ]
    before = _held_count(conn, table)
    for row_hash, column in due:
        conn.execute(
            sa.text(
                "update quarantine.rows set released_at = :now, release_run_id = :run "
                "where table_name = :t and rule = 'not_in_future' and released_at is null "
                "and row_hash = :h and column_name = :c"
            ),
            {"now": now, "run": run_id, "t": table, "h": row_hash, "c": column},
        )
    return before - _held_count(conn, table)


# -- reading raw ----------------------------------------------------------------------------------


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


def _after(cols: tuple[str, ...], values: tuple[str, ...]) -> str:
    """SQL for (cols) > (values), lexicographically, spelled out (works on every engine)."""
    terms = []
    for i, col in enumerate(cols):
        eq = [f"{cols[j]} = {_q(values[j])}" for j in range(i)]
        terms.append("(" + " and ".join([*eq, f"{col} > {_q(values[i])}"]) + ")")
    return "(" + " or ".join(terms) + ")"


def _raw_chunks(
    reader: sa.Connection, table: str, batch_list: str, chunk_rows: int, suspect: str = "true"
) -> Iterator[pd.DataFrame]:
    """The versions of the given batches, in chunks of about `chunk_rows`, every version of a
    key in one chunk, memory bounded by the chunk.

    PostgreSQL: one query sorted by key through a server-side cursor (the server sorts on
    disk past work_mem), re-cut at key changes. DuckDB would sort the whole batch in memory,
    so it reads key ranges instead: boundaries every `chunk_rows` keys (a sort of the key
    columns only), then one small sorted query per range."""
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
            f"select {cols} from raw.{table} r where {where}"
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
    if not bounds:
        ranges = [""]
    else:
        ranges = [f" and not {_after(spec.key, bounds[0])}"]
        ranges += [
            f" and {_after(spec.key, lo)} and not {_after(spec.key, hi)}"
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]
        ranges += [f" and {_after(spec.key, bounds[-1])}", " and not (" + not_null + ")"]
    for extra in ranges:
        duck.execute(f"select {cols} from {source} r where {where}{extra} order by {order}")
        frame = duck.fetch_df()
        if len(frame):
            yield frame.astype(object).where(frame.notna(), None)


def key_text(frame: pd.DataFrame, key: tuple[str, ...]) -> pd.Series:
    """The key as text: 'O123', or 'O1|2' for a composite key."""
    out = frame[key[0]].fillna("").astype(str)
    for col in key[1:]:
        out = out + "|" + frame[col].fillna("").astype(str)
    return out


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


# -- one chunk ------------------------------------------------------------------------------------


@dataclass
class _Findings:
    """Offending versions of a chunk, as quarantine rows."""

    frame: pd.DataFrame

    @classmethod
    def collect(
        cls,
        table: str,
        raw: pd.DataFrame,
        results: list[ExpectationValidationResult],
        levels: tuple[str, ...] = (ROW, TABLE),
    ) -> _Findings:
        spec = ss.SOURCE_TABLES[table]
        by_hash = raw.set_index("_row_hash")
        parts = []
        for r in results:
            meta = r.expectation_config.meta or {}
            if r.success or meta.get("level") not in levels or not meta.get("value_columns"):
                continue
            hashes = [d["_row_hash"] for d in (r.result or {}).get("unexpected_index_list") or []]
            if not hashes:
                continue
            rows = by_hash.loc[list(dict.fromkeys(hashes))]
            cols = meta["value_columns"]
            if len(cols) == 1:
                value = rows[cols[0]].astype(object).where(rows[cols[0]].notna(), None)
            else:
                value = pd.Series("", index=rows.index)
                for i, c in enumerate(cols):
                    value = (
                        value
                        + ("" if i == 0 else ", ")
                        + c
                        + "="
                        + rows[c].fillna("null").astype(str)
                    )
            parts.append(
                pd.DataFrame(
                    {
                        "table_name": table,
                        "row_key": key_text(rows, spec.key).to_numpy(),
                        "row_hash": rows.index.to_numpy(),
                        "rule": meta["rule"],
                        "column_name": meta["column"],
                        "value": value.to_numpy(),
                        "level": meta["level"],
                    }
                )
            )
        if not parts:
            return cls(
                pd.DataFrame(
                    columns=[
                        "table_name",
                        "row_key",
                        "row_hash",
                        "rule",
                        "column_name",
                        "value",
                        "level",
                    ]
                )
            )
        return cls(pd.concat(parts, ignore_index=True))


# -- one table ------------------------------------------------------------------------------------


@dataclass
class _TableOutcome:
    table: str
    rows: int = 0
    quarantined: int = 0
    newly_quarantined: int = 0
    released: int = 0
    status: str = PASSED
    failures: list[Failure] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "quarantined": self.quarantined,
            "status": self.status,
            "newly_quarantined": self.newly_quarantined,
            "released": self.released,
            "batches": self.batches,
            "seconds": round(self.seconds, 2),
            "failures": [f.message() for f in self.failures],
        }


def _findings_table(wh: Warehouse, conn: sa.Connection) -> None:
    wh.create_temp(conn, declared.DQ_FINDINGS)


def _real_nights(table: str, before_batch: int | None) -> str:
    """The incremental batches of a table that are real nights, as a select of their rows.

    What a feed's usual volume and rhythm are judged on. Not counted: a rerun or backfill
    of a day (an earlier batch of the table already covered that day or a later one), and
    a pull of a day the watermark had already passed (a backfill on a new warehouse re-pulls
    nothing that day's changes could be in). Otherwise three reruns of a day would make 0
    the usual, and the next real night a "volume anomaly"."""
    before = f" and e.batch_id < {int(before_batch)}" if before_batch is not None else ""
    return f"""select e.* from ops.extract_batches e
        where e.table_name = {_q(table)} and e.watermark_from is not null{before}
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
            for r in conn.exec_driver_sql(
                f"""select new_versions from ({_real_nights(table, int(b["batch_id"]))}) n
                order by batch_id desc limit {int(rule["history_batches"])}"""
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
                    f"{_n(b['new_versions'])} new versions in batch {b['batch_id']}, "
                    f"{ratio:.1f}x the usual (median {median:g} of the last "
                    f"{len(history)} nightly batches)"
                ),
            )
    return worst


def _validate_table(
    wh: Warehouse,
    conn: sa.Connection,
    reader: sa.Connection,
    table: str,
    as_of_date: dt.date,
    run_id: str,
    now: dt.datetime,
    cfg: dict[str, Any],
    docs: DataDocs | None = None,
) -> _TableOutcome:
    """Validate one table's pending batches; writes go through `conn` (the run's transaction)."""
    started = time.monotonic()
    spec = ss.SOURCE_TABLES[table]
    rules = cfg["tables"][table]
    out = _TableOutcome(table)
    out.released = _auto_release_orphans(conn, table, run_id, now)
    out.released += _auto_release_due(conn, table, run_id, now)
    batches = _pending_batches(conn, table, run_id)
    out.batches = [int(b["batch_id"]) for b in batches]
    missing: dict[str, int] = {}
    extra: set[str] = set()
    for b in batches:
        for col in filter(None, (b["missing_columns"] or "").split(",")):
            missing[col] = missing.get(col, 0) + int(b["new_versions"])
        extra |= set(filter(None, (b["source_columns"] or "").split(","))) - set(spec.columns)
    present = [c for c in spec.columns if c not in missing]
    engine = gx_engine()
    params = suite_parameters(now)
    row_suite = engine.suite(f"{table}.rows", row_expectations(table, present, cfg))
    aggs = [Agg(e) for e in row_suite.expectations]
    batch_list = ", ".join(str(b) for b in out.batches) or "null"
    orphans = {
        col: _orphans(
            conn,
            parent,
            f"select distinct {col} as v from raw.{table} where _batch_id in ({batch_list})",
        )
        for col, parent in FOREIGN_KEYS.get(table, ())
        if col in present
    }
    _findings_table(wh, conn)
    meta: dict[str, Any] = {}
    if out.batches:
        # GX reads only the versions that could fail a rule (quality.prescreen); the others pass
        # every expectation and are counted in below
        suspect = (
            suspect_condition(table, row_suite.expectations, params, orphans, batch_list)
            if reader.dialect.name == "duckdb" and cfg.get("prescreen", True)
            else "true"
        )
        total = reader.exec_driver_sql(
            f"select count(*) from raw.{table} where _batch_id in ({batch_list})"
        ).scalar_one()
        chunks = _raw_chunks(reader, table, batch_list, cfg["chunk_rows"], suspect)
        for raw in chunks if total else ():
            meta = _check_chunk(
                wh, conn, engine, row_suite, aggs, table, raw, present, orphans, params
            )
            out.rows += len(raw)
        if total and not out.rows:  # no suspect: the table-level checks still run, on no row
            empty = pd.DataFrame(columns=[*spec.columns, "_row_hash", "_batch_id"])
            meta = _check_chunk(
                wh, conn, engine, row_suite, aggs, table, empty, present, orphans, params
            )
        for agg in aggs:
            last = (agg.last.result or {}) if agg.last is not None else {}
            if agg.exception is None and (not last or "element_count" in last):
                agg.element_count += total - out.rows
        out.rows = total
    # quarantine: row-level findings, and values staging could not cast
    out.quarantined = conn.exec_driver_sql(
        "select count(distinct row_hash) from _dq_findings"
    ).scalar_one()
    bad_row_versions = conn.exec_driver_sql(
        f"select count(distinct row_hash) from _dq_findings where level = '{ROW}'"
    ).scalar_one()
    before = conn.exec_driver_sql(
        f"select count(*) from quarantine.rows where table_name = {_q(table)}"
    ).scalar_one()
    conn.exec_driver_sql(
        f"""insert into quarantine.rows (table_name, row_key, row_hash, rule, column_name, value,
                as_of_date, run_id, released_at, release_run_id)
            select distinct f.table_name, f.row_key, f.row_hash, f.rule, f.column_name, f.value,
                   date '{as_of_date:%Y-%m-%d}', {_q(run_id)}, cast(null as timestamp),
                   cast(null as varchar)
            from _dq_findings f
            where not exists (
                select 1 from quarantine.rows q
                where q.table_name = f.table_name and q.row_hash = f.row_hash
                  and q.rule = f.rule and coalesce(q.column_name, '') = coalesce(f.column_name, '')
                  and q.released_at is null)"""
    )
    out.newly_quarantined = (
        conn.exec_driver_sql(
            f"select count(*) from quarantine.rows where table_name = {_q(table)}"
        ).scalar_one()
        - before
    )
    # the table profile, then its suite
    profile = _profile(conn, table, batches, now, as_of_date, rules, out.rows, bad_row_versions)
    tab_suite = engine.suite(f"{table}.table", table_expectations(table, cfg))
    tab_results, tab_meta = engine.run(tab_suite, pd.DataFrame([profile["values"]]), params)
    tab_aggs = [Agg(e) for e in tab_suite.expectations]
    for agg, r in zip(tab_aggs, tab_results, strict=True):
        agg.add(r, 1)
        agg.observed = profile["values"].get(r.expectation_config.kwargs.get("column"))
    out.failures = _failures(table, aggs, tab_aggs, missing, extra, out.rows, profile)
    stale_only = out.failures and all(
        f.rule in ("freshness", "empty_extract") for f in out.failures
    )
    if out.failures:
        out.status = (
            STALE if stale_only and any(f.rule == "freshness" for f in out.failures) else FAILED
        )
    elif out.quarantined:
        out.status = QUARANTINED
    _record(
        conn, table, as_of_date, run_id, now, out, {row_suite.name: aggs, tab_suite.name: tab_aggs}
    )
    conn.exec_driver_sql("drop table if exists _dq_findings")
    out.seconds = time.monotonic() - started
    if docs is not None:
        batch_name = (
            f"batches-{out.batches[0]}-{out.batches[-1]}" if out.batches else "no-new-batch"
        )
        docs.store(
            suite_result(row_suite.name, aggs, meta),
            row_expectations(table, present, cfg),
            run_id,
            now,
            batch_name,
        )
        docs.store(
            suite_result(tab_suite.name, tab_aggs, tab_meta),
            table_expectations(table, cfg),
            run_id,
            now,
            batch_name,
        )
    log.info(
        "validated %s: %d versions in batch(es) %s, %d quarantined (%d new), %d orphan(s) "
        "released, status %s, %.1fs",
        table,
        out.rows,
        out.batches or "-",
        out.quarantined,
        out.newly_quarantined,
        out.released,
        out.status,
        out.seconds,
    )
    return out


def _check_chunk(
    wh: Warehouse,
    conn: sa.Connection,
    engine: Any,
    row_suite: Any,
    aggs: list[Agg],
    table: str,
    raw: pd.DataFrame,
    present: list[str],
    orphans: dict[str, set[str]],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The row suite over one chunk of versions: results summed, findings kept; GX's meta."""
    frame = check_frame(table, raw, present, orphans)
    results, meta = engine.run(row_suite, frame, params)
    for agg, r in zip(aggs, results, strict=True):
        agg.add(r, len(frame))
    wh.bulk_load(conn, "_dq_findings", _Findings.collect(table, raw, results).frame)
    return meta


def _profile(
    conn: sa.Connection,
    table: str,
    batches: list[dict[str, Any]],
    now: dt.datetime,
    as_of_date: dt.date,
    rules: dict[str, Any],
    rows: int,
    bad: int,
) -> dict[str, Any]:
    newest_text = conn.exec_driver_sql(
        f"""select max(updated_at) from raw.{table}
            where updated_at <= {_q(now.strftime(TS_TEXT))}
              and _row_hash not in {_held(table)}"""
    ).scalar()
    newest = parse_values(pd.Series([newest_text], dtype=object), "timestamp").iloc[0]
    newest = None if pd.isna(newest) else newest.to_pydatetime()
    hours = None if newest is None else (end_of_day(as_of_date) - newest).total_seconds() / 3600
    raw_rows = conn.exec_driver_sql(f"select count(*) from raw.{table}").scalar_one()
    # versions that changed during the covered day: what a daily table must have. Counted in
    # raw rather than in this run's extract, so that a rerun or a backfill of a day whose rows
    # are already stored is not an "empty extract"
    day_from, day_to = as_of_date.isoformat(), (as_of_date + dt.timedelta(days=1)).isoformat()
    on_day = conn.exec_driver_sql(
        f"select count(*) from raw.{table} "
        f"where updated_at >= {_q(day_from)} and updated_at < {_q(day_to)}"
    ).scalar_one()
    # "daily" and "freshness" describe a feed with a rhythm: they are judged once the table
    # has `settle_batches` real nights behind it, so a first load (or a new, hand-made
    # source, or a backfill) is not refused for being quiet
    first_batch = min((int(b["batch_id"]) for b in batches), default=None)
    behind = conn.exec_driver_sql(
        f"select count(*) from ({_real_nights(table, first_batch)}) n"
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


def _failures(
    table: str,
    aggs: list[Agg],
    tab_aggs: list[Agg],
    missing: dict[str, int],
    extra: set[str],
    rows: int,
    profile: dict[str, Any],
) -> list[Failure]:
    out: list[Failure] = []
    for col, n in missing.items():
        hint = (
            f"; the source has new column(s) {', '.join(sorted(extra))} - renamed?" if extra else ""
        )
        out.append(
            Failure(
                table,
                col,
                "column_present",
                n,
                f"column missing from the source table ({_n(n)} rows extracted without it{hint})",
            )
        )
    for agg in aggs:
        meta = agg.meta
        if agg.exception is not None:
            out.append(
                Failure(
                    table,
                    meta.get("column") or "*",
                    meta.get("rule", "?"),
                    rows,
                    f"expectation {agg.expectation.expectation_type} could not be "
                    f"evaluated on {_n(rows)} rows: {agg.exception}",
                )
            )
        elif (
            meta.get("level") == TABLE
            and meta.get("rule", "").startswith("type_")
            and agg.unexpected_count
        ):
            kind = meta["rule"][len("type_") :]
            sample = ", ".join(repr(v) for v in list(dict.fromkeys(map(str, agg.partial)))[:3])
            out.append(
                Failure(
                    table,
                    meta["column"],
                    meta["rule"],
                    agg.unexpected_count,
                    f"{_n(agg.unexpected_count)} of {_n(agg.element_count)} rows do not "
                    f"parse as {KIND_WORDS[kind]} (e.g. {sample})",
                )
            )
    values = profile["values"]
    seen: set[str] = set()
    for agg in tab_aggs:
        rule = agg.meta.get("rule", "?")
        if agg.success or rule in seen:
            continue
        seen.add(rule)
        if agg.exception is not None:
            detail, n = f"could not be evaluated: {agg.exception}", rows
        elif rule == "table_not_empty":
            n = values["rows_read"] or 0
            detail = (
                f"the source table returned {_n(n)} rows (not even the row at the watermark) "
                f"and raw holds {_n(values['raw_rows'])}"
            )
        elif rule == "empty_extract":
            n = values["versions_updated_on_day"] or 0
            detail = (
                f"{_n(n)} rows updated on {profile['day']} ({_n(values['new_versions'] or 0)} "
                "new versions in this run's extract), rows are expected every day"
            )
        elif rule == "freshness":
            n = values["new_versions"] or 0
            age = values["hours_since_newest_update"]
            newest = profile["newest"]
            detail = (
                f"newest updated_at {newest:%Y-%m-%d %H:%M} is {age:.1f} hours before the end "
                f"of the covered day, more than {agg.expectation.max_value:g} allowed "
                f"({_n(n)} new rows this run)"
                if newest
                else "no parseable updated_at in raw"
            )
        elif rule == "volume":
            n = values["new_versions"] or 0
            detail = f"{profile['volume_detail']}, more than {agg.expectation.max_value:g}x allowed"
        elif rule == "bad_row_share":
            n = profile["bad"]
            worst = sorted(
                (a for a in aggs if a.meta.get("level") == ROW and a.unexpected_count),
                key=lambda a: -a.unexpected_count,
            )[:3]
            most = "; ".join(
                f"{a.meta['rule']} on {a.meta['column']}: {_n(a.unexpected_count)}" for a in worst
            )
            detail = (
                f"{_n(n)} of {_n(rows)} rows ({100 * values['bad_row_share']:.1f}%) failed "
                f"row-level rules ({most}), more than "
                f"{100 * agg.expectation.max_value:g}% allowed; they are quarantined"
            )
        else:
            n, detail = rows, "failed"
        out.append(Failure(table, agg.meta.get("column") or "*", rule, n, detail))
    return out


def _observed(agg: Agg) -> str | None:
    if agg.exception is not None:
        return f"error: {agg.exception}"[:500]
    if agg.observed is not None:
        return str(agg.observed)[:500]
    if agg.partial:
        return ("e.g. " + ", ".join(repr(v) for v in agg.partial[:5]))[:500]
    return None


def _record(
    conn: sa.Connection,
    table: str,
    as_of_date: dt.date,
    run_id: str,
    now: dt.datetime,
    out: _TableOutcome,
    suites: dict[str, list[Agg]],
) -> None:
    results = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "as_of_date": as_of_date,
                "table_name": table,
                "expectation": agg.expectation.expectation_type,
                "column_name": agg.meta.get("column"),
                "level": agg.meta.get("level"),
                "success": bool(agg.success and agg.exception is None),
                "observed_value": _observed(agg),
                "unexpected_count": agg.unexpected_count,
                "element_count": agg.element_count,
                "rule": agg.meta.get("rule"),
                "suite": suite,
            }
            for suite, aggs in suites.items()
            for agg in aggs
        ]
    )
    conn.exec_driver_sql(
        f"delete from ops.dq_results where run_id = {_q(run_id)} and table_name = {_q(table)}"
    )
    _load(conn, "ops.dq_results", results)
    detail = "; ".join(f.message() for f in out.failures) or (
        f"{_n(out.quarantined)} of {_n(out.rows)} versions quarantined"
        if out.quarantined
        else f"{_n(out.rows)} versions passed"
    )
    conn.exec_driver_sql(
        f"delete from ops.table_status where as_of_date = date '{as_of_date:%Y-%m-%d}' "
        f"and table_name = {_q(table)}"
    )
    _load(
        conn,
        "ops.table_status",
        pd.DataFrame(
            [
                {
                    "as_of_date": as_of_date,
                    "table_name": table,
                    "status": out.status,
                    "run_id": run_id,
                    "detail": detail[:4000],
                    "rows_validated": out.rows,
                    "quarantined": out.quarantined,
                    "validated_at": now,
                }
            ]
        ),
    )
    if out.batches:
        conn.exec_driver_sql(
            f"delete from ops.validated_batches where batch_id in "
            f"({', '.join(map(str, out.batches))})"
        )
        status = FAILED if out.failures else (QUARANTINED if out.quarantined else PASSED)
        _load(
            conn,
            "ops.validated_batches",
            pd.DataFrame(
                [
                    {
                        "batch_id": b,
                        "table_name": table,
                        "run_id": run_id,
                        "as_of_date": as_of_date,
                        "status": status,
                        "rows_validated": out.rows,
                        "quarantined": out.quarantined,
                        "validated_at": now,
                    }
                    for b in out.batches
                ]
            ),
        )


def _load(conn: sa.Connection, qualified: str, frame: pd.DataFrame) -> None:
    """Small bookkeeping inserts, with bound parameters (same SQL on both engines)."""
    if frame.empty:
        return
    cols = list(frame.columns)
    records = [
        {k: (None if _isnull(v) else _py(v)) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    conn.execute(
        sa.text(
            f"insert into {qualified} ({', '.join(cols)}) "
            f"values ({', '.join(':' + c for c in cols)})"
        ),
        records,
    )


def _isnull(v: Any) -> bool:
    try:
        return v is None or (not isinstance(v, (list, dict, str)) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


# -- public API -----------------------------------------------------------------------------------


def validate_run(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    now: dt.datetime,
    docs_dir: str | os.PathLike | None = None,
    *,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate every table's unvalidated batches; write quarantine, dq_results, table_status;
    build Data Docs into `docs_dir`; raise DataQualityError after recording everything if a
    table-level rule failed. Returns {table: {"rows", "quarantined", "status", ...}, "docs": path}.

    `now` is the DAG run's run_after: timestamps after it are "in the future".
    """
    cfg = config or load_config()
    now = _naive_utc(now)
    with wh.begin() as conn:
        ensure_dq_tables(wh, conn)
    docs = DataDocs(docs_dir) if docs_dir else None
    summary: dict[str, Any] = {}
    failures: list[Failure] = []
    started = time.monotonic()
    # one transaction for everything the run writes (a killed run leaves nothing half-done);
    # raw is read on a second connection, streamed
    with wh.begin() as conn, wh.engine.connect() as reader:
        for table in ss.TABLE_ORDER:
            outcome = _validate_table(wh, conn, reader, table, as_of_date, run_id, now, cfg, docs)
            summary[table] = outcome.summary()
            failures += outcome.failures
    summary["docs"] = None
    if docs is not None:
        try:
            summary["docs"] = docs.build()
        except Exception:  # noqa: BLE001 - the results are recorded; the HTML is a view of them
            log.exception("Data Docs could not be built into %s", docs.dir)
    log.info("validation of %s (%s) took %.1fs", as_of_date, run_id, time.monotonic() - started)
    if failures:
        raise DataQualityError(failures, summary)
    return summary


def failed_tables(wh: Warehouse, as_of_date: dt.date) -> set[str]:
    """Tables whose data for the date did not pass (status failed or stale): KPIs reading
    them are not evaluated for that date."""
    with wh.begin() as conn:
        ensure_dq_tables(wh, conn)
        rows = conn.exec_driver_sql(
            f"select table_name from ops.table_status where as_of_date = date '{as_of_date:%Y-%m-%d}' "
            f"and status in ('{FAILED}', '{STALE}')"
        ).fetchall()
    return {r[0] for r in rows}


def validate_frame(
    table: str,
    raw: pd.DataFrame,
    now: dt.datetime,
    *,
    config: dict[str, Any] | None = None,
    orphans: dict[str, set[str]] | None = None,
) -> pd.DataFrame:
    """Run a table's row suite on a frame of raw text rows (contract columns, `_row_hash`,
    `_batch_id`); return the findings (row_key, row_hash, rule, column_name, value, level).
    `orphans` maps a foreign-key column to the values that do not resolve. No warehouse
    involved: this is how the rules can be tried on a handful of rows."""
    cfg = config or load_config()
    spec = ss.SOURCE_TABLES[table]
    present = [c for c in spec.columns if c in raw.columns]
    raw = raw.copy()
    for col in spec.columns:
        if col not in raw.columns:
            raw[col] = None
    raw = raw.astype(object).where(raw.notna(), None)
    engine = gx_engine()
    suite = engine.suite(f"{table}.rows", row_expectations(table, present, cfg))
    frame = check_frame(table, raw, present, orphans or {})
    results, _meta = engine.run(suite, frame, suite_parameters(_naive_utc(now)))
    return _Findings.collect(table, raw, results).frame


def release_quarantine(
    wh: Warehouse,
    as_of_date: dt.date,
    run_id: str,
    released_at: dt.datetime,
    table: str | None = None,
    rule: str | None = None,
    *,
    config: dict[str, Any] | None = None,
) -> int:
    """Re-validate held versions (all, or of one table / one rule) against the current config
    and the current raw layer; release the quarantine entries that now pass. Returns the
    number of entries released. Staging picks the released versions up at its next build.
    `released_at` is also the "now" of the future-timestamp rule."""
    cfg = config or load_config()
    released_at = _naive_utc(released_at)
    tables = [table] if table else list(ss.TABLE_ORDER)
    if table and table not in ss.SOURCE_TABLES:
        raise ValueError(f"unknown table {table!r}")
    engine = gx_engine()
    params = suite_parameters(released_at)
    total = 0
    for name in tables:
        spec = ss.SOURCE_TABLES[name]
        with wh.begin() as conn:
            ensure_dq_tables(wh, conn)
            rule_sql = f" and rule = {_q(rule)}" if rule else ""
            hashes = [
                r[0]
                for r in conn.exec_driver_sql(
                    f"select distinct row_hash from quarantine.rows where table_name = {_q(name)} "
                    f"and released_at is null{rule_sql}"
                ).fetchall()
            ]
            if not hashes:
                continue
            missing_sql = conn.exec_driver_sql(
                f"""select distinct e.missing_columns from ops.extract_batches e
                    where e.table_name = {_q(name)} and e.batch_id in (
                        select _batch_id from raw.{name} where _row_hash in
                        (select row_hash from quarantine.rows where table_name = {_q(name)}
                         and released_at is null))"""
            ).fetchall()
            missing = {c for r in missing_sql for c in (r[0] or "").split(",") if c}
            present = [c for c in spec.columns if c not in missing]
            suite = engine.suite(f"{name}.rows", row_expectations(name, present, cfg))
            wh.create_temp(conn, declared.DQ_PROBE)
            _findings_table(wh, conn)
            step = cfg["chunk_rows"]
            for i in range(0, len(hashes), step):
                conn.exec_driver_sql("delete from _dq_probe")
                wh.bulk_load(conn, "_dq_probe", pd.DataFrame({"row_hash": hashes[i : i + step]}))
                key_match = " and ".join(f"s.{k} = h.{k}" for k in spec.key)
                # the held versions, plus the other versions of their key in the same batch
                # (a duplicate is still a duplicate)
                rows = conn.exec_driver_sql(
                    f"""select {", ".join("s." + c for c in spec.columns)}, s._row_hash, s._batch_id
                        from raw.{name} s
                        where exists (select 1 from raw.{name} h join _dq_probe p
                                      on p.row_hash = h._row_hash
                                      where h._batch_id = s._batch_id and {key_match})"""
                ).fetchall()
                raw = pd.DataFrame.from_records(
                    rows, columns=[*spec.columns, "_row_hash", "_batch_id"], coerce_float=False
                )
                if raw.empty:
                    continue
                orphans = {}
                for col, parent in FOREIGN_KEYS.get(name, ()):
                    if col in present:
                        wh.create_temp(conn, declared.DQ_VALUES)
                        wh.bulk_load(
                            conn,
                            "_dq_values",
                            pd.DataFrame({"v": raw[col].dropna().unique().astype(object)}),
                        )
                        orphans[col] = _orphans(conn, parent, "select v from _dq_values")
                frame = check_frame(name, raw, present, orphans)
                results, _meta = engine.run(suite, frame, params)
                wh.bulk_load(conn, "_dq_findings", _Findings.collect(name, raw, results).frame)
                for col, _parent in FOREIGN_KEYS.get(name, ()):
                    if col in present:
                        conn.exec_driver_sql("drop table if exists _dq_values")
            held_before = _held_count(conn, name)
            conn.exec_driver_sql(
                f"""update quarantine.rows set released_at = {_ts_literal(released_at)},
                        release_run_id = {_q(run_id)}
                    where table_name = {_q(name)} and released_at is null{rule_sql}
                      and not exists (
                        select 1 from _dq_findings f
                        where f.row_hash = quarantine.rows.row_hash
                          and f.rule = quarantine.rows.rule
                          and coalesce(f.column_name, '') = coalesce(quarantine.rows.column_name, ''))"""
            )
            released = held_before - _held_count(conn, name)
            conn.exec_driver_sql("drop table if exists _dq_findings")
            conn.exec_driver_sql("drop table if exists _dq_probe")
        log.info(
            "release_quarantine %s (%s): %d of the held entries released for %s by %s",
            name,
            rule or "all rules",
            released,
            as_of_date,
            run_id,
        )
        total += released
    return total


def accept_failed_batches(wh: Warehouse, table: str, run_id: str, accepted_at: dt.datetime) -> int:
    """An operator's decision after a table-level failure that will not go away by itself
    (a real volume spike, a column the source dropped for good): the table's failed batches
    count as validated from now on. Their offending rows stay held. Returns the batch count."""
    with wh.begin() as conn:
        ensure_dq_tables(wh, conn)
        where = f"where table_name = {_q(table)} and status = '{FAILED}'"
        count = conn.exec_driver_sql(
            f"select count(*) from ops.validated_batches {where}"
        ).scalar_one()
        conn.exec_driver_sql(
            f"""update ops.validated_batches set status = '{ACCEPTED}', run_id = {_q(run_id)},
                    validated_at = {_ts_literal(_naive_utc(accepted_at))} {where}"""
        )
    log.warning("%s: %d failed batch(es) accepted by %s", table, count, run_id)
    return count
